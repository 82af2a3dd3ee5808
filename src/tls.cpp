#include "tls.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <unordered_set>
#include <utility>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "log.hpp"
#include "sockio.hpp"

namespace netwine::tls {
namespace {

// TLS 1.2 suites of Mozilla's "intermediate" profile: forward-secret AEAD only.
// TLS 1.3 suites are OpenSSL's defaults, which are all fine.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384";

constexpr unsigned char kTlsHandshakeRecord = 0x16;  // content type of a ClientHello record
// Largest plaintext of one TLS record (RFC 8446 5.1): what one SSL_write packs.
constexpr size_t kTlsRecordPayload = 16384;
// The socket bufferevent under a shared-port filter reads at most about this much
// ahead of the filter. The filter's own read watermark (the tunnel code sets one
// while a response is held) only bounds the filter's buffer; without this cap the
// socket side would keep reading however much the client sends.
constexpr size_t kUnderlyingReadCap = 256 * 1024;
// What one filter pass reads past the socket bufferevent's 4096 bytes (plaintext
// or ciphertext): as much as the socket side may hold.
constexpr size_t kTopUpBudget = kUnderlyingReadCap;
// One kick writes at most this much before letting other connections run.
constexpr size_t kMaxWritePerKick = 4 * 1024 * 1024;

std::string error_text(unsigned long e) {
  if (const char* reason = ERR_reason_error_string(e)) return reason;
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// Refuses to ask for a passphrase: an encrypted key must fail to load instead of
// blocking start-up (or a SIGHUP reload) on a terminal prompt.
int no_passphrase(char*, int, int, void*) { return 0; }

// ALPN: take http/1.1 when the client offers it; without it go on without ALPN
// rather than failing the handshake (clients that offer only h2 still fall back).
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
  static const unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kHttp11, sizeof kHttp11, in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

// "" if `path` can be opened for reading, else why not ("No such file or directory").
std::string unreadable(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return std::strerror(errno);
  std::fclose(f);
  return {};
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

std::string take_errors(const char* fallback) {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    std::string reason = error_text(e);
    if (out.find(reason) != std::string::npos) continue;  // OpenSSL often repeats itself
    if (!out.empty()) out += "; ";
    out += reason;
  }
  return out.empty() ? fallback : out;
}

// ------------------------------------------------------------------ TlsContext

SslCtxPtr TlsContext::build(const std::string& cert_file, const std::string& key_file,
                            std::string& error) {
  ERR_clear_error();
  if (auto why = unreadable(cert_file); !why.empty()) {
    error = "tls-cert " + cert_file + ": cannot read: " + why;
    return nullptr;
  }
  if (auto why = unreadable(key_file); !why.empty()) {
    error = "tls-key " + key_file + ": cannot read: " + why;
    return nullptr;
  }
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) {
    error = "cannot create a TLS context: " + take_errors();
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                     SSL_OP_NO_RENEGOTIATION);
  // RELEASE_BUFFERS: an idle connection holds no 16 KiB record buffers (thousands
  // of idle keep-alive connections). The other two let the shared-port filter
  // write from whatever evbuffer chain comes first.
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (SSL_CTX_set_cipher_list(ctx.get(), kTls12Ciphers) != 1) {
    error = "cannot set the TLS 1.2 cipher list: " + take_errors();
    return nullptr;
  }
  SSL_CTX_set_default_passwd_cb(ctx.get(), &no_passphrase);
  SSL_CTX_set_alpn_select_cb(ctx.get(), &select_alpn, nullptr);
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert_file.c_str()) != 1) {
    error = "tls-cert " + cert_file + ": cannot load the certificate chain: " + take_errors();
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    error = "tls-key " + key_file + ": cannot load the private key (PEM, unencrypted): " + take_errors();
    return nullptr;
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) {
    error = "tls-key " + key_file + " does not belong to the certificate in " + cert_file + ": " +
            take_errors();
    return nullptr;
  }
  return ctx;
}

std::unique_ptr<TlsContext> TlsContext::load(const std::string& cert_file, const std::string& key_file,
                                             std::string& error) {
  std::unique_ptr<TlsContext> t(new TlsContext());
  t->cert_file_ = cert_file;
  t->key_file_ = key_file;
  t->ctx_ = build(cert_file, key_file, error);
  if (!t->ctx_) return nullptr;
  return t;
}

SSL* TlsContext::new_ssl() const {
  std::lock_guard lock(mu_);
  return SSL_new(ctx_.get());
}

std::string TlsContext::reload() {
  std::string error;
  SslCtxPtr fresh = build(cert_file_, key_file_, error);
  if (!fresh) return error;
  // The old context is freed once the last SSL made from it (an open connection)
  // is: SSL_new took a reference.
  std::lock_guard lock(mu_);
  ctx_ = std::move(fresh);
  return {};
}

std::string TlsContext::describe() const {
  std::lock_guard lock(mu_);
  X509* cert = SSL_CTX_get0_certificate(ctx_.get());
  if (!cert) return "no certificate";
  char subject[256] = "?";
  X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
  std::string out = "certificate " + std::string(subject) + " from " + cert_file_;
  const ASN1_TIME* not_after = X509_get0_notAfter(cert);
  if (BIO* mem = BIO_new(BIO_s_mem())) {
    if (ASN1_TIME_print(mem, not_after) == 1) {
      char* data = nullptr;
      long len = BIO_get_mem_data(mem, &data);
      out += ", valid until " + std::string(data, static_cast<size_t>(len));
    }
    BIO_free(mem);
  }
  if (X509_cmp_current_time(not_after) < 0) out += " (EXPIRED)";
  return out;
}

// ------------------------------------------------------- the shared-port filter

// One shared-port client connection: a bufferevent_filter over a socket
// bufferevent. evhttp owns the filter; the filter owns this object (freed by the
// filter's free_context callback) and, with BEV_OPT_CLOSE_ON_FREE, the socket
// bufferevent.
//
// Reading goes the usual filter way: the socket bufferevent reads, the input
// filter passes the bytes through or decrypts them into the filter's input.
//
// Writing does not: the filter's output buffer is written straight to the socket
// (plain: writev; TLS: SSL_write through a BIO that send()s), and bytes stay in
// it until the kernel has taken them. evhttp looks at that buffer itself: after
// the last chunk of a close-delimited response it frees the connection as soon
// as the buffer is empty (evhttp_send_reply_end), so an output filter that moved
// bytes on to the socket bufferevent lost them (the second fix of LIBEVENT-NOTES
// "TLS", reporting "written" late, does not cover that path). Writes happen from
// a zero-timeout "kick" event, as a socket bufferevent's do from its write event:
// everything a callback queued goes out in one writev (or in full-size records),
// and evhttp's write callback never runs from inside its own evbuffer_add. The
// kick also covers the first fix of the NOTES: evhttp queues a response before it
// enables writing, and enabling does not look at the queue.
//
// Reading is the filter way with one shortcut: the socket bufferevent reads at
// most 4096 bytes per read event (LIBEVENT-NOTES "Speed"), so when it read that
// much the filter takes what else the kernel holds itself, up to kTopUpBudget
// (plain: into the filter's input; TLS: ciphertext into the socket side's input,
// for SSL_read), as the plain socket path does (sockio.hpp). A WebSocket on a
// shared port then costs a filter pass per 256 KiB instead of per 4 KiB.
//
// And one more of the filter's gaps: it filters input only when the socket side
// reads, so bytes held back by the filter's read high-watermark would wait for
// the client's next packet; a callback on the filter's input kicks them through
// when evhttp drains it.
class MixedConnection {
 public:
  enum class Mode {
    Sniffing,  // nothing received yet: the first byte decides between the two below
    Plain,     // plain HTTP: input chains move through, output is written as is
    Tls,       // OpenSSL decrypts the socket side's input and send()s records
    Failed,    // a TLS or socket error: input is discarded, evhttp gets an error event
    Released,  // the socket moved to another loop (release()): nothing passes any more
  };

  // Makes the filter (registered with `owner`), or null.
  static bufferevent* create(Acceptor& owner);
  // Makes the filter for a connection released on another loop (Acceptor::adopt()).
  static bufferevent* adopt(Acceptor& owner, evutil_socket_t fd, Released r);

  bool can_release() const;
  Released release();

  bool is_tls() const { return mode_ == Mode::Tls; }
  evbuffer* under_input() const { return bufferevent_get_input(under_); }
  evutil_socket_t fd() const { return bufferevent_getfd(under_); }
  // The Acceptor is going away (server shutdown; evhttp is already freed): the
  // filter may still be finalized later, from event_base_free, so drop what
  // points back at the Acceptor or needs the event loop.
  void orphan() {
    owner_ = nullptr;
    base_ = nullptr;
    kick_.reset();
    writable_.reset();
  }

 private:
  enum Kick : unsigned {
    kRead = 1,      // unfiltered input is waiting and evhttp drained its buffer
    kWrite = 2,     // output was queued
    kWritable = 4,  // the socket can take more
    kEof = 8,       // the client sent close_notify
    kFail = 16,     // report the failure to evhttp
  };

  MixedConnection(Acceptor* owner, event_base* base, bufferevent* under);
  bufferevent* make_filter();
  ~MixedConnection();

  static bufferevent_filter_result on_filter_in(evbuffer* src, evbuffer* dst, ev_ssize_t lim,
                                                bufferevent_flush_mode mode, void* self);
  static bufferevent_filter_result on_filter_out(evbuffer* src, evbuffer* dst, ev_ssize_t lim,
                                                 bufferevent_flush_mode mode, void* self);
  static void on_free(void* self);
  static void on_filter_output(evbuffer*, const evbuffer_cb_info* info, void* self);
  static void on_filter_input(evbuffer*, const evbuffer_cb_info* info, void* self);
  static void on_kick(evutil_socket_t, short, void* self);
  static void on_writable(evutil_socket_t, short, void* self);

  bufferevent_filter_result do_filter_in(evbuffer* src, evbuffer* dst, size_t budget, bool may_read);
  size_t top_up(evbuffer* into, size_t fresh, size_t budget);
  bufferevent_filter_result tls_in(evbuffer* dst, size_t budget);
  void start_tls();
  void do_kick(unsigned what);
  void kick_read();
  void flush_output();
  bool write_plain(evbuffer* out);
  bool write_tls(evbuffer* out);
  void wait_writable();
  void fail(const std::string& reason);
  void schedule(unsigned what);
  bool unfiltered_input() const;
  bool freed() const;
  std::string peer() const;

  Acceptor* owner_;               // null once orphaned
  event_base* base_;              // the loop it lives on; null once orphaned
  bufferevent* under_;            // the socket bufferevent; we hold a reference
  bufferevent* filter_ = nullptr;
  EventPtr kick_;                 // zero-timeout work, see the class comment
  EventPtr writable_;             // the socket is writable again (made on first need)
  unsigned kick_what_ = 0;
  Mode mode_ = Mode::Sniffing;
  SslPtr ssl_;
  bool read_wants_write_ = false;  // SSL_read had a record to send and the socket was full
  size_t under_left_ = 0;          // TLS: ciphertext the last filter pass left on the socket side
};

namespace {

// The BIO under a shared-port TLS connection: reads take bytes from the socket
// bufferevent's input (a memory BIO whose memory is that evbuffer, no extra
// copy), writes go to the socket at once, so unsent bytes are never anywhere
// evhttp cannot see them (see MixedConnection).
int bio_write(BIO* b, const char* data, int len) {
  BIO_clear_retry_flags(b);
  auto* c = static_cast<MixedConnection*>(BIO_get_data(b));
  if (!c || len < 0) return -1;
  ssize_t n = ::send(c->fd(), data, static_cast<size_t>(len), MSG_NOSIGNAL);
  if (n >= 0) return static_cast<int>(n);
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_write(b);
  return -1;
}

int bio_read(BIO* b, char* out, int len) {
  BIO_clear_retry_flags(b);
  auto* c = static_cast<MixedConnection*>(BIO_get_data(b));
  if (!c || !out || len <= 0) return 0;
  evbuffer* in = c->under_input();
  if (evbuffer_get_length(in) == 0) {
    BIO_set_retry_read(b);  // "would block": the next socket read brings more
    return -1;
  }
  return evbuffer_remove(in, out, static_cast<size_t>(len));
}

long bio_ctrl(BIO* b, int cmd, long, void*) {
  auto* c = static_cast<MixedConnection*>(BIO_get_data(b));
  switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_PENDING: return c ? static_cast<long>(evbuffer_get_length(c->under_input())) : 0;
    case BIO_CTRL_WPENDING: return 0;
    default: return 0;
  }
}

int bio_create(BIO* b) {
  BIO_set_init(b, 1);
  BIO_set_data(b, nullptr);
  return 1;
}

int bio_destroy(BIO* b) {
  BIO_set_data(b, nullptr);
  return 1;
}

const BIO_METHOD* connection_bio_method() {
  // Made once, never freed: it lives as long as the process.
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "netwine connection");
    if (!m) return m;
    BIO_meth_set_write(m, &bio_write);
    BIO_meth_set_read(m, &bio_read);
    BIO_meth_set_ctrl(m, &bio_ctrl);
    BIO_meth_set_create(m, &bio_create);
    BIO_meth_set_destroy(m, &bio_destroy);
    return m;
  }();
  return method;
}

}  // namespace

MixedConnection::MixedConnection(Acceptor* owner, event_base* base, bufferevent* under)
    : owner_(owner), base_(base), under_(under) {
  kick_.reset(event_new(base, -1, 0, &MixedConnection::on_kick, this));
}

MixedConnection::~MixedConnection() {
  if (owner_) owner_->forget(filter_);
  ssl_.reset();  // frees the BIO, which points at us
  // Our reference kept the socket bufferevent valid for kicks that ran after
  // evhttp freed the filter; now it may go.
  bufferevent_decref(under_);
}

bufferevent* MixedConnection::create(Acceptor& owner) {
  bufferevent* under = bufferevent_socket_new(owner.base(), -1, BEV_OPT_CLOSE_ON_FREE);
  if (!under) return nullptr;
  auto* c = new MixedConnection(&owner, owner.base(), under);
  bufferevent* f = c->make_filter();
  if (f) owner.remember(f, c);
  return f;
}

// The filter over under_ (on failure both are gone and null is returned).
bufferevent* MixedConnection::make_filter() {
  bufferevent* under = under_;
  bufferevent_incref(under);  // the destructor's decref balances it
  bufferevent* f = kick_ ? bufferevent_filter_new(under, &on_filter_in, &on_filter_out,
                                                  BEV_OPT_CLOSE_ON_FREE, &on_free, this)
                         : nullptr;
  if (!f) {
    owner_ = nullptr;
    delete this;
    bufferevent_free(under);
    return nullptr;
  }
  filter_ = f;
  evbuffer_add_cb(bufferevent_get_output(f), &MixedConnection::on_filter_output, this);
  evbuffer_add_cb(bufferevent_get_input(f), &MixedConnection::on_filter_input, this);
  bufferevent_setwatermark(under, EV_READ, 0, kUnderlyingReadCap);
  // We write to the socket ourselves; its bufferevent only reads.
  bufferevent_disable(under, EV_WRITE);
  return f;
}

bufferevent* MixedConnection::adopt(Acceptor& owner, evutil_socket_t fd, Released r) {
  bufferevent* under = bufferevent_socket_new(owner.base(), fd, BEV_OPT_CLOSE_ON_FREE);
  if (!under) {
    evutil_closesocket(fd);
    return nullptr;
  }
  auto* c = new MixedConnection(&owner, owner.base(), under);
  bufferevent* f = c->make_filter();
  if (!f) return nullptr;
  owner.remember(f, c);
  if (!r.ssl) {  // the plain side of the port: its bytes came along as plaintext
    c->mode_ = Mode::Plain;
    return f;
  }
  c->mode_ = Mode::Tls;
  c->ssl_ = std::move(r.ssl);
  BIO_set_data(SSL_get_rbio(c->ssl_.get()), c);  // one BIO both ways (start_tls())
  evbuffer* in = c->under_input();  // frozen at its end outside the socket's own reads
  evbuffer_unfreeze(in, 0);
  evbuffer_add(in, r.raw.data(), r.raw.size());
  evbuffer_freeze(in, 0);
  // What came along (ciphertext, or plaintext OpenSSL holds) is decrypted once the
  // new owner has set its callbacks, from the loop.
  if (c->unfiltered_input()) c->schedule(kRead);
  return f;
}

bool MixedConnection::can_release() const {
  if (mode_ != Mode::Plain && mode_ != Mode::Tls) return false;
  if (evbuffer_get_length(bufferevent_get_output(filter_)) > 0 || (writable_ && event_pending(writable_.get(), EV_WRITE, nullptr)))
    return false;
  if (mode_ == Mode::Plain) return true;
  // (A write OpenSSL holds half-sent keeps its plaintext in the output, or set
  // read_wants_write_ when a read made it.)
  return SSL_is_init_finished(ssl_.get()) && !read_wants_write_ && !SSL_want_write(ssl_.get());
}

Released MixedConnection::release() {
  Released r;
  evbuffer* in = under_input();
  r.raw.resize(evbuffer_get_length(in));
  if (!r.raw.empty()) evbuffer_remove(in, r.raw.data(), r.raw.size());
  if (ssl_) {
    BIO_set_data(SSL_get_rbio(ssl_.get()), nullptr);
    r.ssl = std::move(ssl_);
  }
  mode_ = Mode::Released;
  kick_what_ = 0;
  if (kick_) event_del(kick_.get());
  writable_.reset();
  return r;
}

void MixedConnection::on_free(void* self) { delete static_cast<MixedConnection*>(self); }

bufferevent_filter_result MixedConnection::on_filter_in(evbuffer* src, evbuffer* dst, ev_ssize_t lim,
                                                        bufferevent_flush_mode mode, void* self) {
  // A limit applies in normal mode only: flushes (our kicks) move everything, and
  // only what the socket side read (normal mode: not while reading is off) may
  // read on past it.
  size_t budget = mode == BEV_NORMAL && lim >= 0 ? static_cast<size_t>(lim) : SIZE_MAX;
  return static_cast<MixedConnection*>(self)->do_filter_in(src, dst, budget, mode == BEV_NORMAL);
}

bufferevent_filter_result MixedConnection::on_filter_out(evbuffer*, evbuffer*, ev_ssize_t,
                                                         bufferevent_flush_mode, void*) {
  // Output never moves to the socket bufferevent: flush_output() writes the
  // filter's buffer to the socket (see the class comment).
  return BEV_NEED_MORE;
}

bufferevent_filter_result MixedConnection::do_filter_in(evbuffer* src, evbuffer* dst, size_t budget,
                                                        bool may_read) {
  if (mode_ == Mode::Sniffing) {
    unsigned char first = 0;
    if (evbuffer_copyout(src, &first, 1) != 1) return BEV_NEED_MORE;
    if (first == kTlsHandshakeRecord) start_tls();
    else if (owner_ && owner_->tls_only()) fail("plain bytes on a --tls-only port");  // closed, unanswered
    else mode_ = Mode::Plain;
  }
  switch (mode_) {
    case Mode::Sniffing:
    case Mode::Plain: {
      size_t len = evbuffer_get_length(src);
      if (len == 0 || budget == 0) return BEV_NEED_MORE;
      if (len <= budget) {
        evbuffer_add_buffer(dst, src);  // whole chains, no copy
        if (may_read && mode_ == Mode::Plain) top_up(dst, len, budget - len);
      } else {
        evbuffer_remove_buffer(src, dst, budget);
      }
      return BEV_OK;
    }
    case Mode::Tls: {
      // The socket side's input end is frozen outside its own reads (as for any
      // socket bufferevent): thawed for the top-up only.
      size_t len = evbuffer_get_length(src);
      if (may_read) {
        evbuffer_unfreeze(src, 0);
        top_up(src, len - std::min(len, under_left_), kTopUpBudget - std::min(len, kTopUpBudget));
        evbuffer_freeze(src, 0);
      }
      bufferevent_filter_result r = tls_in(dst, budget);
      under_left_ = evbuffer_get_length(src);
      return r;
    }
    case Mode::Released:
      return BEV_NEED_MORE;
    case Mode::Failed:
      break;
  }
  evbuffer_drain(src, evbuffer_get_length(src));
  return BEV_ERROR;
}

// Reads what else the socket holds into `into` when the socket bufferevent's
// read was a full one (`fresh` bytes since the last pass); EOF and errors are
// left for its next read (sockio::read_more). Returns the bytes read.
size_t MixedConnection::top_up(evbuffer* into, size_t fresh, size_t budget) {
  if (!sockio::socket_may_hold_more(fresh) || budget == 0) return 0;
  return sockio::read_more(fd(), into, std::min(budget, kTopUpBudget));
}

void MixedConnection::start_tls() {
  ssl_.reset(owner_ ? owner_->context().new_ssl() : nullptr);
  const BIO_METHOD* method = connection_bio_method();
  BIO* bio = ssl_ && method ? BIO_new(method) : nullptr;
  if (!bio) {
    fail("cannot set up TLS: " + take_errors("out of memory"));
    return;
  }
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_.get(), bio, bio);  // one BIO both ways: one reference taken
  SSL_set_accept_state(ssl_.get());
  mode_ = Mode::Tls;
}

bufferevent_filter_result MixedConnection::tls_in(evbuffer* dst, size_t budget) {
  ERR_clear_error();
  size_t got = 0;
  while (got < budget) {
    evbuffer_iovec v;
    size_t want = std::min(budget - got, kTlsRecordPayload);
    if (evbuffer_reserve_space(dst, static_cast<ev_ssize_t>(want), &v, 1) < 1) {
      fail("out of memory");
      return BEV_ERROR;
    }
    size_t n = 0;
    int r = SSL_read_ex(ssl_.get(), v.iov_base, std::min(v.iov_len, want), &n);
    if (r == 1) {
      v.iov_len = n;
      evbuffer_commit_space(dst, &v, 1);
      got += n;
      continue;
    }
    // Nothing committed: the reserved space is simply not used.
    int err = SSL_get_error(ssl_.get(), r);
    if (err == SSL_ERROR_WANT_READ) break;  // no whole record left on the socket side
    if (err == SSL_ERROR_WANT_WRITE) {      // a handshake record waits for socket room
      read_wants_write_ = true;
      wait_writable();
      break;
    }
    if (err == SSL_ERROR_ZERO_RETURN) {  // close_notify: the client is done
      schedule(kEof);
      break;
    }
    fail(err == SSL_ERROR_SYSCALL ? std::string("send: ") + std::strerror(errno) : take_errors("TLS error"));
    evbuffer_drain(under_input(), evbuffer_get_length(under_input()));
    return BEV_ERROR;
  }
  return got ? BEV_OK : BEV_NEED_MORE;
}

void MixedConnection::fail(const std::string& reason) {
  if (mode_ == Mode::Failed || mode_ == Mode::Released) return;
  // Scanners, old clients and vanished peers fail all day: not worth more than debug.
  log::debug("connection from ", peer(), ": ", mode_ == Mode::Tls ? "TLS: " : "", reason);
  mode_ = Mode::Failed;
  schedule(kFail);
}

void MixedConnection::schedule(unsigned what) {
  if (!kick_ || mode_ == Mode::Released) return;
  kick_what_ |= what;
  event_active(kick_.get(), EV_TIMEOUT, 1);  // already active: libevent merges
}

void MixedConnection::wait_writable() {
  if (mode_ == Mode::Released) return;
  if (!writable_) {
    if (!base_) return;
    writable_.reset(event_new(base_, fd(), EV_WRITE, &MixedConnection::on_writable, this));
    if (!writable_) return;
  }
  event_add(writable_.get(), nullptr);
}

bool MixedConnection::unfiltered_input() const {
  return evbuffer_get_length(under_input()) > 0 || (ssl_ && SSL_has_pending(ssl_.get()));
}

// After bufferevent_free() evhttp's callbacks are gone; the filter itself lives
// on while someone (the server's header-deadline guard, a kick) holds a reference.
bool MixedConnection::freed() const {
  bufferevent_data_cb r = nullptr, w = nullptr;
  bufferevent_event_cb e = nullptr;
  bufferevent_getcb(filter_, &r, &w, &e, nullptr);
  return !r && !w && !e;
}

std::string MixedConnection::peer() const {
  sockaddr_storage ss;
  socklen_t len = sizeof ss;
  evutil_socket_t s = fd();
  char host[INET6_ADDRSTRLEN] = "-";
  if (s < 0 || getpeername(s, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return host;
  const void* addr = ss.ss_family == AF_INET6
                         ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr)
                         : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&ss)->sin_addr);
  inet_ntop(ss.ss_family, addr, host, sizeof host);
  return host;
}

void MixedConnection::on_filter_output(evbuffer*, const evbuffer_cb_info* info, void* self) {
  if (info->n_added) static_cast<MixedConnection*>(self)->schedule(kWrite);
}

void MixedConnection::on_filter_input(evbuffer*, const evbuffer_cb_info* info, void* self) {
  auto* c = static_cast<MixedConnection*>(self);
  if (info->n_deleted && c->unfiltered_input()) c->schedule(kRead);
}

void MixedConnection::on_kick(evutil_socket_t, short, void* self) {
  auto* c = static_cast<MixedConnection*>(self);
  c->do_kick(std::exchange(c->kick_what_, 0));
}

void MixedConnection::on_writable(evutil_socket_t, short, void* self) {
  auto* c = static_cast<MixedConnection*>(self);
  c->do_kick(std::exchange(c->kick_what_, 0) | kWritable);
}

void MixedConnection::do_kick(unsigned what) {
  if (mode_ == Mode::Released) return;
  bufferevent* f = filter_;
  // Freed by evhttp, and maybe no reference left: libevent finalizes it later (and
  // this object with it). Taking a reference now would finalize it twice.
  if (freed()) return;
  // A trigger below may run evhttp's callbacks, which may free the connection:
  // our reference keeps the filter (and so this object) alive until the decref
  // at the end. Dropping the last reference does not free anything here and now
  // (libevent finalizes the filter, and so this object, from a later callback),
  // but nothing after the decref touches this object all the same.
  bufferevent_incref(f);
  if (what & kFail) {
    if (!freed()) bufferevent_trigger_event(f, BEV_EVENT_ERROR | BEV_EVENT_READING, 0);
  } else if (mode_ != Mode::Failed) {
    if ((what & kRead) || ((what & kWritable) && read_wants_write_)) kick_read();
    if ((what & (kWrite | kWritable)) && !freed() && mode_ != Mode::Failed) flush_output();
    if ((what & kEof) && !freed()) bufferevent_trigger_event(f, BEV_EVENT_EOF | BEV_EVENT_READING, 0);
  }
  bufferevent_decref(f);  // may be the last reference: nothing after this line
}

void MixedConnection::kick_read() {
  bool retry = std::exchange(read_wants_write_, false);  // SSL_read has a record to finish sending
  if (freed() || (!retry && !unfiltered_input())) return;
  evbuffer* in = bufferevent_get_input(filter_);
  size_t before = evbuffer_get_length(in);
  // BEV_FLUSH filters even while evhttp has reading off; the bytes then wait in
  // the filter's input, where evhttp looks when it starts reading again.
  bufferevent_flush(filter_, EV_READ, BEV_FLUSH);
  if (evbuffer_get_length(in) > before && !freed() && (bufferevent_get_enabled(filter_) & EV_READ))
    bufferevent_trigger(filter_, EV_READ, 0);
}

// Writes the filter's output buffer to the socket, as far as the socket takes it,
// then does what a socket bufferevent does after a write: re-arms the write
// timeout and runs the write callback if the buffer is down to the low-watermark.
void MixedConnection::flush_output() {
  if (!(bufferevent_get_enabled(filter_) & EV_WRITE)) return;  // evhttp enables, then we come back
  evbuffer* out = bufferevent_get_output(filter_);
  size_t before = evbuffer_get_length(out);
  if (before == 0 || mode_ == Mode::Sniffing) return;
  if (!(mode_ == Mode::Tls ? write_tls(out) : write_plain(out))) return;  // failed: reported
  size_t after = evbuffer_get_length(out);
  if (after > 0) wait_writable();
  if (after < before) {
    bufferevent_enable(filter_, EV_WRITE);  // enabling again resets the write timeout
    bufferevent_trigger(filter_, EV_WRITE, 0);
  }
}

bool MixedConnection::write_plain(evbuffer* out) {
  size_t written = 0;
  while (evbuffer_get_length(out) > 0 && written < kMaxWritePerKick) {
    int n = evbuffer_write_atmost(out, fd(), -1);
    if (n > 0) {
      written += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      fail(std::string("write: ") + std::strerror(errno));
      return false;
    }
    break;
  }
  if (evbuffer_get_length(out) > 0 && written >= kMaxWritePerKick) schedule(kWrite);  // more next turn
  return true;
}

bool MixedConnection::write_tls(evbuffer* out) {
  ERR_clear_error();
  size_t written = 0;
  while (evbuffer_get_length(out) > 0 && written < kMaxWritePerKick) {
    // One record's worth at a time, contiguous (pullup copies only when the first
    // chain is shorter, so small chunks become one record instead of many). After
    // SSL_ERROR_WANT_WRITE the retry has the same length or more, which OpenSSL
    // requires; the buffer may move (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER).
    size_t chunk = std::min(evbuffer_get_length(out), kTlsRecordPayload);
    const unsigned char* data = evbuffer_pullup(out, static_cast<ev_ssize_t>(chunk));
    if (!data) {
      fail("out of memory");
      return false;
    }
    size_t n = 0;
    int r = SSL_write_ex(ssl_.get(), data, chunk, &n);
    if (r == 1) {
      evbuffer_drain(out, n);
      written += n;
      continue;
    }
    int err = SSL_get_error(ssl_.get(), r);
    if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) break;
    fail(err == SSL_ERROR_SYSCALL ? std::string("send: ") + std::strerror(errno) : take_errors("TLS error"));
    return false;
  }
  if (evbuffer_get_length(out) > 0 && written >= kMaxWritePerKick) schedule(kWrite);
  return true;
}

// ------------------------------------------------------------------- Acceptor

Acceptor::Acceptor(event_base* base, const TlsContext& context, bool tls_only)
    : base_(base), context_(context), tls_only_(tls_only) {}

Acceptor::~Acceptor() {
  for (auto& [filter, conn] : mixed_) conn->orphan();
}

bufferevent* Acceptor::new_connection() { return MixedConnection::create(*this); }

bool Acceptor::can_release(bufferevent* bev) const {
  auto it = mixed_.find(bev);
  return it != mixed_.end() && it->second->can_release();
}

Released Acceptor::release(bufferevent* bev) {
  auto it = mixed_.find(bev);
  return it != mixed_.end() ? it->second->release() : Released{};
}

bufferevent* Acceptor::adopt(evutil_socket_t fd, Released r) {
  return MixedConnection::adopt(*this, fd, std::move(r));
}

bool Acceptor::is_tls(bufferevent* bev) const {
  auto it = mixed_.find(bev);
  return it != mixed_.end() && it->second->is_tls();
}

// ------------------------------------------------------------ TargetTlsContext

std::shared_ptr<TargetTlsContext> TargetTlsContext::create(const std::string& ca_file, std::string& error) {
  ERR_clear_error();
  std::shared_ptr<TargetTlsContext> t(new TargetTlsContext());
  t->ctx_.reset(SSL_CTX_new(TLS_client_method()));
  SSL_CTX* ctx = t->ctx_.get();
  if (!ctx) {
    error = "cannot create a TLS client context: " + take_errors();
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_set_default_verify_paths(ctx) != 1)
    log::warn("tls:// targets: cannot use the system CA store: ", take_errors());
  if (!ca_file.empty()) {
    if (auto why = unreadable(ca_file); !why.empty()) {
      error = "target-ca " + ca_file + ": cannot read: " + why;
      return nullptr;
    }
    if (SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) != 1) {
      error = "target-ca " + ca_file + ": cannot load CA certificates: " + take_errors();
      return nullptr;
    }
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  return t;
}

SslPtr TargetTlsContext::new_ssl(const std::string& host, std::string& error) const {
  ERR_clear_error();
  SslPtr ssl(SSL_new(ctx_.get()));
  if (!ssl) {
    error = "cannot create a TLS connection: " + take_errors();
    return nullptr;
  }
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  bool ok;
  if (is_ip_literal(host)) {
    // No SNI for addresses (RFC 6066 3); the certificate must name the address.
    ok = X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) == 1;
  } else {
    ok = SSL_set_tlsext_host_name(ssl.get(), host.c_str()) == 1 && SSL_set1_host(ssl.get(), host.c_str()) == 1;
  }
  if (!ok) {
    error = "cannot set up TLS for '" + host + "': " + take_errors();
    return nullptr;
  }
  return ssl;
}

std::string TargetTlsContext::failure_reason(const SSL* ssl, const std::string& queued) {
  long verify = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
  if (verify != X509_V_OK)
    return std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
  return queued.empty() ? "handshake failed" : queued;
}

}  // namespace netwine::tls
