// Session keys: 144 random bits from OpenSSL's CSPRNG, base64url without padding
// (24 characters), so they fit in a URL path segment unescaped.
#pragma once

#include <string>
#include <string_view>

namespace netwine::tunnel {

constexpr size_t kKeyBytes = 18;   // 144 bits: > the 128 the spec asks for, no padding
constexpr size_t kKeyLength = 24;  // base64url characters

// A fresh key. Aborts the process if the CSPRNG fails (nothing safe to do then).
std::string make_key();
// True if `s` has a key's shape (length and alphabet); says nothing of its existence.
bool looks_like_key(std::string_view s);

}  // namespace netwine::tunnel
