// Session keys: 24 base64url characters, so they fit in a URL path segment
// unescaped. The first names the event loop the session lives on (front.hpp);
// the other 23 are 138 random bits from OpenSSL's CSPRNG (the spec asks for 128).
#pragma once

#include <string>
#include <string_view>

namespace netwine::tunnel {

constexpr size_t kKeyBytes = 18;   // 144 bits: > the 128 the spec asks for, no padding
constexpr size_t kKeyLength = 24;  // base64url characters

constexpr size_t kMaxLoops = 64;  // event loops a key can name (--threads is at most 64)

// A fresh key for a session on event loop `loop`. Aborts the process if the
// CSPRNG fails (nothing safe to do then).
std::string make_key(size_t loop = 0);
// The event loop a key names (any character names one: check looks_like_key()
// and the number of loops first).
size_t key_loop(std::string_view key);
// True if `s` has a key's shape (length and alphabet); says nothing of its existence.
bool looks_like_key(std::string_view s);

}  // namespace netwine::tunnel
