#include "server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>

#include "demo_service.hpp"
#include "http/http_util.hpp"
#include "http/static_files.hpp"
#include "log.hpp"
#include "tls.hpp"
#include "tunnel/manager.hpp"

namespace netwine {
namespace {

timeval to_timeval(double seconds) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(seconds);
  tv.tv_usec = static_cast<suseconds_t>((seconds - static_cast<double>(tv.tv_sec)) * 1e6);
  return tv;
}

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

constexpr double kAcceptPauseSeconds = 0.1;  // after EMFILE & co: breathe instead of spinning

}  // namespace

// Guards one accepted connection until its first request has arrived: if the head
// (and body) has not arrived within header-timeout, the socket is shut down, which
// evhttp sees as EOF and frees the connection. The guard holds a reference on the
// bufferevent so the pointer stays valid even if evhttp frees the connection first;
// it tells the two cases apart by evhttp having cleared the callbacks on free.
struct Server::ConnGuard {
  Server* server;
  bufferevent* bev;
  EventPtr timer;
  bool counted = true;  // still counted in open_connections_ by this guard

  static void on_timeout(evutil_socket_t, short, void* arg) {
    auto* g = static_cast<ConnGuard*>(arg);
    bufferevent_data_cb rcb = nullptr;
    bufferevent_getcb(g->bev, &rcb, nullptr, nullptr, nullptr);
    if (rcb) {
      // evhttp still reads: the client has not sent a whole request in time.
      log::info("closing connection ", g->peer(), ": request head not received within the header timeout");
      evutil_socket_t fd = bufferevent_getfd(g->bev);
      if (fd >= 0) shutdown(fd, SHUT_RDWR);
    }
    g->server->guards_done(g);
  }
  std::string peer() const {
    sockaddr_storage ss;
    socklen_t len = sizeof ss;
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd < 0 || getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "-";
    return sockaddr_text(reinterpret_cast<sockaddr*>(&ss));
  }
};

Server::Server(Config config) : config_(std::move(config)) {}

Server::~Server() {
  tunnels_.reset();
  for (auto& [bev, g] : guards_) {
    bufferevent_decref(bev);
  }
  guards_.clear();
  http_.reset();
  demo_.reset();
}

void Server::guards_done(ConnGuard* g) {
  // Called from the guard's own timer or from the request callback; the guard is
  // erased here and its timer freed with it (freeing a non-running or just-fired
  // timer event is safe).
  bufferevent* bev = g->bev;
  auto it = guards_.find(bev);
  if (it == guards_.end()) return;
  bufferevent_data_cb rcb = nullptr;
  bufferevent_getcb(bev, &rcb, nullptr, nullptr, nullptr);
  if (!rcb && g->counted) note_connection_gone();  // died before any request
  guards_.erase(it);
  bufferevent_decref(bev);
}

bufferevent* Server::on_new_connection(event_base*, void* self) {
  return static_cast<Server*>(self)->do_new_connection();
}

bufferevent* Server::do_new_connection() {
  // With TLS configured: a TLS bufferevent (--tls-only) or the plain-or-TLS filter.
  // The guard below works on either: bufferevent_getfd reaches the socket through
  // a filter (libevent 2.1.12 forwards it to the underlying bufferevent).
  bufferevent* bev = tls_acceptor_ ? tls_acceptor_->new_connection()
                                   : bufferevent_socket_new(base_.get(), -1, BEV_OPT_CLOSE_ON_FREE);
  if (!bev) return nullptr;
  ++open_connections_;
  if (open_connections_ >= config_.max_connections && !accept_paused_) {
    log::warn("max-connections (", config_.max_connections, ") reached: accepting paused");
    for (auto* l : listeners_) evconnlistener_disable(l);
    accept_paused_ = true;
  }
  auto g = std::make_unique<ConnGuard>();
  g->server = this;
  g->bev = bev;
  g->timer.reset(evtimer_new(base_.get(), &ConnGuard::on_timeout, g.get()));
  timeval tv = to_timeval(config_.header_timeout);
  evtimer_add(g->timer.get(), &tv);
  bufferevent_incref(bev);
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
  known_connections_.erase(conn);
  note_connection_gone();
  auto it = close_watchers_.find(conn);
  if (it != close_watchers_.end()) {
    auto fn = std::move(it->second);
    close_watchers_.erase(it);
    fn();
  }
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
  if (conn && !known_connections_.count(conn)) {
    // First request on this connection: hand accounting over from the guard to
    // the connection's close callback, which evhttp calls whenever it frees it.
    known_connections_[conn] = true;
    evhttp_connection_set_closecb(conn, &Server::on_connection_close, this);
    if (bufferevent* bev = evhttp_connection_get_bufferevent(conn)) {
      if (auto it = guards_.find(bev); it != guards_.end()) {
        it->second->counted = false;
        guards_done(it->second.get());
      }
    }
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
  // Request smuggling forms evhttp would accept: refuse them and close.
  if (header_count(in, "Content-Length") > 1 ||
      (header_count(in, "Content-Length") && header_count(in, "Transfer-Encoding"))) {
    evhttp_add_header(out, "Connection", "close");
    http::send_text(req, 400, "400 bad request: conflicting Content-Length / Transfer-Encoding\n");
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
  tunnels_->shutdown();
  drain_timer_.reset(evtimer_new(base_.get(), [](evutil_socket_t, short, void* self) {
    static_cast<Server*>(self)->finish_shutdown();
  }, this));
  timeval tv = to_timeval(config_.drain_timeout);
  evtimer_add(drain_timer_.get(), &tv);
  tunnels_->on_drained([this] {
    // Every session has flushed: no need to wait for the drain deadline.
    timeval now{0, 0};
    evtimer_add(drain_timer_.get(), &now);
  });
}

void Server::finish_shutdown() { event_base_loopexit(base_.get(), nullptr); }

void Server::on_accept_error(evconnlistener*, void*) {
  int err = EVUTIL_SOCKET_ERROR();
  if (!active_) return;
  active_->pause_accepting(kAcceptPauseSeconds);
  // Rate-limited by the pause itself: at most one line per pause.
  log::warn("accept failed: ", evutil_socket_error_to_string(err), "; pausing accepting for ",
            kAcceptPauseSeconds, "s");
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
  evhttp_set_allowed_methods(http_.get(), EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                              EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PUT |
                                              EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH);
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
  tunnels_ = tunnel::Manager::create(*this, demo_ ? demo_->port() : 0, error);
  if (!tunnels_) {
    log::error(error);
    return 2;
  }
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
  event_base_dispatch(base_.get());
  log::info("stopped");
  return exit_code_;
}

Server* Server::active_ = nullptr;

bool Server::is_tls(evhttp_request* req) const {
  if (!tls_acceptor_) return false;
  evhttp_connection* conn = evhttp_request_get_connection(req);
  bufferevent* bev = conn ? evhttp_connection_get_bufferevent(conn) : nullptr;
  return bev && tls_acceptor_->is_tls(bev);
}

}  // namespace netwine
