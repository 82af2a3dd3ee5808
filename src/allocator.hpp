// Which malloc the process runs on (meson option `allocator`): shown by --version
// and /netwine/status, so an operator can tell a build with tcmalloc from one that
// fell back to the system malloc.
#pragma once

#include <string>

namespace netwine {

// "tcmalloc 2.10", "system malloc", or "malloc from elsewhere (tcmalloc 2.10 linked
// but not in use)" when the dynamic linker bound malloc to another library.
std::string allocator_name();

}  // namespace netwine
