// The RFC 6455 decoder, in both roles, fed the input cut into chunks chosen by
// the input: the outcome must not depend on where the chunks fall.
#include <string>
#include <vector>

#include "fuzz_helpers.hpp"
#include "ws/frame.hpp"

namespace {

// Records whole messages, so the log does not depend on how pieces were cut.
struct Recorder : netwine::ws::Handler {
  std::string log, message;
  void on_data(netwine::ws::Opcode, std::span<const uint8_t> b) override {
    message.append(reinterpret_cast<const char*>(b.data()), b.size());
  }
  void on_message_end(netwine::ws::Opcode op) override {
    log += 'm';
    log += char(op);
    log += message;
    message.clear();
  }
  void on_ping(std::span<const uint8_t> b) override { log += 'p'; log.append(reinterpret_cast<const char*>(b.data()), b.size()); }
  void on_pong(std::span<const uint8_t> b) override { log += 'o'; log.append(reinterpret_cast<const char*>(b.data()), b.size()); }
  void on_close(std::optional<uint16_t> code, std::string_view reason) override {
    log += 'c';
    log += std::to_string(code.value_or(0));
    log.append(reason);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace netwine::ws;
  size_t skip = 0;
  auto sizes = netwine::fuzz::chunk_sizes(data, size, skip);
  for (Role role : {Role::Server, Role::Client}) {
    std::vector<uint8_t> whole(data + skip, data + size);
    Decoder d1(role, 1 << 16);
    Recorder r1;
    auto e1 = d1.feed(whole, r1);

    std::vector<uint8_t> copy(data + skip, data + size);
    Decoder d2(role, 1 << 16);
    Recorder r2;
    std::optional<ProtocolError> e2;
    size_t at = 0;
    for (size_t n : sizes) {
      e2 = d2.feed(std::span<uint8_t>(copy.data() + at, n), r2);
      at += n;
      if (e2) break;
    }
    if (bool(e1) != bool(e2)) __builtin_trap();
    if (e1 && e1->code != e2->code) __builtin_trap();
    if (!e1 && (r1.log != r2.log || r1.message != r2.message)) __builtin_trap();
  }
  return 0;
}
