/* refpoll: a reference long-polling bridge on one evhttp loop, for bench/run.sh's
 * target ref-evhttp (docs/PERFORMANCE.md, "What one evhttp loop can do"). Not
 * part of netwine.
 *
 * It speaks the subset of docs/PROTOCOL.md section 3 that `nwbench poll-rtt`
 * uses, doing per request the least a long-polling bridge built on libevent's
 * evhttp must do, so that netwine's round trips per second can be read against
 * the ceiling of its HTTP server on the same host:
 *
 *   POST /netwine/open?target=HOST:PORT&mode=poll   connect; answer "OK <key>\n"
 *   POST /netwine/KEY/send?off=N                    body to the target; "OK <next>\n"
 *   GET  /netwine/KEY/poll?framing=binary&ack=N     "D <offset> <length>\n" and the
 *                                                   bytes, or held until some come
 *                                                   (25 s at most: then empty)
 *   POST /netwine/KEY/close                         "OK closed\n"
 *
 * What it leaves out, each a cost netwine pays: access rules, limits, name
 * resolution, keeping bytes until the client acknowledges them (a poll's bytes
 * are dropped once answered), offset checks, noticing a client that leaves a
 * held poll, the idle timers, status counters and logging.
 *
 *   refpoll LISTEN_PORT
 *
 * Loopback only (binds 127.0.0.1; targets must be numeric IPv4). A benchmark
 * fixture: no limits of any kind.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { kMaxPollBody = 1 << 20, kPollWaitSeconds = 25 };

struct session {
  uint64_t key;             /* 0: slot free */
  struct bufferevent *target;
  struct evbuffer *down;    /* target bytes not yet given to a poll */
  uint64_t down_off;        /* offset of down's first byte */
  uint64_t up_next;         /* upstream bytes written so far */
  struct evhttp_request *open_req; /* until the target connects */
  struct evhttp_request *poll;     /* the held poll, if any */
  struct event *poll_timer;
  int ended;                /* the target closed */
};

static struct event_base *g_base;
static struct session *g_sessions;
static size_t g_nsessions;
static uint64_t g_generation;

static void reply_text(struct evhttp_request *req, int code, const char *text) {
  struct evbuffer *b = evbuffer_new();
  evbuffer_add(b, text, strlen(text));
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);
  evhttp_add_header(h, "Content-Type", "text/plain; charset=us-ascii");
  evhttp_add_header(h, "Cache-Control", "no-store");
  evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", b);
  evbuffer_free(b);
}

/* The session named by the path's key, or NULL (404 sent). */
static struct session *find(struct evhttp_request *req, const char *key_text) {
  uint64_t key = strtoull(key_text, NULL, 10);
  struct session *s = key ? &g_sessions[(key - 1) % g_nsessions] : NULL;
  if (s && s->key == key) return s;
  reply_text(req, 404, "no such session\n");
  return NULL;
}

/* Answers the held poll with what the target sent (empty if nothing). */
static void answer_poll(struct session *s) {
  struct evhttp_request *req = s->poll;
  s->poll = NULL;
  evtimer_del(s->poll_timer);
  struct evbuffer *body = evbuffer_new();
  size_t n = evbuffer_get_length(s->down);
  if (n > kMaxPollBody) n = kMaxPollBody;
  if (n > 0) {
    evbuffer_add_printf(body, "D %" PRIu64 " %zu\n", s->down_off, n);
    evbuffer_remove_buffer(s->down, body, n);
    s->down_off += n;
  }
  if (s->ended && evbuffer_get_length(s->down) == 0) evbuffer_add_printf(body, "C 1000 target closed\n");
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);
  evhttp_add_header(h, "Content-Type", "application/octet-stream");
  evhttp_add_header(h, "Cache-Control", "no-store");
  evhttp_send_reply(req, 200, "OK", body);
  evbuffer_free(body);
}

static void on_poll_timeout(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  struct session *s = arg;
  if (s->poll) answer_poll(s);
}

static void end_session(struct session *s) {
  if (s->poll) answer_poll(s);
  if (s->target) bufferevent_free(s->target);
  evbuffer_free(s->down);
  event_free(s->poll_timer);
  memset(s, 0, sizeof *s);
}

static void on_target_read(struct bufferevent *bev, void *arg) {
  struct session *s = arg;
  evbuffer_add_buffer(s->down, bufferevent_get_input(bev));
  if (s->poll) answer_poll(s);
}

static void on_target_event(struct bufferevent *bev, short what, void *arg) {
  (void)bev;
  struct session *s = arg;
  if (what & BEV_EVENT_CONNECTED) {
    int one = 1;
    setsockopt(bufferevent_getfd(s->target), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char line[64];
    snprintf(line, sizeof line, "OK %" PRIu64 "\n", s->key);
    reply_text(s->open_req, 200, line);
    s->open_req = NULL;
    return;
  }
  if (s->open_req) {  /* the connect failed */
    reply_text(s->open_req, 502, "target connection failed\n");
    end_session(s);
    return;
  }
  s->ended = 1;
  bufferevent_disable(s->target, EV_READ | EV_WRITE);
  if (s->poll) answer_poll(s);
}

static void handle_open(struct evhttp_request *req, const char *target) {
  struct sockaddr_in a = {.sin_family = AF_INET};
  char host[64];
  const char *colon = target ? strrchr(target, ':') : NULL;
  if (!colon || (size_t)(colon - target) >= sizeof host) {
    reply_text(req, 400, "bad target\n");
    return;
  }
  memcpy(host, target, (size_t)(colon - target));
  host[colon - target] = 0;
  a.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
    reply_text(req, 400, "bad target\n");
    return;
  }
  struct session *s = NULL;
  for (size_t i = 0; i < g_nsessions && !s; i++)
    if (!g_sessions[i].key) s = &g_sessions[i];
  if (!s) {
    reply_text(req, 503, "too many sessions\n");
    return;
  }
  /* The key names its slot: (key - 1) % g_nsessions. */
  s->key = (g_generation++) * g_nsessions + (uint64_t)(s - g_sessions) + 1;
  s->down = evbuffer_new();
  s->poll_timer = evtimer_new(g_base, on_poll_timeout, s);
  s->target = bufferevent_socket_new(g_base, -1, BEV_OPT_CLOSE_ON_FREE);
  s->open_req = req;
  bufferevent_setcb(s->target, on_target_read, NULL, on_target_event, s);
  bufferevent_enable(s->target, EV_READ | EV_WRITE);
  if (bufferevent_socket_connect(s->target, (struct sockaddr *)&a, sizeof a) != 0) {
    s->open_req = NULL;
    reply_text(req, 502, "target connection failed\n");
    end_session(s);
  }
}

static void handle_poll(struct evhttp_request *req, struct session *s) {
  if (s->poll) answer_poll(s);  /* the newer poll takes over */
  s->poll = req;
  if (evbuffer_get_length(s->down) > 0 || s->ended) {
    answer_poll(s);
    return;
  }
  struct timeval wait = {kPollWaitSeconds, 0};
  evtimer_add(s->poll_timer, &wait);
}

static void handle_send(struct evhttp_request *req, struct session *s) {
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  s->up_next += evbuffer_get_length(in);
  if (s->target && !s->ended) bufferevent_write_buffer(s->target, in);
  char line[64];
  snprintf(line, sizeof line, "OK %" PRIu64 "\n", s->up_next);
  reply_text(req, 200, line);
}

static void on_request(struct evhttp_request *req, void *arg) {
  (void)arg;
  const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
  const char *path = evhttp_uri_get_path(uri);
  static const char prefix[] = "/netwine/";
  if (!path || strncmp(path, prefix, sizeof prefix - 1) != 0) {
    reply_text(req, 404, "not found\n");
    return;
  }
  path += sizeof prefix - 1;
  struct evkeyvalq q;
  const char *query = evhttp_uri_get_query(uri);
  evhttp_parse_query_str(query ? query : "", &q);
  if (strcmp(path, "open") == 0) {
    handle_open(req, evhttp_find_header(&q, "target"));
  } else {
    const char *slash = strchr(path, '/');
    struct session *s = slash ? find(req, path) : NULL;
    if (!slash) {
      reply_text(req, 404, "not found\n");
    } else if (s) {
      const char *verb = slash + 1;
      if (strcmp(verb, "poll") == 0) {
        handle_poll(req, s);
      } else if (strcmp(verb, "send") == 0) {
        handle_send(req, s);
      } else if (strcmp(verb, "close") == 0) {
        end_session(s);
        reply_text(req, 200, "OK closed\n");
      } else {
        reply_text(req, 404, "not found\n");
      }
    }
  }
  evhttp_clear_headers(&q);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: refpoll LISTEN_PORT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  g_nsessions = 4096;
  g_sessions = calloc(g_nsessions, sizeof *g_sessions);
  g_base = event_base_new();
  struct evhttp *http = evhttp_new(g_base);
  evhttp_set_gencb(http, on_request, NULL);
  struct evhttp_bound_socket *bound =
      g_sessions && http ? evhttp_bind_socket_with_handle(http, "127.0.0.1", (uint16_t)atoi(argv[1])) : NULL;
  if (!bound) {
    fprintf(stderr, "refpoll: cannot listen on 127.0.0.1:%s\n", argv[1]);
    return 1;
  }
  /* No Nagle delay on answers, as netwine (Linux: accepted sockets inherit it). */
  int one = 1;
  setsockopt(evhttp_bound_socket_get_fd(bound), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  event_base_dispatch(g_base);
  return 0;
}
