#include "demo_service.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <ctime>

namespace netwine {
namespace {
constexpr size_t kMaxLine = 64 * 1024;  // a longer "line" is echoed in pieces
}

const char* const kDemoGreeting =
    "Welcome to the netwine demo service. Type a line and it comes back; try 'help'.\r\n";

struct DemoService::Conn {
  DemoService* owner;
  BuffereventPtr bev;
  bool closing = false;
};

DemoReply demo_reply(const std::string& raw) {
  std::string line = raw;
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
  DemoReply r;
  if (line == "help") {
    r.text = "commands: help, time, upper TEXT, reverse TEXT, quit; anything else is echoed\r\n";
  } else if (line == "time") {
    std::time_t t = std::time(nullptr);
    char buf[64];
    std::tm tm{};
    gmtime_r(&t, &tm);
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    r.text = std::string("time: ") + buf + "\r\n";
  } else if (line.rfind("upper ", 0) == 0) {
    std::string s = line.substr(6);
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    r.text = s + "\r\n";
  } else if (line.rfind("reverse ", 0) == 0) {
    std::string s = line.substr(8);
    std::reverse(s.begin(), s.end());  // bytes, not characters: ASCII demo command
    r.text = s + "\r\n";
  } else if (line == "quit" || line == "exit") {
    r.text = "bye\r\n";
    r.close = true;
  } else {
    r.text = "echo: " + line + "\r\n";
  }
  return r;
}

DemoService::DemoService(event_base* base, int port) : base_(base) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<uint16_t>(port));
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  listener_.reset(evconnlistener_new_bind(base, &DemoService::on_accept, this,
                                          LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 128,
                                          reinterpret_cast<sockaddr*>(&sin), sizeof sin));
  if (!listener_) return;
  socklen_t len = sizeof sin;
  getsockname(evconnlistener_get_fd(listener_.get()), reinterpret_cast<sockaddr*>(&sin), &len);
  port_ = ntohs(sin.sin_port);
}

DemoService::~DemoService() {
  for (Conn* c : conns_) delete c;
}

void DemoService::on_accept(evconnlistener*, evutil_socket_t fd, sockaddr*, int, void* self) {
  auto* s = static_cast<DemoService*>(self);
  auto* c = new Conn{s, BuffereventPtr(bufferevent_socket_new(s->base_, fd, BEV_OPT_CLOSE_ON_FREE)), false};
  s->conns_.insert(c);
  bufferevent_setcb(c->bev.get(), &DemoService::on_read, nullptr, &DemoService::on_event, c);
  bufferevent_enable(c->bev.get(), EV_READ | EV_WRITE);
  bufferevent_write(c->bev.get(), kDemoGreeting, std::strlen(kDemoGreeting));
}

void DemoService::on_read(bufferevent* bev, void* arg) {
  auto* c = static_cast<Conn*>(arg);
  evbuffer* in = bufferevent_get_input(bev);
  while (!c->closing) {
    size_t n = 0;
    char* line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
    if (!line) {
      if (evbuffer_get_length(in) > kMaxLine) {
        std::string chunk(kMaxLine, '\0');
        evbuffer_remove(in, chunk.data(), kMaxLine);
        bufferevent_write(bev, chunk.data(), chunk.size());
        continue;
      }
      break;
    }
    DemoReply r = demo_reply(std::string(line, n));
    std::free(line);
    bufferevent_write(bev, r.text.data(), r.text.size());
    if (r.close) {
      c->closing = true;
      bufferevent_disable(bev, EV_READ);
      // Close once "bye" has been written: the write callback fires when drained.
      bufferevent_setcb(bev, nullptr, [](bufferevent*, void* a) {
        auto* conn = static_cast<Conn*>(a);
        conn->owner->drop(conn);
      }, &DemoService::on_event, c);
    }
  }
}

void DemoService::on_event(bufferevent*, short what, void* arg) {
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
    auto* c = static_cast<Conn*>(arg);
    c->owner->drop(c);
  }
}

// Freeing the bufferevent from inside its own callback is allowed by libevent for
// socket bufferevents (it defers the finalisation); the Conn goes with it.
void DemoService::drop(Conn* c) {
  conns_.erase(c);
  delete c;
}

}  // namespace netwine
