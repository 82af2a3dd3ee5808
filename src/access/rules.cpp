// Parsing and matching of hosts/allowed-hosts, hosts/target-hosts and
// websockify token files. Everything above the "Not pure" section at the end
// is pure text and address arithmetic; the formats are documented in the
// example files under hosts/ and the semantics in rules.hpp.
#include "access/rules.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <system_error>
#include <utility>

#include "ascii.hpp"

namespace netwine::access {
namespace {

// Requested targets come from clients and are echoed in error messages; this
// keeps a hostile request from flooding the log or forging log lines.
constexpr std::size_t kMaxEchoedChars = 80;
// RFC 1035 2.3.4: 63 octets per label, 255 per name on the wire, which is 253
// characters in dotted text without the trailing dot.
constexpr std::size_t kMaxLabel = 63;
constexpr std::size_t kMaxHostName = 253;

// ---- text helpers ---------------------------------------------------------

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f' || c == '\n';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_digit);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split_words(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) ++i;
    std::size_t start = i;
    while (i < s.size() && !is_space(s[i])) ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
  return out;
}

// '#' starts a comment at the start of a line or after whitespace; elsewhere
// it is part of a word (and then almost certainly a syntax error).
std::string_view strip_comment(std::string_view line) {
  for (std::size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '#' && (i == 0 || is_space(line[i - 1]))) return line.substr(0, i);
  }
  return line;
}

// Names and websockify tokens: [A-Za-z0-9_.-]+.
bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return is_alpha(c) || is_digit(c) || c == '_' || c == '.' || c == '-';
  });
}

// For messages that quote client input: printable ASCII only, bounded.
std::string shown(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, kMaxEchoedChars)) {
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  if (s.size() > kMaxEchoedChars) out += "...";
  return out;
}

std::string in_quotes(std::string_view s) { return "'" + shown(s) + "'"; }

// Lower case, one trailing dot removed: the form host names are compared in.
std::string fold_host(std::string_view s) {
  if (!s.empty() && s.back() == '.') s.remove_suffix(1);
  return ascii_lowered(s);
}

// A syntactically valid DNS host name, folded; nullopt otherwise. Labels are
// letters, digits, '-' and '_' (service names use it), not starting or ending
// with '-'. A name whose last label is all digits is refused: resolvers read
// "10.1" or "2130706433" as IPv4 shorthand, which would slip past the
// address syntax we insist on.
std::optional<std::string> valid_host_name(std::string_view s) {
  if (!s.empty() && s.back() == '.') s.remove_suffix(1);
  if (s.empty() || s.size() > kMaxHostName) return std::nullopt;
  std::string_view last;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = s.find('.', start);
    std::string_view label = s.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (label.empty() || label.size() > kMaxLabel) return std::nullopt;
    if (label.front() == '-' || label.back() == '-') return std::nullopt;
    for (char c : label) {
      if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_') return std::nullopt;
    }
    last = label;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (all_digits(last)) return std::nullopt;
  return ascii_lowered(s);
}

bool looks_numeric(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return is_digit(c) || c == '.'; });
}

// ---- addresses ------------------------------------------------------------

bool is_v4_mapped(const IpAddress& a) {
  if (a.family != IpAddress::Family::V6) return false;
  for (std::size_t i = 0; i < 10; ++i) {
    if (a.bytes[i] != 0) return false;
  }
  return a.bytes[10] == 0xff && a.bytes[11] == 0xff;
}

IpAddress unmap(const IpAddress& a) {
  if (!is_v4_mapped(a)) return a;
  IpAddress v4;
  v4.family = IpAddress::Family::V4;
  std::copy(a.bytes.begin() + 12, a.bytes.end(), v4.bytes.begin());
  return v4;
}

// inet_pton without the IPv4-mapped normalisation: CIDR parsing needs the raw
// form to adjust the prefix.
std::optional<IpAddress> parse_raw(std::string_view text) {
  char buf[INET6_ADDRSTRLEN];
  if (text.empty() || text.size() >= sizeof buf) return std::nullopt;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  IpAddress a;
  if (text.find(':') == std::string_view::npos) {
    in_addr v4{};
    if (inet_pton(AF_INET, buf, &v4) != 1) return std::nullopt;
    a.family = IpAddress::Family::V4;
    std::memcpy(a.bytes.data(), &v4, 4);
  } else {
    in6_addr v6{};
    if (inet_pton(AF_INET6, buf, &v6) != 1) return std::nullopt;
    a.family = IpAddress::Family::V6;
    std::memcpy(a.bytes.data(), &v6, 16);
  }
  return a;
}

IpAddress masked(IpAddress a, int prefix) {
  const std::size_t bytes = a.is_v4() ? 4 : 16;
  for (std::size_t i = 0; i < bytes; ++i) {
    const int bits_kept = std::clamp(prefix - 8 * static_cast<int>(i), 0, 8);
    const auto keep = static_cast<uint8_t>(bits_kept == 0 ? 0 : 0xff << (8 - bits_kept));
    a.bytes[i] = static_cast<uint8_t>(a.bytes[i] & keep);
  }
  return a;
}

// "ADDR" or "ADDR/PREFIX" with a message saying what is wrong.
std::variant<Cidr, std::string> parse_cidr_detail(std::string_view text) {
  const std::size_t slash = text.find('/');
  const std::string_view addr_text = text.substr(0, slash);
  auto raw = parse_raw(addr_text);
  if (!raw) {
    if (looks_numeric(addr_text)) {
      return in_quotes(addr_text) + " is not a valid IPv4 address (four decimal numbers 0-255, "
                                 "no leading zeros)";
    }
    return in_quotes(addr_text) + " is not a valid IP address";
  }
  const int max = raw->max_prefix();
  const std::string family = raw->is_v4() ? "IPv4" : "IPv6";
  int prefix = max;
  if (slash != std::string_view::npos) {
    const std::string_view p = text.substr(slash + 1);
    if (!all_digits(p) || p.size() > 3) {
      return "'/" + shown(p) + "' is not a prefix length (0-" + std::to_string(max) + ")";
    }
    prefix = std::stoi(std::string(p));
    if (prefix > max) {
      return "prefix /" + std::to_string(prefix) + " out of range 0-" + std::to_string(max) +
             " for " + family;
    }
  }
  const IpAddress net = masked(*raw, prefix);
  if (net != *raw) {
    return in_quotes(text) + " has host bits set below the /" + std::to_string(prefix) +
           " prefix: write " + Cidr{net, prefix}.to_string() + " for the network, or " +
           raw->to_string() + " for the single host";
  }
  if (is_v4_mapped(net)) {
    // Host bits are clear, so prefix >= 96: the ffff marker sits in bits 80-95.
    return Cidr{unmap(net), prefix - 96};
  }
  return Cidr{net, prefix};
}

// ---- ports ----------------------------------------------------------------

std::variant<uint16_t, std::string> parse_port(std::string_view s) {
  if (s.empty()) return std::string("missing port number");
  if (!all_digits(s)) return in_quotes(s) + " is not a port number";
  long v = 0;
  for (char c : s) v = std::min(v * 10 + (c - '0'), 1'000'000L);  // saturate: no overflow
  if (v < 1 || v > 65535) return "port " + shown(s) + " out of range 1-65535";
  return static_cast<uint16_t>(v);
}

// ---- origins --------------------------------------------------------------

struct OriginParts {
  std::string scheme;  // lower case
  std::string host;    // folded; "[v6]" in brackets; for wildcards the domain
  uint16_t port = 0;   // explicit or default; 0 when the scheme has none
  bool wildcard = false;
};

uint16_t default_port(std::string_view scheme) {
  if (scheme == "http" || scheme == "ws") return 80;
  if (scheme == "https" || scheme == "wss") return 443;
  return 0;
}

// scheme://host[:port] (RFC 6454 serialisation); `*.` wildcards only in rules.
std::variant<OriginParts, std::string> parse_origin(std::string_view s, bool allow_wildcard) {
  const std::string malformed = "malformed origin " + in_quotes(s) + ": expected scheme://host[:port]";
  const std::size_t sep = s.find("://");
  if (sep == std::string_view::npos || sep == 0) return malformed;
  const std::string_view scheme = s.substr(0, sep);
  if (!is_alpha(scheme[0]) ||
      !std::all_of(scheme.begin(), scheme.end(), [](char c) {
        return is_alpha(c) || is_digit(c) || c == '+' || c == '.' || c == '-';
      })) {
    return malformed;
  }
  OriginParts o;
  o.scheme = ascii_lowered(scheme);
  std::string_view auth = s.substr(sep + 3);
  if (auth.find_first_of("/?#") != std::string_view::npos) {
    return "origin " + in_quotes(s) + " must not have a path: write scheme://host[:port]";
  }
  if (auth.find('@') != std::string_view::npos) {
    return "origin " + in_quotes(s) + " must not contain a user name";
  }
  std::string_view host, port;
  bool has_port = false;
  if (!auth.empty() && auth[0] == '[') {
    const std::size_t close = auth.find(']');
    if (close == std::string_view::npos) return malformed;
    const auto a = parse_raw(auth.substr(1, close - 1));
    if (!a || a->is_v4()) return "origin " + in_quotes(s) + ": brackets must hold an IPv6 address";
    o.host = "[" + a->to_string() + "]";
    const std::string_view rest = auth.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return malformed;
      port = rest.substr(1);
      has_port = true;
    }
  } else {
    const std::size_t colon = auth.find(':');
    host = auth.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = auth.substr(colon + 1);
      has_port = true;
    }
    if (host.empty()) return malformed;
    if (allow_wildcard && host.starts_with("*.")) {
      auto domain = valid_host_name(host.substr(2));
      if (!domain) return "origin " + in_quotes(s) + ": " + in_quotes(host) + " is not a valid wildcard";
      o.host = *domain;
      o.wildcard = true;
    } else if (auto ip = parse_raw(host); ip && ip->is_v4()) {
      o.host = ip->to_string();
    } else if (auto name = valid_host_name(host)) {
      o.host = *name;
    } else {
      return "origin " + in_quotes(s) + ": " + in_quotes(host) + " is not a valid host" +
             (host.find('*') != std::string_view::npos ? " ('*' only as a leading '*.')" : "");
    }
  }
  if (has_port) {
    auto p = parse_port(port);
    if (auto* err = std::get_if<std::string>(&p)) return "origin " + in_quotes(s) + ": " + *err;
    o.port = std::get<uint16_t>(p);
  } else {
    o.port = default_port(o.scheme);
  }
  return o;
}

// ---- line iteration -------------------------------------------------------

// Calls `f(content, line_number)` for every line that is not blank or a
// comment, with trailing comments and surrounding whitespace removed. Stops at
// the first error `f` returns and turns it into a RuleError.
template <class F>
std::optional<RuleError> for_each_line(std::string_view text, std::string_view filename, F&& f) {
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);  // UTF-8 BOM from some editors
  int number = 0;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    const std::string_view raw = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++number;
    const std::string_view line = trim(strip_comment(raw));
    if (line.empty()) continue;
    if (std::optional<std::string> err = f(line, number)) {
      return RuleError{std::string(filename), number, std::move(*err)};
    }
  }
  return std::nullopt;
}

std::string where_of(std::string_view filename, int line) {
  return std::string(filename) + ":" + std::to_string(line);
}

// Not pure: the whole of a regular file of bounded size.
std::variant<std::string, RuleError> read_text_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec) return RuleError{path, 0, "cannot open: " + ec.message()};
  if (!fs::is_regular_file(st)) return RuleError{path, 0, "not a regular file"};
  const auto size = fs::file_size(path, ec);
  if (ec) return RuleError{path, 0, "cannot read: " + ec.message()};
  if (size > kMaxRulesFileBytes) {
    return RuleError{path, 0,
                     "larger than " + std::to_string(kMaxRulesFileBytes >> 20) +
                         " MiB; is this the right file?"};
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return RuleError{path, 0, "cannot open: " + std::string(std::strerror(errno))};
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return RuleError{path, 0, "read error"};
  return std::move(buf).str();
}

}  // namespace

// ---- IpAddress / Cidr / RuleError -------------------------------------------

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  auto a = parse_raw(text);
  if (!a) return std::nullopt;
  return unmap(*a);
}

std::optional<IpAddress> IpAddress::from_sockaddr(const sockaddr* sa) {
  if (sa == nullptr) return std::nullopt;
  IpAddress a;
  if (sa->sa_family == AF_INET) {
    sockaddr_in in{};
    std::memcpy(&in, sa, sizeof in);
    a.family = Family::V4;
    std::memcpy(a.bytes.data(), &in.sin_addr, 4);
    return a;
  }
  if (sa->sa_family == AF_INET6) {
    sockaddr_in6 in6{};
    std::memcpy(&in6, sa, sizeof in6);
    a.family = Family::V6;
    std::memcpy(a.bytes.data(), &in6.sin6_addr, 16);
    return unmap(a);
  }
  return std::nullopt;
}

std::string IpAddress::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (inet_ntop(is_v4() ? AF_INET : AF_INET6, bytes.data(), buf, sizeof buf) == nullptr) return "?";
  return buf;
}

bool Cidr::contains(const IpAddress& a) const {
  return a.family == net.family && masked(a, prefix) == net;
}

std::optional<Cidr> Cidr::parse(std::string_view text) {
  auto r = parse_cidr_detail(text);
  if (auto* c = std::get_if<Cidr>(&r)) return *c;
  return std::nullopt;
}

std::string Cidr::to_string() const { return net.to_string() + "/" + std::to_string(prefix); }

std::string RuleError::to_string() const {
  if (file.empty()) return message;
  if (line == 0) return file + ": " + message;
  return file + ":" + std::to_string(line) + ": " + message;
}

std::variant<std::vector<Cidr>, std::string> parse_cidr_list(std::string_view text) {
  std::vector<Cidr> out;
  const std::string_view whole = trim(text);
  if (whole.empty()) return out;
  while (true) {
    const std::size_t comma = text.find(',');
    const std::string_view entry = trim(text.substr(0, comma));
    if (entry.empty()) return "empty entry in list " + in_quotes(whole);
    auto c = parse_cidr_detail(entry);
    if (auto* err = std::get_if<std::string>(&c)) return *err;
    out.push_back(std::get<Cidr>(c));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

// ---- allowed-hosts ----------------------------------------------------------

struct AllowedLineParser {
  using Action = AllowedHosts::Action;
  using AddressRule = AllowedHosts::AddressRule;
  using OriginRule = AllowedHosts::OriginRule;

  static std::optional<std::string> parse_line(AllowedHosts& out, std::string_view line,
                                               const std::string& where) {
    const std::vector<std::string_view> w = split_words(line);
    Action action = Action::Allow;
    std::size_t i = 0;
    if (iequals(w[0], "allow") || iequals(w[0], "deny")) {
      action = iequals(w[0], "deny") ? Action::Deny : Action::Allow;
      i = 1;
      if (w.size() == 1) {
        return "'" + ascii_lowered(w[0]) +
               "' needs an address, CIDR range, host name, '*' or 'origin ORIGIN'";
      }
    }
    if (iequals(w[i], "origin")) {
      if (w.size() == i + 1) {
        return std::string("'origin' needs an origin such as https://example.com, "
                           "https://*.example.com, '*' or 'null'");
      }
      if (w.size() > i + 2) return "unexpected " + in_quotes(w[i + 2]) + " after the origin";
      return parse_origin_rule(out, action, w[i + 1], where);
    }
    if (w.size() > i + 1) {
      if (i == 0) return "unknown keyword " + in_quotes(w[0]) + " (expected allow, deny or origin)";
      return "unexpected " + in_quotes(w[i + 1]) + " after " + in_quotes(w[i]) +
             " (one address per line)";
    }
    return parse_address_rule(out, action, w[i], where);
  }

  static std::optional<std::string> parse_address_rule(AllowedHosts& out, Action action,
                                                       std::string_view x,
                                                       const std::string& where) {
    AddressRule r;
    r.action = action;
    r.where = where;
    if (x == "*") {
      r.kind = AddressRule::Kind::Any;
    } else if (x.starts_with("[")) {
      return "write IPv6 addresses without brackets in allowed-hosts (e.g. ::1, 2001:db8::/32), "
             "not " + in_quotes(x);
    } else if (x.find('*') != std::string_view::npos) {
      return "wildcards are not supported for addresses: " + in_quotes(x) +
             " (clients are matched by IP; use a CIDR range, a host name, or '*')";
    } else if (const std::size_t colon = x.find(':');
               colon != std::string_view::npos && x.find(':', colon + 1) == std::string_view::npos) {
      return "allowed-hosts entries take no port: " + in_quotes(x);
    } else if (x.find('/') != std::string_view::npos || x.find(':') != std::string_view::npos ||
               looks_numeric(x)) {
      auto c = parse_cidr_detail(x);
      if (auto* err = std::get_if<std::string>(&c)) return *err;
      r.kind = AddressRule::Kind::Net;
      r.net = std::get<Cidr>(c);
    } else if (auto name = valid_host_name(x)) {
      r.kind = AddressRule::Kind::Name;
      r.name = *name;
    } else {
      return in_quotes(x) + " is not an IP address, CIDR range, '*' or valid host name";
    }
    out.address_rules_.push_back(std::move(r));
    return std::nullopt;
  }

  static std::optional<std::string> parse_origin_rule(AllowedHosts& out, Action action,
                                                      std::string_view x,
                                                      const std::string& where) {
    OriginRule r;
    r.action = action;
    r.where = where;
    if (x == "*") {
      r.kind = OriginRule::Kind::Any;
    } else if (iequals(x, "null")) {
      r.kind = OriginRule::Kind::Null;
    } else {
      auto o = parse_origin(x, /*allow_wildcard=*/true);
      if (auto* err = std::get_if<std::string>(&o)) return *err;
      auto& parts = std::get<OriginParts>(o);
      r.kind = parts.wildcard ? OriginRule::Kind::Wildcard : OriginRule::Kind::Exact;
      r.scheme = std::move(parts.scheme);
      r.host = std::move(parts.host);
      r.port = parts.port;
    }
    out.origin_rules_.push_back(std::move(r));
    return std::nullopt;
  }
};

std::variant<AllowedHosts, RuleError> AllowedHosts::parse(std::string_view text,
                                                          std::string_view filename) {
  AllowedHosts out;
  out.filename_ = std::string(filename);
  auto err = for_each_line(text, filename, [&](std::string_view line, int number) {
    return AllowedLineParser::parse_line(out, line, where_of(filename, number));
  });
  if (err) return *err;
  return out;
}

std::vector<AllowedHosts::NameRef> AllowedHosts::names() const {
  std::vector<NameRef> out;
  for (const AddressRule& r : address_rules_) {
    if (r.kind == AddressRule::Kind::Name) out.push_back({r.name, r.where});
  }
  return out;
}

void AllowedHosts::set_resolved(std::string_view name, std::vector<IpAddress> addresses) {
  const std::string folded = fold_host(name);
  for (auto& a : addresses) a = unmap(a);
  for (AddressRule& r : address_rules_) {
    if (r.kind == AddressRule::Kind::Name && r.name == folded) r.resolved = addresses;
  }
}

Decision AllowedHosts::check_address(const IpAddress& addr) const {
  const IpAddress a = unmap(addr);
  auto matches = [&](const AddressRule& r) {
    switch (r.kind) {
      case AddressRule::Kind::Any: return true;
      case AddressRule::Kind::Net: return r.net.contains(a);
      case AddressRule::Kind::Name:
        return std::find(r.resolved.begin(), r.resolved.end(), a) != r.resolved.end();
    }
    return false;
  };
  for (const AddressRule& r : address_rules_) {
    if (r.action == Action::Deny && matches(r)) return {false, "denied by " + r.where};
  }
  bool any_allow = false;
  for (const AddressRule& r : address_rules_) {
    if (r.action != Action::Allow) continue;
    any_allow = true;
    if (matches(r)) return {true, "allowed by " + r.where};
  }
  if (!any_allow) return {true, "allowed: no address allow rules"};
  return {false, filename_.empty() ? "no allow rule matches"
                                   : "no allow rule matches (" + filename_ + ")"};
}

bool AllowedHosts::origin_matches(const OriginRule& r, std::string_view scheme,
                                  std::string_view host, uint16_t port) {
  switch (r.kind) {
    case OriginRule::Kind::Any: return true;
    case OriginRule::Kind::Null: return false;  // "null" is handled before parsing
    case OriginRule::Kind::Exact: return scheme == r.scheme && host == r.host && port == r.port;
    case OriginRule::Kind::Wildcard:
      return scheme == r.scheme && port == r.port && host.size() > r.host.size() + 1 &&
             host.ends_with(r.host) && host[host.size() - r.host.size() - 1] == '.';
  }
  return false;
}

Decision AllowedHosts::check_origin(std::optional<std::string_view> origin_header,
                                    std::string_view host_header, bool tls) const {
  if (!origin_header) return {true, "no Origin header"};
  const std::string_view origin = trim(*origin_header);
  if (iequals(origin, "null")) {
    for (const OriginRule& r : origin_rules_) {
      if (r.action == Action::Deny && r.kind == OriginRule::Kind::Null) {
        return {false, "origin null denied by " + r.where};
      }
    }
    for (const OriginRule& r : origin_rules_) {
      if (r.action == Action::Allow && r.kind == OriginRule::Kind::Null) {
        return {true, "origin null allowed by " + r.where};
      }
    }
    return {false, "origin null is only allowed by 'allow origin null'"};
  }
  auto parsed = parse_origin(origin, /*allow_wildcard=*/false);
  if (std::holds_alternative<std::string>(parsed)) return {false, "malformed Origin header"};
  const OriginParts& o = std::get<OriginParts>(parsed);
  for (const OriginRule& r : origin_rules_) {
    if (r.action == Action::Deny && origin_matches(r, o.scheme, o.host, o.port)) {
      return {false, "origin denied by " + r.where};
    }
  }
  // The request's own origin: what the page would be if served by us.
  const std::string self_text = std::string(tls ? "https" : "http") + "://" +
                                std::string(trim(host_header));
  auto self = parse_origin(self_text, /*allow_wildcard=*/false);
  if (auto* s = std::get_if<OriginParts>(&self)) {
    if (s->scheme == o.scheme && s->host == o.host && s->port == o.port) {
      return {true, "same origin"};
    }
  }
  for (const OriginRule& r : origin_rules_) {
    if (r.action == Action::Allow && origin_matches(r, o.scheme, o.host, o.port)) {
      return {true, "origin allowed by " + r.where};
    }
  }
  return {false, "origin " + shown(origin) + " not allowed (add 'allow origin " + shown(origin) +
                     "' to " + (filename_.empty() ? "allowed-hosts" : filename_) + ")"};
}

// ---- target-hosts -----------------------------------------------------------

struct TargetLineParser {
  using Action = TargetHosts::Action;
  using HostPattern = TargetHosts::HostPattern;
  using PortSet = TargetHosts::PortSet;
  using Rule = TargetHosts::Rule;
  using Named = TargetHosts::Named;

  // A target spec cut into its parts, nothing validated past the scheme.
  struct Spec {
    Scheme scheme = Scheme::Tcp;
    std::string_view host;    // without brackets
    std::string_view prefix;  // CIDR prefix digits ("" when none)
    bool bracketed = false;
    bool has_prefix = false;
    std::string_view ports;
  };

  // Removes and returns the scheme ("tcp://", "tls://"; none = Tcp); errors
  // for schemes that are planned but not supported yet, or unknown.
  static std::variant<Scheme, std::string> take_scheme(std::string_view& spec) {
    const std::size_t sep = spec.find("://");
    if (sep == std::string_view::npos) {
      if (spec.size() >= 5 && iequals(spec.substr(0, 5), "unix:")) {
        return std::string("unix: targets are not supported yet");
      }
      return Scheme::Tcp;
    }
    const std::string scheme = ascii_lowered(spec.substr(0, sep));
    if (scheme == "udp") return std::string("udp:// targets are not supported yet");
    if (scheme != "tcp" && scheme != "tls") {
      return "unknown scheme " + in_quotes(scheme + "://") + " (supported: tcp://, tls://)";
    }
    spec.remove_prefix(sep + 3);
    return scheme == "tls" ? Scheme::Tls : Scheme::Tcp;
  }

  static std::variant<Spec, std::string> split_spec(std::string_view spec) {
    Spec s;
    auto scheme = take_scheme(spec);
    if (auto* err = std::get_if<std::string>(&scheme)) return *err;
    s.scheme = std::get<Scheme>(scheme);
    std::string_view rest = spec;
    if (rest.empty()) return std::string("missing HOST:PORT");
    if (rest[0] == '[') {
      const std::size_t close = rest.find(']');
      if (close == std::string_view::npos) return "missing ']' in " + in_quotes(spec);
      s.host = rest.substr(1, close - 1);
      s.bracketed = true;
      rest.remove_prefix(close + 1);
      if (const std::size_t slash = s.host.find('/'); slash != std::string_view::npos) {
        // [fd00::/8]:22, the same as [fd00::]/8:22
        s.prefix = s.host.substr(slash + 1);
        s.host = s.host.substr(0, slash);
        s.has_prefix = true;
      } else if (rest.starts_with("/")) {
        const std::size_t colon = rest.find(':');
        s.prefix = rest.substr(1, colon == std::string_view::npos ? colon : colon - 1);
        s.has_prefix = true;
        rest.remove_prefix(colon == std::string_view::npos ? rest.size() : colon);
      }
      if (rest.empty()) {
        return "missing port after " + in_quotes(spec) + " (write [IPV6]:PORT, or [IPV6]:* for every port)";
      }
      if (rest[0] != ':') return "expected ':' and a port after ']' in " + in_quotes(spec);
      s.ports = rest.substr(1);
    } else {
      const std::size_t colon = rest.find(':');
      if (colon == std::string_view::npos) {
        return "missing port in " + in_quotes(spec) + " (write HOST:PORT, or HOST:* for every port)";
      }
      s.host = rest.substr(0, colon);
      s.ports = rest.substr(colon + 1);
      if (s.ports.find(':') != std::string_view::npos) {
        return "IPv6 addresses must be in brackets, e.g. [::1]:22, not " + in_quotes(spec);
      }
      if (const std::size_t slash = s.host.find('/'); slash != std::string_view::npos) {
        s.prefix = s.host.substr(slash + 1);
        s.host = s.host.substr(0, slash);
        s.has_prefix = true;
      }
    }
    if (s.host.empty()) return "missing host in " + in_quotes(spec);
    return s;
  }

  static std::variant<HostPattern, std::string> parse_host(const Spec& s) {
    HostPattern p;
    const std::string cidr_text =
        std::string(s.host) + (s.has_prefix ? "/" + std::string(s.prefix) : "");
    if (s.bracketed) {
      auto raw = parse_raw(s.host);
      if (raw && raw->is_v4()) {
        return "brackets are only for IPv6 addresses: write " + shown(s.host) + " without them";
      }
      if (!raw) return in_quotes(s.host) + " is not a valid IPv6 address";
      auto c = parse_cidr_detail(cidr_text);
      if (auto* err = std::get_if<std::string>(&c)) return *err;
      p.kind = HostPattern::Kind::Net;
      p.net = std::get<Cidr>(c);
      return p;
    }
    if (s.host == "*" && !s.has_prefix) {
      p.kind = HostPattern::Kind::Any;
      return p;
    }
    if (s.host.starts_with("*.") && !s.has_prefix) {
      auto domain = valid_host_name(s.host.substr(2));
      if (!domain) return in_quotes(s.host) + " is not a valid wildcard (write *.example.com)";
      p.kind = HostPattern::Kind::Wildcard;
      p.name = *domain;
      return p;
    }
    if (s.host.find('*') != std::string_view::npos) {
      return in_quotes(s.host) + ": '*' is only allowed alone or as a leading '*.' "
                              "(e.g. *.example.com)";
    }
    if (s.has_prefix || looks_numeric(s.host)) {
      auto c = parse_cidr_detail(cidr_text);
      if (auto* err = std::get_if<std::string>(&c)) return *err;
      p.kind = HostPattern::Kind::Net;
      p.net = std::get<Cidr>(c);
      return p;
    }
    auto name = valid_host_name(s.host);
    if (!name) return in_quotes(s.host) + " is not a valid host name";
    p.kind = HostPattern::Kind::Name;
    p.name = *name;
    return p;
  }

  static std::variant<PortSet, std::string> parse_ports(std::string_view text) {
    PortSet set;
    if (text == "*") {
      set.any = true;
      return set;
    }
    if (text.empty()) return std::string("missing port after ':' (write HOST:PORT, or HOST:* "
                                         "for every port)");
    std::string_view rest = text;
    while (true) {
      const std::size_t comma = rest.find(',');
      const std::string_view item = rest.substr(0, comma);
      if (item.empty()) return "empty entry in port list " + in_quotes(text);
      if (item == "*") return "'*' cannot be combined with other ports in " + in_quotes(text);
      const std::size_t dash = item.find('-');
      auto lo = parse_port(item.substr(0, dash));
      if (auto* err = std::get_if<std::string>(&lo)) return *err;
      uint16_t hi = std::get<uint16_t>(lo);
      if (dash != std::string_view::npos) {
        auto h = parse_port(item.substr(dash + 1));
        if (auto* err = std::get_if<std::string>(&h)) return *err;
        hi = std::get<uint16_t>(h);
        if (hi < std::get<uint16_t>(lo)) return "port range " + shown(item) + " is reversed";
      }
      set.ranges.emplace_back(std::get<uint16_t>(lo), hi);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    return set;
  }

  static std::variant<Rule, std::string> parse_rule(std::string_view spec, Action action,
                                                    std::string where) {
    auto s = split_spec(spec);
    if (auto* err = std::get_if<std::string>(&s)) return *err;
    const Spec& parts = std::get<Spec>(s);
    auto host = parse_host(parts);
    if (auto* err = std::get_if<std::string>(&host)) return *err;
    auto ports = parse_ports(parts.ports);
    if (auto* err = std::get_if<std::string>(&ports)) return *err;
    Rule r;
    r.action = action;
    r.scheme = parts.scheme;
    r.host = std::move(std::get<HostPattern>(host));
    r.ports = std::move(std::get<PortSet>(ports));
    r.where = std::move(where);
    return r;
  }

  // One [scheme://]HOST:PORT: a single host (name or address) and one port.
  static std::variant<TargetRequest, std::string> parse_single(std::string_view spec) {
    auto s = split_spec(spec);
    if (auto* err = std::get_if<std::string>(&s)) return *err;
    const Spec& parts = std::get<Spec>(s);
    if (parts.has_prefix) return std::string("a single host is needed here, not a CIDR range");
    auto host = parse_host(parts);
    if (auto* err = std::get_if<std::string>(&host)) return *err;
    const HostPattern& h = std::get<HostPattern>(host);
    if (h.kind == HostPattern::Kind::Any || h.kind == HostPattern::Kind::Wildcard) {
      return std::string("a single host is needed here, not a wildcard");
    }
    if (parts.ports == "*" || parts.ports.find_first_of(",-") != std::string_view::npos) {
      return "a single port is needed here, not " + in_quotes(parts.ports);
    }
    auto port = parse_port(parts.ports);
    if (auto* err = std::get_if<std::string>(&port)) return *err;
    TargetRequest t;
    t.scheme = parts.scheme;
    t.host = h.kind == HostPattern::Kind::Net ? h.net.net.to_string() : h.name;
    t.port = std::get<uint16_t>(port);
    return t;
  }

  static std::optional<std::string> add_named(TargetHosts& out, std::string_view name,
                                              std::string_view target, std::string where,
                                              std::string_view what) {
    if (!is_token(name)) {
      return "invalid " + std::string(what) + " " + in_quotes(name) +
             " (use letters, digits, '_', '.' and '-')";
    }
    if (auto it = out.named_.find(name); it != out.named_.end()) {
      return std::string(what) + " " + in_quotes(name) + " is already defined at " + it->second.where;
    }
    if (target.empty()) return std::string(what) + " " + in_quotes(name) + " needs HOST:PORT";
    auto t = parse_single(target);
    if (auto* err = std::get_if<std::string>(&t)) {
      return std::string(what) + " " + in_quotes(name) + ": " + *err;
    }
    Named n{std::move(std::get<TargetRequest>(t)), std::move(where)};
    n.target.named = true;
    n.target.name = std::string(name);
    out.named_.emplace(std::string(name), std::move(n));
    return std::nullopt;
  }

  // "TOKEN: HOST:PORT" or "TOKEN:HOST:PORT" -> {token, target}; nullopt when
  // the line is not one, e.g. a rule "localhost:22" or "tls://host:22".
  static std::optional<std::pair<std::string_view, std::string_view>> split_token_line(
      std::string_view line) {
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) return std::nullopt;
    const std::string_view rest = line.substr(colon + 1);
    if (rest.starts_with("/")) return std::nullopt;
    const bool space_after = !rest.empty() && is_space(rest[0]);
    if (!space_after && rest.find(':') == std::string_view::npos) return std::nullopt;
    return std::pair{line.substr(0, colon), trim(rest)};
  }

  static std::optional<std::string> parse_line(TargetHosts& out, std::string_view line,
                                               std::string where) {
    const std::vector<std::string_view> w = split_words(line);
    if (iequals(w[0], "allow") || iequals(w[0], "deny")) {
      const Action action = iequals(w[0], "deny") ? Action::Deny : Action::Allow;
      if (w.size() == 1) return "'" + ascii_lowered(w[0]) + "' needs HOST:PORT";
      if (w.size() > 2) {
        return "unexpected " + in_quotes(w[2]) + " after " + in_quotes(w[1]) +
               " (no spaces inside a rule; lists are comma-separated)";
      }
      return add_rule(out, w[1], action, std::move(where));
    }
    if (const std::size_t eq = line.find('='); eq != std::string_view::npos) {
      const std::string_view name = trim(line.substr(0, eq));
      const std::string_view target = trim(line.substr(eq + 1));
      if (name.empty()) return std::string("missing name before '='");
      if (const auto tw = split_words(target); tw.size() > 1) {
        return "unexpected " + in_quotes(tw[1]) + " after " + in_quotes(tw[0]);
      }
      return add_named(out, name, target, std::move(where), "name");
    }
    if (auto tok = split_token_line(line)) {
      if (const auto tw = split_words(tok->second); tw.size() > 1) {
        return "unexpected " + in_quotes(tw[1]) + " after " + in_quotes(tw[0]);
      }
      return add_named(out, tok->first, tok->second, std::move(where), "token");
    }
    if (w.size() > 1) {
      return "unknown keyword " + in_quotes(w[0]) +
             " (expected allow, deny, NAME = HOST:PORT or TOKEN: HOST:PORT)";
    }
    return add_rule(out, w[0], Action::Allow, std::move(where));
  }

  static std::optional<std::string> add_rule(TargetHosts& out, std::string_view spec,
                                             Action action, std::string where) {
    auto r = parse_rule(spec, action, std::move(where));
    if (auto* err = std::get_if<std::string>(&r)) return *err;
    out.rules_.push_back(std::move(std::get<Rule>(r)));
    return std::nullopt;
  }

  // A websockify token file line: always "TOKEN: HOST:PORT" / "TOKEN:HOST:PORT".
  static std::optional<std::string> parse_token_line(TargetHosts& out, std::string_view line,
                                                     std::string where) {
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      return "expected 'TOKEN: HOST:PORT', got " + in_quotes(line);
    }
    const std::string_view token = trim(line.substr(0, colon));
    const std::string_view target = trim(line.substr(colon + 1));
    if (const auto tw = split_words(target); tw.size() > 1) {
      return "unexpected " + in_quotes(tw[1]) + " after " + in_quotes(tw[0]);
    }
    return add_named(out, token, target, std::move(where), "token");
  }
};

bool TargetHosts::PortSet::contains(uint16_t port) const {
  if (any) return true;
  return std::any_of(ranges.begin(), ranges.end(),
                     [&](const auto& r) { return port >= r.first && port <= r.second; });
}

std::variant<TargetHosts, RuleError> TargetHosts::parse(std::string_view text,
                                                        std::string_view filename) {
  TargetHosts out;
  auto err = for_each_line(text, filename, [&](std::string_view line, int number) {
    return TargetLineParser::parse_line(out, line, where_of(filename, number));
  });
  if (err) return *err;
  return out;
}

std::optional<RuleError> TargetHosts::load_token_text(std::string_view text,
                                                      std::string_view filename) {
  TargetHosts merged = *this;  // all or nothing
  auto err = for_each_line(text, filename, [&](std::string_view line, int number) {
    return TargetLineParser::parse_token_line(merged, line, where_of(filename, number));
  });
  if (err) return err;
  *this = std::move(merged);
  return std::nullopt;
}

std::optional<RuleError> TargetHosts::add_allow(std::string_view spec, std::string_view source) {
  auto err = TargetLineParser::add_rule(*this, trim(spec), Action::Allow, std::string(source));
  if (err) return RuleError{std::string(source), 0, std::move(*err)};
  return std::nullopt;
}

std::optional<RuleError> TargetHosts::add_named(std::string_view name, std::string_view target,
                                                std::string_view source) {
  auto err =
      TargetLineParser::add_named(*this, trim(name), trim(target), std::string(source), "name");
  if (err) return RuleError{std::string(source), 0, std::move(*err)};
  return std::nullopt;
}

std::variant<TargetRequest, std::string> TargetHosts::resolve_request(
    std::string_view requested) const {
  if (auto it = named_.find(requested); it != named_.end()) return it->second.target;
  std::string_view rest = requested;
  auto scheme = TargetLineParser::take_scheme(rest);
  if (auto* err = std::get_if<std::string>(&scheme)) {
    return "target " + in_quotes(requested) + ": " + *err;
  }
  if (is_token(requested)) {
    return "unknown target name " + in_quotes(requested) + " (expected a defined name or HOST:PORT)";
  }
  auto t = TargetLineParser::parse_single(requested);
  if (auto* err = std::get_if<std::string>(&t)) {
    return "malformed target " + in_quotes(requested) + ": " + *err +
           " (expected HOST:PORT, [IPV6]:PORT or a target name)";
  }
  return std::get<TargetRequest>(t);
}

bool TargetHosts::host_matches(const HostPattern& p, std::string_view host) {
  switch (p.kind) {
    case HostPattern::Kind::Any: return true;
    case HostPattern::Kind::Net: return false;  // matched against the resolved address
    case HostPattern::Kind::Name: return host == p.name;
    case HostPattern::Kind::Wildcard:
      return host.size() > p.name.size() + 1 && host.ends_with(p.name) &&
             host[host.size() - p.name.size() - 1] == '.';
  }
  return false;
}

const TargetHosts::Rule* TargetHosts::find_name_rule(Action action, std::string_view host,
                                                     uint16_t port,
                                                     std::optional<Scheme> scheme) const {
  for (const Rule& r : rules_) {
    if (r.action != action || (scheme && r.scheme != *scheme)) continue;
    if (r.ports.contains(port) && host_matches(r.host, host)) return &r;
  }
  return nullptr;
}

bool TargetHosts::name_allowed(std::string_view host, uint16_t port, Scheme scheme) const {
  const std::string h = fold_host(host);
  if (find_name_rule(Action::Deny, h, port, std::nullopt)) return false;
  return find_name_rule(Action::Allow, h, port, scheme) != nullptr;
}

Decision TargetHosts::check_connect(std::string_view requested_host, const IpAddress& resolved,
                                    uint16_t port, bool named, Scheme scheme) const {
  const std::string host = fold_host(requested_host);
  const IpAddress addr = unmap(resolved);
  auto address_match = [&](const Rule& r) {
    return r.host.kind == HostPattern::Kind::Net && r.ports.contains(port) &&
           r.host.net.contains(addr);
  };
  for (const Rule& r : rules_) {
    if (r.action == Action::Deny && address_match(r)) return {false, "denied by " + r.where};
  }
  if (const Rule* r = find_name_rule(Action::Deny, host, port, std::nullopt)) {
    return {false, "denied by " + r->where};
  }
  if (named) return {true, "named target"};
  if (const Rule* r = find_name_rule(Action::Allow, host, port, scheme)) {
    return {true, "allowed by " + r->where};
  }
  for (const Rule& r : rules_) {
    if (r.action == Action::Allow && r.scheme == scheme && address_match(r)) {
      return {true, "allowed by " + r.where};
    }
  }
  return {false, "no target rule allows " + shown(host) + " port " + std::to_string(port) +
                     " (address " + addr.to_string() + ")"};
}

bool TargetHosts::empty() const {
  return named_.empty() && std::none_of(rules_.begin(), rules_.end(), [](const Rule& r) {
           return r.action == Action::Allow;
         });
}

// ---- Not pure: files and DNS ----------------------------------------------

std::variant<AllowedHosts, RuleError> AllowedHosts::load_file(const std::string& path) {
  auto text = read_text_file(path);
  if (auto* err = std::get_if<RuleError>(&text)) return *err;
  return parse(std::get<std::string>(text), path);
}

std::variant<TargetHosts, RuleError> TargetHosts::load_file(const std::string& path) {
  auto text = read_text_file(path);
  if (auto* err = std::get_if<RuleError>(&text)) return *err;
  return parse(std::get<std::string>(text), path);
}

std::optional<RuleError> TargetHosts::load_token_path(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<std::string> files;
  if (fs::is_directory(path, ec)) {
    for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.starts_with(".")) continue;  // editor swap files, .git, ...
      std::error_code type_ec;
      if (it->is_regular_file(type_ec)) files.push_back(it->path().string());
    }
    if (ec) return RuleError{path, 0, "cannot list directory: " + ec.message()};
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  TargetHosts merged = *this;  // all or nothing across files too
  for (const std::string& file : files) {
    auto text = read_text_file(file);
    if (auto* err = std::get_if<RuleError>(&text)) return *err;
    if (auto err = merged.load_token_text(std::get<std::string>(text), file)) return err;
  }
  *this = std::move(merged);
  return std::nullopt;
}

void resolve_names(AllowedHosts& rules, std::vector<std::string>& warnings) {
  std::map<std::string, std::variant<std::vector<IpAddress>, std::string>> cache;
  for (const AllowedHosts::NameRef& ref : rules.names()) {
    auto it = cache.find(ref.name);
    if (it == cache.end()) {
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* res = nullptr;
      const int rc = getaddrinfo(ref.name.c_str(), nullptr, &hints, &res);
      std::variant<std::vector<IpAddress>, std::string> result;
      if (rc != 0) {
        result = std::string(gai_strerror(rc));
      } else {
        std::vector<IpAddress> addrs;
        for (const addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
          auto a = IpAddress::from_sockaddr(ai->ai_addr);
          if (a && std::find(addrs.begin(), addrs.end(), *a) == addrs.end()) addrs.push_back(*a);
        }
        freeaddrinfo(res);
        result = std::move(addrs);
      }
      it = cache.emplace(ref.name, std::move(result)).first;
      if (auto* addrs = std::get_if<std::vector<IpAddress>>(&it->second)) {
        rules.set_resolved(ref.name, *addrs);
      }
    }
    if (auto* err = std::get_if<std::string>(&it->second)) {
      warnings.push_back(ref.where + ": cannot resolve " + in_quotes(ref.name) + ": " + *err +
                         "; the rule matches no address until the next reload");
    }
  }
}

}  // namespace netwine::access
