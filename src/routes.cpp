#include "routes.hpp"

#include <string_view>

#include <event2/http.h>

#include "http/http_util.hpp"
#include "http/static_files.hpp"
#include "tunnel/manager.hpp"

namespace netwine {

void route_request(evhttp_request* req, tunnel::Manager& tunnels, const http::StaticSite& site) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
  const char* raw_path = uri ? evhttp_uri_get_path(uri) : nullptr;
  if (!raw_path || raw_path[0] != '/') {
    http::send_text(req, 400, "400 bad request: malformed request target\n");
    return;
  }
  std::string_view path(raw_path);
  const std::string& prefix = tunnels.config().prefix;
  if (path.substr(0, prefix.size()) == prefix) {
    tunnels.handle(req, path.substr(prefix.size()));
    return;
  }
  if (path == std::string_view(prefix).substr(0, prefix.size() - 1)) {
    tunnels.handle(req, "");
    return;
  }
  if (path == "/metrics") {
    tunnels.handle_metrics(req);
    return;
  }
  if (tunnels.handle_foreign_upgrade(req)) return;  // websockify-style paths
  site.handle(req);
}

}  // namespace netwine
