// One event loop's HTTP front: its evhttp, a guard on every client connection
// (slow requests), the checks every request passes before it is routed, close
// watchers, and moving a connection's socket away from evhttp (detach_socket())
// or into it (take_socket()).
//
// Every event loop has one: the main loop's (server.hpp) also owns the listening
// sockets. Its accept callback hands each new connection to the next loop in
// turn (round robin, the main loop included), whose Front gives it to its own
// evhttp. A request about something that lives on another loop (a session: its
// key names its loop) moves its connection there between requests
// (move_request()): the loop that owns a session is the only one that touches it.
// On a TLS port each loop has its own tls::Acceptor: a new connection's handshake
// happens on the loop it was given to, and a moving connection carries its TLS
// session along (tls::Acceptor::release(), adopt()).
//
// A Front is used on its own loop's thread only, except post_socket().
#pragma once

#include <atomic>
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
class Front;
namespace tls { class Acceptor; struct Released; }

// What every loop's Front shares: filled in before the first connection, then
// read-only but for the counters.
struct FrontGroup {
  std::vector<Front*> loops;          // by loop number; 0 is the main loop
  bool spread = false;                // new connections take turns between the loops (more than one)
  std::atomic<uint64_t> open{0};      // client connections open, every loop's
  std::atomic<uint64_t> turn{0};      // the next connection's loop (main thread only, in fact)
};

class Front {
 public:
  // `tls` (may be null: no TLS) must be made on `base` and outlive the Front.
  // `placeholder` stands in for detached sockets (detach_socket()). `mailbox` is
  // this loop's. `loop` is this Front's number in `group`.
  Front(const Config& config, event_base* base, tls::Acceptor* tls, evutil_socket_t placeholder, Mailbox* mailbox,
        FrontGroup& group, size_t loop);
  ~Front();
  Front(const Front&) = delete;
  Front& operator=(const Front&) = delete;

  // Requests that pass the checks every request must (smuggling forms,
  // malformed headers, --allowed-methods) go to `route`.
  void set_router(std::function<void(evhttp_request*)> route) { route_ = std::move(route); }

  // False if this libevent's evhttp cannot be handed sockets (take_socket()):
  // see ready() in front.cpp. The server refuses to start then.
  bool ready() const { return accept_cb_ != nullptr; }

  // Listens on `spec` ("HOST:PORT", "[V6]:PORT") (the main loop's Front). On
  // success `bound` is the address actually bound; else false with `error`.
  bool listen(const std::string& spec, std::string& bound, std::string& error);
  // No more accepting, for good (shutdown).
  void stop_accepting();

  event_base* base() const { return base_; }
  size_t loop() const { return loop_; }
  size_t loops() const { return group_.loops.size(); }

  // A shared-port TLS connection's session, carried along with its socket.
  using CarriedTls = std::shared_ptr<tls::Released>;
  // What comes with a socket to take_socket(): nothing for a new connection;
  // for one moving from another loop, the bytes its evhttp is to read first (as
  // if they had come from the socket) and, on a TLS port, its TLS session (null:
  // the port's plain side).
  struct Arrival {
    bool moved = false;
    std::string prefill;
    CarriedTls tls;
  };
  // Gives the connected socket `fd` to this loop's evhttp. This loop's thread
  // only. The socket must already be counted in FrontGroup::open.
  void take_socket(evutil_socket_t fd, Arrival arrival);
  // take_socket() on this Front's loop, from any thread; if that loop has
  // stopped, closes the socket.
  void post_socket(evutil_socket_t fd, Arrival arrival);
  // Moves `req`'s connection to loop `to`, whose evhttp reads `req` again (and
  // whatever the client sent after it): for a request about something that
  // lives there. Nothing is answered here. False if this connection cannot move
  // now (a loop that does not exist; TLS output not yet sent): the caller answers.
  bool move_request(evhttp_request* req, size_t to);

  // Runs `fn` once when `conn` closes (or the server frees it), before the
  // connection's memory goes away. One watcher per connection; a second call
  // replaces the first; unwatch() forgets it (the tunnel code clears its watcher when
  // a held response completes, so a keep-alive connection never calls a stale one).
  void watch_close(evhttp_connection* conn, std::function<void()> fn);
  void unwatch_close(evhttp_connection* conn);

  // True if `req` arrived over TLS (what the browser's origin scheme is).
  bool is_tls(evhttp_request* req) const;

  // Writes what the log throttles counted and have not reported; with
  // `only_due`, only once their window is over.
  void flush_log_summaries(bool only_due);

 private:
  struct ConnGuard;

  // True if detach_socket() may take `conn`'s socket now: a plain socket, or a
  // shared-port connection (plain or TLS, tls::Acceptor::can_release()).
  bool can_detach(evhttp_connection* conn) const;
  // Takes `conn`'s socket away from evhttp (move_request()): from the event
  // loop, once evhttp has let go of it, `then` gets the descriptor (the
  // caller's from then on), the bytes the client sent after its request
  // (plaintext), and for a TLS connection its TLS session and unread ciphertext
  // (else null); or -1 if evhttp freed the connection first. The socket stays
  // counted in FrontGroup::open: it lives on elsewhere.
  void detach_socket(evhttp_connection* conn, std::function<void(evutil_socket_t, std::string, CarriedTls)> then);

  static void on_request(evhttp_request* req, void* self);
  void do_request(evhttp_request* req);
  static bufferevent* on_new_connection(event_base* base, void* self);
  bufferevent* do_new_connection();
  static void on_connection_close(evhttp_connection* conn, void* self);
  void do_connection_close(evhttp_connection* conn);
  static void on_accept(evconnlistener* l, evutil_socket_t fd, sockaddr* sa, int len, void* self);
  static void on_accept_error(evconnlistener* l, void* self);
  static void on_resume_accepting(evutil_socket_t, short, void* self);
  static void on_probe_error(evconnlistener* l, void* self);
  void find_evhttp_accept();
  void pause_accepting(double seconds);
  void resume_accepting();
  void note_connection_gone();
  void adopt(ConnGuard* g, evhttp_connection* conn);
  bool method_allowed(evhttp_cmd_type t) const;

  const Config& config_;
  event_base* base_;
  tls::Acceptor* tls_;
  evutil_socket_t placeholder_;
  Mailbox* mailbox_;
  FrontGroup& group_;
  size_t loop_;
  std::string allow_header_;  // --allowed-methods as an Allow header value
  std::function<void(evhttp_request*)> route_;
  EvhttpPtr http_;
  std::vector<ListenerPtr> listeners_;
  // evhttp's accept callback and its argument, read off a listener bound to
  // http_ that never listens (find_evhttp_accept()): take_socket() calls it.
  void (*accept_cb_)(evconnlistener*, evutil_socket_t, sockaddr*, int, void*) = nullptr;
  evconnlistener* probe_ = nullptr;  // owned by http_
  std::string prefill_;              // for the connection take_socket() is making
  bufferevent* adopted_ = nullptr;   // its filter, made already (a TLS port's moved connection)
  bool taking_ = false;
  EventPtr resume_accept_;
  // Connections that have dispatched a request: their close watchers.
  std::unordered_map<evhttp_connection*, std::function<void()>> close_watchers_;
  // Every open client connection's guard (slow requests, accounting), by bufferevent.
  std::unordered_map<bufferevent*, std::unique_ptr<ConnGuard>> guards_;
  // evhttp's read callback (static in http.c): seen on the first adopted connection.
  void (*evhttp_read_cb_)(bufferevent*, void*) = nullptr;
  log::Throttle accept_error_log_;  // "accept failed" lines
  log::Throttle slow_request_log_;  // "closing connection ...: header timeout" lines
  bool accept_paused_ = false;
  bool stopped_ = false;  // stop_accepting()
};

}  // namespace netwine
