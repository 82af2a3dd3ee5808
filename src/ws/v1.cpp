#include "ws/v1.hpp"

#include <algorithm>
#include <limits>

#include "ws/frame.hpp"

namespace netwine::ws::v1 {
namespace {

Failure unexpected_text() {
  return {static_cast<uint16_t>(CloseCode::UnsupportedData),
          "unexpected text message (netwine.v1 takes only \"A <offset>\")"};
}

}  // namespace

size_t Reader::take_header(std::span<const uint8_t> bytes) {
  size_t n = std::min(kOffsetHeader - have_, bytes.size());
  std::copy_n(bytes.data(), n, header_ + have_);
  have_ += n;
  if (n > 0 && have_ == kOffsetHeader) {
    offset_ = 0;
    for (uint8_t b : header_) offset_ = (offset_ << 8) | b;
  }
  return n;
}

std::optional<Failure> Reader::end_binary() {
  bool short_message = have_ < kOffsetHeader;
  have_ = 0;
  if (short_message)
    return Failure{static_cast<uint16_t>(CloseCode::ProtocolError), "data message shorter than its 8-byte offset"};
  return std::nullopt;
}

std::optional<Failure> Reader::add_text(std::span<const uint8_t> bytes) {
  if (text_.size() + bytes.size() > kMaxText) return unexpected_text();
  text_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  return std::nullopt;
}

Reader::Ack Reader::end_text() {
  std::string text = std::move(text_);
  text_.clear();
  if (text.size() < 2 || text[0] != 'A' || text[1] != ' ') return {0, unexpected_text()};
  auto offset = parse_u64(std::string_view(text).substr(2));
  if (!offset) return {0, Failure{static_cast<uint16_t>(CloseCode::ProtocolError), "malformed acknowledgement"}};
  return {*offset, std::nullopt};
}

std::string gap_reason(uint64_t expected) { return "upstream offset gap, expected " + std::to_string(expected); }

std::string ack_past_reason(uint64_t ack, uint64_t sent) {
  return "acknowledgement " + std::to_string(ack) + " is past the data sent (" + std::to_string(sent) + ")";
}

void put_offset(uint8_t out[kOffsetHeader], uint64_t offset) {
  for (size_t i = 0; i < kOffsetHeader; ++i) out[i] = static_cast<uint8_t>(offset >> (56 - 8 * i));
}

std::string ack_text(uint64_t offset) { return "A " + std::to_string(offset); }

std::optional<uint64_t> parse_u64(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  uint64_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (n > (std::numeric_limits<uint64_t>::max() - d) / 10) return std::nullopt;
    n = n * 10 + d;
  }
  return n;
}

}  // namespace netwine::ws::v1
