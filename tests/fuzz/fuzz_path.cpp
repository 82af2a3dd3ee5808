// Request paths: whatever the input, a normalised path is absolute, has no "."
// or ".." segments, no NUL, no backslash, and never maps outside the root.
#include <string>

#include "http/path.hpp"
#include "http/static_files.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view raw(reinterpret_cast<const char*>(data), size);
  auto r = netwine::http::normalise_request_path(raw);
  if (auto* p = std::get_if<std::string>(&r)) {
    if (p->empty() || (*p)[0] != '/') __builtin_trap();
    if (p->find('\0') != std::string::npos || p->find('\\') != std::string::npos) __builtin_trap();
    if (p->find("/../") != std::string::npos || p->find("/./") != std::string::npos) __builtin_trap();
    if (p->size() >= 3 && p->compare(p->size() - 3, 3, "/..") == 0) __builtin_trap();
    auto mapped = netwine::http::map_to_file("/nonexistent-fuzz-root", *p);
    if (auto* file = std::get_if<std::string>(&mapped))
      if (file->rfind("/nonexistent-fuzz-root/", 0) != 0) __builtin_trap();
  }
  return 0;
}
