// The HTTP transports of docs/PROTOCOL.md: open, streaming, long-polling, send
// and close, as thin adapters between evhttp requests and a Session.
#pragma once

#include <string_view>

struct evhttp_request;

namespace netwine::tunnel {

class Manager;
class Session;

void handle_open(Manager& m, evhttp_request* req);
void handle_stream(Manager& m, evhttp_request* req, Session& s);
void handle_poll(Manager& m, evhttp_request* req, Session& s);
void handle_send(Manager& m, evhttp_request* req, Session& s);
void handle_close(Manager& m, evhttp_request* req, Session& s);

}  // namespace netwine::tunnel
