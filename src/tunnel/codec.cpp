#include "tunnel/codec.hpp"

#include <charconv>

namespace netwine::tunnel {
namespace {

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

bool parse_u64(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

std::optional<Framing> parse_framing(std::string_view name) {
  if (name == "text" || name.empty()) return Framing::Text;
  if (name == "binary") return Framing::Binary;
  return std::nullopt;
}

size_t base64_encoded_size(size_t n) { return (n + 2) / 3 * 4; }

void base64_encode(const uint8_t* in, size_t n, char* out) {
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t(in[i]) << 16) | (uint32_t(in[i + 1]) << 8) | in[i + 2];
    *out++ = kB64[v >> 18];
    *out++ = kB64[(v >> 12) & 63];
    *out++ = kB64[(v >> 6) & 63];
    *out++ = kB64[v & 63];
  }
  if (size_t rest = n - i) {
    uint32_t v = uint32_t(in[i]) << 16;
    if (rest == 2) v |= uint32_t(in[i + 1]) << 8;
    *out++ = kB64[v >> 18];
    *out++ = kB64[(v >> 12) & 63];
    *out++ = rest == 2 ? kB64[(v >> 6) & 63] : '=';
    *out++ = '=';
  }
}

std::string base64_encode(std::span<const uint8_t> in) {
  std::string out(base64_encoded_size(in.size()), '\0');
  base64_encode(in.data(), in.size(), out.data());
  return out;
}

std::optional<std::vector<uint8_t>> base64_decode(std::string_view in) {
  if (in.size() % 4) return std::nullopt;
  std::vector<uint8_t> out;
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      unsigned char c = static_cast<unsigned char>(in[i + k]);
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        v[k] = 0;
        ++pad;
      } else {
        if (pad) return std::nullopt;  // data after padding
        v[k] = b64_value(c);
        if (v[k] < 0) return std::nullopt;
      }
    }
    uint32_t w = (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) | uint32_t(v[3]);
    // Canonical encodings only (RFC 4648 3.5): bits under the padding must be
    // zero, so every byte string has exactly one accepted spelling.
    if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff))) return std::nullopt;
    out.push_back(static_cast<uint8_t>(w >> 16));
    if (pad < 2) out.push_back(static_cast<uint8_t>(w >> 8));
    if (pad < 1) out.push_back(static_cast<uint8_t>(w));
  }
  return out;
}

std::string ok_line(std::string_view key) { return "OK " + std::string(key) + "\n"; }
std::string heartbeat_line() { return "H\n"; }
std::string recycle_line() { return "R\n"; }

std::string close_line(int code, std::string_view reason) {
  std::string r;
  for (char c : reason.substr(0, 123)) r += (c == '\n' || c == '\r') ? ' ' : c;
  return "C " + std::to_string(code) + " " + r + "\n";
}

std::string padding_line(size_t bytes) {
  if (bytes < 3) bytes = 3;
  return "P " + std::string(bytes - 3, ' ') + "\n";
}

std::string data_header(Framing framing, uint64_t offset, size_t length) {
  if (framing == Framing::Text) return "D " + std::to_string(offset) + " ";
  return "D " + std::to_string(offset) + " " + std::to_string(length) + "\n";
}

bool FrameReader::fail(std::string why) {
  failed_ = true;
  error_ = std::move(why);
  return false;
}

bool FrameReader::feed(std::string_view bytes) {
  if (failed_) return false;
  if (pos_ > 0 && pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > (1u << 20)) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  buf_.append(bytes);
  return true;
}

std::optional<Frame> FrameReader::next() {
  if (failed_) return std::nullopt;
  size_t nl = buf_.find('\n', pos_);
  if (nl == std::string::npos) {
    if (framing_ == Framing::Binary && buf_.size() - pos_ > kMaxControlLine)
      fail("frame line too long");
    return std::nullopt;
  }
  std::string_view line(buf_.data() + pos_, nl - pos_);
  if (line.empty()) {
    fail("empty frame line");
    return std::nullopt;
  }
  char type = line[0];
  Frame f{};
  size_t consumed = nl + 1 - pos_;
  std::string_view rest = line.size() > 2 ? line.substr(2) : std::string_view();
  if (type != 'O' && line.size() > 1 && line[1] != ' ') {
    fail("malformed frame line");
    return std::nullopt;
  }
  switch (type) {
    case 'O':
      if (line.substr(0, 3) != "OK " || line.size() < 4) { fail("malformed OK line"); return std::nullopt; }
      f.type = Frame::Type::Ok;
      f.key = std::string(line.substr(3));
      break;
    case 'H': f.type = Frame::Type::Heartbeat; break;
    case 'R': f.type = Frame::Type::Recycle; break;
    case 'P': f.type = Frame::Type::Padding; break;
    case 'C': {
      f.type = Frame::Type::Close;
      auto sp = rest.find(' ');
      uint64_t code = 0;
      if (!parse_u64(rest.substr(0, sp), code) || code > 65535) { fail("malformed close line"); return std::nullopt; }
      f.code = static_cast<int>(code);
      if (sp != std::string_view::npos) f.reason = std::string(rest.substr(sp + 1));
      break;
    }
    case 'D': {
      f.type = Frame::Type::Data;
      auto sp = rest.find(' ');
      if (sp == std::string_view::npos || !parse_u64(rest.substr(0, sp), f.offset)) {
        fail("malformed data line");
        return std::nullopt;
      }
      std::string_view arg = rest.substr(sp + 1);
      if (framing_ == Framing::Text) {
        auto bytes = base64_decode(arg);
        if (!bytes) { fail("bad base64 in data frame"); return std::nullopt; }
        f.payload = std::move(*bytes);
      } else {
        uint64_t len = 0;
        if (!parse_u64(arg, len)) { fail("malformed data length"); return std::nullopt; }
        if (buf_.size() - (nl + 1) < len) return std::nullopt;  // payload not complete yet
        f.payload.assign(buf_.begin() + static_cast<ptrdiff_t>(nl + 1),
                         buf_.begin() + static_cast<ptrdiff_t>(nl + 1 + len));
        consumed += len;
      }
      break;
    }
    default:
      fail(std::string("unknown frame type '") + type + "'");
      return std::nullopt;
  }
  pos_ += consumed;
  return f;
}

}  // namespace netwine::tunnel
