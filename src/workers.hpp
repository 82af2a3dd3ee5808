// Event loops on other threads than the main one (server.hpp, "Threads"): each
// worker has its own event_base, evdns_base, HTTP front (front.hpp) and
// tunnel::Manager, and serves the connections the main loop hands to it.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config.hpp"
#include "event_handles.hpp"
#include "tunnel/manager.hpp"

namespace netwine {

class Front;
struct FrontGroup;
namespace http { class StaticSite; }
namespace tls { class TlsContext; }

// Functions posted to an event loop from any thread, run on the loop's thread
// in the order posted. Needs evthread_use_pthreads() before the base was made.
class Mailbox {
 public:
  explicit Mailbox(event_base* base);
  ~Mailbox();
  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;

  // False once closed: `fn` is dropped.
  bool post(std::function<void()> fn);
  // No more posts; those not yet run are dropped. Call on the loop's thread
  // (or once it has stopped), before its base is freed.
  void close();

 private:
  static void on_wake(evutil_socket_t, short, void* self);
  void run();

  std::mutex mu_;
  std::deque<std::function<void()>> queue_;
  bool closed_ = false;
  EventPtr wake_;
};

class WorkerPool final : public tunnel::Workers {
 public:
  // No threads yet: start() makes them. `main_base` and `main_mailbox` are the
  // main loop's: gather() answers there. `gather_bound` is how long gather()
  // waits for a worker, in seconds.
  WorkerPool(const Config& config, std::shared_ptr<tunnel::SessionCounts> counts, event_base* main_base,
             Mailbox* main_mailbox, double gather_bound = 1.0);
  ~WorkerPool() override;

  // Starts `n` workers (--threads minus the main loop), each with a Front in
  // `group` (appended to group.loops; the main loop's must be there first), a
  // Manager with `rules`, and `site` for static files; with `tls` (may be null),
  // a tls::Acceptor of its own for the port's TLS connections. `placeholder` is
  // the server's (Front::detach_socket()). False with `error` if one cannot be made.
  bool start(int n, FrontGroup& group, evutil_socket_t placeholder, const tunnel::Rules& rules,
             const http::StaticSite& site, const tls::TlsContext* tls, std::string& error);
  size_t size() const { return workers_.size(); }

  bool run_on(int worker, std::function<void(tunnel::Manager&)> fn) override;
  void gather(bool with_sessions, std::function<void(std::vector<tunnel::Stats>)> done) override;

  // Runs `fn` on every worker's thread.
  void each(const std::function<void(tunnel::Manager&)>& fn);
  // Ends every worker loop and joins the threads; each closes its sessions and
  // WebSockets on its own thread first; the fronts go once every thread has
  // stopped (a loop may hand a connection to another until then). Idempotent.
  void stop();

 private:
  struct Worker;
  struct Gathering;
  static void run(Worker* w);
  // A worker's answer to gathering `id` arrived (main thread).
  void gathered(uint64_t id, size_t worker, tunnel::Stats st);
  void finish_gathering(uint64_t id);

  const Config& config_;
  std::shared_ptr<tunnel::SessionCounts> counts_;
  std::vector<std::unique_ptr<Worker>> workers_;
  event_base* main_base_;
  Mailbox* main_mailbox_;
  double gather_bound_;
  // gather() calls waiting for workers, by id (main thread only).
  std::map<uint64_t, std::unique_ptr<Gathering>> gatherings_;
  uint64_t next_gathering_ = 0;
};

}  // namespace netwine
