// WebSocket tunnels: the upgrade on evhttp and the relay between a WebSocket and
// a Session. (Filled in by the WebSocket glue work.)
#pragma once

#include <cstdint>
#include <string>

struct evhttp_request;

namespace netwine::tunnel {
class Manager;
}

namespace netwine::ws {

struct UpgradeParams {
  std::string target;    // requested target for a new session; empty when attaching
  std::string key;       // attach to this existing session (netwine.v1 only)
  uint64_t ack = 0;      // with key: downstream offset the client holds
  bool foreign = false;  // websockify-compatible path outside the prefix
};

void handle_upgrade(tunnel::Manager& m, evhttp_request* req, const UpgradeParams& p);

}  // namespace netwine::ws
