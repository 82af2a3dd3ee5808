// netwine.v1 client messages (the protocol is described in ws_connection.hpp):
// binary data messages that start with an 8-byte big-endian upstream offset, and
// "A <offset>" text acknowledgements. Pure: the event loop's WebSocket and a
// bulk relay thread (bulk_relay.hpp) parse with the same code, keep their place
// in a message in the same Reader (so a connection can move between them
// mid-message), and fail with the same close codes and reasons.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace netwine::ws::v1 {

// The offset header of a data message, both ways.
inline constexpr size_t kOffsetHeader = 8;
// The longest text message accepted ("A " + 20 digits, with room): anything
// longer is not an acknowledgement.
inline constexpr size_t kMaxText = 64;
// Close code for an upstream offset gap (private-use range, RFC 6455 7.4.2).
inline constexpr uint16_t kCloseOffsetGap = 4009;

// Why a client message breaks the protocol: the close code and reason to fail with.
struct Failure {
  uint16_t code;
  std::string reason;
};

// Where the reader is in the client's current message.
class Reader {
 public:
  // A piece of a binary message's payload (unmasked): takes what is still
  // missing of the offset header from its front and returns how many bytes that
  // was. The data after them starts at upstream offset `offset()`; the caller
  // applies it and then calls advance() with its length.
  size_t take_header(std::span<const uint8_t> bytes);
  bool have_header() const { return have_ == kOffsetHeader; }
  size_t header_missing() const { return kOffsetHeader - have_; }
  uint64_t offset() const { return offset_; }
  void advance(size_t n) { offset_ += n; }
  // The binary message ended: a failure if it was shorter than its header.
  std::optional<Failure> end_binary();

  // A piece of a text message: a failure once it is longer than any acknowledgement.
  std::optional<Failure> add_text(std::span<const uint8_t> bytes);
  // The text message ended: the acknowledged offset, or why it is not one.
  struct Ack {
    uint64_t offset = 0;
    std::optional<Failure> failure;
  };
  Ack end_text();

 private:
  uint8_t header_[kOffsetHeader] = {};
  size_t have_ = 0;
  uint64_t offset_ = 0;  // upstream offset of the message's next payload byte
  std::string text_;
};

// The reasons, so both relays word them alike.
std::string gap_reason(uint64_t expected);
std::string ack_past_reason(uint64_t ack, uint64_t sent);

// Writes `offset` as the 8-byte big-endian header.
void put_offset(uint8_t out[kOffsetHeader], uint64_t offset);
// The server's acknowledgement text: "A <offset>".
std::string ack_text(uint64_t offset);
// Decimal u64 with no sign, no spaces, no overflow.
std::optional<uint64_t> parse_u64(std::string_view s);

}  // namespace netwine::ws::v1
