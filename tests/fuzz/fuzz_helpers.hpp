// Shared by the fuzz targets: the first bytes of the input choose where the rest
// is cut into chunks (STYLE habit 3: the fuzzer explores chunk boundaries too).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace netwine::fuzz {

// Splits data[2..] into chunks whose sizes cycle through a small table seeded by
// data[0..1]; returns the chunk sizes. Deterministic for a given input.
inline std::vector<size_t> chunk_sizes(const uint8_t* data, size_t size, size_t& skip) {
  std::vector<size_t> out;
  skip = size >= 2 ? 2 : size;
  if (size < 2) return out;
  uint32_t state = (uint32_t(data[0]) << 8) | data[1];
  size_t left = size - skip;
  while (left > 0) {
    state = state * 1103515245u + 12345u;
    size_t n = 1 + (state >> 16) % 97;
    if ((state & 7) == 0) n = left;  // sometimes the rest at once
    if (n > left) n = left;
    out.push_back(n);
    left -= n;
  }
  return out;
}

}  // namespace netwine::fuzz
