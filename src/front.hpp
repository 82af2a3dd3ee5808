// One event loop's HTTP front: its evhttp, the listeners bound to it, a guard on
// every client connection (slow requests, accounting), the checks every request
// passes before it is routed, close watchers, and moving a connection's socket
// away from evhttp (detach_socket()) or into it (take_socket()).
//
// The main loop has one (server.hpp); so does every worker loop (workers.hpp).
// A Front is used on its own loop's thread only, except connection_closed_elsewhere().
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "config.hpp"
#include "event_handles.hpp"
#include "log.hpp"

namespace netwine {

class Mailbox;
namespace tls { class Acceptor; struct Released; }

class Front {
 public:
  // `tls` (may be null: no TLS) must be made on `base` and outlive the Front.
  // `placeholder` stands in for detached sockets (detach_socket()); -1 if none
  // will be detached. `mailbox` is this loop's (connection_closed_elsewhere()).
  Front(const Config& config, event_base* base, tls::Acceptor* tls, evutil_socket_t placeholder, Mailbox* mailbox);
  ~Front();
  Front(const Front&) = delete;
  Front& operator=(const Front&) = delete;

  // Requests that pass the checks every request must (smuggling forms,
  // malformed headers, --allowed-methods) go to `route`.
  void set_router(std::function<void(evhttp_request*)> route) { route_ = std::move(route); }

  // Listens on `spec` ("HOST:PORT", "[V6]:PORT"); with `reuse_port`, alongside
  // other loops' listeners on the same address. On success `bound` is the address
  // actually bound; else false with `error`.
  bool listen(const std::string& spec, bool reuse_port, std::string& bound, std::string& error);
  // No more accepting, for good (shutdown).
  void stop_accepting();

  event_base* base() const { return base_; }
  uint64_t open_connections() const { return open_connections_; }

  // Runs `fn` once when `conn` closes (or the server frees it), before the
  // connection's memory goes away. One watcher per connection; a second call
  // replaces the first; unwatch() forgets it (the tunnel code clears its watcher when
  // a held response completes, so a keep-alive connection never calls a stale one).
  void watch_close(evhttp_connection* conn, std::function<void()> fn);
  void unwatch_close(evhttp_connection* conn);

  // True if `req` arrived over TLS (what the browser's origin scheme is).
  bool is_tls(evhttp_request* req) const;

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

  // Writes what the log throttles counted and have not reported; with
  // `only_due`, only once their window is over.
  void flush_log_summaries(bool only_due);

 private:
  struct ConnGuard;

  static void on_request(evhttp_request* req, void* self);
  void do_request(evhttp_request* req);
  static bufferevent* on_new_connection(event_base* base, void* self);
  bufferevent* do_new_connection();
  static void on_connection_close(evhttp_connection* conn, void* self);
  void do_connection_close(evhttp_connection* conn);
  static void on_accept_error(evconnlistener* l, void* self);
  static void on_resume_accepting(evutil_socket_t, short, void* self);
  void pause_accepting(double seconds);
  void note_connection_gone();
  void adopt(ConnGuard* g, evhttp_connection* conn);
  bool method_allowed(evhttp_cmd_type t) const;

  const Config& config_;
  event_base* base_;
  tls::Acceptor* tls_;
  evutil_socket_t placeholder_;
  Mailbox* mailbox_;
  std::string allow_header_;  // --allowed-methods as an Allow header value
  std::function<void(evhttp_request*)> route_;
  EvhttpPtr http_;
  std::vector<evconnlistener*> listeners_;  // owned by http_ once bound
  EventPtr resume_accept_;
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
  bool stopped_ = false;  // stop_accepting()
};

}  // namespace netwine
