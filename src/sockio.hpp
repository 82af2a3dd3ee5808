// Reading sockets without a socket bufferevent's costs (LIBEVENT-NOTES "Speed").
//
// A socket bufferevent reads at most 4096 bytes per read event, so a bulk relay
// built on it alone makes a read callback, and a trip through the event loop, per
// 4 KiB; and each read costs an ioctl(FIONREAD), a buffer chain and callbacks
// under a lock, ~3 us a small message on the pinned round trip
// (docs/PERFORMANCE.md). So the relays read plain sockets themselves: the event
// loops with their own read events (read_socket(), and WsConnection's decoder
// buffer), the bulk threads with read_more(). Where a bufferevent still reads (an
// HTTP request's socket, a TLS connection's), read_more() takes what else the
// kernel holds after its 4096 bytes, up to a budget, in large chunks.
#pragma once

#include <cstddef>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/util.h>

namespace netwine::sockio {

// Reads are made into contiguous spaces of this size (one evbuffer chain each),
// unless the caller names another. libevent rounds a chain up to a power of two
// with its header, so a 64 KiB space is a 128 KiB allocation: the event loops,
// which may hold thousands of partly filled buffers, keep to this size.
inline constexpr size_t kReadChunk = 64 * 1024;

// What a socket bufferevent reads at most per read event in libevent 2.1.12
// (LIBEVENT-NOTES "Speed"): it asks FIONREAD first and reads min(that, 4096). So
// a read of fewer bytes took all the socket held, and read_more() would only
// cost a recv() that fails with EAGAIN — one system call per small message
// each way. Anything that arrives after is announced by the next read event.
inline constexpr size_t kBufferEventRead = 4096;
inline bool socket_may_hold_more(size_t just_read) { return just_read >= kBufferEventRead; }

// True when the bufferevent reads a plain TCP socket itself, so recv() on its fd
// reads exactly the bytes it would have read. Not for TLS or filter bufferevents:
// their fd carries ciphertext or sits below another layer.
bool plain_socket(bufferevent* bev);

// Reads from fd into out until the socket is empty or `budget` bytes were read.
// Returns the bytes read. EOF and errors are not reported here: they are left for
// the bufferevent's own next read to see, so there is one place that handles them.
size_t read_more(evutil_socket_t fd, evbuffer* out, size_t budget, size_t chunk = kReadChunk);

// What read_socket() found.
struct SocketRead {
  size_t bytes = 0;  // appended to the buffer
  bool eof = false;  // the peer closed its side (after `bytes`)
  int error = 0;     // errno of a failed read (after `bytes`); 0 for none
};

// Reads a plain nonblocking socket into out until it holds no more, `budget`
// bytes were read, or EOF or an error came. A short read ends it, so an EOF
// right behind the last bytes is reported by the next call (a level-triggered
// read event calls again). For the loops' own read events on
// plain sockets, which replace the bufferevents' reads: the first recv() goes to
// a per-thread buffer and is copied (a small message then costs no FIONREAD and
// no chain larger than itself), the rest to read_more()'s chunks.
SocketRead read_socket(evutil_socket_t fd, evbuffer* out, size_t budget);

// Moves everything queued in a socket bufferevent's output to `to`. Outside its
// own write callback a socket bufferevent keeps its output's start frozen, and
// evbuffer_add_buffer() then moves nothing (and says so only in its result):
// this thaws it for the move.
void take_output(bufferevent* bev, evbuffer* to);

}  // namespace netwine::sockio
