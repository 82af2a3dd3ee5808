// unique_ptr aliases for libevent objects, so every owner frees exactly once and
// ownership is visible in the type (STYLE habit 5).
#pragma once

#include <memory>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

namespace netwine {

template <auto Fn>
struct Deleter {
  template <typename T>
  void operator()(T* p) const { if (p) Fn(p); }
};

inline void free_dns_base(evdns_base* b) { evdns_base_free(b, 1); }

// Seconds as the timeval libevent's timers take (a negative time is zero).
inline timeval to_timeval(double s) {
  if (s < 0) s = 0;
  timeval tv;
  tv.tv_sec = static_cast<time_t>(s);
  tv.tv_usec = static_cast<suseconds_t>((s - static_cast<double>(tv.tv_sec)) * 1e6);
  return tv;
}

using EventBasePtr = std::unique_ptr<event_base, Deleter<event_base_free>>;
using EventPtr = std::unique_ptr<event, Deleter<event_free>>;
using EvbufferPtr = std::unique_ptr<evbuffer, Deleter<evbuffer_free>>;
using BuffereventPtr = std::unique_ptr<bufferevent, Deleter<bufferevent_free>>;
using EvhttpPtr = std::unique_ptr<evhttp, Deleter<evhttp_free>>;
using ListenerPtr = std::unique_ptr<evconnlistener, Deleter<evconnlistener_free>>;
using DnsBasePtr = std::unique_ptr<evdns_base, Deleter<free_dns_base>>;

}  // namespace netwine
