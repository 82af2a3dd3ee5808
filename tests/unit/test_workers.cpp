// Mailbox and SessionCounts: the two things threads share (workers.hpp,
// tunnel/counts.hpp), and WorkerPool's gathering of the workers' stats for
// status and metrics, exercised from real threads against a real event loop.
#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include <event2/thread.h>

#include "front.hpp"
#include "http/static_files.hpp"
#include "tunnel/counts.hpp"
#include "workers.hpp"

using netwine::EventBasePtr;
using netwine::Mailbox;
using netwine::WorkerPool;
using netwine::tunnel::SessionCounts;
using netwine::tunnel::Stats;

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
}

namespace {

// A worker held inside a posted function until release() (a worker busy with
// something long, as far as the main loop can tell).
struct Hold {
  std::mutex mu;
  std::condition_variable cv;
  bool held = false, released = false;

  void occupy(WorkerPool& pool, int worker) {
    REQUIRE(pool.run_on(worker, [this](netwine::tunnel::Manager&) {
      std::unique_lock lock(mu);
      held = true;
      cv.notify_all();
      cv.wait(lock, [this] { return released; });
    }));
    std::unique_lock lock(mu);
    cv.wait(lock, [this] { return held; });  // the worker is inside it now
  }
  void release() {
    std::lock_guard lock(mu);
    released = true;
    cv.notify_all();
  }
  bool is_released() {
    std::lock_guard lock(mu);
    return released;
  }
};

}  // namespace

TEST_CASE("WorkerPool::gather answers on the main loop without holding it up, and gives up on a silent worker") {
  REQUIRE(evthread_use_pthreads() == 0);
  EventBasePtr base(event_base_new());
  REQUIRE(base);
  Mailbox mailbox(base.get());
  netwine::Config config;
  constexpr double kBound = 0.3;
  WorkerPool pool(config, std::make_shared<SessionCounts>(), base.get(), &mailbox, kBound);
  std::string error;
  netwine::FrontGroup fronts;  // the workers' fronts join it; nothing connects in this test
  netwine::http::StaticSite site("/nonexistent", {});
  REQUIRE(pool.start(2, fronts, -1, netwine::tunnel::Rules{}, site, nullptr, error));
  CHECK(fronts.loops.size() == 2);
  const auto main_thread = std::this_thread::get_id();
  timeval bound{30, 0};  // every wait below ends by itself; this only stops a broken build hanging

  SUBCASE("a busy worker delays the answer, not the loop") {
    Hold hold;
    hold.occupy(pool, 0);
    bool done = false, loop_ran_while_waiting = false, on_main = false;
    size_t entries = 0, answered = 0;
    pool.gather(false, [&](std::vector<Stats> st) {
      done = true;
      entries = st.size();
      for (const Stats& s : st) answered += s.answered;
      on_main = std::this_thread::get_id() == main_thread;
      event_base_loopbreak(base.get());
    });
    CHECK_FALSE(done);  // gather() returned without waiting for the held worker
    // Something else for the main loop while the gather waits: it runs, and only
    // then lets the worker go.
    struct Ctx {
      bool* done;
      bool* ran;
      Hold* hold;
    } ctx{&done, &loop_ran_while_waiting, &hold};
    timeval zero{0, 0};
    REQUIRE(event_base_once(base.get(), -1, EV_TIMEOUT, [](evutil_socket_t, short, void* arg) {
      auto* c = static_cast<Ctx*>(arg);
      *c->ran = !*c->done;
      c->hold->release();
    }, &ctx, &zero) == 0);
    event_base_loopexit(base.get(), &bound);
    event_base_loop(base.get(), EVLOOP_NO_EXIT_ON_EMPTY);
    CHECK(loop_ran_while_waiting);
    CHECK(done);
    CHECK(entries == 2);
    CHECK(answered == 2);  // the held worker's answer was waited for
    CHECK(on_main);
  }

  SUBCASE("a worker silent past the bound is left out; its late answer is dropped") {
    Hold hold;
    hold.occupy(pool, 1);
    bool done = false, worker_still_held = false;
    pool.gather(true, [&](std::vector<Stats> st) {
      done = true;
      worker_still_held = !hold.is_released();
      REQUIRE(st.size() == 2);
      CHECK(st[0].answered);
      CHECK_FALSE(st[1].answered);
      hold.release();  // its answer now comes after the gathering ended
      event_base_loopbreak(base.get());
    });
    event_base_loopexit(base.get(), &bound);
    event_base_loop(base.get(), EVLOOP_NO_EXIT_ON_EMPTY);
    CHECK(done);
    CHECK(worker_still_held);  // answered by the bound, not by the worker
    // The late answer arrives and is dropped; a new gathering gets both workers.
    int calls = 0;
    pool.gather(false, [&](std::vector<Stats> st) {
      ++calls;
      REQUIRE(st.size() == 2);
      CHECK(st[0].answered);
      CHECK(st[1].answered);
      event_base_loopbreak(base.get());
    });
    event_base_loopexit(base.get(), &bound);
    event_base_loop(base.get(), EVLOOP_NO_EXIT_ON_EMPTY);
    CHECK(calls == 1);
  }

  pool.stop();
  mailbox.close();
}
