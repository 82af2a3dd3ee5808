// The built-in demo target started by --demo: a real TCP line service on loopback
// that greets, echoes each line and answers a few commands. The demo page and the
// quick start use it; it is allowed as target 'demo' and as 127.0.0.1:PORT.
#pragma once

#include <memory>
#include <string>
#include <unordered_set>

#include "event_handles.hpp"

namespace netwine {

// The reply the demo service gives to one input line (without its line ending);
// `close` is set when the client asked to leave. Pure, so tests can check it.
struct DemoReply {
  std::string text;
  bool close = false;
};
DemoReply demo_reply(const std::string& line);
extern const char* const kDemoGreeting;

class DemoService {
 public:
  DemoService(event_base* base, int port);
  ~DemoService();
  bool ok() const { return listener_ != nullptr; }
  int port() const { return port_; }

 private:
  struct Conn;
  static void on_accept(evconnlistener*, evutil_socket_t fd, sockaddr*, int, void* self);
  static void on_read(bufferevent* bev, void* conn);
  static void on_event(bufferevent* bev, short what, void* conn);
  void drop(Conn* c);

  event_base* base_;
  ListenerPtr listener_;
  int port_ = 0;
  std::unordered_set<Conn*> conns_;
};

}  // namespace netwine
