#include "allocator.hpp"

#include <cstdlib>

#ifdef NETWINE_TCMALLOC
#include <gperftools/tcmalloc.h>
#endif

namespace netwine {

std::string allocator_name() {
#ifdef NETWINE_TCMALLOC
  // Also what keeps the library linked under --as-needed: nothing else in netwine
  // names a tcmalloc symbol, it only replaces malloc and free.
  int major = 0, minor = 0;
  const char* patch = nullptr;
  tc_version(&major, &minor, &patch);
  std::string name = "tcmalloc " + std::to_string(major) + "." + std::to_string(minor) + (patch ? patch : "");
  // tcmalloc's malloc is an alias of tc_malloc: if the dynamic linker bound malloc
  // elsewhere (another library loaded first, LD_PRELOAD), say so.
  if (reinterpret_cast<void*>(&std::malloc) != reinterpret_cast<void*>(&tc_malloc))
    return "malloc from elsewhere (" + name + " linked but not in use)";
  return name;
#else
  return "system malloc";
#endif
}

}  // namespace netwine
