#include "tunnel/key.hpp"

#include <cstdio>
#include <cstdlib>

#include <openssl/rand.h>

namespace netwine::tunnel {

namespace {
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
}  // namespace

std::string make_key(size_t loop) {
  unsigned char raw[kKeyBytes];
  if (RAND_bytes(raw, sizeof raw) != 1) {
    std::fputs("netwine: OpenSSL RAND_bytes failed; refusing to make guessable keys\n", stderr);
    std::abort();
  }
  std::string key;
  key.reserve(kKeyLength);
  for (size_t i = 0; i < kKeyBytes; i += 3) {
    unsigned v = (unsigned(raw[i]) << 16) | (unsigned(raw[i + 1]) << 8) | raw[i + 2];
    key += kAlphabet[v >> 18];
    key += kAlphabet[(v >> 12) & 63];
    key += kAlphabet[(v >> 6) & 63];
    key += kAlphabet[v & 63];
  }
  key[0] = kAlphabet[loop % kMaxLoops];  // 138 random bits remain
  return key;
}

size_t key_loop(std::string_view key) {
  if (key.empty()) return 0;
  char c = key[0];
  if (c >= 'A' && c <= 'Z') return static_cast<size_t>(c - 'A');
  if (c >= 'a' && c <= 'z') return static_cast<size_t>(c - 'a') + 26;
  if (c >= '0' && c <= '9') return static_cast<size_t>(c - '0') + 52;
  return c == '-' ? 62 : 63;
}

bool looks_like_key(std::string_view s) {
  if (s.size() != kKeyLength) return false;
  for (char c : s) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

}  // namespace netwine::tunnel
