// RFC 6455 opening handshake: accept key and the upgrade decision.
#include <doctest/doctest.h>

#include <array>
#include <string>

#include "ws/handshake.hpp"

using namespace netwine::ws;

namespace {

constexpr std::string_view kRfcKey = "dGhlIHNhbXBsZSBub25jZQ==";
constexpr std::string_view kRfcAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

constexpr std::array<std::string_view, 3> kSupported = {"netwine.v1", "binary", "base64"};

HandshakeInput good() {
    return HandshakeInput{
        .method = "GET",
        .http11_or_later = true,
        .upgrade = "websocket",
        .connection = "Upgrade",
        .version = "13",
        .key = kRfcKey,
        .protocols = {},
    };
}

HandshakeResult run(const HandshakeInput& in) { return evaluate_handshake(in, kSupported); }

}  // namespace

TEST_SUITE("ws handshake") {
    TEST_CASE("accept key: RFC 6455 1.3 example") {
        CHECK(accept_key(kRfcKey) == kRfcAccept);
        // RFC 6455 4.1's other sample nonce, cross-checked with openssl(1).
        CHECK(accept_key("x3JJHMbDL1EzLkh9GBhXDw==") == "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
    }

    TEST_CASE("the RFC's request is accepted") {
        const HandshakeResult r = run(good());
        CHECK(r.status == 101);
        CHECK(r.accept == kRfcAccept);
        CHECK(r.subprotocol.empty());
        CHECK(r.error.empty());
    }

    TEST_CASE("header tokens are case-insensitive lists with optional spaces") {
        HandshakeInput in = good();
        in.upgrade = "WebSocket";
        in.connection = "keep-alive, Upgrade";
        CHECK(run(in).status == 101);
        in.upgrade = "h2c ,  WEBSOCKET ";
        in.connection = "\tupgrade\t,keep-alive";
        CHECK(run(in).status == 101);
        in.version = " 13 ";
        in.key = " dGhlIHNhbXBsZSBub25jZQ== ";
        const HandshakeResult r = run(in);
        CHECK(r.status == 101);
        CHECK(r.accept == kRfcAccept);  // the key without its surrounding spaces
    }

    TEST_CASE("rejections and their statuses") {
        struct Case {
            const char* what;
            void (*mutate)(HandshakeInput&);
            int status;
        };
        const Case cases[] = {
            {"POST", [](HandshakeInput& i) { i.method = "POST"; }, 400},
            {"lower-case get", [](HandshakeInput& i) { i.method = "get"; }, 400},
            {"HTTP/1.0", [](HandshakeInput& i) { i.http11_or_later = false; }, 400},
            {"no Upgrade", [](HandshakeInput& i) { i.upgrade = {}; }, 400},
            {"Upgrade: h2c", [](HandshakeInput& i) { i.upgrade = "h2c"; }, 400},
            {"Upgrade: websockets", [](HandshakeInput& i) { i.upgrade = "websockets"; }, 400},
            {"no Connection", [](HandshakeInput& i) { i.connection = {}; }, 400},
            {"Connection: keep-alive", [](HandshakeInput& i) { i.connection = "keep-alive"; }, 400},
            {"Connection: upgraded", [](HandshakeInput& i) { i.connection = "upgraded"; }, 400},
            {"no version", [](HandshakeInput& i) { i.version = {}; }, 426},
            {"version 8", [](HandshakeInput& i) { i.version = "8"; }, 426},
            {"version 13, 8", [](HandshakeInput& i) { i.version = "13, 8"; }, 426},
            {"no key", [](HandshakeInput& i) { i.key = {}; }, 400},
            {"unsupported subprotocol",
             [](HandshakeInput& i) { i.protocols = "chat, superchat"; }, 400},
            {"subprotocol in wrong case", [](HandshakeInput& i) { i.protocols = "Binary"; }, 400},
        };
        for (const Case& c : cases) {
            INFO(c.what);
            HandshakeInput in = good();
            c.mutate(in);
            const HandshakeResult r = run(in);
            CHECK(r.status == c.status);
            CHECK_FALSE(r.error.empty());
            CHECK(r.accept.empty());
        }
    }

    TEST_CASE("keys that are not base64 of 16 bytes") {
        const std::string_view bad_keys[] = {
            "AAAAAAAAAAAAAAAAAAAA",      // 15 bytes
            "AAAAAAAAAAAAAAAAAAAAAAA=",  // 17 bytes
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAA",  // 21 bytes
            "dGhlIHNhbXBsZSBub25jZQ",    // 16 bytes but unpadded
            "dGhlIHNhbXBsZSBub25jZQ=",   // half the padding
            "dGhlIHNhbXBsZSBub25jZ*==",  // not in the alphabet
            "dGhlIHNhbXBsZSBub25jZ_==",  // URL-safe alphabet is not base64 here
            "dGhlIHNhbXBs ZSBub25jZ==",  // space inside
            "========================",
        };
        for (const std::string_view key : bad_keys) {
            INFO(key);
            HandshakeInput in = good();
            in.key = key;
            const HandshakeResult r = run(in);
            CHECK(r.status == 400);
            CHECK(r.error.find("Sec-WebSocket-Key") != std::string::npos);
        }
    }

    TEST_CASE("version is checked before the key, and method first of all") {
        HandshakeInput in = good();
        in.version = "8";
        in.key = "bad";
        CHECK(run(in).status == 426);
        in.method = "PUT";
        CHECK(run(in).status == 400);
    }

    TEST_CASE("the server's subprotocol preference wins") {
        HandshakeInput in = good();
        in.protocols = "base64, binary";
        CHECK(run(in).subprotocol == "binary");
        in.protocols = "binary,base64";
        CHECK(run(in).subprotocol == "binary");
        in.protocols = "base64";
        CHECK(run(in).subprotocol == "base64");
        in.protocols = "base64, binary, netwine.v1";
        CHECK(run(in).subprotocol == "netwine.v1");
        in.protocols = "chat,  base64  ";
        const HandshakeResult r = run(in);
        CHECK(r.status == 101);
        CHECK(r.subprotocol == "base64");
        CHECK(r.accept == kRfcAccept);
    }

    TEST_CASE("subprotocol list trimming and empty offers") {
        HandshakeInput in = good();
        in.protocols = " \t binary \t ";
        CHECK(run(in).subprotocol == "binary");
        in.protocols = ",, ,base64,";
        CHECK(run(in).subprotocol == "base64");
        in.protocols = " , ";  // nothing actually offered
        const HandshakeResult r = run(in);
        CHECK(r.status == 101);
        CHECK(r.subprotocol.empty());
        in.protocols = "bin ary";  // one token with a space inside is not "binary"
        CHECK(run(in).status == 400);
    }

    TEST_CASE("unsupported offer names what was offered and what is supported") {
        HandshakeInput in = good();
        in.protocols = "chat, superchat";
        const HandshakeResult r = run(in);
        CHECK(r.status == 400);
        CHECK(r.error.starts_with("no supported subprotocol offered: chat, superchat"));
        CHECK(r.error.find("netwine.v1, binary, base64") != std::string::npos);
        // A huge offer is not echoed whole.
        const std::string huge(10000, 'x');
        in.protocols = huge;
        CHECK(run(in).error.size() < 400);
    }

    TEST_CASE("no supported list: any offer is refused, no offer is fine") {
        HandshakeInput in = good();
        CHECK(evaluate_handshake(in, {}).status == 101);
        in.protocols = "binary";
        CHECK(evaluate_handshake(in, {}).status == 400);
    }
}
