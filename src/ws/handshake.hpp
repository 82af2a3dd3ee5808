// The server side of the RFC 6455 opening handshake (section 4.2), as a pure
// decision: parsed request headers in, status + accept key + subprotocol out.
// ws_connection reads the headers from the evhttp request, calls
// evaluate_handshake(), and writes the 101 (or the error) itself.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace netwine::ws {

// Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455 4.2.2):
// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")). The key is used
// as sent, without decoding.
std::string accept_key(std::string_view client_key);

// The request facts the decision needs. An empty string_view means the header
// was absent. A header that appears more than once must be joined by the
// caller with ", " (RFC 9110 5.3), e.g. two Sec-WebSocket-Protocol lines.
struct HandshakeInput {
    std::string_view method;    // "GET" is the only acceptable method
    bool http11_or_later;       // RFC 6455 4.1: HTTP/1.1 or higher
    std::string_view upgrade;   // Upgrade
    std::string_view connection;  // Connection
    std::string_view version;   // Sec-WebSocket-Version
    std::string_view key;       // Sec-WebSocket-Key
    std::string_view protocols;  // Sec-WebSocket-Protocol (comma-separated offer)
};

struct HandshakeResult {
    // 101 on success; 400 for a malformed or non-WebSocket request; 426 for a
    // missing or unsupported Sec-WebSocket-Version, in which case the caller
    // adds "Sec-WebSocket-Version: 13" to the response (RFC 6455 4.4).
    int status = 400;
    std::string error;        // human-readable reason when status != 101
    std::string accept;       // Sec-WebSocket-Accept value when status == 101
    std::string subprotocol;  // chosen subprotocol; "" means send no header
};

// The only protocol version netwine speaks (RFC 6455 4.4).
inline constexpr std::string_view kWebSocketVersion = "13";

// Decides a WebSocket upgrade request. Checks, in this order, each failing
// with the first status that applies:
//   GET over HTTP/1.1+ (400); Upgrade lists "websocket" and Connection lists
//   "upgrade", as case-insensitive comma-separated tokens (400);
//   Sec-WebSocket-Version is 13 (426); Sec-WebSocket-Key is base64 of exactly
//   16 bytes (400); the subprotocol offer (below).
// Subprotocol: the first name in `supported_in_preference_order` that the
// client offered wins, so the SERVER's preference decides, not the order of
// the client's list (a noVNC client offering "base64, binary" gets binary when
// the server lists binary first). Names compare case-sensitively (RFC 6455
// 4.1, item 10). No offer means no subprotocol; an offer with nothing we
// support is a 400, because the client said it cannot speak without one.
HandshakeResult evaluate_handshake(const HandshakeInput& in,
                                   std::span<const std::string_view> supported_in_preference_order);

}  // namespace netwine::ws
