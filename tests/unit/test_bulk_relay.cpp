// BulkRelay (ws/bulk_relay.hpp) on its own: a real thread relaying between two
// socket pairs, the test playing both the WebSocket client and the target.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include <event2/buffer.h>

#include "event_handles.hpp"
#include "tunnel/session.hpp"
#include "ws/bulk_relay.hpp"
#include "ws/frame.hpp"

using netwine::EvbufferPtr;
using netwine::tunnel::LentCounters;
using namespace netwine::ws;

namespace {

std::vector<uint8_t> pattern(size_t n, unsigned seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * 7 + seed) % 251);
  return v;
}

// A client frame: masked, as RFC 6455 5.3 requires.
std::vector<uint8_t> client_frame(Opcode op, const std::vector<uint8_t>& payload, bool fin = true, uint8_t rsv = 0) {
  const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  uint8_t head[kMaxHeader];
  size_t h = encode_header(head, op, fin, payload.size(), key);
  head[0] |= static_cast<uint8_t>(rsv << 4);
  std::vector<uint8_t> out(h + payload.size());
  std::memcpy(out.data(), head, h);
  copy_masked(out.data() + h, payload.data(), payload.size(), key, 0);
  return out;
}

void write_all(int fd, const std::vector<uint8_t>& b) {
  size_t off = 0;
  while (off < b.size()) {
    pollfd p{fd, POLLOUT, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);
    ssize_t n = ::send(fd, b.data() + off, b.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EAGAIN) continue;
    REQUIRE(n > 0);
    off += static_cast<size_t>(n);
  }
}

// Reads exactly n bytes (each wait bounded).
std::vector<uint8_t> read_n(int fd, size_t n) {
  std::vector<uint8_t> out(n);
  size_t got = 0;
  while (got < n) {
    pollfd p{fd, POLLIN, 0};
    REQUIRE(::poll(&p, 1, 10000) == 1);
    ssize_t r = ::recv(fd, out.data() + got, n - got, 0);
    if (r < 0 && errno == EAGAIN) continue;
    REQUIRE(r > 0);
    got += static_cast<size_t>(r);
  }
  return out;
}

// Parses the server's frames from `fd` until `payload_bytes` of binary data came:
// returns the data and, on the side, any Pong payloads in the order they came.
std::vector<uint8_t> read_messages(int fd, size_t payload_bytes, std::vector<std::string>* pongs = nullptr) {
  std::vector<uint8_t> data;
  while (data.size() < payload_bytes || (pongs && pongs->empty())) {
    auto h = read_n(fd, 2);
    REQUIRE((h[1] & 0x80) == 0);  // server frames are not masked
    uint64_t len = h[1] & 0x7f;
    if (len == 126) {
      auto e = read_n(fd, 2);
      len = (uint64_t{e[0]} << 8) | e[1];
    } else if (len == 127) {
      auto e = read_n(fd, 8);
      len = 0;
      for (uint8_t b : e) len = (len << 8) | b;
    }
    auto payload = read_n(fd, static_cast<size_t>(len));
    auto op = static_cast<Opcode>(h[0] & 0x0f);
    REQUIRE((h[0] & 0x80) != 0);
    if (op == Opcode::Binary) {
      data.insert(data.end(), payload.begin(), payload.end());
    } else {
      REQUIRE(op == Opcode::Pong);
      REQUIRE(pongs != nullptr);
      pongs->emplace_back(payload.begin(), payload.end());
    }
  }
  return data;
}

struct Pair {
  int ours = -1, theirs = -1;  // ours: the relay's end (non-blocking); theirs: the test's
  Pair() {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    ours = sv[0];
    theirs = sv[1];
    REQUIRE(::fcntl(ours, F_SETFL, O_NONBLOCK) == 0);
    REQUIRE(::fcntl(theirs, F_SETFL, O_NONBLOCK) == 0);
  }
  ~Pair() {
    if (ours >= 0) ::close(ours);
    if (theirs >= 0) ::close(theirs);
  }
};

// One relay with its queues, and a way to wait for it to stop by itself.
struct Rig {
  Pair client, target;
  Decoder decoder{Role::Server, 16 * 1024 * 1024};
  EvbufferPtr from_client{evbuffer_new()}, to_target{evbuffer_new()}, from_target{evbuffer_new()},
      to_client{evbuffer_new()};
  LentCounters counters;
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false;
  BulkRelay relay;

  explicit Rig(int idle_ms = 5000, size_t min_bytes = 0)
      : relay(client.ours, target.ours, decoder,
              BulkRelay::Buffers{from_client.get(), to_target.get(), from_target.get(), to_client.get()},
              BulkRelay::Limits{1 << 20, 1 << 20, idle_ms, min_bytes}, counters, [this] {
                std::lock_guard<std::mutex> lock(mu);
                finished = true;
                cv.notify_all();
              }) {}

  bool wait_finished() {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(10), [this] { return finished; });
  }
};

}  // namespace

TEST_CASE("BulkRelay unmasks client data to the target and frames target data to the client, byte-exact") {
  Rig rig;
  // Queued before the loan: both go out first, in order.
  evbuffer_add(rig.to_target.get(), "early-up|", 9);
  evbuffer_add(rig.from_target.get(), "early-down|", 11);
  REQUIRE(rig.relay.start());
  auto up = pattern(3 * 1024 * 1024 + 5, 1), down = pattern(5 * 1024 * 1024 + 3, 2);
  // Client: frames of uneven sizes, one message fragmented, written from a thread
  // while the test reads the target (the relay's queues are bounded).
  std::thread writer([&] {
    std::vector<uint8_t> wire;
    size_t off = 0, step = 1;
    while (off < up.size()) {
      size_t n = std::min(up.size() - off, step * 997);
      auto at = up.begin() + static_cast<long>(off);
      if (step % 5 == 0 && n >= 2) {  // a fragmented message: Binary (no FIN), then Continuation
        auto a = client_frame(Opcode::Binary, std::vector<uint8_t>(at, at + static_cast<long>(n / 2)), false);
        auto b = client_frame(Opcode::Continuation,
                              std::vector<uint8_t>(at + static_cast<long>(n / 2), at + static_cast<long>(n)), true);
        wire.insert(wire.end(), a.begin(), a.end());
        wire.insert(wire.end(), b.begin(), b.end());
      } else {
        auto f = client_frame(Opcode::Binary, std::vector<uint8_t>(at, at + static_cast<long>(n)));
        wire.insert(wire.end(), f.begin(), f.end());
      }
      bool last = off + n == up.size();
      off += n;
      step = step % 300 + 1;
      if (wire.size() > 256 * 1024 || last) {
        write_all(rig.client.theirs, wire);
        wire.clear();
      }
    }
  });
  std::thread feeder([&] { write_all(rig.target.theirs, down); });
  auto at_target = read_n(rig.target.theirs, 9 + up.size());
  auto at_client = read_messages(rig.client.theirs, 11 + down.size());
  writer.join();
  feeder.join();
  CHECK(std::string(at_target.begin(), at_target.begin() + 9) == "early-up|");
  CHECK(std::equal(up.begin(), up.end(), at_target.begin() + 9));
  CHECK(std::string(at_client.begin(), at_client.begin() + 11) == "early-down|");
  CHECK(std::equal(down.begin(), down.end(), at_client.begin() + 11));
  CHECK(rig.counters.up.load() == up.size());
  CHECK(rig.counters.down.load() == down.size());
  auto r = rig.relay.stop();
  CHECK(r.why == BulkRelay::Why::Stopped);
  CHECK(evbuffer_get_length(rig.to_target.get()) == 0);
  CHECK(evbuffer_get_length(rig.to_client.get()) == 0);
}

TEST_CASE("BulkRelay answers a Ping between data messages") {
  Rig rig;
  REQUIRE(rig.relay.start());
  auto down = pattern(600 * 1024, 3);
  std::thread feeder([&] { write_all(rig.target.theirs, down); });
  write_all(rig.client.theirs, client_frame(Opcode::Ping, {'h', 'i'}));
  std::vector<std::string> pongs;
  auto at_client = read_messages(rig.client.theirs, down.size(), &pongs);
  feeder.join();
  CHECK(pongs == std::vector<std::string>{"hi"});
  CHECK(at_client == down);
}

TEST_CASE("BulkRelay gives the connection back at a Close, with the client's code") {
  Rig rig;
  REQUIRE(rig.relay.start());
  auto data = pattern(1000, 4);
  auto wire = client_frame(Opcode::Binary, data);
  auto close = client_frame(Opcode::Close, {0x0f, 0xa0, 'b', 'y', 'e'});  // 4000 "bye"
  wire.insert(wire.end(), close.begin(), close.end());
  auto after = client_frame(Opcode::Binary, {'x'});  // nothing follows a Close (5.5.1)
  wire.insert(wire.end(), after.begin(), after.end());
  write_all(rig.client.theirs, wire);
  REQUIRE(rig.wait_finished());
  auto r = rig.relay.stop();
  CHECK(r.why == BulkRelay::Why::ClientClosed);
  CHECK(r.code == 4000);
  // What came before it is the target's: written, or queued for the loop to write.
  std::vector<uint8_t> for_target(4096);
  ssize_t n = ::recv(rig.target.theirs, for_target.data(), for_target.size(), MSG_DONTWAIT);
  for_target.resize(n > 0 ? static_cast<size_t>(n) : 0);
  size_t queued = evbuffer_get_length(rig.to_target.get());
  for_target.resize(for_target.size() + queued);
  evbuffer_remove(rig.to_target.get(), for_target.data() + for_target.size() - queued, queued);
  CHECK(for_target == data);
}

TEST_CASE("BulkRelay gives the connection back at a protocol error, with the code to fail with") {
  Rig rig;
  REQUIRE(rig.relay.start());
  write_all(rig.client.theirs, client_frame(Opcode::Binary, {'a'}, true, 4));  // RSV3, no extension
  REQUIRE(rig.wait_finished());
  auto r = rig.relay.stop();
  CHECK(r.why == BulkRelay::Why::ProtocolError);
  CHECK(r.code == static_cast<uint16_t>(CloseCode::ProtocolError));
  CHECK(r.reason.find("reserved bit") != std::string::npos);
}

TEST_CASE("BulkRelay leaves a socket's end for the event loop to read") {
  Rig rig;
  REQUIRE(rig.relay.start());
  ::shutdown(rig.target.theirs, SHUT_WR);  // the target is done sending
  REQUIRE(rig.wait_finished());
  CHECK(rig.relay.stop().why == BulkRelay::Why::SocketEnded);
  char c;
  CHECK(::recv(rig.target.ours, &c, 1, 0) == 0);  // still there to be read: the end
}

TEST_CASE("BulkRelay gives the connection back after idle_ms without bytes, and at stop()") {
  SUBCASE("idle") {
    Rig rig(50);
    REQUIRE(rig.relay.start());
    REQUIRE(rig.wait_finished());
    CHECK(rig.relay.stop().why == BulkRelay::Why::Idle);
  }
  SUBCASE("stop") {
    Rig rig(60000);
    REQUIRE(rig.relay.start());
    CHECK(rig.relay.stop().why == BulkRelay::Why::Stopped);
    CHECK_FALSE(rig.finished);  // stop() does not call on_finished
  }
}

TEST_CASE("BulkRelay gives a trickle back: fewer than min_bytes in a second") {
  Rig rig(5000, 64 * 1024);
  REQUIRE(rig.relay.start());
  // A byte every 20 ms: never idle for idle_ms, far under 64 KiB a second.
  std::atomic<bool> done{false};
  std::thread trickle([&] {
    for (int i = 0; i < 200 && !done; ++i) {
      write_all(rig.target.theirs, {static_cast<uint8_t>(i)});
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the trickle's pace, not a wait for a result
    }
  });
  bool finished = rig.wait_finished();
  done = true;
  trickle.join();
  REQUIRE(finished);
  CHECK(rig.relay.stop().why == BulkRelay::Why::Slow);
}

TEST_CASE("BulkRelay::reserve() never hands out more places than asked") {
  std::atomic<int> taken{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 1000; ++i)
        if (BulkRelay::reserve(3)) ++taken;
    });
  for (auto& t : ts) t.join();
  CHECK(taken.load() == 3);
  CHECK(BulkRelay::active() == 3);
  for (int i = 0; i < 3; ++i) BulkRelay::unreserve();
  CHECK(BulkRelay::active() == 0);
}
