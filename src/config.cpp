#include "config.hpp"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <algorithm>
#include <functional>
#include <set>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "allocator.hpp"

namespace netwine {
namespace {

enum class Kind {
  String,    // any text
  Bool,      // flag without value, or true/false
  Size,      // bytes, K/M/G suffix
  Duration,  // seconds, ms/s/m/h suffix
  Int,       // plain integer
  List,      // repeatable flag; JSON array or comma-separated string
};

// Applies one textual value; returns an error text (without the option name) or "".
using Apply = std::function<std::string(Config&, const std::string&)>;

struct Option {
  const char* name;
  Kind kind;
  const char* default_value;  // "" for none; lists: comma-separated
  const char* help;
  Apply apply;
  // Kind::List only: the field a list from a file or the command line replaces
  // (set by list_option(), so no list can be declared without it).
  std::vector<std::string> Config::*list_field = nullptr;
};

const char* metavar(Kind k) {
  switch (k) {
    case Kind::String: return "TEXT";
    case Kind::Bool: return "";
    case Kind::Size: return "BYTES";
    case Kind::Duration: return "SECONDS";
    case Kind::Int: return "N";
    case Kind::List: return "VALUE";
  }
  return "";
}

Apply str(std::string Config::*field) {
  return [field](Config& c, const std::string& v) { c.*field = v; return std::string(); };
}

Apply boolean(bool Config::*field) {
  return [field](Config& c, const std::string& v) -> std::string {
    if (v == "true" || v == "1" || v == "yes" || v == "on") { c.*field = true; return {}; }
    if (v == "false" || v == "0" || v == "no" || v == "off") { c.*field = false; return {}; }
    return "expected true or false, got '" + v + "'";
  };
}

Apply size(uint64_t Config::*field, uint64_t min, uint64_t max) {
  return [=](Config& c, const std::string& v) -> std::string {
    auto n = parse_size(v);
    if (!n) return "expected a size in bytes (e.g. 65536, 64K, 2M), got '" + v + "'";
    if (*n < min || *n > max)
      return "value " + v + " out of range " + std::to_string(min) + ".." + std::to_string(max);
    c.*field = *n;
    return {};
  };
}

Apply duration(double Config::*field, double min, double max) {
  return [=](Config& c, const std::string& v) -> std::string {
    auto d = parse_duration(v);
    if (!d) return "expected a duration (e.g. 25, 25s, 1500ms, 2m), got '" + v + "'";
    if (*d < min || *d > max) {
      std::ostringstream o;
      o << "value " << v << " out of range " << min << "s.." << max << "s";
      return o.str();
    }
    c.*field = *d;
    return {};
  };
}

Apply integer(int Config::*field, long min, long max) {
  return [=](Config& c, const std::string& v) -> std::string {
    char* end = nullptr;
    errno = 0;
    long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno != 0) return "expected an integer, got '" + v + "'";
    if (n < min || n > max)
      return "value " + v + " out of range " + std::to_string(min) + ".." + std::to_string(max);
    c.*field = static_cast<int>(n);
    return {};
  };
}

// A repeatable option: each value is appended to `field`.
Option list_option(const char* name, const char* default_value, const char* help,
                   std::vector<std::string> Config::*field) {
  Apply append = [field](Config& c, const std::string& v) -> std::string {
    if (!v.empty()) (c.*field).push_back(v);
    return {};
  };
  return {name, Kind::List, default_value, help, std::move(append), field};
}

constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB, kGiB = 1024 * kMiB;
constexpr double kDay = 86400;

// The one option table. Order is the --help order.
const std::vector<Option>& options() {
  static const std::vector<Option> table = {
      {"config", Kind::String, "", "JSON file with any of these options (keys as spelled here)",
       str(&Config::config_file)},
      list_option("listen", "127.0.0.1:8080",
                  "address to listen on, HOST:PORT or [V6]:PORT; repeat for more; port 0 picks a free port",
                  &Config::listen),
      {"www", Kind::String, "@/www", "directory of static files served at /", str(&Config::www_dir)},
      {"js-client", Kind::String, "@/js-client", "directory holding netwine.js, served as /netwine.js",
       str(&Config::js_client_dir)},
      {"prefix", Kind::String, "/netwine/", "URL prefix of the tunnel endpoints",
       [](Config& c, const std::string& v) -> std::string {
         if (v.size() < 2 || v.front() != '/' || v.back() != '/')
           return "must start and end with '/', e.g. /netwine/";
         c.prefix = v;
         return {};
       }},
      {"backlog", Kind::Int, "4096", "listen(2) backlog", integer(&Config::backlog, 1, 65535)},
      {"port-file", Kind::String, "",
       "write the bound addresses (one HOST:PORT a line) to this file once listening",
       str(&Config::port_file)},
      {"access-log", Kind::String, "-", "access log: a file, '-' for stderr, '' for none",
       str(&Config::access_log)},
      {"log-format", Kind::String, "text", "access log format: text or json",
       [](Config& c, const std::string& v) -> std::string {
         if (v == "text") c.log_format = LogFormat::Text;
         else if (v == "json") c.log_format = LogFormat::Json;
         else return "expected text or json, got '" + v + "'";
         return {};
       }},
      {"log-level", Kind::String, "info", "server log level: debug, info, warn or error",
       [](Config& c, const std::string& v) -> std::string {
         if (v == "debug") c.log_level = LogLevel::Debug;
         else if (v == "info") c.log_level = LogLevel::Info;
         else if (v == "warn") c.log_level = LogLevel::Warn;
         else if (v == "error") c.log_level = LogLevel::Error;
         else return "expected debug, info, warn or error, got '" + v + "'";
         return {};
       }},
      {"demo", Kind::Bool, "false",
       "also run the built-in demo line service on loopback (an allowed target, named 'demo')",
       boolean(&Config::demo)},
      {"demo-port", Kind::Int, "0", "port of the demo service (0 = any free port)",
       integer(&Config::demo_port, 0, 65535)},
      list_option("target", "",
                  "allow this HOST:PORT target (repeatable), beside target-hosts",
                  &Config::targets),
      {"allowed-hosts", Kind::String, "", "file of rules for who may open tunnels (see hosts/)",
       str(&Config::allowed_hosts_file)},
      {"target-hosts", Kind::String, "", "file of rules for where tunnels may go (see hosts/)",
       str(&Config::target_hosts_file)},
      {"token-source", Kind::String, "",
       "websockify token file or directory ('token: host:port' lines) for ?token=",
       str(&Config::token_source)},
      {"default-target", Kind::String, "",
       "target (HOST:PORT or name) of WebSocket upgrades that name none, as websockify's TARGET",
       str(&Config::default_target)},
      {"open-proxy", Kind::Bool, "false",
       "DANGEROUS: with no target rules, allow every target instead of none",
       boolean(&Config::open_proxy)},
      list_option("allow-origin", "",
                  "browser origin allowed besides same-origin, e.g. https://app.example.com (repeatable)",
                  &Config::allow_origins),
      list_option("trusted-proxy", "",
                  "address or CIDR of a reverse proxy whose X-Forwarded-For/Forwarded is believed",
                  &Config::trusted_proxies),
      list_option("admin-allow", "127.0.0.0/8,::1",
                  "address or CIDR allowed to read /netwine/status and /metrics (repeatable)",
                  &Config::admin_allow),
      {"max-header-size", Kind::Size, "16K", "largest request line plus headers (431 past it)",
       size(&Config::max_header_size, 1 * kKiB, 1 * kMiB)},
      {"max-body-size", Kind::Size, "1M", "largest request body (413 past it)",
       size(&Config::max_body_size, 1 * kKiB, 1 * kGiB)},
      list_option("allowed-methods", "GET,HEAD,POST,OPTIONS",
                  "HTTP methods served at all (of GET, HEAD, POST, OPTIONS, PUT, DELETE, PATCH); others get 405",
                  &Config::allowed_methods),
      {"http-idle-timeout", Kind::Duration, "60", "close an idle keep-alive HTTP connection after it",
       duration(&Config::http_idle_timeout, 0.1, kDay)},
      {"header-timeout", Kind::Duration, "10",
       "the whole request head must arrive within it (slowloris guard)",
       duration(&Config::header_timeout, 0.1, kDay)},
      {"max-connections", Kind::Size, "20000", "open client connections at most; accepting pauses past it",
       size(&Config::max_connections, 1, 10000000)},
      {"threads", Kind::Int, "0",
       "event-loop threads in all: 1 runs everything on one; 0 means one per CPU it may run on. New "
       "connections take turns between them; a session's requests move to the loop it lives on",
       integer(&Config::threads, 0, 64)},
      {"bulk-threads", Kind::Int, "64",
       "busy WebSockets (binary or netwine.v1) relayed at once by a thread of their own, the way socat relays (fewer CPU "
       "seconds per byte than an event loop); each goes back to its event loop after 0.25 s without bytes "
       "or a second under half of --bulk-after. 0 turns this off",
       integer(&Config::bulk_threads, 0, 4096)},
      {"bulk-after", Kind::Size, "2M",
       "a WebSocket that relays this many bytes (both ways together) within 0.1 s is busy and is lent to a "
       "bulk thread, until a second moves less than half of it; lower it for slow machines or builds, raise "
       "it to keep more on the event loops",
       size(&Config::bulk_after, 64 * kKiB, 1 * kGiB)},
      {"connect-timeout", Kind::Duration, "10", "give up connecting to a target after it (504)",
       duration(&Config::connect_timeout, 0.1, kDay)},
      {"session-idle-timeout", Kind::Duration, "60",
       "end a session that has had no transport attached and no send for this long",
       duration(&Config::session_idle_timeout, 0.1, kDay)},
      {"poll-wait", Kind::Duration, "25", "a long poll with no data answers empty after it",
       duration(&Config::poll_wait, 0.01, 3600)},
      {"heartbeat-interval", Kind::Duration, "15", "heartbeat line on idle streams this often",
       duration(&Config::heartbeat_interval, 0.05, 3600)},
      {"ws-ping-interval", Kind::Duration, "20", "WebSocket ping to idle peers this often",
       duration(&Config::ws_ping_interval, 0.05, 3600)},
      {"ws-pong-timeout", Kind::Duration, "20", "close a WebSocket whose peer has not answered a ping by then",
       duration(&Config::ws_pong_timeout, 0.05, 3600)},
      {"ws-max-message", Kind::Size, "16M", "largest WebSocket message accepted (1009 past it)",
       size(&Config::ws_max_message, 126, 1 * kGiB)},
      {"session-buffer", Kind::Size, "1M",
       "bytes buffered per session and direction before back-pressure stops reading",
       size(&Config::session_buffer, 16 * kKiB, 1 * kGiB)},
      {"stream-recycle-bytes", Kind::Size, "8M",
       "end a streaming response after this many body bytes; the client re-attaches",
       size(&Config::stream_recycle_bytes, 64 * kKiB, 64 * kGiB)},
      {"stream-padding", Kind::Size, "2K",
       "padding prelude sent on a stream that asks for it (?pad=1), for buffering proxies",
       size(&Config::stream_padding, 0, 64 * kKiB)},
      {"max-sessions", Kind::Size, "10000", "sessions in all (503 past it)",
       size(&Config::max_sessions, 1, 10000000)},
      {"max-sessions-per-client", Kind::Size, "256", "sessions per client address (429 past it)",
       size(&Config::max_sessions_per_client, 1, 10000000)},
      {"drain-timeout", Kind::Duration, "5", "on SIGTERM, wait at most this long for sessions to flush",
       duration(&Config::drain_timeout, 0, 3600)},
      {"tls-cert", Kind::String, "", "PEM certificate chain; with tls-key enables https/wss on every listener (alias: cert)",
       str(&Config::tls_cert)},
      {"tls-key", Kind::String, "", "PEM private key (alias: key)", str(&Config::tls_key)},
      {"tls-only", Kind::Bool, "false", "refuse plain HTTP when TLS is configured",
       boolean(&Config::tls_only)},
      {"target-ca", Kind::String, "",
       "PEM file of CA certificates trusted for tls:// targets, besides the system store",
       str(&Config::target_ca)},
  };
  return table;
}

// Other names for an option, flags and JSON keys alike: the short TLS names the
// project's issues and other bridges use.
constexpr std::pair<const char*, const char*> kAliases[] = {{"cert", "tls-cert"}, {"key", "tls-key"}};

const Option* find_option(const std::string& name) {
  std::string canonical = name;
  for (const auto& [alias, target] : kAliases)
    if (name == alias) canonical = target;
  for (const auto& o : options())
    if (canonical == o.name) return &o;
  return nullptr;
}

std::string expand_default(const std::string& v, const std::string& repo_root) {
  if (v.rfind("@/", 0) == 0) return repo_root + v.substr(1);
  return v;
}

// Applies one value to `c`. Lists accept comma-separated text too.
std::string apply_value(Config& c, const Option& o, const std::string& v) {
  if (o.kind == Kind::List) {
    std::stringstream ss(v);
    std::string item;
    while (std::getline(ss, item, ',')) {
      auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
      if (b == std::string::npos) continue;
      if (auto err = o.apply(c, item.substr(b, e - b + 1)); !err.empty()) return err;
    }
    return {};
  }
  return o.apply(c, v);
}

Config defaults(const std::string& repo_root) {
  Config c;
  for (const auto& o : options()) {
    std::string err = apply_value(c, o, expand_default(o.default_value, repo_root));
    if (!err.empty()) throw std::logic_error(std::string("bad default for ") + o.name + ": " + err);
  }
  return c;
}

void clear_list(Config& c, const Option& o) {
  // A list given in the file or on the command line replaces the default list.
  if (o.list_field) (c.*o.list_field).clear();
}

ParseOutcome fail(std::string message) {
  ParseOutcome out;
  out.exit_code = 2;
  out.message = std::move(message);
  return out;
}

// Applies a parsed JSON document over `c`. Returns "" or an error naming source and key.
std::string apply_json(Config& c, const std::string& text, const std::string& source) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // parse_error, and out_of_range for numbers like 6e1500
    return source + ": not valid JSON: " + e.what();
  }
  if (!doc.is_object()) return source + ": the top level must be a JSON object";
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const std::string& key = it.key();
    const Option* o = find_option(key);
    if (!o || key == "config")
      return source + ": unknown key \"" + key + "\" (see netwine --help for the valid keys)";
    const auto& v = it.value();
    auto scalar = [&](const nlohmann::json& j, std::string& out) -> bool {
      if (j.is_string()) out = j.get<std::string>();
      else if (j.is_boolean()) out = j.get<bool>() ? "true" : "false";
      else if (j.is_number_integer() || j.is_number_unsigned()) out = j.dump();
      else if (j.is_number_float()) {
        std::ostringstream os;
        os << j.get<double>();
        out = os.str();
      } else return false;
      return true;
    };
    std::string err;
    if (o->kind == Kind::List) {
      clear_list(c, *o);
      if (v.is_array()) {
        for (const auto& item : v) {
          std::string s;
          if (!item.is_string() || !scalar(item, s)) { err = "expected an array of strings"; break; }
          if (err = apply_value(c, *o, s); !err.empty()) break;
        }
      } else if (std::string s; v.is_string() && scalar(v, s)) {
        err = apply_value(c, *o, s);
      } else {
        err = "expected a string or an array of strings";
      }
    } else if (o->kind == Kind::Bool && !v.is_boolean()) {
      err = "expected true or false";
    } else if (o->kind == Kind::String && !v.is_string()) {
      err = "expected a string";
    } else {
      std::string s;
      if (!scalar(v, s)) err = "expected a number or a string";
      else err = apply_value(c, *o, s);
    }
    if (!err.empty()) return source + ": key \"" + key + "\": " + err;
  }
  return {};
}

std::string read_file(const std::string& path, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot read config file: " + std::strerror(errno);
    return {};
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string validate(const Config& c) {
  if (c.listen.empty()) return "at least one --listen address is needed";
  if (c.tls_cert.empty() != c.tls_key.empty()) return "tls-cert and tls-key must be given together";
  if (c.tls_only && c.tls_cert.empty()) return "tls-only needs tls-cert and tls-key";
  static const std::set<std::string> known = {"GET", "HEAD", "POST", "OPTIONS", "PUT", "DELETE", "PATCH"};
  for (const auto& m : c.allowed_methods)
    if (!known.count(m))
      return "allowed-methods: unknown method '" + m + "' (use GET, HEAD, POST, OPTIONS, PUT, DELETE, PATCH)";
  return {};
}

}  // namespace

std::optional<uint64_t> parse_size(const std::string& text) {
  if (text.empty()) return std::nullopt;
  size_t i = 0;
  uint64_t n = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    uint64_t next = n * 10 + static_cast<uint64_t>(text[i] - '0');
    if (next / 10 != n) return std::nullopt;  // overflow
    n = next;
    ++i;
  }
  if (i == 0) return std::nullopt;
  std::string suffix = text.substr(i);
  uint64_t mult = 1;
  if (suffix.empty() || suffix == "B") mult = 1;
  else if (suffix == "K" || suffix == "k" || suffix == "KiB") mult = kKiB;
  else if (suffix == "M" || suffix == "m" || suffix == "MiB") mult = kMiB;
  else if (suffix == "G" || suffix == "g" || suffix == "GiB") mult = kGiB;
  else return std::nullopt;
  if (n > UINT64_MAX / mult) return std::nullopt;
  return n * mult;
}

std::optional<double> parse_duration(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || errno != 0 || !std::isfinite(v) || v < 0) return std::nullopt;
  std::string unit(end);
  if (unit.empty() || unit == "s") return v;
  if (unit == "ms") return v / 1000.0;
  if (unit == "m") return v * 60.0;
  if (unit == "h") return v * 3600.0;
  return std::nullopt;
}

std::string help_text() {
  std::ostringstream o;
  o << "Usage: netwine [OPTIONS]\n"
       "Serves a web app, the netwine.js socket shim and tunnels to TCP targets from one port.\n"
       "Every option may also be given as a key of the JSON file named by --config;\n"
       "flags override the file. Sizes take K/M/G suffixes, durations ms/s/m/h.\n\n";
  for (const auto& opt : options()) {
    std::string left = std::string("  --") + opt.name;
    if (opt.kind != Kind::Bool) left += std::string(" ") + metavar(opt.kind);
    o << left;
    if (left.size() < 34) o << std::string(34 - left.size(), ' ');
    else o << "\n" << std::string(34, ' ');
    o << opt.help;
    std::string def = opt.default_value;
    if (def.rfind("@/", 0) == 0) def = "<source>" + def.substr(1);
    if (opt.kind == Kind::Bool) o << " (default: " << def << ")";
    else if (!def.empty()) o << " (default: " << def << ")";
    if (opt.kind == Kind::List) o << " [repeatable]";
    o << "\n";
  }
  o << "  --help                          this text\n"
       "  --version                       print the version\n";
  return o.str();
}

ParseOutcome parse_json_config(const std::string& text, const std::string& source,
                               const std::string& repo_root) {
  Config c = defaults(repo_root);
  if (auto err = apply_json(c, text, source); !err.empty()) return fail(err);
  if (auto err = validate(c); !err.empty()) return fail(source + ": " + err);
  c.config_file = source;
  ParseOutcome out;
  out.config = std::move(c);
  return out;
}

ParseOutcome parse_command_line(int argc, const char* const* argv, const std::string& repo_root) {
  Config c = defaults(repo_root);
  struct Flag { const Option* opt; std::string value; std::string spelled; };
  std::vector<Flag> flags;
  std::string config_path;

  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      ParseOutcome out;
      out.message = help_text();
      return out;
    }
    if (arg == "--version") {
      ParseOutcome out;
      out.message = std::string("netwine ") + NETWINE_VERSION + " (" + allocator_name() + ")\n";
      return out;
    }
    if (arg.rfind("--", 0) != 0) return fail("unexpected argument '" + arg + "' (see --help)");
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const Option* o = find_option(name);
    if (!o) return fail("unknown option --" + name + " (see --help)");
    if (!has_value) {
      if (o->kind == Kind::Bool) {
        value = "true";
      } else {
        if (i + 1 >= argc) return fail("option --" + name + " needs a value");
        value = argv[++i];
      }
    }
    if (name == "config") config_path = value;
    else flags.push_back({o, value, "--" + name});
  }

  if (!config_path.empty()) {
    std::string err;
    std::string text = read_file(config_path, err);
    if (!err.empty()) return fail(err);
    if (err = apply_json(c, text, config_path); !err.empty()) return fail(err);
    c.config_file = config_path;
  }
  std::vector<const Option*> lists_seen;
  for (const auto& f : flags) {
    if (f.opt->kind == Kind::List &&
        std::find(lists_seen.begin(), lists_seen.end(), f.opt) == lists_seen.end()) {
      clear_list(c, *f.opt);
      lists_seen.push_back(f.opt);
    }
    if (auto err = apply_value(c, *f.opt, f.value); !err.empty())
      return fail("option " + f.spelled + ": " + err);
  }
  if (auto err = validate(c); !err.empty()) return fail(err);
  ParseOutcome out;
  out.config = std::move(c);
  return out;
}

}  // namespace netwine
