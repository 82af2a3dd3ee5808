/* refrelay: a reference TCP relay for bench/relay_floor.sh (docs/PERFORMANCE.md,
 * "The floor of a relay on this machine"). Not part of netwine.
 *
 * It relays raw TCP (no WebSocket framing), doing per byte what a WebSocket
 * bridge must do at the least: read, write, and in the client-to-target
 * direction one extra pass over the payload (the RFC 6455 unmasking; here an
 * XOR into a scratch buffer, so the bytes relayed stay intact and an echo still
 * verifies). Four structures, chosen on the command line:
 *
 *   refrelay LISTEN_PORT TARGET_PORT MODE
 *     epoll    one thread, every connection on one epoll loop, non-blocking;
 *              what is read (up to 256 KiB) is written at once, from cache
 *     threads  a blocking thread per direction (two per connection)
 *     splice   as threads, but target-to-client goes socket -> pipe -> socket
 *              with splice(2) (no user-space copy); client-to-target as threads
 *     copy     as threads, without the extra pass (what socat does)
 *     poll     a thread per connection poll()ing both non-blocking sockets (socat's
 *              own structure: select() in a process per connection), with the
 *              extra pass; what is read is written at once
 *     poll2    as threads (a thread per direction, the extra pass upstream), but the
 *              sockets are non-blocking and each read or stalled write first waits
 *              in poll() on the socket and an eventfd (what a relay thread that the
 *              event loop can take back must do; netwine's bulk threads)
 *
 * Loopback only (binds 127.0.0.1). Each connection lives until either side
 * closes; there are no timeouts: it is a benchmark fixture.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "refcommon.h"

enum { kBuf = 256 * 1024 };
enum mode { EPOLL, THREADS, SPLICE, COPY, POLL, POLL2 };
static enum mode g_mode;
static int g_target_port;

/* The extra pass: what unmasking costs, without changing the bytes. */
static void extra_pass(const unsigned char *p, size_t n) {
  static __thread uint64_t scratch[kBuf / 8];
  const uint64_t key = 0x37fa213d37fa213dULL;
  size_t words = n / 8;
  for (size_t i = 0; i < words; i++) {
    uint64_t w;
    memcpy(&w, p + 8 * i, 8);
    scratch[i] = w ^ key;
  }
  __asm__ volatile("" : : "r"(scratch) : "memory");
}

/* ------------------------------------------------------------ threads */

struct dir {
  int from, to, upstream;
  int *refs; /* shared by the two directions: the last one out closes both fds */
};

/* poll2: waits until `fd` is ready for `events`, or `wake` is signalled (never, here). */
static int wait_for(int fd, short events, int wake) {
  struct pollfd p[2] = {{fd, events, 0}, {wake, POLLIN, 0}};
  while (poll(p, 2, -1) < 0)
    if (errno != EINTR) return -1;
  return (p[1].revents & POLLIN) ? -1 : 0;
}

static __thread int t_wake = -1; /* poll2: this direction's eventfd */

static int write_all(int fd, const unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EAGAIN && t_wake >= 0) {
      if (wait_for(fd, POLLOUT, t_wake) != 0) return -1;
      continue;
    }
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void *pump(void *arg) {
  struct dir d = *(struct dir *)arg;
  free(arg);
  if (g_mode == SPLICE && !d.upstream) {
    int p[2];
    if (pipe(p) == 0) {
      fcntl(p[0], F_SETPIPE_SZ, 1 << 20);
      for (;;) {
        ssize_t n = splice(d.from, NULL, p[1], NULL, 1 << 20, SPLICE_F_MOVE);
        if (n <= 0) break;
        while (n > 0) {
          ssize_t m = splice(p[0], NULL, d.to, NULL, (size_t)n, SPLICE_F_MOVE);
          if (m <= 0) goto done;
          n -= m;
        }
      }
    done:
      close(p[0]);
      close(p[1]);
    }
  } else {
    unsigned char *buf = malloc(kBuf);
    if (g_mode == POLL2) {
      t_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      fcntl(d.from, F_SETFL, O_NONBLOCK);
    }
    for (;;) {
      ssize_t n = read(d.from, buf, kBuf);
      if (n < 0 && errno == EAGAIN && t_wake >= 0) {
        if (wait_for(d.from, POLLIN, t_wake) != 0) break;
        continue;
      }
      if (n <= 0) break;
      if (d.upstream && g_mode != COPY) extra_pass(buf, (size_t)n);
      if (write_all(d.to, buf, (size_t)n) != 0) break;
    }
    free(buf);
    if (t_wake >= 0) close(t_wake);
  }
  shutdown(d.to, SHUT_WR);
  shutdown(d.from, SHUT_RD);
  if (__atomic_sub_fetch(d.refs, 1, __ATOMIC_ACQ_REL) == 0) {
    close(d.from);
    close(d.to);
    free(d.refs);
  }
  return NULL;
}

static void start_threads(int c, int t) {
  struct dir *up = malloc(sizeof *up), *down = malloc(sizeof *down);
  int *refs = malloc(sizeof *refs);
  *refs = 2;
  *up = (struct dir){c, t, 1, refs};
  *down = (struct dir){t, c, 0, refs};
  pthread_t th;
  pthread_create(&th, NULL, pump, up);
  pthread_detach(th);
  pthread_create(&th, NULL, pump, down);
  pthread_detach(th);
}

/* --------------------------------------------------------------- poll */

/* Direction 0: client to target (with the extra pass); 1: target to client. A
 * direction reads only once what it read before is all written. */
static void *poll_conn(void *arg) {
  int fds[2];
  memcpy(fds, arg, sizeof fds);
  free(arg);
  const int from[2] = {fds[0], fds[1]}, to[2] = {fds[1], fds[0]};
  unsigned char *buf[2] = {malloc(kBuf), malloc(kBuf)};
  size_t off[2] = {0, 0}, len[2] = {0, 0};
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  fcntl(fds[1], F_SETFL, O_NONBLOCK);
  for (;;) {
    struct pollfd p[2] = {{fds[0], 0, 0}, {fds[1], 0, 0}};
    for (int d = 0; d < 2; d++) {
      if (len[d] == 0) p[d].events |= POLLIN; /* p[d] is from[d]'s socket */
      else p[1 - d].events |= POLLOUT;        /* and p[1-d] is to[d]'s */
    }
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int d = 0; d < 2; d++) {
      if (len[d] == 0 && (p[d].revents & (POLLIN | POLLHUP | POLLERR))) {
        ssize_t n = read(from[d], buf[d], kBuf);
        if (n <= 0) goto out;
        if (d == 0) extra_pass(buf[d], (size_t)n);
        len[d] = (size_t)n;
        off[d] = 0;
      }
      if (len[d] > 0) {
        ssize_t w = write(to[d], buf[d] + off[d], len[d] - off[d]);
        if (w < 0 && errno != EAGAIN) goto out;
        if (w > 0 && (off[d] += (size_t)w) == len[d]) len[d] = 0;
      }
    }
  }
out:
  close(fds[0]);
  close(fds[1]);
  free(buf[0]);
  free(buf[1]);
  return NULL;
}

static void start_poll_thread(int c, int t) {
  int *fds = malloc(2 * sizeof *fds);
  fds[0] = c;
  fds[1] = t;
  pthread_t th;
  pthread_create(&th, NULL, poll_conn, fds);
  pthread_detach(th);
}

/* -------------------------------------------------------------- epoll */

struct side;
struct conn {
  struct side *a, *b;
};
/* One socket; its buffer holds bytes read from the *other* side not yet written here. */
struct side {
  int fd;
  int upstream_from_here; /* bytes read here go to the target (client side) */
  struct side *peer;
  unsigned char *pending;
  size_t off, len;
  int want_out, dead;
};

static int g_ep;
/* Pairs closed during one epoll batch, freed after it (later events of the same
 * batch may still point at them). */
static struct side *g_dead[128];
static int g_ndead;

static void arm(struct side *s) {
  struct epoll_event ev = {.events = (s->len > s->off ? EPOLLOUT : 0u) | (s->peer->len > s->peer->off ? 0u : EPOLLIN),
                           .data.ptr = s};
  epoll_ctl(g_ep, EPOLL_CTL_MOD, s->fd, &ev);
}

static void kill_pair(struct side *s) {
  if (s->dead) return;
  s->dead = s->peer->dead = 1;
  epoll_ctl(g_ep, EPOLL_CTL_DEL, s->fd, NULL);
  epoll_ctl(g_ep, EPOLL_CTL_DEL, s->peer->fd, NULL);
  close(s->fd);
  close(s->peer->fd);
  if (g_ndead < 128) g_dead[g_ndead++] = s; /* else leaked: a fixture */
}

static void free_dead(void) {
  for (int i = 0; i < g_ndead; i++) {
    struct side *s = g_dead[i], *p = s->peer;
    free(s->pending);
    free(p->pending);
    free(s);
    free(p);
  }
  g_ndead = 0;
}

/* Writes what `s` holds pending; returns 0 when all is out. */
static int flush_side(struct side *s) {
  while (s->off < s->len) {
    ssize_t w = send(s->fd, s->pending + s->off, s->len - s->off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
    if (w <= 0) return -1;
    s->off += (size_t)w;
  }
  s->off = s->len = 0;
  return 0;
}

static void on_readable(struct side *s) {
  struct side *out = s->peer;
  if (out->len > out->off) return; /* still writing the last read */
  ssize_t n = recv(s->fd, out->pending, kBuf, MSG_DONTWAIT);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
    kill_pair(s);
    return;
  }
  if (n < 0) return;
  if (s->upstream_from_here) extra_pass(out->pending, (size_t)n);
  out->off = 0;
  out->len = (size_t)n;
  if (flush_side(out) < 0) {
    kill_pair(s);
    return;
  }
  arm(out);
  arm(s);
}

static void run_epoll(int ls) {
  g_ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(g_ep, EPOLL_CTL_ADD, ls, &ev);
  struct epoll_event evs[64];
  for (;;) {
    int n = epoll_wait(g_ep, evs, 64, -1);
    for (int i = 0; i < n; i++) {
      struct side *s = evs[i].data.ptr;
      if (!s) {
        int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
        if (c < 0) continue;
        int t = connect_loopback(g_target_port);
        if (t < 0) {
          close(c);
          continue;
        }
        fcntl(t, F_SETFL, O_NONBLOCK);
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct side *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
        a->fd = c, b->fd = t, a->peer = b, b->peer = a, a->upstream_from_here = 1;
        a->pending = malloc(kBuf), b->pending = malloc(kBuf);
        struct epoll_event ea = {.events = EPOLLIN, .data.ptr = a}, eb = {.events = EPOLLIN, .data.ptr = b};
        epoll_ctl(g_ep, EPOLL_CTL_ADD, c, &ea);
        epoll_ctl(g_ep, EPOLL_CTL_ADD, t, &eb);
        continue;
      }
      if (s->dead) continue;
      if (evs[i].events & EPOLLOUT) {
        int r = flush_side(s);
        if (r < 0) {
          kill_pair(s);
          continue;
        }
        arm(s);
        arm(s->peer);
      }
      if (!s->dead && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) on_readable(s);
    }
    free_dead();
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: refrelay LISTEN_PORT TARGET_PORT epoll|threads|splice|copy|poll|poll2\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int lport = atoi(argv[1]);
  g_target_port = atoi(argv[2]);
  if (!strcmp(argv[3], "epoll")) g_mode = EPOLL;
  else if (!strcmp(argv[3], "threads")) g_mode = THREADS;
  else if (!strcmp(argv[3], "splice")) g_mode = SPLICE;
  else if (!strcmp(argv[3], "copy")) g_mode = COPY;
  else if (!strcmp(argv[3], "poll")) g_mode = POLL;
  else if (!strcmp(argv[3], "poll2")) g_mode = POLL2;
  else {
    fprintf(stderr, "refrelay: unknown mode %s\n", argv[3]);
    return 2;
  }
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)lport)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 1024) != 0) {
    perror("refrelay: bind/listen");
    return 1;
  }
  if (g_mode == EPOLL) {
    fcntl(ls, F_SETFL, O_NONBLOCK);
    run_epoll(ls);
  }
  for (;;) {
    int c = accept(ls, NULL, NULL);
    if (c < 0) continue;
    int t = connect_loopback(g_target_port);
    if (t < 0) {
      close(c);
      continue;
    }
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (g_mode == POLL) start_poll_thread(c, t);
    else start_threads(c, t);
  }
}
