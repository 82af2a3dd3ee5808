// Bulk relaying: a thread of its own relays one busy WebSocket for a while.
//
// Why: on an event loop every wake-up serves many sockets a little; a relay that
// is the bottleneck then pays more kernel work per byte (docs/PERFORMANCE.md, "The
// floor of a relay on this machine": the same relay costs ~25% more CPU per byte
// on one epoll loop than with a thread per connection, socat's structure). So a
// plain `binary` WebSocket that moves many bytes is lent, for as long as it stays
// busy, to a thread that relays it the way socat does: poll() on its two sockets,
// large reads, each read written out at once while it is still in cache.
// netwine.v1 WebSockets (what netwine.js speaks) are lent too, with their
// resumable state (set_v1()): the thread applies the offset of each data
// message (skipping duplicates, failing a gap with 4009), acknowledges what the
// target's socket took ("A N"), frames target bytes with their offsets, keeps a copy
// of them until the client acknowledges them, and stops reading the target
// while session-buffer bytes are unacknowledged, as the loop does.
//
// The thread does only the bulk work: it unmasks client data into the target's
// queue, frames target data into binary messages, and answers Pings (everything
// else ends the loan: below).
//
// Downstream of a plain `binary` WebSocket needs no copy at all: server-to-client
// frames are not masked, so the thread splice()s target bytes into a pipe, queues
// the header of a message of that many bytes, and splice()s the pipe into the
// client's socket (Linux moves page references; a relay that reads and writes, like
// socat, copies each byte twice). Control frames made meanwhile wait for the end of
// that message; when the loan ends, bytes still in the pipe are read back into the
// client's queue, so the loop gets whole frames, as always. netwine.v1 keeps a
// copy of what it sends (for resuming), so it reads as before; so does a
// connection whose sockets splice() refuses.
//
// What ends the loan: a Close or a protocol error from the client, an end or an
// error on either socket (left unread for the event loop's bufferevent to find),
// no bytes for `idle_ms` (or too few in a second: a trickle does not keep a
// place that a busy connection could use), or stop() from the loop. The loop then takes the
// buffers back and goes on with its usual code, so closing handshakes, timeouts,
// drains and errors have one implementation.
//
// Threads: between start() and stop() the buffers, the decoder and both sockets
// belong to the relay thread; the event loop touches none of them. stop() joins.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include <event2/buffer.h>
#include <event2/util.h>

#include "event_handles.hpp"
#include "tunnel/session.hpp"
#include "ws/frame.hpp"
#include "ws/v1.hpp"

namespace netwine::ws {

class BulkRelay {
 public:
  // Why the thread gave the connection back.
  enum class Why {
    Stopped,        // stop() asked
    Idle,           // no bytes either way for idle_ms
    Slow,           // fewer than min_bytes in a second: no longer busy, so its place is free
    ClientClosed,   // the client's Close frame arrived (code in `code`)
    ProtocolError,  // the client broke RFC 6455 (code and reason to fail with)
    SocketEnded,    // a socket reached its end or failed: for the loop to read
  };
  struct Result {
    Why why = Why::Stopped;
    std::optional<uint16_t> code;  // ClientClosed: the client's code; ProtocolError: ours
    std::string reason;            // ProtocolError: what the client did wrong
  };

  static const char* describe(Why why);

  // The queues, owned by the caller; the thread reads and fills them.
  struct Buffers {
    evbuffer* from_client;  // undecoded client input
    evbuffer* to_target;    // unmasked bytes the target has not taken yet
    evbuffer* from_target;  // target bytes not framed yet
    evbuffer* to_client;    // whole frames the client has not taken yet
  };
  struct Limits {
    size_t to_target;   // stop reading the client while this much waits for the target
    size_t to_client;   // stop reading the target while this much waits for the client
    int idle_ms;        // give the connection back after this long without bytes
    size_t min_bytes;   // ... or after a second in which fewer bytes moved (0: never)
  };

  // netwine.v1: the state the thread goes on with, and hands back in place.
  struct V1 {
    v1::Reader* reader;                     // the client's message in progress
    tunnel::Session::LentOffsets offsets;   // up_next, down_sent, down_base, kept
    size_t keep_limit;                      // read the target only while kept + unsent < this
    uint64_t up_ack_sent;                   // the last "A N" sent to the client
  };

  // `on_finished` runs on the relay thread when it stops by itself (not after
  // stop()): it should wake the event loop (event_active), which then calls stop().
  BulkRelay(evutil_socket_t client_fd, evutil_socket_t target_fd, Decoder& decoder, Buffers buffers,
            Limits limits, tunnel::LentCounters& counters, std::function<void()> on_finished);
  ~BulkRelay();  // stop()s
  BulkRelay(const BulkRelay&) = delete;
  BulkRelay& operator=(const BulkRelay&) = delete;

  // The connection speaks netwine.v1 (call before start()); `state` is the
  // caller's, and the thread's alone until stop() returns.
  void set_v1(V1* state) { v1_ = state; }

  // False when no thread could be made (then nothing was taken).
  bool start();
  // Asks the thread to stop, waits for it, and returns why it stopped. The
  // thread finishes its current read or write (sockets are non-blocking) first.
  const Result& stop();

  // Sessions being relayed by bulk threads right now, in this process.
  static int active() { return active_.load(std::memory_order_relaxed); }
  // Threads started since the process began.
  static uint64_t loans() { return loans_.load(std::memory_order_relaxed); }
  // Target bytes sent to clients through a pipe (splice()) since the process began.
  static uint64_t spliced() { return spliced_.load(std::memory_order_relaxed); }
  // Takes one of `max` places, or returns false if all are taken.
  static bool reserve(int max);
  static void unreserve() { active_.fetch_sub(1, std::memory_order_relaxed); }

 private:
  class Feeder;
  void run();
  bool read_client();
  bool take_client_bytes(size_t len);
  bool have_block();
  bool out_of_memory();  // sets result_ (1011 "out of memory"); returns false
  bool read_target();
  bool splice_target();
  void open_pipe();
  bool flush_client();
  void unsplice();
  evbuffer* control_out() { return pipe_left_ ? held_control_.get() : b_.to_client; }
  bool still_busy();
  bool flush(evbuffer* out, evutil_socket_t fd, bool more = false);
  void frame_target_bytes();
  size_t target_room() const;
  void ack_upstream();

  const evutil_socket_t client_fd_, target_fd_;
  Decoder& decoder_;
  const Buffers b_;
  const Limits limits_;
  tunnel::LentCounters& counters_;
  V1* v1_ = nullptr;
  // Where client bytes are read and unmasked in place (kReadBudget bytes, malloc'd):
  // a block full of payload is handed to to_target as it is (read_client()).
  uint8_t* block_ = nullptr;
  std::function<void()> on_finished_;
  int wake_fd_ = -1;  // eventfd: stop() writes to it
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  bool joined_ = true;
  Result result_;
  int64_t window_start_ms_ = 0;  // the busy check's current second, and its bytes
  size_t window_bytes_ = 0;
  // Splicing downstream: the pipe, how much of the current message's payload is
  // still in it (its header is in to_client, ahead of it), and the control frames
  // (Pongs) that wait for that message to end.
  int pipe_[2] = {-1, -1};
  bool splicing_ = false;  // the pipe is there and splice() works on these sockets
  size_t pipe_left_ = 0;
  EvbufferPtr held_control_;

  static std::atomic<int> active_;
  static std::atomic<uint64_t> loans_;
  static std::atomic<uint64_t> spliced_;
};

}  // namespace netwine::ws
