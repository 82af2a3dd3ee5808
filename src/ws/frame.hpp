// RFC 6455 framing: an incremental, zero-copy frame decoder and the frame
// encoders. Pure: no sockets, no libevent. ws_connection feeds it whatever a
// read returned and forwards the events; tests and fuzzers feed it bytes.
//
// Why zero-copy: netwine relays bulk data (VNC framebuffers, file transfers)
// from WebSocket to TCP. The decoder unmasks DATA payload in the caller's own
// buffer and hands out spans into it, so the adapter can write those bytes to
// the target without an intermediate copy. Only the frame header (<= 14 bytes)
// and control-frame payloads (<= 125 bytes) are buffered inside the decoder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ws/utf8.hpp"

namespace netwine::ws {

// Frame opcodes (RFC 6455 5.2). Values 3-7 and 11-15 are reserved; the decoder
// rejects them, so they have no enumerator.
enum class Opcode : uint8_t {
    Continuation = 0,  // next fragment of the message in progress
    Text = 1,          // first frame of a UTF-8 text message
    Binary = 2,        // first frame of a binary message
    Close = 8,         // start or answer of the closing handshake
    Ping = 9,          // keep-alive probe; must be answered with a Pong
    Pong = 10,         // answer to a Ping, or an unsolicited heartbeat
};

// Close status codes (RFC 6455 7.4.1).
enum class CloseCode : uint16_t {
    Normal = 1000,              // purpose fulfilled
    GoingAway = 1001,           // server shutting down, or browser leaving the page
    ProtocolError = 1002,       // peer broke RFC 6455 framing rules
    UnsupportedData = 1003,     // a message type we refuse (e.g. text on a binary subprotocol)
    NoStatus = 1005,            // never sent: a Close frame that carried no code
    Abnormal = 1006,            // never sent: the connection dropped without a Close frame
    InvalidPayload = 1007,      // text or close reason that is not valid UTF-8
    PolicyViolation = 1008,     // generic "not allowed" (e.g. target refused by policy)
    MessageTooBig = 1009,       // message larger than max_message_size
    MandatoryExtension = 1010,  // client-only: server did not negotiate a required extension
    InternalError = 1011,       // server-side failure unrelated to the peer's behaviour
};

// Which side of the connection this decoder sits on. RFC 6455 5.1: frames from
// client to server MUST be masked, frames from server to client MUST NOT be.
enum class Role {
    Server,  // decodes what a client sends: every frame must be masked
    Client,  // decodes what a server sends: no frame may be masked
};

// A violation that fails the connection (RFC 6455 7.1.7). `code` is what to
// put in our Close frame; `reason` is for the log and may go in the frame.
struct ProtocolError {
    CloseCode code;
    std::string reason;
};

// RFC 6455 5.5: control frames carry at most 125 bytes and are never fragmented.
inline constexpr size_t kMaxControlPayload = 125;
// 2 fixed bytes + 8-byte extended length + 4-byte masking key (RFC 6455 5.2).
inline constexpr size_t kMaxHeader = 14;
// 2-byte status code + at most 123 bytes of UTF-8 reason (RFC 6455 5.5.1).
inline constexpr size_t kMaxCloseReason = kMaxControlPayload - 2;

// True for status codes a peer may put on the wire: 1000-1003, 1007-1011
// (RFC 6455 7.4.1) and 3000-4999 (registered / private use, 7.4.2). 1005, 1006
// and 1015 are reserved for reporting, never sent; 1004 and 1016-2999 are
// reserved. The IANA registrations after RFC 6455 (1012-1014) are rejected too,
// as Autobahn's strict cases expect; browsers can only send 1000 and 3000-4999.
bool is_valid_wire_close_code(uint16_t code);

// Receives what the Decoder finds. Called synchronously from Decoder::feed().
// The spans are valid only during the call: data spans point into the chunk
// passed to feed(), control spans into the decoder's own buffer.
struct Handler {
    virtual ~Handler() = default;

    // A piece of the current Text or Binary message (already unmasked, and for
    // Text already UTF-8-validated up to this piece). Pieces are cut wherever
    // frame or chunk boundaries fall, including inside a UTF-8 sequence; never
    // empty. `message_type` is the opcode of the message's first frame.
    virtual void on_data(Opcode message_type, std::span<const uint8_t> bytes) = 0;

    // A piece of a Binary message as it arrived, still masked with `key` from
    // payload byte `offset` on (only its low two bits matter). The default
    // unmasks it in place and calls on_data(). A handler that copies the bytes
    // anyway overrides it to unmask while copying (copy_masked()): one pass over
    // the bytes instead of two. Text is always unmasked first (it is validated).
    virtual void on_masked_data(Opcode message_type, std::span<uint8_t> masked, const uint8_t key[4],
                                size_t offset);

    // The message that on_data() was delivering is complete (its FIN frame
    // ended). Called also for empty messages, which produce no on_data().
    virtual void on_message_end(Opcode message_type) = 0;

    virtual void on_ping(std::span<const uint8_t> payload) = 0;
    virtual void on_pong(std::span<const uint8_t> payload) = 0;

    // The peer started or answered the closing handshake. `code` is absent
    // when the Close frame had an empty payload (report it as 1005). The
    // decoder ignores all input after this (see Decoder).
    virtual void on_close(std::optional<uint16_t> code, std::string_view reason) = 0;
};

// Incremental RFC 6455 frame decoder for one direction of one connection.
//
// Contract:
// - feed() consumes the whole chunk, whatever its size and wherever it cuts
//   frames, and reports events to the handler in wire order.
// - DATA payload is unmasked IN PLACE in `chunk` (hence a mutable span), by the
//   decoder for Text and by Handler::on_masked_data()'s default for Binary
//   (a handler may instead unmask while copying). After feed() returns, the
//   chunk's bytes may be modified; the caller owns them.
// - Control frames may arrive between the fragments of a data message.
// - The first violation returns a ProtocolError; the decoder then stays failed
//   and every later feed() returns the same error without reading input.
//   Events before the violation have been delivered (for text, only pieces
//   that validated; the piece containing the bad byte is not delivered).
// - After a Close frame, the rest of the chunk and all later input is ignored
//   and feed() returns nullopt: RFC 6455 5.5.1 says the peer sends nothing
//   after Close, so anything that follows is dropped, not an error worth a
//   different close code than the one the peer already chose.
// - Lengths in non-minimal encoding (e.g. 5 sent as 126 + 0x0005) are
//   accepted: 5.2 obliges the sender, the value is unambiguous, and
//   rejecting them protects nothing.
// - No extensions are negotiated, so any RSV bit is a protocol error.
class Decoder {
public:
    // `max_message_size`: largest total payload of one data message; a frame
    // header announcing more fails with 1009 before its payload is read.
    explicit Decoder(Role role, uint64_t max_message_size);

    std::optional<ProtocolError> feed(std::span<uint8_t> chunk, Handler& h);

    // A Close frame was decoded; further input is ignored.
    bool closed() const { return state_ == State::Closed; }
    // feed() returned an error; the connection must be failed.
    bool failed() const { return state_ == State::Failed; }
    // A data message has started and its FIN frame has not ended yet.
    bool in_message() const { return message_type_.has_value(); }

private:
    enum class State {
        Header,          // collecting the 2..14 header bytes into header_
        DataPayload,     // unmasking and delivering data payload in place
        ControlPayload,  // collecting a control payload into control_
        Closed,          // a Close frame was decoded; input is ignored
        Failed,          // a protocol error was reported; input is ignored
    };

    // Each returns an error to fail with, or nullopt to go on.
    std::optional<ProtocolError> check_first_two_bytes();
    std::optional<ProtocolError> start_payload(Handler& h);
    std::optional<ProtocolError> deliver_data(std::span<uint8_t> piece, Handler& h);
    std::optional<ProtocolError> finish_data_frame(Handler& h);
    std::optional<ProtocolError> finish_control_frame(Handler& h);
    std::optional<ProtocolError> fail(CloseCode code, std::string reason);

    const Role role_;
    const uint64_t max_message_size_;
    State state_ = State::Header;

    // Current frame.
    uint8_t header_[kMaxHeader] = {};
    size_t header_have_ = 0;  // bytes of header_ filled
    size_t header_need_ = 2;  // total header size, known once 2 bytes are in
    Opcode opcode_ = Opcode::Continuation;
    bool fin_ = false;
    bool masked_ = false;
    uint8_t mask_key_[4] = {};
    uint64_t payload_left_ = 0;  // payload bytes of this frame not yet seen
    uint64_t payload_seen_ = 0;  // payload bytes already seen: the mask offset

    // Current data message (absent between messages).
    std::optional<Opcode> message_type_;
    uint64_t message_size_ = 0;  // payload bytes announced so far, <= max
    Utf8Validator utf8_;         // used for Text messages only

    uint8_t control_[kMaxControlPayload] = {};
    size_t control_have_ = 0;

    std::optional<ProtocolError> error_;  // set once when entering Failed
};

// --- Encoding ------------------------------------------------------------
// The encoders produce exactly one frame each. Server frames pass
// mask_key == nullptr; a client (tests, the bench tool) passes a 4-byte key,
// which RFC 6455 5.3 requires to be unpredictable (the caller draws it).

// Writes a frame header to `out` and returns its length (2..14). `payload_len`
// must be <= 125 for control opcodes and < 2^63 for any (not checked: the
// caller's lengths come from buffers it owns). Uses the minimal length form.
size_t encode_header(uint8_t out[kMaxHeader], Opcode op, bool fin, uint64_t payload_len,
                     const uint8_t* mask_key);

// XORs `data` with the masking key, as payload bytes [offset_in_payload,
// offset_in_payload + len) of a frame. The offset lets a caller (un)mask a
// payload in pieces: pass the number of payload bytes already processed.
// Masking is its own inverse. Works 8 bytes at a time.
void apply_mask(uint8_t* data, size_t len, const uint8_t key[4], size_t offset_in_payload);

// apply_mask() from `src` into `dst`: unmasking while copying, in one pass. `dst`
// may be `src` itself, lie before it in the same buffer (each step loads before it
// stores, front to back: the bulk relay packs payloads to a block's front), or not
// overlap it; it must not lie after `src` within `len` bytes.
void copy_masked(uint8_t* dst, const uint8_t* src, size_t len, const uint8_t key[4], size_t offset_in_payload);

// A complete frame: header followed by the (masked, if a key is given) payload.
std::vector<uint8_t> encode_frame(Opcode op, std::span<const uint8_t> payload, bool fin = true,
                                  const uint8_t* mask_key = nullptr);

// A Close frame. `reason` is cut at a UTF-8 code point boundary so the payload
// stays within 125 bytes; a reason that is not valid UTF-8 is dropped (the peer
// would otherwise fail us with 1007). code == 1005 (NoStatus) produces a Close
// frame with an empty payload, the way to answer a Close that had no code.
// Other codes should satisfy is_valid_wire_close_code().
std::vector<uint8_t> encode_close(uint16_t code, std::string_view reason,
                                  const uint8_t* mask_key = nullptr);

inline std::vector<uint8_t> encode_close(CloseCode code, std::string_view reason,
                                         const uint8_t* mask_key = nullptr) {
    return encode_close(static_cast<uint16_t>(code), reason, mask_key);
}

}  // namespace netwine::ws
