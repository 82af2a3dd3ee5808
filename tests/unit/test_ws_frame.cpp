// RFC 6455 frame decoder/encoder and UTF-8 validator.
//
// The decoder must produce the same events however its input is cut, so most
// tests go through grind(): each input is decoded whole, split in two at every
// offset, and fed byte by byte (STYLE habit 2), and all runs must agree.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "ws/frame.hpp"
#include "ws/utf8.hpp"

using namespace netwine::ws;

namespace {

using Bytes = std::vector<uint8_t>;

Bytes bytes(std::initializer_list<int> list) {
    Bytes out;
    for (int b : list) out.push_back(static_cast<uint8_t>(b));
    return out;
}

Bytes bytes(std::string_view s) { return Bytes(s.begin(), s.end()); }

Bytes concat(std::initializer_list<Bytes> parts) {
    Bytes out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

// One decoder event. Consecutive on_data() pieces of a message are merged,
// since where they are cut depends on the chunking, which tests vary.
struct Event {
    enum Kind { Data, End, Ping, Pong, Close } kind;
    Opcode type = Opcode::Continuation;
    Bytes payload;
    std::optional<uint16_t> code;
    bool operator==(const Event&) const = default;
};

std::string describe(const Event& e) {
    static const char* names[] = {"data", "end", "ping", "pong", "close"};
    std::string s = names[e.kind];
    s += "(type=" + std::to_string(static_cast<int>(e.type)) + ", " +
         std::to_string(e.payload.size()) + " bytes";
    if (e.code) s += ", code=" + std::to_string(*e.code);
    return s + ")";
}

struct Recorder : Handler {
    std::vector<Event> events;
    size_t data_calls = 0;

    void on_data(Opcode type, std::span<const uint8_t> b) override {
        ++data_calls;
        CHECK_FALSE(b.empty());
        if (!events.empty() && events.back().kind == Event::Data) {
            CHECK(events.back().type == type);
            events.back().payload.insert(events.back().payload.end(), b.begin(), b.end());
        } else {
            events.push_back({Event::Data, type, Bytes(b.begin(), b.end()), {}});
        }
    }
    void on_message_end(Opcode type) override { events.push_back({Event::End, type, {}, {}}); }
    void on_ping(std::span<const uint8_t> b) override {
        events.push_back({Event::Ping, Opcode::Ping, Bytes(b.begin(), b.end()), {}});
    }
    void on_pong(std::span<const uint8_t> b) override {
        events.push_back({Event::Pong, Opcode::Pong, Bytes(b.begin(), b.end()), {}});
    }
    void on_close(std::optional<uint16_t> code, std::string_view reason) override {
        events.push_back({Event::Close, Opcode::Close, bytes(reason), code});
    }
};

// Takes binary data still masked and unmasks it while copying, as the relay does.
struct CopyingRecorder : Recorder {
    void on_masked_data(Opcode type, std::span<uint8_t> masked, const uint8_t key[4], size_t offset) override {
        Bytes copy(masked.size());
        copy_masked(copy.data(), masked.data(), masked.size(), key, offset);
        on_data(type, copy);
    }
};

struct Outcome {
    std::vector<Event> events;
    std::optional<CloseCode> error;
};

// For readable failure messages: the close code, or 0 for "no error".
int code_of(std::optional<CloseCode> c) { return c ? static_cast<int>(*c) : 0; }

constexpr uint64_t kBigLimit = uint64_t{1} << 40;

// Decodes a fresh copy of `input` (the decoder unmasks in place) cut at the
// given increasing offsets.
template <typename Handler = Recorder>
Outcome decode(Role role, const Bytes& input, const std::vector<size_t>& cuts,
               uint64_t max_message = kBigLimit) {
    Bytes copy = input;
    Decoder d(role, max_message);
    Handler r;
    Outcome out;
    size_t from = 0;
    auto feed_piece = [&](size_t to) {
        if (out.error) return;
        auto e = d.feed(std::span<uint8_t>(copy.data() + from, to - from), r);
        if (e) out.error = e->code;
        from = to;
    };
    for (size_t c : cuts) feed_piece(c);
    feed_piece(copy.size());
    out.events = std::move(r.events);
    return out;
}

void check_same(const Outcome& expected, const Outcome& got, const std::string& how) {
    INFO(how);
    CHECK(code_of(got.error) == code_of(expected.error));
    REQUIRE(got.events.size() == expected.events.size());
    for (size_t i = 0; i < got.events.size(); ++i) {
        INFO("event " << i << ": " << describe(got.events[i]) << " vs "
                      << describe(expected.events[i]));
        CHECK(got.events[i] == expected.events[i]);
    }
}

// Decodes `input` whole, in two pieces cut at every offset, and one byte at a
// time; every run must give `expected`. Large inputs are cut at every offset
// near the ends (where the header and the last partial word are) and at a
// stride in between, which keeps the test fast without missing a header cut.
void grind(Role role, const Bytes& input, const Outcome& expected,
           uint64_t max_message = kBigLimit) {
    check_same(expected, decode(role, input, {}, max_message), "whole");
    check_same(expected, decode<CopyingRecorder>(role, input, {}, max_message), "whole, unmasked while copied");
    const size_t n = input.size();
    for (size_t cut = 0; cut <= n; ++cut) {
        const bool near_ends = cut < 64 || n - cut < 64;
        if (n > 4096 && !near_ends && cut % 509 != 0) continue;
        check_same(expected, decode(role, input, {cut}, max_message),
                   "split at " + std::to_string(cut));
        check_same(expected, decode<CopyingRecorder>(role, input, {cut}, max_message),
                   "split at " + std::to_string(cut) + ", unmasked while copied");
    }
    std::vector<size_t> every;
    for (size_t i = 1; i < n; ++i) every.push_back(i);
    check_same(expected, decode(role, input, every, max_message), "byte by byte");
    check_same(expected, decode<CopyingRecorder>(role, input, every, max_message),
               "byte by byte, unmasked while copied");
}

// Events-insensitive variant for errors: how much data arrives before a
// failure depends on the cuts, but the close code must not.
void grind_error(Role role, const Bytes& input, CloseCode code,
                 uint64_t max_message = kBigLimit) {
    const size_t n = input.size();
    CHECK(code_of(decode(role, input, {}, max_message).error) == static_cast<int>(code));
    for (size_t cut = 0; cut <= n; ++cut) {
        INFO("split at " << cut);
        CHECK(code_of(decode(role, input, {cut}, max_message).error) == static_cast<int>(code));
    }
    std::vector<size_t> every;
    for (size_t i = 1; i < n; ++i) every.push_back(i);
    CHECK(code_of(decode(role, input, every, max_message).error) == static_cast<int>(code));
}

Event data(Opcode type, Bytes b) { return {Event::Data, type, std::move(b), {}}; }
Event end(Opcode type) { return {Event::End, type, {}, {}}; }
Event ping(Bytes b) { return {Event::Ping, Opcode::Ping, std::move(b), {}}; }
Event pong(Bytes b) { return {Event::Pong, Opcode::Pong, std::move(b), {}}; }
Event close_ev(std::optional<uint16_t> code, std::string_view reason) {
    return {Event::Close, Opcode::Close, bytes(reason), code};
}

const uint8_t kKey[4] = {0x37, 0xfa, 0x21, 0x3d};  // RFC 6455 5.7's key

Bytes pattern(size_t n) {
    Bytes b(n);
    for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(i * 31 + 7);
    return b;
}

}  // namespace

TEST_SUITE("ws frame: RFC 6455 5.7 examples") {
    TEST_CASE("single-frame unmasked text, client role") {
        grind(Role::Client, bytes({0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f}),
              {{data(Opcode::Text, bytes("Hello")), end(Opcode::Text)}, {}});
    }

    TEST_CASE("single-frame masked text, server role") {
        grind(Role::Server,
              bytes({0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}),
              {{data(Opcode::Text, bytes("Hello")), end(Opcode::Text)}, {}});
    }

    TEST_CASE("fragmented unmasked text") {
        grind(Role::Client, bytes({0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f}),
              {{data(Opcode::Text, bytes("Hello")), end(Opcode::Text)}, {}});
    }

    TEST_CASE("unmasked ping, masked pong") {
        grind(Role::Client, bytes({0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f}),
              {{ping(bytes("Hello"))}, {}});
        grind(Role::Server,
              bytes({0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}),
              {{pong(bytes("Hello"))}, {}});
    }

    TEST_CASE("256-byte binary with a 16-bit length") {
        const Bytes payload = pattern(256);
        grind(Role::Client, concat({bytes({0x82, 0x7E, 0x01, 0x00}), payload}),
              {{data(Opcode::Binary, payload), end(Opcode::Binary)}, {}});
        // Same message masked, as a client would send it.
        grind(Role::Server, encode_frame(Opcode::Binary, payload, true, kKey),
              {{data(Opcode::Binary, payload), end(Opcode::Binary)}, {}});
    }

    TEST_CASE("64 KiB binary with a 64-bit length") {
        const Bytes payload = pattern(65536);
        const Bytes frame = concat(
            {bytes({0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00}), payload});
        grind(Role::Client, frame, {{data(Opcode::Binary, payload), end(Opcode::Binary)}, {}});
        grind(Role::Server, encode_frame(Opcode::Binary, payload, true, kKey),
              {{data(Opcode::Binary, payload), end(Opcode::Binary)}, {}});
    }
}

TEST_SUITE("ws frame: decoding") {
    TEST_CASE("data is delivered in place, without copying") {
        Bytes frame = bytes({0x82, 0x03, 1, 2, 3});
        struct Spy : Recorder {
            const uint8_t* first = nullptr;
            void on_data(Opcode t, std::span<const uint8_t> b) override {
                if (!first) first = b.data();
                Recorder::on_data(t, b);
            }
        } spy;
        Decoder d(Role::Client, 100);
        CHECK_FALSE(d.feed(frame, spy));
        CHECK(spy.first == frame.data() + 2);
    }

    TEST_CASE("copy_masked() and apply_mask() match RFC 6455 5.3 byte by byte, at every offset and length") {
        const Bytes src = pattern(67);
        for (size_t offset = 0; offset < 8; ++offset) {
            for (size_t len = 0; len <= src.size(); ++len) {
                Bytes expected(len);
                for (size_t i = 0; i < len; ++i) expected[i] = src[i] ^ kKey[(offset + i) % 4];
                Bytes copied(len, 0xEE);
                copy_masked(copied.data(), src.data(), len, kKey, offset);
                Bytes in_place(src.begin(), src.begin() + static_cast<std::ptrdiff_t>(len));
                apply_mask(in_place.data(), len, kKey, offset);
                INFO("offset " << offset << " len " << len);
                CHECK(copied == expected);
                CHECK(in_place == expected);
            }
        }
    }

    TEST_CASE("copy_masked() may write ahead of its source in the same buffer (the bulk relay compacts)") {
        const Bytes src = pattern(200);
        for (size_t shift = 1; shift <= 40; ++shift) {
            for (size_t len : {size_t{0}, size_t{7}, size_t{31}, size_t{32}, size_t{33}, size_t{100}, 200 - shift}) {
                Bytes expected(len);
                for (size_t i = 0; i < len; ++i) expected[i] = src[shift + i] ^ kKey[(3 + i) % 4];
                Bytes buf = src;
                copy_masked(buf.data(), buf.data() + shift, len, kKey, 3);
                INFO("shift " << shift << " len " << len);
                CHECK(Bytes(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(len)) == expected);
            }
        }
    }

    TEST_CASE("masked payload is unmasked in the caller's buffer") {
        Bytes frame = bytes({0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58});
        Decoder d(Role::Server, 100);
        Recorder r;
        CHECK_FALSE(d.feed(frame, r));
        CHECK(Bytes(frame.begin() + 6, frame.end()) == bytes("Hello"));
    }

    TEST_CASE("control frames between fragments") {
        const uint8_t* k = kKey;
        const Bytes in = concat({
            encode_frame(Opcode::Text, bytes("Hel"), false, k),
            encode_frame(Opcode::Ping, bytes("p1"), true, k),
            encode_frame(Opcode::Continuation, bytes("l"), false, k),
            encode_frame(Opcode::Pong, {}, true, k),
            encode_frame(Opcode::Continuation, bytes("o"), true, k),
            encode_frame(Opcode::Binary, bytes("b"), false, k),
            encode_frame(Opcode::Close, bytes({0x03, 0xe8, 'x'}), true, k),
        });
        grind(Role::Server, in,
              {{data(Opcode::Text, bytes("Hel")), ping(bytes("p1")),
                data(Opcode::Text, bytes("l")), pong({}), data(Opcode::Text, bytes("o")),
                end(Opcode::Text), data(Opcode::Binary, bytes("b")), close_ev(1000, "x")},
               {}});
    }

    TEST_CASE("empty messages and empty fragments") {
        const Bytes in = concat({
            bytes({0x81, 0x00}),                    // empty text
            bytes({0x02, 0x00, 0x00, 0x00, 0x80, 0x00}),  // empty binary in 3 fragments
            bytes({0x01, 0x00, 0x80, 0x01, 'a'}),   // empty first fragment
        });
        grind(Role::Client, in,
              {{end(Opcode::Text), end(Opcode::Binary), data(Opcode::Text, bytes("a")),
                end(Opcode::Text)},
               {}});
    }

    TEST_CASE("close frames") {
        grind(Role::Client, bytes({0x88, 0x00}), {{close_ev(std::nullopt, "")}, {}});
        grind(Role::Client, bytes({0x88, 0x05, 0x03, 0xe9, 'b', 'y', 'e'}),
              {{close_ev(1001, "bye")}, {}});
        for (int c : {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000,
                      4999}) {
            INFO("code " << c);
            const auto code = static_cast<uint16_t>(c);
            CHECK(is_valid_wire_close_code(code));
            grind(Role::Client, encode_close(code, ""), {{close_ev(code, "")}, {}});
        }
    }

    TEST_CASE("input after a close frame is ignored") {
        const Bytes in = concat({bytes({0x88, 0x02, 0x03, 0xe8}), bytes({0x81, 0x01, 'x'}),
                                 bytes({0xFF, 0xFF, 0xFF})});
        grind(Role::Client, in, {{close_ev(1000, "")}, {}});
        Decoder d(Role::Client, 10);
        Recorder r;
        Bytes first = bytes({0x88, 0x00});
        CHECK_FALSE(d.feed(first, r));
        CHECK(d.closed());
        Bytes junk = bytes({0x70, 0x00});  // would be an error before close
        CHECK_FALSE(d.feed(junk, r));
        CHECK(r.events.size() == 1);
    }

    TEST_CASE("after an error the decoder stays failed") {
        Decoder d(Role::Client, 100);
        Recorder r;
        Bytes bad = bytes({0xC1, 0x00});
        auto e = d.feed(bad, r);
        REQUIRE(e);
        CHECK(e->code == CloseCode::ProtocolError);
        CHECK_FALSE(e->reason.empty());
        CHECK(d.failed());
        Bytes good = bytes({0x81, 0x01, 'a'});
        auto again = d.feed(good, r);
        REQUIRE(again);
        CHECK(again->code == CloseCode::ProtocolError);
        CHECK(r.events.empty());
    }

    TEST_CASE("non-minimal length encodings are accepted") {
        grind(Role::Client, bytes({0x82, 0x7E, 0x00, 0x02, 'h', 'i'}),
              {{data(Opcode::Binary, bytes("hi")), end(Opcode::Binary)}, {}});
        grind(Role::Client, bytes({0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 0x02, 'h', 'i'}),
              {{data(Opcode::Binary, bytes("hi")), end(Opcode::Binary)}, {}});
    }

    TEST_CASE("message size limit") {
        // Exactly the limit, in one frame and in fragments, is fine.
        grind(Role::Client, concat({bytes({0x82, 0x0A}), pattern(10)}),
              {{data(Opcode::Binary, pattern(10)), end(Opcode::Binary)}, {}}, 10);
        const Bytes p10 = pattern(10);
        const Bytes ten = concat({bytes({0x02, 0x06}), Bytes(p10.begin(), p10.begin() + 6),
                                  bytes({0x80, 0x04}), Bytes(p10.begin() + 6, p10.end())});
        grind(Role::Client, ten, {{data(Opcode::Binary, pattern(10)), end(Opcode::Binary)}, {}},
              10);
        // One more byte fails, in one frame and in fragments.
        grind_error(Role::Client, concat({bytes({0x82, 0x0B}), pattern(11)}),
                    CloseCode::MessageTooBig, 10);
        grind_error(Role::Client,
                    concat({bytes({0x02, 0x06}), pattern(6), bytes({0x80, 0x05}), pattern(5)}),
                    CloseCode::MessageTooBig, 10);
        // Detected from the header alone, before any payload arrives.
        Decoder d(Role::Client, 1000);
        Recorder r;
        Bytes header(kMaxHeader);
        header.resize(encode_header(header.data(), Opcode::Binary, true, 1001, nullptr));
        auto e = d.feed(header, r);
        REQUIRE(e);
        CHECK(e->code == CloseCode::MessageTooBig);
        // The limit is per message: the next message starts from zero.
        const Bytes two = concat({encode_frame(Opcode::Binary, pattern(10)),
                                  encode_frame(Opcode::Binary, pattern(10))});
        CHECK_FALSE(decode(Role::Client, two, {}, 10).error);
    }
}

TEST_SUITE("ws frame: protocol errors") {
    TEST_CASE("each violation maps to its close code") {
        struct Case {
            const char* what;
            Role role;
            Bytes input;
            CloseCode code;
        };
        const Case cases[] = {
            {"RSV1", Role::Client, bytes({0xC1, 0x00}), CloseCode::ProtocolError},
            {"RSV2", Role::Client, bytes({0xA1, 0x00}), CloseCode::ProtocolError},
            {"RSV3", Role::Client, bytes({0x91, 0x00}), CloseCode::ProtocolError},
            {"opcode 3", Role::Client, bytes({0x83, 0x00}), CloseCode::ProtocolError},
            {"opcode 7", Role::Client, bytes({0x87, 0x00}), CloseCode::ProtocolError},
            {"opcode 11", Role::Client, bytes({0x8B, 0x00}), CloseCode::ProtocolError},
            {"opcode 15", Role::Client, bytes({0x8F, 0x00}), CloseCode::ProtocolError},
            {"fragmented ping", Role::Client, bytes({0x09, 0x00}), CloseCode::ProtocolError},
            {"fragmented close", Role::Client, bytes({0x08, 0x00}), CloseCode::ProtocolError},
            {"ping of 126 bytes", Role::Client,
             concat({bytes({0x89, 0x7E, 0x00, 0x7E}), pattern(126)}),
             CloseCode::ProtocolError},
            {"unmasked frame to server", Role::Server, bytes({0x81, 0x01, 'a'}),
             CloseCode::ProtocolError},
            {"unmasked ping to server", Role::Server, bytes({0x89, 0x00}),
             CloseCode::ProtocolError},
            {"masked frame to client", Role::Client,
             encode_frame(Opcode::Text, bytes("a"), true, kKey), CloseCode::ProtocolError},
            {"continuation without message", Role::Client, bytes({0x80, 0x01, 'a'}),
             CloseCode::ProtocolError},
            {"text while fragmented message open", Role::Client,
             bytes({0x01, 0x01, 'a', 0x81, 0x01, 'b'}), CloseCode::ProtocolError},
            {"binary while fragmented message open", Role::Client,
             bytes({0x02, 0x01, 'a', 0x82, 0x01, 'b'}), CloseCode::ProtocolError},
            {"continuation after a finished message", Role::Client,
             bytes({0x81, 0x01, 'a', 0x80, 0x01, 'b'}), CloseCode::ProtocolError},
            {"64-bit length with top bit set", Role::Client,
             bytes({0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0x01}), CloseCode::ProtocolError},
            {"close with 1-byte payload", Role::Client, bytes({0x88, 0x01, 0x03}),
             CloseCode::ProtocolError},
            {"close reason not UTF-8", Role::Client, bytes({0x88, 0x04, 0x03, 0xe8, 0xC0, 0x80}),
             CloseCode::InvalidPayload},
            {"close reason truncated UTF-8", Role::Client, bytes({0x88, 0x03, 0x03, 0xe8, 0xE2}),
             CloseCode::InvalidPayload},
            {"text not UTF-8", Role::Client, bytes({0x81, 0x02, 0xC0, 0x80}),
             CloseCode::InvalidPayload},
            {"text truncated at message end", Role::Client,
             bytes({0x01, 0x01, 0xE2, 0x80, 0x01, 0x82}), CloseCode::InvalidPayload},
        };
        for (const Case& c : cases) {
            INFO(c.what);
            grind_error(c.role, c.input, c.code);
        }
    }

    TEST_CASE("invalid close codes on the wire") {
        for (int code : {0, 1, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000,
                         2999, 5000, 65535}) {
            INFO("code " << code);
            grind_error(Role::Client, bytes({0x88, 0x02, code >> 8, code & 0xFF}),
                        CloseCode::ProtocolError);
        }
    }

    TEST_CASE("errors are reported from the header bytes that reveal them") {
        // A bad first byte fails after two bytes, even with payload pending.
        Decoder d(Role::Server, 100);
        Recorder r;
        Bytes two = bytes({0x83, 0x85});
        CHECK(d.feed(two, r));
    }

    TEST_CASE("invalid UTF-8 fails fast, before the rest of the frame arrives") {
        Decoder d(Role::Client, 1000);
        Recorder r;
        Bytes part = bytes({0x81, 0x64, 'o', 'k', 0xFF});  // 100-byte text frame, 3 bytes in
        auto e = d.feed(part, r);
        REQUIRE(e);
        CHECK(e->code == CloseCode::InvalidPayload);
    }
}

TEST_SUITE("ws frame: text UTF-8") {
    TEST_CASE("multi-byte characters split across fragments and chunks") {
        // "aé€😀z": 1-, 2-, 3- and 4-byte sequences, cut into fragments that
        // split every multi-byte character.
        const Bytes text = bytes("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80z");
        const size_t frag_cuts[] = {2, 5, 8};
        Bytes in;
        size_t from = 0;
        for (size_t i = 0; i <= std::size(frag_cuts); ++i) {
            const size_t to = i < std::size(frag_cuts) ? frag_cuts[i] : text.size();
            const Opcode op = i == 0 ? Opcode::Text : Opcode::Continuation;
            const bool fin = i == std::size(frag_cuts);
            const Bytes piece(text.begin() + from, text.begin() + to);
            const Bytes f = encode_frame(op, piece, fin, kKey);
            in.insert(in.end(), f.begin(), f.end());
            from = to;
        }
        grind(Role::Server, in, {{data(Opcode::Text, text), end(Opcode::Text)}, {}});
    }

    TEST_CASE("invalid sequences in text messages") {
        const Bytes bad[] = {
            bytes({0xC0, 0x80}),               // overlong NUL
            bytes({0xC1, 0xBF}),               // overlong
            bytes({0xE0, 0x80, 0x80}),         // overlong 3-byte
            bytes({0xE0, 0x9F, 0xBF}),         // overlong U+07FF
            bytes({0xF0, 0x8F, 0xBF, 0xBF}),   // overlong U+FFFF
            bytes({0xED, 0xA0, 0x80}),         // surrogate U+D800
            bytes({0xED, 0xBF, 0xBF}),         // surrogate U+DFFF
            bytes({0xF4, 0x90, 0x80, 0x80}),   // U+110000
            bytes({0xF5, 0x80, 0x80, 0x80}),   // lead beyond range
            bytes({0xFF}),                     //
            bytes({0x80}),                     // lone continuation
            bytes({0xC3, 0x28}),               // bad continuation
            bytes({0xE2, 0x82}),               // truncated at end
            bytes({0xF0, 0x9F, 0x98}),         // truncated at end
        };
        for (const Bytes& b : bad) {
            INFO("sequence of " << b.size() << " bytes starting " << int(b[0]));
            CHECK_FALSE(is_valid_utf8({reinterpret_cast<const char*>(b.data()), b.size()}));
            // Whole, and as the second fragment of a message.
            grind_error(Role::Server,
                        encode_frame(Opcode::Text, concat({bytes("ab"), b}), true, kKey),
                        CloseCode::InvalidPayload);
            grind_error(Role::Server,
                        concat({encode_frame(Opcode::Text, bytes("ab"), false, kKey),
                                encode_frame(Opcode::Continuation, b, true, kKey)}),
                        CloseCode::InvalidPayload);
        }
    }

    TEST_CASE("binary messages are not UTF-8-checked") {
        grind(Role::Client, bytes({0x82, 0x02, 0xC0, 0x80}),
              {{data(Opcode::Binary, bytes({0xC0, 0x80})), end(Opcode::Binary)}, {}});
    }
}

TEST_SUITE("ws utf8") {
    TEST_CASE("boundaries of the valid ranges") {
        const char* valid[] = {
            "", "plain ascii, longer than eight bytes",
            "\x7F", "\xC2\x80", "\xDF\xBF", "\xE0\xA0\x80", "\xED\x9F\xBF", "\xEE\x80\x80",
            "\xEF\xBF\xBF", "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF",
        };
        for (const char* s : valid) {
            INFO(s);
            CHECK(is_valid_utf8(s));
        }
    }

    TEST_CASE("incremental validation across every split") {
        const std::string s =
            "12345678\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"
            "abcdefgh\xF4\x8F\xBF\xBF";
        const auto* p = reinterpret_cast<const uint8_t*>(s.data());
        for (size_t cut = 0; cut <= s.size(); ++cut) {
            Utf8Validator v;
            CHECK(v.feed({p, cut}));
            CHECK(v.feed({p + cut, s.size() - cut}));
            CHECK(v.complete());
        }
        Utf8Validator v;
        for (size_t i = 0; i < s.size(); ++i) CHECK(v.feed({p + i, 1}));
        CHECK(v.complete());
    }

    TEST_CASE("failure is sticky until reset") {
        Utf8Validator v;
        const uint8_t bad[] = {0xFF};
        const uint8_t ok[] = {'a'};
        CHECK_FALSE(v.feed(bad));
        CHECK_FALSE(v.feed(ok));
        CHECK_FALSE(v.complete());
        v.reset();
        CHECK(v.feed(ok));
        CHECK(v.complete());
        const uint8_t partial[] = {0xE2, 0x82};
        CHECK(v.feed(partial));
        CHECK_FALSE(v.complete());
    }

    TEST_CASE("non-ASCII after a long ASCII run is still checked") {
        std::string s(37, 'x');
        s += "\xED\xA0\x80";
        CHECK_FALSE(is_valid_utf8(s));
    }
}

TEST_SUITE("ws frame: encoding") {
    TEST_CASE("header lengths: 7-, 16- and 64-bit forms round-trip through the decoder") {
        struct Case {
            uint64_t len;
            size_t header;
        };
        for (Case c : {Case{0, 2}, {1, 2}, {125, 2}, {126, 4}, {127, 4}, {65535, 4},
                       {65536, 10}, {70000, 10}}) {
            for (const uint8_t* key : {static_cast<const uint8_t*>(nullptr), kKey}) {
                INFO("len " << c.len << (key ? " masked" : " unmasked"));
                uint8_t h[kMaxHeader];
                const size_t n = encode_header(h, Opcode::Binary, true, c.len, key);
                CHECK(n == c.header + (key ? 4 : 0));
                const Bytes payload = pattern(c.len);
                const Bytes frame = encode_frame(Opcode::Binary, payload, true, key);
                CHECK(std::equal(h, h + n, frame.begin()));
                const Outcome out = decode(key ? Role::Server : Role::Client, frame, {});
                CHECK_FALSE(out.error);
                std::vector<Event> want;
                if (c.len) want.push_back(data(Opcode::Binary, payload));
                want.push_back(end(Opcode::Binary));
                CHECK(out.events == want);
            }
        }
        // A 64-bit length beyond 32 bits: the header alone is accepted.
        uint8_t h[kMaxHeader];
        const uint64_t huge = (uint64_t{1} << 62) + 5;
        const size_t n = encode_header(h, Opcode::Binary, false, huge, nullptr);
        CHECK(n == 10);
        CHECK(h[1] == 127);
        Decoder d(Role::Client, UINT64_MAX);
        Recorder r;
        CHECK_FALSE(d.feed({h, n}, r));
        CHECK(d.in_message());
    }

    TEST_CASE("fin and opcode bits") {
        uint8_t h[kMaxHeader];
        encode_header(h, Opcode::Text, false, 0, nullptr);
        CHECK(h[0] == 0x01);
        encode_header(h, Opcode::Pong, true, 3, kKey);
        CHECK(h[0] == 0x8A);
        CHECK(h[1] == 0x83);
        CHECK(std::equal(kKey, kKey + 4, h + 2));
    }

    TEST_CASE("RFC 6455 5.7 masked Hello is reproduced byte for byte") {
        CHECK(encode_frame(Opcode::Text, bytes("Hello"), true, kKey) ==
              bytes({0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}));
        CHECK(encode_frame(Opcode::Text, bytes("Hello")) ==
              bytes({0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f}));
    }

    TEST_CASE("masking in odd pieces equals masking at once, and undoes itself") {
        const Bytes original = pattern(1000);
        Bytes reference = original;
        for (size_t i = 0; i < reference.size(); ++i) reference[i] ^= kKey[i % 4];

        for (size_t step : {1, 3, 5, 7, 9, 13, 17, 31, 64, 65, 127, 128, 999}) {
            INFO("pieces of " << step);
            Bytes b = original;
            for (size_t off = 0; off < b.size(); off += step) {
                apply_mask(b.data() + off, std::min(step, b.size() - off), kKey, off);
            }
            CHECK(b == reference);
            apply_mask(b.data(), b.size(), kKey, 0);
            CHECK(b == original);
        }
        // A piece starting at every offset 0..15 of the payload.
        for (size_t start = 0; start < 16; ++start) {
            Bytes b(original.begin() + start, original.begin() + start + 100);
            apply_mask(b.data(), b.size(), kKey, start);
            CHECK(std::equal(b.begin(), b.end(), reference.begin() + start));
        }
    }

    TEST_CASE("encode_close") {
        CHECK(encode_close(CloseCode::Normal, "") == bytes({0x88, 0x02, 0x03, 0xe8}));
        CHECK(encode_close(1001, "bye") == bytes({0x88, 0x05, 0x03, 0xe9, 'b', 'y', 'e'}));
        CHECK(encode_close(CloseCode::NoStatus, "ignored") == bytes({0x88, 0x00}));
        // Invalid UTF-8 reasons are dropped rather than sent.
        CHECK(encode_close(1000, "\xC0\x80") == bytes({0x88, 0x02, 0x03, 0xe8}));

        // A long reason is cut at a code point boundary, for each sequence
        // length and each phase against the 123-byte limit.
        for (const std::string_view ch : {"a", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"}) {
            for (size_t prefix = 0; prefix < 4; ++prefix) {
                std::string reason(prefix, '-');
                while (reason.size() < 200) reason += ch;
                INFO("char of " << ch.size() << " bytes, prefix " << prefix);
                const Bytes frame = encode_close(1000, reason);
                REQUIRE(frame.size() >= 4);
                CHECK(frame[1] <= kMaxControlPayload);
                const std::string_view sent(reinterpret_cast<const char*>(frame.data() + 4),
                                            frame.size() - 4);
                CHECK(sent.size() > kMaxCloseReason - ch.size());
                CHECK(reason.starts_with(sent));
                const Outcome out = decode(Role::Client, frame, {});
                CHECK_FALSE(out.error);
                CHECK(out.events == std::vector<Event>{close_ev(1000, sent)});
            }
        }

        // Masked close decodes on the server side.
        grind(Role::Server, encode_close(4000, "done", kKey), {{close_ev(4000, "done")}, {}});
    }
}
