// Where a request goes once it has passed the Front's checks (front.hpp): the
// tunnel prefix, /metrics, websockify-style upgrades, else a static file. The
// same on every event loop; what must happen on another loop (a session's
// requests, status and metrics) moves there from the Manager.
#pragma once

struct evhttp_request;

namespace netwine {

namespace http { class StaticSite; }
namespace tunnel { class Manager; }

void route_request(evhttp_request* req, tunnel::Manager& tunnels, const http::StaticSite& site);

}  // namespace netwine
