// WebSocket tunnels: the RFC 6455 upgrade on evhttp and the relay between one
// WebSocket and one Session. The protocol cores (frame.hpp, handshake.hpp) are
// pure; this is the thin libevent adapter around them.
//
// ---------------------------------------------------------------------------
// Subprotocols (Sec-WebSocket-Protocol). The server's preference decides:
// netwine.v1, then binary, then base64. Offering none means "binary"; offering
// only names we do not speak is a 400.
//
// binary / none  (websockify's mode; noVNC)
//   Target bytes go down as BINARY messages of up to 256 KiB. Every client data
//   message (binary or text) is written to the target as it is. No offsets; the
//   session is not resumable and ends with the WebSocket.
//
// base64  (websockify's older mode)
//   As binary, but every message both ways is a TEXT message holding base64
//   (RFC 4648, padded) of the bytes. A client text message that is not valid
//   base64 closes with 1007 "invalid base64"; a client binary message closes
//   with 1003.
//
// netwine.v1  (resumable)
//   1. Right after the 101 the server sends a TEXT message
//        OK <key> <up_next>
//      <key> is the session key (needed to resume), <up_next> the upstream
//      offset the server expects next: 0 for a new session; on a resume, resend
//      unacknowledged upstream data from there.
//   2. Downstream data: BINARY messages. The first 8 bytes are the big-endian
//      downstream offset of the payload's first byte; the payload follows (it
//      may be empty). After a resume the first message starts at the `ack` the
//      client gave; offsets are contiguous from there.
//   3. Upstream data: BINARY messages with the same 8-byte header (offset of
//      the payload's first byte). Bytes before <up_next> were applied already
//      and are skipped (a full duplicate is ignored); an offset past <up_next>
//      closes with 4009 "upstream offset gap, expected N". A binary message
//      shorter than 8 bytes closes with 1002.
//   4. Acknowledgements are TEXT messages "A <offset>" (decimal):
//        client -> server: "I hold every downstream byte before <offset>"; the
//          server frees them. Send one at least every quarter of
//          --session-buffer, or downstream stalls (the server stops reading the
//          target). An ack that is not a number, or is past what was sent,
//          closes with 1002.
//        server -> client: sent as the target's socket takes upstream bytes:
//          the target has been given every byte before <offset>; the client may
//          forget them. Right after the OK of an attach the server sends the
//          offset the target has taken so far (when it is not 0). A client should
//          keep fewer than half of --session-buffer upstream bytes past the last
//          such offset (netwine.js: wsWindow, 256 KiB), counting from the last "A"
//          it got on any connection of the session, not from <up_next>. Acks
//          travel behind data, so with more in flight and a target that echoes,
//          both directions can wait on each other: the server stops reading the
//          client (upstream full) while waiting for its acks (downstream full).
//          When that lasts past a ping and --ws-pong-timeout, the server drops
//          the connection (no close frame); the session stays, and the client
//          resumes from its ack, which frees downstream again.
//      Any other TEXT message closes with 1003.
//   5. Ending. The session's end reaches the client as a close frame with the
//      session's code and reason (1000 target closed, 1001 shutting down, 1008
//      not allowed, 1011 target unreachable or failed, 4001 idle timeout, 4002
//      another transport took over). The client's close frame decides the
//      session's fate:
//        1000, no status code (1005), or 3000-4999: the client is done; the
//          session ends (upstream is flushed to the target first);
//        1001 (going away) or any other code: the session stays resumable.
//      A connection that drops without a close frame, fails a protocol check,
//      or does not answer pings leaves the session resumable too: attach again
//      within --session-idle-timeout with
//        GET <prefix>KEY/ws?ack=N   (Sec-WebSocket-Protocol: netwine.v1)
//      where N is the downstream offset the client holds. Attaching requires
//      netwine.v1 (400 otherwise); an unknown key is 404 "unknown_session";
//      an N outside the kept bytes is 409 "bad_offset".
//
// All subprotocols: a target that cannot be reached is reported after the
// upgrade as a close frame (1011, or 1008 when the rules refuse its address),
// as websockify does, so the reason reaches JavaScript's onclose. Pings go to
// a peer that has sent nothing for --ws-ping-interval; one that stays silent
// for --ws-pong-timeout after a ping is dropped. Messages over
// --ws-max-message close with 1009.
// ---------------------------------------------------------------------------
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

struct evhttp_request;

namespace netwine::tunnel {
class Manager;
}

namespace netwine::ws {

struct UpgradeParams {
  std::string target;    // requested target for a new session ("host:port" or a name/token); empty when attaching
  std::string key;       // attach to this existing session (netwine.v1 only); empty for new sessions
  uint64_t ack = 0;      // with key: downstream offset the client holds
  bool foreign = false;  // websockify-compatible path outside the prefix (e.g. /websockify?token=)
};

// Handles a WebSocket upgrade request: answers it (101, or 400/403/404/409/426/
// 503 with a short body) and, on success, runs the connection until it ends.
//
// Ownership: on success the connection object is owned by a table private to
// ws_connection.cpp while the socket lives. When the connection ends it hands
// itself to Manager::dispose(), which frees it outside of its own callbacks.
// If evhttp frees the socket first (evhttp_free at shutdown, after the Manager
// is gone), the close watcher frees the object directly: evhttp_free never runs
// inside one of the object's callbacks.
void handle_upgrade(tunnel::Manager& m, evhttp_request* req, const UpgradeParams& p);

// WebSocket connections still relaying, or still writing their last data and
// close frame to the socket after their session ended: a graceful shutdown waits
// for them (not for the client's answering Close: the drain timeout bounds that).
size_t delivering_connections();

// Closes every WebSocket of the calling thread at once (a worker thread stopping).
void close_all_connections();

}  // namespace netwine::ws
