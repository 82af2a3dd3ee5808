// The server: the main event loop, its HTTP front (front.hpp: evhttp on every
// --listen address, connection guards and accounting), the routes (static files,
// /netwine.js, the tunnel prefix, status and metrics), signals, reload and drain.
//
// Threads. --threads N (default: one per CPU) runs N event loops: the main one
// and N-1 workers (workers.hpp), each with its own Front (front.hpp; on a TLS
// port its own tls::Acceptor), DNS base and tunnel::Manager. The main loop
// accepts and hands each new connection to the next loop in turn; that loop's
// evhttp serves it: static files, opens (the session lives there; its key names
// the loop), WebSockets. A request about a session on another loop moves its
// connection there between requests, TLS session and all
// (Front::move_request()); status and metrics move to the main loop, which
// gathers every loop's sessions on their own threads. Shared between threads:
// the session limits (tunnel/counts.hpp), the connection count (FrontGroup),
// the rules (each loop has a copy of the shared_ptrs, replaced on SIGHUP), the
// TLS certificate (tls::TlsContext, locked) and the config (read-only).
// SIGTERM's drain waits for every thread's sessions.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config.hpp"
#include "event_handles.hpp"
#include "front.hpp"

namespace netwine {

namespace http { class StaticSite; }
namespace tunnel { class Manager; class SessionCounts; }
class Mailbox;
class WorkerPool;
namespace tls { class TlsContext; class Acceptor; class TargetTlsContext; }
class DemoService;

class Server {
 public:
  explicit Server(Config config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds, serves until SIGTERM/SIGINT, drains, returns the process exit code.
  int run();

 private:
  bool bind_all();
  void write_port_file();
  void reload();
  void begin_shutdown(const char* why);
  void check_drained();
  void finish_shutdown();
  bool make_placeholder();
  bool start_workers();

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
  FrontGroup fronts_;                         // every loop's Front (front.hpp)
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
