// argv -> Config -> Server -> run loop.
#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <event2/thread.h>

#include "config.hpp"
#include "log.hpp"
#include "server.hpp"

namespace {

// The directory holding www/ and js-client/ by default: the source tree the
// binary was built from (build/netwine -> ..), unless NETWINE_HOME says otherwise.
std::string repo_root() {
  if (const char* home = std::getenv("NETWINE_HOME")) return home;
  return NETWINE_SOURCE_DIR;
}

// Every session costs two descriptors: raise the soft limit to the hard one so the
// session limits, not the descriptor limit, decide. EMFILE is still handled (the
// listener pauses), so a low hard limit degrades instead of failing.
void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// With the system malloc (a build without tcmalloc, meson.build): a relay frees
// and allocates buffer chains all the time; glibc's defaults hand freed heap back
// to the kernel and take it again (brk churn, ~4% CPU in the bench). Keep up to
// 64 MiB of freed heap instead of trimming at 128 KiB. tcmalloc keeps freed memory
// in its own caches and ignores mallopt().
void tune_malloc() {
#ifndef NETWINE_TCMALLOC
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
#endif
}

}  // namespace

int main(int argc, char** argv) {
  auto outcome = netwine::parse_command_line(argc, argv, repo_root());
  if (!outcome.config) {
    if (outcome.exit_code == 0) {
      std::fputs(outcome.message.c_str(), stdout);
    } else {
      std::fprintf(stderr, "netwine: %s\n", outcome.message.c_str());
    }
    return outcome.exit_code;
  }
  const netwine::Config& cfg = *outcome.config;
  if (auto err = netwine::log::configure(cfg.log_level, cfg.access_log, cfg.log_format); !err.empty()) {
    std::fprintf(stderr, "netwine: %s\n", err.c_str());
    return 2;
  }
  raise_fd_limit();
  tune_malloc();
  // Worker threads (--threads) post to each other's event loops: libevent's
  // locks and cross-thread wake-ups must be on before any event_base exists.
  evthread_use_pthreads();
  netwine::Server server(cfg);
  return server.run();
}
