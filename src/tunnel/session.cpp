#include "tunnel/session.hpp"

#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <string_view>

#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>

#include "log.hpp"
#include "sockio.hpp"
#include "tunnel/manager.hpp"
#include "ws/frame.hpp"
#include "tunnel/offsets.hpp"

namespace netwine::tunnel {
namespace {

// Bytes read from the target per read callback beyond the bufferevent's own
// 4096 (sockio.hpp): bounded so one fast target cannot starve the loop.
constexpr size_t kReadBudget = 256 * 1024;

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

Session::Session(Manager& manager, std::string key, std::string client, std::string origin,
                 std::string target, bool resumable)
    : manager_(manager),
      key_(std::move(key)),
      client_(std::move(client)),
      origin_(std::move(origin)),
      target_label_(std::move(target)),
      resumable_(resumable),
      kept_(evbuffer_new()),
      down_(evbuffer_new()),
      up_pending_(evbuffer_new()),
      created_(now_seconds()) {
  idle_timer_.reset(evtimer_new(manager_.base(), &Session::on_idle_timeout, this));
  arm_idle_timer();
}

Session::~Session() {
  if (lent_ && transport_) transport_->reclaim();  // the target socket is about to close
  if (transport_) {
    Transport* t = transport_;
    transport_ = nullptr;
    t->on_detached(close_code_ ? close_code_ : close_code::kGoingAway,
                   close_reason_.empty() ? "session ended" : close_reason_);
  }
}

// ---------------------------------------------------------------- target side

void Session::on_connected(BuffereventPtr target, const std::string& address) {
  if (state_ != State::Connecting) {
    manager_.dispose(std::move(target));
    return;
  }
  target_ = std::move(target);
  target_address_ = address;
  bufferevent* bev = target_.get();
  target_fd_ = sockio::plain_socket(bev) ? bufferevent_getfd(bev) : -1;
  bufferevent_setcb(bev, &Session::on_target_read, &Session::on_target_write,
                    &Session::on_target_event, this);
  // The write callback fires once the target has taken all but half a buffer:
  // that is when held sends and stopped WebSocket readers may go on.
  bufferevent_setwatermark(bev, EV_WRITE, manager_.config().session_buffer / 2, 0);
  bufferevent_set_max_single_write(bev, 1 << 20);
  if (target_fd_ >= 0) {
    target_reader_.reset(
        event_new(bufferevent_get_base(bev), target_fd_, EV_READ | EV_PERSIST, &Session::on_target_raw_read, this));
    bufferevent_disable(bev, EV_READ);
    if (size_t early = evbuffer_get_length(bufferevent_get_input(bev))) {
      evbuffer_add_buffer(down_.get(), bufferevent_get_input(bev));
      down_end_ += early;
    }
  }
  bufferevent_enable(bev, EV_WRITE);
  state_ = State::Open;
  update_target_reading();
  if (evbuffer_get_length(up_pending_.get()))
    evbuffer_add_buffer(bufferevent_get_output(bev), up_pending_.get());
  log::debug("session ", log::redact_key(key_), " connected to ", address);
  notify();
}

void Session::on_connect_failed(int code, const std::string& reason) {
  if (state_ != State::Connecting) return;
  end(code, reason);  // the attached opener answers its request with the error and detaches
  // Nobody holds the key of a session that never connected (it is given out only
  // after connecting), so nothing can resume it: free it now rather than after the
  // idle timeout, where it would count against the session limits meanwhile.
  if (!transport_) retire();
}

void Session::on_target_read(bufferevent*, void* self) { static_cast<Session*>(self)->do_target_read(); }
void Session::on_target_write(bufferevent*, void* self) { static_cast<Session*>(self)->do_target_write(); }

void Session::on_target_event(bufferevent*, short what, void* self) {
  auto* s = static_cast<Session*>(self);
  if (what & BEV_EVENT_EOF) {
    s->do_target_read();  // anything still in the input buffer comes first
    s->end(close_code::kNormal, "target closed the connection");
  } else if (what & BEV_EVENT_ERROR) {
    int err = EVUTIL_SOCKET_ERROR();
    s->do_target_read();
    s->end(close_code::kTargetError,
           std::string("target connection failed: ") + evutil_socket_error_to_string(err));
  }
}

// A TLS target's bytes, read by its bufferevent (a plain one is read by
// do_target_raw_read()).
void Session::do_target_read() {
  if (!target_) return;
  evbuffer* in = bufferevent_get_input(target_.get());
  size_t n = evbuffer_get_length(in);
  if (n == 0) return;
  evbuffer_add_buffer(down_.get(), in);  // moves chains, no copy
  down_end_ += n;
  update_target_reading();
  notify();
}

// A plain TCP target is read by our own event, not by its bufferevent: a
// bufferevent read (FIONREAD, a chain allocated and moved, its callbacks under
// its lock) cost ~3 us a message more than one recv() into the session's buffer
// on the pinned round trip of docs/PERFORMANCE.md. EOF and read errors end the
// session here; write errors still come from the bufferevent (on_target_event()).
void Session::on_target_raw_read(evutil_socket_t, short, void* self) {
  static_cast<Session*>(self)->do_target_raw_read();
}

void Session::do_target_raw_read() {
  if (!target_ || lent_ || state_ != State::Open) return;
  size_t buffered = downstream_buffered();
  size_t room = manager_.config().session_buffer > buffered ? manager_.config().session_buffer - buffered : 0;
  if (room == 0) {
    update_target_reading();
    return;
  }
  auto got = sockio::read_socket(target_fd_, down_.get(), std::min(room, kReadBudget));
  if (got.bytes > 0) {
    down_end_ += got.bytes;
    update_target_reading();
    notify();
  }
  if (got.eof) {
    end(close_code::kNormal, "target closed the connection");
  } else if (got.error) {
    end(close_code::kTargetError,
        std::string("target connection failed: ") + evutil_socket_error_to_string(got.error));
  }
}

void Session::update_target_reading() {
  if (!target_ || state_ != State::Open) return;
  // Back-pressure: past session-buffer unacknowledged bytes, stop reading the
  // target; TCP flow control then slows it down.
  set_target_reading(downstream_buffered() < manager_.config().session_buffer);
}

void Session::set_target_reading(bool on) {
  if (!target_ || on == target_reading_ || (on && lent_)) return;  // (a relay thread reads a lent socket)
  target_reading_ = on;
  if (target_reader_) {
    if (on) event_add(target_reader_.get(), nullptr);
    else event_del(target_reader_.get());
  } else if (on) {
    bufferevent_enable(target_.get(), EV_READ);
  } else {
    bufferevent_disable(target_.get(), EV_READ);
  }
}

void Session::do_target_write() {
  if (client_closing_) {
    if (target_ && evbuffer_get_length(bufferevent_get_output(target_.get())) == 0)
      finish_client_close();
    return;
  }
  if (room_waiter_) {
    auto fn = std::move(room_waiter_);
    room_waiter_ = nullptr;
    fn();
  }
  if (transport_) transport_->on_upstream_room();
}

// ------------------------------------------------------------- transport side

std::string Session::attach(Transport* t, uint64_t ack_offset) {
  reclaim();
  if (state_ == State::Ended) return "session has ended";
  // A new transport has not seen the close yet: it gets it again (close_delivered).
  retire_when_acked_ = false;
  if (ack_offset < down_base_)
    return "offset " + std::to_string(ack_offset) + " was acknowledged before and is no longer kept (oldest kept: " +
           std::to_string(down_base_) + ")";
  // The new transport has not seen the close yet, so this ack must not retire the
  // session (close_delivered): it gets the close again.
  bool retire_when_acked = retire_when_acked_;
  retire_when_acked_ = false;
  if (!ack(ack_offset)) {
    retire_when_acked_ = retire_when_acked;  // refused: the old transport stays
    return "offset " + std::to_string(ack_offset) + " is past the data sent (" + std::to_string(down_max_sent_) +
           ")";
  }
  if (transport_ && transport_ != t) {
    Transport* old = transport_;
    transport_ = nullptr;
    old->on_detached(close_code::kReplaced, "another transport took over the session");
  }
  transport_ = t;
  // The open request waiting for the connection ("open") carries no data: the
  // access record lists only the transports the client really used.
  if (std::string_view(t->name()) != "open") used_.insert(t->name());
  // Resend everything not acknowledged: the kept bytes go back in front.
  evbuffer_prepend_buffer(down_.get(), kept_.get());
  down_sent_ = down_base_;
  evtimer_del(idle_timer_.get());
  return {};
}

void Session::detach(Transport* t) {
  if (transport_ != t) return;
  transport_ = nullptr;
  retire_when_acked_ = false;  // whoever attaches next is sent the close again
  if (state_ == State::Ended) return;
  if (!resumable_) {
    // Nothing can come back for a non-resumable session: end it now.
    if (state_ != State::Ending) end(close_code::kNormal, "client went away");
    retire();
    return;
  }
  arm_idle_timer();
}

size_t Session::pull(evbuffer* out, size_t max) {
  reclaim();
  size_t n = std::min(max, unsent());
  if (n == 0) return 0;
  if (!resumable_) {
    evbuffer_remove_buffer(down_.get(), out, n);  // moves whole chains
    down_base_ += n;
  } else {
    // The bytes stay until acknowledged: copy them out, then move them to kept_.
    evbuffer_iovec v;
    evbuffer_reserve_space(out, static_cast<ev_ssize_t>(n), &v, 1);
    evbuffer_copyout(down_.get(), v.iov_base, n);
    v.iov_len = n;
    evbuffer_commit_space(out, &v, 1);
    evbuffer_remove_buffer(down_.get(), kept_.get(), n);
  }
  advance_sent(n);
  return n;
}

size_t Session::pull(uint8_t* out, size_t max) {
  reclaim();
  size_t n = std::min(max, unsent());
  if (n == 0) return 0;
  evbuffer_copyout(down_.get(), out, n);
  if (!resumable_) {
    evbuffer_drain(down_.get(), n);
    down_base_ += n;
  } else {
    evbuffer_remove_buffer(down_.get(), kept_.get(), n);
  }
  advance_sent(n);
  return n;
}

void Session::advance_sent(size_t n) {
  down_sent_ += n;
  if (down_sent_ > down_max_sent_) down_max_sent_ = down_sent_;
  if (!resumable_) update_target_reading();
}

bool Session::ack(uint64_t ack_offset) {
  reclaim();
  auto d = decide_ack(down_base_, down_max_sent_, ack_offset);
  if (d.kind == AckDecision::Kind::Invalid) return false;
  if (d.kind == AckDecision::Kind::Advance) {
    // After a resume the client may acknowledge past what this transport has
    // resent so far (it saw those bytes on the old one): drop them from down_ too.
    auto drop = static_cast<size_t>(d.drop);
    size_t from_kept = std::min(drop, evbuffer_get_length(kept_.get()));
    evbuffer_drain(kept_.get(), from_kept);
    evbuffer_drain(down_.get(), drop - from_kept);
    down_base_ = ack_offset;
    if (down_sent_ < down_base_) down_sent_ = down_base_;
    update_target_reading();
  }
  if (retire_when_acked_ && state_ == State::Ending && down_base_ == down_end_) retire();
  return true;
}

void Session::close_delivered() {
  close_delivered_ = true;
  // After a shutdown close nothing can come back for the session: keeping it would
  // only hold the drain up until drain-timeout.
  if (!resumable_ || close_code_ == close_code::kGoingAway) {
    retire();
    return;
  }
  retire_when_acked_ = transport_ != nullptr;
  if (retire_when_acked_ && down_base_ == down_end_) retire();
}

Session::SendStatus Session::send_upstream(uint64_t offset, evbuffer* data, uint64_t& next) {
  reclaim();
  size_t len = evbuffer_get_length(data);
  next = up_next_;
  if (state_ == State::Ending || state_ == State::Ended || client_closing_) {
    evbuffer_drain(data, len);
    return SendStatus::Closed;
  }
  auto d = decide_upstream(up_next_, offset, len);
  if (d.kind == UpstreamDecision::Kind::Gap) return SendStatus::Gap;
  if (d.kind == UpstreamDecision::Kind::Duplicate) {
    evbuffer_drain(data, len);
    return SendStatus::Duplicate;
  }
  evbuffer_drain(data, static_cast<size_t>(d.skip));
  size_t fresh = len - static_cast<size_t>(d.skip);
  // A small send (an HTTP transport's keystrokes) goes straight to an idle socket,
  // as the WebSocket's do.
  if (may_write_direct(fresh)) {
    if (const auto* p = evbuffer_pullup(data, static_cast<ev_ssize_t>(fresh)))
      evbuffer_drain(data, write_now(p, fresh));
  }
  evbuffer_add_buffer(upstream_sink(), data);
  up_next_ += fresh;
  next = up_next_;
  return SendStatus::Applied;
}

Session::SendStatus Session::send_upstream(uint64_t offset, const uint8_t* data, size_t len,
                                           uint64_t& next) {
  reclaim();
  next = up_next_;
  if (state_ == State::Ending || state_ == State::Ended || client_closing_) return SendStatus::Closed;
  auto d = decide_upstream(up_next_, offset, len);
  if (d.kind == UpstreamDecision::Kind::Gap) return SendStatus::Gap;
  if (d.kind == UpstreamDecision::Kind::Duplicate) return SendStatus::Duplicate;
  size_t fresh = len - static_cast<size_t>(d.skip);
  size_t done = write_direct(data + d.skip, fresh);
  if (done < fresh) evbuffer_add(upstream_sink(), data + d.skip + done, fresh - done);
  up_next_ += fresh;
  next = up_next_;
  return SendStatus::Applied;
}

Session::SendStatus Session::send_upstream_masked(const uint8_t* masked, size_t len, const uint8_t key[4],
                                                  size_t mask_offset) {
  reclaim();
  if (state_ == State::Ending || state_ == State::Ended || client_closing_) return SendStatus::Closed;
  if (len == 0) return SendStatus::Duplicate;
  evbuffer* sink = upstream_sink();
  if (direct_next_ && len <= kDirectWriteMax) {
    uint8_t plain[kDirectWriteMax];
    ws::copy_masked(plain, masked, len, key, mask_offset);
    size_t done = write_direct(plain, len);
    if (done < len) evbuffer_add(sink, plain + done, len - done);
    up_next_ += len;
    return SendStatus::Applied;
  }
  evbuffer_iovec v;
  if (evbuffer_reserve_space(sink, static_cast<ev_ssize_t>(len), &v, 1) != 1) return SendStatus::Closed;
  ws::copy_masked(static_cast<uint8_t*>(v.iov_base), masked, len, key, mask_offset);
  v.iov_len = len;
  evbuffer_commit_space(sink, &v, 1);
  up_next_ += len;
  return SendStatus::Applied;
}

// Nothing waits for the plain target socket, and `n` bytes are few enough to
// be written at once (write_direct()).
bool Session::may_write_direct(size_t n) const {
  return !lent_ && n > 0 && n <= kDirectWriteMax && state_ != State::Ending && state_ != State::Ended &&
         target_fd_ >= 0 && target_ && evbuffer_get_length(bufferevent_get_output(target_.get())) == 0;
}

void Session::reserve_upstream(size_t n) {
  direct_next_ = may_write_direct(n);
  if (direct_next_ || lent_ || n == 0 || state_ == State::Ending || state_ == State::Ended) return;
  evbuffer_expand(upstream_sink(), n);  // a failure only means the sends allocate as before
}

// Writes the first send of a small WebSocket batch to the target's socket at
// once when nothing waits before it (the mirror of WsConnection::pump()'s direct
// write); HTTP sends do the same through write_now(). Through the bufferevent it
// would cost adding its write event, a wake-up and deleting the event — 3 of the
// ~14 system calls of a round trip (docs/PERFORMANCE.md). Returns the bytes the
// socket took; the caller queues the rest.
size_t Session::write_direct(const uint8_t* data, size_t len) {
  if (!direct_next_) return 0;
  direct_next_ = false;
  return may_write_direct(len) ? write_now(data, len) : 0;
}

// One send() to the target's socket; the caller has checked may_write_direct().
// Errors are left for the bufferevent to meet on the rest or on its next read, so
// there is one place that handles them.
size_t Session::write_now(const uint8_t* data, size_t len) {
  ssize_t w = ::send(target_fd_, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  return w > 0 ? static_cast<size_t>(w) : 0;
}

// Where upstream bytes wait: the target's output, or up_pending_ while connecting.
evbuffer* Session::upstream_sink() const {
  return target_ ? bufferevent_get_output(target_.get()) : up_pending_.get();
}

uint64_t Session::upstream_written() const { return up_next_ - evbuffer_get_length(upstream_sink()); }

// Downstream bytes the session holds: unsent, and sent but not acknowledged.
size_t Session::downstream_buffered() const {
  return evbuffer_get_length(down_.get()) + evbuffer_get_length(kept_.get());
}

bool Session::downstream_held() const {
  return resumable_ && downstream_buffered() >= manager_.config().session_buffer;
}

bool Session::upstream_full() const {
  return evbuffer_get_length(upstream_sink()) >= manager_.config().session_buffer;
}

void Session::client_close() {
  reclaim();
  if (state_ == State::Ended) return;
  client_closing_ = true;
  if (state_ != State::Ending) {
    state_ = State::Ending;
    close_code_ = close_code::kNormal;
    close_reason_ = "closed by the client";
  }
  if (transport_) {
    Transport* t = transport_;
    transport_ = nullptr;
    t->on_detached(close_code_, close_reason_);
  }
  if (target_) {
    set_target_reading(false);
    if (evbuffer_get_length(bufferevent_get_output(target_.get())) == 0) finish_client_close();
    // else: do_target_write() finishes once the target has taken everything.
    // Bounded: the idle timer retires the session if the target never reads.
    arm_idle_timer();
  } else {
    retire();
  }
}

void Session::finish_client_close() {
  if (target_) {
    // A TLS target gets a close_notify after the last byte, so it can tell our
    // end from a truncation. SSL_shutdown() queues it, behind any ciphertext not
    // yet written, in the TCP bufferevent below the TLS filter: half-close only
    // once that has gone out (on_tls_flushed).
    if (SSL* ssl = bufferevent_openssl_get_ssl(target_.get())) {
      if (tls_flush_cb_) return;  // already waiting
      SSL_shutdown(ssl);
      bufferevent* tcp = bufferevent_get_underlying(target_.get());
      if (tcp && evbuffer_get_length(bufferevent_get_output(tcp)) > 0) {
        // Bounded: the idle timer armed by client_close() retires the session.
        tls_flush_cb_ = evbuffer_add_cb(bufferevent_get_output(tcp), &Session::on_tls_flushed, this);
        return;
      }
    }
    // Half-close first so the target sees EOF after the last byte, then let go.
    evutil_socket_t fd = bufferevent_getfd(target_.get());
    if (fd >= 0) ::shutdown(fd, SHUT_WR);
    drop_target();
  }
  retire();
}

void Session::on_tls_flushed(evbuffer* out, const evbuffer_cb_info*, void* self) {
  auto* s = static_cast<Session*>(self);
  if (evbuffer_get_length(out) > 0 || !s->target_) return;
  // Runs inside the TCP bufferevent's write: drop_target() only schedules its
  // freeing, and retire() the session's.
  evutil_socket_t fd = bufferevent_getfd(s->target_.get());
  if (fd >= 0) ::shutdown(fd, SHUT_WR);
  s->drop_target();
  s->retire();
}

void Session::drop_target() {
  if (!target_) return;
  if (tls_flush_cb_) {
    if (bufferevent* tcp = bufferevent_get_underlying(target_.get()))
      evbuffer_remove_cb_entry(bufferevent_get_output(tcp), tls_flush_cb_);
    tls_flush_cb_ = nullptr;
  }
  target_reader_.reset();  // before the bufferevent closes the socket
  target_reading_ = false;
  target_fd_ = -1;
  manager_.dispose(std::move(target_));
}

void Session::end(int code, const std::string& reason) {
  if (state_ == State::Ending || state_ == State::Ended) return;
  reclaim();
  state_ = State::Ending;
  close_code_ = code;
  close_reason_ = reason;
  drop_target();
  if (evbuffer_get_length(up_pending_.get())) evbuffer_drain(up_pending_.get(), evbuffer_get_length(up_pending_.get()));
  log::debug("session ", log::redact_key(key_), " ending: ", code, " ", reason);
  if (transport_) notify();
  else if (!resumable_) retire();
  else arm_idle_timer();
}

// ------------------------------------------------------------ lending

bool Session::lendable() const {
  // A resumable session is lent once every kept byte has been (re)sent on this
  // transport: the thread then keeps [down_base_, down_sent_) alone.
  return state_ == State::Open && !client_closing_ && target_ && target_fd_ >= 0 && transport_ && !lent_ &&
         !room_waiter_ && (!resumable_ || down_sent_ == down_max_sent_);
}

evutil_socket_t Session::lend_target(evbuffer* to_target, evbuffer* from_target, LentCounters* counters,
                                     LentOffsets* offsets) {
  if (!lendable() || (resumable_ && !offsets)) return -1;
  bufferevent* bev = target_.get();
  set_target_reading(false);
  bufferevent_disable(bev, EV_WRITE);
  sockio::take_output(bev, to_target);
  // Unsent bytes first, then any the bufferevent read since (none, normally).
  evbuffer_add_buffer(from_target, down_.get());
  down_end_ += evbuffer_get_length(bufferevent_get_input(bev));
  evbuffer_add_buffer(from_target, bufferevent_get_input(bev));
  if (resumable_) {
    *offsets = {up_next_, down_sent_, down_base_, kept_.get()};
  } else {  // what the thread takes counts as sent, like pull() would
    down_base_ = down_sent_ = down_end_;
    if (down_sent_ > down_max_sent_) down_max_sent_ = down_sent_;
  }
  lent_ = counters;
  return target_fd_;
}

void Session::take_target_back(evbuffer* to_target, evbuffer* from_target) {
  if (!lent_) return;
  up_next_ += lent_->up.load(std::memory_order_relaxed);
  down_end_ += lent_->down.load(std::memory_order_relaxed);
  lent_ = nullptr;
  size_t unsent = evbuffer_get_length(from_target);
  evbuffer_add_buffer(down_.get(), from_target);
  down_sent_ = down_end_ - unsent;
  // The thread kept what it sent and drained what the client acknowledged
  // (a session that is not resumable keeps nothing).
  down_base_ = down_sent_ - evbuffer_get_length(kept_.get());
  if (down_sent_ > down_max_sent_) down_max_sent_ = down_sent_;
  if (!target_) return;
  evbuffer_add_buffer(bufferevent_get_output(target_.get()), to_target);
  bufferevent_enable(target_.get(), EV_WRITE);
  update_target_reading();
}

// ------------------------------------------------------------------- helpers

void Session::notify() {
  if (!transport_ || notifying_) return;
  notifying_ = true;
  transport_->on_session_update();
  notifying_ = false;
}

void Session::arm_idle_timer() {
  if (state_ == State::Ended) return;
  timeval tv = to_timeval(manager_.config().session_idle_timeout);
  evtimer_add(idle_timer_.get(), &tv);
}

void Session::touch() {
  // Not while closing: there the timer bounds the wait for the target instead.
  if (!transport_ && !client_closing_) arm_idle_timer();
}

void Session::on_idle_timeout(evutil_socket_t, short, void* self) {
  auto* s = static_cast<Session*>(self);
  if (s->transport_ && !s->client_closing_) return;  // attached since: not idle
  if (s->room_waiter_ && !s->client_closing_) {
    // A send is held for the target (at most --poll-wait): the client is there.
    s->arm_idle_timer();
    return;
  }
  if (s->state_ != State::Ending) {
    s->state_ = State::Ending;
    s->close_code_ = close_code::kIdleTimeout;
    s->close_reason_ = "session idle timeout: no transport attached";
  }
  s->retire();
}

void Session::retire() {
  if (state_ == State::Ended) return;
  if (lent_ && transport_) transport_->reclaim();
  if (state_ != State::Ending || close_code_ == 0) {
    close_code_ = close_code_ ? close_code_ : close_code::kNormal;
  }
  state_ = State::Ended;
  evtimer_del(idle_timer_.get());
  if (transport_) {
    Transport* t = transport_;
    transport_ = nullptr;
    t->on_detached(close_code_, close_reason_);
  }
  drop_target();
  log_record();
  manager_.retire(this);
}

const char* Session::transport_name() const { return transport_ ? transport_->name() : "none"; }

std::string Session::transports_used() const {
  std::string out;
  for (const auto& t : used_) out += (out.empty() ? "" : ",") + t;
  return out.empty() ? "none" : out;
}

double Session::age_seconds() const { return now_seconds() - created_; }

void Session::log_record() {
  log::Record r;
  r.add("session", log::redact_key(key_));
  r.add("client", client_);
  r.add("origin", origin_.empty() ? "-" : origin_);
  r.add("target", target_label_);
  r.add("address", target_address_.empty() ? "-" : target_address_);
  r.add("transports", transports_used());
  r.add("close", std::to_string(close_code_) + " " + close_reason_);
  r.add("bytes_up", static_cast<int64_t>(up_next_));
  r.add("bytes_down", static_cast<int64_t>(down_end_));
  r.add_real("duration", age_seconds());
  log::access("session", r);
}

}  // namespace netwine::tunnel
