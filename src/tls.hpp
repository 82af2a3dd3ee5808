// TLS: the server's certificate (TlsContext), the bufferevents evhttp's bevcb hands
// out for client connections (Acceptor), and the client side used for tls://
// targets (TargetTlsContext). OpenSSL 3; libevent 2.1.12's bufferevent_openssl.
//
// Client connections, when TLS is configured:
//  plain and TLS share the port: evhttp's bevcb sees neither the fd nor a byte
//  (LIBEVENT-NOTES "TLS"), so it gets a filter bufferevent over the socket one; the
//  filter looks at the first byte the client sends (0x16 = a TLS handshake record)
//  and from then on either passes bytes through untouched or runs OpenSSL on them
//  (tls.cpp, MixedConnection, says how and why writes bypass the socket
//  bufferevent). With --tls-only any other first byte closes the connection. (Not
//  libevent's OpenSSL bufferevent: it reads 4096 bytes per call and its state
//  cannot be taken out to move a connection to a worker thread.)
// Without TLS configured none of this exists and evhttp gets a plain socket
// bufferevent as before.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include <openssl/ssl.h>

#include "event_handles.hpp"

namespace netwine::tls {

template <auto Fn>
struct SslDeleter {
  template <typename T>
  void operator()(T* p) const { if (p) Fn(p); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslDeleter<SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, SslDeleter<SSL_free>>;

// Everything on OpenSSL's error queue for this thread as "reason; reason", and the
// queue emptied. `fallback` when the queue is empty.
std::string take_errors(const char* fallback = "unknown OpenSSL error");

// The server certificate chain and key. Immutable once loaded, except that
// reload() replaces the SSL_CTX used for *new* connections; an SSL made earlier
// holds its own reference to the context it came from, so existing connections
// keep their certificate until they close. Every event loop's Acceptor makes
// SSLs from it: new_ssl() and reload() may run on different threads.
class TlsContext {
 public:
  // Loads `cert_file` (PEM chain, leaf first) and `key_file` (PEM, unencrypted).
  // Null and `error` naming the file and OpenSSL's reason if either is unusable.
  static std::unique_ptr<TlsContext> load(const std::string& cert_file, const std::string& key_file,
                                          std::string& error);

  // Re-reads both files into a fresh context and swaps it in only if it loads.
  // Returns "" or the error (naming the file); on error nothing changes.
  std::string reload();

  // A server-side SSL for one new connection (null if OpenSSL is out of memory).
  SSL* new_ssl() const;

  const std::string& cert_file() const { return cert_file_; }
  // The leaf certificate's subject and expiry, for the log.
  std::string describe() const;

 private:
  TlsContext() = default;
  static SslCtxPtr build(const std::string& cert_file, const std::string& key_file, std::string& error);

  std::string cert_file_, key_file_;
  mutable std::mutex mu_;  // guards ctx_: reload() on the main thread, new_ssl() on every loop
  SslCtxPtr ctx_;
};

class MixedConnection;

// What a shared-port connection hands over when its socket moves to another event
// loop (Acceptor::release(), Acceptor::adopt()).
struct Released {
  SslPtr ssl;       // the TLS session, handshake done; null for a plain connection
  std::string raw;  // read from the socket, not yet through the filter: ciphertext
                    // (TLS) or plaintext that follows the filter's input (plain)
};


// Makes the bufferevent of each accepted client connection (evhttp_set_bevcb) and
// answers whether one speaks TLS. Owns the bookkeeping of the plain-or-TLS
// filters; it must outlive the evhttp that uses it (the filters tell it when they
// are freed).
class Acceptor {
 public:
  Acceptor(event_base* base, const TlsContext& context, bool tls_only);
  ~Acceptor();
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  // The bufferevent for a connection evhttp is about to accept (fd still unset:
  // evhttp sets it). Null on allocation failure.
  bufferevent* new_connection();

  // True if `bev` (one new_connection() made) carries TLS. For a shared-port
  // connection this is known once the client's first byte has arrived, which is
  // always before evhttp has a request to ask about.
  bool is_tls(bufferevent* bev) const;

  // True if `bev` is a shared-port connection that may leave this loop now: it
  // has decided plain or TLS (handshake done), and nothing is queued to send nor
  // held half-sent inside OpenSSL.
  bool can_release(bufferevent* bev) const;
  // Takes the TLS session and unfiltered input of such a connection; from then
  // on its filter passes nothing and sends nothing (the socket is being
  // detached: Front::detach_socket). The filter's own input stays for the caller.
  Released release(bufferevent* bev);
  // The other end of a release() on another loop: the filter for socket `fd` on
  // this Acceptor's loop, carrying on with `r`'s TLS session and unread
  // ciphertext, or plain when `r` has no session. Known to is_tls() and
  // can_release() like the rest. Takes `fd`; null on allocation failure (fd closed).
  bufferevent* adopt(evutil_socket_t fd, Released r);

  // --- for MixedConnection ---
  const TlsContext& context() const { return context_; }
  bool tls_only() const { return tls_only_; }
  event_base* base() const { return base_; }
  void remember(bufferevent* filter, MixedConnection* c) { mixed_[filter] = c; }
  void forget(bufferevent* filter) { mixed_.erase(filter); }

 private:
  event_base* base_;
  const TlsContext& context_;
  bool tls_only_;
  // Shared-port connections alive now, by their filter bufferevent.
  std::unordered_map<bufferevent*, MixedConnection*> mixed_;
};

// The client context for tls:// targets: peers are verified against the system CA
// store plus an optional extra CA file, and against the name the client asked for.
class TargetTlsContext {
 public:
  // `ca_file` may be empty. Null and `error` naming the file if it is unusable.
  static std::shared_ptr<TargetTlsContext> create(const std::string& ca_file, std::string& error);

  // A client SSL for a connection to `host` (a DNS name or an IP literal): SNI for
  // names, and the certificate must match `host`. Null and `error` on failure.
  SslPtr new_ssl(const std::string& host, std::string& error) const;

  // The reason a handshake made with `ssl` failed: the certificate verification
  // result if that failed, else OpenSSL's queued errors (`queued`, already taken).
  static std::string failure_reason(const SSL* ssl, const std::string& queued);

 private:
  TargetTlsContext() = default;
  SslCtxPtr ctx_;
};

}  // namespace netwine::tls
