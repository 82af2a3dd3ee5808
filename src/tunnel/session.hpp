// A session (SPEC §2): one target connection plus the state needed to talk to it
// from any transport, named by a key. Downstream bytes (target -> client) are kept
// until the client acknowledges them, so any transport attaching later with its
// last acknowledged offset gets exactly the bytes it lacks; upstream bytes carry
// offsets, so a retried send is applied once.
//
// Ownership: the Manager owns every Session. A Session never deletes itself; it
// asks the Manager to retire it, which frees it from a zero-timeout event (STYLE
// habit 6), so a Session may call retire() from inside its own callbacks.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <set>
#include <string>

#include "event_handles.hpp"

namespace netwine::tunnel {

class Manager;

// Close codes carried in "C" frames and WebSocket close frames (docs/PROTOCOL.md).
// They are WebSocket-compatible so the browser client can hand them to onclose.
namespace close_code {
constexpr int kNormal = 1000;         // target closed, or closed by the client
constexpr int kGoingAway = 1001;      // netwine is shutting down
constexpr int kPolicy = 1008;         // not allowed (origin, target rules)
constexpr int kTooBig = 1009;         // a message over the size limit
constexpr int kTargetError = 1011;    // target connect failed or the connection broke
constexpr int kIdleTimeout = 4001;    // no transport attached for session-idle-timeout
constexpr int kReplaced = 4002;       // another transport took the session over
}  // namespace close_code

// The client side of a session: a streaming response, a long poll or a WebSocket.
// Exactly one transport is attached at a time.
// What a thread relaying a lent session (ws/bulk_relay.hpp) has moved so far;
// status and metrics read it while the thread runs.
struct LentCounters {
  std::atomic<uint64_t> up{0};    // client bytes queued for the target (new ones: duplicates skipped)
  std::atomic<uint64_t> down{0};  // bytes read from the target
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual const char* name() const = 0;  // "stream", "poll", "websocket"
  // The session has downstream bytes past sent_offset(), or its state changed
  // (connected, ending): pull what you can take, then look at the state.
  virtual void on_session_update() = 0;
  // Another transport attached, or the session is being freed: stop using the
  // session now (it may be gone after this returns) and finish your client side.
  virtual void on_detached(int code, const std::string& reason) = 0;
  // Upstream room is available again after upstream_full() said no.
  virtual void on_upstream_room() {}
  // The loop is about to act on the session (end it, free it): a transport that
  // lent it to a relay thread takes it back first (Session::lend_target()).
  virtual void reclaim() {}
};

class Session {
 public:
  enum class State {
    Connecting,  // resolving/connecting to the target; the client may already be attached
    Open,        // target connected: bytes flow both ways
    Ending,      // target finished, failed or the client closed: deliver what is
                 // buffered downstream, then the close code and reason
    Ended,       // retired: waiting to be freed; nothing may be done with it
  };

  // `resumable` sessions keep downstream bytes until acknowledged; the others
  // (websockify-compatible WebSockets) count bytes as acknowledged once pulled.
  Session(Manager& manager, std::string key, std::string client, std::string origin,
          std::string target, bool resumable);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // --- target side ---
  void on_connected(BuffereventPtr target, const std::string& address);
  void on_connect_failed(int code, const std::string& reason);

  // --- transport side ---
  // Attaches `t` (detaching any other with kReplaced), acknowledging `ack` first.
  // Returns "" or an error for the client (an ack past what was ever sent).
  std::string attach(Transport* t, uint64_t ack);
  // `t` goes away (connection closed, response ended). No-op if not attached.
  void detach(Transport* t);
  bool attached(const Transport* t) const { return transport_ == t; }

  // Downstream. Bytes [acked, end) are kept; [sent, end) not yet given to the
  // current transport.
  uint64_t acked_offset() const { return down_base_; }
  uint64_t sent_offset() const { return down_sent_; }
  uint64_t end_offset() const { return down_end_; }
  size_t unsent() const { return static_cast<size_t>(down_end_ - down_sent_); }
  // Appends up to `max` unsent bytes to `out` and advances sent_offset; returns
  // how many. Copies for resumable sessions (they are kept until acknowledged),
  // moves evbuffer chains otherwise.
  size_t pull(evbuffer* out, size_t max);
  // As pull(), into contiguous memory.
  size_t pull(uint8_t* out, size_t max);
  // Records that the client holds every byte before `ack`. False if `ack` is past
  // what was sent (a broken client).
  bool ack(uint64_t ack);
  // True once the session is Ending and every byte has been pulled: the current
  // transport should now deliver close_code()/close_reason().
  bool ready_to_close() const { return state_ == State::Ending && unsent() == 0; }
  int close_code() const { return close_code_; }
  const std::string& close_reason() const { return close_reason_; }
  // The transport has handed the close to the client. A non-resumable session, or
  // one closed by shutdown, is freed now. A resumable one:
  //  - if the transport stays attached (a WebSocket waiting for the client's last
  //    acks and Close): freed once every byte is acknowledged, or now if it is;
  //  - if it has detached first (an HTTP response ending with its C frame): kept
  //    until the client's close, or the idle timeout, because that response may
  //    be cut and a client re-attaching must get the bytes and the close again.
  void close_delivered();

  // Upstream.
  enum class SendStatus {
    Applied,    // written (or partly: the rest were duplicates)
    Duplicate,  // every byte was applied before
    Gap,        // offset past the expected one: refused
    Closed,     // the session no longer takes data
  };
  // Writes the part of `data` (starting at upstream `offset`) not applied before.
  // `data` is drained. `next` gets the next expected upstream offset.
  SendStatus send_upstream(uint64_t offset, evbuffer* data, uint64_t& next);
  SendStatus send_upstream(uint64_t offset, const uint8_t* data, size_t len, uint64_t& next);
  // Appends WebSocket payload still masked with `key` from payload byte
  // `mask_offset` on, unmasking it while copying (ws::copy_masked): for
  // transports without offsets, at upstream_offset().
  SendStatus send_upstream_masked(const uint8_t* masked, size_t len, const uint8_t key[4], size_t mask_offset);
  // Room for about `n` more upstream bytes at the end of where they will wait, in
  // one piece: call before a batch of small sends so that they share one buffer
  // instead of allocating one each (1 KiB messages did: malloc, free and memmove
  // were ~3% of the CPU).
  // A batch of at most kDirectWriteMax bytes (interactive traffic) also lets its
  // first send go straight to an idle plain target socket (write_direct()).
  void reserve_upstream(size_t n);
  static constexpr size_t kDirectWriteMax = 16 * 1024;  // also WsConnection::pump()'s limit
  uint64_t upstream_offset() const { return up_next_; }
  // Upstream bytes the target's socket has taken (up_next_ less what still waits
  // in its output, or for the connection): what netwine.v1's "A N" acknowledges,
  // so that a client keeping fewer than session-buffer bytes unacknowledged is
  // always read, and its acknowledgements always reach us (ws_connection.hpp).
  uint64_t upstream_written() const;
  // True while the target has not taken session-buffer bytes: stop feeding it.
  bool upstream_full() const;
  // True while session-buffer downstream bytes wait for the client's
  // acknowledgement, so the target is not read (resumable sessions only).
  bool downstream_held() const;
  // Called once when upstream room frees up (for a held HTTP send). While one is
  // waiting, the session is not idle.
  void when_upstream_room(std::function<void()> fn) { room_waiter_ = std::move(fn); }
  // A request for the session arrived (a send or an acknowledgement): the client
  // is there, so with no transport attached the idle countdown starts again.
  void touch();

  // The client closes: flush upstream, shut the target's write side, end.
  // Bulk relaying (ws/bulk_relay.hpp): a thread of the transport's relays the
  // bytes of an open session with a plain target socket for a while.
  // lend_target() stops the target's bufferevent, moves what is queued for the
  // target to `to_target` and the unsent target bytes to `from_target`, and
  // returns the socket (-1: not lendable). A resumable session also lends its
  // offsets and kept bytes (`offsets`): the thread sends with offsets, keeps what
  // it sends in `kept` and drops what the client acknowledges. Until
  // take_target_back() the loop touches none of it: every method that would
  // calls reclaim() first. Byte counts include `counters`.
  struct LentOffsets {
    uint64_t up_next = 0;      // the next upstream offset the target gets
    uint64_t down_sent = 0;    // offset of the first byte in from_target
    uint64_t down_base = 0;    // offset of the oldest kept byte
    evbuffer* kept = nullptr;  // [down_base, down_sent): sent, not yet acknowledged
  };
  bool lendable() const;
  evutil_socket_t lend_target(evbuffer* to_target, evbuffer* from_target, LentCounters* counters,
                              LentOffsets* offsets = nullptr);
  void take_target_back(evbuffer* to_target, evbuffer* from_target);
  bool lent() const { return lent_ != nullptr; }
  // The loop is about to use what is lent (a request for the session, an end):
  // the transport takes it back from its relay thread first.
  void reclaim() {
    if (lent_ && transport_) transport_->reclaim();
  }

  void client_close();
  // End with `code`/`reason` (server shutdown, idle timeout, target error).
  void end(int code, const std::string& reason);
  // Retire at once without waiting for delivery (shutdown of a detached session).
  void retire_now() { retire(); }

  // Why connecting failed, in HTTP terms, for transports that have not answered
  // their request yet (the open request): status, error code, message.
  struct ConnectFailure {
    int status = 0;
    std::string code, message;
  };
  void set_connect_failure(ConnectFailure f) { connect_failure_ = std::move(f); }
  const ConnectFailure& connect_failure() const { return connect_failure_; }

  // --- facts for status, logs and the manager ---
  const std::string& key() const { return key_; }
  const std::string& client() const { return client_; }
  const std::string& target() const { return target_label_; }
  State state() const { return state_; }
  bool resumable() const { return resumable_; }
  const char* transport_name() const;
  std::string transports_used() const;
  double age_seconds() const;
  uint64_t bytes_up() const { return up_next_ + (lent_ ? lent_->up.load(std::memory_order_relaxed) : 0); }
  uint64_t bytes_down() const { return down_end_ + (lent_ ? lent_->down.load(std::memory_order_relaxed) : 0); }

 private:
  static void on_target_read(bufferevent* bev, void* self);
  static void on_target_write(bufferevent* bev, void* self);
  static void on_target_event(bufferevent* bev, short what, void* self);
  static void on_target_raw_read(evutil_socket_t, short, void* self);
  static void on_idle_timeout(evutil_socket_t, short, void* self);
  void do_target_read();
  void do_target_raw_read();
  void set_target_reading(bool on);
  void do_target_write();
  void update_target_reading();
  size_t downstream_buffered() const;
  evbuffer* upstream_sink() const;
  void advance_sent(size_t n);
  void notify();
  void arm_idle_timer();
  void finish_client_close();
  static void on_tls_flushed(evbuffer* out, const evbuffer_cb_info* info, void* self);
  // Lets go of the target connection (freed outside of its callbacks).
  void drop_target();
  bool may_write_direct(size_t n) const;
  size_t write_direct(const uint8_t* data, size_t len);
  size_t write_now(const uint8_t* data, size_t len);
  void retire();
  void log_record();

  Manager& manager_;
  std::string key_, client_, origin_, target_label_, target_address_;
  bool resumable_;
  evutil_socket_t target_fd_ = -1;  // plain TCP target: read and written by us directly
  // Plain TCP target: our read event on target_fd_ (the bufferevent only writes);
  // see do_target_raw_read().
  EventPtr target_reader_;
  bool target_reading_ = false;  // EV_READ on (target_reader_ added, or the bufferevent's)
  bool direct_next_ = false;         // reserve_upstream(): the next send may be written at once
  evbuffer_cb_entry* tls_flush_cb_ = nullptr;  // TLS target: waiting for the close_notify to go out
  State state_ = State::Connecting;
  BuffereventPtr target_;
  // Downstream bytes in two buffers, so that sending never walks the kept bytes:
  // kept_ holds [down_base_, down_sent_) (sent, not yet acknowledged; always empty
  // for a session that cannot be resumed), down_ holds [down_sent_, down_end_).
  EvbufferPtr kept_;
  EvbufferPtr down_;
  uint64_t down_base_ = 0, down_sent_ = 0, down_end_ = 0;
  uint64_t down_max_sent_ = 0;  // highest offset ever given to any transport
  EvbufferPtr up_pending_;      // upstream bytes received while still connecting
  bool close_delivered_ = false;
  bool retire_when_acked_ = false;  // the close went out on the transport still attached
  ConnectFailure connect_failure_;
  uint64_t up_next_ = 0;
  Transport* transport_ = nullptr;
  std::set<std::string> used_;
  EventPtr idle_timer_;
  std::function<void()> room_waiter_;
  int close_code_ = 0;
  std::string close_reason_;
  bool client_closing_ = false;
  bool notifying_ = false;
  double created_;  // monotonic seconds
  const LentCounters* lent_ = nullptr;  // lent to a relay thread (lend_target())
};

}  // namespace netwine::tunnel
