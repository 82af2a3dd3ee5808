#include "sockio.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>

#include <event2/bufferevent_ssl.h>

namespace netwine::sockio {

bool plain_socket(bufferevent* bev) {
  return bufferevent_get_underlying(bev) == nullptr && bufferevent_openssl_get_ssl(bev) == nullptr &&
         bufferevent_getfd(bev) >= 0;
}

size_t read_more(evutil_socket_t fd, evbuffer* out, size_t budget, size_t chunk) {
  size_t got = 0;
  while (got < budget) {
    evbuffer_iovec v;
    size_t want = std::min(chunk, budget - got);
    if (evbuffer_reserve_space(out, static_cast<ev_ssize_t>(want), &v, 1) < 1) break;
    want = std::min(v.iov_len, want);
    ssize_t r = ::recv(fd, v.iov_base, want, MSG_DONTWAIT);
    if (r <= 0) break;  // unused reserved space is simply given back
    v.iov_len = static_cast<size_t>(r);
    evbuffer_commit_space(out, &v, 1);
    got += static_cast<size_t>(r);
    if (static_cast<size_t>(r) < want) break;  // the socket is empty
  }
  return got;
}

namespace {

// Records what a recv() that returned r <= 0 means: EOF, an error, or (EAGAIN,
// EINTR) only that there is nothing to read now.
void note_end(ssize_t r, SocketRead& res) {
  if (r == 0) res.eof = true;
  else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) res.error = errno;
}

}  // namespace

SocketRead read_socket(evutil_socket_t fd, evbuffer* out, size_t budget) {
  constexpr size_t kFirst = 16 * 1024;
  thread_local std::array<uint8_t, kFirst> first;
  SocketRead res;
  size_t want = std::min(budget, kFirst);
  ssize_t r = ::recv(fd, first.data(), want, MSG_DONTWAIT);
  if (r <= 0) {
    note_end(r, res);
    return res;
  }
  evbuffer_add(out, first.data(), static_cast<size_t>(r));
  res.bytes = static_cast<size_t>(r);
  if (static_cast<size_t>(r) < want) return res;  // the socket is empty
  while (res.bytes < budget) {
    evbuffer_iovec v;
    want = std::min(kReadChunk, budget - res.bytes);
    if (evbuffer_reserve_space(out, static_cast<ev_ssize_t>(want), &v, 1) < 1) break;
    want = std::min(v.iov_len, want);
    r = ::recv(fd, v.iov_base, want, MSG_DONTWAIT);
    if (r <= 0) {
      note_end(r, res);
      break;
    }
    v.iov_len = static_cast<size_t>(r);
    evbuffer_commit_space(out, &v, 1);
    res.bytes += static_cast<size_t>(r);
    if (static_cast<size_t>(r) < want) break;
  }
  return res;
}

void take_output(bufferevent* bev, evbuffer* to) {
  evbuffer* out = bufferevent_get_output(bev);
  evbuffer_unfreeze(out, 1);
  evbuffer_add_buffer(to, out);
  evbuffer_freeze(out, 1);
}

}  // namespace netwine::sockio
