/* bench/experiments/levrelay.c — 2026-12-05: where a libevent relay spends a
 * small message's time. A one-target TCP relay written three ways on libevent
 * 2.1.12, so the pinned round trip can be compared with socat's and refrelay's:
 *
 *   event      an event per socket (EV_READ | EV_PERSIST), recv() into a buffer,
 *              send() to the other socket
 *   bev        a bufferevent per socket; the read callback moves its input to the
 *              other bufferevent's output (libevent writes it from the loop)
 *   bevdirect  bufferevents for reading; the read callback copies the input out
 *              and send()s it at once (what netwine did before 2026-12-05 midday)
 *
 *   gcc -O2 -o /tmp/levrelay bench/experiments/levrelay.c -levent -levent_pthreads
 *   /tmp/levrelay LISTEN_PORT TARGET_PORT event|bev|bevdirect [threads]
 *
 * (`threads` calls evthread_use_pthreads() first, as netwine does.) With client,
 * relay and echo target all on CPU0 (taskset), CPU per round trip of the relay
 * from /proc/PID/task/N/schedstat, p50 of `nwbench ws-lat --url tcp://...`:
 * event 19.7-21.0 us, p50 39.9-41.2 (refrelay's epoll mode: 19.3-20.8, 39.0-41.3);
 * bev 28.5-29.0, 48.6-49.2 (with threads 26.8-30.1, 46.9-48.6); bevdirect
 * 26.4-26.6, 45.7-45.9. So libevent's loop costs nothing measurable, and a
 * bufferevent's read about 3 us a message (docs/PERFORMANCE.md). Loopback only;
 * no error handling beyond closing the pair; not a relay to use. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum mode { EVENT, BEV, BEVDIRECT };
static struct event_base* base;
static int target_port;
static enum mode mode;

struct pair {
    int a, b;
    struct event *ea, *eb;
};

static void pair_free(struct pair* p) {
    event_free(p->ea);
    event_free(p->eb);
    close(p->a);
    close(p->b);
    free(p);
}

static void on_event_read(evutil_socket_t fd, short what, void* arg) {
    static char buf[65536];
    struct pair* p = arg;
    (void)what;
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
        pair_free(p);
        return;
    }
    send(fd == p->a ? p->b : p->a, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void on_bev_read(struct bufferevent* bev, void* other) {
    if (mode == BEVDIRECT) {
        static char buf[65536];
        int n = evbuffer_remove(bufferevent_get_input(bev), buf, sizeof buf);
        if (n > 0) send(bufferevent_getfd(other), buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
        return;
    }
    bufferevent_write_buffer(other, bufferevent_get_input(bev));
}

static void on_bev_event(struct bufferevent* bev, short what, void* other) {
    (void)what;
    bufferevent_free(bev);
    bufferevent_free(other);
}

static void on_accept(struct evconnlistener* l, evutil_socket_t fd, struct sockaddr* sa, int len, void* arg) {
    (void)l, (void)sa, (void)len, (void)arg;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(target_port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int t = socket(AF_INET, SOCK_STREAM, 0);
    if (t < 0 || connect(t, (struct sockaddr*)&sin, sizeof sin) < 0) {
        close(fd);
        if (t >= 0) close(t);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    evutil_make_socket_nonblocking(fd);
    evutil_make_socket_nonblocking(t);
    if (mode == EVENT) {
        struct pair* p = calloc(1, sizeof *p);
        p->a = fd;
        p->b = t;
        p->ea = event_new(base, fd, EV_READ | EV_PERSIST, on_event_read, p);
        p->eb = event_new(base, t, EV_READ | EV_PERSIST, on_event_read, p);
        event_add(p->ea, NULL);
        event_add(p->eb, NULL);
        return;
    }
    struct bufferevent* a = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    struct bufferevent* b = bufferevent_socket_new(base, t, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(a, on_bev_read, NULL, on_bev_event, b);
    bufferevent_setcb(b, on_bev_read, NULL, on_bev_event, a);
    bufferevent_enable(a, EV_READ | EV_WRITE);
    bufferevent_enable(b, EV_READ | EV_WRITE);
}

int main(int argc, char** argv) {
    if (argc < 4) return 2;
    if (argc > 4) evthread_use_pthreads();
    target_port = atoi(argv[2]);
    mode = !strcmp(argv[3], "event") ? EVENT : !strcmp(argv[3], "bev") ? BEV : BEVDIRECT;
    base = event_base_new();
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!evconnlistener_new_bind(base, on_accept, NULL, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, 64,
                                 (struct sockaddr*)&sin, sizeof sin))
        return 1;
    return event_base_dispatch(base);
}
