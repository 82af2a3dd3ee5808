// Connecting to a target: resolve with evdns, vet EVERY address against the rules,
// connect to the vetted ones in turn. Vetting after DNS is what closes the DNS-
// rebinding hole: the address checked is the address connected to.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "event_handles.hpp"

namespace netwine::tls {
class TargetTlsContext;
}

namespace netwine::target {

enum class ConnectError {
  None,
  NotAllowed,   // every resolved address was refused by the rules (403)
  Resolve,      // the name did not resolve (502)
  Refused,      // the target refused the connection (502)
  Unreachable,  // network unreachable, reset, ... (502)
  Timeout,      // connect-timeout passed (504)
  TlsFailed,    // tls:// target: the TLS handshake or certificate check failed (502)
};

// HTTP status and error code string of docs/PROTOCOL.md for an error.
int http_status(ConnectError e);
const char* error_code(ConnectError e);

struct ConnectResult {
  ConnectError error = ConnectError::None;
  std::string message;      // for people: what failed and where
  BuffereventPtr bev;       // connected, callbacks cleared, when error == None; for
                            // tls:// an OpenSSL filter over the socket, handshake done
  std::string address;      // the address connected to, "1.2.3.4:80"
};

// Returns nullopt if `addr` may be connected to, else why not.
using Vet = std::function<std::optional<std::string>(const sockaddr* addr)>;
using Done = std::function<void(ConnectResult)>;

class Connector {
 public:
  // Starts connecting. `done` is always called later from the event loop (never
  // from inside start), exactly once, unless the Connector is destroyed first.
  // With `tls`, a TLS handshake follows the TCP connect: the peer's certificate
  // must verify and name `host`; connect-timeout covers both steps.
  static std::unique_ptr<Connector> start(event_base* base, evdns_base* dns, std::string host,
                                          uint16_t port, Vet vet, double timeout_seconds, Done done,
                                          std::shared_ptr<const tls::TargetTlsContext> tls = nullptr);
  ~Connector();
  Connector(const Connector&) = delete;
  Connector& operator=(const Connector&) = delete;

 private:
  Connector() = default;
  static void on_resolved(int result, evutil_addrinfo* res, void* self);
  void do_resolved(int result, evutil_addrinfo* res);
  void try_next();
  static void on_event(bufferevent* bev, short what, void* self);
  void start_tls(const sockaddr* sa);
  static void on_tls_event(bufferevent* bev, short what, void* self);
  void do_tls_event(bufferevent* bev, short what);
  static void on_timeout(evutil_socket_t, short, void* self);
  static void on_finish(evutil_socket_t, short, void* self);
  void finish(ConnectResult r);

  event_base* base_ = nullptr;
  std::string host_;
  uint16_t port_ = 0;
  Vet vet_;
  Done done_;
  std::shared_ptr<const tls::TargetTlsContext> tls_;
  evdns_getaddrinfo_request* dns_req_ = nullptr;
  std::vector<sockaddr_storage> candidates_;
  std::vector<socklen_t> lengths_;
  size_t next_ = 0;
  std::string last_error_;
  ConnectError last_kind_ = ConnectError::Unreachable;
  BuffereventPtr bev_;
  std::vector<BuffereventPtr> dead_;  // failed attempts, freed outside their callbacks
  EventPtr timeout_;
  EventPtr finish_event_;
  std::optional<ConnectResult> result_;
  bool resolving_ = false;
};

std::string sockaddr_to_string(const sockaddr* sa);

}  // namespace netwine::target
