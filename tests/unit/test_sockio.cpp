// sockio::read_socket() (sockio.hpp): the event loops' reads of plain sockets,
// on real socket pairs.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include <event2/buffer.h>

#include "event_handles.hpp"
#include "sockio.hpp"

using netwine::EvbufferPtr;
using netwine::sockio::read_socket;

namespace {

struct Pair {
  int reader = -1, writer = -1;
  Pair() {
    int fds[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    reader = fds[0];
    writer = fds[1];
    REQUIRE(fcntl(reader, F_SETFL, O_NONBLOCK) == 0);
  }
  ~Pair() {
    if (reader >= 0) close(reader);
    if (writer >= 0) close(writer);
  }
  // Writes all of `data` (blocking writer).
  void put(const std::vector<uint8_t>& data) const {
    size_t at = 0;
    while (at < data.size()) {
      ssize_t w = write(writer, data.data() + at, data.size() - at);
      REQUIRE(w > 0);
      at += static_cast<size_t>(w);
    }
  }
};

std::vector<uint8_t> pattern(size_t n, unsigned seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * 13 + seed) % 251);
  return v;
}

std::vector<uint8_t> contents(evbuffer* b) {
  std::vector<uint8_t> v(evbuffer_get_length(b));
  evbuffer_copyout(b, v.data(), v.size());
  return v;
}

}  // namespace

TEST_CASE("read_socket: a small message is read whole, appended after what the buffer held") {
  Pair p;
  EvbufferPtr out(evbuffer_new());
  evbuffer_add(out.get(), "ab", 2);
  p.put({'h', 'e', 'l', 'l', 'o'});
  auto r = read_socket(p.reader, out.get(), 1 << 20);
  CHECK(r.bytes == 5);
  CHECK_FALSE(r.eof);
  CHECK(r.error == 0);
  CHECK(contents(out.get()) == std::vector<uint8_t>{'a', 'b', 'h', 'e', 'l', 'l', 'o'});
}

TEST_CASE("read_socket: nothing to read is neither EOF nor an error") {
  Pair p;
  EvbufferPtr out(evbuffer_new());
  auto r = read_socket(p.reader, out.get(), 1 << 20);
  CHECK(r.bytes == 0);
  CHECK_FALSE(r.eof);
  CHECK(r.error == 0);
}

TEST_CASE("read_socket: more than the first buffer holds comes whole and in order, within the budget") {
  Pair p;
  // A socket pair holds less than the default socket buffer sizes suggest:
  // write 100 KiB, then read with a budget that cuts it (not on a chunk edge).
  auto data = pattern(100 * 1024, 3);
  p.put(data);
  EvbufferPtr out(evbuffer_new());
  auto r = read_socket(p.reader, out.get(), 70000);
  CHECK(r.bytes == 70000);
  CHECK_FALSE(r.eof);
  auto rest = read_socket(p.reader, out.get(), 1 << 20);
  CHECK(rest.bytes == data.size() - 70000);
  CHECK(contents(out.get()) == data);
}

TEST_CASE("read_socket: the peer's close is EOF, after the bytes before it") {
  Pair p;
  auto data = pattern(20000, 5);  // past the 16 KiB first read
  p.put(data);
  close(p.writer);
  p.writer = -1;
  EvbufferPtr out(evbuffer_new());
  auto r = read_socket(p.reader, out.get(), 1 << 20);
  CHECK(r.bytes == data.size());
  CHECK(r.error == 0);
  CHECK(contents(out.get()) == data);
  // A short read ends the call (the socket is empty), so the EOF behind it may
  // come on the next one: the socket stays readable for the level-triggered event.
  if (!r.eof) r = read_socket(p.reader, out.get(), 1 << 20);
  CHECK(r.eof);
  CHECK(r.error == 0);
  CHECK(evbuffer_get_length(out.get()) == data.size());
}

TEST_CASE("read_socket: a failed read names its errno") {
  int fds[2];
  REQUIRE(pipe(fds) == 0);  // recv() on a pipe fails with ENOTSOCK
  EvbufferPtr out(evbuffer_new());
  auto r = read_socket(fds[0], out.get(), 1 << 20);
  CHECK(r.bytes == 0);
  CHECK_FALSE(r.eof);
  CHECK(r.error == ENOTSOCK);
  close(fds[0]);
  close(fds[1]);
}
