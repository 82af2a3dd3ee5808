// bench/experiments/mailbox_hop.cpp — what one hand-over between two event loops
// costs (netwine's Mailbox, src/workers.hpp), for the design of the HTTP
// transports on more than one loop (docs/PERFORMANCE.md, "Would a second event
// loop help the HTTP transports?"): a request that lands on the wrong loop would
// be posted to its session's loop and its answer posted back, two hops.
//
//   build-bench/bench/mailbox-hop [SECONDS [IN_FLIGHT]]     # defaults 2 and 1
//
// Two threads, each running its own event_base with a Mailbox. Loop A posts a
// function to B, which posts one back to A, which posts the next: IN_FLIGHT such
// chains at once (1: every hop wakes a sleeping loop, the worst case; more: a
// wake-up may find several posts, as under load). Prints the round trips (two
// hops each) per second and each thread's CPU per round trip (RUSAGE_THREAD), in
// microseconds. Not a test: a measurement, bounded by SECONDS.
#include <event2/event.h>
#include <event2/thread.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>

#include "event_handles.hpp"
#include "workers.hpp"

namespace {

using netwine::EventBasePtr;
using netwine::Mailbox;

double thread_cpu_s() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

struct Loop {
  EventBasePtr base{event_base_new()};
  std::unique_ptr<Mailbox> mailbox = std::make_unique<Mailbox>(base.get());
  double cpu_s = 0;  // the thread's CPU over its run, set when it ends
};

struct Bench {
  Loop a, b;
  std::atomic<bool> stop{false};
  uint64_t round_trips = 0;  // A's thread only

  // One chain's next round trip: A -> B -> A.
  void send() {
    b.mailbox->post([this] { a.mailbox->post([this] { arrived(); }); });
  }
  void arrived() {
    ++round_trips;
    if (stop.load(std::memory_order_relaxed)) {
      event_base_loopbreak(a.base.get());
      return;
    }
    send();
  }
};

void run_loop(Loop& l) {
  double c0 = thread_cpu_s();
  event_base_loop(l.base.get(), EVLOOP_NO_EXIT_ON_EMPTY);
  l.cpu_s = thread_cpu_s() - c0;
}

}  // namespace

int main(int argc, char** argv) {
  double secs = argc > 1 ? std::atof(argv[1]) : 2.0;
  int in_flight = argc > 2 ? std::atoi(argv[2]) : 1;
  if (secs <= 0 || secs > 60 || in_flight < 1 || in_flight > 100000) {
    std::fprintf(stderr, "usage: mailbox-hop [SECONDS (0-60]] [IN_FLIGHT (1-100000)]\n");
    return 2;
  }
  evthread_use_pthreads();
  Bench bench;
  std::thread tb([&] { run_loop(bench.b); });
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < in_flight; ++i) bench.send();
  std::thread ta([&] { run_loop(bench.a); });
  std::this_thread::sleep_for(std::chrono::duration<double>(secs));  // the measured interval itself
  bench.stop.store(true);
  ta.join();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  event_base_loopbreak(bench.b.base.get());
  tb.join();
  double n = static_cast<double>(bench.round_trips);
  std::printf("in_flight=%d secs=%.2f round_trips=%.0f per_s=%.0f a_cpu_us_per_rt=%.2f b_cpu_us_per_rt=%.2f\n",
              in_flight, wall, n, n / wall, bench.a.cpu_s * 1e6 / n, bench.b.cpu_s * 1e6 / n);
  bench.a.mailbox->close();
  bench.b.mailbox->close();
  return 0;
}
