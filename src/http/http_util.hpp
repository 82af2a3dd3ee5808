// Small helpers shared by every HTTP handler: replies that always carry a short
// body and always produce one access-log record, query-string parsing, and the
// client address of a request.
#pragma once

#include <cstdint>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>

#include <event2/http.h>

struct evhttp_request;
struct evbuffer;
struct evkeyvalq;

namespace netwine::http {

// Remembers when handling of `req` started, for the access log's duration.
// The server calls it once per request before dispatching.
// "GET", "POST", ... for evhttp's method constant.
const char* method_name(evhttp_cmd_type t);

void note_request_start(evhttp_request* req);
// Forgets `req`'s start without logging it (it moved to another loop, which
// logs it when it answers).
void forget_request(evhttp_request* req);

// Writes the access-log record of `req` (status, bytes) and forgets its start time.
// send_reply() and friends call it; a handler that streams its response calls it
// itself when the response ends.
void log_request_done(evhttp_request* req, int status, uint64_t body_bytes);

// Writes the summaries of log lines held back so far (requests for unknown session
// keys are logged a few a second, the rest counted): with `only_due`, only those
// whose throttle window has ended. Each event loop calls it for its own requests
// every second, and at exit.
void flush_log_summaries(bool only_due = false);

// Sends a complete response and logs it. `body` may be null; it is drained.
void send_reply(evhttp_request* req, int status, const char* reason, evbuffer* body);

// A complete response with a small text body, e.g. "404 not found\n".
void send_text(evhttp_request* req, int status, std::string_view body,
               const char* content_type = "text/plain; charset=utf-8");

// The tunnel error shape of docs/PROTOCOL.md: {"error": CODE, "message": TEXT}.
// 404 "unknown_session" answers (what guessing keys looks like) are access-logged
// a few a second; the rest are counted and summarised in the server log.
void send_json_error(evhttp_request* req, int status, std::string_view code,
                     std::string_view message);

// The Date header's value for the second `now` (IMF-fixdate, RFC 9110 §5.6.7:
// "Sun, 06 Nov 1994 08:49:37 GMT"), formatted once per second per thread. evhttp
// formats one for every response that has none (gmtime_r and two snprintf calls:
// 6.5% of the instructions of a long-poll round trip); the replies here bring it.
// Valid until the thread's next call for another second.
const char* date_value(std::time_t now);

// Adds Date (the current second) to a response's headers unless one is there.
void add_date_header(evkeyvalq* headers);

// The standard reason phrase for a status ("Not Found"); "Unknown" otherwise.
const char* reason_phrase(int status);

// Value of query parameter `name` in the request URI, percent-decoded;
// nullopt when absent.
std::optional<std::string> query_param(evhttp_request* req, const char* name);

// The same for a raw query string ("a=1&b=x%20y"), with evhttp's rules exactly
// (evhttp_parse_query_str, then evhttp_find_header): the name is matched without
// regard to ASCII case, the first match wins, '+' and %XX are decoded, and a query
// with a part that has no '=' or an empty name has no values at all. It scans the
// string where evhttp would build a table of every parameter for each lookup (three
// or four per long-poll request).
std::optional<std::string> query_value(std::string_view query, std::string_view name);

// The TCP peer address of the request's connection ("-" when gone).
std::string peer_address(evhttp_request* req);

// `uri` with anything that looks like a session key shortened (keys are never logged whole).
std::string redact_uri(std::string_view uri);

// For a request still without an answer whose connection has just closed (called
// from the close callback): when the client left (EOF, reset, timeout) evhttp has
// detached the request from its connection and no longer frees it, so this does
// (not doing so leaked every abandoned long poll and held send); when the
// connection is freed with the request still on it (evhttp_free at exit), evhttp
// frees it and this does nothing.
void free_abandoned(evhttp_request* req);

// Header lookup on the request (case-insensitive); nullptr when absent.
const char* request_header(evhttp_request* req, const char* name);

}  // namespace netwine::http
