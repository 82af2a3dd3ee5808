// The tunnel manager: the session table, the routes under the tunnel prefix
// (docs/PROTOCOL.md), access control for opening sessions, status and metrics,
// and the deferred freeing of sessions and transports.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "access/rules.hpp"
#include "config.hpp"
#include "event_handles.hpp"
#include "log.hpp"
#include "tunnel/counts.hpp"
#include "tunnel/session.hpp"

namespace netwine {
class Front;
}

namespace netwine::target {
class Connector;
}

namespace netwine::tls {
class TargetTlsContext;
}

namespace netwine::tunnel {

// A session admitted (Manager::admit()): everything opening it needs, decided once.
struct SessionTicket {
  std::string key, client, origin, label;
  bool resumable = false;
  access::TargetRequest target;
  std::shared_ptr<const access::TargetHosts> rules;  // the rules in force when admitted
  bool open_proxy = false;                           // no rules and --open-proxy
  std::shared_ptr<const tls::TargetTlsContext> target_tls;  // for tls:// targets
};

// What one thread's sessions add up to (status and metrics).
struct Stats {
  uint64_t open = 0, opened = 0, refused = 0, bytes_up = 0, bytes_down = 0;
  nlohmann::json sessions = nlohmann::json::array();  // filled on request
  // A worker's entry in a gathering: false when it did not answer in time (the
  // numbers above are then missing). Summed up: the threads that did not.
  bool answered = true;
  std::vector<int> unanswered;
};

// The access rules and what else admitting a session reads: loaded on the main
// thread, a copy for every loop (shared_ptrs to immutable rule sets).
struct Rules {
  std::shared_ptr<const access::AllowedHosts> allowed;
  std::shared_ptr<const access::TargetHosts> targets;
  std::vector<access::Cidr> trusted_proxies;
  std::vector<access::Cidr> admin_allow;
  std::shared_ptr<const tls::TargetTlsContext> target_tls;  // for tls:// targets
};

class Manager;

// The main thread's view of the worker threads (server.cpp implements it).
class Workers {
 public:
  virtual ~Workers() = default;
  // Runs `fn` on worker `worker`'s thread with its Manager; false if that worker
  // has stopped (`fn` is dropped).
  virtual bool run_on(int worker, std::function<void(Manager&)> fn) = 0;
  // Every worker's stats, each gathered on its own thread. Returns at once:
  // `done` runs later on the main thread, with one entry per worker, once all
  // have answered or the wait bound has passed (a worker that has not answered by
  // then is left empty and logged). The main loop goes on meanwhile: a worker
  // busy with ten thousand sessions' JSON holds up the status answer, not every
  // other request.
  virtual void gather(bool with_sessions, std::function<void(std::vector<Stats>)> done) = 0;
};

class Manager {
 public:
  // The main thread's manager: loads the access rules; returns null and sets
  // `error` if they are broken.
  static std::unique_ptr<Manager> create(const Config& config, event_base* base, evdns_base* dns, Front& front,
                                         int demo_port, std::shared_ptr<const tls::TargetTlsContext> target_tls,
                                         std::shared_ptr<SessionCounts> counts, std::string& error);
  // A worker loop's manager, with a copy of the main thread's rules (rules()).
  // `thread` is its loop's number (the main thread is 0): in status, and in
  // the keys of the sessions it opens.
  static std::unique_ptr<Manager> create_worker(const Config& config, event_base* base, evdns_base* dns, Front& front,
                                                Rules rules, std::shared_ptr<SessionCounts> counts, int thread);
  ~Manager();

  void set_workers(Workers* w) { workers_ = w; }

  // A request under the prefix; `rest` is the path after it ("open", "KEY/poll").
  void handle(evhttp_request* req, std::string_view rest);
  void handle_metrics(evhttp_request* req);
  // A WebSocket upgrade outside the prefix (noVNC's /websockify): websockify
  // compatibility. False if `req` is not such an upgrade.
  bool handle_foreign_upgrade(evhttp_request* req);

  // Loads the rules again (main thread); a broken reload keeps the old ones.
  void reload();
  // The rules in force, for the other loops (set_rules()).
  const Rules& rules() const { return rules_; }
  void set_rules(Rules rules) { rules_ = std::move(rules); }
  void set_target_tls(std::shared_ptr<const tls::TargetTlsContext> t) { rules_.target_tls = std::move(t); }
  // Writes what the log throttle of limit refusals counted and has not reported
  // (Server calls it every second with `only_due`, and at exit).
  void flush_log_summaries(bool only_due);
  // Ends every session with 1001; `on_drained` runs once none is left.
  void shutdown();
  void on_drained(std::function<void()> fn);
  // While shutting down: runs the on_drained() function once no session is left
  // and no WebSocket is still writing its last bytes. Transports call it when
  // they finish delivering.
  void check_drained();

  // --- for sessions and transports ---
  const Config& config() const { return config_; }
  event_base* base() const { return base_; }
  // This loop's HTTP front (its client connections live there).
  Front& front() const { return front_; }
  Session* find(std::string_view key);
  // Frees `s` from a zero-timeout event (it may be inside its own callback).
  void retire(Session* s);
  // Frees a bufferevent outside of its callbacks.
  void dispose(BuffereventPtr bev);
  // Frees a transport outside of its callbacks; the owner gives it up here.
  void dispose(std::unique_ptr<Transport> t);

  // Who the client is: the peer address, or the forwarded one from a trusted proxy.
  std::string client_address(evhttp_request* req) const;
  // The same as an address, for the access checks every tunnel request makes (no
  // text in between); nullopt when the peer's address is not an IP address.
  std::optional<access::IpAddress> client_ip(evhttp_request* req) const;
  // Opens a session to `requested` for `req`'s client; calls `done` with the session,
  // or with an HTTP status, error code and message. Access checks happen here.
  struct OpenError {
    int status;
    std::string code;
    std::string message;
  };
  // Creates the session at once (state Connecting) and connects in the background.
  // Returns the session, or null with `error` set (checks that fail before any
  // connection is tried). `connected` is called when the target is reached or not.
  Session* open_session(evhttp_request* req, std::string_view requested, bool resumable,
                        OpenError& error);
  // This thread's sessions and totals.
  Stats stats(bool with_sessions) const;
  // Checks the client address and Origin for a tunnel request; on refusal fills `error`.
  bool client_allowed(evhttp_request* req, OpenError& error) const;
  // Adds CORS headers when the request's Origin is allowed to read the answer.
  void add_cors(evhttp_request* req) const;

 private:
  Manager(const Config& config, event_base* base, evdns_base* dns, Front& front, int demo_port,
          std::shared_ptr<SessionCounts> counts);
  std::string load_rules();
  static void on_reap(evutil_socket_t, short, void* self);
  void reap();
  // open_session() in two halves. admit(): every check before connecting; the
  // session then counts against the limits. start(): opens the admitted session
  // on this manager's loop and connects.
  std::optional<SessionTicket> admit(evhttp_request* req, std::string_view requested, bool resumable,
                                     OpenError& error);
  Session* start(SessionTicket ticket);
  void connect_target(Session* s, const SessionTicket& t);
  void handle_status(evhttp_request* req);
  static void send_status(evhttp_request* req, Stats st);
  static void send_metrics(evhttp_request* req, const Stats& st);
  bool admin_allowed(evhttp_request* req) const;
  // 503 + Retry-After: the request belongs on another loop and its connection
  // cannot move there now (Front::move_request()).
  static void busy_elsewhere(evhttp_request* req);
  // This thread's stats plus every worker's, to `done` (on this thread; at once
  // without workers). `req` is the request waiting for them: if its client leaves
  // first, `done` is not called and the request is freed.
  void all_stats(evhttp_request* req, bool with_sessions, std::function<void(Stats)> done);
  // One "session refused: limit reached" line, throttled: a client hammering a
  // limit must not flood the log.
  void log_limit_refusal(std::string line);

  const Config& config_;
  event_base* base_;
  evdns_base* dns_;
  Front& front_;
  int demo_port_;
  int thread_ = 0;  // 0 on the main thread, 1.. on workers (status)
  std::shared_ptr<SessionCounts> counts_;  // shared by every thread
  Workers* workers_ = nullptr;             // main thread: the worker threads, if any
  std::unordered_map<std::string, std::unique_ptr<Session>> sessions_;
  std::unordered_map<Session*, std::unique_ptr<target::Connector>> connecting_;
  std::vector<std::unique_ptr<Session>> dead_sessions_;
  std::vector<BuffereventPtr> dead_bevs_;
  std::vector<std::unique_ptr<Transport>> dead_transports_;
  std::vector<std::unique_ptr<target::Connector>> dead_connectors_;
  EventPtr reaper_;
  Rules rules_;
  std::function<void()> drained_;
  log::Throttle limit_log_;
  std::string limit_log_last_;  // the last refusal only counted
  bool shutting_down_ = false;
  // Totals for status and metrics.
  uint64_t sessions_opened_ = 0, sessions_refused_ = 0, bytes_up_total_ = 0, bytes_down_total_ = 0;
  friend class HttpTransports;
};

}  // namespace netwine::tunnel
