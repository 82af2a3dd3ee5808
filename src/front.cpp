#include "front.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <utility>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>
#include <event2/http_struct.h>
#include <event2/listener.h>

#include "http/http_util.hpp"
#include "sockio.hpp"
#include "tls.hpp"
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
  // Appended piece by piece: GCC 12 at -O2 and above takes "[" + std::string
  // for an overlapping memcpy (a -Wrestrict false positive).
  std::string out = "[";
  out += buf;
  out += "]:";
  out += std::to_string(ntohs(v6->sin6_port));
  return out;
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
struct Front::ConnGuard {
  Front* front = nullptr;
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
    return rcb && rcb == front->evhttp_read_cb_ && (bufferevent_get_enabled(bev) & EV_READ);
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
      g->arm(g->front->config_.header_timeout);
      g->window_start -= info->n_added;
    }
  }

  static void on_timer(evutil_socket_t, short, void* arg) {
    auto* g = static_cast<ConnGuard*>(arg);
    if (!g->adopted) {
      g->front->adopt(g, nullptr);  // may destroy g
      return;
    }
    g->armed = false;
    if (!g->evhttp_reading()) return;  // the request arrived, or the connection is upgraded
    double window = g->front->config_.header_timeout;
    if (g->bytes_in - g->window_start >= static_cast<uint64_t>(kMinRequestRate * window) &&
        g->bytes_in > g->window_start) {
      g->arm(window);  // slow but steady: a large body over a slow link
      return;
    }
    uint64_t more = 0;
    double over = 0;
    if (g->front->slow_request_log_.allow(more, over))
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

Front::Front(const Config& config, event_base* base, tls::Acceptor* tls, evutil_socket_t placeholder,
             Mailbox* mailbox, FrontGroup& group, size_t loop)
    : config_(config),
      base_(base),
      tls_(tls),
      placeholder_(placeholder),
      mailbox_(mailbox),
      group_(group),
      loop_(loop),
      accept_error_log_(kFloodLogWindowSeconds, 1),
      slow_request_log_(kFloodLogWindowSeconds, kFloodLogBurst) {
  for (const auto& m : config_.allowed_methods) allow_header_ += (allow_header_.empty() ? "" : ", ") + m;
  http_.reset(evhttp_new(base_));
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
  evhttp_set_gencb(http_.get(), &Front::on_request, this);
  evhttp_set_bevcb(http_.get(), &Front::on_new_connection, this);
  resume_accept_.reset(evtimer_new(base_, &Front::on_resume_accepting, this));
  find_evhttp_accept();
}

Front::~Front() {
  listeners_.clear();
  guards_.clear();  // before evhttp_free, whose close callbacks then find no guard
  http_.reset();
}

void Front::on_probe_error(evconnlistener*, void*) {}

// libevent 2.1 has no public call that gives evhttp a socket someone else
// accepted (evhttp_get_request() is internal). evhttp_bind_listener() sets the
// listener's callback to evhttp's own accept function with the evhttp as its
// argument; the listener keeps both in its struct, which starts (listener.c)
//   { ops, lock, cb, errorcb, user_data, ... }
// So a listener that never listens (a socket without listen(), disabled) is
// bound, and the callback read off it: only if the slots around it hold what
// is known to be there (our error callback, then this evhttp), so another
// layout is detected, not guessed at; ready() is false then.
void Front::find_evhttp_accept() {
  evutil_socket_t s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) return;
  evconnlistener* l = evconnlistener_new(base_, nullptr, nullptr, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_DISABLED, 0, s);
  if (!l) {
    close(s);
    return;
  }
  evconnlistener_set_error_cb(l, &Front::on_probe_error);
  if (!evhttp_bind_listener(http_.get(), l)) {
    evconnlistener_free(l);
    return;
  }
  probe_ = l;  // evhttp_free() frees it
  void* slots[5];
  std::memcpy(slots, static_cast<void*>(l), sizeof slots);
  evconnlistener_errorcb ours = &Front::on_probe_error;
  void* ours_as_slot = nullptr;
  std::memcpy(&ours_as_slot, &ours, sizeof ours_as_slot);
  if (slots[3] != ours_as_slot || slots[4] != http_.get() || !slots[2]) return;
  std::memcpy(&accept_cb_, &slots[2], sizeof accept_cb_);
}

bool Front::listen(const std::string& spec, std::string& bound, std::string& error) {
  sockaddr_storage ss;
  socklen_t len = 0;
  if (auto err = parse_listen(spec, ss, len); !err.empty()) {
    error = "listen address '" + spec + "': " + err;
    return false;
  }
  evconnlistener* l = evconnlistener_new_bind(base_, &Front::on_accept, this,
                                              LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                              config_.backlog, reinterpret_cast<sockaddr*>(&ss),
                                              static_cast<int>(len));
  if (!l) {
    error = "cannot listen on " + spec + ": " + evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR());
    return false;
  }
  evconnlistener_set_error_cb(l, &Front::on_accept_error);
  listeners_.emplace_back(l);
  sockaddr_storage got;
  socklen_t glen = sizeof got;
  getsockname(evconnlistener_get_fd(l), reinterpret_cast<sockaddr*>(&got), &glen);
  bound = sockaddr_text(reinterpret_cast<sockaddr*>(&got));
  return true;
}

void Front::on_accept(evconnlistener*, evutil_socket_t fd, sockaddr*, int, void* arg) {
  auto* self = static_cast<Front*>(arg);
  FrontGroup& g = self->group_;
  uint64_t open = g.open.fetch_add(1, std::memory_order_relaxed) + 1;
  if (open >= self->config_.max_connections && !self->accept_paused_) {
    log::warn("max-connections (", self->config_.max_connections, ") reached: accepting paused");
    for (auto& l : self->listeners_) evconnlistener_disable(l.get());
    self->accept_paused_ = true;
  }
  size_t to = g.spread ? g.turn.fetch_add(1, std::memory_order_relaxed) % g.loops.size() : self->loop_;
  if (to == self->loop_) self->take_socket(fd, {});
  else g.loops[to]->post_socket(fd, {});  // (a TLS handshake, too, happens there)
}

void Front::take_socket(evutil_socket_t fd, Arrival arrival) {
  sockaddr_storage peer;
  socklen_t len = sizeof peer;
  if (!accept_cb_ || getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) {
    evutil_closesocket(fd);  // not connected any more (reset while on its way)
    note_connection_gone();
    return;
  }
  if (arrival.moved && tls_) {
    // Its filter carries on where the other loop's stopped (plain or TLS).
    adopted_ = tls_->adopt(fd, arrival.tls ? std::move(*arrival.tls) : tls::Released{});
    if (!adopted_) {  // out of memory; the socket is closed
      note_connection_gone();
      return;
    }
  }
  prefill_ = std::move(arrival.prefill);
  taking_ = true;
  accept_cb_(probe_, fd, reinterpret_cast<sockaddr*>(&peer), static_cast<int>(len), http_.get());
  if (taking_) {  // evhttp made no connection (out of memory): it closed the socket
    taking_ = false;
    prefill_.clear();
    if (bufferevent* unused = std::exchange(adopted_, nullptr)) {
      bufferevent_setfd(unused, -1);  // evhttp closed the socket already
      bufferevent_free(unused);
    }
    note_connection_gone();
  }
}

void Front::post_socket(evutil_socket_t fd, Arrival arrival) {
  bool sent = mailbox_->post([this, fd, arrival = std::move(arrival)]() mutable { take_socket(fd, std::move(arrival)); });
  if (!sent) {  // that loop is stopping: so is the process
    evutil_closesocket(fd);
    note_connection_gone();
  }
}

namespace {

// `req` as it came from the client (evhttp has parsed and removed it from the
// connection's input): request line, header fields, body. Expect is left out:
// the first loop has already answered it.
std::string raw_request(evhttp_request* req) {
  std::string out = http::method_name(evhttp_request_get_command(req));
  out += ' ';
  out += evhttp_request_get_uri(req);
  out += " HTTP/" + std::to_string(req->major) + "." + std::to_string(req->minor) + "\r\n";
  evkeyvalq* in = evhttp_request_get_input_headers(req);
  for (evkeyval* kv = in->tqh_first; kv; kv = kv->next.tqe_next) {
    if (evutil_ascii_strcasecmp(kv->key, "Expect") == 0) continue;
    out += kv->key;
    out += ": ";
    out += kv->value;
    out += "\r\n";
  }
  out += "\r\n";
  evbuffer* body = evhttp_request_get_input_buffer(req);
  size_t n = evbuffer_get_length(body);
  size_t at = out.size();
  out.resize(at + n);
  if (n) evbuffer_copyout(body, out.data() + at, n);
  return out;
}

}  // namespace

bool Front::move_request(evhttp_request* req, size_t to) {
  evhttp_connection* conn = evhttp_request_get_connection(req);
  if (!group_.spread || to >= group_.loops.size() || to == loop_ || !conn || !can_detach(conn)) return false;
  std::string head = raw_request(req);
  http::forget_request(req);  // logged where it is answered
  Front* dest = group_.loops[to];
  detach_socket(conn, [dest, head = std::move(head)](evutil_socket_t fd, std::string pending, CarriedTls tls) {
    if (fd < 0) return;  // the connection closed first
    dest->post_socket(fd, Arrival{true, head + pending, std::move(tls)});
  });
  return true;
}

void Front::stop_accepting() {
  stopped_ = true;
  for (auto& l : listeners_) evconnlistener_disable(l.get());
}

void Front::flush_log_summaries(bool only_due) {
  double over = 0;
  if (uint64_t more = accept_error_log_.take_pending(over, only_due))
    log::warn("accept failed ", more, " more times in ", log::tenths(over), "s");
  if (uint64_t more = slow_request_log_.take_pending(over, only_due)) {
    log::info("closed ", more, " more connections whose request did not arrive within the header timeout",
              " in ", log::tenths(over), "s");
  }
}

bool Front::is_tls(evhttp_request* req) const {
  if (!tls_) return false;
  evhttp_connection* conn = evhttp_request_get_connection(req);
  bufferevent* bev = conn ? evhttp_connection_get_bufferevent(conn) : nullptr;
  return bev && tls_->is_tls(bev);
}

void Front::on_request(evhttp_request* req, void* self) { static_cast<Front*>(self)->do_request(req); }

bool Front::method_allowed(evhttp_cmd_type t) const {
  const std::string_view name = http::method_name(t);
  for (const auto& m : config_.allowed_methods)
    if (m == name) return true;
  return false;
}

void Front::adopt(ConnGuard* g, evhttp_connection* conn) {
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
  evhttp_connection_set_closecb(conn, &Front::on_connection_close, this);
  // The first request's deadline (adoption follows the accept at once).
  g->disarm();
  g->arm(config_.header_timeout);
}

bufferevent* Front::on_new_connection(event_base*, void* self) {
  return static_cast<Front*>(self)->do_new_connection();
}

bufferevent* Front::do_new_connection() {
  // With TLS configured: the plain-or-TLS filter (TLS only with --tls-only).
  // The guard below works on either: bufferevent_getfd reaches the socket through
  // a filter (libevent 2.1.12 forwards it to the underlying bufferevent).
  bufferevent* bev = std::exchange(adopted_, nullptr);
  if (!bev) bev = tls_ ? tls_->new_connection() : bufferevent_socket_new(base_, -1, BEV_OPT_CLOSE_ON_FREE);
  if (!bev) return nullptr;
  // Stream and poll answers go out in writes of up to 1 MiB (libevent's default is
  // 16 KiB). Plain sockets only: a larger single write on libevent 2.1.12's OpenSSL
  // bufferevent corrupted streams over TLS (test_tls.py caught it).
  if (!tls_) bufferevent_set_max_single_write(bev, kMaxSingleWrite);
  if (taking_ && !prefill_.empty()) {
    // A request moved from another loop (move_request()): evhttp reads it first.
    // A socket bufferevent without its socket yet keeps its input frozen (evhttp
    // sets the socket next, which unfreezes it anyway).
    evbuffer* in = bufferevent_get_input(bev);
    evbuffer_unfreeze(in, 0);
    evbuffer_add(in, prefill_.data(), prefill_.size());
    prefill_.clear();
  }
  taking_ = false;  // made: take_socket() need not count it as lost
  bufferevent_incref(bev);
  auto g = std::make_unique<ConnGuard>();
  g->front = this;
  g->bev = bev;
  g->timer.reset(evtimer_new(base_, &ConnGuard::on_timer, g.get()));
  g->input_cb = evbuffer_add_cb(bufferevent_get_input(bev), &ConnGuard::on_input, g.get());
  evtimer_add(g->timer.get(), &kZeroTimeval);  // adopt evhttp's connection once it exists
  guards_[bev] = std::move(g);
  return bev;
}

void Front::note_connection_gone() {
  uint64_t before = group_.open.fetch_sub(1, std::memory_order_relaxed);
  // At the limit, the main loop stopped accepting: tell it a place is free.
  if (before >= config_.max_connections) {
    Front* main = group_.loops[0];
    if (main == this) main->resume_accepting();
    else main->mailbox_->post([main] { main->resume_accepting(); });
  }
}

void Front::on_connection_close(evhttp_connection* conn, void* self) {
  static_cast<Front*>(self)->do_connection_close(conn);
}

void Front::do_connection_close(evhttp_connection* conn) {
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

// A second descriptor for `fd`, close-on-exec: the number a moving socket goes
// on under (Front::detach_socket()). A function of its own so that
// tools/tsan.supp can name it: the new number may be one another loop closed a
// moment ago and still names in a pending epoll deletion (libevent's changelist),
// which ThreadSanitizer, tracking descriptors by number, reports.
[[gnu::noinline]] evutil_socket_t renumber_socket(evutil_socket_t fd) {
  evutil_socket_t copy = dup(fd);
  if (copy >= 0) fcntl(copy, F_SETFD, FD_CLOEXEC);
  return copy;
}

// A socket being taken from evhttp (Front::detach_socket()).
struct Detach {
  Front* front;
  evhttp_connection* conn;  // null once evhttp freed it first
  evutil_socket_t fd;
  std::string pending;
  Front::CarriedTls tls;
  std::function<void(evutil_socket_t, std::string, Front::CarriedTls)> then;
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
bool Front::can_detach(evhttp_connection* conn) const {
  bufferevent* bev = conn ? evhttp_connection_get_bufferevent(conn) : nullptr;
  if (!bev) return false;
  return tls_ ? tls_->can_release(bev) : sockio::plain_socket(bev);
}

void Front::detach_socket(evhttp_connection* conn,
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
  if (bufferevent* under = bufferevent_get_underlying(bev); under && tls_) {
    tls::Released r = tls_->release(bev);
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
  job->timer.reset(evtimer_new(base_, [](evutil_socket_t, short, void* arg) {
    std::unique_ptr<Detach> job(static_cast<Detach*>(arg));
    Front& self = *job->front;
    if (!job->conn) {  // already shut down and counted as closed by evhttp
      if (job->fd >= 0) close(job->fd);
      job->then(-1, {}, nullptr);
      return;
    }
    self.unwatch_close(job->conn);
    evutil_socket_t mine = job->fd >= 0 ? renumber_socket(job->fd) : -1;
    if (mine >= 0 && dup3(self.placeholder_, job->fd, O_CLOEXEC) < 0) {
      close(mine);
      mine = -1;
    }
    if (mine >= 0) self.group_.open.fetch_add(1, std::memory_order_relaxed);  // it lives on elsewhere
    evhttp_connection_free(job->conn);  // counts one connection gone
    if (job->fd >= 0) close(job->fd);    // the placeholder copy, or the socket itself on failure
    job->then(mine, std::move(job->pending), std::move(job->tls));
  }, job));
  evtimer_add(job->timer.get(), &kZeroTimeval);
}

void Front::watch_close(evhttp_connection* conn, std::function<void()> fn) {
  close_watchers_[conn] = std::move(fn);
}

void Front::unwatch_close(evhttp_connection* conn) { close_watchers_.erase(conn); }

void Front::do_request(evhttp_request* req) {
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
  route_(req);
}

void Front::on_accept_error(evconnlistener*, void* arg) {
  int err = EVUTIL_SOCKET_ERROR();
  auto* self = static_cast<Front*>(arg);
  self->pause_accepting(kAcceptPauseSeconds);
  // Out of descriptors, this repeats after every pause: one line per log window.
  uint64_t more = 0;
  double over = 0;
  if (self->accept_error_log_.allow(more, over))
    log::warn("accept failed: ", evutil_socket_error_to_string(err), "; pausing accepting for ",
              kAcceptPauseSeconds, "s at a time until it works", log::held_back_note(more, over, "times"));
}

void Front::pause_accepting(double seconds) {
  for (auto& l : listeners_) evconnlistener_disable(l.get());
  timeval tv = to_timeval(seconds);
  evtimer_add(resume_accept_.get(), &tv);
}

void Front::on_resume_accepting(evutil_socket_t, short, void* self) {
  auto* s = static_cast<Front*>(self);
  if (s->stopped_ || s->accept_paused_) return;
  for (auto& l : s->listeners_) evconnlistener_enable(l.get());
}

// A connection closed: if accepting was paused at max-connections, go on once
// there is room (and no accept error pause is running).
void Front::resume_accepting() {
  if (!accept_paused_ || stopped_ || group_.open.load(std::memory_order_relaxed) >= config_.max_connections) return;
  accept_paused_ = false;
  if (evtimer_pending(resume_accept_.get(), nullptr)) return;
  for (auto& l : listeners_) evconnlistener_enable(l.get());
}


}  // namespace netwine
