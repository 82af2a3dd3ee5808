// ASCII case folding for HTTP tokens (header names, methods, file extensions,
// query parameter names): locale-free, as RFC 9110 treats them.
#pragma once

#include <cstddef>
#include <string_view>

namespace netwine::http {

inline char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// True when a and b are equal but for the case of ASCII letters.
inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

}  // namespace netwine::http
