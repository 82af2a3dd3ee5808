/* refws: a reference WebSocket bridge, for bench/run.sh's target ref-ws
 * (docs/PERFORMANCE.md, "The floor of a WebSocket bridge"). Not part of netwine.
 *
 * refrelay.c measures what a relay costs with WebSocket's per-byte work (one
 * extra pass upstream) but no WebSocket: its client speaks raw TCP. This one
 * speaks RFC 6455 to the same load client netwine gets, doing the least a
 * WebSocket bridge must: the opening handshake (Sec-WebSocket-Accept), each
 * client frame's header parsed and its payload unmasked before it goes to the
 * target, each read from the target sent as one binary message (header and
 * payload in one writev()), Pings answered, a Close ending the connection. The
 * structure is the one that relays fastest in refrelay on every host measured:
 * a blocking thread per direction, reads of up to 256 KiB.
 *
 * What it leaves out, each a cost netwine pays: HTTP beyond the one request
 * line's headers (no keep-alive, no other routes), access rules and limits,
 * validation beyond what relaying needs (no UTF-8 checks, no limit on message
 * size, reserved bits ignored), text frames (relayed as bytes), fragmented
 * messages' opcodes, timeouts, a closing handshake, logging.
 *
 *   refws LISTEN_PORT TARGET_PORT
 *
 * Loopback only (binds 127.0.0.1, relays to 127.0.0.1:TARGET_PORT). A benchmark
 * fixture: each connection lives until either side closes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "refcommon.h"

enum { kBuf = 256 * 1024, kMaxRequest = 8192 };
static int g_target_port;

struct conn {
  int client, target;
  pthread_mutex_t client_write; /* Pongs (upstream thread) and messages (downstream) */
};

static int write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w <= 0) return -1;
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

static int writev_all(int fd, struct iovec *v, int k) {
  while (k > 0) {
    ssize_t w = writev(fd, v, k);
    if (w <= 0) return -1;
    while (k > 0 && (size_t)w >= v->iov_len) {
      w -= (ssize_t)v->iov_len;
      v++, k--;
    }
    if (k > 0) {
      v->iov_base = (char *)v->iov_base + w;
      v->iov_len -= (size_t)w;
    }
  }
  return 0;
}

static size_t frame_header(uint8_t *h, uint8_t opcode, uint64_t len) {
  h[0] = 0x80 | opcode;
  if (len < 126) {
    h[1] = (uint8_t)len;
    return 2;
  }
  if (len < 65536) {
    h[1] = 126, h[2] = (uint8_t)(len >> 8), h[3] = (uint8_t)len;
    return 4;
  }
  h[1] = 127;
  for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)(len >> (56 - 8 * i));
  return 10;
}

/* Unmasks n bytes from src to dst (dst <= src), `off` bytes into the frame's key. */
static void unmask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4], uint64_t off) {
  uint8_t k[8];
  for (int i = 0; i < 8; i++) k[i] = key[(off + (uint64_t)i) & 3];
  uint64_t k64;
  memcpy(&k64, k, 8);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, src + i, 8);
    w ^= k64;
    memcpy(dst + i, &w, 8);
  }
  for (; i < n; i++) dst[i] = src[i] ^ k[i & 7];
}

/* target -> client: each read becomes one binary message. */
static void *downstream(void *arg) {
  struct conn *c = arg;
  uint8_t *buf = malloc(kBuf);
  for (;;) {
    ssize_t n = buf ? recv(c->target, buf, kBuf, 0) : -1;
    if (n <= 0) break;
    uint8_t h[10];
    struct iovec v[2] = {{h, frame_header(h, 2, (uint64_t)n)}, {buf, (size_t)n}};
    pthread_mutex_lock(&c->client_write);
    int r = writev_all(c->client, v, 2);
    pthread_mutex_unlock(&c->client_write);
    if (r != 0) break;
  }
  free(buf);
  shutdown(c->client, SHUT_RDWR);
  shutdown(c->target, SHUT_RDWR);
  return NULL;
}

/* The decoder's state between reads. */
struct decoder {
  uint8_t head[14];
  size_t have;      /* header bytes collected */
  uint64_t left;    /* payload bytes of the current frame still to come */
  uint64_t done;    /* payload bytes of it seen (the mask's phase) */
  uint8_t opcode, key[4];
  uint8_t control[125];
};

static size_t header_size(const uint8_t *h, size_t have) {
  if (have < 2) return 2;
  size_t len7 = h[1] & 0x7f;
  return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((h[1] & 0x80) ? 4 : 0);
}

/* Decodes `n` bytes at p; payload for the target is unmasked to the front of p.
 * Returns the payload length, or -1 to end the connection (a Close, bad input). */
static ssize_t decode(struct conn *c, struct decoder *d, uint8_t *p, size_t n) {
  uint8_t *out = p;
  size_t i = 0;
  while (i < n) {
    if (d->left == 0 && d->have < header_size(d->head, d->have)) {
      d->head[d->have++] = p[i++];
      if (d->have < header_size(d->head, d->have)) continue;
      if (!(d->head[1] & 0x80)) return -1; /* RFC 6455 5.1: client frames are masked */
      size_t len7 = d->head[1] & 0x7f, at = 2;
      uint64_t len = len7;
      if (len7 == 126) len = ((uint64_t)d->head[2] << 8) | d->head[3], at = 4;
      if (len7 == 127) {
        len = 0;
        for (int k = 0; k < 8; k++) len = (len << 8) | d->head[2 + k];
        at = 10;
      }
      memcpy(d->key, d->head + at, 4);
      d->opcode = d->head[0] & 0x0f;
      d->left = len, d->done = 0, d->have = 0;
      if (d->opcode == 8) return -1;                    /* Close */
      if (d->opcode >= 8 && len > 125) return -1;       /* control frames are short */
      if (d->opcode >= 8 && len == 0) goto control;     /* an empty Ping */
      continue;
    }
    size_t take = n - i < d->left ? n - i : (size_t)d->left;
    if (d->opcode < 8) {
      unmask(out, p + i, take, d->key, d->done);
      out += take;
    } else {
      unmask(d->control + d->done, p + i, take, d->key, d->done);
    }
    i += take, d->done += take, d->left -= take;
    if (d->left > 0 || d->opcode < 8) continue;
  control:
    if (d->opcode == 9) { /* Ping: its Pong, between two messages */
      uint8_t h[10];
      struct iovec v[2] = {{h, frame_header(h, 10, d->done)}, {d->control, (size_t)d->done}};
      pthread_mutex_lock(&c->client_write);
      int r = writev_all(c->client, v, 2);
      pthread_mutex_unlock(&c->client_write);
      if (r != 0) return -1;
    }
    d->have = 0;
  }
  return out - p;
}

/* The opening handshake; returns the bytes read past the request (left at buf). */
static ssize_t handshake(int fd, uint8_t *buf) {
  size_t got = 0;
  char *end = NULL;
  while (!end) {
    if (got >= kMaxRequest) return -1;
    ssize_t n = recv(fd, buf + got, kMaxRequest - got, 0);
    if (n <= 0) return -1;
    got += (size_t)n;
    buf[got] = 0;
    end = strstr((char *)buf, "\r\n\r\n");
  }
  const char *k = strcasestr((char *)buf, "\r\nSec-WebSocket-Key:");
  if (!k || k > end) return -1;
  k += strlen("\r\nSec-WebSocket-Key:");
  while (*k == ' ') k++;
  size_t klen = strcspn(k, " \r");
  char text[128];
  if (klen > 64) return -1;
  memcpy(text, k, klen);
  strcpy(text + klen, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha1(), NULL);
  char accept[64];
  EVP_EncodeBlock((unsigned char *)accept, md, (int)mdlen);
  const char *proto = strcasestr((char *)buf, "\r\nSec-WebSocket-Protocol:");
  int binary = proto && proto < end && strstr(proto, "binary") && strstr(proto, "binary") < end;
  char reply[256];
  int r = snprintf(reply, sizeof reply,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: %s\r\n%s\r\n",
                   accept, binary ? "Sec-WebSocket-Protocol: binary\r\n" : "");
  if (write_all(fd, reply, (size_t)r) != 0) return -1;
  size_t head = (size_t)(end + 4 - (char *)buf);
  memmove(buf, buf + head, got - head);
  return (ssize_t)(got - head);
}

/* client -> target, after the handshake; starts the other direction. */
static void *upstream(void *arg) {
  struct conn *c = arg;
  uint8_t *buf = malloc(kBuf > kMaxRequest + 1 ? kBuf : kMaxRequest + 1);
  struct decoder d = {0};
  pthread_t down;
  int have_down = 0;
  ssize_t n = buf ? handshake(c->client, buf) : -1;
  if (n >= 0) c->target = connect_loopback(g_target_port);
  if (n >= 0 && c->target >= 0) have_down = pthread_create(&down, NULL, downstream, c) == 0;
  while (have_down) {
    ssize_t payload = n > 0 ? decode(c, &d, buf, (size_t)n) : 0;
    if (payload < 0 || (payload > 0 && write_all(c->target, buf, (size_t)payload) != 0)) break;
    n = recv(c->client, buf, kBuf, 0);
    if (n <= 0) break;
  }
  shutdown(c->client, SHUT_RDWR);
  if (c->target >= 0) shutdown(c->target, SHUT_RDWR);
  if (have_down) pthread_join(down, NULL);
  close(c->client);
  if (c->target >= 0) close(c->target);
  pthread_mutex_destroy(&c->client_write);
  free(buf);
  free(c);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: refws LISTEN_PORT TARGET_PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  g_target_port = atoi(argv[2]);
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1024) != 0) {
    perror("refws: listen");
    return 1;
  }
  for (;;) {
    int fd = accept(l, NULL, NULL);
    if (fd < 0) continue;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = calloc(1, sizeof *c);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (!c) {
      close(fd);
      continue;
    }
    c->client = fd, c->target = -1;
    pthread_mutex_init(&c->client_write, NULL);
    if (pthread_create(&t, &attr, upstream, c) != 0) {
      close(fd);
      free(c);
    }
    pthread_attr_destroy(&attr);
  }
}
