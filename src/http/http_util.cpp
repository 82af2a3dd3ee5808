#include "http/http_util.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <nlohmann/json.hpp>

#include "ascii.hpp"
#include "log.hpp"

namespace netwine::http {
namespace {

using Clock = std::chrono::steady_clock;

// Start times of requests being handled. evhttp has no per-request user pointer,
// so the table is keyed by the request; entries leave it when the request is logged.
std::unordered_map<evhttp_request*, Clock::time_point>& start_times() {
  thread_local std::unordered_map<evhttp_request*, Clock::time_point> table;  // each loop its own
  return table;
}

// Requests for session keys that do not exist are what guessing keys looks like:
// log a few a second in full, count the rest (log::Throttle).
constexpr double kUnknownKeyLogWindowSeconds = 1.0;
constexpr uint64_t kUnknownKeyLogBurst = 5;

log::Throttle& unknown_key_throttle() {
  thread_local log::Throttle t(kUnknownKeyLogWindowSeconds, kUnknownKeyLogBurst);
  return t;
}

// The client of the last unknown-key request that was only counted.
std::string& last_unlogged_client() {
  thread_local std::string client;
  return client;
}

void log_unknown_keys_summary(uint64_t count, double seconds) {
  if (count == 0) return;
  log::warn(count, " requests for unknown session keys (404) in ", log::tenths(seconds),
            "s not logged one by one; the last from ", last_unlogged_client());
}

}  // namespace

const char* method_name(evhttp_cmd_type t) {
  switch (t) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
  }
  return "?";
}

void note_request_start(evhttp_request* req) {
  if (log::access_open()) start_times()[req] = Clock::now();  // only the access log reads it
}

void forget_request(evhttp_request* req) { start_times().erase(req); }

void flush_log_summaries(bool only_due) {
  double seconds = 0;
  uint64_t count = unknown_key_throttle().take_pending(seconds, only_due);
  log_unknown_keys_summary(count, seconds);
}

std::string peer_address(evhttp_request* req) {
  evhttp_connection* conn = evhttp_request_get_connection(req);
  if (!conn) return "-";
  char* addr = nullptr;
  ev_uint16_t port = 0;
  evhttp_connection_get_peer(conn, &addr, &port);
  return addr ? std::string(addr) : std::string("-");
}

void log_request_done(evhttp_request* req, int status, uint64_t body_bytes) {
  double secs = 0;
  auto& table = start_times();
  if (!log::access_open()) {  // --access-log '': no record to build (its address, path, time)
    table.erase(req);
    return;
  }
  if (auto it = table.find(req); it != table.end()) {
    secs = std::chrono::duration<double>(Clock::now() - it->second).count();
    table.erase(it);
  }
  log::Record r;
  r.add("client", peer_address(req));
  r.add("method", method_name(evhttp_request_get_command(req)));
  const char* uri = evhttp_request_get_uri(req);
  r.add("path", redact_uri(uri ? uri : "-"));
  r.add("status", static_cast<int64_t>(status));
  r.add("bytes", static_cast<int64_t>(body_bytes));
  r.add_real("duration", secs);
  log::access("http", r);
}

namespace {

// Sends a complete response and logs it; `unknown_key` marks a 404 for a session
// key that does not exist, which is logged through the throttle.
void reply(evhttp_request* req, int status, const char* reason, evbuffer* body, bool unknown_key) {
  uint64_t n = body ? evbuffer_get_length(body) : 0;
  if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD && n > 0) {
    // libevent 2.1.12 sends a HEAD reply's body as given and adds no
    // Content-Length: describe the body and send none.
    evkeyvalq* out = evhttp_request_get_output_headers(req);
    if (!evhttp_find_header(out, "Content-Length"))
      evhttp_add_header(out, "Content-Length", std::to_string(n).c_str());
    evbuffer_drain(body, n);
    n = 0;
  }
  uint64_t unlogged = 0;
  double over = 0;
  if (!unknown_key || unknown_key_throttle().allow(unlogged, over)) {
    log_unknown_keys_summary(unlogged, over);
    log_request_done(req, status, n);
  } else {
    last_unlogged_client() = peer_address(req);
    start_times().erase(req);
  }
  add_date_header(evhttp_request_get_output_headers(req));
  evhttp_send_reply(req, status, reason ? reason : reason_phrase(status), body);
}

void text_reply(evhttp_request* req, int status, std::string_view body, const char* content_type,
                bool unknown_key) {
  evkeyvalq* out = evhttp_request_get_output_headers(req);
  evhttp_remove_header(out, "Content-Type");
  evhttp_add_header(out, "Content-Type", content_type);
  evhttp_add_header(out, "X-Content-Type-Options", "nosniff");
  evbuffer* buf = evbuffer_new();
  evbuffer_add(buf, body.data(), body.size());
  reply(req, status, nullptr, buf, unknown_key);
  evbuffer_free(buf);
}

}  // namespace

void send_reply(evhttp_request* req, int status, const char* reason, evbuffer* body) {
  reply(req, status, reason, body, false);
}

void send_text(evhttp_request* req, int status, std::string_view body, const char* content_type) {
  text_reply(req, status, body, content_type, false);
}

void send_json_error(evhttp_request* req, int status, std::string_view code, std::string_view message) {
  nlohmann::json j;
  j["error"] = std::string(code);
  j["message"] = std::string(message);
  text_reply(req, status, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
             "application/json", status == 404 && code == "unknown_session");
}

std::string redact_uri(std::string_view uri) {
  // Session keys travel in tunnel paths (/netwine/<key>/...) and must never be
  // logged whole. Any path segment of 20+ key characters is shortened.
  std::string out;
  size_t i = 0;
  while (i < uri.size()) {
    size_t j = i;
    auto keych = [](char c) {
      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
             c == '-' || c == '_';
    };
    while (j < uri.size() && keych(uri[j])) ++j;
    if (j - i >= 20) out += log::redact_key(uri.substr(i, j - i));
    else out += uri.substr(i, j - i);
    if (j < uri.size()) out += uri[j];
    i = j + 1;
  }
  return out;
}

const char* date_value(std::time_t now) {
  thread_local std::time_t formatted = -1;
  thread_local char value[64];
  if (now != formatted) {
    std::tm t{};
    gmtime_r(&now, &t);
    evutil_date_rfc1123(value, sizeof value, &t);
    formatted = now;
  }
  return value;
}

void add_date_header(evkeyvalq* headers) {
  if (!evhttp_find_header(headers, "Date")) evhttp_add_header(headers, "Date", date_value(std::time(nullptr)));
}

const char* reason_phrase(int status) {
  switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
  }
  return "Unknown";
}

std::optional<std::string> query_value(std::string_view query, std::string_view name) {
  std::optional<std::string_view> raw;
  size_t pos = 0;
  while (pos < query.size()) {
    size_t amp = query.find('&', pos);
    std::string_view arg = query.substr(pos, amp == std::string_view::npos ? std::string_view::npos : amp - pos);
    pos = amp == std::string_view::npos ? query.size() : amp + 1;
    size_t eq = arg.find('=');
    if (eq == std::string_view::npos || eq == 0) return std::nullopt;  // evhttp refuses the whole query
    if (!raw && iequals(arg.substr(0, eq), name)) raw = arg.substr(eq + 1);
  }
  if (!raw) return std::nullopt;
  std::string value(*raw);
  char* decoded = evhttp_uridecode(value.c_str(), /*decode_plus=*/1, nullptr);
  if (!decoded) return std::nullopt;
  std::string out(decoded);  // as evhttp's table held it: a C string, cut at a decoded NUL
  std::free(decoded);
  return out;
}

std::optional<std::string> query_param(evhttp_request* req, const char* name) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
  const char* query = uri ? evhttp_uri_get_query(uri) : nullptr;
  if (!query) return std::nullopt;
  return query_value(query, name);
}

void free_abandoned(evhttp_request* req) {
  if (!evhttp_request_get_connection(req)) evhttp_request_free(req);
}

const char* request_header(evhttp_request* req, const char* name) {
  return evhttp_find_header(evhttp_request_get_input_headers(req), name);
}

}  // namespace netwine::http
