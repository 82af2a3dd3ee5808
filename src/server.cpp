#include "server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <fstream>
#include <thread>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>

#include "demo_service.hpp"
#include "http/http_util.hpp"
#include "http/static_files.hpp"
#include "log.hpp"
#include "sockio.hpp"
#include "tls.hpp"
#include "tunnel/counts.hpp"
#include "tunnel/manager.hpp"
#include "workers.hpp"

namespace netwine {
namespace {

// Splits "HOST:PORT" / "[V6]:PORT" into a sockaddr. Returns an error text or "".
std::string parse_listen(const std::string& spec, sockaddr_storage& ss, socklen_t& len) {
  std::string host, port;
  if (!spec.empty() && spec[0] == '[') {
    auto close = spec.find(']');
    if (close == std::string::npos || close + 1 >= spec.size() || spec[close + 1] != ':')
      return "expected [V6]:PORT";
    host = spec.substr(1, close - 1);
    port = spec.substr(close + 2);
  } else {
    auto colon = spec.rfind(':');
    if (colon == std::string::npos) return "expected HOST:PORT";
    host = spec.substr(0, colon);
    port = spec.substr(colon + 1);
  }
  char* end = nullptr;
  long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end || p < 0 || p > 65535) return "bad port '" + port + "'";
  if (host == "localhost") host = "127.0.0.1";
  if (host.empty() || host == "*") host = "0.0.0.0";
  std::memset(&ss, 0, sizeof ss);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(p));
    len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(p));
    len = sizeof(sockaddr_in6);
  } else {
    return "'" + host + "' is not a numeric address (use 127.0.0.1, ::1, 0.0.0.0 or ::)";
  }
  return {};
}

std::string sockaddr_text(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_INET) {
    auto* v4 = reinterpret_cast<const sockaddr_in*>(sa);
    inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(ntohs(v4->sin_port));
  }
  auto* v6 = reinterpret_cast<const sockaddr_in6*>(sa);
  inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
  return "[" + std::string(buf) + "]:" + std::to_string(ntohs(v6->sin6_port));
}

// Counts the values of header `name` (evhttp keeps duplicates as separate entries).
int header_count(evkeyvalq* headers, const char* name) {
  int n = 0;
  for (evkeyval* kv = headers->tqh_first; kv; kv = kv->next.tqe_next)
    if (evutil_ascii_strcasecmp(kv->key, name) == 0) ++n;
  return n;
}

// True if every header name is an RFC 9110 token and no value holds a control
// byte (HTAB aside): evhttp takes "\x00\x01: x" as a header, which a proxy in
// front may read differently.
bool headers_well_formed(evkeyvalq* headers) {
  auto tchar = [](unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
  };
  for (evkeyval* kv = headers->tqh_first; kv; kv = kv->next.tqe_next) {
    if (!kv->key[0]) return false;
    for (const char* p = kv->key; *p; ++p)
      if (!tchar(static_cast<unsigned char>(*p))) return false;
    for (const char* p = kv->value; *p; ++p) {
      auto c = static_cast<unsigned char>(*p);
      if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
    }
  }
  return true;
}

// Bytes read per callback, beyond the bufferevent's 4096, while evhttp reads a request.
constexpr size_t kRequestReadBudget = 256 * 1024;
// Largest single write on a client connection.
constexpr size_t kMaxSingleWrite = 1024 * 1024;
constexpr double kAcceptPauseSeconds = 0.1;  // after EMFILE & co: breathe instead of spinning
// A request taking longer than header-timeout must keep arriving at this rate
// (bytes/s) to be given another header-timeout: a body over a slow link does,
// a slowloris dribble does not (Apache's mod_reqtimeout has the same MinRate idea).
constexpr double kMinRequestRate = 1024;
// Lines that a flood would repeat (accept failing, slow clients being cut): at
// most kFloodLogBurst per kFloodLogWindowSeconds; the rest are counted.
constexpr double kFloodLogWindowSeconds = 10;
constexpr uint64_t kFloodLogBurst = 3;
const timeval kZeroTimeval{0, 0};


}  // namespace

// Guards one client connection from accept to close, and counts it.
//
// Slow requests (slowloris): a request, head and body, must arrive within
// header-timeout of its first byte (the first request of a connection: of the
// accept), or keep arriving at kMinRequestRate bytes/s over each further
// header-timeout; otherwise the socket is shut down, which evhttp sees as EOF and
// frees the connection. evhttp's own timeout does not do this: every byte re-arms it.
//
// libevent 2.1 keeps the connection's state private, so the guard reads it off the
// bufferevent: while evhttp reads a request, the read callback is evhttp's and
// reading is enabled; while a request is handled or answered evhttp disables
// reading or clears the read callback; an upgraded WebSocket has its own.
//
// Accounting: evhttp creates its connection object only after the bufferevent
// callback returns, so the guard adopts it from a zero-timeout event (or in the
// first request's callback, if that comes first) and registers the close callback
// there; every close, with or without a request, then reaches do_connection_close(),
// which destroys the guard. The guard holds a reference on the bufferevent so its
// pointer stays valid until then.
struct Server::ConnGuard {
  Server* server = nullptr;
  bufferevent* bev = nullptr;
  EventPtr timer;                        // adoption (zero timeout), then request deadlines
  evbuffer_cb_entry* input_cb = nullptr;  // counts bytes and arms deadlines
  bool adopted = false;
  bool armed = false;                    // a request deadline is running
  uint64_t bytes_in = 0;                 // received on the connection so far
  uint64_t window_start = 0;             // bytes_in when the current deadline was armed
  evutil_socket_t fd = -1;               // set for plain sockets: read_more() reads it
  bool topping_up = false;

  ~ConnGuard() {
    if (input_cb) evbuffer_remove_cb_entry(bufferevent_get_input(bev), input_cb);
    timer.reset();
    bufferevent_decref(bev);
  }

  // True while evhttp is reading a request on this connection.
  bool evhttp_reading() const {
    bufferevent_data_cb rcb = nullptr;
    bufferevent_getcb(bev, &rcb, nullptr, nullptr, nullptr);
    return rcb && rcb == server->evhttp_read_cb_ && (bufferevent_get_enabled(bev) & EV_READ);
  }

  void arm(double seconds) {
    armed = true;
    window_start = bytes_in;
    timeval tv = to_timeval(seconds);
    evtimer_add(timer.get(), &tv);
  }

  void disarm() {
    armed = false;
    evtimer_del(timer.get());
  }

  static void on_input(evbuffer* in, const evbuffer_cb_info* info, void* arg) {
    auto* g = static_cast<ConnGuard*>(arg);
    if (info->n_added == 0) return;
    g->bytes_in += info->n_added;
    if (sockio::socket_may_hold_more(info->n_added)) g->read_more(in);
    // The first bytes of a later request on a keep-alive connection start its deadline.
    if (!g->armed && g->adopted && g->evhttp_reading()) {
      g->arm(g->server->config_.header_timeout);
      g->window_start -= info->n_added;
    }
  }

  static void on_timer(evutil_socket_t, short, void* arg) {
    auto* g = static_cast<ConnGuard*>(arg);
    if (!g->adopted) {
      g->server->adopt(g, nullptr);  // may destroy g
      return;
    }
    g->armed = false;
    if (!g->evhttp_reading()) return;  // the request arrived, or the connection is upgraded
    double window = g->server->config_.header_timeout;
    if (g->bytes_in - g->window_start >= static_cast<uint64_t>(kMinRequestRate * window) &&
        g->bytes_in > g->window_start) {
      g->arm(window);  // slow but steady: a large body over a slow link
      return;
    }
    uint64_t more = 0;
    double over = 0;
    if (g->server->slow_request_log_.allow(more, over))
      log::info("closing connection ", g->peer(), ": request not received within the header timeout",
                log::held_back_note(more, over, "times"));
    evutil_socket_t fd = bufferevent_getfd(g->bev);
    if (fd >= 0) shutdown(fd, SHUT_RDWR);
  }

  // While evhttp reads a request from a plain socket (a send's body, say), read on
  // past the bufferevent's 4096 bytes (sockio.hpp), so evhttp parses a large body
  // in a few callbacks instead of one per 4 KiB. This runs inside the bufferevent's
  // own read, where the input buffer takes more; the bytes added here come back
  // through this callback (counted, not read again).
  void read_more(evbuffer* in) {
    if (topping_up || fd < 0 || !adopted || !evhttp_reading()) return;
    topping_up = true;
    sockio::read_more(fd, in, kRequestReadBudget);
    topping_up = false;
  }

  std::string peer() const {
    sockaddr_storage ss;
    socklen_t len = sizeof ss;
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd < 0 || getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "-";
    return sockaddr_text(reinterpret_cast<sockaddr*>(&ss));
  }
};

Server::Server(Config config)
    : config_(std::move(config)),
      accept_error_log_(kFloodLogWindowSeconds, 1),
      slow_request_log_(kFloodLogWindowSeconds, kFloodLogBurst) {
  for (const auto& m : config_.allowed_methods) allow_header_ += (allow_header_.empty() ? "" : ", ") + m;
}

bool Server::method_allowed(evhttp_cmd_type t) const {
  const std::string_view name = http::method_name(t);
  for (const auto& m : config_.allowed_methods)
    if (m == name) return true;
  return false;
}

Server::~Server() {
  // Worker threads first: they close their sockets and sessions on their own
  // threads and may still post here while doing so.
  if (workers_) workers_->stop();
  workers_.reset();
  mailbox_.reset();
  tunnels_.reset();
  guards_.clear();  // before evhttp_free, whose close callbacks then find no guard
  http_.reset();
  demo_.reset();
  if (placeholder_ >= 0) close(placeholder_);
}

void Server::adopt(ConnGuard* g, evhttp_connection* conn) {
  g->adopted = true;
  // evhttp has set up its callbacks by now, its read callback and its connection
  // as their argument (libevent 2.1 http.c, evhttp_start_read_); it is reading the
  // first request. A cleared read callback means evhttp has freed the connection.
  bufferevent_data_cb rcb = nullptr;
  void* arg = nullptr;
  bufferevent_getcb(g->bev, &rcb, nullptr, nullptr, &arg);
  if (!conn) {
    auto* c = static_cast<evhttp_connection*>(arg);
    if (rcb && c && evhttp_connection_get_bufferevent(c) == g->bev) conn = c;
    if (!conn) {
      note_connection_gone();
      guards_.erase(g->bev);  // destroys g, from its own timer callback, which touches nothing after
      return;
    }
  }
  if (rcb && !evhttp_read_cb_) evhttp_read_cb_ = rcb;
  if (sockio::plain_socket(g->bev)) g->fd = bufferevent_getfd(g->bev);
  // No Nagle delay on what we send: a relay's small writes (a console's echoed
  // keystroke, a VNC update's last piece) would otherwise wait for the client's
  // delayed ACK when earlier bytes are still unacknowledged. Targets get the same
  // (target/connector.cpp).
  if (evutil_socket_t fd = bufferevent_getfd(g->bev); fd >= 0) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  evhttp_connection_set_closecb(conn, &Server::on_connection_close, this);
  // The first request's deadline (adoption follows the accept at once).
  g->disarm();
  g->arm(config_.header_timeout);
}

bufferevent* Server::on_new_connection(event_base*, void* self) {
  return static_cast<Server*>(self)->do_new_connection();
}

bufferevent* Server::do_new_connection() {
  // With TLS configured: the plain-or-TLS filter (TLS only with --tls-only).
  // The guard below works on either: bufferevent_getfd reaches the socket through
  // a filter (libevent 2.1.12 forwards it to the underlying bufferevent).
  bufferevent* bev = tls_acceptor_ ? tls_acceptor_->new_connection()
                                   : bufferevent_socket_new(base_.get(), -1, BEV_OPT_CLOSE_ON_FREE);
  if (!bev) return nullptr;
  // Stream and poll answers go out in writes of up to 1 MiB (libevent's default is
  // 16 KiB). Plain sockets only: a larger single write on libevent 2.1.12's OpenSSL
  // bufferevent corrupted streams over TLS (test_tls.py caught it).
  if (!tls_acceptor_) bufferevent_set_max_single_write(bev, kMaxSingleWrite);
  ++open_connections_;
  if (open_connections_ >= config_.max_connections && !accept_paused_) {
    log::warn("max-connections (", config_.max_connections, ") reached: accepting paused");
    for (auto* l : listeners_) evconnlistener_disable(l);
    accept_paused_ = true;
  }
  bufferevent_incref(bev);
  auto g = std::make_unique<ConnGuard>();
  g->server = this;
  g->bev = bev;
  g->timer.reset(evtimer_new(base_.get(), &ConnGuard::on_timer, g.get()));
  g->input_cb = evbuffer_add_cb(bufferevent_get_input(bev), &ConnGuard::on_input, g.get());
  evtimer_add(g->timer.get(), &kZeroTimeval);  // adopt evhttp's connection once it exists
  guards_[bev] = std::move(g);
  return bev;
}

void Server::note_connection_gone() {
  if (open_connections_ > 0) --open_connections_;
  if (accept_paused_ && open_connections_ < config_.max_connections && !draining_) {
    for (auto* l : listeners_) evconnlistener_enable(l);
    accept_paused_ = false;
  }
}

void Server::on_connection_close(evhttp_connection* conn, void* self) {
  static_cast<Server*>(self)->do_connection_close(conn);
}

void Server::do_connection_close(evhttp_connection* conn) {
  // Runs inside evhttp_connection_free (or its reset), before the bufferevent goes.
  if (bufferevent* bev = evhttp_connection_get_bufferevent(conn)) guards_.erase(bev);
  note_connection_gone();
  auto it = close_watchers_.find(conn);
  if (it != close_watchers_.end()) {
    auto fn = std::move(it->second);
    close_watchers_.erase(it);
    fn();
  }
}

namespace {

// A socket being taken from evhttp (Server::detach_socket()).
struct Detach {
  Server* server;
  evhttp_connection* conn;  // null once evhttp freed it first
  evutil_socket_t fd;
  std::string pending;
  Server::CarriedTls tls;
  std::function<void(evutil_socket_t, std::string, Server::CarriedTls)> then;
  EventPtr timer;  // step two
};

}  // namespace

// Step one, inside the request's callback: stop the bufferevent and take its
// socket off it, which deletes its events. With the epoll changelist those
// deletions reach the kernel only when the loop next polls, so the descriptor
// is given away in step two, after that (the timer below). Until then the
// socket must keep its number: a deletion applied after dup3() looks up the
// placeholder (or whatever a worker opened on that number), fails quietly, and
// leaves the socket in this loop's epoll set for its whole life, waking this
// loop whenever it has unread input (a worker under backpressure: a busy loop).
//
// Why not simply free the connection: evhttp_connection_free() calls
// shutdown(SHUT_WR) on the descriptor it remembers from the accept, even when
// the bufferevent no longer has it (libevent 2.1.12 http.c). So step two
// duplicates the socket for the new owner and points the old descriptor number
// at a placeholder socket first: evhttp's shutdown and close reach that.
bool Server::can_detach(evhttp_connection* conn) const {
  bufferevent* bev = conn ? evhttp_connection_get_bufferevent(conn) : nullptr;
  if (!bev) return false;
  return tls_acceptor_ ? tls_acceptor_->can_release(bev) : sockio::plain_socket(bev);
}

void Server::detach_socket(evhttp_connection* conn,
                           std::function<void(evutil_socket_t, std::string, CarriedTls)> then) {
  bufferevent* bev = evhttp_connection_get_bufferevent(conn);
  bufferevent_disable(bev, EV_READ | EV_WRITE);
  bufferevent_set_timeouts(bev, nullptr, nullptr);
  evbuffer* in = bufferevent_get_input(bev);
  std::string pending(evbuffer_get_length(in), '\0');
  if (!pending.empty()) evbuffer_remove(in, pending.data(), pending.size());
  // A shared-port connection (can_detach()): its filter gives up the TLS session
  // and what it had not passed on yet; the socket is the one under the filter.
  CarriedTls carried;
  bufferevent* sock = bev;
  if (bufferevent* under = bufferevent_get_underlying(bev); under && tls_acceptor_) {
    tls::Released r = tls_acceptor_->release(bev);
    if (r.ssl) carried = std::make_shared<tls::Released>(std::move(r));
    else pending += r.raw;  // plain bytes the filter had not moved yet come after its input
    sock = under;
  }
  evutil_socket_t fd = bufferevent_getfd(sock);
  bufferevent_setfd(sock, -1);
  auto* job = new Detach{this, conn, fd, std::move(pending), std::move(carried), std::move(then), nullptr};
  watch_close(conn, [job] { job->conn = nullptr; });  // evhttp_free() came first
  // A zero timeout on an event of our own: it waits in the timer heap, which the
  // loop reads right after its next poll, and makes that poll not wait. (Not
  // event_base_once(): it activates a zero timeout at once, before the poll; and
  // not a small non-zero timeout: epoll_wait counts in milliseconds, so the
  // loop would sleep up to 1 ms before every hand-over.)
  job->timer.reset(evtimer_new(base_.get(), [](evutil_socket_t, short, void* arg) {
    std::unique_ptr<Detach> job(static_cast<Detach*>(arg));
    Server& self = *job->server;
    if (!job->conn) {  // already shut down and counted as closed by evhttp
      if (job->fd >= 0) close(job->fd);
      job->then(-1, {}, nullptr);
      return;
    }
    self.unwatch_close(job->conn);
    evutil_socket_t mine = job->fd >= 0 ? fcntl(job->fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (mine >= 0 && dup3(self.placeholder_, job->fd, O_CLOEXEC) < 0) {
      close(mine);
      mine = -1;
    }
    if (mine >= 0) ++self.open_connections_;  // it lives on elsewhere
    evhttp_connection_free(job->conn);  // counts one connection gone
    if (job->fd >= 0) close(job->fd);    // the placeholder copy, or the socket itself on failure
    job->then(mine, std::move(job->pending), std::move(job->tls));
  }, job));
  evtimer_add(job->timer.get(), &kZeroTimeval);
}

void Server::connection_closed_elsewhere() {
  mailbox_->post([this] { note_connection_gone(); });
}

void Server::watch_close(evhttp_connection* conn, std::function<void()> fn) {
  close_watchers_[conn] = std::move(fn);
}

void Server::unwatch_close(evhttp_connection* conn) { close_watchers_.erase(conn); }

void Server::on_request(evhttp_request* req, void* self) {
  static_cast<Server*>(self)->do_request(req);
}

void Server::do_request(evhttp_request* req) {
  http::note_request_start(req);
  evhttp_connection* conn = evhttp_request_get_connection(req);
  bufferevent* bev = conn ? evhttp_connection_get_bufferevent(conn) : nullptr;
  if (auto it = bev ? guards_.find(bev) : guards_.end(); it != guards_.end()) {
    ConnGuard* g = it->second.get();
    if (!g->adopted) adopt(g, conn);  // the request came before the adoption event
    g->disarm();                      // the request is in: no deadline while it is handled
  }

  evkeyvalq* in = evhttp_request_get_input_headers(req);
  evkeyvalq* out = evhttp_request_get_output_headers(req);
  if (config_.tls_only && !is_tls(req)) {
    // Only if making the TLS bufferevent failed: evhttp then falls back to a
    // plain socket of its own, which --tls-only must not serve.
    evhttp_add_header(out, "Connection", "close");
    http::send_text(req, 400, "400 bad request: this server speaks only https\n");
    return;
  }
  // Request smuggling forms evhttp would accept: refuse them and close, so that
  // nothing after them on the connection is read as a request. Transfer-Encoding
  // is refused whole: evhttp ignores codings other than exactly "chunked" (the body
  // is then read as the next request) and parses chunk sizes leniently ("0x5",
  // "+5", "5 5"), while netwine's clients always send Content-Length (PROTOCOL.md).
  if (header_count(in, "Transfer-Encoding")) {
    evhttp_add_header(out, "Connection", "close");
    http::send_text(req, 400, "400 bad request: Transfer-Encoding is not accepted; send Content-Length\n");
    return;
  }
  if (!headers_well_formed(in)) {
    evhttp_add_header(out, "Connection", "close");
    http::send_text(req, 400, "400 bad request: malformed header field\n");
    return;
  }
  if (header_count(in, "Content-Length") > 1) {
    evhttp_add_header(out, "Connection", "close");
    http::send_text(req, 400, "400 bad request: conflicting Content-Length headers\n");
    return;
  }
  if (!method_allowed(evhttp_request_get_command(req))) {
    evhttp_add_header(out, "Allow", allow_header_.c_str());
    http::send_text(req, 405, "405 method not allowed\n");
    return;
  }
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
  const char* raw_path = uri ? evhttp_uri_get_path(uri) : nullptr;
  if (!raw_path || raw_path[0] != '/') {
    http::send_text(req, 400, "400 bad request: malformed request target\n");
    return;
  }
  std::string_view path(raw_path);
  const std::string& prefix = config_.prefix;
  if (path.substr(0, prefix.size()) == prefix) {
    tunnels_->handle(req, path.substr(prefix.size()));
    return;
  }
  if (path == std::string_view(prefix).substr(0, prefix.size() - 1)) {
    tunnels_->handle(req, "");
    return;
  }
  if (path == "/metrics") {
    tunnels_->handle_metrics(req);
    return;
  }
  if (tunnels_->handle_foreign_upgrade(req)) return;  // websockify-style paths
  static_site_->handle(req);
}

void Server::on_signal(evutil_socket_t sig, short, void* self) {
  auto* s = static_cast<Server*>(self);
  if (sig == SIGHUP) s->reload();
  else s->begin_shutdown(sig == SIGTERM ? "SIGTERM" : "SIGINT");
}

void Server::reload() {
  log::info("SIGHUP: reloading");
  tunnels_->reload();
  if (tls_context_) {
    if (auto err = tls_context_->reload(); !err.empty())
      log::error("TLS reload failed, keeping the previous certificate: ", err);
    else
      log::info("TLS reload: new connections use ", tls_context_->describe());
  }
  // The CAs for tls:// targets: connections being set up keep the context they
  // started with (shared_ptr); new ones use the reloaded file.
  std::string error;
  if (auto fresh = tls::TargetTlsContext::create(config_.target_ca, error)) {
    target_tls_ = std::move(fresh);
    if (!config_.target_ca.empty()) log::info("target TLS reload: CAs from ", config_.target_ca, " and the system");
  } else {
    log::error("target TLS reload failed, keeping the previous CAs: ", error);
  }
}

void Server::begin_shutdown(const char* why) {
  if (draining_) {
    log::info(why, " again: exiting now");
    finish_shutdown();
    return;
  }
  draining_ = true;
  log::info(why, ": no longer accepting; draining for at most ", config_.drain_timeout, "s");
  for (auto* l : listeners_) evconnlistener_disable(l);
  drain_timer_.reset(evtimer_new(base_.get(), [](evutil_socket_t, short, void* self) {
    static_cast<Server*>(self)->finish_shutdown();
  }, this));
  timeval tv = to_timeval(config_.drain_timeout);
  evtimer_add(drain_timer_.get(), &tv);
  if (workers_) {
    workers_draining_ = workers_->size();
    workers_->each([this](tunnel::Manager& m) {
      m.shutdown();
      m.on_drained([this] {
        mailbox_->post([this] {
          if (workers_draining_ > 0) --workers_draining_;
          check_drained();
        });
      });
    });
  }
  tunnels_->shutdown();
  tunnels_->on_drained([this] {
    main_drained_ = true;
    check_drained();
  });
}

void Server::check_drained() {
  // Every session of every thread has flushed: no need to wait for the deadline.
  if (!main_drained_ || workers_draining_ > 0) return;
  timeval now{0, 0};
  evtimer_add(drain_timer_.get(), &now);
}

void Server::finish_shutdown() { event_base_loopexit(base_.get(), nullptr); }

void Server::on_accept_error(evconnlistener*, void*) {
  int err = EVUTIL_SOCKET_ERROR();
  if (!active_) return;
  active_->pause_accepting(kAcceptPauseSeconds);
  // Out of descriptors, this repeats after every pause: one line per log window.
  uint64_t more = 0;
  double over = 0;
  if (active_->accept_error_log_.allow(more, over))
    log::warn("accept failed: ", evutil_socket_error_to_string(err), "; pausing accepting for ",
              kAcceptPauseSeconds, "s at a time until it works", log::held_back_note(more, over, "times"));
}

void Server::on_log_tick(evutil_socket_t, short, void* self) {
  static_cast<Server*>(self)->flush_log_summaries(true);
}

// Writes what the log throttles have counted and not reported yet; with
// `only_due`, only once their window is over (at most one summary per window).
void Server::flush_log_summaries(bool only_due) {
  double over = 0;
  if (uint64_t more = accept_error_log_.take_pending(over, only_due))
    log::warn("accept failed ", more, " more times in ", log::tenths(over), "s");
  if (uint64_t more = slow_request_log_.take_pending(over, only_due)) {
    log::info("closed ", more, " more connections whose request did not arrive within the header timeout",
              " in ", log::tenths(over), "s");
  }
  http::flush_log_summaries(only_due);
  if (tunnels_) tunnels_->flush_log_summaries(only_due);
}

void Server::pause_accepting(double seconds) {
  for (auto* l : listeners_) evconnlistener_disable(l);
  timeval tv = to_timeval(seconds);
  evtimer_add(resume_accept_.get(), &tv);
}

void Server::on_resume_accepting(evutil_socket_t, short, void* self) {
  auto* s = static_cast<Server*>(self);
  if (s->draining_ || s->accept_paused_) return;
  for (auto* l : s->listeners_) evconnlistener_enable(l);
}

bool Server::bind_all() {
  for (const auto& spec : config_.listen) {
    sockaddr_storage ss;
    socklen_t len = 0;
    if (auto err = parse_listen(spec, ss, len); !err.empty()) {
      log::error("listen address '", spec, "': ", err);
      return false;
    }
    evconnlistener* l = evconnlistener_new_bind(
        base_.get(), nullptr, nullptr,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, config_.backlog,
        reinterpret_cast<sockaddr*>(&ss), static_cast<int>(len));
    if (!l) {
      log::error("cannot listen on ", spec, ": ", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
      return false;
    }
    if (!evhttp_bind_listener(http_.get(), l)) {
      evconnlistener_free(l);
      log::error("cannot attach listener ", spec);
      return false;
    }
    // The error callback gets the listener's own argument (evhttp's bound socket),
    // not ours, so it finds the server through Server::active_.
    evconnlistener_set_error_cb(l, &Server::on_accept_error);
    listeners_.push_back(l);
    sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    getsockname(evconnlistener_get_fd(l), reinterpret_cast<sockaddr*>(&bound), &blen);
    bound_.push_back(sockaddr_text(reinterpret_cast<sockaddr*>(&bound)));
    const char* scheme = !tls_acceptor_ ? "http" : config_.tls_only ? "https" : "http+https";
    log::info("listening on ", scheme, "://", bound_.back(), "/");
  }
  return true;
}

void Server::write_port_file() {
  if (config_.port_file.empty()) return;
  std::string tmp = config_.port_file + ".tmp";
  {
    std::ofstream f(tmp);
    for (const auto& b : bound_) f << b << "\n";
    if (demo_) f << "demo 127.0.0.1:" << demo_->port() << "\n";
  }
  std::rename(tmp.c_str(), config_.port_file.c_str());  // readers never see half a file
}

int Server::run() {
  std::signal(SIGPIPE, SIG_IGN);
  {
    // With the changelist, epoll_ctl calls for a descriptor are merged until the
    // loop polls: the write interest that evbuffers switch off and on around
    // almost every write costs no syscall (docs/PERFORMANCE.md, finding 2).
    event_config* cfg = event_config_new();
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    base_.reset(event_base_new_with_config(cfg));
    event_config_free(cfg);
  }
  if (!base_) {
    log::error("cannot create event base");
    return 1;
  }
  dns_.reset(evdns_base_new(base_.get(), EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                              EVDNS_BASE_DISABLE_WHEN_INACTIVE));
  if (!dns_) {
    // No resolv.conf: numeric targets and /etc/hosts names still work.
    dns_.reset(evdns_base_new(base_.get(), 0));
  }
  std::string error;
  if (!config_.tls_cert.empty()) {
    tls_context_ = tls::TlsContext::load(config_.tls_cert, config_.tls_key, error);
    if (!tls_context_) {
      log::error(error);
      return 2;
    }
    tls_acceptor_ = std::make_unique<tls::Acceptor>(base_.get(), *tls_context_, config_.tls_only);
    log::info("TLS: ", tls_context_->describe(),
              config_.tls_only ? "; plain HTTP is refused" : "; plain HTTP and TLS share each port");
  }
  target_tls_ = tls::TargetTlsContext::create(config_.target_ca, error);
  if (!target_tls_) {
    log::error(error);
    return 2;
  }
  http_.reset(evhttp_new(base_.get()));
  evhttp_set_max_headers_size(http_.get(), static_cast<ev_ssize_t>(config_.max_header_size));
  evhttp_set_max_body_size(http_.get(), static_cast<ev_ssize_t>(config_.max_body_size));
  timeval idle = to_timeval(config_.http_idle_timeout);
  evhttp_set_timeout_tv(http_.get(), &idle);
  // Every method evhttp knows reaches do_request(), which answers those outside
  // --allowed-methods with 405; evhttp answers methods it does not know with 501.
  evhttp_set_allowed_methods(http_.get(), EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                              EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PUT |
                                              EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH | EVHTTP_REQ_TRACE);
  evhttp_set_flags(http_.get(), EVHTTP_SERVER_LINGERING_CLOSE);
  evhttp_set_gencb(http_.get(), &Server::on_request, this);
  evhttp_set_bevcb(http_.get(), &Server::on_new_connection, this);
  resume_accept_.reset(evtimer_new(base_.get(), &Server::on_resume_accepting, this));

  if (config_.demo) {
    demo_ = std::make_unique<DemoService>(base_.get(), config_.demo_port);
    if (!demo_->ok()) {
      log::error("cannot start the demo service on port ", config_.demo_port);
      return 1;
    }
    log::info("demo line service on 127.0.0.1:", demo_->port(), " (target 'demo')");
  }
  counts_ = std::make_shared<tunnel::SessionCounts>();
  tunnels_ = tunnel::Manager::create(*this, demo_ ? demo_->port() : 0, counts_, error);
  if (!tunnels_) {
    log::error(error);
    return 2;
  }
  mailbox_ = std::make_unique<Mailbox>(base_.get());
  if (!start_workers()) return 1;
  static_site_ = std::make_unique<http::StaticSite>(
      config_.www_dir,
      std::map<std::string, std::string>{{"/netwine.js", config_.js_client_dir + "/netwine.js"}});

  active_ = this;
  if (!bind_all()) return 1;
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    signals_.emplace_back(evsignal_new(base_.get(), sig, &Server::on_signal, this));
    evsignal_add(signals_.back().get(), nullptr);
  }
  write_port_file();
  log_tick_.reset(event_new(base_.get(), -1, EV_PERSIST, &Server::on_log_tick, this));
  timeval second{1, 0};
  evtimer_add(log_tick_.get(), &second);
  event_base_dispatch(base_.get());
  if (workers_) workers_->stop();
  flush_log_summaries(false);
  log::info("stopped");
  return exit_code_;
}

bool Server::start_workers() {
  int loops = config_.threads;
  if (loops == 0) {
    // One per CPU this process may run on (taskset, cpusets), not per CPU the
    // machine has.
    cpu_set_t set;
    CPU_ZERO(&set);
    loops = sched_getaffinity(0, sizeof set, &set) == 0
                ? CPU_COUNT(&set)
                : static_cast<int>(std::thread::hardware_concurrency());
    loops = std::clamp(loops, 1, 64);
  }
  if (loops <= 1) return true;
  placeholder_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (placeholder_ < 0) {
    log::error("cannot create a socket: ", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    return false;
  }
  workers_ = std::make_unique<WorkerPool>(config_, counts_, base_.get(), mailbox_.get());
  std::string error;
  if (!workers_->start(loops - 1, error)) {
    log::error(error);
    return false;
  }
  tunnels_->set_workers(workers_.get());
  log::info(loops, " event-loop threads: binary and base64 WebSockets take turns between them");
  return true;
}

Server* Server::active_ = nullptr;

bool Server::is_tls(evhttp_request* req) const {
  if (!tls_acceptor_) return false;
  evhttp_connection* conn = evhttp_request_get_connection(req);
  bufferevent* bev = conn ? evhttp_connection_get_bufferevent(conn) : nullptr;
  return bev && tls_acceptor_->is_tls(bev);
}

}  // namespace netwine
