// Temporary: answers every upgrade with 501 until the WebSocket glue lands.
#include "ws/ws_connection.hpp"

#include "http/http_util.hpp"

namespace netwine::ws {
void handle_upgrade(tunnel::Manager&, evhttp_request* req, const UpgradeParams&) {
  http::send_text(req, 501, "501 WebSocket support is being built\n");
}
}  // namespace netwine::ws
