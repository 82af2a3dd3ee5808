#include "workers.hpp"

#include <chrono>
#include <condition_variable>

#include "log.hpp"
#include "tls.hpp"
#include "ws/ws_connection.hpp"

namespace netwine {

// ------------------------------------------------------------------ Mailbox

Mailbox::Mailbox(event_base* base) { wake_.reset(event_new(base, -1, 0, &Mailbox::on_wake, this)); }

Mailbox::~Mailbox() { close(); }

bool Mailbox::post(std::function<void()> fn) {
  std::lock_guard lock(mu_);
  if (closed_ || !wake_) return false;
  queue_.push_back(std::move(fn));
  // Thread-safe with evthread on: wakes the loop if it is waiting.
  event_active(wake_.get(), EV_READ, 0);
  return true;
}

void Mailbox::close() {
  std::deque<std::function<void()>> dropped;
  EventPtr wake;
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    dropped.swap(queue_);
    wake = std::move(wake_);
  }
  // Freed outside the lock: a dropped function may own things that post.
}

void Mailbox::on_wake(evutil_socket_t, short, void* self) { static_cast<Mailbox*>(self)->run(); }

void Mailbox::run() {
  std::deque<std::function<void()>> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(queue_);
  }
  for (auto& fn : batch) fn();
}

// --------------------------------------------------------------- WorkerPool

struct WorkerPool::Worker {
  int index = 0;
  EventBasePtr base;
  DnsBasePtr dns;
  std::unique_ptr<Mailbox> mailbox;
  std::unique_ptr<tunnel::Manager> manager;
  std::thread thread;
};

WorkerPool::WorkerPool(const Config& config, std::shared_ptr<tunnel::SessionCounts> counts)
    : config_(config), counts_(std::move(counts)) {}

WorkerPool::~WorkerPool() { stop(); }

bool WorkerPool::start(int n, std::string& error) {
  for (int i = 0; i < n; ++i) {
    auto w = std::make_unique<Worker>();
    w->index = i + 1;
    // The same changelist as the main loop (server.cpp).
    event_config* cfg = event_config_new();
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    w->base.reset(event_base_new_with_config(cfg));
    event_config_free(cfg);
    if (!w->base) {
      error = "cannot create an event base for worker thread " + std::to_string(w->index);
      return false;
    }
    w->dns.reset(evdns_base_new(w->base.get(), EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE));
    if (!w->dns) w->dns.reset(evdns_base_new(w->base.get(), 0));  // no resolv.conf (server.cpp)
    w->mailbox = std::make_unique<Mailbox>(w->base.get());
    w->manager = tunnel::Manager::create_worker(config_, w->base.get(), w->dns.get(), counts_, w->index);
    Worker* raw = w.get();
    workers_.push_back(std::move(w));
    raw->thread = std::thread(&WorkerPool::run, raw);
  }
  return true;
}

void WorkerPool::run(Worker* w) {
  event_base_loop(w->base.get(), EVLOOP_NO_EXIT_ON_EMPTY);
  // Stopped: close what is left, on this thread, in order: the WebSockets
  // (their sessions end), the sessions and the rest, then the loop itself.
  w->mailbox->close();
  ws::close_all_connections();
  tls::orphan_adopted();  // TLS filters libevent finalizes with the loop (tls.hpp)
  w->manager.reset();
  w->dns.reset();
  w->base.reset();
}

int WorkerPool::next_turn() {
  size_t loops = workers_.size() + 1;
  size_t t = turn_++ % loops;
  return t == 0 ? -1 : static_cast<int>(t - 1);
}

bool WorkerPool::run_on(int worker, std::function<void(tunnel::Manager&)> fn) {
  if (worker < 0 || static_cast<size_t>(worker) >= workers_.size()) return false;
  Worker* w = workers_[static_cast<size_t>(worker)].get();
  return w->mailbox->post([w, fn = std::move(fn)] { fn(*w->manager); });
}

std::vector<tunnel::Stats> WorkerPool::gather(bool with_sessions) {
  // Each worker fills its slot on its own thread; we wait for all, at most a
  // second (a stopped worker never answers). Shared state outlives a late answer.
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<tunnel::Stats> stats;
    size_t pending = 0;
  };
  auto shared = std::make_shared<Shared>();
  shared->stats.resize(workers_.size());
  shared->pending = workers_.size();
  for (size_t i = 0; i < workers_.size(); ++i) {
    bool posted = run_on(static_cast<int>(i), [shared, i, with_sessions](tunnel::Manager& m) {
      tunnel::Stats st = m.stats(with_sessions);
      std::lock_guard lock(shared->mu);
      shared->stats[i] = std::move(st);
      --shared->pending;
      shared->cv.notify_all();
    });
    if (!posted) {
      std::lock_guard lock(shared->mu);
      --shared->pending;
    }
  }
  std::unique_lock lock(shared->mu);
  if (!shared->cv.wait_for(lock, std::chrono::seconds(1), [&] { return shared->pending == 0; }))
    log::warn("status: a worker thread did not answer within 1 s; its sessions are missing");
  return shared->stats;
}

void WorkerPool::each(const std::function<void(tunnel::Manager&)>& fn) {
  for (size_t i = 0; i < workers_.size(); ++i) run_on(static_cast<int>(i), fn);
}

void WorkerPool::stop() {
  for (auto& w : workers_) {
    if (!w->thread.joinable()) continue;
    event_base_loopexit(w->base.get(), nullptr);
  }
  for (auto& w : workers_)
    if (w->thread.joinable()) w->thread.join();
}

}  // namespace netwine
