#include "ws/handshake.hpp"

#include <openssl/evp.h>

#include <cstdint>

#include "ascii.hpp"

namespace netwine::ws {

namespace {

// RFC 6455 1.3: the fixed GUID appended to the client's key.
constexpr std::string_view kAcceptGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// A client's offered list goes into our error text; keep error bodies small
// whatever a client sends.
constexpr size_t kMaxEchoedOffer = 128;

// Optional whitespace around list elements (RFC 9110 5.6.3).
std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// Calls f(token) for each non-empty, trimmed element of a comma-separated
// header list; stops early when f returns true, and returns whether it did.
template <typename F>
bool any_token(std::string_view list, F f) {
    while (!list.empty()) {
        const size_t comma = list.find(',');
        const std::string_view token = trim(list.substr(0, comma));
        if (!token.empty() && f(token)) return true;
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
    return false;
}

bool has_token_ci(std::string_view list, std::string_view wanted) {
    return any_token(list, [&](std::string_view t) { return iequals(t, wanted); });
}

bool is_base64_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

// RFC 6455 4.1 item 7: the key is a base64-encoded 16-byte value. With the
// standard padding, exactly those strings are 22 alphabet characters followed
// by "==". Non-zero bits in the unused low half of the 22nd character are
// tolerated (RFC 4648 3.5 lets decoders choose): the accept hash covers the
// string as sent, so they cannot confuse anything.
bool is_valid_key(std::string_view key) {
    if (key.size() != 24 || key.substr(22) != "==") return false;
    for (size_t i = 0; i < 22; ++i) {
        if (!is_base64_char(key[i])) return false;
    }
    return true;
}

HandshakeResult reject(int status, std::string error) {
    HandshakeResult r;
    r.status = status;
    r.error = std::move(error);
    return r;
}

}  // namespace

std::string accept_key(std::string_view client_key) {
    std::string input;
    input.reserve(client_key.size() + kAcceptGuid.size());
    input.append(client_key).append(kAcceptGuid);

    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    if (EVP_Digest(input.data(), input.size(), digest, &digest_len, EVP_sha1(), nullptr) != 1) {
        // Only possible if OpenSSL cannot provide SHA-1 (e.g. a FIPS provider
        // without it). An empty accept makes every client refuse the upgrade,
        // which is the safe failure.
        return {};
    }
    // 20 bytes -> 28 base64 characters + the NUL that EVP_EncodeBlock writes.
    unsigned char b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
    const int n = EVP_EncodeBlock(b64, digest, static_cast<int>(digest_len));
    return std::string(reinterpret_cast<const char*>(b64), static_cast<size_t>(n));
}

HandshakeResult evaluate_handshake(
    const HandshakeInput& in, std::span<const std::string_view> supported_in_preference_order) {
    if (in.method != "GET") {
        return reject(400, "WebSocket upgrade requires GET, got " + std::string(in.method));
    }
    if (!in.http11_or_later) return reject(400, "WebSocket upgrade requires HTTP/1.1 or later");
    if (!has_token_ci(in.upgrade, "websocket")) {
        return reject(400, "missing \"Upgrade: websocket\"");
    }
    if (!has_token_ci(in.connection, "upgrade")) {
        return reject(400, "missing \"Connection: Upgrade\"");
    }
    if (trim(in.version) != kWebSocketVersion) {
        return reject(426, in.version.empty()
                               ? std::string("missing Sec-WebSocket-Version (13 is supported)")
                               : "unsupported Sec-WebSocket-Version (13 is supported)");
    }
    const std::string_view key = trim(in.key);
    if (key.empty()) return reject(400, "missing Sec-WebSocket-Key");
    if (!is_valid_key(key)) {
        return reject(400, "Sec-WebSocket-Key is not the base64 encoding of 16 bytes");
    }

    HandshakeResult r;
    const bool offered_any = any_token(in.protocols, [](std::string_view) { return true; });
    if (offered_any) {
        for (const std::string_view candidate : supported_in_preference_order) {
            if (any_token(in.protocols, [&](std::string_view t) { return t == candidate; })) {
                r.subprotocol = std::string(candidate);
                break;
            }
        }
        if (r.subprotocol.empty()) {
            std::string offer(trim(in.protocols).substr(0, kMaxEchoedOffer));
            std::string supported;
            for (const std::string_view s : supported_in_preference_order) {
                if (!supported.empty()) supported += ", ";
                supported += s;
            }
            return reject(400, "no supported subprotocol offered: " + offer + " (supported: " +
                                   supported + ")");
        }
    }
    r.status = 101;
    r.accept = accept_key(key);
    return r;
}

}  // namespace netwine::ws
