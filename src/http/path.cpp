#include "http/path.hpp"

#include <optional>
#include <vector>

namespace netwine::http {

namespace {

std::optional<unsigned> hex_value(char c) {
  if (c >= '0' && c <= '9') return static_cast<unsigned>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<unsigned>(c - 'a' + 10);
  if (c >= 'A' && c <= 'F') return static_cast<unsigned>(c - 'A' + 10);
  return std::nullopt;
}

bool is_control(unsigned char c) { return (c >= 0x01 && c <= 0x1F) || c == 0x7F; }

// Well-formed UTF-8 per the Unicode Standard, table 3-7: no overlong forms
// (C0, C1, E0 80-9F, F0 80-8F), no surrogates (ED A0-BF), nothing above U+10FFFF.
bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  auto in = [](unsigned char b, unsigned char lo, unsigned char hi) {
    return b >= lo && b <= hi;
  };
  while (i < n) {
    const unsigned char b0 = byte(i);
    if (b0 < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (in(b0, 0xC2, 0xDF)) {
      len = 2;
    } else if (b0 == 0xE0) {
      len = 3, lo = 0xA0;
    } else if (in(b0, 0xE1, 0xEC) || in(b0, 0xEE, 0xEF)) {
      len = 3;
    } else if (b0 == 0xED) {
      len = 3, hi = 0x9F;
    } else if (b0 == 0xF0) {
      len = 4, lo = 0x90;
    } else if (in(b0, 0xF1, 0xF3)) {
      len = 4;
    } else if (b0 == 0xF4) {
      len = 4, hi = 0x8F;
    } else {
      return false;  // 80-C1 as a lead byte, F5-FF
    }
    if (n - i < len) return false;
    if (!in(byte(i + 1), lo, hi)) return false;
    for (size_t k = 2; k < len; ++k) {
      if (!in(byte(i + k), 0x80, 0xBF)) return false;
    }
    i += len;
  }
  return true;
}

// Decodes %XX escapes, refusing anything that must not survive decoding.
std::variant<std::string, PathError> percent_decode(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(raw[i]);
    if (c == '%') {
      if (raw.size() - i < 3) return PathError::BadEncoding;
      const auto hi = hex_value(raw[i + 1]);
      const auto lo = hex_value(raw[i + 2]);
      if (!hi || !lo) return PathError::BadEncoding;
      c = static_cast<unsigned char>(*hi * 16 + *lo);
      i += 2;
      if (c == '/' || c == '\\') return PathError::EncodedSlash;
    } else if (c == '\\') {
      return PathError::EscapesRoot;
    }
    if (c == 0) return PathError::NulByte;
    if (is_control(c)) return PathError::BadEncoding;
    out.push_back(static_cast<char>(c));
  }
  return out;
}

bool only_dots(std::string_view seg) {
  return !seg.empty() && seg.find_first_not_of('.') == std::string_view::npos;
}

}  // namespace

const char* to_string(PathError e) {
  switch (e) {
    case PathError::BadEncoding: return "bad percent-encoding or control character";
    case PathError::NulByte: return "NUL byte";
    case PathError::EncodedSlash: return "encoded slash or backslash";
    case PathError::EscapesRoot: return "path escapes the root";
    case PathError::NotAbsolute: return "path is not absolute";
    case PathError::BadUtf8: return "invalid UTF-8";
  }
  return "unknown path error";
}

int status_for(PathError e) { return e == PathError::EscapesRoot ? 403 : 400; }

std::variant<std::string, PathError> normalise_request_path(std::string_view raw_path) {
  if (raw_path.empty() || raw_path.front() != '/') return PathError::NotAbsolute;

  auto decoded_or_error = percent_decode(raw_path);
  if (auto* err = std::get_if<PathError>(&decoded_or_error)) return *err;
  const std::string& decoded = std::get<std::string>(decoded_or_error);
  if (!is_valid_utf8(decoded)) return PathError::BadUtf8;

  // No encoded slash survives percent_decode, so splitting the decoded string on
  // '/' yields exactly the segments of the URL.
  std::vector<std::string_view> segments;
  bool trailing_slash = false;
  size_t pos = 1;  // skip the leading '/'
  while (pos <= decoded.size()) {
    size_t end = decoded.find('/', pos);
    if (end == std::string::npos) end = decoded.size();
    const std::string_view seg(decoded.data() + pos, end - pos);
    const bool last = end == decoded.size();
    if (seg.empty() || seg == ".") {
      trailing_slash = last;
    } else if (seg == "..") {
      if (segments.empty()) return PathError::EscapesRoot;
      segments.pop_back();
      trailing_slash = last;
    } else if (only_dots(seg)) {
      return PathError::EscapesRoot;
    } else {
      segments.push_back(seg);
      trailing_slash = false;
    }
    pos = end + 1;
  }

  std::string out;
  out.reserve(decoded.size());
  for (const auto seg : segments) {
    out.push_back('/');
    out.append(seg);
  }
  if (trailing_slash || segments.empty()) out.push_back('/');
  return out;
}

std::string percent_encode_path(std::string_view path) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  static constexpr std::string_view kKeep =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
      "-._~"          // unreserved
      "!$&'()*+,;="   // sub-delims
      ":@/";
  std::string out;
  out.reserve(path.size());
  for (const char ch : path) {
    if (kKeep.find(ch) != std::string_view::npos) {
      out.push_back(ch);
    } else {
      const auto c = static_cast<unsigned char>(ch);
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0x0F]);
    }
  }
  return out;
}

}  // namespace netwine::http
