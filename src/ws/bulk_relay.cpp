#include "ws/bulk_relay.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "sockio.hpp"

namespace netwine::ws {
namespace {

// Bytes read from one socket per wake-up: socat's -b 262144.
constexpr size_t kReadBudget = 256 * 1024;
// Largest binary message made from target bytes (as on the event loop).
constexpr size_t kMaxDataMessage = 256 * 1024;

int64_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

std::atomic<int> BulkRelay::active_{0};
std::atomic<uint64_t> BulkRelay::loans_{0};

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
// answered, a Close or an error ends the loan (the loop does the rest).
class BulkRelay::Feeder final : public Handler {
 public:
  Feeder(BulkRelay& r) : r_(r) {}

  void on_data(Opcode, std::span<const uint8_t> bytes) override {
    evbuffer_add(r_.b_.to_target, bytes.data(), bytes.size());
    r_.counters_.up.fetch_add(bytes.size(), std::memory_order_relaxed);
  }
  void on_masked_data(Opcode, std::span<uint8_t> masked, const uint8_t key[4], size_t offset) override {
    evbuffer_iovec v;
    if (evbuffer_reserve_space(r_.b_.to_target, static_cast<ev_ssize_t>(masked.size()), &v, 1) != 1) {
      failed_alloc = true;
      return;
    }
    copy_masked(static_cast<uint8_t*>(v.iov_base), masked.data(), masked.size(), key, offset);
    v.iov_len = masked.size();
    evbuffer_commit_space(r_.b_.to_target, &v, 1);
    r_.counters_.up.fetch_add(masked.size(), std::memory_order_relaxed);
  }
  void on_message_end(Opcode) override {}
  void on_ping(std::span<const uint8_t> payload) override {
    // RFC 6455 5.5.3. Frames in to_client are whole, so the Pong goes between messages.
    uint8_t head[kMaxHeader];
    evbuffer_add(r_.b_.to_client, head, encode_header(head, Opcode::Pong, true, payload.size(), nullptr));
    if (!payload.empty()) evbuffer_add(r_.b_.to_client, payload.data(), payload.size());
  }
  void on_pong(std::span<const uint8_t>) override {}
  void on_close(std::optional<uint16_t> code, std::string_view) override {
    closed = true;
    close_code = code;
  }

  bool closed = false;
  std::optional<uint16_t> close_code;
  bool failed_alloc = false;

 private:
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
}

bool BulkRelay::start() {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) return false;
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
  // What the loop queued before the loan goes out first.
  frame_target_bytes();
  bool ok = flush(b_.to_target, target_fd_) && flush(b_.to_client, client_fd_);
  if (!ok) result_.why = Why::SocketEnded;
  window_start_ms_ = now_ms();
  while (ok) {
    size_t up_queued = evbuffer_get_length(b_.to_target);
    size_t down_queued = evbuffer_get_length(b_.to_client);
    pollfd p[3] = {
        {client_fd_, static_cast<short>((up_queued < limits_.to_target ? POLLIN : 0) | (down_queued ? POLLOUT : 0)), 0},
        {target_fd_, static_cast<short>((down_queued < limits_.to_client ? POLLIN : 0) | (up_queued ? POLLOUT : 0)), 0},
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
    if ((p[1].revents & POLLIN) && !read_target()) break;
    if (evbuffer_get_length(b_.to_client) && !flush(b_.to_client, client_fd_)) {
      result_.why = Why::SocketEnded;
      break;
    }
    if (!still_busy()) {
      result_.why = Why::Slow;
      break;
    }
  }
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

// Reads what the client sent and decodes it. False (with result_ set) ends the loan.
bool BulkRelay::read_client() {
  size_t got = sockio::read_more(client_fd_, b_.from_client, kReadBudget);
  if (got == 0) {
    result_.why = Why::SocketEnded;  // its end, or an error: the bufferevent reads it again
    return false;
  }
  window_bytes_ += got;
  Feeder feeder(*this);
  evbuffer* in = b_.from_client;
  while (evbuffer_get_length(in) > 0) {
    evbuffer_iovec v[16];
    int n = std::min(evbuffer_peek(in, -1, nullptr, v, 16), 16);
    size_t used = 0;
    for (int i = 0; i < n; ++i) {
      auto err = decoder_.feed({static_cast<uint8_t*>(v[i].iov_base), v[i].iov_len}, feeder);
      used += v[i].iov_len;
      if (err) {
        evbuffer_drain(in, evbuffer_get_length(in));
        result_ = {Why::ProtocolError, static_cast<uint16_t>(err->code), err->reason};
        return false;
      }
      if (feeder.failed_alloc) {
        evbuffer_drain(in, evbuffer_get_length(in));
        result_ = {Why::ProtocolError, static_cast<uint16_t>(CloseCode::InternalError), "out of memory"};
        return false;
      }
      if (feeder.closed) {
        evbuffer_drain(in, evbuffer_get_length(in));  // RFC 6455 5.5.1: nothing follows a Close
        result_ = {Why::ClientClosed, feeder.close_code, {}};
        return false;
      }
    }
    evbuffer_drain(in, used);
  }
  return true;
}

bool BulkRelay::read_target() {
  size_t got = sockio::read_more(target_fd_, b_.from_target, kReadBudget);
  if (got == 0) {
    result_.why = Why::SocketEnded;
    return false;
  }
  counters_.down.fetch_add(got, std::memory_order_relaxed);
  window_bytes_ += got;
  frame_target_bytes();
  return true;
}

// Every target byte read becomes part of a binary message at once, so the
// client's queue holds only whole frames (a Pong may go between any two).
void BulkRelay::frame_target_bytes() {
  while (size_t len = evbuffer_get_length(b_.from_target)) {
    size_t n = std::min(len, kMaxDataMessage);
    uint8_t head[kMaxHeader];
    evbuffer_add(b_.to_client, head, encode_header(head, Opcode::Binary, true, n, nullptr));
    evbuffer_remove_buffer(b_.from_target, b_.to_client, n);  // moves whole chains
  }
}

// Writes what the socket takes now. False on an error other than "full".
bool BulkRelay::flush(evbuffer* out, evutil_socket_t fd) {
  if (evbuffer_get_length(out) == 0) return true;
  int n = evbuffer_write(out, fd);
  return n >= 0 || errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

}  // namespace netwine::ws
