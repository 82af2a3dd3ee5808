/* bench/experiments/no-fionread.c — tried 2026-12-05, not kept: what libevent's
 * ioctl(FIONREAD) costs netwine's small-message latency.
 *
 * A socket bufferevent's read (evbuffer_read) asks the kernel how many bytes are
 * waiting before every readv(): 2 of netwine's 8 system calls per 32-byte WebSocket
 * round trip (strace -f -c; socat makes 6). This shim answers FIONREAD with an error
 * without a system call, which evbuffer_read takes as "read up to 4096", so netwine
 * runs unchanged minus those calls:
 *
 *   gcc -O2 -shared -fPIC -o /tmp/no-fionread.so bench/experiments/no-fionread.c -ldl
 *   LD_PRELOAD=/tmp/no-fionread.so build-bench/netwine --listen 127.0.0.1:19924 ...
 *
 * Ten interleaved 1-second `nwbench ws-lat` runs each, client, bridge and echo
 * target all on CPU0 (taskset -c 0), netwine / netwine with the shim / socat:
 * p50 49.6 / 50.6 / 43.8 us, p99 89.3 / 88.8 / 82.4 us. No gain: the system call
 * is cheap next to the wake-ups; the gap to socat lies elsewhere (docs/PERFORMANCE.md).
 * Loopback only; nothing of netwine's is changed by it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/ioctl.h>

int ioctl(int fd, unsigned long request, ...) {
  va_list ap;
  va_start(ap, request);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  if (request == FIONREAD) {
    errno = ENOTTY;
    return -1;
  }
  static int (*real)(int, unsigned long, void*);
  if (!real) real = (int (*)(int, unsigned long, void*))dlsym(RTLD_NEXT, "ioctl");
  return real(fd, request, arg);
}
