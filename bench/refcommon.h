/* What bench/refrelay.c and bench/refws.c share: the connection to the target.
 * Benchmark fixtures, not part of netwine. */
#pragma once
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

/* A blocking TCP connection to 127.0.0.1:port with TCP_NODELAY, or -1. */
static inline int connect_loopback(int port) {
  int t = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (t < 0 || connect(t, (struct sockaddr *)&a, sizeof a) != 0) {
    if (t >= 0) close(t);
    return -1;
  }
  int one = 1;
  setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return t;
}
