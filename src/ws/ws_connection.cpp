// The WebSocket adapter: upgrade an evhttp request, then relay between the
// hijacked bufferevent and a Session (protocol in ws_connection.hpp).
//
// libevent 2.1.12 has no WebSocket support and no way to detach a connection
// from evhttp (LIBEVENT-NOTES "WebSocket upgrade"): we answer 101 through evhttp,
// take over the connection's bufferevent with our own callbacks, and give the
// connection back to evhttp_connection_free() when we are done.
#include "ws/ws_connection.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>

#include "http/http_util.hpp"
#include "log.hpp"
#include "front.hpp"
#include "sockio.hpp"
#include "tls.hpp"
#include "tunnel/codec.hpp"
#include "tunnel/manager.hpp"
#include "tunnel/session.hpp"
#include "ws/bulk_relay.hpp"
#include "ws/frame.hpp"
#include "ws/handshake.hpp"
#include "ws/v1.hpp"

namespace netwine::ws {
namespace {

// --- limits, each with its reason -----------------------------------------

// Downstream payload per message: large enough that per-message costs (our
// header, the browser's event dispatch) vanish, small enough that a ping or a
// close is never stuck behind much.
constexpr size_t kMaxDataMessage = 256 * 1024;
// base64 mode: raw bytes per message (a multiple of 3, so 256 KiB of text).
constexpr size_t kBase64RawChunk = 192 * 1024;
// Stop pulling from the session while this much is queued for the client: the
// rest waits in the session buffer, which is bounded (back-pressure, not queues).
constexpr size_t kOutputHighWater = 1024 * 1024;
// ... and refill once the queue has drained to this (the write low-watermark).
constexpr size_t kOutputLowWater = 256 * 1024;
// Bytes read per read callback beyond the bufferevent's own 4096-byte read
// (LIBEVENT-NOTES "Speed"): bounded so one fast client cannot starve the loop.
constexpr size_t kReadBudget = 256 * 1024;
// Largest single write the bufferevent makes (its default is 16 KiB).
constexpr size_t kMaxSingleWrite = 1024 * 1024;
// How long the closing handshake may take once our output has stopped draining.
constexpr double kCloseTimeoutSeconds = 5.0;
// A binary or netwine.v1 WebSocket that moves --bulk-after bytes (2 MiB by default) within
// kBulkWindow seconds is busy: it is lent to a relay thread of its own (bulk_relay.hpp), under
// --bulk-threads.
constexpr double kBulkWindow = 0.1;
// ... which gives it back after this long without a byte either way, or after a
// second in which fewer than half of --bulk-after moved (1 MiB by default: a
// trickle keeps no place).
constexpr int kBulkIdleMs = 250;

const timeval kZeroTimeval{0, 0};

// The subprotocols we speak, in the server's order of preference.
constexpr std::string_view kSubprotocols[] = {"netwine.v1", "binary", "base64"};

enum class Mode {
  Raw,        // "binary" or none: binary messages carry the bytes
  Base64,     // "base64": text messages carry base64 of the bytes
  NetwineV1,  // "netwine.v1": offsets and acks, resumable
};

Mode mode_for(std::string_view subprotocol) {
  if (subprotocol == "netwine.v1") return Mode::NetwineV1;
  if (subprotocol == "base64") return Mode::Base64;
  return Mode::Raw;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Session close codes are chosen to be valid on the wire; anything else
// (0 for "unset") becomes 1011 rather than a frame the browser would reject.
uint16_t wire_code(int code) {
  if (code > 0 && code <= 0xFFFF && is_valid_wire_close_code(static_cast<uint16_t>(code)))
    return static_cast<uint16_t>(code);
  return static_cast<uint16_t>(CloseCode::InternalError);
}

// Every value of a request header, joined with ", " (RFC 9110 5.3); "" if absent.
std::string joined_header(evhttp_request* req, const char* name) {
  std::string out;
  evkeyvalq* headers = evhttp_request_get_input_headers(req);
  for (evkeyval* kv = headers->tqh_first; kv; kv = kv->next.tqe_next) {
    if (evutil_ascii_strcasecmp(kv->key, name) != 0) continue;
    if (!out.empty()) out += ", ";
    out += kv->value;
  }
  return out;
}

// ---------------------------------------------------------------------------

// One upgraded connection relaying to one session (the protocol is in the
// header). Lifetime: created by handle_upgrade(), owned by live() while the
// socket is open, then handed to Manager::dispose() (see release()).
//
// Callbacks only forward (on_x -> do_x). The connection is freed only at the
// end of our own libevent callbacks (settle(), close_connection()), never from
// inside a Session callback or a decoder callback, so no caller up the stack
// ever holds a freed bufferevent.
class WsConnection final : public tunnel::Transport, private Handler {
 public:
  // `req` is the upgrade request on evhttp's connection.
  WsConnection(tunnel::Manager& m, evhttp_request* req, Mode mode)
      : m_(m),
        req_(req),
        conn_(evhttp_request_get_connection(req)),
        mode_(mode),
        decoder_(Role::Server, m.config().ws_max_message) {
    heartbeat_.reset(evtimer_new(m.base(), &WsConnection::on_heartbeat, this));
    close_timer_.reset(evtimer_new(m.base(), &WsConnection::on_close_timeout, this));
    kick_.reset(evtimer_new(m.base(), &WsConnection::on_kick, this));
    rx_.reset(evbuffer_new());
  }

  ~WsConnection() override {
    if (bulk_) take_back();  // (close_connection() has, normally)
    // Normally detached long before; this only guards an early error path.
    if (session_) session_->detach(this);
  }

  const char* name() const override { return "websocket"; }

  // Sends the 101 and takes the connection over. `s` has this attached.
  void start(tunnel::Session* s, const HandshakeResult& hs);
  // Drops the connection now (a worker thread stopping).
  void abandon() { close_connection(); }

  void on_session_update() override;
  void on_detached(int code, const std::string& reason) override;
  void on_upstream_room() override;
  void reclaim() override {
    if (bulk_) take_back();
  }

  // Relaying, or our last bytes are still queued (see delivering_connections()).
  bool delivering() const {
    if (phase_ == Phase::Done || !bev_) return false;
    return phase_ == Phase::Open || evbuffer_get_length(bufferevent_get_output(bev_)) > 0;
  }

 private:
  enum class Phase {
    Open,       // relaying both ways
    Closing,    // we sent a Close; waiting for the client's (acks still count)
    Flushing,   // the closing handshake is over or the connection failed:
                // sending what is queued, discarding input
    Lingering,  // our side is shut down (FIN sent); discarding input until the
                // client closes too, so unread bytes never turn our close into a RST
    Done,       // the connection is freed; the object waits to be freed
  };
  // What leaving the session means for it.
  enum class Leave {
    Resume,  // netwine.v1: the session waits for another transport
    End,     // the client is done: flush upstream and end the session
  };

  // libevent callbacks.
  static void on_read(bufferevent*, void* self) { static_cast<WsConnection*>(self)->do_read(); }
  static void on_raw_read(evutil_socket_t, short, void* self) { static_cast<WsConnection*>(self)->do_raw_read(); }
  static void on_write(bufferevent*, void* self) { static_cast<WsConnection*>(self)->do_write(); }
  static void on_event(bufferevent*, short what, void* self) {
    static_cast<WsConnection*>(self)->do_event(what);
  }
  static void on_heartbeat(evutil_socket_t, short, void* self) {
    static_cast<WsConnection*>(self)->do_heartbeat();
  }
  static void on_close_timeout(evutil_socket_t, short, void* self) {
    static_cast<WsConnection*>(self)->do_close_timeout();
  }
  static void on_kick(evutil_socket_t, short, void* self) { static_cast<WsConnection*>(self)->settle(); }
  static void on_bulk_done(evutil_socket_t, short, void* self) {
    static_cast<WsConnection*>(self)->do_bulk_done();
  }

  void begin_relay();
  void do_read();
  void do_raw_read();
  void set_reading(bool on);
  void do_write();
  void do_event(short what);
  void do_heartbeat();
  void do_close_timeout();

  // Decoder events (Handler).
  void on_data(Opcode type, std::span<const uint8_t> bytes) override;
  void on_masked_data(Opcode type, std::span<uint8_t> masked, const uint8_t key[4], size_t offset) override;
  void on_message_end(Opcode type) override;
  void on_ping(std::span<const uint8_t> payload) override;
  void on_pong(std::span<const uint8_t>) override {}  // any input counts as life (last_rx_)
  void on_close(std::optional<uint16_t> code, std::string_view reason) override;

  // Receive path.
  void feed_input(evbuffer* in);
  bool feed(std::span<uint8_t> bytes);
  void after_read();
  void upstream(uint64_t offset, const uint8_t* data, size_t len);
  void upstream_v1_piece(std::span<const uint8_t> bytes);
  void upstream_base64_piece(std::span<const uint8_t> bytes);
  void handle_v1_ack(const v1::Reader::Ack& ack);
  void fail(uint16_t code, std::string reason);
  void after_batch();
  void ack_upstream();
  void update_reading();
  void on_client_close();

  // Send path.
  void pump();
  void send_data_message(evbuffer* out);
  void send_direct();
  void send_frame(Opcode op, std::span<const uint8_t> payload);
  void send_text(std::string_view text);
  void queue_close(uint16_t code, std::string_view reason);
  void begin_closing(uint16_t code, std::string_view reason);
  void fail_connection(uint16_t code, std::string_view reason);

  // Ending.
  void enter_final_phase(Phase p);
  void arm_close_timer();
  void arm_heartbeat(double seconds);
  void leave_session(Leave how);
  void settle();
  void close_connection();
  void on_connection_freed();
  void release();

  // Bulk relaying (bulk_relay.hpp).
  void meter(size_t bytes, double now);
  void maybe_lend();
  void take_back();
  void do_bulk_done();

  tunnel::Manager& m_;
  evhttp_request* req_;      // the upgrade request; evhttp frees it with the connection
  evhttp_connection* conn_;  // owned by evhttp; freed by close_connection()
  bufferevent* bev_ = nullptr;  // conn_'s bufferevent or our own; null once the connection is gone
  evutil_socket_t raw_fd_ = -1;  // plain TCP socket: our own reads and writes, lingering close
  EventPtr reader_;              // plain TCP: our read event on raw_fd_ (do_raw_read())
  tunnel::Session* session_ = nullptr;  // attached session; null once detached
  const Mode mode_;
  Phase phase_ = Phase::Open;
  Decoder decoder_;
  EventPtr heartbeat_;    // ping / pong-timeout timer
  EventPtr close_timer_;  // bounds the closing handshake and the lingering close
  EventPtr kick_;         // zero-timeout: settle() from the event loop
  EvbufferPtr rx_;        // input being decoded: the bufferevent's reads plus our own
  std::string peer_;      // for log lines

  // Receive state of the message in progress.
  v1::Reader v1_;                // netwine.v1: offset header, acknowledgement text
  std::string b64_carry_;        // base64: 0..3 characters of a cut quad
  bool b64_padded_ = false;      // base64: the message had its padding already
  std::vector<uint8_t> scratch_;  // base64 encoding and decoding

  // A failure found inside a decoder callback; acted on once feed() returns.
  std::optional<std::pair<uint16_t, std::string>> failure_;
  bool got_close_ = false;                // the client's Close frame arrived
  std::optional<uint16_t> client_code_;   // its code (absent: 1005)
  uint64_t up_ack_sent_ = 0;              // last "A N" sent (netwine.v1)
  bool reading_paused_ = false;           // EV_READ off: the target is not taking data

  // Heartbeat.
  double last_rx_ = 0;       // when input last arrived
  double ping_sent_at_ = 0;
  bool awaiting_pong_ = false;

  size_t close_queue_mark_ = 0;  // output length when the close timer was armed

  // Bulk relaying: while bulk_ is set, a relay thread owns both sockets, rx_,
  // decoder_ and the three queues below; the loop touches none of them.
  std::unique_ptr<BulkRelay> bulk_;
  std::unique_ptr<tunnel::LentCounters> lent_counts_;
  std::unique_ptr<BulkRelay::V1> bulk_v1_;  // netwine.v1: the state the thread goes on with
  EvbufferPtr to_target_, from_target_, to_client_;
  EventPtr bulk_done_;  // activated by the relay thread when it gives the connection back
  std::optional<BulkRelay::Result> bulk_result_;  // why it did, for do_bulk_done()
  double meter_start_ = 0;  // the busy meter's window: its start and its bytes
  size_t meter_bytes_ = 0;
};

// The table that owns live connections (see handle_upgrade() in the header).
// One per thread: each event loop relays its own connections.
std::unordered_map<WsConnection*, std::unique_ptr<WsConnection>>& live() {
  thread_local std::unordered_map<WsConnection*, std::unique_ptr<WsConnection>> table;
  return table;
}

// ------------------------------------------------------------------- start

void WsConnection::start(tunnel::Session* s, const HandshakeResult& hs) {
  session_ = s;
  peer_ = http::peer_address(req_);
  evkeyvalq* out = evhttp_request_get_output_headers(req_);
  evhttp_add_header(out, "Upgrade", "websocket");
  evhttp_add_header(out, "Connection", "Upgrade");
  evhttp_add_header(out, "Sec-WebSocket-Accept", hs.accept.c_str());
  if (!hs.subprotocol.empty()) evhttp_add_header(out, "Sec-WebSocket-Protocol", hs.subprotocol.c_str());
  http::log_request_done(req_, 101, 0);
  // For 1xx evhttp writes the status line and headers (plus Date) and no body
  // framing. The request stays "in progress" for evhttp forever: we never call
  // evhttp_send_reply_end() on it (LIBEVENT-NOTES).
  evhttp_send_reply_start(req_, 101, "Switching Protocols");

  bev_ = evhttp_connection_get_bufferevent(conn_);
  bufferevent_setcb(bev_, &WsConnection::on_read, &WsConnection::on_write, &WsConnection::on_event, this);
  bufferevent_set_timeouts(bev_, nullptr, nullptr);  // evhttp's idle timeout would kill us
  bufferevent_setwatermark(bev_, EV_READ, 0, 0);
  bufferevent_setwatermark(bev_, EV_WRITE, kOutputLowWater, 0);
  raw_fd_ = sockio::plain_socket(bev_) && !m_.front().is_tls(req_) ? bufferevent_getfd(bev_) : -1;
  // Not over TLS: larger single writes on libevent 2.1.12's OpenSSL bufferevent
  // corrupted HTTP streams (server.cpp).
  // If evhttp frees the connection under us (evhttp_free at shutdown), stop.
  m_.front().watch_close(conn_, [this] { on_connection_freed(); });
  begin_relay();
}

// The relay starts (start() ends here).
void WsConnection::begin_relay() {
  if (raw_fd_ >= 0) {
    bufferevent_set_max_single_write(bev_, kMaxSingleWrite);
    reader_.reset(event_new(bufferevent_get_base(bev_), raw_fd_, EV_READ | EV_PERSIST, &WsConnection::on_raw_read,
                            this));
    bufferevent_disable(bev_, EV_READ);  // (evhttp's reading, for start())
  }
  bufferevent_enable(bev_, EV_WRITE);
  set_reading(true);
  if (mode_ == Mode::NetwineV1) {
    send_text("OK " + session_->key() + " " + std::to_string(session_->upstream_offset()));
    // Then what the target has taken so far, where the client's upstream window
    // starts (ws_connection.hpp, "A <offset>"); later acks follow as it takes more.
    up_ack_sent_ = session_->upstream_written();
    if (up_ack_sent_ > 0) send_text(v1::ack_text(up_ack_sent_));
  }
  last_rx_ = now_seconds();
  arm_heartbeat(m_.config().ws_ping_interval);
  pump();
  // A frame sent in the same packet as the handshake already sits in the input
  // buffer and no read event will announce it. Decode it from the event loop,
  // not here inside evhttp's request callback.
  if (evbuffer_get_length(bufferevent_get_input(bev_)) || evbuffer_get_length(rx_.get()))
    bufferevent_trigger(bev_, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

// ------------------------------------------------------------ receive path

void WsConnection::do_read() {
  if (phase_ == Phase::Done || bulk_) return;  // (a callback deferred before a loan)
  evbuffer* in = bufferevent_get_input(bev_);
  if (phase_ == Phase::Flushing || phase_ == Phase::Lingering) {
    evbuffer_drain(in, evbuffer_get_length(in));  // nothing more is heard from a closed connection
    return;
  }
  // Move (not copy) what the bufferevent read into our own buffer, behind any
  // early bytes. Over TLS that is every read; over plain TCP only what came with
  // the handshake (begin_relay()): do_raw_read() reads the rest.
  evbuffer_add_buffer(rx_.get(), in);
  if (size_t n = evbuffer_get_length(rx_.get())) {
    last_rx_ = now_seconds();
    meter(n, last_rx_);
  }
  feed_input(rx_.get());
  after_read();
}

// A plain TCP client is read by our own event, not by the bufferevent (which
// only writes): a bufferevent read (FIONREAD, a chain allocated, moved and
// drained, its callbacks under its lock) cost ~3 us a message more than this on
// the pinned round trip of docs/PERFORMANCE.md. recv() goes to a per-thread
// buffer the decoder unmasks in place, and payload goes on to the target from
// there. EOF and read errors are reported as the bufferevent would (do_event()).
void WsConnection::do_raw_read() {
  if (phase_ == Phase::Done || bulk_) return;
  constexpr size_t kChunk = 64 * 1024;
  thread_local std::unique_ptr<uint8_t[]> buffer(new uint8_t[kChunk]);
  // Bytes left in rx_ (a loan given back mid-frame) come first.
  if (phase_ != Phase::Flushing && phase_ != Phase::Lingering && evbuffer_get_length(rx_.get()))
    feed_input(rx_.get());
  size_t got = 0;
  while (got < kReadBudget && phase_ != Phase::Done) {
    ssize_t r = ::recv(raw_fd_, buffer.get(), kChunk, MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      do_event(static_cast<short>(BEV_EVENT_READING | (r == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR)));
      return;
    }
    if (r < 0) break;
    size_t n = static_cast<size_t>(r);
    got += n;
    if (phase_ == Phase::Flushing || phase_ == Phase::Lingering) {  // discarded: nothing more is heard
      if (n < kChunk) break;
      continue;
    }
    last_rx_ = now_seconds();
    meter(n, last_rx_);
    if (session_) session_->reserve_upstream(n);  // payload <= input
    if (!feed({buffer.get(), n})) break;  // failed or closed: the rest is dropped
    if (n < kChunk || reading_paused_ || bulk_ || (session_ && session_->upstream_full())) break;
  }
  after_read();
}

// What follows every batch of input.
void WsConnection::after_read() {
  after_batch();
  settle();
  maybe_lend();
}

void WsConnection::set_reading(bool on) {
  if (!bev_ || (on && bulk_)) return;  // (a relay thread reads a lent socket)
  if (reader_) {
    if (on) event_add(reader_.get(), nullptr);
    else event_del(reader_.get());
  } else if (on) {
    bufferevent_enable(bev_, EV_READ);
  } else {
    bufferevent_disable(bev_, EV_READ);
  }
}

// Feeds the whole input buffer to the decoder in place (evbuffer_peek gives the
// chains; the decoder unmasks them and hands out spans that go straight to the
// target), then drains it.
void WsConnection::feed_input(evbuffer* in) {
  if (session_) session_->reserve_upstream(evbuffer_get_length(in));  // payload <= input
  while (evbuffer_get_length(in) > 0) {
    evbuffer_iovec v[16];
    int n = std::min(evbuffer_peek(in, -1, nullptr, v, 16), 16);
    size_t used = 0;
    for (int i = 0; i < n; ++i) {
      used += v[i].iov_len;
      if (!feed({static_cast<uint8_t*>(v[i].iov_base), v[i].iov_len})) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
      }
    }
    evbuffer_drain(in, used);
  }
}

// Feeds one piece of input to the decoder. False when the connection failed or
// the client's Close arrived: what is left of the input is dropped.
bool WsConnection::feed(std::span<uint8_t> bytes) {
  if (auto err = decoder_.feed(bytes, *this)) {
    fail_connection(static_cast<uint16_t>(err->code), err->reason);
    return false;
  }
  if (failure_) {
    auto [code, reason] = std::move(*failure_);
    failure_.reset();
    fail_connection(code, reason);
    return false;
  }
  if (got_close_) {
    on_client_close();  // RFC 6455 5.5.1: nothing follows a Close
    return false;
  }
  return true;
}

void WsConnection::on_data(Opcode type, std::span<const uint8_t> bytes) {
  if (failure_) return;
  switch (mode_) {
    case Mode::Raw:
      if (session_) upstream(session_->upstream_offset(), bytes.data(), bytes.size());
      return;
    case Mode::Base64:
      if (type != Opcode::Text) {
        fail(static_cast<uint16_t>(CloseCode::UnsupportedData),
             "binary message on the base64 subprotocol (send base64 text)");
        return;
      }
      upstream_base64_piece(bytes);
      return;
    case Mode::NetwineV1:
      if (type == Opcode::Binary) {
        upstream_v1_piece(bytes);
      } else if (auto f = v1_.add_text(bytes)) {
        fail(f->code, std::move(f->reason));
      }
      return;
  }
}

// Binary mode: the bytes go to the target as they are, so unmask them while
// copying them into its output (one pass instead of unmasking, then copying).
void WsConnection::on_masked_data(Opcode type, std::span<uint8_t> masked, const uint8_t key[4], size_t offset) {
  if (mode_ != Mode::Raw || failure_ || !session_) {
    Handler::on_masked_data(type, masked, key, offset);
    return;
  }
  session_->send_upstream_masked(masked.data(), masked.size(), key, offset);
}

void WsConnection::on_message_end(Opcode type) {
  if (failure_) return;
  if (mode_ == Mode::Base64) {
    if (!b64_carry_.empty()) fail(static_cast<uint16_t>(CloseCode::InvalidPayload), "invalid base64");
    b64_carry_.clear();
    b64_padded_ = false;
  } else if (mode_ == Mode::NetwineV1) {
    if (type == Opcode::Binary) {
      if (auto f = v1_.end_binary()) fail(f->code, std::move(f->reason));
    } else {
      handle_v1_ack(v1_.end_text());
    }
  }
}

void WsConnection::upstream_v1_piece(std::span<const uint8_t> bytes) {
  size_t i = v1_.take_header(bytes);
  if (!v1_.have_header() || i == bytes.size()) return;
  size_t len = bytes.size() - i;
  upstream(v1_.offset(), bytes.data() + i, len);
  v1_.advance(len);
}

// Decodes whole quads as they arrive and carries a cut quad over to the next
// piece; padding may only end the message.
void WsConnection::upstream_base64_piece(std::span<const uint8_t> bytes) {
  std::string text = std::move(b64_carry_);
  b64_carry_.clear();
  text.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  size_t whole = text.size() / 4 * 4;
  b64_carry_.assign(text, whole, std::string::npos);
  if (whole == 0) return;
  auto decoded = b64_padded_ ? std::nullopt : tunnel::base64_decode(std::string_view(text).substr(0, whole));
  if (!decoded) {
    fail(static_cast<uint16_t>(CloseCode::InvalidPayload), "invalid base64");
    return;
  }
  b64_padded_ = text[whole - 1] == '=';
  if (session_ && !decoded->empty()) upstream(session_->upstream_offset(), decoded->data(), decoded->size());
}

void WsConnection::handle_v1_ack(const v1::Reader::Ack& ack) {
  if (ack.failure) {
    fail(ack.failure->code, ack.failure->reason);
    return;
  }
  if (!session_) return;  // detached while closing: nothing to acknowledge to
  if (!session_->ack(ack.offset)) fail(static_cast<uint16_t>(CloseCode::ProtocolError),
                                       v1::ack_past_reason(ack.offset, session_ ? session_->sent_offset() : 0));
  // ack() may have retired the session (every byte acknowledged after its close
  // was delivered): on_detached() has cleared session_ then.
}

void WsConnection::upstream(uint64_t offset, const uint8_t* data, size_t len) {
  if (!session_ || len == 0) return;
  uint64_t next = 0;
  switch (session_->send_upstream(offset, data, len, next)) {
    case tunnel::Session::SendStatus::Applied:
      break;
    case tunnel::Session::SendStatus::Duplicate:
      break;  // a resumed client resending what arrived before
    case tunnel::Session::SendStatus::Gap:
      fail(v1::kCloseOffsetGap, v1::gap_reason(next));
      break;
    case tunnel::Session::SendStatus::Closed:
      break;  // the session is ending; its close frame follows
  }
}

void WsConnection::on_ping(std::span<const uint8_t> payload) {
  // RFC 6455 5.5.3: the Pong carries the Ping's payload. None after our Close.
  if (phase_ == Phase::Open) send_frame(Opcode::Pong, payload);
}

void WsConnection::on_close(std::optional<uint16_t> code, std::string_view reason) {
  got_close_ = true;
  client_code_ = code;
  log::debug("websocket ", peer_, ": client closed with ", code ? *code : 1005, " ", reason);
}

// Records a failure found inside a decoder callback; feed_input() acts on it.
void WsConnection::fail(uint16_t code, std::string reason) {
  if (!failure_) failure_.emplace(code, std::move(reason));
}

void WsConnection::after_batch() {
  if (phase_ == Phase::Done) return;
  ack_upstream();
  update_reading();
}

// netwine.v1: "A N" once the target's socket has taken more upstream bytes (after
// a read, and as the target's output drains: on_upstream_room()).
void WsConnection::ack_upstream() {
  if (mode_ != Mode::NetwineV1 || phase_ != Phase::Open || !session_ || bulk_) return;
  uint64_t written = session_->upstream_written();
  if (written == up_ack_sent_) return;
  up_ack_sent_ = written;
  send_text(v1::ack_text(written));
}

// Back-pressure: while the target has not taken session-buffer bytes, stop
// reading the client; on_upstream_room() resumes. TCP then slows the client.
void WsConnection::update_reading() {
  if (phase_ != Phase::Open || !bev_) return;
  if (session_ && session_->upstream_full()) {
    if (!reading_paused_) set_reading(false);
    reading_paused_ = true;
  }
}

void WsConnection::on_upstream_room() {
  ack_upstream();
  if (!reading_paused_ || !bev_ || phase_ == Phase::Done || bulk_) return;
  if (session_ && session_->upstream_full()) return;
  reading_paused_ = false;
  set_reading(true);
}

// The client's Close arrived (answering ours, or starting the handshake).
void WsConnection::on_client_close() {
  uint16_t code = client_code_.value_or(static_cast<uint16_t>(CloseCode::NoStatus));
  // 1000, no code, and application codes mean "done"; 1001 and error codes
  // mean the connection went wrong, so a netwine.v1 session stays resumable.
  bool done = code == 1000 || code == 1005 || (code >= 3000 && code <= 4999);
  // Echo the code (RFC 6455 5.5.1); for no code, a Close without payload.
  if (phase_ == Phase::Open) queue_close(code, "");
  enter_final_phase(Phase::Flushing);
  leave_session(done ? Leave::End : Leave::Resume);
}

// --------------------------------------------------------------- send path

void WsConnection::on_session_update() {
  pump();
  if (phase_ != Phase::Open && phase_ != Phase::Done) evtimer_add(kick_.get(), &kZeroTimeval);
}

void WsConnection::pump() {
  if (phase_ != Phase::Open || !session_ || !bev_ || bulk_) return;
  if (session_->state() == tunnel::Session::State::Connecting) return;
  evbuffer* out = bufferevent_get_output(bev_);
  uint64_t sent = session_->sent_offset();
  if (raw_fd_ >= 0 && evbuffer_get_length(out) == 0 && session_->unsent() > 0 &&
      session_->unsent() <= tunnel::Session::kDirectWriteMax) {
    // A small message and nothing queued (interactive traffic): write it now.
    // Through the bufferevent it would cost adding its write event, a wake-up
    // and deleting the event again — 3 of the ~14 system calls of a round trip
    // (docs/PERFORMANCE.md). Only what the socket does not take is queued.
    // Larger amounts keep the usual path: its write callbacks are where a busy
    // connection is found and lent to a bulk thread.
    if (mode_ == Mode::Base64) {
      static thread_local EvbufferPtr stage{evbuffer_new()};
      send_data_message(stage.get());
      evbuffer_write(stage.get(), raw_fd_);  // an error: the bufferevent meets it on what is left
      evbuffer_add_buffer(out, stage.get());
    } else {
      send_direct();
    }
  }
  while (session_->unsent() > 0 && evbuffer_get_length(out) < kOutputHighWater) send_data_message(out);
  if (session_->sent_offset() != sent) meter(static_cast<size_t>(session_->sent_offset() - sent), now_seconds());
  if (session_->ready_to_close()) {
    tunnel::Session* s = session_;
    begin_closing(wire_code(s->close_code()), s->close_reason());
    // May retire the session, which calls on_detached() and clears session_.
    // A resumable session with unacknowledged bytes stays attached: the
    // client's last acks still arrive before its Close.
    s->close_delivered();
  }
}

// One binary message of everything unsent (at most kDirectWriteMax) in one
// send() from the stack: header, netwine.v1 offset and payload together. What
// the socket does not take is queued; an error leaves it all queued, for the
// bufferevent's write to meet.
void WsConnection::send_direct() {
  static_assert(tunnel::Session::kDirectWriteMax <= kMaxDataMessage);
  uint8_t msg[kMaxHeader + v1::kOffsetHeader + tunnel::Session::kDirectWriteMax];
  size_t n = std::min(session_->unsent(), tunnel::Session::kDirectWriteMax);
  size_t extra = mode_ == Mode::NetwineV1 ? v1::kOffsetHeader : 0;
  size_t at = encode_header(msg, Opcode::Binary, true, extra + n, nullptr);
  if (extra) {
    v1::put_offset(msg + at, session_->sent_offset());
    at += extra;
  }
  size_t total = at + session_->pull(msg + at, n);
  ssize_t w = ::send(raw_fd_, msg, total, MSG_DONTWAIT | MSG_NOSIGNAL);
  size_t done = w > 0 ? static_cast<size_t>(w) : 0;
  if (done < total) evbuffer_add(bufferevent_get_output(bev_), msg + done, total - done);
}

void WsConnection::send_data_message(evbuffer* out) {
  uint8_t head[kMaxHeader];
  if (mode_ == Mode::Base64) {
    size_t n = std::min(session_->unsent(), kBase64RawChunk);
    scratch_.resize(n);
    n = session_->pull(scratch_.data(), n);
    size_t enc = tunnel::base64_encoded_size(n);
    evbuffer_add(out, head, encode_header(head, Opcode::Text, true, enc, nullptr));
    evbuffer_iovec v;
    evbuffer_reserve_space(out, static_cast<ev_ssize_t>(enc), &v, 1);
    tunnel::base64_encode(scratch_.data(), n, static_cast<char*>(v.iov_base));
    v.iov_len = enc;
    evbuffer_commit_space(out, &v, 1);
    return;
  }
  size_t n = std::min(session_->unsent(), kMaxDataMessage);
  if (mode_ == Mode::NetwineV1) {
    uint64_t offset = session_->sent_offset();
    evbuffer_add(out, head, encode_header(head, Opcode::Binary, true, v1::kOffsetHeader + n, nullptr));
    uint8_t be[v1::kOffsetHeader];
    v1::put_offset(be, offset);
    evbuffer_add(out, be, sizeof be);
  } else {
    evbuffer_add(out, head, encode_header(head, Opcode::Binary, true, n, nullptr));
  }
  // Exactly the announced length: unsent() was checked above, nothing runs in
  // between. Non-resumable sessions move their chains here without a copy.
  session_->pull(out, n);
}

void WsConnection::send_frame(Opcode op, std::span<const uint8_t> payload) {
  if (!bev_) return;
  uint8_t head[kMaxHeader];
  evbuffer* out = bufferevent_get_output(bev_);
  evbuffer_add(out, head, encode_header(head, op, true, payload.size(), nullptr));
  if (!payload.empty()) evbuffer_add(out, payload.data(), payload.size());
}

void WsConnection::send_text(std::string_view text) {
  send_frame(Opcode::Text, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

void WsConnection::queue_close(uint16_t code, std::string_view reason) {
  if (!bev_) return;
  auto frame = encode_close(code, reason);
  evbuffer_add(bufferevent_get_output(bev_), frame.data(), frame.size());
}

// We start the closing handshake: send our Close, keep reading for the
// client's (and, for netwine.v1, its last acks).
void WsConnection::begin_closing(uint16_t code, std::string_view reason) {
  if (phase_ != Phase::Open) return;
  log::debug("websocket ", peer_, ": closing with ", code, " ", reason);
  queue_close(code, reason);
  phase_ = Phase::Closing;
  evtimer_del(heartbeat_.get());
  if (bev_) {
    bufferevent_setwatermark(bev_, EV_WRITE, 0, 0);  // hear when everything is out
    if (reading_paused_) set_reading(true);  // the client's Close must get in
  }
  reading_paused_ = false;
  arm_close_timer();
}

// RFC 6455 7.1.7 "Fail the WebSocket Connection": send a Close with the reason,
// stop processing input, close once it is out.
void WsConnection::fail_connection(uint16_t code, std::string_view reason) {
  if (phase_ == Phase::Done || phase_ == Phase::Flushing || phase_ == Phase::Lingering) return;
  log::info("websocket ", peer_, ": failing the connection: ", code, " ", reason);
  if (phase_ == Phase::Open) queue_close(code, reason);
  enter_final_phase(Phase::Flushing);
  leave_session(Leave::Resume);
}

// ------------------------------------------------------------------ ending

void WsConnection::enter_final_phase(Phase p) {
  bool was_open = phase_ == Phase::Open;
  phase_ = p;
  evtimer_del(heartbeat_.get());
  if (bev_) {
    bufferevent_setwatermark(bev_, EV_WRITE, 0, 0);
    // Keep reading (and discarding) so the kernel never holds unread input
    // when we close: that would send a RST, which may destroy our Close frame
    // before the client reads it.
    set_reading(true);
  }
  reading_paused_ = false;
  if (was_open) arm_close_timer();
}

void WsConnection::arm_close_timer() {
  close_queue_mark_ = bev_ ? evbuffer_get_length(bufferevent_get_output(bev_)) : 0;
  timeval tv = to_timeval(kCloseTimeoutSeconds);
  evtimer_add(close_timer_.get(), &tv);
}

// The closing handshake has a deadline, but a slow client still reading a large
// queue (data before our Close) gets more time as long as the queue shrinks.
void WsConnection::do_close_timeout() {
  if (phase_ == Phase::Done) return;
  size_t queued = bev_ ? evbuffer_get_length(bufferevent_get_output(bev_)) : 0;
  if (phase_ != Phase::Lingering && queued > 0 && queued < close_queue_mark_) {
    arm_close_timer();
    return;
  }
  log::debug("websocket ", peer_, ": closing handshake timed out");
  close_connection();
}

void WsConnection::do_write() {
  if (phase_ == Phase::Done || bulk_) return;
  pump();  // the output drained below the low-watermark: refill it
  settle();
  maybe_lend();
}

void WsConnection::do_event(short what) {
  if (phase_ == Phase::Done || bulk_) return;  // the relay thread finds it too
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
    if (phase_ == Phase::Open || phase_ == Phase::Closing) {
      log::debug("websocket ", peer_, ": connection lost",
                 (what & BEV_EVENT_ERROR) ? std::string(": ") + evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR())
                                          : std::string());
    }
    close_connection();
  }
}

// Pings a peer that has been silent for ws-ping-interval; drops one that stays
// silent for ws-pong-timeout after the ping. Any input counts as an answer.
void WsConnection::do_heartbeat() {
  if (phase_ != Phase::Open) return;
  const Config& c = m_.config();
  double now = now_seconds();
  if (awaiting_pong_) {
    if (last_rx_ >= ping_sent_at_) {
      awaiting_pong_ = false;
    } else if (reading_paused_ && mode_ == Mode::NetwineV1 && session_ && session_->downstream_held() &&
               now - ping_sent_at_ >= c.ws_pong_timeout) {
      // Stuck both ways: we wait for the target to take upstream, the target
      // for us to read it, and we for the client's acknowledgements, which sit
      // behind the upstream we do not read (a client over its window:
      // ws_connection.hpp, "A <offset>"). Nothing frees that but a new
      // connection: drop this one; the session stays, and the client resumes.
      log::info("websocket ", peer_, ": stalled both ways with no answer to a ping (client over its upstream "
                "window): dropping; the session can be resumed");
      close_connection();
      return;
    } else if (reading_paused_) {
      // We are not reading (back-pressure), so an answer could not be seen.
      arm_heartbeat(c.ws_pong_timeout);
      return;
    } else if (now - ping_sent_at_ >= c.ws_pong_timeout) {
      log::info("websocket ", peer_, ": no answer to a ping within ", c.ws_pong_timeout, "s: dropping");
      close_connection();
      return;
    } else {
      arm_heartbeat(c.ws_pong_timeout - (now - ping_sent_at_));
      return;
    }
  }
  double idle = now - last_rx_;
  if (idle >= c.ws_ping_interval) {
    send_frame(Opcode::Ping, {});
    ping_sent_at_ = now;
    awaiting_pong_ = true;
    arm_heartbeat(c.ws_pong_timeout);
  } else {
    arm_heartbeat(c.ws_ping_interval - idle);
  }
}

void WsConnection::arm_heartbeat(double seconds) {
  timeval tv = to_timeval(seconds);
  evtimer_add(heartbeat_.get(), &tv);
}

void WsConnection::on_detached(int code, const std::string& reason) {
  // The session is gone or another transport took it: never touch it again.
  session_ = nullptr;
  if (phase_ != Phase::Open) return;
  begin_closing(wire_code(code), reason);
  evtimer_add(kick_.get(), &kZeroTimeval);
}

void WsConnection::leave_session(Leave how) {
  if (!session_) return;
  tunnel::Session* s = session_;
  session_ = nullptr;
  // Non-resumable sessions end with their WebSocket; client_close() flushes
  // upstream to the target before ending, which is what a closing client means.
  if (how == Leave::End || !s->resumable()) s->client_close();
  else s->detach(this);
}

// Frees the connection when the phase says it is finished. Runs only at the
// end of our own libevent callbacks.
void WsConnection::settle() {
  if (phase_ == Phase::Done || !bev_) return;
  bool drained = evbuffer_get_length(bufferevent_get_output(bev_)) == 0;
  if (drained && phase_ != Phase::Open) m_.check_drained();  // a shutdown may wait for us
  if (phase_ != Phase::Flushing || !drained) return;
  if (raw_fd_ >= 0 && ::shutdown(raw_fd_, SHUT_WR) == 0) {
    // Lingering close: the client sees our FIN after our Close frame and
    // closes its side; do_event() then frees the connection.
    phase_ = Phase::Lingering;
    return;
  }
  close_connection();
}

void WsConnection::close_connection() {
  if (phase_ == Phase::Done) return;
  if (bulk_) take_back();
  // Done first: leaving the session may call on_detached(), which must not
  // start a closing handshake on a connection about to go.
  phase_ = Phase::Done;
  leave_session(Leave::Resume);
  evtimer_del(heartbeat_.get());
  evtimer_del(close_timer_.get());
  evtimer_del(kick_.get());
  if (bulk_done_) event_del(bulk_done_.get());
  reader_.reset();  // before the socket closes
  m_.front().unwatch_close(conn_);
  // Frees the request and the bufferevent (closing the socket). Safe inside
  // the bufferevent's own callbacks: libevent defers the free (LIBEVENT-NOTES).
  evhttp_connection_free(conn_);
  conn_ = nullptr;
  bev_ = nullptr;
  req_ = nullptr;
  release();
}

// evhttp freed the connection (evhttp_free at shutdown): bev_ and conn_ are
// gone. This runs inside evhttp_free(), never inside one of our callbacks, and
// possibly after the Manager has been destroyed, so the object is freed here
// directly instead of through Manager::dispose().
void WsConnection::on_connection_freed() {
  if (phase_ == Phase::Done) return;
  if (bulk_) take_back();
  phase_ = Phase::Done;
  bev_ = nullptr;
  conn_ = nullptr;
  req_ = nullptr;
  reader_.reset();
  leave_session(Leave::Resume);
  evtimer_del(heartbeat_.get());
  evtimer_del(close_timer_.get());
  evtimer_del(kick_.get());
  if (bulk_done_) event_del(bulk_done_.get());
  live().erase(this);  // destroys *this: nothing may follow
}

// Gives up ownership to the Manager, which frees the object from a zero-timeout
// event, outside of this call stack (STYLE habit 6).
void WsConnection::release() {
  auto it = live().find(this);
  if (it == live().end()) return;
  std::unique_ptr<tunnel::Transport> self = std::move(it->second);
  live().erase(it);
  m_.dispose(std::move(self));
}

// ------------------------------------------------------------ bulk relaying

// Counts bytes relayed either way in windows of kBulkWindow seconds.
void WsConnection::meter(size_t bytes, double now) {
  if (now - meter_start_ > kBulkWindow) {
    meter_start_ = now;
    meter_bytes_ = 0;
  }
  meter_bytes_ += bytes;
}

// Lends a busy binary WebSocket to a relay thread (bulk_relay.hpp). Runs at the
// end of our own bufferevent callbacks, where nothing up the stack holds state.
void WsConnection::maybe_lend() {
  if (meter_bytes_ < m_.config().bulk_after || bulk_) return;
  meter_bytes_ = 0;
  meter_start_ = now_seconds();
  if ((mode_ != Mode::Raw && mode_ != Mode::NetwineV1) || raw_fd_ < 0 || phase_ != Phase::Open || !bev_ ||
      !session_ || failure_ || !session_->lendable() || decoder_.closed() || decoder_.failed())
    return;
  if (!BulkRelay::reserve(m_.config().bulk_threads)) return;
  if (!to_target_) {  // made at the first loan: most connections never have one
    bulk_done_.reset(event_new(m_.base(), -1, 0, &WsConnection::on_bulk_done, this));
    to_target_.reset(evbuffer_new());
    from_target_.reset(evbuffer_new());
    to_client_.reset(evbuffer_new());
  }
  lent_counts_ = std::make_unique<tunnel::LentCounters>();
  tunnel::Session::LentOffsets offsets;
  evutil_socket_t target_fd = session_->lend_target(to_target_.get(), from_target_.get(), lent_counts_.get(),
                                                    mode_ == Mode::NetwineV1 ? &offsets : nullptr);
  if (target_fd < 0) {
    lent_counts_.reset();
    BulkRelay::unreserve();
    return;
  }
  set_reading(false);
  bufferevent_disable(bev_, EV_READ | EV_WRITE);
  evbuffer_add_buffer(rx_.get(), bufferevent_get_input(bev_));
  sockio::take_output(bev_, to_client_.get());  // the stream goes on where it is
  evtimer_del(heartbeat_.get());
  event* done = bulk_done_.get();
  bulk_ = std::make_unique<BulkRelay>(
      raw_fd_, target_fd, decoder_,
      BulkRelay::Buffers{rx_.get(), to_target_.get(), from_target_.get(), to_client_.get()},
      BulkRelay::Limits{static_cast<size_t>(m_.config().session_buffer), kOutputHighWater, kBulkIdleMs,
                        static_cast<size_t>(m_.config().bulk_after / 2)},
      *lent_counts_, [done] { event_active(done, EV_READ, 0); });
  if (mode_ == Mode::NetwineV1) {
    bulk_v1_ = std::make_unique<BulkRelay::V1>(
        BulkRelay::V1{&v1_, offsets, static_cast<size_t>(m_.config().session_buffer), up_ack_sent_});
    bulk_->set_v1(bulk_v1_.get());
  }
  if (!bulk_->start()) {
    log::warn("websocket ", peer_, ": no relay thread could be started; relaying on the event loop");
    take_back();
    return;
  }
  log::debug("websocket ", peer_, ": busy, relayed by a thread of its own");
}

// Stops the relay thread (it finishes its current read or write) and takes
// sockets and queues back. Why the thread stopped is acted on from do_bulk_done(),
// from the event loop: this may run inside Session::end().
void WsConnection::take_back() {
  bulk_result_ = bulk_->stop();
  bulk_.reset();
  BulkRelay::unreserve();
  if (bulk_v1_) {  // the offsets and kept bytes went back in place (the Session's)
    up_ack_sent_ = bulk_v1_->up_ack_sent;
    bulk_v1_.reset();
  }
  if (session_) {
    session_->take_target_back(to_target_.get(), from_target_.get());
  } else {
    evbuffer_drain(to_target_.get(), evbuffer_get_length(to_target_.get()));
    evbuffer_drain(from_target_.get(), evbuffer_get_length(from_target_.get()));
  }
  lent_counts_.reset();
  if (bev_) {
    evbuffer_add_buffer(bufferevent_get_output(bev_), to_client_.get());
    bufferevent_enable(bev_, EV_WRITE);
    set_reading(true);
  } else {
    evbuffer_drain(to_client_.get(), evbuffer_get_length(to_client_.get()));
  }
  reading_paused_ = false;
  last_rx_ = now_seconds();
  if (phase_ == Phase::Open) {
    arm_heartbeat(m_.config().ws_ping_interval);
    update_reading();
  }
  event_active(bulk_done_.get(), EV_READ, 0);
}

void WsConnection::do_bulk_done() {
  if (bulk_) take_back();  // the thread stopped by itself
  if (!bulk_result_ || phase_ == Phase::Done) return;
  BulkRelay::Result r = std::move(*bulk_result_);
  bulk_result_.reset();
  log::debug("websocket ", peer_, ": back on the event loop: ", BulkRelay::describe(r.why));
  if (r.why == BulkRelay::Why::ClientClosed) {
    got_close_ = true;
    client_code_ = r.code;
    on_client_close();
  } else if (r.why == BulkRelay::Why::ProtocolError) {
    fail_connection(r.code.value_or(static_cast<uint16_t>(CloseCode::ProtocolError)), r.reason);
  }
  pump();
  settle();
}

}  // namespace

// ---------------------------------------------------------------- upgrade

size_t delivering_connections() {
  size_t n = 0;
  for (const auto& entry : live()) n += entry.first->delivering() ? 1 : 0;
  return n;
}

void close_all_connections() {
  std::vector<WsConnection*> all;
  for (const auto& entry : live()) all.push_back(entry.first);
  for (WsConnection* c : all) c->abandon();
}

void handle_upgrade(tunnel::Manager& m, evhttp_request* req, const UpgradeParams& p) {
  std::string upgrade = joined_header(req, "Upgrade");
  std::string connection = joined_header(req, "Connection");
  std::string version = joined_header(req, "Sec-WebSocket-Version");
  std::string key = joined_header(req, "Sec-WebSocket-Key");
  std::string protocols = joined_header(req, "Sec-WebSocket-Protocol");
  HandshakeInput in{};
  in.method = http::method_name(evhttp_request_get_command(req));
  in.http11_or_later = req->major > 1 || (req->major == 1 && req->minor >= 1);
  in.upgrade = upgrade;
  in.connection = connection;
  in.version = version;
  in.key = key;
  in.protocols = protocols;
  HandshakeResult hs = evaluate_handshake(in, kSubprotocols);
  if (hs.status == 426) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Sec-WebSocket-Version",
                      std::string(kWebSocketVersion).c_str());
    http::send_text(req, 426, "426 upgrade required: " + hs.error + "\n");
    return;
  }
  if (hs.status != 101) {
    http::send_text(req, hs.status, std::to_string(hs.status) + " bad request: " + hs.error + "\n");
    return;
  }

  tunnel::Manager::OpenError err{};
  if (!m.client_allowed(req, err)) {
    http::send_json_error(req, err.status, err.code, err.message);
    return;
  }
  Mode mode = mode_for(hs.subprotocol);
  // Every WebSocket stays on the loop its connection is on (connections take
  // turns between the loops: front.hpp); a resume arrives on its session's.
  auto conn = std::make_unique<WsConnection>(m, req, mode);
  tunnel::Session* s = nullptr;
  if (!p.key.empty()) {
    if (mode != Mode::NetwineV1) {
      http::send_json_error(req, 400, "bad_subprotocol",
                            "attaching to a session needs the netwine.v1 subprotocol");
      return;
    }
    s = m.find(p.key);
    if (!s) {
      http::send_json_error(req, 404, "unknown_session", "no session with this key (it may have ended)");
      return;
    }
    if (!s->resumable()) {
      http::send_json_error(req, 409, "not_resumable",
                            "this session belongs to a binary/base64 WebSocket and cannot be attached to");
      return;
    }
    if (std::string e = s->attach(conn.get(), p.ack); !e.empty()) {
      http::send_json_error(req, 409, "bad_offset", e);
      return;
    }
  } else {
    s = m.open_session(req, p.target, mode == Mode::NetwineV1, err);
    if (!s) {
      http::send_json_error(req, err.status, err.code, err.message);
      return;
    }
    if (std::string e = s->attach(conn.get(), 0); !e.empty()) {
      http::send_json_error(req, 500, "internal_error", e);
      return;
    }
  }
  WsConnection* c = conn.get();
  live()[c] = std::move(conn);
  c->start(s, hs);
}

}  // namespace netwine::ws
