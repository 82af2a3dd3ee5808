// Access control: parsing and matching of hosts/allowed-hosts (who may open
// tunnels) and hosts/target-hosts (where tunnels may go), plus websockify
// token files. The formats are documented at the top of the example files in
// hosts/; this header documents the API and the matching semantics.
//
// Pure by design: parse() takes text and returns rules or a RuleError naming
// file:line, and every check_*() maps inputs to a Decision without touching a
// socket, so doctest covers all of it. The only I/O lives in the few functions
// marked "not pure" below (reading files, getaddrinfo for allowed-hosts names);
// the server calls them at start-up and on SIGHUP, on a fresh object, and swaps
// it in only when loading succeeded (a failed reload keeps the old rules).
//
// Rule objects are immutable once loaded and hold no pointers, so they are
// cheap to copy and safe to share read-only between sessions.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

struct sockaddr;

namespace netwine::access {

// An IPv4 or IPv6 address. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are
// normalised to IPv4 by every constructor, so a dual-stack listener's mapped
// peers match IPv4 rules and there is exactly one spelling of each address.
// (NAT64 64:ff9b::/96 and the deprecated IPv4-compatible ::a.b.c.d are left
// alone: they are different hosts as far as routing is concerned.)
struct IpAddress {
  enum class Family : uint8_t {
    V4,  // bytes[0..3] hold the address, bytes[4..15] are zero
    V6,  // all 16 bytes, never an IPv4-mapped address
  };
  Family family = Family::V4;
  std::array<uint8_t, 16> bytes{};  // network byte order

  // "192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1" (-> IPv4). No brackets, no
  // zone ids ("fe80::1%eth0"), no port, no shorthand ("10.1", "0x7f.1"),
  // no leading zeros ("010.0.0.1": octal or decimal? we refuse to guess).
  static std::optional<IpAddress> parse(std::string_view text);
  // AF_INET / AF_INET6 socket addresses (port and scope id ignored); nullopt
  // for any other family or a null pointer.
  static std::optional<IpAddress> from_sockaddr(const sockaddr* sa);

  std::string to_string() const;  // inet_ntop form, IPv6 without brackets
  bool is_v4() const { return family == Family::V4; }
  int max_prefix() const { return is_v4() ? 32 : 128; }

  bool operator==(const IpAddress&) const = default;
};

// A network: `net` with the low (max_prefix - prefix) bits zero.
struct Cidr {
  IpAddress net;
  int prefix = 32;

  // Same family and the first `prefix` bits equal. /0 matches every address of
  // its own family and none of the other (write both 0.0.0.0/0 and ::/0, or
  // use `*`, to mean "everyone").
  bool contains(const IpAddress& a) const;

  // "10.0.0.0/8", "2001:db8::/32", or a bare address (= /32 or /128).
  // Host bits set below the prefix ("10.0.0.1/8") are REJECTED, not masked: the
  // writer meant either a single host or a network, and guessing wrong opens
  // or closes a whole range silently. Rule-file parsers explain the error and
  // suggest the masked form. "::ffff:10.0.0.0/104" becomes 10.0.0.0/8.
  static std::optional<Cidr> parse(std::string_view text);

  std::string to_string() const;  // "10.0.0.0/8", "2001:db8::/32"
  bool operator==(const Cidr&) const = default;
};

// A rule-file problem. `line` is 1-based; 0 when the text did not come from a
// file line (a --target flag, a missing file).
struct RuleError {
  std::string file;
  int line = 0;
  std::string message;

  // "hosts/target-hosts:7: port 70000 out of range 1-65535";
  // "FILE: message" when line is 0; just the message when file is empty too.
  std::string to_string() const;
};

// Hosts files are hand-written; anything bigger is the wrong path (or
// /dev/zero), and reading it whole would stall start-up.
inline constexpr std::size_t kMaxRulesFileBytes = 16 * 1024 * 1024;

// The outcome of one access check. `reason` is short and meant for the log and
// the client's error message ("denied by hosts/allowed-hosts:4").
struct Decision {
  bool allowed = false;
  std::string reason;
};

// Comma-separated addresses / CIDR ranges (IPv6 plain, no brackets), spaces
// around entries ignored, empty text -> empty list. For the trusted-proxy
// option. Returns the list, or a message naming the bad entry.
std::variant<std::vector<Cidr>, std::string> parse_cidr_list(std::string_view comma_separated);

// ---------------------------------------------------------------------------
// hosts/allowed-hosts: who may open tunnels.
//
// Address dimension (check_address): DENY ALWAYS WINS, whatever the order of
// lines. An address matching any deny rule is refused; otherwise, if the file
// has at least one allow address rule (IP, CIDR, name or `*`), the address
// must match one; with no allow address rules at all, every address not
// denied is allowed. A host-name rule matches the addresses the name resolved
// to at the last load (resolve_names); an unresolved name matches nothing, so
// a file whose only allow rule is an unresolvable name admits nobody.
//
// Origin dimension (check_origin): see there.
class AllowedHosts {
 public:
  // Pure. `filename` is only used in messages and Decision reasons.
  static std::variant<AllowedHosts, RuleError> parse(std::string_view text,
                                                     std::string_view filename);
  // Not pure: reads `path` (a regular file of at most kMaxRulesFileBytes) and
  // parses it. Does NOT resolve names: call resolve_names() next.
  static std::variant<AllowedHosts, RuleError> load_file(const std::string& path);

  // A host-name rule waiting for (or holding) its resolution.
  struct NameRef {
    std::string name;   // lower case, no trailing dot
    std::string where;  // "hosts/allowed-hosts:5"
  };
  // Every host name used by an address rule, in file order, once per line.
  std::vector<NameRef> names() const;
  // Pure: sets the addresses `name` matches (all rules with that name),
  // replacing an earlier resolution. resolve_names() calls it; tests call it
  // to stand in for DNS.
  void set_resolved(std::string_view name, std::vector<IpAddress> addresses);

  // Decides whether a client at `a` may open tunnels (see the class comment).
  Decision check_address(const IpAddress& a) const;

  // Decides whether a browser page at `origin_header` may open tunnels.
  // `host_header` is the request's Host header and `tls` whether the browser
  // reached us over TLS (behind a TLS-terminating proxy, the caller passes what
  // the browser saw). In order:
  //  - no Origin header (a non-browser client): allowed;
  //  - "null" (sandboxed iframes, file:// pages): allowed only by an explicit
  //    `allow origin null` and not `deny origin null` (`origin *` rules, allow
  //    or deny, never match null);
  //  - a malformed Origin: refused;
  //  - matching a `deny origin` rule: refused (deny wins, same origin too);
  //  - the request's own origin (http or https per `tls`, host and port of the
  //    Host header, default ports 80/443): allowed;
  //  - matching an `allow origin` rule: allowed; otherwise refused.
  // Scheme and host compare case-insensitively, a trailing dot on the host is
  // ignored, and an explicit default port equals no port.
  Decision check_origin(std::optional<std::string_view> origin_header,
                        std::string_view host_header, bool tls) const;

  std::size_t rule_count() const { return address_rules_.size() + origin_rules_.size(); }

 private:
  enum class Action : uint8_t { Allow, Deny };
  struct AddressRule {
    enum class Kind : uint8_t {
      Any,   // `*`
      Net,   // an address or CIDR range
      Name,  // a host name; matches `resolved`
    };
    Action action = Action::Allow;
    Kind kind = Kind::Any;
    Cidr net;
    std::string name;
    std::vector<IpAddress> resolved;
    std::string where;
  };
  struct OriginRule {
    enum class Kind : uint8_t {
      Any,       // `origin *`: every origin except "null"
      Null,      // `origin null`
      Exact,     // scheme://host[:port]
      Wildcard,  // scheme://*.domain[:port]: strict subdomains of `host`
    };
    Action action = Action::Allow;
    Kind kind = Kind::Any;
    std::string scheme;
    std::string host;  // lower case; for Wildcard the domain without "*."
    uint16_t port = 0;  // explicit or the scheme's default; 0 = scheme has none
    std::string where;
  };

  friend struct AllowedLineParser;  // rules.cpp: builds the private rule structs

  static bool origin_matches(const OriginRule& r, std::string_view scheme,
                             std::string_view host, uint16_t port);

  std::string filename_;
  std::vector<AddressRule> address_rules_;
  std::vector<OriginRule> origin_rules_;
};

// Not pure: resolves every host name of `rules` with getaddrinfo (blocking;
// it runs at start-up and on reload, never per connection) and stores the
// results. A name that does not resolve is a warning appended to `warnings`
// ("hosts/allowed-hosts:5: cannot resolve 'x': ...; the rule matches no
// address until the next reload"), not an error.
void resolve_names(AllowedHosts& rules, std::vector<std::string>& warnings);

// ---------------------------------------------------------------------------
// hosts/target-hosts: where tunnels may go.

// How netwine talks to a target. Room for later kinds: `udp://` and `unix:`
// are recognised by the parser and refused with "not supported yet".
enum class Scheme : uint8_t {
  Tcp,  // plain TCP; what no scheme (or tcp://) means
  Tls,  // TCP, and netwine speaks TLS to the target (tls://host:port)
};

// What a client asked to reach, after name lookup.
struct TargetRequest {
  Scheme scheme = Scheme::Tcp;
  std::string host;   // lower case, no trailing dot, IPv6 without brackets
  uint16_t port = 0;
  bool named = false;  // came from a named target or token: allowed unless denied
  std::string name;    // the name or token when `named`
};

class TargetHosts {
 public:
  // Pure. `filename` is only used in messages and Decision reasons.
  static std::variant<TargetHosts, RuleError> parse(std::string_view text,
                                                    std::string_view filename);
  // Not pure: reads and parses `path` (a regular file, <= kMaxRulesFileBytes).
  static std::variant<TargetHosts, RuleError> load_file(const std::string& path);

  // Pure. Merges websockify token lines (`token: host:port`, `token:host:port`,
  // `# comments`, IPv6 as [::1]:5900) as named targets. All or nothing: on
  // error nothing is added. A token already defined (here or in another file)
  // is an error naming both places.
  std::optional<RuleError> load_token_text(std::string_view text, std::string_view filename);
  // Not pure: a token file, or a directory whose regular files (names not
  // starting with '.', in name order) are all token files, like websockify's
  // --token-source. All or nothing, as above.
  std::optional<RuleError> load_token_path(const std::string& path);

  // Adds one allow rule written as in the file (`HOSTSPEC:PORTSPEC`, optional
  // tls://) on behalf of `source` (netwine's --target flags, the demo service);
  // the error, and Decision reasons, name `source`.
  std::optional<RuleError> add_allow(std::string_view spec, std::string_view source = "--target");
  // Adds a named target (`name` -> `target`, a single [tls://]host:port).
  std::optional<RuleError> add_named(std::string_view name, std::string_view target,
                                     std::string_view source);

  // What the client's requested target means: a defined name or token (exact,
  // case-sensitive match) -> that target with named = true; otherwise
  // [tls://]HOST:PORT or [tls://][IPV6]:PORT with a single port -> named = false.
  // Anything else is an error message for the client ("malformed target ...",
  // "unknown target name ...", "... not supported yet"); the echoed request is
  // shortened and stripped of control characters.
  std::variant<TargetRequest, std::string> resolve_request(std::string_view requested) const;

  // True when an allow rule naming hosts matches `host` (a name, a wildcard
  // `*.domain` or `*`) on `port` for `scheme`, and no deny rule by name,
  // wildcard or `*` matches host and port. Address/CIDR rules play no part:
  // they are checked against the resolved address by check_connect().
  bool name_allowed(std::string_view host, uint16_t port, Scheme scheme = Scheme::Tcp) const;

  // THE check, done for every address DNS returned, right before connecting.
  // Allowed iff no deny rule matches (an address/CIDR rule against `resolved`,
  // a name/wildcard/`*` rule against `requested_host`; deny rules apply to
  // every scheme) AND (`named`, or name_allowed(), or an allow address/CIDR
  // rule for `scheme` matches `resolved` and `port`). So a name that resolves
  // into a denied range is refused (DNS rebinding gets nowhere), and with
  // only address rules a name resolving elsewhere is refused.
  Decision check_connect(std::string_view requested_host, const IpAddress& resolved,
                         uint16_t port, bool named, Scheme scheme = Scheme::Tcp) const;

  // No allow rule and no named target: every target is refused. (Whether to
  // then run as an open proxy is the caller's policy, behind a loud flag.)
  bool empty() const;

  std::size_t rule_count() const { return rules_.size(); }
  std::size_t named_count() const { return named_.size(); }

 private:
  enum class Action : uint8_t { Allow, Deny };
  struct HostPattern {
    enum class Kind : uint8_t {
      Any,       // `*`
      Net,       // an address or CIDR range; matches the resolved address
      Name,      // exact host name
      Wildcard,  // `*.domain`: strict subdomains of `name`
    };
    Kind kind = Kind::Any;
    Cidr net;
    std::string name;  // lower case, no trailing dot
  };
  struct PortSet {
    bool any = false;  // `*`
    std::vector<std::pair<uint16_t, uint16_t>> ranges;  // inclusive; single port = {p, p}
    bool contains(uint16_t port) const;
  };
  struct Rule {
    Action action = Action::Allow;
    Scheme scheme = Scheme::Tcp;
    HostPattern host;
    PortSet ports;
    std::string where;  // "hosts/target-hosts:4" or "--target"
  };
  struct Named {
    TargetRequest target;
    std::string where;
  };
  friend struct TargetLineParser;  // rules.cpp: builds the private rule structs

  static bool host_matches(const HostPattern& p, std::string_view host);
  const Rule* find_name_rule(Action action, std::string_view host, uint16_t port,
                             std::optional<Scheme> scheme) const;

  std::vector<Rule> rules_;
  std::map<std::string, Named, std::less<>> named_;
};

}  // namespace netwine::access
