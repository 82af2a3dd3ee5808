#include "tunnel/http_transport.hpp"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <nlohmann/json.hpp>

#include <utility>

#include "http/http_util.hpp"
#include "log.hpp"
#include "front.hpp"
#include "tunnel/codec.hpp"
#include "tunnel/manager.hpp"

namespace netwine::tunnel {
namespace {

// Payload bytes per data frame. Text frames grow by 4/3 in base64.
constexpr size_t kFramePayload = 48 * 1024;
// Stop producing stream frames while this much is queued for the client: the
// rest waits in the session buffer, which is bounded (LIBEVENT-NOTES back-pressure).
constexpr size_t kStreamHighWater = 256 * 1024;
// A poll answer carries at most this much payload; the next poll gets the rest.
constexpr size_t kPollMaxPayload = 1024 * 1024;
// While a response is held, the client may pipeline at most this much input.
constexpr size_t kHeldInputCap = 64 * 1024;

bool parse_u64(const std::optional<std::string>& v, uint64_t& out) {
  out = 0;
  if (!v) return true;
  if (v->empty() || v->size() > 19) return false;
  for (char c : *v) {
    if (c < '0' || c > '9') return false;
    out = out * 10 + static_cast<uint64_t>(c - '0');
  }
  return true;
}

// Appends one data frame of up to `max` unsent session bytes to `out`.
size_t append_data_frame(Session& s, Framing framing, evbuffer* out, size_t max) {
  size_t n = std::min(max, s.unsent());
  if (n == 0) return 0;
  std::string head = data_header(framing, s.sent_offset(), n);
  evbuffer_add(out, head.data(), head.size());
  if (framing == Framing::Binary) {
    s.pull(out, n);
  } else {
    std::vector<uint8_t> raw(n);
    s.pull(raw.data(), n);
    size_t enc = base64_encoded_size(n);
    evbuffer_iovec v;
    evbuffer_reserve_space(out, static_cast<ev_ssize_t>(enc + 1), &v, 1);
    base64_encode(raw.data(), n, static_cast<char*>(v.iov_base));
    static_cast<char*>(v.iov_base)[enc] = '\n';
    v.iov_len = enc + 1;
    evbuffer_commit_space(out, &v, 1);
  }
  return n;
}

// The headers of a stream (`streaming`) or a poll's answer. Each header costs a
// long poll ~2.5k instructions in evhttp (copies, a printf, frees): a poll's
// answer is complete when sent, so nginx's X-Accel-Buffering is left to streams.
void set_data_headers(evhttp_request* req, Framing framing, bool streaming) {
  evkeyvalq* out = evhttp_request_get_output_headers(req);
  evhttp_add_header(out, "Content-Type",
                    framing == Framing::Text ? "text/plain; charset=us-ascii" : "application/octet-stream");
  evhttp_add_header(out, "Cache-Control", "no-store, no-transform");
  if (streaming) evhttp_add_header(out, "X-Accel-Buffering", "no");  // nginx: do not buffer this response
  evhttp_add_header(out, "X-Content-Type-Options", "nosniff");
}

void reply_connect_failure(evhttp_request* req, Session& s) {
  const auto& f = s.connect_failure();
  if (f.status) http::send_json_error(req, f.status, f.code, f.message);
  else if (s.close_code() == close_code::kGoingAway) http::send_json_error(req, 503, "shutting_down", s.close_reason());
  else http::send_json_error(req, 502, "target_closed", s.close_reason());
}

// ------------------------------------------------------------------- stream

// A held-open response carrying frames (PROTOCOL.md "Streaming"). Lives from the
// request until the response ends; freed through Manager::dispose.
class StreamTransport final : public Transport {
 public:
  StreamTransport(Manager& m, evhttp_request* req, Session* s, Framing framing, bool is_open, bool pad)
      : m_(m), req_(req), conn_(evhttp_request_get_connection(req)), s_(s), framing_(framing),
        is_open_(is_open), pad_(pad) {
    heartbeat_.reset(evtimer_new(m.base(), &StreamTransport::on_heartbeat, this));
  }
  ~StreamTransport() override = default;
  const char* name() const override { return "stream"; }

  // Starts the response (attach case) or waits for the target (open case).
  void start() {
    // If the client goes away, evhttp frees the connection: we hear it here.
    m_.front().watch_close(conn_, [this] { on_client_gone(); });
    if (!is_open_) begin_response();
  }

  void on_session_update() override {
    if (!s_) return;
    if (!started_) {
      if (s_->state() == Session::State::Connecting) return;
      if (s_->state() == Session::State::Open || s_->unsent() > 0) {
        begin_response();
      } else {
        // Connecting failed: an ordinary error answer, not a stream.
        finished_ = true;
        m_.front().unwatch_close(conn_);
        Session* s = std::exchange(s_, nullptr);
        reply_connect_failure(req_, *s);
        s->detach(this);
        release();
        return;
      }
    }
    pump();
  }

  void on_detached(int code, const std::string& reason) override {
    s_ = nullptr;
    if (finished_) return;
    if (!started_) {
      finished_ = true;
      m_.front().unwatch_close(conn_);
      http::send_json_error(req_, code == close_code::kGoingAway ? 503 : 410, "session_closed", reason);
      release();
      return;
    }
    if (code != close_code::kReplaced) write(close_line(code, reason));
    end_response();
  }

 private:
  void begin_response() {
    started_ = true;
    // HTTP/1.0 + keep-alive would make evhttp send Content-Length: 0 and then
    // stream (LIBEVENT-NOTES): drop the request's Connection header first.
    evhttp_remove_header(evhttp_request_get_input_headers(req_), "Connection");
    set_data_headers(req_, framing_, true);
    http::add_date_header(evhttp_request_get_output_headers(req_));
    evhttp_send_reply_start(req_, 200, "OK");
    if (bufferevent* bev = evhttp_connection_get_bufferevent(conn_))
      bufferevent_setwatermark(bev, EV_READ, 0, kHeldInputCap);
    std::string head;
    if (pad_) {
      // Several lines when needed: readers need only accept lines of kMaxControlLine.
      size_t left = m_.config().stream_padding;
      while (left > 0) {
        size_t n = std::min(left, kMaxControlLine);
        if (left - n > 0 && left - n < 3) n -= 3;  // the last line needs "P \n" at least
        head += padding_line(n);
        left -= std::min(left, n);
      }
    }
    if (is_open_) head += ok_line(s_->key());
    // An attach starts with a frame even when nothing waits to be sent: Chrome's
    // XMLHttpRequest reports no headers (readyState 2) before the first body byte,
    // so a client re-attaching to a quiet session would never see the stream work
    // (its close() waited on that until it timed out).
    if (head.empty()) head = heartbeat_line();
    write(head);
    arm_heartbeat();
  }

  void pump() {
    if (!s_ || finished_ || !started_) return;
    bufferevent* bev = evhttp_connection_get_bufferevent(conn_);
    evbuffer* queued = bev ? bufferevent_get_output(bev) : nullptr;
    EvbufferPtr out(evbuffer_new());
    while (s_->unsent() > 0 && body_bytes_ < m_.config().stream_recycle_bytes &&
           (!queued || evbuffer_get_length(queued) + evbuffer_get_length(out.get()) < kStreamHighWater)) {
      append_data_frame(*s_, framing_, out.get(), kFramePayload);
    }
    if (evbuffer_get_length(out.get())) write(out.get());
    if (s_->ready_to_close()) {
      write(close_line(s_->close_code(), s_->close_reason()));
      Session* s = std::exchange(s_, nullptr);
      s->detach(this);
      s->close_delivered();
      end_response();
      return;
    }
    if (body_bytes_ >= m_.config().stream_recycle_bytes) {
      // Old browsers keep the whole responseText: end this response and let the
      // client re-attach with its ack.
      write(recycle_line());
      Session* s = std::exchange(s_, nullptr);
      s->detach(this);
      end_response();
    }
  }

  void write(const std::string& text) {
    EvbufferPtr b(evbuffer_new());
    evbuffer_add(b.get(), text.data(), text.size());
    write(b.get());
  }
  void write(evbuffer* b) {
    body_bytes_ += evbuffer_get_length(b);
    wrote_since_tick_ = true;
    // The callback fires when the output has drained: refill from the session.
    evhttp_send_reply_chunk_with_cb(req_, b, &StreamTransport::on_drained, this);
  }

  static void on_drained(evhttp_connection*, void* self) { static_cast<StreamTransport*>(self)->pump(); }

  void arm_heartbeat() {
    timeval tv = to_timeval(m_.config().heartbeat_interval);
    evtimer_add(heartbeat_.get(), &tv);
  }
  static void on_heartbeat(evutil_socket_t, short, void* self) {
    auto* t = static_cast<StreamTransport*>(self);
    if (t->finished_) return;
    if (!t->wrote_since_tick_) t->write(heartbeat_line());
    t->wrote_since_tick_ = false;
    t->arm_heartbeat();
  }

  void end_response() {
    if (finished_) return;
    finished_ = true;
    evtimer_del(heartbeat_.get());
    m_.front().unwatch_close(conn_);
    if (bufferevent* bev = evhttp_connection_get_bufferevent(conn_)) {
      bufferevent_setwatermark(bev, EV_READ, 0, 0);
    }
    http::log_request_done(req_, 200, body_bytes_);
    evhttp_send_reply_end(req_);
    release();
  }

  void on_client_gone() {
    // evhttp is freeing the connection; the request's connection is already gone,
    // chunk calls would do nothing. Ending the reply frees the request.
    if (finished_) return;
    finished_ = true;
    evtimer_del(heartbeat_.get());
    if (Session* s = std::exchange(s_, nullptr)) s->detach(this);
    http::log_request_done(req_, started_ ? 200 : 499, body_bytes_);
    http::free_abandoned(req_);
    release();
  }

  void release();

  Manager& m_;
  evhttp_request* req_;
  evhttp_connection* conn_;
  Session* s_;
  Framing framing_;
  bool is_open_, pad_;
  bool started_ = false, finished_ = false, wrote_since_tick_ = false;
  uint64_t body_bytes_ = 0;
  EventPtr heartbeat_;
};

// Transports that are alive, owned here until they hand themselves to dispose().
std::unordered_map<Transport*, std::unique_ptr<Transport>>& live() {
  thread_local std::unordered_map<Transport*, std::unique_ptr<Transport>> table;  // each loop its own
  return table;
}

// Gives `t` up from live() to the Manager, which frees it later, outside of
// this call stack. A transport not (or no longer) in live() is left alone.
void release_live(Manager& m, Transport* t) {
  auto it = live().find(t);
  if (it == live().end()) return;
  auto self = std::move(it->second);
  live().erase(it);
  m.dispose(std::move(self));
}

void StreamTransport::release() { release_live(m_, this); }

// --------------------------------------------------------------------- poll

// A long poll (PROTOCOL.md "Long-polling"): answers at once when data or the close
// is ready, else holds the request until data arrives or poll-wait passes.
class PollTransport final : public Transport {
 public:
  PollTransport(Manager& m, evhttp_request* req, Session* s, Framing framing)
      : m_(m), req_(req), conn_(evhttp_request_get_connection(req)), s_(s), framing_(framing) {
    timer_.reset(evtimer_new(m.base(), &PollTransport::on_timeout, this));
  }
  const char* name() const override { return "poll"; }

  void start() {
    if (ready()) {
      answer();
      return;
    }
    m_.front().watch_close(conn_, [this] { on_client_gone(); });
    // evhttp does not notice a client leaving while no reply has started
    // (LIBEVENT-NOTES, libevent #78/#666): read with no read callback so EOF
    // reaches evhttp's event callback, which frees the connection and tells us.
    if (bufferevent* bev = evhttp_connection_get_bufferevent(conn_)) {
      bufferevent_event_cb ecb = nullptr;
      bufferevent_data_cb wcb = nullptr;
      void* arg = nullptr;
      bufferevent_getcb(bev, nullptr, &wcb, &ecb, &arg);
      bufferevent_setcb(bev, nullptr, wcb, ecb, arg);
      bufferevent_setwatermark(bev, EV_READ, 0, kHeldInputCap);
      bufferevent_enable(bev, EV_READ);
      watching_ = true;
    }
    timeval tv = to_timeval(m_.config().poll_wait);
    evtimer_add(timer_.get(), &tv);
  }

  void on_session_update() override {
    if (s_ && !answered_ && ready()) answer();
  }

  void on_detached(int code, const std::string& reason) override {
    s_ = nullptr;
    if (answered_) return;
    std::string body = code == close_code::kReplaced ? "" : close_line(code, reason);
    respond(body);
  }

 private:
  bool ready() const {
    return s_->state() != Session::State::Connecting && (s_->unsent() > 0 || s_->ready_to_close());
  }

  void answer() {
    EvbufferPtr out(evbuffer_new());
    size_t total = 0;
    while (s_->unsent() > 0 && total < kPollMaxPayload)
      total += append_data_frame(*s_, framing_, out.get(), kFramePayload);
    Session* s = std::exchange(s_, nullptr);
    bool closing = s->ready_to_close();
    if (closing) {
      std::string c = close_line(s->close_code(), s->close_reason());
      evbuffer_add(out.get(), c.data(), c.size());
    }
    s->detach(this);
    if (closing) s->close_delivered();
    respond(out.get());
  }

  void respond(const std::string& body) {
    EvbufferPtr b(evbuffer_new());
    evbuffer_add(b.get(), body.data(), body.size());
    respond(b.get());
  }

  void respond(evbuffer* body) {
    answered_ = true;
    evtimer_del(timer_.get());
    m_.front().unwatch_close(conn_);
    if (bufferevent* bev = evhttp_connection_get_bufferevent(conn_))
      bufferevent_setwatermark(bev, EV_READ, 0, 0);
    set_data_headers(req_, framing_, false);
    http::send_reply(req_, 200, nullptr, body);
    release();
  }

  static void on_timeout(evutil_socket_t, short, void* self) {
    auto* t = static_cast<PollTransport*>(self);
    if (t->answered_) return;
    Session* s = std::exchange(t->s_, nullptr);
    if (s) s->detach(t);
    t->respond(std::string());  // empty: nothing happened, poll again
  }

  void on_client_gone() {
    if (answered_) return;
    answered_ = true;
    evtimer_del(timer_.get());
    if (Session* s = std::exchange(s_, nullptr)) s->detach(this);
    http::log_request_done(req_, 499, 0);  // the client closed the request first
    http::free_abandoned(req_);
    release();
  }

  void release() { release_live(m_, this); }

  Manager& m_;
  evhttp_request* req_;
  evhttp_connection* conn_;
  Session* s_;
  Framing framing_;
  bool answered_ = false, watching_ = false;
  EventPtr timer_;
};

// The open request when the client will poll or attach later: answer "OK <key>"
// once the target is connected (or the error if it is not).
class OpenWaiter final : public Transport {
 public:
  OpenWaiter(Manager& m, evhttp_request* req, Session* s) : m_(m), req_(req), s_(s) {}
  const char* name() const override { return "open"; }
  void on_session_update() override {
    if (!s_ || s_->state() == Session::State::Connecting) return;
    Session* s = std::exchange(s_, nullptr);
    if (s->state() == Session::State::Open || s->unsent() > 0) {
      evhttp_add_header(evhttp_request_get_output_headers(req_), "Cache-Control", "no-store");
      http::send_text(req_, 200, ok_line(s->key()), "text/plain; charset=us-ascii");
      s->detach(this);  // the session now waits for a poll, stream or WebSocket
    } else {
      reply_connect_failure(req_, *s);
      s->detach(this);
    }
    release();
  }
  void on_detached(int code, const std::string& reason) override {
    if (!s_) return;
    s_ = nullptr;
    http::send_json_error(req_, code == close_code::kGoingAway ? 503 : 502, "session_closed", reason);
    release();
  }

 private:
  void release() { release_live(m_, this); }
  Manager& m_;
  evhttp_request* req_;
  Session* s_;
};

template <typename T, typename... Args>
T* make_live(Args&&... args) {
  auto t = std::make_unique<T>(std::forward<Args>(args)...);
  T* raw = t.get();
  live()[raw] = std::move(t);
  return raw;
}

bool parse_framing_param(evhttp_request* req, Framing& framing) {
  auto f = parse_framing(http::query_param(req, "framing").value_or("text"));
  if (!f) {
    http::send_json_error(req, 400, "bad_framing", "framing must be text or binary");
    return false;
  }
  framing = *f;
  return true;
}

// ----------------------------------------------------------------- held send

// A send the target cannot take yet: held until upstream room frees up, or
// answered 503 with Retry-After when poll-wait passes first.
struct HeldSend {
  Manager* m;
  evhttp_request* req;
  evhttp_connection* conn;
  std::string key;
  uint64_t offset;
  EvbufferPtr body;
  EventPtr timer;
};
std::unordered_map<std::string, std::unique_ptr<HeldSend>>& held_sends() {
  thread_local std::unordered_map<std::string, std::unique_ptr<HeldSend>> table;  // each loop its own
  return table;
}

void apply_send(Manager& m, evhttp_request* req, Session& s, uint64_t offset, evbuffer* body) {
  uint64_t next = 0;
  auto status = s.send_upstream(offset, body, next);
  switch (status) {
    case Session::SendStatus::Applied:
    case Session::SendStatus::Duplicate:
      http::send_text(req, 200, "OK " + std::to_string(next) + "\n", "text/plain; charset=us-ascii");
      return;
    case Session::SendStatus::Gap: {
      nlohmann::json j;
      j["error"] = "offset_gap";
      j["message"] = "send starts at " + std::to_string(offset) + " but the next expected offset is " +
                     std::to_string(next) + "; resend from there";
      j["expected"] = next;
      http::send_text(req, 409, j.dump() + "\n", "application/json");
      return;
    }
    case Session::SendStatus::Closed:
      http::send_json_error(req, 410, "session_closed",
                            s.close_reason().empty() ? "the session no longer takes data" : s.close_reason());
      return;
  }
  (void)m;
}

void finish_held(const std::string& key, bool timed_out);

void hold_send(Manager& m, evhttp_request* req, Session& s, uint64_t offset, evbuffer* body) {
  auto h = std::make_unique<HeldSend>();
  h->m = &m;
  h->req = req;
  h->conn = evhttp_request_get_connection(req);
  h->key = s.key();
  h->offset = offset;
  h->body.reset(evbuffer_new());
  evbuffer_add_buffer(h->body.get(), body);
  std::string key = s.key();
  h->timer.reset(evtimer_new(m.base(), [](evutil_socket_t, short, void* arg) {
    finish_held(*static_cast<std::string*>(arg), true);
  }, &h->key));
  timeval tv = to_timeval(m.config().poll_wait);
  evtimer_add(h->timer.get(), &tv);
  m.front().watch_close(h->conn, [key] {
    // The client gave up on its send: forget it (it will retry with the same offset).
    auto it = held_sends().find(key);
    if (it == held_sends().end()) return;
    std::unique_ptr<HeldSend> h = std::move(it->second);
    held_sends().erase(it);
    if (Session* s = h->m->find(key)) s->when_upstream_room(nullptr);
    http::log_request_done(h->req, 499, 0);
    http::free_abandoned(h->req);
    // h->timer is not running (we are in the close callback): freeing it is safe.
  });
  s.when_upstream_room([key] { finish_held(key, false); });
  held_sends()[key] = std::move(h);
}

void finish_held(const std::string& key, bool timed_out) {
  auto it = held_sends().find(key);
  if (it == held_sends().end()) return;
  std::unique_ptr<HeldSend> h = std::move(it->second);
  held_sends().erase(it);
  h->m->front().unwatch_close(h->conn);
  Session* s = h->m->find(key);
  if (!s) {
    http::send_json_error(h->req, 410, "session_closed", "the session ended while the send was held");
  } else if (timed_out && s->state() != Session::State::Ending) {
    s->when_upstream_room(nullptr);
    evhttp_add_header(evhttp_request_get_output_headers(h->req), "Retry-After", "1");
    http::send_json_error(h->req, 503, "target_busy",
                          "the target has not taken the data sent before; retry this send later");
  } else {
    apply_send(*h->m, h->req, *s, h->offset, h->body.get());
  }
  if (s) s->touch();  // the wait is over: the idle countdown runs from now
  // The timer may be the one running now: free the event outside of its callback.
  event* t = h->timer.release();
  event_del(t);
  event_base_once(h->m->base(), -1, EV_TIMEOUT, [](evutil_socket_t, short, void* ev) {
    event_free(static_cast<event*>(ev));
  }, t, nullptr);
}

}  // namespace

// ---------------------------------------------------------------- endpoints

void handle_open(Manager& m, evhttp_request* req) {
  std::string target = http::query_param(req, "target").value_or("");
  std::string mode = http::query_param(req, "mode").value_or("stream");
  Framing framing;
  if (!parse_framing_param(req, framing)) return;
  if (mode != "stream" && mode != "poll" && mode != "none") {
    http::send_json_error(req, 400, "bad_mode", "mode must be stream, poll or none");
    return;
  }
  Manager::OpenError err{};
  Session* s = m.open_session(req, target, /*resumable=*/true, err);
  if (!s) {
    http::send_json_error(req, err.status, err.code, err.message);
    return;
  }
  if (mode == "stream") {
    bool pad = http::query_param(req, "pad").value_or("0") == "1";
    auto* t = make_live<StreamTransport>(m, req, s, framing, /*is_open=*/true, pad);
    s->attach(t, 0);
    t->start();
  } else {
    auto* t = make_live<OpenWaiter>(m, req, s);
    s->attach(t, 0);
  }
}

void handle_stream(Manager& m, evhttp_request* req, Session& s) {
  Framing framing;
  if (!parse_framing_param(req, framing)) return;
  uint64_t ack = 0;
  if (!parse_u64(http::query_param(req, "ack"), ack)) {
    http::send_json_error(req, 400, "bad_offset", "ack must be a decimal byte offset");
    return;
  }
  bool pad = http::query_param(req, "pad").value_or("0") == "1";
  auto* t = make_live<StreamTransport>(m, req, &s, framing, /*is_open=*/false, pad);
  std::string err = s.attach(t, ack);
  if (!err.empty()) {
    live().erase(t);
    http::send_json_error(req, 409, "bad_offset", err);
    return;
  }
  t->start();
  t->on_session_update();
}

void handle_poll(Manager& m, evhttp_request* req, Session& s) {
  Framing framing;
  if (!parse_framing_param(req, framing)) return;
  uint64_t ack = 0;
  if (!parse_u64(http::query_param(req, "ack"), ack)) {
    http::send_json_error(req, 400, "bad_offset", "ack must be a decimal byte offset");
    return;
  }
  auto* t = make_live<PollTransport>(m, req, &s, framing);
  std::string err = s.attach(t, ack);
  if (!err.empty()) {
    live().erase(t);
    http::send_json_error(req, 409, "bad_offset", err);
    return;
  }
  t->start();
}

void handle_send(Manager& m, evhttp_request* req, Session& s) {
  s.touch();
  uint64_t offset = 0, ack = 0;
  auto off_param = http::query_param(req, "off");
  if (!off_param || !parse_u64(off_param, offset)) {
    http::send_json_error(req, 400, "bad_offset", "send needs off=N, the upstream offset of its first byte");
    return;
  }
  auto ack_param = http::query_param(req, "ack");
  if (!parse_u64(ack_param, ack)) {
    http::send_json_error(req, 400, "bad_offset", "ack must be a decimal byte offset");
    return;
  }
  if (ack_param && !s.ack(ack)) {
    http::send_json_error(req, 409, "bad_offset", "ack is past the data sent");
    return;
  }
  evbuffer* in = evhttp_request_get_input_buffer(req);
  EvbufferPtr body(evbuffer_new());
  if (http::query_param(req, "enc").value_or("") == "base64") {
    size_t n = evbuffer_get_length(in);
    std::string_view text(reinterpret_cast<const char*>(evbuffer_pullup(in, static_cast<ev_ssize_t>(n))), n);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
    auto bytes = base64_decode(text);
    if (!bytes) {
      http::send_json_error(req, 400, "bad_base64", "the body is not valid base64");
      return;
    }
    evbuffer_add(body.get(), bytes->data(), bytes->size());
  } else {
    evbuffer_add_buffer(body.get(), in);
  }
  if (evbuffer_get_length(body.get()) == 0) {
    // A pure acknowledgement: it carries no data, so neither a held send (429) nor
    // a session that no longer takes data (410, while it still delivers its last
    // bytes downstream) is a reason to refuse it. A streaming client acks this way.
    http::send_text(req, 200, "OK " + std::to_string(s.upstream_offset()) + "\n",
                    "text/plain; charset=us-ascii");
    return;
  }
  if (held_sends().count(s.key())) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    http::send_json_error(req, 429, "send_in_progress", "another send of this session is still waiting for the target");
    return;
  }
  uint64_t next = s.upstream_offset();
  bool fresh = offset + evbuffer_get_length(body.get()) > next && offset <= next;
  if (fresh && s.upstream_full()) {
    hold_send(m, req, s, offset, body.get());  // back-pressure: wait for the target
    return;
  }
  apply_send(m, req, s, offset, body.get());
}

void handle_close(Manager&, evhttp_request* req, Session& s) {
  s.client_close();
  http::send_text(req, 200, "OK closed\n", "text/plain; charset=us-ascii");
}

}  // namespace netwine::tunnel
