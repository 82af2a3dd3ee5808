// netwine's configuration: one option table (name, default, help) read from a JSON
// file and then from command-line flags, into one immutable Config.
//
// The same names are used everywhere: the flag `--max-body-size 2M` and the JSON key
// "max-body-size": "2M" (or 2097152) set the same field. Flags override the file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace netwine {

enum class LogFormat { Text, Json };
enum class LogLevel { Debug, Info, Warn, Error };

struct Config {
  // Where to listen and what to serve.
  std::vector<std::string> listen;   // HOST:PORT, [v6]:PORT; port 0 = any free port
  std::string www_dir;               // static files
  std::string js_client_dir;         // served as /netwine.js
  std::string prefix;                // tunnel endpoints live under it, e.g. "/netwine/"
  int backlog = 0;
  std::string port_file;             // written with the bound addresses once listening

  // Logging.
  std::string access_log;            // "" = off, "-" = stderr, else a file
  LogFormat log_format = LogFormat::Text;
  LogLevel log_level = LogLevel::Info;

  // Targets and access control.
  bool demo = false;
  int demo_port = 0;                 // 0 = any free loopback port
  std::vector<std::string> targets;  // extra allowed HOST:PORT targets
  std::string allowed_hosts_file;
  std::string target_hosts_file;
  std::string token_source;          // websockify token file or directory
  std::string default_target;        // WebSocket upgrades naming no target go here
  bool open_proxy = false;           // allow any target when no target rules exist
  std::vector<std::string> allow_origins;
  std::vector<std::string> allowed_methods;  // others get 405 before any routing
  std::vector<std::string> trusted_proxies;
  std::vector<std::string> admin_allow;

  // HTTP hardening.
  uint64_t max_header_size = 0;
  uint64_t max_body_size = 0;
  double http_idle_timeout = 0;      // seconds
  double header_timeout = 0;         // whole request head must arrive within it
  uint64_t max_connections = 0;
  int threads = 0;  // event-loop threads in all; 0 = one per CPU
  int bulk_threads = 0;  // busy binary WebSockets relayed by threads of their own at once; 0 = never
  uint64_t bulk_after = 0;  // bytes either way within 0.1 s that make a WebSocket busy

  // Sessions.
  double connect_timeout = 0;
  double session_idle_timeout = 0;   // session with no transport attached
  double poll_wait = 0;
  double heartbeat_interval = 0;     // streams; WebSocket pings use ws_ping_interval
  double ws_ping_interval = 0;
  double ws_pong_timeout = 0;
  uint64_t ws_max_message = 0;
  uint64_t session_buffer = 0;       // per direction, per session
  uint64_t stream_recycle_bytes = 0;
  uint64_t stream_padding = 0;
  uint64_t max_sessions = 0;
  uint64_t max_sessions_per_client = 0;
  double drain_timeout = 0;

  // TLS.
  std::string tls_cert;
  std::string tls_key;
  bool tls_only = false;
  std::string target_ca;             // extra CA certificates for tls:// targets

  std::string config_file;           // where the values came from, for messages
};

// The outcome of parsing argv: run with a config, or exit now (help, version, error).
struct ParseOutcome {
  std::optional<Config> config;
  int exit_code = 0;                 // when !config: 0 for --help/--version, 2 for errors
  std::string message;               // printed to stdout (help) or stderr (error)
};

// Parses argv (argv[0] skipped), reading --config FILE first so flags override it.
// `repo_root` is where the default www/ and js-client/ directories live.
ParseOutcome parse_command_line(int argc, const char* const* argv, const std::string& repo_root);

// Parses only a JSON config text (for tests); errors name `source` and the key.
ParseOutcome parse_json_config(const std::string& text, const std::string& source,
                               const std::string& repo_root);

// "2M" -> 2097152; "512" -> 512; K/M/G suffixes are binary. nullopt if malformed.
std::optional<uint64_t> parse_size(const std::string& text);
// "25" / "25s" / "1500ms" / "2m" -> seconds. nullopt if malformed or negative.
std::optional<double> parse_duration(const std::string& text);

// The --help text: every option with its default and meaning.
std::string help_text();

}  // namespace netwine
