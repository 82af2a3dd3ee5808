// Unit tests of src/access/rules.*: every syntax form and error of
// hosts/allowed-hosts, hosts/target-hosts and token files, and the matching
// edges (prefix and port boundaries, wildcards, deny-wins, DNS rebinding).
#include "access/rules.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <doctest/doctest.h>

using namespace netwine::access;

namespace {

constexpr const char* kAllowedFile = "hosts/allowed-hosts";
constexpr const char* kTargetFile = "hosts/target-hosts";

IpAddress ip(std::string_view text) {
  auto a = IpAddress::parse(text);
  REQUIRE_MESSAGE(a.has_value(), std::string(text));
  return *a;
}

Cidr cidr(std::string_view text) {
  auto c = Cidr::parse(text);
  REQUIRE_MESSAGE(c.has_value(), std::string(text));
  return *c;
}

AllowedHosts allowed(std::string_view text) {
  auto r = AllowedHosts::parse(text, kAllowedFile);
  if (auto* err = std::get_if<RuleError>(&r)) FAIL(err->to_string());
  return std::get<AllowedHosts>(std::move(r));
}

// The full "file:line: message" of the error `text` must produce.
std::string allowed_error(std::string_view text) {
  auto r = AllowedHosts::parse(text, kAllowedFile);
  REQUIRE_MESSAGE(std::holds_alternative<RuleError>(r), std::string(text));
  return std::get<RuleError>(r).to_string();
}

TargetHosts targets(std::string_view text) {
  auto r = TargetHosts::parse(text, kTargetFile);
  if (auto* err = std::get_if<RuleError>(&r)) FAIL(err->to_string());
  return std::get<TargetHosts>(std::move(r));
}

std::string target_error(std::string_view text) {
  auto r = TargetHosts::parse(text, kTargetFile);
  REQUIRE_MESSAGE(std::holds_alternative<RuleError>(r), std::string(text));
  return std::get<RuleError>(r).to_string();
}

TargetRequest request(const TargetHosts& t, std::string_view requested) {
  auto r = t.resolve_request(requested);
  if (auto* err = std::get_if<std::string>(&r)) FAIL(*err);
  return std::get<TargetRequest>(std::move(r));
}

std::string request_error(const TargetHosts& t, std::string_view requested) {
  auto r = t.resolve_request(requested);
  REQUIRE_MESSAGE(std::holds_alternative<std::string>(r), std::string(requested));
  return std::get<std::string>(r);
}

// check_connect for a literal address request (host text = the address).
bool connect_ok(const TargetHosts& t, std::string_view addr, uint16_t port) {
  return t.check_connect(addr, ip(addr), port, false).allowed;
}

bool origin_ok(const AllowedHosts& a, std::string_view origin, std::string_view host = "netwine.test",
               bool tls = false) {
  return a.check_origin(origin, host, tls).allowed;
}

// A scratch directory under the system temp dir, removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("netwine-access-test-" + std::to_string(::getpid()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string write(const std::string& name, std::string_view text) const {
    const auto p = path / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
};

}  // namespace

// ---------------------------------------------------------------------------
TEST_SUITE("access.address") {
  TEST_CASE("IpAddress parses IPv4 and IPv6 and prints them back") {
    CHECK(ip("192.0.2.1").is_v4());
    CHECK(ip("192.0.2.1").to_string() == "192.0.2.1");
    CHECK_FALSE(ip("2001:db8::1").is_v4());
    CHECK(ip("2001:DB8:0:0::1").to_string() == "2001:db8::1");
    CHECK(ip("::").to_string() == "::");
    CHECK(ip("::1") == ip("0:0:0:0:0:0:0:1"));
  }

  TEST_CASE("IPv4-mapped IPv6 is normalised to IPv4") {
    const IpAddress a = ip("::ffff:192.0.2.1");
    CHECK(a.is_v4());
    CHECK(a == ip("192.0.2.1"));
    CHECK(ip("::ffff:c000:201") == ip("192.0.2.1"));
    // IPv4-compatible and NAT64 forms are other hosts and stay IPv6.
    CHECK_FALSE(ip("::192.0.2.1").is_v4());
    CHECK_FALSE(ip("64:ff9b::192.0.2.1").is_v4());
  }

  TEST_CASE("IpAddress rejects shorthand, zones, brackets, ports and junk") {
    for (const char* bad : {"", "1.2.3", "10.1", "01.2.3.4", "1.2.3.256", "0x7f.0.0.1",
                            "2130706433", "[::1]", "fe80::1%eth0", "1.2.3.4:80", " 1.2.3.4",
                            "1.2.3.4 ", "localhost", "::1::2",
                            "0000:0000:0000:0000:0000:0000:0000:0000:0000"}) {
      CHECK_MESSAGE(!IpAddress::parse(bad), bad);
    }
  }

  TEST_CASE("IpAddress::from_sockaddr") {
    sockaddr_in v4{};
    v4.sin_family = AF_INET;
    v4.sin_port = htons(80);
    inet_pton(AF_INET, "198.51.100.7", &v4.sin_addr);
    auto a = IpAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&v4));
    REQUIRE(a);
    CHECK(*a == ip("198.51.100.7"));

    sockaddr_in6 v6{};
    v6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "2001:db8::5", &v6.sin6_addr);
    a = IpAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&v6));
    REQUIRE(a);
    CHECK(*a == ip("2001:db8::5"));

    inet_pton(AF_INET6, "::ffff:198.51.100.7", &v6.sin6_addr);  // dual-stack listener peer
    a = IpAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&v6));
    REQUIRE(a);
    CHECK(a->is_v4());
    CHECK(*a == ip("198.51.100.7"));

    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    CHECK_FALSE(IpAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&un)));
    CHECK_FALSE(IpAddress::from_sockaddr(nullptr));
  }

  TEST_CASE("Cidr: bare addresses are /32 and /128") {
    CHECK(cidr("192.0.2.1") == Cidr{ip("192.0.2.1"), 32});
    CHECK(cidr("2001:db8::1") == Cidr{ip("2001:db8::1"), 128});
    CHECK(cidr("192.0.2.1").contains(ip("192.0.2.1")));
    CHECK_FALSE(cidr("192.0.2.1").contains(ip("192.0.2.2")));
    CHECK(cidr("192.0.2.1/32").contains(ip("192.0.2.1")));
    CHECK_FALSE(cidr("192.0.2.1/32").contains(ip("192.0.2.0")));
    CHECK(cidr("2001:db8::1/128").contains(ip("2001:db8::1")));
    CHECK_FALSE(cidr("2001:db8::1/128").contains(ip("2001:db8::2")));
  }

  TEST_CASE("Cidr: range edges") {
    const Cidr ten = cidr("10.0.0.0/8");
    CHECK(ten.contains(ip("10.0.0.0")));
    CHECK(ten.contains(ip("10.255.255.255")));
    CHECK_FALSE(ten.contains(ip("9.255.255.255")));
    CHECK_FALSE(ten.contains(ip("11.0.0.0")));
    const Cidr odd = cidr("192.168.4.0/22");
    CHECK(odd.contains(ip("192.168.4.0")));
    CHECK(odd.contains(ip("192.168.7.255")));
    CHECK_FALSE(odd.contains(ip("192.168.8.0")));
    CHECK_FALSE(odd.contains(ip("192.168.3.255")));
    const Cidr doc = cidr("2001:db8::/32");
    CHECK(doc.contains(ip("2001:db8:ffff::1")));
    CHECK_FALSE(doc.contains(ip("2001:db9::")));
    const Cidr odd6 = cidr("fc00::/7");
    CHECK(odd6.contains(ip("fc00::1")));
    CHECK(odd6.contains(ip("fdff::1")));
    CHECK_FALSE(odd6.contains(ip("fe00::1")));
  }

  TEST_CASE("Cidr: /0 matches every address of its own family only") {
    CHECK(cidr("0.0.0.0/0").contains(ip("255.255.255.255")));
    CHECK(cidr("0.0.0.0/0").contains(ip("0.0.0.0")));
    CHECK_FALSE(cidr("0.0.0.0/0").contains(ip("::1")));
    CHECK(cidr("::/0").contains(ip("ffff::1")));
    CHECK_FALSE(cidr("::/0").contains(ip("127.0.0.1")));
    CHECK_FALSE(cidr("::/0").contains(ip("::ffff:127.0.0.1")));  // that is IPv4
  }

  TEST_CASE("Cidr: host bits, prefix range and junk are rejected") {
    CHECK_FALSE(Cidr::parse("10.0.0.1/8"));
    CHECK_FALSE(Cidr::parse("2001:db8::1/32"));
    CHECK_FALSE(Cidr::parse("fd00::/7"));  // fd00 has the 8th bit set
    CHECK_FALSE(Cidr::parse("10.0.0.0/33"));
    CHECK_FALSE(Cidr::parse("::/129"));
    CHECK_FALSE(Cidr::parse("10.0.0.0/"));
    CHECK_FALSE(Cidr::parse("10.0.0.0/-1"));
    CHECK_FALSE(Cidr::parse("10.0.0.0/8/8"));
    CHECK_FALSE(Cidr::parse("10.0.0.0/ 8"));
    CHECK_FALSE(Cidr::parse("/8"));
    CHECK_FALSE(Cidr::parse("example.com/8"));
  }

  TEST_CASE("Cidr: IPv4-mapped ranges become IPv4 ranges") {
    CHECK(cidr("::ffff:10.0.0.0/104") == cidr("10.0.0.0/8"));
    CHECK(cidr("::ffff:10.1.2.3") == cidr("10.1.2.3/32"));
    CHECK(cidr("::ffff:0.0.0.0/96") == cidr("0.0.0.0/0"));
    CHECK_FALSE(Cidr::parse("::ffff:0:0/80"));  // the ffff marker would be host bits
    CHECK(cidr("10.0.0.0/8").to_string() == "10.0.0.0/8");
    CHECK(cidr("2001:db8::/32").to_string() == "2001:db8::/32");
  }

  TEST_CASE("parse_cidr_list for trusted proxies") {
    auto r = parse_cidr_list("10.0.0.0/8, 192.0.2.1 ,::1,2001:db8::/32");
    REQUIRE(std::holds_alternative<std::vector<Cidr>>(r));
    const auto& list = std::get<std::vector<Cidr>>(r);
    REQUIRE(list.size() == 4);
    CHECK(list[0] == cidr("10.0.0.0/8"));
    CHECK(list[1] == cidr("192.0.2.1/32"));
    CHECK(list[2] == cidr("::1/128"));
    CHECK(list[3] == cidr("2001:db8::/32"));

    auto empty = parse_cidr_list("  ");
    REQUIRE(std::holds_alternative<std::vector<Cidr>>(empty));
    CHECK(std::get<std::vector<Cidr>>(empty).empty());

    auto bad = parse_cidr_list("10.0.0.0/8,proxy.example.com");
    REQUIRE(std::holds_alternative<std::string>(bad));
    CHECK(std::get<std::string>(bad) == "'proxy.example.com' is not a valid IP address");
    bad = parse_cidr_list("10.0.0.0/8,,::1");
    REQUIRE(std::holds_alternative<std::string>(bad));
    CHECK(std::get<std::string>(bad) == "empty entry in list '10.0.0.0/8,,::1'");
    bad = parse_cidr_list("10.0.0.1/8");
    REQUIRE(std::holds_alternative<std::string>(bad));
    CHECK(std::get<std::string>(bad) ==
          "'10.0.0.1/8' has host bits set below the /8 prefix: write 10.0.0.0/8 for the "
          "network, or 10.0.0.1 for the single host");
  }

  TEST_CASE("RuleError::to_string") {
    CHECK(RuleError{"hosts/target-hosts", 7, "port 70000 out of range 1-65535"}.to_string() ==
          "hosts/target-hosts:7: port 70000 out of range 1-65535");
    CHECK(RuleError{"--target", 0, "missing HOST:PORT"}.to_string() == "--target: missing HOST:PORT");
    CHECK(RuleError{"", 0, "oops"}.to_string() == "oops");
  }
}

// ---------------------------------------------------------------------------
TEST_SUITE("access.allowed-hosts") {
  TEST_CASE("every syntax form parses") {
    const AllowedHosts a = allowed(
        "# who may open tunnels\n"
        "\n"
        "   \t \n"
        "127.0.0.1\n"
        "allow 10.0.0.0/8      # office\n"
        "deny 10.0.66.0/24\n"
        "ALLOW ::1\n"
        "allow 2001:db8::/32\n"
        "deny *\n"
        "allow *\n"
        "allow gateway.example.com\n"
        "deny LAPTOP.Example.com.\n"
        "origin https://app.example.com\n"
        "allow origin https://*.example.com:8443\n"
        "deny origin http://evil.example.com\n"
        "allow origin null\n"
        "deny origin *\n"
        "allow origin http://[::1]:8080\n"
        "allow origin http://192.0.2.1\n"
        "allow 198.51.100.7\r\n");
    CHECK(a.rule_count() == 17);
    const auto names = a.names();
    REQUIRE(names.size() == 2);
    CHECK(names[0].name == "gateway.example.com");
    CHECK(names[0].where == "hosts/allowed-hosts:11");
    CHECK(names[1].name == "laptop.example.com");
    CHECK(names[1].where == "hosts/allowed-hosts:12");
  }

  TEST_CASE("an empty file or comments only: every address allowed") {
    for (const char* text : {"", "\n\n", "# nothing here\n   # indented comment\n"}) {
      const AllowedHosts a = allowed(text);
      CHECK(a.rule_count() == 0);
      CHECK(a.check_address(ip("203.0.113.9")).allowed);
      CHECK(a.check_address(ip("2001:db8::9")).allowed);
    }
  }

  TEST_CASE("errors name file, line and the problem") {
    CHECK(allowed_error("# ok\n\n10.0.0.0/33\n") ==
          "hosts/allowed-hosts:3: prefix /33 out of range 0-32 for IPv4");
    CHECK(allowed_error("::/129\n") ==
          "hosts/allowed-hosts:1: prefix /129 out of range 0-128 for IPv6");
    CHECK(allowed_error("10.0.0.0/x\n") ==
          "hosts/allowed-hosts:1: '/x' is not a prefix length (0-32)");
    CHECK(allowed_error("allow 10.0.0.1/8\n") ==
          "hosts/allowed-hosts:1: '10.0.0.1/8' has host bits set below the /8 prefix: write "
          "10.0.0.0/8 for the network, or 10.0.0.1 for the single host");
    CHECK(allowed_error("1.2.3.256\n") ==
          "hosts/allowed-hosts:1: '1.2.3.256' is not a valid IPv4 address (four decimal numbers "
          "0-255, no leading zeros)");
    CHECK(allowed_error("10.1\n") ==
          "hosts/allowed-hosts:1: '10.1' is not a valid IPv4 address (four decimal numbers "
          "0-255, no leading zeros)");
    CHECK(allowed_error("allow 2001:db8::g\n") ==
          "hosts/allowed-hosts:1: '2001:db8::g' is not a valid IP address");
    CHECK(allowed_error("allow\n") ==
          "hosts/allowed-hosts:1: 'allow' needs an address, CIDR range, host name, '*' or "
          "'origin ORIGIN'");
    CHECK(allowed_error("\nDENY   # nothing\n") ==
          "hosts/allowed-hosts:2: 'deny' needs an address, CIDR range, host name, '*' or "
          "'origin ORIGIN'");
    CHECK(allowed_error("permit 10.0.0.1\n") ==
          "hosts/allowed-hosts:1: unknown keyword 'permit' (expected allow, deny or origin)");
    CHECK(allowed_error("allow 10.0.0.1 10.0.0.2\n") ==
          "hosts/allowed-hosts:1: unexpected '10.0.0.2' after '10.0.0.1' (one address per line)");
    CHECK(allowed_error("allow [::1]\n") ==
          "hosts/allowed-hosts:1: write IPv6 addresses without brackets in allowed-hosts (e.g. "
          "::1, 2001:db8::/32), not '[::1]'");
    CHECK(allowed_error("allow 10.0.0.1:80\n") ==
          "hosts/allowed-hosts:1: allowed-hosts entries take no port: '10.0.0.1:80'");
    CHECK(allowed_error("allow *.example.com\n") ==
          "hosts/allowed-hosts:1: wildcards are not supported for addresses: '*.example.com' "
          "(clients are matched by IP; use a CIDR range, a host name, or '*')");
    CHECK(allowed_error("allow bad_host!\n") ==
          "hosts/allowed-hosts:1: 'bad_host!' is not an IP address, CIDR range, '*' or valid "
          "host name");
    CHECK(allowed_error("allow -bad.example.com\n") ==
          "hosts/allowed-hosts:1: '-bad.example.com' is not an IP address, CIDR range, '*' or "
          "valid host name");
    CHECK(allowed_error("allow a#b\n") ==
          "hosts/allowed-hosts:1: 'a#b' is not an IP address, CIDR range, '*' or valid host name");
  }

  TEST_CASE("origin rule errors") {
    CHECK(allowed_error("origin\n") ==
          "hosts/allowed-hosts:1: 'origin' needs an origin such as https://example.com, "
          "https://*.example.com, '*' or 'null'");
    CHECK(allowed_error("allow origin\n") ==
          "hosts/allowed-hosts:1: 'origin' needs an origin such as https://example.com, "
          "https://*.example.com, '*' or 'null'");
    CHECK(allowed_error("origin example.com\n") ==
          "hosts/allowed-hosts:1: malformed origin 'example.com': expected scheme://host[:port]");
    CHECK(allowed_error("origin https://example.com/\n") ==
          "hosts/allowed-hosts:1: origin 'https://example.com/' must not have a path: write "
          "scheme://host[:port]");
    CHECK(allowed_error("origin https://user@example.com\n") ==
          "hosts/allowed-hosts:1: origin 'https://user@example.com' must not contain a user name");
    CHECK(allowed_error("origin https://example.com:70000\n") ==
          "hosts/allowed-hosts:1: origin 'https://example.com:70000': port 70000 out of range "
          "1-65535");
    CHECK(allowed_error("origin https://example.com:\n") ==
          "hosts/allowed-hosts:1: origin 'https://example.com:': missing port number");
    CHECK(allowed_error("origin https://ex*ample.com\n") ==
          "hosts/allowed-hosts:1: origin 'https://ex*ample.com': 'ex*ample.com' is not a valid "
          "host ('*' only as a leading '*.')");
    CHECK(allowed_error("origin https://[10.0.0.1]\n") ==
          "hosts/allowed-hosts:1: origin 'https://[10.0.0.1]': brackets must hold an IPv6 "
          "address");
    CHECK(allowed_error("origin https://a.example.com https://b.example.com\n") ==
          "hosts/allowed-hosts:1: unexpected 'https://b.example.com' after the origin");
  }

  TEST_CASE("deny always wins, whatever the order") {
    const char* orders[] = {
        "allow 10.0.0.0/8\ndeny 10.0.66.0/24\n",
        "deny 10.0.66.0/24\nallow 10.0.0.0/8\n",
    };
    for (const char* text : orders) {
      const AllowedHosts a = allowed(text);
      CHECK(a.check_address(ip("10.1.2.3")).allowed);
      const Decision d = a.check_address(ip("10.0.66.1"));
      CHECK_FALSE(d.allowed);
      CHECK(d.reason.starts_with("denied by hosts/allowed-hosts:"));
      CHECK_FALSE(a.check_address(ip("192.0.2.1")).allowed);
    }
    // A deny of a single host inside an allow-everything.
    const AllowedHosts b = allowed("allow *\ndeny 203.0.113.5\n");
    CHECK(b.check_address(ip("203.0.113.4")).allowed);
    CHECK(b.check_address(ip("2001:db8::1")).allowed);
    CHECK_FALSE(b.check_address(ip("203.0.113.5")).allowed);
    // deny * beats everything.
    const AllowedHosts c = allowed("allow 127.0.0.1\ndeny *\n");
    CHECK(c.check_address(ip("127.0.0.1")).reason == "denied by hosts/allowed-hosts:2");
  }

  TEST_CASE("decision reasons") {
    const AllowedHosts a = allowed("# comment\nallow 10.0.0.0/8\n\ndeny 10.0.0.5\n");
    CHECK(a.check_address(ip("10.0.0.5")).reason == "denied by hosts/allowed-hosts:4");
    CHECK(a.check_address(ip("10.0.0.6")).reason == "allowed by hosts/allowed-hosts:2");
    CHECK(a.check_address(ip("11.0.0.6")).reason == "no allow rule matches (hosts/allowed-hosts)");
  }

  TEST_CASE("only deny rules: every other address is allowed") {
    const AllowedHosts a = allowed("deny 192.0.2.0/24\ndeny 2001:db8::/32\n");
    CHECK_FALSE(a.check_address(ip("192.0.2.77")).allowed);
    CHECK_FALSE(a.check_address(ip("2001:db8::77")).allowed);
    CHECK(a.check_address(ip("198.51.100.1")).allowed);
    CHECK(a.check_address(ip("2001:db9::1")).allowed);
  }

  TEST_CASE("origin rules alone do not restrict addresses") {
    const AllowedHosts a = allowed("allow origin https://app.example.com\n");
    CHECK(a.check_address(ip("203.0.113.1")).allowed);
  }

  TEST_CASE("IPv4-mapped IPv6 clients match IPv4 rules") {
    const AllowedHosts a = allowed("allow 127.0.0.0/8\ndeny 127.0.0.2\n");
    CHECK(a.check_address(ip("::ffff:127.0.0.1")).allowed);
    CHECK_FALSE(a.check_address(ip("::ffff:127.0.0.2")).allowed);
    // An un-normalised mapped address built by hand is normalised by the check too.
    IpAddress raw;
    raw.family = IpAddress::Family::V6;
    raw.bytes = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
    CHECK(a.check_address(raw).allowed);
    // A mapped rule is an IPv4 rule.
    const AllowedHosts b = allowed("allow ::ffff:192.0.2.0/120\n");
    CHECK(b.check_address(ip("192.0.2.200")).allowed);
    CHECK_FALSE(b.check_address(ip("192.0.3.1")).allowed);
  }

  TEST_CASE("IPv6 rules written plain") {
    const AllowedHosts a = allowed("allow ::1\nallow 2001:db8::/32\n");
    CHECK(a.check_address(ip("::1")).allowed);
    CHECK(a.check_address(ip("2001:db8:1::1")).allowed);
    CHECK_FALSE(a.check_address(ip("2001:db9::1")).allowed);
    CHECK_FALSE(a.check_address(ip("127.0.0.1")).allowed);
  }

  TEST_CASE("/0 and * rules") {
    const AllowedHosts v4 = allowed("allow 0.0.0.0/0\n");
    CHECK(v4.check_address(ip("203.0.113.1")).allowed);
    CHECK_FALSE(v4.check_address(ip("2001:db8::1")).allowed);
    const AllowedHosts any = allowed("*\n");
    CHECK(any.check_address(ip("203.0.113.1")).allowed);
    CHECK(any.check_address(ip("2001:db8::1")).allowed);
  }

  TEST_CASE("host names match the addresses they resolved to") {
    AllowedHosts a = allowed("allow gateway.example.com\ndeny Laptop.Example.COM.\n");
    // Before resolution a name matches nothing; it is still an allow rule.
    CHECK_FALSE(a.check_address(ip("192.0.2.1")).allowed);
    a.set_resolved("GATEWAY.example.com.", {ip("192.0.2.1"), ip("2001:db8::1")});
    a.set_resolved("laptop.example.com", {ip("::ffff:192.0.2.9")});
    CHECK(a.check_address(ip("192.0.2.1")).allowed);
    CHECK(a.check_address(ip("2001:db8::1")).allowed);
    CHECK_FALSE(a.check_address(ip("192.0.2.2")).allowed);
    CHECK(a.check_address(ip("192.0.2.9")).reason == "denied by hosts/allowed-hosts:2");
    // A later resolution replaces the earlier one.
    a.set_resolved("gateway.example.com", {ip("192.0.2.3")});
    CHECK_FALSE(a.check_address(ip("192.0.2.1")).allowed);
    CHECK(a.check_address(ip("192.0.2.3")).allowed);
  }

  TEST_CASE("resolve_names: resolvable names match, others are warnings") {
    AllowedHosts a = allowed("allow localhost\nallow no-such-host.invalid\n");
    std::vector<std::string> warnings;
    resolve_names(a, warnings);
    CHECK(a.check_address(ip("127.0.0.1")).allowed);
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].starts_with(
        "hosts/allowed-hosts:2: cannot resolve 'no-such-host.invalid': "));
    CHECK(warnings[0].ends_with("; the rule matches no address until the next reload"));
  }

  TEST_CASE("an allow list whose only name did not resolve admits nobody") {
    AllowedHosts a = allowed("allow no-such-host.invalid\n");
    std::vector<std::string> warnings;
    resolve_names(a, warnings);
    CHECK(warnings.size() == 1);
    CHECK_FALSE(a.check_address(ip("127.0.0.1")).allowed);
  }

  TEST_CASE("origin: absent header (non-browser client) is allowed") {
    const AllowedHosts a = allowed("deny origin *\n");
    CHECK(a.check_origin(std::nullopt, "netwine.test", false).allowed);
    CHECK(a.check_origin(std::nullopt, "netwine.test", false).reason == "no Origin header");
  }

  TEST_CASE("origin: same origin, default ports, case") {
    const AllowedHosts a = allowed("");
    CHECK(origin_ok(a, "http://netwine.test", "netwine.test"));
    CHECK(origin_ok(a, "http://netwine.test", "netwine.test:80"));
    CHECK(origin_ok(a, "http://netwine.test:80", "netwine.test"));
    CHECK(origin_ok(a, "HTTP://NetWine.Test", "netwine.TEST"));
    CHECK(origin_ok(a, "http://netwine.test", "netwine.test."));
    CHECK(origin_ok(a, "http://netwine.test:8080", "netwine.test:8080"));
    CHECK(origin_ok(a, "https://netwine.test", "netwine.test", true));
    CHECK(origin_ok(a, "https://netwine.test:443", "netwine.test", true));
    CHECK(origin_ok(a, "https://netwine.test", "netwine.test:443", true));
    CHECK(origin_ok(a, "http://[::1]:8080", "[::1]:8080"));
    CHECK(origin_ok(a, "http://[0:0::1]:8080", "[::1]:8080"));
    CHECK(origin_ok(a, "http://127.0.0.1:8080", "127.0.0.1:8080"));
    CHECK(a.check_origin("http://netwine.test", "netwine.test", false).reason == "same origin");
    // Different port, scheme or host is another origin.
    CHECK_FALSE(origin_ok(a, "http://netwine.test:8080", "netwine.test"));
    CHECK_FALSE(origin_ok(a, "http://netwine.test", "netwine.test:8080"));
    CHECK_FALSE(origin_ok(a, "http://netwine.test", "netwine.test", true));
    CHECK_FALSE(origin_ok(a, "https://netwine.test", "netwine.test", false));
    CHECK_FALSE(origin_ok(a, "https://netwine.test:80", "netwine.test", true));
    CHECK_FALSE(origin_ok(a, "http://evil.test", "netwine.test"));
    CHECK_FALSE(origin_ok(a, "http://netwine.test.evil.test", "netwine.test"));
    // Without a usable Host header nothing is same-origin.
    CHECK_FALSE(origin_ok(a, "http://netwine.test", ""));
    CHECK_FALSE(origin_ok(a, "http://netwine.test", "netwine.test/x"));
    const Decision d = a.check_origin("http://evil.test", "netwine.test", false);
    CHECK(d.reason ==
          "origin http://evil.test not allowed (add 'allow origin http://evil.test' to "
          "hosts/allowed-hosts)");
  }

  TEST_CASE("origin: malformed headers are refused") {
    const AllowedHosts a = allowed("origin *\n");
    for (const char* bad : {"", "netwine.test", "http://", "http://netwine.test/",
                            "http://netwine.test:0", "http://netwine.test:x", "http://*.test",
                            "http://a b", "http://[::1", "//netwine.test"}) {
      const Decision d = a.check_origin(bad, "netwine.test", false);
      CHECK_MESSAGE(!d.allowed, bad);
      CHECK_MESSAGE(d.reason == "malformed Origin header", bad);
    }
  }

  TEST_CASE("origin: allow rules, exact and wildcard") {
    const AllowedHosts a = allowed(
        "origin https://app.example.com\n"
        "allow origin https://*.example.org\n"
        "allow origin http://*.dev.example.net:8080\n"
        "allow origin http://localhost:3000\n");
    CHECK(origin_ok(a, "https://app.example.com"));
    CHECK(origin_ok(a, "https://APP.example.com:443"));
    CHECK(a.check_origin("https://app.example.com", "netwine.test", false).reason ==
          "origin allowed by hosts/allowed-hosts:1");
    CHECK_FALSE(origin_ok(a, "http://app.example.com"));        // scheme
    CHECK_FALSE(origin_ok(a, "https://app.example.com:8443"));  // port
    CHECK_FALSE(origin_ok(a, "https://x.app.example.com"));     // exact means exact

    CHECK(origin_ok(a, "https://sub.example.org"));
    CHECK(origin_ok(a, "https://a.b.example.org"));
    CHECK(origin_ok(a, "https://Sub.Example.ORG"));
    CHECK_FALSE(origin_ok(a, "https://example.org"));     // the apex is not a subdomain
    CHECK_FALSE(origin_ok(a, "https://badexample.org"));  // a suffix is not a subdomain
    CHECK_FALSE(origin_ok(a, "http://sub.example.org"));
    CHECK_FALSE(origin_ok(a, "https://sub.example.org:8443"));

    CHECK(origin_ok(a, "http://x.dev.example.net:8080"));
    CHECK_FALSE(origin_ok(a, "http://x.dev.example.net"));

    CHECK(origin_ok(a, "http://localhost:3000"));
    CHECK_FALSE(origin_ok(a, "http://localhost:3001"));
  }

  TEST_CASE("origin: null needs an explicit allow") {
    const AllowedHosts none = allowed("origin *\n");
    CHECK_FALSE(origin_ok(none, "null"));
    CHECK(none.check_origin("null", "netwine.test", false).reason ==
          "origin null is only allowed by 'allow origin null'");
    const AllowedHosts yes = allowed("allow origin null\n");
    CHECK(origin_ok(yes, "null"));
    CHECK(origin_ok(yes, "NULL"));
    const AllowedHosts denied = allowed("deny origin null\nallow origin null\n");
    CHECK_FALSE(origin_ok(denied, "null"));
    CHECK(denied.check_origin("null", "netwine.test", false).reason ==
          "origin null denied by hosts/allowed-hosts:1");
  }

  TEST_CASE("origin: * allows every origin but null") {
    const AllowedHosts a = allowed("origin *\n");
    CHECK(origin_ok(a, "https://anything.test:1234"));
    CHECK(origin_ok(a, "chrome-extension://abcdef"));
    CHECK_FALSE(origin_ok(a, "null"));
  }

  TEST_CASE("origin: deny wins over allow and over same origin") {
    const AllowedHosts a = allowed(
        "allow origin https://*.example.com\n"
        "deny origin https://evil.example.com\n");
    CHECK(origin_ok(a, "https://good.example.com"));
    CHECK_FALSE(origin_ok(a, "https://evil.example.com"));
    CHECK(a.check_origin("https://evil.example.com", "x", false).reason ==
          "origin denied by hosts/allowed-hosts:2");
    CHECK_FALSE(origin_ok(a, "https://evil.example.com", "evil.example.com", true));

    const AllowedHosts b = allowed("deny origin *\nallow origin https://app.example.com\n");
    CHECK_FALSE(origin_ok(b, "https://app.example.com"));
    CHECK_FALSE(origin_ok(b, "http://netwine.test", "netwine.test"));
    CHECK(b.check_origin(std::nullopt, "netwine.test", false).allowed);
  }
}

// ---------------------------------------------------------------------------
TEST_SUITE("access.target-hosts") {
  TEST_CASE("every syntax form parses") {
    const TargetHosts t = targets(
        "# where tunnels may go\n"
        "\n"
        "localhost:5900\n"
        "allow 10.0.0.0/8:22      # ssh inside\n"
        "deny [fd00::]/8:*\n"
        "[::1]:5900\n"
        "[2001:db8::]/32:22\n"
        "allow [2001:db8:1::/48]:22\n"
        "*.example.com:443\n"
        "allow *:80\n"
        "db.example.com:22,80,443\n"
        "vnc.example.com:22,5900-5910\n"
        "Deny 169.254.169.254:*\n"
        "tls://secure.example.com:443\n"
        "tcp://plain.example.com:23\n"
        "TLS://[2001:db8::7]:993\n"
        "desktop = 10.0.0.7:5900\n"
        "printer=192.0.2.3:9100\n"
        "vault = tls://vault.example.com:8200\n"
        "token1: 10.0.0.8:5901\n"
        "token2:10.0.0.9:5902\n"
        "token_3.x-y: [::1]:5903\n"
        "token4:[2001:db8::4]:5904\r\n"
        "example.com.:8443\n");
    CHECK(t.rule_count() == 15);
    CHECK(t.named_count() == 7);
    CHECK_FALSE(t.empty());
  }

  TEST_CASE("errors name file, line and the problem") {
    struct Case {
      const char* text;
      const char* error;
    };
    const Case cases[] = {
        {"# c\n\n\n\n\n\nhost.example.com:70000\n",
         "hosts/target-hosts:7: port 70000 out of range 1-65535"},
        {"host:0\n", "hosts/target-hosts:1: port 0 out of range 1-65535"},
        {"host:9999999\n", "hosts/target-hosts:1: port 9999999 out of range 1-65535"},
        {"host:99999999999999999999999\n",
         "hosts/target-hosts:1: port 99999999999999999999999 out of range 1-65535"},
        {"host:5910-5900\n", "hosts/target-hosts:1: port range 5910-5900 is reversed"},
        {"host:22,,80\n", "hosts/target-hosts:1: empty entry in port list '22,,80'"},
        {"host:22,\n", "hosts/target-hosts:1: empty entry in port list '22,'"},
        {"host:22,*\n", "hosts/target-hosts:1: '*' cannot be combined with other ports in '22,*'"},
        {"host:ssh\n", "hosts/target-hosts:1: 'ssh' is not a port number"},
        {"host:5900-\n", "hosts/target-hosts:1: missing port number"},
        {"host:\n",
         "hosts/target-hosts:1: missing port after ':' (write HOST:PORT, or HOST:* for every "
         "port)"},
        {"allow host.example.com\n",
         "hosts/target-hosts:1: missing port in 'host.example.com' (write HOST:PORT, or HOST:* "
         "for every port)"},
        {"allow ::1:22\n",
         "hosts/target-hosts:1: IPv6 addresses must be in brackets, e.g. [::1]:22, not '::1:22'"},
        {"[::1:22\n", "hosts/target-hosts:1: missing ']' in '[::1:22'"},
        {"[::1]\n",
         "hosts/target-hosts:1: missing port after '[::1]' (write [IPV6]:PORT, or [IPV6]:* for "
         "every port)"},
        {"[::1]22\n", "hosts/target-hosts:1: expected ':' and a port after ']' in '[::1]22'"},
        {"[10.0.0.1]:22\n",
         "hosts/target-hosts:1: brackets are only for IPv6 addresses: write 10.0.0.1 without them"},
        {"[fe80::1%eth0]:22\n", "hosts/target-hosts:1: 'fe80::1%eth0' is not a valid IPv6 address"},
        {":22\n", "hosts/target-hosts:1: missing host in ':22'"},
        {"foo*.example.com:22\n",
         "hosts/target-hosts:1: 'foo*.example.com': '*' is only allowed alone or as a leading "
         "'*.' (e.g. *.example.com)"},
        {"*.*.example.com:22\n",
         "hosts/target-hosts:1: '*.*.example.com' is not a valid wildcard (write *.example.com)"},
        {"bad_host!:22\n", "hosts/target-hosts:1: 'bad_host!' is not a valid host name"},
        {"10.1:22\n",
         "hosts/target-hosts:1: '10.1' is not a valid IPv4 address (four decimal numbers 0-255, no "
         "leading zeros)"},
        {"10.0.0.1/8:22\n",
         "hosts/target-hosts:1: '10.0.0.1/8' has host bits set below the /8 prefix: write "
         "10.0.0.0/8 for the network, or 10.0.0.1 for the single host"},
        {"10.0.0.0/40:22\n", "hosts/target-hosts:1: prefix /40 out of range 0-32 for IPv4"},
        {"[fd00::]/200:22\n", "hosts/target-hosts:1: prefix /200 out of range 0-128 for IPv6"},
        {"example.com/8:22\n", "hosts/target-hosts:1: 'example.com' is not a valid IP address"},
        {"udp://dns.example.com:53\n", "hosts/target-hosts:1: udp:// targets are not supported yet"},
        {"unix:/run/app.sock\n", "hosts/target-hosts:1: unix: targets are not supported yet"},
        {"allow ftp://host:21\n",
         "hosts/target-hosts:1: unknown scheme 'ftp://' (supported: tcp://, tls://)"},
        {"permit host:22\n",
         "hosts/target-hosts:1: unknown keyword 'permit' (expected allow, deny, NAME = HOST:PORT "
         "or TOKEN: HOST:PORT)"},
        {"allow host:22 host:23\n",
         "hosts/target-hosts:1: unexpected 'host:23' after 'host:22' (no spaces inside a rule; "
         "lists are comma-separated)"},
        {"allow host:22, 80\n",
         "hosts/target-hosts:1: unexpected '80' after 'host:22,' (no spaces inside a rule; lists "
         "are comma-separated)"},
        {"allow\n", "hosts/target-hosts:1: 'allow' needs HOST:PORT"},
        {"deny\n", "hosts/target-hosts:1: 'deny' needs HOST:PORT"},
        {"= host:22\n", "hosts/target-hosts:1: missing name before '='"},
        {"my desk = host:22\n",
         "hosts/target-hosts:1: invalid name 'my desk' (use letters, digits, '_', '.' and '-')"},
        {"desk =\n", "hosts/target-hosts:1: name 'desk' needs HOST:PORT"},
        {"desk = host:22 extra\n", "hosts/target-hosts:1: unexpected 'extra' after 'host:22'"},
        {"desk = host:22,23\n",
         "hosts/target-hosts:1: name 'desk': a single port is needed here, not '22,23'"},
        {"desk = host:5900-5901\n",
         "hosts/target-hosts:1: name 'desk': a single port is needed here, not '5900-5901'"},
        {"desk = host:*\n",
         "hosts/target-hosts:1: name 'desk': a single port is needed here, not '*'"},
        {"desk = *.example.com:22\n",
         "hosts/target-hosts:1: name 'desk': a single host is needed here, not a wildcard"},
        {"desk = *:22\n",
         "hosts/target-hosts:1: name 'desk': a single host is needed here, not a wildcard"},
        {"desk = 10.0.0.0/8:22\n",
         "hosts/target-hosts:1: name 'desk': a single host is needed here, not a CIDR range"},
        {"desk = udp://host:53\n",
         "hosts/target-hosts:1: name 'desk': udp:// targets are not supported yet"},
        {"desk = host:22\n# again\ndesk = other:22\n",
         "hosts/target-hosts:3: name 'desk' is already defined at hosts/target-hosts:1"},
        {"tok: host:22\ntok:other:23\n",
         "hosts/target-hosts:2: token 'tok' is already defined at hosts/target-hosts:1"},
        {"tok: host\n",
         "hosts/target-hosts:1: token 'tok': missing port in 'host' (write HOST:PORT, or HOST:* for "
         "every port)"},
        {"tok: host:22 host:23\n", "hosts/target-hosts:1: unexpected 'host:23' after 'host:22'"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.text);
      CHECK(target_error(c.text) == c.error);
    }
  }

  TEST_CASE("port ranges, lists and *") {
    const TargetHosts t = targets(
        "vnc.example.com:5900-5910\n"
        "db.example.com:22,80,443\n"
        "mix.example.com:22,5900-5910\n"
        "any.example.com:*\n"
        "edge.example.com:1,65535\n");
    CHECK(t.name_allowed("vnc.example.com", 5900));
    CHECK(t.name_allowed("vnc.example.com", 5905));
    CHECK(t.name_allowed("vnc.example.com", 5910));
    CHECK_FALSE(t.name_allowed("vnc.example.com", 5899));
    CHECK_FALSE(t.name_allowed("vnc.example.com", 5911));

    CHECK(t.name_allowed("db.example.com", 22));
    CHECK(t.name_allowed("db.example.com", 80));
    CHECK(t.name_allowed("db.example.com", 443));
    CHECK_FALSE(t.name_allowed("db.example.com", 23));
    CHECK_FALSE(t.name_allowed("db.example.com", 8080));

    CHECK(t.name_allowed("mix.example.com", 22));
    CHECK(t.name_allowed("mix.example.com", 5910));
    CHECK_FALSE(t.name_allowed("mix.example.com", 23));
    CHECK_FALSE(t.name_allowed("mix.example.com", 5911));

    CHECK(t.name_allowed("any.example.com", 1));
    CHECK(t.name_allowed("any.example.com", 65535));

    CHECK(t.name_allowed("edge.example.com", 1));
    CHECK(t.name_allowed("edge.example.com", 65535));
    CHECK_FALSE(t.name_allowed("edge.example.com", 65534));
    CHECK(targets("zero.example.com:0022\n").name_allowed("zero.example.com", 22));
    CHECK_FALSE(t.name_allowed("edge.example.com", 2));
  }

  TEST_CASE("host names: case-insensitive, trailing dot ignored") {
    const TargetHosts t = targets("DB.Example.COM.:22\nhost.example.net:22\n");
    CHECK(t.name_allowed("db.example.com", 22));
    CHECK(t.name_allowed("DB.EXAMPLE.COM", 22));
    CHECK(t.name_allowed("db.example.com.", 22));
    CHECK(t.name_allowed("Host.Example.Net.", 22));
    CHECK_FALSE(t.name_allowed("db.example.co", 22));
    CHECK_FALSE(t.name_allowed("x.db.example.com", 22));
  }

  TEST_CASE("wildcard domains match subdomains only") {
    const TargetHosts t = targets("*.example.com:443\n");
    CHECK(t.name_allowed("sub.example.com", 443));
    CHECK(t.name_allowed("a.b.example.com", 443));
    CHECK(t.name_allowed("SUB.EXAMPLE.COM.", 443));
    CHECK_FALSE(t.name_allowed("example.com", 443));
    CHECK_FALSE(t.name_allowed("badexample.com", 443));
    CHECK_FALSE(t.name_allowed(".example.com", 443));
    CHECK_FALSE(t.name_allowed("sub.example.com.evil.net", 443));
    CHECK_FALSE(t.name_allowed("sub.example.com", 80));
  }

  TEST_CASE("* host matches every host and address") {
    const TargetHosts t = targets("*:80\n");
    CHECK(t.name_allowed("anything.test", 80));
    CHECK_FALSE(t.name_allowed("anything.test", 81));
    CHECK(connect_ok(t, "203.0.113.1", 80));
    CHECK(connect_ok(t, "2001:db8::1", 80));
    CHECK_FALSE(connect_ok(t, "203.0.113.1", 443));
  }

  TEST_CASE("address and CIDR rules match the resolved address") {
    const TargetHosts t = targets(
        "10.0.0.0/8:22\n"
        "192.0.2.5:5900\n"
        "[::1]:5900\n"
        "[2001:db8::]/32:22\n"
        "[fd00::/8]:443\n"
        "0.0.0.0/0:7\n"
        "[::]/0:9\n");
    CHECK(connect_ok(t, "10.0.0.0", 22));
    CHECK(connect_ok(t, "10.255.255.255", 22));
    CHECK_FALSE(connect_ok(t, "11.0.0.0", 22));
    CHECK_FALSE(connect_ok(t, "10.0.0.1", 23));
    CHECK(connect_ok(t, "192.0.2.5", 5900));
    CHECK_FALSE(connect_ok(t, "192.0.2.6", 5900));
    CHECK(connect_ok(t, "::1", 5900));
    CHECK_FALSE(connect_ok(t, "::2", 5900));
    CHECK(connect_ok(t, "2001:db8:ffff::1", 22));
    CHECK_FALSE(connect_ok(t, "2001:db9::1", 22));
    CHECK(connect_ok(t, "fdab::1", 443));
    CHECK(connect_ok(t, "198.51.100.1", 7));
    CHECK_FALSE(connect_ok(t, "2001:db9::1", 7));
    CHECK(connect_ok(t, "2001:db9::1", 9));
    CHECK_FALSE(connect_ok(t, "198.51.100.1", 9));
    // Address rules do not make names allowed by themselves.
    CHECK_FALSE(t.name_allowed("10.0.0.1", 22));
  }

  TEST_CASE("IPv4-mapped IPv6 matches IPv4 rules") {
    const TargetHosts t = targets("allow 10.0.0.0/8:22\ndeny 10.9.9.9:22\n");
    CHECK(t.check_connect("::ffff:10.0.0.1", ip("::ffff:10.0.0.1"), 22, false).allowed);
    IpAddress raw;
    raw.family = IpAddress::Family::V6;
    raw.bytes = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 9, 9, 9};
    CHECK_FALSE(t.check_connect("host.example.com", raw, 22, false).allowed);
  }

  TEST_CASE("deny beats allow regardless of order") {
    const char* orders[] = {
        "*.example.com:*\ndeny secret.example.com:*\n10.0.0.0/8:*\ndeny 10.1.0.0/16:22\n",
        "deny 10.1.0.0/16:22\ndeny secret.example.com:*\n10.0.0.0/8:*\n*.example.com:*\n",
    };
    for (const char* text : orders) {
      CAPTURE(text);
      const TargetHosts t = targets(text);
      CHECK(t.name_allowed("www.example.com", 443));
      CHECK_FALSE(t.name_allowed("secret.example.com", 443));
      CHECK_FALSE(t.name_allowed("SECRET.example.com.", 443));
      CHECK(connect_ok(t, "10.2.0.1", 22));
      CHECK_FALSE(connect_ok(t, "10.1.0.1", 22));
      CHECK(connect_ok(t, "10.1.0.1", 80));  // the deny is for port 22 only
      const Decision d = t.check_connect("secret.example.com", ip("198.51.100.1"), 443, false);
      CHECK_FALSE(d.allowed);
      CHECK(d.reason.starts_with("denied by hosts/target-hosts:"));
    }
    const TargetHosts all = targets("*:*\ndeny *:25\n");
    CHECK(all.name_allowed("mail.example.com", 24));
    CHECK_FALSE(all.name_allowed("mail.example.com", 25));
    CHECK_FALSE(connect_ok(all, "198.51.100.1", 25));
  }

  TEST_CASE("check_connect: a name resolving into a denied range is refused (DNS rebinding)") {
    const TargetHosts t = targets(
        "*.example.com:443\n"
        "deny 127.0.0.0/8:*\n"
        "deny [::1]:*\n"
        "deny 169.254.169.254:*\n");
    CHECK(t.check_connect("www.example.com", ip("198.51.100.10"), 443, false).allowed);
    const Decision d = t.check_connect("rebind.example.com", ip("127.0.0.1"), 443, false);
    CHECK_FALSE(d.allowed);
    CHECK(d.reason == "denied by hosts/target-hosts:2");
    CHECK_FALSE(t.check_connect("rebind.example.com", ip("::1"), 443, false).allowed);
    CHECK_FALSE(t.check_connect("rebind.example.com", ip("::ffff:127.0.0.1"), 443, false).allowed);
    CHECK_FALSE(t.check_connect("meta.example.com", ip("169.254.169.254"), 443, false).allowed);
    // Named targets are subject to deny rules too.
    CHECK_FALSE(t.check_connect("www.example.com", ip("127.0.0.1"), 443, true).allowed);
  }

  TEST_CASE("check_connect: with only address rules a name resolving elsewhere is refused") {
    const TargetHosts t = targets("10.0.0.0/8:22\n");
    CHECK(t.check_connect("build.internal", ip("10.1.2.3"), 22, false).allowed);
    CHECK(t.check_connect("build.internal", ip("10.1.2.3"), 22, false).reason ==
          "allowed by hosts/target-hosts:1");
    const Decision d = t.check_connect("build.internal", ip("198.51.100.1"), 22, false);
    CHECK_FALSE(d.allowed);
    CHECK(d.reason == "no target rule allows build.internal port 22 (address 198.51.100.1)");
  }

  TEST_CASE("check_connect: a name rule allows whatever address the name has") {
    const TargetHosts t = targets("db.example.com:5432\n");
    CHECK(t.check_connect("db.example.com", ip("10.0.0.1"), 5432, false).allowed);
    CHECK(t.check_connect("db.example.com", ip("2001:db8::1"), 5432, false).allowed);
    CHECK_FALSE(t.check_connect("db.example.com", ip("10.0.0.1"), 5433, false).allowed);
    CHECK_FALSE(t.check_connect("other.example.com", ip("10.0.0.1"), 5432, false).allowed);
  }

  TEST_CASE("named targets and tokens") {
    const TargetHosts t = targets(
        "desktop = 10.0.0.7:5900\n"
        "vault = TLS://Vault.Example.com.:8200\n"
        "tok-1: [::ffff:10.0.0.8]:5901\n"
        "tok2:[2001:DB8::2]:5902\n");
    TargetRequest r = request(t, "desktop");
    CHECK(r.named);
    CHECK(r.name == "desktop");
    CHECK(r.host == "10.0.0.7");
    CHECK(r.port == 5900);
    CHECK(r.scheme == Scheme::Tcp);

    r = request(t, "vault");
    CHECK(r.scheme == Scheme::Tls);
    CHECK(r.host == "vault.example.com");
    CHECK(r.port == 8200);

    r = request(t, "tok-1");
    CHECK(r.named);
    CHECK(r.host == "10.0.0.8");
    CHECK(r.port == 5901);

    r = request(t, "tok2");
    CHECK(r.host == "2001:db8::2");

    // Names are exact and case-sensitive.
    CHECK(request_error(t, "Desktop") ==
          "unknown target name 'Desktop' (expected a defined name or HOST:PORT)");
    // No allow rule, yet named targets connect; other targets do not.
    CHECK(t.check_connect("10.0.0.7", ip("10.0.0.7"), 5900, true).allowed);
    CHECK(t.check_connect("10.0.0.7", ip("10.0.0.7"), 5900, true).reason == "named target");
    CHECK_FALSE(t.check_connect("10.0.0.7", ip("10.0.0.7"), 5900, false).allowed);
    CHECK_FALSE(t.empty());
  }

  TEST_CASE("resolve_request: host:port forms") {
    const TargetHosts t = targets("");
    TargetRequest r = request(t, "Example.COM.:22");
    CHECK_FALSE(r.named);
    CHECK(r.host == "example.com");
    CHECK(r.port == 22);
    r = request(t, "192.0.2.1:65535");
    CHECK(r.host == "192.0.2.1");
    CHECK(r.port == 65535);
    r = request(t, "[::1]:5900");
    CHECK(r.host == "::1");
    r = request(t, "[::ffff:192.0.2.1]:1");
    CHECK(r.host == "192.0.2.1");
    r = request(t, "tls://db.example.com:5432");
    CHECK(r.scheme == Scheme::Tls);
    CHECK(r.host == "db.example.com");
    r = request(t, "tcp://db.example.com:5432");
    CHECK(r.scheme == Scheme::Tcp);
  }

  TEST_CASE("resolve_request: malformed targets") {
    const TargetHosts t = targets("");
    const std::string tail = " (expected HOST:PORT, [IPV6]:PORT or a target name)";
    CHECK(request_error(t, "host:0") == "malformed target 'host:0': port 0 out of range 1-65535" + tail);
    CHECK(request_error(t, "host:70000") ==
          "malformed target 'host:70000': port 70000 out of range 1-65535" + tail);
    CHECK(request_error(t, "host:22,23") ==
          "malformed target 'host:22,23': a single port is needed here, not '22,23'" + tail);
    CHECK(request_error(t, "host:*") ==
          "malformed target 'host:*': a single port is needed here, not '*'" + tail);
    CHECK(request_error(t, "*.example.com:22") ==
          "malformed target '*.example.com:22': a single host is needed here, not a wildcard" + tail);
    CHECK(request_error(t, "10.0.0.0/8:22") ==
          "malformed target '10.0.0.0/8:22': a single host is needed here, not a CIDR range" + tail);
    CHECK(request_error(t, "::1:22") ==
          "malformed target '::1:22': IPv6 addresses must be in brackets, e.g. [::1]:22, not "
          "'::1:22'" + tail);
    CHECK(request_error(t, "10.1:22") ==
          "malformed target '10.1:22': '10.1' is not a valid IPv4 address (four decimal numbers "
          "0-255, no leading zeros)" + tail);
    CHECK(request_error(t, "host") ==
          "unknown target name 'host' (expected a defined name or HOST:PORT)");
    CHECK(request_error(t, "") ==
          "malformed target '': missing HOST:PORT" + tail);
    CHECK(request_error(t, "udp://dns:53") ==
          "target 'udp://dns:53': udp:// targets are not supported yet");
    CHECK(request_error(t, "unix:/tmp/x") ==
          "target 'unix:/tmp/x': unix: targets are not supported yet");
    // Client input is echoed bounded and without control characters.
    const std::string evil = "bad\nhost\x1b:22" + std::string(200, 'a');
    const std::string e = request_error(t, evil);
    CHECK(e.starts_with("malformed target 'bad?host?:22aaa"));
    CHECK(e.find('\n') == std::string::npos);
    CHECK(e.size() < 300);
  }

  TEST_CASE("scheme: tls rules allow tls only; deny rules apply to every scheme") {
    const TargetHosts t = targets("tls://secure.example.com:443\nplain.example.com:443\n"
                                  "deny tcp://secure.example.com:8443\n"
                                  "tls://secure.example.com:8443\n");
    CHECK(t.name_allowed("secure.example.com", 443, Scheme::Tls));
    CHECK_FALSE(t.name_allowed("secure.example.com", 443, Scheme::Tcp));
    CHECK(t.name_allowed("plain.example.com", 443));
    CHECK_FALSE(t.name_allowed("plain.example.com", 443, Scheme::Tls));
    CHECK_FALSE(t.name_allowed("secure.example.com", 8443, Scheme::Tls));
    CHECK(t.check_connect("secure.example.com", ip("198.51.100.1"), 443, false, Scheme::Tls).allowed);
    CHECK_FALSE(t.check_connect("secure.example.com", ip("198.51.100.1"), 443, false).allowed);
  }

  TEST_CASE("empty(): no allow rule and no named target") {
    CHECK(targets("").empty());
    CHECK(targets("# only comments\n").empty());
    CHECK(targets("deny 10.0.0.0/8:*\n").empty());
    CHECK_FALSE(targets("host:22\n").empty());
    CHECK_FALSE(targets("tok: host:22\n").empty());
    CHECK_FALSE(targets("name = host:22\n").empty());
    CHECK_FALSE(targets("deny *:25\n*:*\n").empty());
  }

  TEST_CASE("add_allow and add_named") {
    TargetHosts t = targets("deny 127.0.0.2:*\n");
    CHECK(t.empty());
    CHECK_FALSE(t.add_allow("localhost:5900-5901"));
    CHECK_FALSE(t.add_allow("[::1]:5900"));
    CHECK_FALSE(t.add_allow(" 127.0.0.0/8:7000 "));
    CHECK_FALSE(t.empty());
    CHECK(t.name_allowed("localhost", 5901));
    CHECK(t.check_connect("127.0.0.1", ip("127.0.0.1"), 7000, false).reason ==
          "allowed by --target");
    CHECK_FALSE(t.check_connect("127.0.0.2", ip("127.0.0.2"), 7000, false).allowed);
    auto err = t.add_allow("localhost:99999");
    REQUIRE(err);
    CHECK(err->to_string() == "--target: port 99999 out of range 1-65535");
    err = t.add_allow("localhost", "--demo");
    REQUIRE(err);
    CHECK(err->to_string() ==
          "--demo: missing port in 'localhost' (write HOST:PORT, or HOST:* for every port)");

    CHECK_FALSE(t.add_named("demo", "127.0.0.1:7001", "demo service"));
    TargetRequest r = request(t, "demo");
    CHECK(r.named);
    CHECK(r.port == 7001);
    err = t.add_named("demo", "127.0.0.1:7002", "--target");
    REQUIRE(err);
    CHECK(err->to_string() == "--target: name 'demo' is already defined at demo service");
    err = t.add_named("bad name", "127.0.0.1:7002", "--target");
    REQUIRE(err);
    CHECK(err->to_string() ==
          "--target: invalid name 'bad name' (use letters, digits, '_', '.' and '-')");
  }
}

// ---------------------------------------------------------------------------
TEST_SUITE("access.tokens") {
  TEST_CASE("token text: forms") {
    TargetHosts t;
    auto err = t.load_token_text(
        "# websockify tokens\n"
        "\n"
        "alpha: 10.0.0.1:5900\n"
        "beta:10.0.0.2:5901\n"
        "gamma: [::1]:5902   # local\n"
        "delta :  host.example.com:5903\n"
        "eps.1-x_y: [2001:db8::9]:5904\r\n",
        "tokens.cfg");
    REQUIRE_FALSE(err);
    CHECK(t.named_count() == 5);
    CHECK(request(t, "alpha").host == "10.0.0.1");
    CHECK(request(t, "beta").port == 5901);
    CHECK(request(t, "gamma").host == "::1");
    CHECK(request(t, "delta").host == "host.example.com");
    CHECK(request(t, "eps.1-x_y").host == "2001:db8::9");
    CHECK(request(t, "alpha").named);
    CHECK_FALSE(t.empty());
  }

  TEST_CASE("token text: errors, and nothing is merged on error") {
    struct Case {
      const char* text;
      const char* error;
    };
    const Case cases[] = {
        {"ok: host:1\nno colon here\n",
         "tokens.cfg:2: expected 'TOKEN: HOST:PORT', got 'no colon here'"},
        {"bad token: host:1\n",
         "tokens.cfg:1: invalid token 'bad token' (use letters, digits, '_', '.' and '-')"},
        {": host:1\n", "tokens.cfg:1: invalid token '' (use letters, digits, '_', '.' and '-')"},
        {"tok:\n", "tokens.cfg:1: token 'tok' needs HOST:PORT"},
        {"tok: host\n",
         "tokens.cfg:1: token 'tok': missing port in 'host' (write HOST:PORT, or HOST:* for every "
         "port)"},
        {"tok: ::1:5900\n",
         "tokens.cfg:1: token 'tok': IPv6 addresses must be in brackets, e.g. [::1]:22, not "
         "'::1:5900'"},
        {"tok: host:70000\n", "tokens.cfg:1: token 'tok': port 70000 out of range 1-65535"},
        {"tok: host:1 extra\n", "tokens.cfg:1: unexpected 'extra' after 'host:1'"},
        {"a: h:1\n\na: h:2\n", "tokens.cfg:3: token 'a' is already defined at tokens.cfg:1"},
        {"existing: h:1\n", "tokens.cfg:1: token 'existing' is already defined at hosts/target-hosts:1"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.text);
      TargetHosts t = targets("existing = h:9\n");
      auto err = t.load_token_text(c.text, "tokens.cfg");
      REQUIRE(err);
      CHECK(err->to_string() == c.error);
      CHECK(t.named_count() == 1);  // all or nothing
    }
  }

  TEST_CASE("load_token_path: a file, a directory, errors") {
    TempDir dir;
    const std::string single = dir.write("single.cfg", "solo: 10.0.0.1:5900\n");
    TargetHosts t;
    REQUIRE_FALSE(t.load_token_path(single));
    CHECK(request(t, "solo").port == 5900);

    const std::filesystem::path tokdir = dir.path / "tokens.d";
    std::filesystem::create_directory(tokdir);
    std::ofstream(tokdir / "b.cfg") << "bee: 10.0.0.2:5902\n";
    std::ofstream(tokdir / "a.cfg") << "ay: 10.0.0.1:5901\n# comment\n";
    std::ofstream(tokdir / ".hidden.swp") << "this is not a token file\n";
    std::filesystem::create_directory(tokdir / "subdir");
    TargetHosts d;
    REQUIRE_FALSE(d.load_token_path(tokdir.string()));
    CHECK(d.named_count() == 2);
    CHECK(request(d, "ay").port == 5901);
    CHECK(request(d, "bee").port == 5902);

    // A duplicate across files names both places; nothing is merged.
    std::ofstream(tokdir / "c.cfg") << "\nay: 10.0.0.3:5903\n";
    TargetHosts e;
    auto err = e.load_token_path(tokdir.string());
    REQUIRE(err);
    CHECK(err->to_string() == (tokdir / "c.cfg").string() + ":2: token 'ay' is already defined at " +
                                  (tokdir / "a.cfg").string() + ":1");
    CHECK(e.named_count() == 0);

    err = e.load_token_path((dir.path / "missing").string());
    REQUIRE(err);
    CHECK(err->to_string() == (dir.path / "missing").string() +
                                  ": cannot open: No such file or directory");
  }

  TEST_CASE("load_file: missing file and a real file") {
    TempDir dir;
    auto a = AllowedHosts::load_file((dir.path / "nope").string());
    REQUIRE(std::holds_alternative<RuleError>(a));
    CHECK(std::get<RuleError>(a).line == 0);

    const std::string path = dir.write("target-hosts", "localhost:22\nlocalhost:0\n");
    auto t = TargetHosts::load_file(path);
    REQUIRE(std::holds_alternative<RuleError>(t));
    CHECK(std::get<RuleError>(t).to_string() == path + ":2: port 0 out of range 1-65535");
  }
}

// ---------------------------------------------------------------------------
TEST_SUITE("access.examples") {
#ifdef NETWINE_SOURCE_DIR
  // The example files document the formats; they must parse, enforce what
  // their comments claim, and every disabled example rule ("# rule", as
  // opposed to "## note") must parse when enabled.
  std::string read_example(const char* name) {
    std::ifstream in(std::string(NETWINE_SOURCE_DIR) + "/hosts/" + name, std::ios::binary);
    REQUIRE_MESSAGE(in.good(), name);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // Text after the header (up to the first blank line) with "# " removed
  // from the start of example-rule lines.
  std::string enable_examples(const std::string& text) {
    const std::size_t body = text.find("\n\n");
    REQUIRE(body != std::string::npos);
    std::string out(body, '\n');  // keep line numbers
    std::size_t pos = body;
    while (pos < text.size()) {
      std::size_t nl = text.find('\n', pos);
      if (nl == std::string::npos) nl = text.size();
      std::string line = text.substr(pos, nl - pos);
      if (line.starts_with("# ")) line.erase(0, 2);
      out += line + "\n";
      pos = nl + 1;
    }
    return out;
  }

  TEST_CASE("hosts/allowed-hosts example") {
    const std::string text = read_example("allowed-hosts");
    const AllowedHosts a = allowed(text);
    CHECK(a.check_address(ip("127.0.0.1")).allowed);
    CHECK(a.check_address(ip("::1")).allowed);
    CHECK(a.check_address(ip("::ffff:127.0.0.1")).allowed);
    CHECK_FALSE(a.check_address(ip("192.0.2.1")).allowed);
    const AllowedHosts all = allowed(enable_examples(text));
    CHECK(all.rule_count() > a.rule_count());
    CHECK(all.check_address(ip("10.1.2.3")).allowed);
    CHECK_FALSE(all.check_address(ip("192.168.1.66")).allowed);
    CHECK(origin_ok(all, "https://sub.example.com"));
    CHECK_FALSE(origin_ok(all, "https://untrusted.example.com"));
  }

  TEST_CASE("hosts/target-hosts example") {
    const std::string text = read_example("target-hosts");
    const TargetHosts t = targets(text);
    CHECK_FALSE(t.empty());
    CHECK(t.name_allowed("localhost", 5900));
    CHECK(t.name_allowed("localhost", 5910));
    CHECK_FALSE(t.name_allowed("localhost", 5911));
    CHECK(connect_ok(t, "127.0.0.1", 5901));
    CHECK(connect_ok(t, "::1", 5901));
    CHECK_FALSE(t.check_connect("metadata.example", ip("169.254.169.254"), 80, false).allowed);
    CHECK_FALSE(t.check_connect("localhost", ip("169.254.169.254"), 5900, false).allowed);
    const TargetHosts all = targets(enable_examples(text));
    CHECK(all.rule_count() > t.rule_count());
    CHECK(request(all, "desktop").port == 5900);
    CHECK(request(all, "kiosk1").host == "192.168.1.21");
    CHECK(request(all, "vault").scheme == Scheme::Tls);
    CHECK_FALSE(connect_ok(all, "10.66.0.1", 22));
    CHECK(connect_ok(all, "10.67.0.1", 22));
  }
#endif
}
