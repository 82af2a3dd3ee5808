// The server: the main event loop, its HTTP front (front.hpp: evhttp on every
// --listen address, connection guards and accounting), the routes (static files,
// /netwine.js, the tunnel prefix, status and metrics), signals, reload and drain.
//
// Threads. Everything above runs on the main thread: every HTTP request, every
// streaming and polling transport, every netwine.v1 WebSocket (so a session's
// resumes and HTTP fallbacks always reach the thread it lives on) and every TLS
// connection (its state lives in its bufferevent). --threads N (default: one per
// CPU) adds N-1 worker threads, each with its own event loop, DNS base and
// tunnel::Manager (workers.hpp). New binary and base64 WebSockets, which nothing
// can attach to later, take turns between the main thread and the workers: on a
// worker's turn the main thread still checks the handshake, the client, the
// Origin, the target and the limits (refusals stay HTTP answers), then takes the
// socket from evhttp (detach_socket()) and posts it with the admitted session to
// the worker, which writes the 101 and relays. Shared between threads: the
// session limits and the keys of worker sessions (tunnel/counts.hpp), the
// connection count (connection_closed_elsewhere()), and the config (read-only).
// /netwine/status and /metrics gather every worker's sessions on its own thread;
// SIGTERM's drain waits for every thread's sessions.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "config.hpp"
#include "event_handles.hpp"
#include "log.hpp"

namespace netwine {

namespace http { class StaticSite; }
namespace tunnel { class Manager; class SessionCounts; }
class Mailbox;
class WorkerPool;
namespace tls { class TlsContext; class Acceptor; class TargetTlsContext; }
class DemoService;
class Front;

class Server {
 public:
  explicit Server(Config config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds, serves until SIGTERM/SIGINT, drains, returns the process exit code.
  int run();

  event_base* base() const { return base_.get(); }
  evdns_base* dns() const { return dns_.get(); }
  const Config& config() const { return config_; }
  // The main loop's HTTP front (front.hpp).
  Front& front() { return *front_; }

  // The client TLS context for tls:// targets (system CAs plus --target-ca).
  std::shared_ptr<const tls::TargetTlsContext> target_tls() const { return target_tls_; }

  // True while shutting down: new sessions are refused with 503.
  bool draining() const { return draining_; }

 private:
  bool bind_all();
  void write_port_file();
  void reload();
  void begin_shutdown(const char* why);
  void check_drained();
  void finish_shutdown();
  bool make_placeholder();
  bool start_workers();
  void route(evhttp_request* req);

  static void on_signal(evutil_socket_t sig, short, void* self);
  static void on_log_tick(evutil_socket_t, short, void* self);
  void flush_log_summaries(bool only_due);


  Config config_;
  EventBasePtr base_;
  DnsBasePtr dns_;
  // TLS for clients (null without --tls-cert): declared before http_ so they
  // outlive it; the acceptor's filters report to it until evhttp frees them.
  std::unique_ptr<tls::TlsContext> tls_context_;
  std::unique_ptr<tls::Acceptor> tls_acceptor_;
  std::shared_ptr<tls::TargetTlsContext> target_tls_;
  std::unique_ptr<Front> front_;
  std::vector<std::string> bound_;            // "HOST:PORT" actually bound
  std::vector<EventPtr> signals_;
  EventPtr log_tick_;  // every second: summaries of throttled log lines
  EventPtr drain_timer_;
  std::unique_ptr<http::StaticSite> static_site_;
  std::shared_ptr<tunnel::SessionCounts> counts_;
  std::unique_ptr<tunnel::Manager> tunnels_;
  std::unique_ptr<Mailbox> mailbox_;       // posts from worker threads
  std::unique_ptr<WorkerPool> workers_;    // null with --threads 1
  evutil_socket_t placeholder_ = -1;       // stands in for detached sockets (detach_socket())
  size_t workers_draining_ = 0;            // shutdown: workers whose sessions are not all gone
  bool main_drained_ = false;              // shutdown: the main thread's are
  std::unique_ptr<DemoService> demo_;
  bool draining_ = false;
  int exit_code_ = 0;
};

}  // namespace netwine
