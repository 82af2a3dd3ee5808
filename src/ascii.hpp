// ASCII case folding for protocol tokens and names (HTTP header names, methods,
// file extensions, query parameter names, WebSocket handshake tokens, URL schemes,
// host names, keywords of the hosts/ files): locale-free, as RFC 9110 and RFC 4343
// treat them. One copy for the whole server.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace netwine {

inline char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// `s` with its ASCII letters in lower case.
inline std::string ascii_lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

// True when a and b are equal but for the case of ASCII letters.
inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

}  // namespace netwine
