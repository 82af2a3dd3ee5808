// The server: one event_base, one evhttp on every --listen address, the routes
// (static files, /netwine.js, the tunnel prefix, status and metrics), signals and
// connection accounting.
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
namespace tls { class TlsContext; class Acceptor; class TargetTlsContext; struct Released; }
class DemoService;

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

  // Runs `fn` once when `conn` closes (or the server frees it), before the
  // connection's memory goes away. One watcher per connection; a second call
  // replaces the first; unwatch() forgets it (the tunnel code clears its watcher when
  // a held response completes, so a keep-alive connection never calls a stale one).
  void watch_close(evhttp_connection* conn, std::function<void()> fn);
  void unwatch_close(evhttp_connection* conn);

  // True if `req` arrived over TLS (what the browser's origin scheme is).
  bool is_tls(evhttp_request* req) const;

  // The client TLS context for tls:// targets (system CAs plus --target-ca).
  std::shared_ptr<const tls::TargetTlsContext> target_tls() const { return target_tls_; }

  // True while shutting down: new sessions are refused with 503.
  bool draining() const { return draining_; }

  // True if detach_socket() may take `conn`'s socket now: a plain socket, or a
  // shared-port connection (plain or TLS, tls::Acceptor::can_release()).
  bool can_detach(evhttp_connection* conn) const;
  // A shared-port TLS connection's session, carried along with its socket.
  using CarriedTls = std::shared_ptr<tls::Released>;
  // Takes `conn`'s socket away from evhttp: from the event loop, once evhttp has
  // let go of it, `then` gets the descriptor (the caller's from then on), the
  // bytes the client sent after its request (plaintext), and for a TLS
  // connection its TLS session and unread ciphertext (else null); or -1 if
  // evhttp freed the connection first. The socket still counts as an open
  // connection until connection_closed_elsewhere().
  void detach_socket(evhttp_connection* conn, std::function<void(evutil_socket_t, std::string, CarriedTls)> then);
  // A socket taken by detach_socket() was closed (callable from any thread).
  void connection_closed_elsewhere();

 private:
  struct Listener;
  struct ConnGuard;

  bool bind_all();
  void write_port_file();
  void reload();
  void begin_shutdown(const char* why);
  void check_drained();
  void finish_shutdown();
  bool start_workers();

  static void on_request(evhttp_request* req, void* self);
  void do_request(evhttp_request* req);
  static bufferevent* on_new_connection(event_base* base, void* self);
  bufferevent* do_new_connection();
  static void on_connection_close(evhttp_connection* conn, void* self);
  void do_connection_close(evhttp_connection* conn);
  static void on_signal(evutil_socket_t sig, short, void* self);
  static void on_accept_error(evconnlistener* l, void* self);
  static void on_resume_accepting(evutil_socket_t, short, void* self);
  static void on_log_tick(evutil_socket_t, short, void* self);
  void flush_log_summaries(bool only_due);
  void pause_accepting(double seconds);
  void note_connection_gone();
  void adopt(ConnGuard* g, evhttp_connection* conn);
  bool method_allowed(evhttp_cmd_type t) const;

  static Server* active_;  // for callbacks whose argument libevent owns

  Config config_;
  std::string allow_header_;  // --allowed-methods as an Allow header value
  EventBasePtr base_;
  DnsBasePtr dns_;
  // TLS for clients (null without --tls-cert): declared before http_ so they
  // outlive it; the acceptor's filters report to it until evhttp frees them.
  std::unique_ptr<tls::TlsContext> tls_context_;
  std::unique_ptr<tls::Acceptor> tls_acceptor_;
  std::shared_ptr<tls::TargetTlsContext> target_tls_;
  EvhttpPtr http_;
  std::vector<std::string> bound_;            // "HOST:PORT" actually bound
  std::vector<evconnlistener*> listeners_;    // owned by http_ once bound
  std::vector<EventPtr> signals_;
  EventPtr resume_accept_;
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
  // Connections that have dispatched a request: their close watchers.
  std::unordered_map<evhttp_connection*, std::function<void()>> close_watchers_;
  // Every open client connection's guard (slow requests, accounting), by bufferevent.
  std::unordered_map<bufferevent*, std::unique_ptr<ConnGuard>> guards_;
  // evhttp's read callback (static in http.c): seen on the first adopted connection.
  void (*evhttp_read_cb_)(bufferevent*, void*) = nullptr;
  log::Throttle accept_error_log_;  // "accept failed" lines
  log::Throttle slow_request_log_;  // "closing connection ...: header timeout" lines
  uint64_t open_connections_ = 0;
  bool accept_paused_ = false;
  bool draining_ = false;
  int exit_code_ = 0;
};

}  // namespace netwine
