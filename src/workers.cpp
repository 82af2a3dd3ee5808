#include "workers.hpp"

#include "front.hpp"
#include "http/http_util.hpp"
#include "log.hpp"
#include "routes.hpp"
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
  std::unique_ptr<tls::Acceptor> tls;  // outlives the front, whose filters report to it
  std::unique_ptr<Front> front;
  std::unique_ptr<tunnel::Manager> manager;
  EventPtr log_tick;  // every second: summaries of throttled log lines
  std::thread thread;

  void flush_log_summaries(bool only_due) {
    front->flush_log_summaries(only_due);
    http::flush_log_summaries(only_due);
    manager->flush_log_summaries(only_due);
  }
};

WorkerPool::WorkerPool(const Config& config, std::shared_ptr<tunnel::SessionCounts> counts, event_base* main_base,
                       Mailbox* main_mailbox, double gather_bound)
    : config_(config), counts_(std::move(counts)), main_base_(main_base), main_mailbox_(main_mailbox),
      gather_bound_(gather_bound) {}

WorkerPool::~WorkerPool() { stop(); }

bool WorkerPool::start(int n, FrontGroup& group, evutil_socket_t placeholder, const tunnel::Rules& rules,
                       const http::StaticSite& site, const tls::TlsContext* tls, std::string& error) {
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
    if (tls) w->tls = std::make_unique<tls::Acceptor>(w->base.get(), *tls, config_.tls_only);
    w->front = std::make_unique<Front>(config_, w->base.get(), w->tls.get(), placeholder, w->mailbox.get(), group,
                                       static_cast<size_t>(w->index));
    w->manager = tunnel::Manager::create_worker(config_, w->base.get(), w->dns.get(), *w->front, rules, counts_,
                                                w->index);
    w->front->set_router([m = w->manager.get(), &site](evhttp_request* req) { route_request(req, *m, site); });
    w->log_tick.reset(event_new(w->base.get(), -1, EV_PERSIST, [](evutil_socket_t, short, void* arg) {
      static_cast<Worker*>(arg)->flush_log_summaries(true);
    }, w.get()));
    timeval second{1, 0};
    evtimer_add(w->log_tick.get(), &second);
    group.loops.push_back(w->front.get());
    Worker* raw = w.get();
    workers_.push_back(std::move(w));
    raw->thread = std::thread(&WorkerPool::run, raw);
  }
  return true;
}

void WorkerPool::run(Worker* w) {
  event_base_loop(w->base.get(), EVLOOP_NO_EXIT_ON_EMPTY);
  // Stopped: close what is left, on this thread, in order: the WebSockets
  // (their sessions end), the sessions and the rest. The front and the loop
  // itself go in stop(), once no other loop can hand this one a connection.
  w->mailbox->close();
  w->log_tick.reset();
  w->flush_log_summaries(false);
  ws::close_all_connections();
  w->manager.reset();
}

bool WorkerPool::run_on(int worker, std::function<void(tunnel::Manager&)> fn) {
  if (worker < 0 || static_cast<size_t>(worker) >= workers_.size()) return false;
  Worker* w = workers_[static_cast<size_t>(worker)].get();
  return w->mailbox->post([w, fn = std::move(fn)] { fn(*w->manager); });
}

// One gather() call: the answers so far, and the bound on waiting for the rest.
struct WorkerPool::Gathering {
  WorkerPool* pool = nullptr;
  uint64_t id = 0;
  std::vector<tunnel::Stats> stats;  // `answered` false until the worker's arrive
  size_t pending = 0;
  std::function<void(std::vector<tunnel::Stats>)> done;
  EventPtr bound;
};

void WorkerPool::gather(bool with_sessions, std::function<void(std::vector<tunnel::Stats>)> done) {
  const uint64_t id = next_gathering_++;
  auto g = std::make_unique<Gathering>();
  g->pool = this;
  g->id = id;
  g->stats.resize(workers_.size());
  for (auto& st : g->stats) st.answered = false;
  g->pending = workers_.size();
  g->done = std::move(done);
  Gathering* raw = g.get();
  gatherings_[id] = std::move(g);
  for (size_t i = 0; i < workers_.size(); ++i) {
    // The worker fills its entry on its own thread and posts it back here; an
    // answer that comes after the bound finds no gathering and is dropped.
    bool posted = run_on(static_cast<int>(i), [this, id, i, with_sessions](tunnel::Manager& m) {
      main_mailbox_->post([this, id, i, st = m.stats(with_sessions)]() mutable { gathered(id, i, std::move(st)); });
    });
    if (!posted) {  // a stopped worker: nothing to wait for
      raw->stats[i].answered = true;
      --raw->pending;
    }
  }
  if (raw->pending == 0) {
    finish_gathering(id);
    return;
  }
  // The timer's argument is the gathering, which owns the timer.
  raw->bound.reset(evtimer_new(main_base_, [](evutil_socket_t, short, void* arg) {
    auto* g = static_cast<Gathering*>(arg);
    g->pool->finish_gathering(g->id);
  }, raw));
  if (!raw->bound) {
    finish_gathering(id);
    return;
  }
  timeval tv = to_timeval(gather_bound_);
  evtimer_add(raw->bound.get(), &tv);
}

void WorkerPool::gathered(uint64_t id, size_t worker, tunnel::Stats st) {
  auto it = gatherings_.find(id);
  if (it == gatherings_.end()) return;  // answered after the bound
  Gathering& g = *it->second;
  if (worker >= g.stats.size() || g.stats[worker].answered) return;
  g.stats[worker] = std::move(st);  // answered, as a Stats is made
  if (--g.pending == 0) finish_gathering(id);
}

void WorkerPool::finish_gathering(uint64_t id) {
  auto it = gatherings_.find(id);
  if (it == gatherings_.end()) return;
  std::unique_ptr<Gathering> g = std::move(it->second);
  gatherings_.erase(it);
  if (g->pending > 0) {
    std::string who;
    for (size_t i = 0; i < g->stats.size(); ++i)
      if (!g->stats[i].answered) who += (who.empty() ? "" : ", ") + std::to_string(i + 1);
    log::warn("status: worker thread(s) ", who, " did not answer within ", gather_bound_,
              " s; their sessions are missing from this answer");
  }
  auto done = std::move(g->done);
  auto stats = std::move(g->stats);
  g.reset();  // and its timer, before `done` may start another gathering
  done(std::move(stats));
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
  for (auto& w : workers_) {
    w->front.reset();
    w->tls.reset();
    w->dns.reset();
    w->base.reset();
  }
}

}  // namespace netwine
