// The stream/poll frame reader (both framings), chunked as the input chooses:
// the frames read must not depend on where the chunks fall.
#include <string>
#include <vector>

#include "fuzz_helpers.hpp"
#include "tunnel/codec.hpp"

using namespace netwine::tunnel;

static std::string describe(FrameReader& r) {
  std::string out;
  while (auto f = r.next()) {
    out += char('0' + int(f->type));
    out += f->key + ":" + std::to_string(f->offset) + ":" + std::to_string(f->code) + f->reason;
    out.append(f->payload.begin(), f->payload.end());
  }
  return out;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t skip = 0;
  auto sizes = netwine::fuzz::chunk_sizes(data, size, skip);
  std::string body(reinterpret_cast<const char*>(data + skip), size - skip);
  for (Framing f : {Framing::Text, Framing::Binary}) {
    FrameReader whole(f);
    whole.feed(body);
    std::string a = describe(whole);
    FrameReader parts(f);
    std::string b;
    size_t at = 0;
    for (size_t n : sizes) {
      parts.feed(std::string_view(body).substr(at, n));
      b += describe(parts);
      at += n;
    }
    if (!whole.failed() && !parts.failed() && a != b) __builtin_trap();
  }
  // base64 must round-trip whatever it accepts.
  if (auto bytes = base64_decode(body)) {
    if (base64_encode(*bytes) != body) __builtin_trap();
  }
  return 0;
}
