#include "ws/bulk_relay.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>

#include "sockio.hpp"
#include "tunnel/offsets.hpp"

namespace netwine::ws {
namespace {

// Bytes read from one socket per wake-up: socat's -b 262144, in one recv() into
// one chain. Four recv()s of 64 KiB (the event loops' chunk) moved 15-20% less
// on the one-way rows (docs/PERFORMANCE.md, "One recv per wake-up"). libevent
// makes such a chain a 512 KiB allocation; at most --bulk-threads connections
// are lent, so there are few of them (the loops keep 64 KiB: sockio.hpp).
constexpr size_t kReadBudget = 256 * 1024;
// Largest binary message made from target bytes (as on the event loop).
constexpr size_t kMaxDataMessage = 256 * 1024;
// A read block holding at least this much payload goes to the target's queue as it
// is (evbuffer_add_reference), when that queue is empty: the usual case, a target
// keeping up. Less, or behind queued bytes, is copied and the block read into again,
// so a slow target holds at most one block beyond its queue's bytes.
constexpr size_t kHandOverMin = 32 * 1024;
// Chains of a queue written in one sendmsg(), as many as evbuffer_write() took
// (libevent's NUM_WRITE_IOVEC); what is left goes on the next POLLOUT.
constexpr int kFlushIovecs = 128;

void free_block(const void* data, size_t, void*) { std::free(const_cast<void*>(data)); }

int64_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

std::atomic<int> BulkRelay::active_{0};
std::atomic<uint64_t> BulkRelay::loans_{0};
std::atomic<uint64_t> BulkRelay::spliced_{0};

const char* BulkRelay::describe(Why why) {
  switch (why) {
    case Why::Stopped: return "taken back";
    case Why::Idle: return "idle";
    case Why::Slow: return "no longer busy";
    case Why::ClientClosed: return "the client's Close";
    case Why::ProtocolError: return "a protocol error";
    case Why::SocketEnded: return "a socket ended";
  }
  return "?";
}

bool BulkRelay::reserve(int max) {
  int n = active_.load(std::memory_order_relaxed);
  while (n < max) {
    if (active_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed)) return true;
  }
  return false;
}

// Decoder events on the relay thread: data goes to the target's queue, Pings are
// answered, netwine.v1 offsets and acknowledgements are applied; a Close or an
// error ends the loan (the loop does the rest).
class BulkRelay::Feeder final : public Handler {
 public:
  // Decodes input at `block`: the payload for the target is unmasked to the front
  // of the same block (`out_`, never ahead of the input being read, since every
  // frame's header precedes its payload), so it needs no second buffer.
  Feeder(BulkRelay& r, uint8_t* block) : out_(block), r_(r) {}

  void on_data(Opcode type, std::span<const uint8_t> bytes) override {
    if (ended()) return;
    if (r_.v1_) {  // text: binary comes through on_masked_data()
      if (type == Opcode::Text) {
        if (auto f = r_.v1_->reader->add_text(bytes)) failure = std::move(f);
      }
      return;
    }
    std::memmove(out_, bytes.data(), bytes.size());
    out_ += bytes.size();
  }
  void on_masked_data(Opcode type, std::span<uint8_t> masked, const uint8_t key[4], size_t offset) override {
    if (ended()) return;
    if (!r_.v1_) {
      to_target(masked.data(), masked.size(), key, offset);
    } else if (type == Opcode::Binary) {
      v1_data(masked, key, offset);
    } else {
      Handler::on_masked_data(type, masked, key, offset);
    }
  }
  void on_message_end(Opcode type) override {
    if (ended() || !r_.v1_) return;
    v1::Reader& reader = *r_.v1_->reader;
    if (type == Opcode::Binary) {
      if (auto f = reader.end_binary()) failure = std::move(f);
      return;
    }
    auto ack = reader.end_text();
    if (ack.failure) {
      failure = std::move(ack.failure);
      return;
    }
    // As Session::ack(): the client holds every byte before ack.offset.
    auto& o = r_.v1_->offsets;
    auto d = tunnel::decide_ack(o.down_base, o.down_sent, ack.offset);
    if (d.kind == tunnel::AckDecision::Kind::Invalid) {
      failure = v1::Failure{static_cast<uint16_t>(CloseCode::ProtocolError),
                            v1::ack_past_reason(ack.offset, o.down_sent)};
    } else if (d.kind == tunnel::AckDecision::Kind::Advance) {
      evbuffer_drain(o.kept, static_cast<size_t>(d.drop));
      o.down_base = ack.offset;
    }
  }
  void on_ping(std::span<const uint8_t> payload) override {
    // RFC 6455 5.5.3. Frames in to_client are whole, so the Pong goes between messages.
    // A spliced message still going out: after it (control_out()).
    evbuffer* out = r_.control_out();
    uint8_t head[kMaxHeader];
    evbuffer_add(out, head, encode_header(head, Opcode::Pong, true, payload.size(), nullptr));
    if (!payload.empty()) evbuffer_add(out, payload.data(), payload.size());
  }
  void on_pong(std::span<const uint8_t>) override {}
  void on_close(std::optional<uint16_t> code, std::string_view) override {
    closed = true;
    close_code = code;
  }

  bool ended() const { return closed || failure; }

  bool closed = false;
  std::optional<uint16_t> close_code;
  std::optional<v1::Failure> failure;  // netwine.v1: what the client got wrong
  uint8_t* out_;                       // where the next payload byte for the target goes

 private:
  // Unmasks while moving to the front of the block (copy_masked() allows dst
  // before src: each 32-byte step loads before it stores).
  void to_target(const uint8_t* masked, size_t len, const uint8_t key[4], size_t offset) {
    copy_masked(out_, masked, len, key, offset);
    out_ += len;
  }

  // A piece of a netwine.v1 data message: the rest of its offset header, then
  // payload, of which only bytes past up_next go to the target (as
  // Session::send_upstream() decides).
  void v1_data(std::span<uint8_t> masked, const uint8_t key[4], size_t offset) {
    V1& v = *r_.v1_;
    size_t h = std::min(v.reader->header_missing(), masked.size());
    if (h > 0) {
      uint8_t head[v1::kOffsetHeader];
      copy_masked(head, masked.data(), h, key, offset);
      v.reader->take_header({head, h});
    }
    if (!v.reader->have_header() || h == masked.size()) return;
    size_t len = masked.size() - h;
    auto d = tunnel::decide_upstream(v.offsets.up_next, v.reader->offset(), len);
    if (d.kind == tunnel::UpstreamDecision::Kind::Gap) {
      failure = v1::Failure{v1::kCloseOffsetGap, v1::gap_reason(v.offsets.up_next)};
      return;
    }
    v.reader->advance(len);
    if (d.kind == tunnel::UpstreamDecision::Kind::Duplicate) return;  // a resumed client resending
    auto skip = static_cast<size_t>(d.skip);
    to_target(masked.data() + h + skip, len - skip, key, offset + h + skip);
    v.offsets.up_next += len - skip;
  }

  BulkRelay& r_;
};

BulkRelay::BulkRelay(evutil_socket_t client_fd, evutil_socket_t target_fd, Decoder& decoder, Buffers buffers,
                     Limits limits, tunnel::LentCounters& counters, std::function<void()> on_finished)
    : client_fd_(client_fd),
      target_fd_(target_fd),
      decoder_(decoder),
      b_(buffers),
      limits_(limits),
      counters_(counters),
      on_finished_(std::move(on_finished)) {}

BulkRelay::~BulkRelay() {
  stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
  for (int fd : pipe_)
    if (fd >= 0) ::close(fd);
  std::free(block_);
}

bool BulkRelay::start() {
  // Descriptors are made here, on the loop's thread, and closed by the destructor
  // there too: ThreadSanitizer saw the loop's libevent call epoll_ctl() with the
  // number of a socket the loop had just closed while the relay thread's pipe2()
  // reused that number (harmless for the kernel, but an unsynchronised reuse).
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) return false;
  if (!v1_) open_pipe();  // else (or if it fails) target bytes are read and copied
  try {
    thread_ = std::thread([this] { run(); });
  } catch (const std::system_error&) {
    return false;
  }
  joined_ = false;
  loans_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

const BulkRelay::Result& BulkRelay::stop() {
  if (joined_) return result_;
  stopping_.store(true, std::memory_order_relaxed);
  uint64_t one = 1;
  [[maybe_unused]] ssize_t w = ::write(wake_fd_, &one, sizeof one);
  thread_.join();
  joined_ = true;
  return result_;
}

void BulkRelay::run() {
  bool ok = true;
  // Client bytes the loop read but did not decode (normally none) come first ...
  while (ok && evbuffer_get_length(b_.from_client) > 0) {
    ok = have_block() &&
         take_client_bytes(static_cast<size_t>(evbuffer_remove(b_.from_client, block_, kReadBudget)));
  }
  // ... then what the loop queued before the loan goes out.
  frame_target_bytes();
  if (ok && !(flush(b_.to_target, target_fd_) && flush(b_.to_client, client_fd_))) {
    result_.why = Why::SocketEnded;
    ok = false;
  }
  window_start_ms_ = now_ms();
  while (ok) {
    size_t up_queued = evbuffer_get_length(b_.to_target);
    size_t down_queued = evbuffer_get_length(b_.to_client) + pipe_left_;
    // Splicing, the next message starts when the pipe is empty.
    bool read_target_now = down_queued < limits_.to_client && target_room() > 0 && pipe_left_ == 0;
    pollfd p[3] = {
        {client_fd_, static_cast<short>((up_queued < limits_.to_target ? POLLIN : 0) | (down_queued ? POLLOUT : 0)), 0},
        {target_fd_, static_cast<short>((read_target_now ? POLLIN : 0) | (up_queued ? POLLOUT : 0)), 0},
        {wake_fd_, POLLIN, 0},
    };
    int n = ::poll(p, 3, limits_.idle_ms);
    if (stopping_.load(std::memory_order_relaxed)) {
      result_.why = Why::Stopped;
      break;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      result_.why = n == 0 ? Why::Idle : Why::SocketEnded;
      break;
    }
    // A hang-up or an error: the loop's bufferevents read what is left and report it.
    if ((p[0].revents | p[1].revents) & (POLLERR | POLLHUP | POLLNVAL)) {
      result_.why = Why::SocketEnded;
      break;
    }
    if ((p[0].revents & POLLIN) && !read_client()) break;
    if (evbuffer_get_length(b_.to_target) && !flush(b_.to_target, target_fd_)) {
      result_.why = Why::SocketEnded;
      break;
    }
    ack_upstream();
    if ((p[1].revents & POLLIN) && !(splicing_ ? splice_target() : read_target())) break;
    if (!flush_client()) {
      result_.why = Why::SocketEnded;
      break;
    }
    if (!still_busy()) {
      result_.why = Why::Slow;
      break;
    }
  }
  unsplice();
  if (!stopping_.load(std::memory_order_relaxed) && on_finished_) on_finished_();
}

// False once a whole second has moved fewer than min_bytes.
bool BulkRelay::still_busy() {
  if (limits_.min_bytes == 0) return true;
  int64_t now = now_ms();
  if (now - window_start_ms_ < 1000) return true;
  bool busy = window_bytes_ >= limits_.min_bytes;
  window_start_ms_ = now;
  window_bytes_ = 0;
  return busy;
}

// Reads what the client sent into the block and decodes it. False (with result_
// set) ends the loan.
bool BulkRelay::read_client() {
  if (!have_block()) return false;
  ssize_t got = ::recv(client_fd_, block_, kReadBudget, MSG_DONTWAIT);
  if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return true;
  if (got <= 0) {
    result_.why = Why::SocketEnded;  // its end, or an error: the bufferevent reads it again
    return false;
  }
  window_bytes_ += static_cast<size_t>(got);
  return take_client_bytes(static_cast<size_t>(got));
}

// A block to read client bytes into: the one a copy left, or a new one.
bool BulkRelay::have_block() {
  if (!block_) block_ = static_cast<uint8_t*>(std::malloc(kReadBudget));
  return block_ || out_of_memory();
}

bool BulkRelay::out_of_memory() {
  result_ = {Why::ProtocolError, static_cast<uint16_t>(CloseCode::InternalError), "out of memory"};
  return false;
}

// Decodes `len` bytes at block_, unmasking the target's payload to the block's
// front, and queues that payload for the target: the block itself when it is
// worth it (no copy; a new block is read into next), else a copy.
bool BulkRelay::take_client_bytes(size_t len) {
  Feeder feeder(*this, block_);
  auto err = decoder_.feed({block_, len}, feeder);
  if (size_t payload = static_cast<size_t>(feeder.out_ - block_)) {
    counters_.up.fetch_add(payload, std::memory_order_relaxed);
    if (payload >= kHandOverMin && evbuffer_get_length(b_.to_target) == 0 &&
        evbuffer_add_reference(b_.to_target, block_, payload, free_block, nullptr) == 0) {
      block_ = nullptr;
    } else if (evbuffer_add(b_.to_target, block_, payload) != 0) {
      return out_of_memory();
    }
  }
  if (err) {
    result_ = {Why::ProtocolError, static_cast<uint16_t>(err->code), err->reason};
    return false;
  }
  if (feeder.failure) {
    result_ = {Why::ProtocolError, feeder.failure->code, feeder.failure->reason};
    return false;
  }
  if (feeder.closed) {  // RFC 6455 5.5.1: nothing follows a Close (the rest of the block is dropped)
    result_ = {Why::ClientClosed, feeder.close_code, {}};
    return false;
  }
  return true;
}

// netwine.v1: "A N" once the target's socket has taken more upstream bytes (as
// WsConnection::ack_upstream() does), so the client can forget them.
void BulkRelay::ack_upstream() {
  if (!v1_) return;
  uint64_t written = v1_->offsets.up_next - evbuffer_get_length(b_.to_target);
  if (written == v1_->up_ack_sent) return;
  v1_->up_ack_sent = written;
  std::string text = v1::ack_text(written);
  uint8_t head[kMaxHeader];
  evbuffer_add(b_.to_client, head, encode_header(head, Opcode::Text, true, text.size(), nullptr));
  evbuffer_add(b_.to_client, text.data(), text.size());
}

bool BulkRelay::read_target() {
  size_t got = sockio::read_more(target_fd_, b_.from_target, std::min(kReadBudget, target_room()), kReadBudget);
  if (got == 0) {
    result_.why = Why::SocketEnded;
    return false;
  }
  counters_.down.fetch_add(got, std::memory_order_relaxed);
  window_bytes_ += got;
  frame_target_bytes();
  return true;
}

// A pipe for splicing target bytes to the client, as large as one read, and the
// queue for control frames that wait for a spliced message. If either cannot be
// made, target bytes are read and copied instead.
void BulkRelay::open_pipe() {
  if (::pipe2(pipe_, O_NONBLOCK | O_CLOEXEC) != 0) {
    pipe_[0] = pipe_[1] = -1;
    return;
  }
  held_control_.reset(evbuffer_new());
  if (!held_control_) return;  // the pipe stays unused; the destructor closes it
  ::fcntl(pipe_[1], F_SETPIPE_SZ, static_cast<int>(kReadBudget));  // else 64 KiB: smaller messages, still right
  splicing_ = true;
}

// Moves what the target sent into the pipe and queues the header of a binary
// message of that many bytes. False (with result_ set) ends the loan.
bool BulkRelay::splice_target() {
  ssize_t got = ::splice(target_fd_, nullptr, pipe_[1], nullptr, kReadBudget, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
  if (got < 0 && (errno == EAGAIN || errno == EINTR)) return true;
  if (got < 0 && errno == EINVAL) {
    // This socket cannot be spliced: read and copy, for the rest of the loan
    // (the empty pipe is closed with the relay, on the loop's thread).
    splicing_ = false;
    return read_target();
  }
  if (got <= 0) {
    result_.why = Why::SocketEnded;  // its end, or an error: the bufferevent reads it again
    return false;
  }
  auto n = static_cast<size_t>(got);
  uint8_t head[kMaxHeader];
  if (evbuffer_add(b_.to_client, head, encode_header(head, Opcode::Binary, true, n, nullptr)) != 0)
    return out_of_memory();  // the bytes stay in the pipe, dropped with it: the loop closes 1011
  pipe_left_ = n;
  counters_.down.fetch_add(n, std::memory_order_relaxed);
  spliced_.fetch_add(n, std::memory_order_relaxed);
  window_bytes_ += n;
  return true;
}

// Writes what the client's socket takes now: the queue first, then the spliced
// message's payload, then the control frames that waited for it. False on an
// error other than "full".
bool BulkRelay::flush_client() {
  if (!flush(b_.to_client, client_fd_, /*more=*/pipe_left_ > 0)) return false;
  while (pipe_left_ > 0 && evbuffer_get_length(b_.to_client) == 0) {
    ssize_t n = ::splice(pipe_[0], nullptr, client_fd_, nullptr, pipe_left_, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    if (n == 0) return false;
    pipe_left_ -= static_cast<size_t>(n);
    if (pipe_left_ == 0) {
      evbuffer_add_buffer(b_.to_client, held_control_.get());
      return flush(b_.to_client, client_fd_);
    }
  }
  return true;
}

// At the loan's end: the payload still in the pipe, then the control frames
// that waited for it, go to the client's queue, so the loop finds whole frames.
void BulkRelay::unsplice() {
  while (pipe_left_ > 0) {
    evbuffer_iovec v;
    if (evbuffer_reserve_space(b_.to_client, static_cast<ev_ssize_t>(pipe_left_), &v, 1) != 1) break;
    ssize_t n = ::read(pipe_[0], v.iov_base, std::min(v.iov_len, pipe_left_));
    if (n <= 0) break;
    v.iov_len = static_cast<size_t>(n);
    evbuffer_commit_space(b_.to_client, &v, 1);
    pipe_left_ -= static_cast<size_t>(n);
  }
  if (pipe_left_ > 0) {
    // Out of memory with a message's header queued: its frame cannot be completed,
    // so no client must read on. The loop finds the connection cut.
    ::shutdown(client_fd_, SHUT_RDWR);
    out_of_memory();
    return;
  }
  if (held_control_) evbuffer_add_buffer(b_.to_client, held_control_.get());
}

// Every target byte read becomes part of a binary message at once, so the
// client's queue holds only whole frames (a Pong may go between any two).
// netwine.v1: each message starts with its offset, and its bytes are kept until
// the client acknowledges them (copied out, then moved to kept: Session::pull()).
void BulkRelay::frame_target_bytes() {
  while (size_t len = evbuffer_get_length(b_.from_target)) {
    size_t n = std::min(len, kMaxDataMessage);
    uint8_t head[kMaxHeader];
    if (!v1_) {
      evbuffer_add(b_.to_client, head, encode_header(head, Opcode::Binary, true, n, nullptr));
      evbuffer_remove_buffer(b_.from_target, b_.to_client, n);  // moves whole chains
      continue;
    }
    // Header, offset and bytes in one reservation: if it fails, nothing was
    // added and the bytes stay unframed (the loop frames them after the loan).
    auto& o = v1_->offsets;
    size_t h = encode_header(head, Opcode::Binary, true, v1::kOffsetHeader + n, nullptr);
    evbuffer_iovec v;
    if (evbuffer_reserve_space(b_.to_client, static_cast<ev_ssize_t>(h + v1::kOffsetHeader + n), &v, 1) != 1)
      return;
    auto* p = static_cast<uint8_t*>(v.iov_base);
    std::copy_n(head, h, p);
    v1::put_offset(p + h, o.down_sent);
    evbuffer_copyout(b_.from_target, p + h + v1::kOffsetHeader, n);
    v.iov_len = h + v1::kOffsetHeader + n;
    evbuffer_commit_space(b_.to_client, &v, 1);
    evbuffer_remove_buffer(b_.from_target, o.kept, n);
    o.down_sent += n;
  }
}

// How many more target bytes may be read: netwine.v1 keeps what it sent until
// the client acknowledges it, and reads no more once session-buffer bytes wait
// (Session::update_target_reading()).
size_t BulkRelay::target_room() const {
  if (!v1_) return kReadBudget;
  size_t held = evbuffer_get_length(v1_->offsets.kept) + evbuffer_get_length(b_.from_target);
  return held < v1_->keep_limit ? v1_->keep_limit - held : 0;
}

// Writes what the socket takes now, in one sendmsg(): up to kFlushIovecs
// chains of the queue. With `more`, a spliced message's payload follows:
// MSG_MORE lets the kernel put the header in the payload's first segment instead
// of a small segment of its own (the splice, without SPLICE_F_MORE, pushes them
// out). False on an error other than "full".
bool BulkRelay::flush(evbuffer* out, evutil_socket_t fd, bool more) {
  evbuffer_iovec v[kFlushIovecs];
  int chains = evbuffer_peek(out, -1, nullptr, v, kFlushIovecs);
  if (chains <= 0) return true;
  iovec iov[kFlushIovecs];
  int k = std::min(chains, kFlushIovecs);
  for (int i = 0; i < k; ++i) iov[i] = {v[i].iov_base, v[i].iov_len};
  msghdr m{};
  m.msg_iov = iov;
  m.msg_iovlen = static_cast<size_t>(k);
  ssize_t n = ::sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL | (more ? MSG_MORE : 0));
  if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  evbuffer_drain(out, static_cast<size_t>(n));
  return true;
}

}  // namespace netwine::ws
