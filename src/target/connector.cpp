#include "target/connector.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cerrno>
#include <cstring>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "tls.hpp"

namespace netwine::target {
namespace {

// Ciphertext queued for a tls:// target beyond what its socket has taken (see
// start_tls): a few TLS records' worth; the plaintext waits above it.
constexpr size_t kTlsCiphertextQueue = 256 * 1024;

}  // namespace

int http_status(ConnectError e) {
  switch (e) {
    case ConnectError::None: return 200;
    case ConnectError::NotAllowed: return 403;
    case ConnectError::Resolve:
    case ConnectError::Refused:
    case ConnectError::Unreachable: return 502;
    case ConnectError::Timeout: return 504;
    case ConnectError::TlsFailed: return 502;
  }
  return 502;
}

const char* error_code(ConnectError e) {
  switch (e) {
    case ConnectError::None: return "ok";
    case ConnectError::NotAllowed: return "target_not_allowed";
    case ConnectError::Resolve: return "target_unresolvable";
    case ConnectError::Refused: return "target_refused";
    case ConnectError::Unreachable: return "target_unreachable";
    case ConnectError::Timeout: return "connect_timeout";
    case ConnectError::TlsFailed: return "target_tls_failed";
  }
  return "target_unreachable";
}

std::string sockaddr_to_string(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_INET) {
    auto* v4 = reinterpret_cast<const sockaddr_in*>(sa);
    inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(ntohs(v4->sin_port));
  }
  if (sa->sa_family == AF_INET6) {
    auto* v6 = reinterpret_cast<const sockaddr_in6*>(sa);
    inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
    return "[" + std::string(buf) + "]:" + std::to_string(ntohs(v6->sin6_port));
  }
  return "?";
}

std::unique_ptr<Connector> Connector::start(event_base* base, evdns_base* dns, std::string host,
                                            uint16_t port, Vet vet, double timeout_seconds,
                                            Done done, std::shared_ptr<const tls::TargetTlsContext> tls) {
  std::unique_ptr<Connector> c(new Connector());
  c->tls_ = std::move(tls);
  c->base_ = base;
  c->host_ = std::move(host);
  c->port_ = port;
  c->vet_ = std::move(vet);
  c->done_ = std::move(done);
  c->finish_event_.reset(evtimer_new(base, &Connector::on_finish, c.get()));
  c->timeout_.reset(evtimer_new(base, &Connector::on_timeout, c.get()));
  timeval tv;
  tv.tv_sec = static_cast<time_t>(timeout_seconds);
  tv.tv_usec = static_cast<suseconds_t>((timeout_seconds - static_cast<double>(tv.tv_sec)) * 1e6);
  evtimer_add(c->timeout_.get(), &tv);

  evutil_addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
  std::string port_text = std::to_string(port);
  c->resolving_ = true;
  // For numeric hosts and /etc/hosts names the callback runs before this returns
  // (and the call returns NULL); either way completion is reported via finish().
  evdns_getaddrinfo_request* req =
      evdns_getaddrinfo(dns, c->host_.c_str(), port_text.c_str(), &hints, &Connector::on_resolved, c.get());
  if (c->resolving_) c->dns_req_ = req;
  return c;
}

Connector::~Connector() {
  if (dns_req_) {
    // Cancelling runs the callback with EVUTIL_EAI_CANCEL; it must not touch us then.
    evdns_getaddrinfo_request* r = dns_req_;
    dns_req_ = nullptr;
    done_ = nullptr;
    resolving_ = false;
    evdns_getaddrinfo_cancel(r);
  }
}

void Connector::on_resolved(int result, evutil_addrinfo* res, void* self) {
  if (result == EVUTIL_EAI_CANCEL) {
    if (res) evutil_freeaddrinfo(res);
    return;
  }
  static_cast<Connector*>(self)->do_resolved(result, res);
}

void Connector::do_resolved(int result, evutil_addrinfo* res) {
  resolving_ = false;
  dns_req_ = nullptr;
  if (result != 0 || !res) {
    if (res) evutil_freeaddrinfo(res);
    finish({ConnectError::Resolve, "cannot resolve " + host_ + ": " + evutil_gai_strerror(result), nullptr, ""});
    return;
  }
  std::string first_denial;
  for (evutil_addrinfo* ai = res; ai; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    if (auto why = vet_(ai->ai_addr)) {
      if (first_denial.empty()) first_denial = *why;
      continue;
    }
    sockaddr_storage ss{};
    std::memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    candidates_.push_back(ss);
    lengths_.push_back(static_cast<socklen_t>(ai->ai_addrlen));
  }
  evutil_freeaddrinfo(res);
  if (candidates_.empty()) {
    finish({ConnectError::NotAllowed,
            first_denial.empty() ? "no usable address for " + host_ : first_denial, nullptr, ""});
    return;
  }
  try_next();
}

void Connector::try_next() {
  if (next_ >= candidates_.size()) {
    finish({last_kind_, last_error_, nullptr, ""});
    return;
  }
  const auto* sa = reinterpret_cast<const sockaddr*>(&candidates_[next_]);
  socklen_t len = lengths_[next_];
  ++next_;
  bev_.reset(bufferevent_socket_new(base_, -1, BEV_OPT_CLOSE_ON_FREE));
  bufferevent_setcb(bev_.get(), nullptr, nullptr, &Connector::on_event, this);
  if (bufferevent_socket_connect(bev_.get(), const_cast<sockaddr*>(sa), static_cast<int>(len)) != 0) {
    last_error_ = "cannot connect to " + sockaddr_to_string(sa) + ": " +
                  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR());
    last_kind_ = ConnectError::Unreachable;
    bev_.reset();
    try_next();
  }
}

void Connector::on_event(bufferevent* bev, short what, void* self) {
  auto* c = static_cast<Connector*>(self);
  const auto* sa = reinterpret_cast<const sockaddr*>(&c->candidates_[c->next_ - 1]);
  if (what & BEV_EVENT_CONNECTED) {
    int one = 1;
    setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    bufferevent_setcb(bev, nullptr, nullptr, nullptr, nullptr);
    if (c->tls_) {
      c->start_tls(sa);
      return;
    }
    ConnectResult r{ConnectError::None, "", std::move(c->bev_), sockaddr_to_string(sa)};
    c->finish(std::move(r));
    return;
  }
  int err = EVUTIL_SOCKET_ERROR();
  c->last_kind_ = err == ECONNREFUSED ? ConnectError::Refused : ConnectError::Unreachable;
  c->last_error_ = (err == ECONNREFUSED ? "target refused the connection: " : "cannot reach target: ") +
                   sockaddr_to_string(sa) + " (" + evutil_socket_error_to_string(err) + ")";
  // The failed bufferevent is freed from a later event: we are inside its callback.
  bufferevent_setcb(bev, nullptr, nullptr, nullptr, nullptr);
  bufferevent_disable(bev, EV_READ | EV_WRITE);
  c->dead_.push_back(std::move(c->bev_));
  c->try_next();
}

// The TCP connection to `sa` is up: wrap it in an OpenSSL filter and shake hands.
// We are inside the socket bufferevent's callback; the filter takes its callbacks
// over, and (BEV_OPT_CLOSE_ON_FREE) owns it from here on.
void Connector::start_tls(const sockaddr* sa) {
  std::string error;
  tls::SslPtr ssl = tls_->new_ssl(host_, error);
  bufferevent* tcp = bev_.get();
  bufferevent* sbev = ssl ? bufferevent_openssl_filter_new(base_, tcp, ssl.get(), BUFFEREVENT_SSL_CONNECTING,
                                                            BEV_OPT_CLOSE_ON_FREE)
                          : nullptr;
  if (!sbev) {
    if (ssl) ssl.release();  // libevent freed it on failure (BEV_OPT_CLOSE_ON_FREE)
    if (error.empty()) error = "cannot set up TLS: " + tls::take_errors();
    bufferevent_disable(tcp, EV_READ | EV_WRITE);
    dead_.push_back(std::move(bev_));
    finish({ConnectError::TlsFailed, "TLS with " + host_ + " (" + sockaddr_to_string(sa) + "): " + error,
            nullptr, ""});
    return;
  }
  ssl.release();
  bev_.release();
  bev_.reset(sbev);
  // Servers often close without close_notify once they are done: an EOF, not an error.
  bufferevent_openssl_set_allow_dirty_shutdown(sbev, 1);
  // The filter encrypts everything in its output into the TCP bufferevent's output
  // unless that has a write high-watermark: without one, a target that stops
  // reading would leave the filter's output empty, so the session's back-pressure
  // (which looks there) would never engage and the ciphertext would grow without
  // bound. With it, plaintext waits in the filter's output, where it is counted.
  bufferevent_setwatermark(tcp, EV_WRITE, 0, kTlsCiphertextQueue);
  bufferevent_setcb(sbev, nullptr, nullptr, &Connector::on_tls_event, this);
  bufferevent_enable(sbev, EV_READ | EV_WRITE);
}

void Connector::on_tls_event(bufferevent* bev, short what, void* self) {
  static_cast<Connector*>(self)->do_tls_event(bev, what);
}

void Connector::do_tls_event(bufferevent* bev, short what) {
  const auto* sa = reinterpret_cast<const sockaddr*>(&candidates_[next_ - 1]);
  if (what & BEV_EVENT_CONNECTED) {
    bufferevent_setcb(bev, nullptr, nullptr, nullptr, nullptr);
    bufferevent_disable(bev, EV_READ | EV_WRITE);  // the session enables what it wants
    finish({ConnectError::None, "", std::move(bev_), sockaddr_to_string(sa)});
    return;
  }
  std::string queued;
  while (unsigned long e = bufferevent_get_openssl_error(bev)) {
    const char* reason = ERR_reason_error_string(e);
    std::string text = reason ? reason : "error " + std::to_string(e);
    if (queued.find(text) == std::string::npos) queued += (queued.empty() ? "" : "; ") + text;
  }
  std::string reason;
  if (queued.empty() && (what & BEV_EVENT_EOF))
    reason = "the target closed the connection during the handshake (is it speaking TLS?)";
  else if (queued.empty() && EVUTIL_SOCKET_ERROR())
    reason = evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR());
  reason = tls::TargetTlsContext::failure_reason(bufferevent_openssl_get_ssl(bev), queued.empty() ? reason : queued);
  // The failed bufferevent is freed from a later event: we are inside its callback.
  bufferevent_setcb(bev, nullptr, nullptr, nullptr, nullptr);
  bufferevent_disable(bev, EV_READ | EV_WRITE);
  dead_.push_back(std::move(bev_));
  finish({ConnectError::TlsFailed,
          "TLS handshake with " + host_ + " (" + sockaddr_to_string(sa) + ") failed: " + reason, nullptr, ""});
}

void Connector::on_timeout(evutil_socket_t, short, void* self) {
  auto* c = static_cast<Connector*>(self);
  c->finish({ConnectError::Timeout, "connecting to " + c->host_ + ":" + std::to_string(c->port_) +
                                        " timed out", nullptr, ""});
}

void Connector::finish(ConnectResult r) {
  if (result_) return;
  if (dns_req_) {
    evdns_getaddrinfo_request* req = dns_req_;
    dns_req_ = nullptr;
    resolving_ = false;
    evdns_getaddrinfo_cancel(req);
  }
  evtimer_del(timeout_.get());
  if (r.error != ConnectError::None) bev_.reset();
  result_ = std::move(r);
  timeval now{0, 0};
  evtimer_add(finish_event_.get(), &now);
}

void Connector::on_finish(evutil_socket_t, short, void* self) {
  auto* c = static_cast<Connector*>(self);
  c->dead_.clear();
  if (!c->done_) return;
  Done done = std::move(c->done_);
  c->done_ = nullptr;
  // `done` may destroy this Connector: touch nothing after the call.
  done(std::move(*c->result_));
}

}  // namespace netwine::target
