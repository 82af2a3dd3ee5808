// Mailbox and SessionCounts: the two things threads share (workers.hpp,
// tunnel/counts.hpp), exercised from real threads against a real event loop.
#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

#include <event2/thread.h>

#include "tunnel/counts.hpp"
#include "workers.hpp"

using netwine::EventBasePtr;
using netwine::Mailbox;
using netwine::tunnel::SessionCounts;

TEST_CASE("Mailbox runs posts from other threads on the loop's thread, each sender's in order") {
  REQUIRE(evthread_use_pthreads() == 0);
  EventBasePtr base(event_base_new());
  REQUIRE(base);
  Mailbox mailbox(base.get());
  constexpr int kSenders = 4, kEach = 2000;
  std::vector<std::vector<int>> seen(kSenders);
  std::atomic<int> off_thread{0}, refused{0};
  int total = 0;
  const auto loop_thread = std::this_thread::get_id();
  std::vector<std::thread> senders;
  for (int s = 0; s < kSenders; ++s) {
    senders.emplace_back([&, s] {
      for (int i = 0; i < kEach; ++i) {
        bool ok = mailbox.post([&, s, i] {
          if (std::this_thread::get_id() != loop_thread) ++off_thread;
          seen[static_cast<size_t>(s)].push_back(i);
          if (++total == kSenders * kEach) event_base_loopbreak(base.get());
        });
        if (!ok) ++refused;
      }
    });
  }
  // Every post wakes the loop; the last one breaks it (or, if posts were lost,
  // the 30 s bound does, and the checks below fail).
  timeval bound{30, 0};
  event_base_loopexit(base.get(), &bound);
  event_base_loop(base.get(), EVLOOP_NO_EXIT_ON_EMPTY);
  for (auto& t : senders) t.join();
  CHECK(refused == 0);
  CHECK(total == kSenders * kEach);
  CHECK(off_thread == 0);
  for (const auto& v : seen) {
    REQUIRE(v.size() == static_cast<size_t>(kEach));
    for (int i = 0; i < kEach; ++i) CHECK_MESSAGE(v[static_cast<size_t>(i)] == i, "out of order at ", i);
  }
  mailbox.close();
  CHECK_FALSE(mailbox.post([] {}));
}

TEST_CASE("SessionCounts: limits in all and per client, shared by threads") {
  SessionCounts counts;
  CHECK(counts.admit("a", 3, 2) == SessionCounts::Admit::Ok);
  CHECK(counts.admit("a", 3, 2) == SessionCounts::Admit::Ok);
  CHECK(counts.admit("a", 3, 2) == SessionCounts::Admit::TooManyForClient);
  CHECK(counts.admit("b", 3, 2) == SessionCounts::Admit::Ok);
  CHECK(counts.admit("c", 3, 2) == SessionCounts::Admit::TooMany);
  CHECK(counts.total() == 3);
  counts.release("a");
  CHECK(counts.admit("c", 3, 2) == SessionCounts::Admit::Ok);
  counts.release("a");
  counts.release("b");
  counts.release("c");
  CHECK(counts.total() == 0);

  // From several threads at once: exactly the limit is admitted, and every
  // release gives a place back.
  SessionCounts shared;
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i)
        if (shared.admit("x", 1000, 700) == SessionCounts::Admit::Ok) ++admitted;
    });
  for (auto& t : threads) t.join();
  CHECK(admitted == 700);
  CHECK(shared.total() == 700);

  shared.add_remote("KEY");
  CHECK(shared.is_remote("KEY"));
  shared.remove_remote("KEY");
  CHECK_FALSE(shared.is_remote("KEY"));
}
