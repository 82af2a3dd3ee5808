// The JSON config parser: any text is a config or an exit-2 error with a message.
#include <string>

#include "config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto out = netwine::parse_json_config(text, "fuzz.json", "/r");
  if (!out.config && (out.exit_code != 2 || out.message.rfind("fuzz.json", 0) != 0)) __builtin_trap();
  netwine::parse_size(text);
  netwine::parse_duration(text);
  return 0;
}
