#include "tunnel/manager.hpp"

#include <arpa/inet.h>

#include <fstream>
#include <sstream>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <nlohmann/json.hpp>

#include "allocator.hpp"
#include "front.hpp"
#include "http/http_util.hpp"
#include "log.hpp"
#include "target/connector.hpp"
#include "tunnel/http_transport.hpp"
#include "tunnel/key.hpp"
#include "ws/bulk_relay.hpp"
#include "ws/ws_connection.hpp"

namespace netwine::tunnel {
namespace {

std::string read_text(const std::string& path, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot read";
    return {};
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Refusals by the session limits: at most kLimitLogBurst full lines per window,
// the rest counted and summed up (log::Throttle).
constexpr double kLimitLogWindowSeconds = 10;
constexpr uint64_t kLimitLogBurst = 3;

bool is_upgrade(evhttp_request* req) {
  const char* up = http::request_header(req, "Upgrade");
  return up && evutil_ascii_strcasecmp(up, "websocket") == 0;
}

uint64_t parse_offset(const std::optional<std::string>& v, bool& ok) {
  ok = true;
  if (!v) return 0;
  if (v->empty() || v->size() > 19) { ok = false; return 0; }
  uint64_t n = 0;
  for (char c : *v) {
    if (c < '0' || c > '9') { ok = false; return 0; }
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

}  // namespace

std::unique_ptr<Manager> Manager::create(const Config& config, event_base* base, evdns_base* dns, Front& front,
                                         int demo_port, std::shared_ptr<const tls::TargetTlsContext> target_tls,
                                         std::shared_ptr<SessionCounts> counts, std::string& error) {
  std::unique_ptr<Manager> m(new Manager(config, base, dns, front, demo_port, std::move(counts)));
  m->rules_.target_tls = std::move(target_tls);
  error = m->load_rules();
  if (!error.empty()) return nullptr;
  return m;
}

std::unique_ptr<Manager> Manager::create_worker(const Config& config, event_base* base, evdns_base* dns, Front& front,
                                                Rules rules, std::shared_ptr<SessionCounts> counts, int thread) {
  std::unique_ptr<Manager> m(new Manager(config, base, dns, front, 0, std::move(counts)));
  m->thread_ = thread;
  m->rules_ = std::move(rules);
  return m;
}

Manager::Manager(const Config& config, event_base* base, evdns_base* dns, Front& front, int demo_port,
                 std::shared_ptr<SessionCounts> counts)
    : config_(config),
      base_(base),
      dns_(dns),
      front_(front),
      demo_port_(demo_port),
      counts_(std::move(counts)),
      limit_log_(kLimitLogWindowSeconds, kLimitLogBurst) {
  reaper_.reset(evtimer_new(base_, &Manager::on_reap, this));
}

Manager::~Manager() {
  connecting_.clear();
  // Sessions detach their transports as they go; transports then stop touching them.
  // end() may retire a session, erasing it from sessions_: walk a snapshot of keys.
  std::vector<std::string> keys;
  keys.reserve(sessions_.size());
  for (const auto& entry : sessions_) keys.push_back(entry.first);
  for (const auto& key : keys) {
    auto it = sessions_.find(key);
    if (it != sessions_.end()) it->second->end(close_code::kGoingAway, "server shutting down");
  }
  sessions_.clear();
  reap();
}


// Loads allowed-hosts, target-hosts, tokens and the flags into fresh rule objects
// and swaps them in only if everything loaded: a broken reload keeps the old rules.
std::string Manager::load_rules() {
  const Config& c = config();
  std::string text, err;
  std::string allowed_name = c.allowed_hosts_file.empty() ? "--allow-origin" : c.allowed_hosts_file;
  if (!c.allowed_hosts_file.empty()) {
    text = read_text(c.allowed_hosts_file, err);
    if (!err.empty()) return err;
  }
  for (const auto& o : c.allow_origins) text += "\nallow origin " + o;
  auto allowed = access::AllowedHosts::parse(text, allowed_name);
  if (auto* e = std::get_if<access::RuleError>(&allowed)) return e->to_string();
  auto allowed_rules = std::make_shared<access::AllowedHosts>(std::get<access::AllowedHosts>(std::move(allowed)));
  std::vector<std::string> warnings;
  access::resolve_names(*allowed_rules, warnings);
  for (const auto& w : warnings) log::warn(w);

  std::variant<access::TargetHosts, access::RuleError> targets =
      c.target_hosts_file.empty() ? access::TargetHosts::parse("", "target-hosts")
                                  : access::TargetHosts::load_file(c.target_hosts_file);
  if (auto* e = std::get_if<access::RuleError>(&targets)) return e->to_string();
  auto target_rules = std::make_shared<access::TargetHosts>(std::get<access::TargetHosts>(std::move(targets)));
  if (!c.token_source.empty())
    if (auto e = target_rules->load_token_path(c.token_source)) return e->to_string();
  for (const auto& t : c.targets)
    if (auto e = target_rules->add_allow(t, "--target")) return e->to_string();
  if (demo_port_) {
    std::string addr = "127.0.0.1:" + std::to_string(demo_port_);
    if (auto e = target_rules->add_named("demo", addr, "--demo")) return e->to_string();
    if (auto e = target_rules->add_allow(addr, "--demo")) return e->to_string();
  }

  auto parse_list = [](const std::vector<std::string>& items, const char* what,
                       std::vector<access::Cidr>& out) -> std::string {
    std::string joined;
    for (const auto& i : items) joined += (joined.empty() ? "" : ",") + i;
    auto r = access::parse_cidr_list(joined);
    if (auto* e = std::get_if<std::string>(&r)) return std::string(what) + ": " + *e;
    out = std::get<std::vector<access::Cidr>>(r);
    return {};
  };
  std::vector<access::Cidr> trusted, admin;
  if (auto e = parse_list(c.trusted_proxies, "trusted-proxy", trusted); !e.empty()) return e;
  if (auto e = parse_list(c.admin_allow, "admin-allow", admin); !e.empty()) return e;

  if (target_rules->empty()) {
    if (c.open_proxy)
      log::warn("OPEN PROXY: no target rules and --open-proxy given: ANY client may reach ANY host:port");
    else
      log::warn("no target rules (target-hosts, --target, --demo): every tunnel target will be refused");
  }
  log::info("access rules: ", allowed_rules->rule_count(), " allowed-hosts rules, ", target_rules->rule_count(),
            " target rules, ", target_rules->named_count(), " named targets");
  rules_.allowed = std::move(allowed_rules);
  rules_.targets = std::move(target_rules);
  rules_.trusted_proxies = std::move(trusted);
  rules_.admin_allow = std::move(admin);
  return {};
}

void Manager::log_limit_refusal(std::string line) {
  uint64_t more = 0;
  double over = 0;
  if (!limit_log_.allow(more, over)) {
    limit_log_last_ = std::move(line);
    return;
  }
  log::warn(line, log::held_back_note(more, over, "refusals by the session limits"));
}

void Manager::flush_log_summaries(bool only_due) {
  double over = 0;
  if (uint64_t more = limit_log_.take_pending(over, only_due)) {
    log::warn(more, " more sessions refused by the session limits in ", log::tenths(over), "s; the last: ",
              limit_log_last_);
  }
}

void Manager::reload() {
  std::string err = load_rules();
  if (!err.empty()) log::error("reload failed, keeping the previous rules: ", err);
  else log::info("reload: rules applied to new sessions");
}


// ------------------------------------------------------------------ routing

void Manager::handle(evhttp_request* req, std::string_view rest) {
  evhttp_cmd_type method = evhttp_request_get_command(req);
  add_cors(req);
  if (method == EVHTTP_REQ_OPTIONS) {
    // CORS preflight: allowed only for origins the rules allow.
    OpenError err{};
    if (!client_allowed(req, err)) {
      http::send_json_error(req, err.status, err.code, err.message);
      return;
    }
    evkeyvalq* out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    evhttp_add_header(out, "Access-Control-Allow-Headers", "Content-Type");
    evhttp_add_header(out, "Access-Control-Max-Age", "600");
    http::send_reply(req, 204, nullptr, nullptr);
    return;
  }
  if (rest == "status") return handle_status(req);
  if (rest == "" || rest == "open") {
    if (method != EVHTTP_REQ_POST) {
      evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
      http::send_json_error(req, 405, "method_not_allowed", "open a session with POST");
      return;
    }
    return handle_open(*this, req);
  }
  if (rest == "ws") {
    if (!is_upgrade(req)) {
      http::send_json_error(req, 426, "upgrade_required", "this endpoint needs a WebSocket upgrade");
      return;
    }
    ws::UpgradeParams p;
    p.target = http::query_param(req, "target").value_or("");
    if (p.target.empty()) p.target = config().default_target;
    return ws::handle_upgrade(*this, req, p);
  }
  auto slash = rest.find('/');
  if (slash == std::string_view::npos) {
    http::send_json_error(req, 404, "not_found", "no such tunnel endpoint");
    return;
  }
  std::string_view key = rest.substr(0, slash), verb = rest.substr(slash + 1);
  if (verb != "stream" && verb != "poll" && verb != "send" && verb != "close" && verb != "ws") {
    http::send_json_error(req, 404, "not_found", "no such tunnel endpoint");
    return;
  }
  // The session lives on the loop its key names: the connection goes there.
  if (looks_like_key(key) && key_loop(key) != static_cast<size_t>(thread_) && key_loop(key) < front().loops()) {
    if (front().move_request(req, key_loop(key))) return;
    busy_elsewhere(req);
    return;
  }
  Session* s = looks_like_key(key) ? find(key) : nullptr;
  if (!s) {
    http::send_json_error(req, 404, "unknown_session", "no session with this key (it may have ended)");
    return;
  }
  OpenError err{};
  if (!client_allowed(req, err)) {
    http::send_json_error(req, err.status, err.code, err.message);
    return;
  }
  if (verb == "ws") {
    if (!is_upgrade(req)) {
      http::send_json_error(req, 426, "upgrade_required", "this endpoint needs a WebSocket upgrade");
      return;
    }
    bool ok = true;
    ws::UpgradeParams p;
    p.key = std::string(key);
    p.ack = parse_offset(http::query_param(req, "ack"), ok);
    if (!ok) {
      http::send_json_error(req, 400, "bad_offset", "ack must be a decimal byte offset");
      return;
    }
    return ws::handle_upgrade(*this, req, p);
  }
  bool post_only = verb == "send" || verb == "close";
  if (post_only ? method != EVHTTP_REQ_POST : (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_POST)) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", post_only ? "POST" : "GET, POST");
    http::send_json_error(req, 405, "method_not_allowed", "wrong method for this endpoint");
    return;
  }
  s->reclaim();  // from a WebSocket's relay thread, if it has the session (bulk_relay.hpp)
  if (verb == "stream") return handle_stream(*this, req, *s);
  if (verb == "poll") return handle_poll(*this, req, *s);
  if (verb == "send") return handle_send(*this, req, *s);
  return handle_close(*this, req, *s);
}

bool Manager::handle_foreign_upgrade(evhttp_request* req) {
  if (!is_upgrade(req)) return false;
  ws::UpgradeParams p;
  p.foreign = true;
  if (auto token = http::query_param(req, "token")) p.target = *token;
  else p.target = config().default_target;
  if (p.target.empty()) {
    http::send_text(req, 400,
                    "400 bad request: a WebSocket here needs ?token=NAME (or a --default-target)\n");
    return true;
  }
  ws::handle_upgrade(*this, req, p);
  return true;
}

// ------------------------------------------------------------ access control

std::string Manager::client_address(evhttp_request* req) const {
  auto ip = client_ip(req);
  return ip ? ip->to_string() : http::peer_address(req);
}

std::optional<access::IpAddress> Manager::client_ip(evhttp_request* req) const {
  evhttp_connection* conn = evhttp_request_get_connection(req);
  char* peer = nullptr;
  ev_uint16_t port = 0;
  if (conn) evhttp_connection_get_peer(conn, &peer, &port);
  auto ip = peer ? access::IpAddress::parse(peer) : std::nullopt;
  auto trusted = [&](const access::IpAddress& a) {
    for (const auto& c : rules_.trusted_proxies)
      if (c.contains(a)) return true;
    return false;
  };
  if (!ip || rules_.trusted_proxies.empty() || !trusted(*ip)) return ip;
  // From a trusted proxy: walk X-Forwarded-For from the right, skipping our own
  // proxies; the first address not trusted is the client.
  std::vector<std::string> hops;
  if (const char* xff = http::request_header(req, "X-Forwarded-For")) {
    std::stringstream ss(xff);
    std::string item;
    while (std::getline(ss, item, ',')) {
      auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
      if (b != std::string::npos) hops.push_back(item.substr(b, e - b + 1));
    }
  } else if (const char* fwd = http::request_header(req, "Forwarded")) {
    // Forwarded: for=192.0.2.60;proto=http, for="[2001:db8::1]:4711"
    std::string f = fwd;
    size_t pos = 0;
    while ((pos = f.find("for=", pos)) != std::string::npos) {
      pos += 4;
      size_t end = f.find_first_of(";,", pos);
      std::string v = f.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
      if (!v.empty() && v.front() == '"') v = v.substr(1, v.size() >= 2 ? v.size() - 2 : 0);
      if (!v.empty() && v.front() == '[') v = v.substr(1, v.find(']') - 1);
      else if (auto colon = v.find(':'); colon != std::string::npos && v.find(':', colon + 1) == std::string::npos)
        v = v.substr(0, colon);
      hops.push_back(v);
    }
  }
  for (auto it = hops.rbegin(); it != hops.rend(); ++it) {
    auto hop = access::IpAddress::parse(*it);
    if (!hop) break;  // garbage: believe nothing further left
    if (!trusted(*hop)) return hop;
  }
  return ip;
}

bool Manager::client_allowed(evhttp_request* req, OpenError& error) const {
  auto ip = client_ip(req);
  if (!ip) {
    error = {403, "client_not_allowed", "client address unknown"};
    return false;
  }
  auto d = rules_.allowed->check_address(*ip);
  if (!d.allowed) {
    error = {403, "client_not_allowed", "client " + ip->to_string() + " is not allowed: " + d.reason};
    return false;
  }
  const char* origin = http::request_header(req, "Origin");
  const char* host = http::request_header(req, "Host");
  auto od = rules_.allowed->check_origin(origin ? std::optional<std::string_view>(origin) : std::nullopt,
                                   host ? host : "", front().is_tls(req));
  if (!od.allowed) {
    error = {403, "origin_not_allowed", std::string("origin ") + (origin ? origin : "") + " is not allowed: " + od.reason};
    return false;
  }
  return true;
}

void Manager::add_cors(evhttp_request* req) const {
  const char* origin = http::request_header(req, "Origin");
  if (!origin) return;
  const char* host = http::request_header(req, "Host");
  auto od = rules_.allowed->check_origin(std::string_view(origin), host ? host : "", front().is_tls(req));
  if (!od.allowed) return;
  evkeyvalq* out = evhttp_request_get_output_headers(req);
  evhttp_add_header(out, "Access-Control-Allow-Origin", origin);
  evhttp_add_header(out, "Vary", "Origin");
}

bool Manager::admin_allowed(evhttp_request* req) const {
  auto ip = client_ip(req);
  if (!ip) return false;
  for (const auto& c : rules_.admin_allow)
    if (c.contains(*ip)) return true;
  return false;
}

// ------------------------------------------------------------------ sessions

Session* Manager::open_session(evhttp_request* req, std::string_view requested, bool resumable,
                               OpenError& error) {
  auto ticket = admit(req, requested, resumable, error);
  return ticket ? start(std::move(*ticket)) : nullptr;
}

std::optional<SessionTicket> Manager::admit(evhttp_request* req, std::string_view requested, bool resumable,
                                            OpenError& error) {
  if (shutting_down_) {
    error = {503, "shutting_down", "netwine is shutting down"};
    return std::nullopt;
  }
  if (!client_allowed(req, error)) {
    ++sessions_refused_;
    return std::nullopt;
  }
  if (requested.empty()) {
    error = {400, "bad_target", "no target given: add ?target=HOST:PORT or a target name"};
    return std::nullopt;
  }
  auto resolved = rules_.targets->resolve_request(requested);
  if (auto* msg = std::get_if<std::string>(&resolved)) {
    error = {400, "bad_target", *msg};
    return std::nullopt;
  }
  auto treq = std::get<access::TargetRequest>(resolved);
  if (rules_.targets->empty() && !config().open_proxy) {
    ++sessions_refused_;
    error = {403, "target_not_allowed",
             "no target rules are configured, so every target is refused (see target-hosts, --target)"};
    return std::nullopt;
  }
  std::string client = client_address(req);
  switch (counts_->admit(client, config().max_sessions, config().max_sessions_per_client)) {
    case SessionCounts::Admit::Ok:
      break;
    case SessionCounts::Admit::TooMany:
      ++sessions_refused_;
      log_limit_refusal("session refused for " + client + ": max-sessions (" +
                        std::to_string(config().max_sessions) + ") reached");
      error = {503, "too_many_sessions", "the server has reached its session limit; try again later"};
      return std::nullopt;
    case SessionCounts::Admit::TooManyForClient:
      ++sessions_refused_;
      log_limit_refusal("session refused for " + client + ": max-sessions-per-client reached");
      error = {429, "too_many_sessions_for_client", "this client address has too many sessions open"};
      return std::nullopt;
  }
  ++sessions_opened_;
  SessionTicket t;
  t.key = make_key(static_cast<size_t>(thread_));
  t.client = std::move(client);
  const char* origin = http::request_header(req, "Origin");
  t.origin = origin ? origin : "";
  t.label = treq.named ? treq.name : std::string(requested);
  t.resumable = resumable;
  t.rules = rules_.targets;
  t.open_proxy = rules_.targets->empty() && config().open_proxy;
  if (treq.scheme == access::Scheme::Tls) t.target_tls = rules_.target_tls;
  t.target = std::move(treq);
  return t;
}

Session* Manager::start(SessionTicket ticket) {
  // Admitted on the main thread: a session living elsewhere is known there by key.
  auto session = std::make_unique<Session>(*this, ticket.key, ticket.client, ticket.origin, ticket.label,
                                           ticket.resumable);
  Session* s = session.get();
  sessions_[ticket.key] = std::move(session);
  connect_target(s, ticket);
  return s;
}

void Manager::connect_target(Session* s, const SessionTicket& ticket) {
  const access::TargetRequest& t = ticket.target;
  auto rules = ticket.rules;  // the rules in force when the session was admitted
  bool open = ticket.open_proxy;
  std::string host = t.host;
  bool named = t.named;
  access::Scheme scheme = t.scheme;
  auto vet = [rules, open, host, named, scheme](const sockaddr* sa) -> std::optional<std::string> {
    if (open) return std::nullopt;
    auto ip = access::IpAddress::from_sockaddr(sa);
    if (!ip) return std::string("unsupported address family");
    uint16_t port = ntohs(sa->sa_family == AF_INET ? reinterpret_cast<const sockaddr_in*>(sa)->sin_port
                                                   : reinterpret_cast<const sockaddr_in6*>(sa)->sin6_port);
    auto d = rules->check_connect(host, *ip, port, named, scheme);
    if (d.allowed) return std::nullopt;
    return "target " + host + " (" + ip->to_string() + ") port " + std::to_string(port) +
           " is not allowed: " + d.reason;
  };
  std::string key = s->key();
  connecting_[s] = target::Connector::start(
      base(), dns_, t.host, t.port, vet, config().connect_timeout,
      [this, key](target::ConnectResult r) {
        Session* s = find(key);
        if (!s) return;
        auto node = connecting_.extract(s);  // freed when this lambda's caller returns
        if (r.error == target::ConnectError::None) {
          s->on_connected(std::move(r.bev), r.address);
          return;
        }
        if (r.error == target::ConnectError::NotAllowed) {
          ++sessions_refused_;
          log::warn("session ", log::redact_key(key), " from ", s->client(), ": ", r.message);
        }
        s->set_connect_failure({target::http_status(r.error), target::error_code(r.error), r.message});
        int code = r.error == target::ConnectError::NotAllowed ? close_code::kPolicy : close_code::kTargetError;
        s->on_connect_failed(code, r.message);
        // The Connector must outlive its own callback: hand it to the reaper.
        dead_connectors_.push_back(std::move(node.mapped()));
        timeval now{0, 0};
        evtimer_add(reaper_.get(), &now);
      },
      // tls://: verify the target's certificate against the name the client asked for.
      t.scheme == access::Scheme::Tls ? ticket.target_tls : nullptr);
}

Session* Manager::find(std::string_view key) {
  auto it = sessions_.find(std::string(key));
  if (it == sessions_.end() || it->second->state() == Session::State::Ended) return nullptr;
  return it->second.get();
}

void Manager::retire(Session* s) {
  auto it = sessions_.find(s->key());
  if (it == sessions_.end()) return;
  bytes_up_total_ += s->bytes_up();
  bytes_down_total_ += s->bytes_down();
  counts_->release(s->client());
  if (auto c = connecting_.find(s); c != connecting_.end()) {
    dead_connectors_.push_back(std::move(c->second));
    connecting_.erase(c);
  }
  dead_sessions_.push_back(std::move(it->second));
  sessions_.erase(it);
  timeval now{0, 0};
  evtimer_add(reaper_.get(), &now);
}

void Manager::dispose(BuffereventPtr bev) {
  bufferevent_setcb(bev.get(), nullptr, nullptr, nullptr, nullptr);
  bufferevent_disable(bev.get(), EV_READ | EV_WRITE);
  dead_bevs_.push_back(std::move(bev));
  timeval now{0, 0};
  evtimer_add(reaper_.get(), &now);
}

void Manager::dispose(std::unique_ptr<Transport> t) {
  dead_transports_.push_back(std::move(t));
  timeval now{0, 0};
  evtimer_add(reaper_.get(), &now);
}

void Manager::on_reap(evutil_socket_t, short, void* self) { static_cast<Manager*>(self)->reap(); }

void Manager::reap() {
  // Freeing may retire or dispose more (a session detaching its transport):
  // loop until nothing is left.
  while (!dead_sessions_.empty() || !dead_bevs_.empty() || !dead_transports_.empty() ||
         !dead_connectors_.empty()) {
    auto sessions = std::move(dead_sessions_);
    auto bevs = std::move(dead_bevs_);
    auto transports = std::move(dead_transports_);
    auto connectors = std::move(dead_connectors_);
    dead_sessions_.clear();
    dead_bevs_.clear();
    dead_transports_.clear();
    dead_connectors_.clear();
  }
  check_drained();
}

void Manager::shutdown() {
  shutting_down_ = true;
  std::vector<Session*> all;
  for (auto& [k, s] : sessions_) all.push_back(s.get());
  for (Session* s : all) {
    s->end(close_code::kGoingAway, "server shutting down");
    // A session with nobody attached cannot deliver its close: let it go now.
    if (std::string_view(s->transport_name()) == "none" && s->state() != Session::State::Ended)
      s->retire_now();
  }
  check_drained();
}

void Manager::on_drained(std::function<void()> fn) {
  drained_ = std::move(fn);
  check_drained();
}

void Manager::check_drained() {
  // Sessions are gone once their close is queued; a WebSocket may still be writing
  // its last data and close frame: wait for it too (the drain timeout caps this).
  if (shutting_down_ && sessions_.empty() && ws::delivering_connections() == 0 && drained_) {
    auto fn = std::move(drained_);
    drained_ = nullptr;
    fn();
  }
}

// ------------------------------------------------------------ status, metrics

Stats Manager::stats(bool with_sessions) const {
  Stats st;
  st.open = sessions_.size();
  st.opened = sessions_opened_;
  st.refused = sessions_refused_;
  st.bytes_up = bytes_up_total_;
  st.bytes_down = bytes_down_total_;
  for (const auto& [k, s] : sessions_) {
    st.bytes_up += s->bytes_up();
    st.bytes_down += s->bytes_down();
    if (!with_sessions) continue;
    nlohmann::json e;
    e["id"] = log::redact_key(k);
    e["client"] = s->client();
    e["target"] = s->target();
    e["transport"] = s->transport_name();
    e["transports"] = s->transports_used();
    e["age"] = s->age_seconds();
    e["bytes_up"] = s->bytes_up();
    e["bytes_down"] = s->bytes_down();
    static const char* const kStates[] = {"connecting", "open", "ending", "ended"};
    e["state"] = kStates[static_cast<int>(s->state())];
    e["thread"] = thread_;
    e["bulk"] = s->lent();  // relayed by a bulk thread of its own right now
    st.sessions.push_back(std::move(e));
  }
  return st;
}

void Manager::all_stats(evhttp_request* req, bool with_sessions, std::function<void(Stats)> done) {
  if (!workers_) {
    done(stats(with_sessions));
    return;
  }
  // The request waits for the workers' answers; if its client leaves first, it
  // is freed and nothing is sent.
  evhttp_connection* conn = evhttp_request_get_connection(req);
  auto gone = std::make_shared<bool>(false);
  if (conn) {
    front().watch_close(conn, [req, gone] {
      *gone = true;
      http::log_request_done(req, 499, 0);
      http::free_abandoned(req);
    });
  }
  workers_->gather(with_sessions, [this, conn, gone, with_sessions, done = std::move(done)](std::vector<Stats> ws) {
    if (*gone) return;
    if (conn) front().unwatch_close(conn);
    Stats all = stats(with_sessions);  // this thread's, as of now
    for (size_t i = 0; i < ws.size(); ++i) {
      Stats& w = ws[i];
      if (!w.answered) all.unanswered.push_back(static_cast<int>(i) + 1);
      all.open += w.open;
      all.opened += w.opened;
      all.refused += w.refused;
      all.bytes_up += w.bytes_up;
      all.bytes_down += w.bytes_down;
      for (auto& e : w.sessions) all.sessions.push_back(std::move(e));
    }
    done(std::move(all));
  });
}

void Manager::busy_elsewhere(evhttp_request* req) {
  // A TLS connection whose filter still holds output cannot move yet.
  evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
  http::send_json_error(req, 503, "try_again", "this connection cannot reach the thread that serves this right now");
}

void Manager::handle_status(evhttp_request* req) {
  if (thread_ != 0) {  // gathered on the main loop
    if (!front().move_request(req, 0)) busy_elsewhere(req);
    return;
  }
  if (!admin_allowed(req)) {
    http::send_json_error(req, 403, "forbidden", "status is only shown to admin-allow addresses");
    return;
  }
  all_stats(req, true, [req](Stats st) { send_status(req, std::move(st)); });
}

void Manager::send_status(evhttp_request* req, Stats st) {
  nlohmann::json j;
  j["version"] = NETWINE_VERSION;
  j["allocator"] = allocator_name();
  j["sessions_open"] = st.open;
  j["sessions_opened_total"] = st.opened;
  j["sessions_refused_total"] = st.refused;
  j["bytes_up_total"] = st.bytes_up;
  j["bytes_down_total"] = st.bytes_down;
  j["sessions"] = std::move(st.sessions);
  // Worker threads that did not answer within a second: their sessions and
  // numbers are missing above (the server log says so too).
  if (!st.unanswered.empty()) j["threads_unanswered"] = st.unanswered;
  evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
  http::send_text(req, 200, j.dump(2) + "\n", "application/json");
}

void Manager::handle_metrics(evhttp_request* req) {
  if (thread_ != 0) {  // gathered on the main loop
    if (!front().move_request(req, 0)) busy_elsewhere(req);
    return;
  }
  if (!admin_allowed(req)) {
    http::send_text(req, 403, "403 forbidden: metrics are only shown to admin-allow addresses\n");
    return;
  }
  all_stats(req, false, [req](Stats st) { send_metrics(req, st); });
}

void Manager::send_metrics(evhttp_request* req, const Stats& st) {
  std::ostringstream o;
  o << "# HELP netwine_sessions_open Sessions open now.\n# TYPE netwine_sessions_open gauge\n"
    << "netwine_sessions_open " << st.open << "\n"
    << "# HELP netwine_sessions_opened_total Sessions opened.\n# TYPE netwine_sessions_opened_total counter\n"
    << "netwine_sessions_opened_total " << st.opened << "\n"
    << "# HELP netwine_sessions_refused_total Sessions refused by rules or limits.\n"
    << "# TYPE netwine_sessions_refused_total counter\n"
    << "netwine_sessions_refused_total " << st.refused << "\n"
    << "# HELP netwine_bytes_total Bytes relayed.\n# TYPE netwine_bytes_total counter\n"
    << "netwine_bytes_total{direction=\"up\"} " << st.bytes_up << "\n"
    << "netwine_bytes_total{direction=\"down\"} " << st.bytes_down << "\n"
    << "# HELP netwine_bulk_relays Busy WebSockets (binary or netwine.v1) relayed by a thread of their own now.\n"
    << "# TYPE netwine_bulk_relays gauge\n"
    << "netwine_bulk_relays " << ws::BulkRelay::active() << "\n"
    << "# HELP netwine_bulk_loans_total Times a busy WebSocket (binary or netwine.v1) was lent to a thread of its own.\n"
    << "# TYPE netwine_bulk_loans_total counter\n"
    << "netwine_bulk_loans_total " << ws::BulkRelay::loans() << "\n"
    << "# HELP netwine_bulk_spliced_bytes_total Target bytes a bulk thread moved to clients through a pipe (splice), never copied.\n"
    << "# TYPE netwine_bulk_spliced_bytes_total counter\n"
    << "netwine_bulk_spliced_bytes_total " << ws::BulkRelay::spliced() << "\n";
  http::send_text(req, 200, o.str(), "text/plain; version=0.0.4");
}

}  // namespace netwine::tunnel
