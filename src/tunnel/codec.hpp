// The wire codec of docs/PROTOCOL.md for the HTTP transports (streaming and
// long-polling bodies), without I/O: frame writers used by the server and an
// incremental frame reader used by clients and tests.
//
// Every frame starts with one ASCII line. Text framing (for XMLHttpRequest's
// responseText) carries data base64-encoded on that line; binary framing (for
// fetch() body readers) gives the length on the line and the raw bytes after it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace netwine::tunnel {

enum class Framing {
  Text,    // D <offset> <base64>\n
  Binary,  // D <offset> <length>\n<length raw bytes>
};

std::optional<Framing> parse_framing(std::string_view name);  // "text" | "binary"

// Longest line a reader must accept, other than text data lines:
// "C <code> <reason>" with a reason of at most 123 bytes, and padding lines.
constexpr size_t kMaxControlLine = 4096;

// Base64 (RFC 4648, with padding). encode returns the encoded length (4*ceil(n/3)).
size_t base64_encoded_size(size_t n);
void base64_encode(const uint8_t* in, size_t n, char* out);
std::string base64_encode(std::span<const uint8_t> in);
// Accepts padded base64 and ignores no characters: anything else is an error.
std::optional<std::vector<uint8_t>> base64_decode(std::string_view in);

// Frame text for the pieces that carry no payload.
std::string ok_line(std::string_view key);                    // "OK <key>\n"
std::string heartbeat_line();                                 // "H\n"
std::string recycle_line();                                   // "R\n": re-attach to continue
std::string close_line(int code, std::string_view reason);    // "C <code> <reason>\n"
std::string padding_line(size_t bytes);                       // "P xxxx...\n", `bytes` long in all
// The header line of a data frame; for Text framing the base64 payload and "\n" follow it.
std::string data_header(Framing framing, uint64_t offset, size_t length);

// One decoded frame.
struct Frame {
  enum class Type { Ok, Data, Heartbeat, Recycle, Close, Padding } type;
  std::string key;                // Ok
  uint64_t offset = 0;            // Data
  std::vector<uint8_t> payload;   // Data
  int code = 0;                   // Close
  std::string reason;             // Close
};

// Incremental reader of a stream or poll body: feed any chunks, take frames.
class FrameReader {
 public:
  explicit FrameReader(Framing framing) : framing_(framing) {}
  // Appends bytes; returns false (and stays failed) on a malformed frame.
  bool feed(std::string_view bytes);
  // The next complete frame, if any.
  std::optional<Frame> next();
  bool failed() const { return failed_; }
  const std::string& error() const { return error_; }
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  bool fail(std::string why);
  Framing framing_;
  std::string buf_;
  size_t pos_ = 0;
  bool failed_ = false;
  std::string error_;
};

}  // namespace netwine::tunnel
