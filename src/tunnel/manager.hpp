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

#include "access/rules.hpp"
#include "config.hpp"
#include "event_handles.hpp"
#include "tunnel/session.hpp"

namespace netwine {
class Server;
}

namespace netwine::target {
class Connector;
}

namespace netwine::tunnel {

class Manager {
 public:
  // Loads the access rules; returns null and sets `error` if they are broken.
  static std::unique_ptr<Manager> create(Server& server, int demo_port, std::string& error);
  ~Manager();

  // A request under the prefix; `rest` is the path after it ("open", "KEY/poll").
  void handle(evhttp_request* req, std::string_view rest);
  void handle_metrics(evhttp_request* req);
  // A WebSocket upgrade outside the prefix (noVNC's /websockify): websockify
  // compatibility. False if `req` is not such an upgrade.
  bool handle_foreign_upgrade(evhttp_request* req);

  void reload();
  // Ends every session with 1001; `on_drained` runs once none is left.
  void shutdown();
  void on_drained(std::function<void()> fn);
  // While shutting down: runs the on_drained() function once no session is left
  // and no WebSocket is still writing its last bytes. Transports call it when
  // they finish delivering.
  void check_drained();

  // --- for sessions and transports ---
  const Config& config() const;
  event_base* base() const;
  Server& server() { return server_; }
  Session* find(std::string_view key);
  // Frees `s` from a zero-timeout event (it may be inside its own callback).
  void retire(Session* s);
  // Frees a bufferevent outside of its callbacks.
  void dispose(BuffereventPtr bev);
  // Frees a transport outside of its callbacks; the owner gives it up here.
  void dispose(std::unique_ptr<Transport> t);

  // Who the client is: the peer address, or the forwarded one from a trusted proxy.
  std::string client_address(evhttp_request* req) const;
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
  // Checks the client address and Origin for a tunnel request; on refusal fills `error`.
  bool client_allowed(evhttp_request* req, OpenError& error) const;
  // Adds CORS headers when the request's Origin is allowed to read the answer.
  void add_cors(evhttp_request* req) const;

 private:
  Manager(Server& server, int demo_port);
  std::string load_rules();
  static void on_reap(evutil_socket_t, short, void* self);
  void reap();
  void connect_target(Session* s, const access::TargetRequest& t);
  void handle_status(evhttp_request* req);
  bool admin_allowed(evhttp_request* req) const;
  bool target_rules_empty() const;

  Server& server_;
  int demo_port_;
  std::unordered_map<std::string, std::unique_ptr<Session>> sessions_;
  std::unordered_map<Session*, std::unique_ptr<target::Connector>> connecting_;
  std::unordered_map<std::string, uint64_t> per_client_;
  std::vector<std::unique_ptr<Session>> dead_sessions_;
  std::vector<BuffereventPtr> dead_bevs_;
  std::vector<std::unique_ptr<Transport>> dead_transports_;
  std::vector<std::unique_ptr<target::Connector>> dead_connectors_;
  EventPtr reaper_;
  std::shared_ptr<const access::AllowedHosts> allowed_;
  std::shared_ptr<const access::TargetHosts> targets_;
  std::vector<access::Cidr> trusted_proxies_;
  std::vector<access::Cidr> admin_allow_;
  std::function<void()> drained_;
  bool shutting_down_ = false;
  // Totals for status and metrics.
  uint64_t sessions_opened_ = 0, sessions_refused_ = 0, bytes_up_total_ = 0, bytes_down_total_ = 0;
  friend class HttpTransports;
};

}  // namespace netwine::tunnel
