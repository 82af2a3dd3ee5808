// The hosts-file parsers and matchers: any text either parses or gives an error
// naming a line inside the file; matching parsed rules never crashes.
#include <string>

#include "access/rules.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace netwine::access;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  int lines = 1;
  for (char c : text) lines += c == '\n';
  auto a = AllowedHosts::parse(text, "fuzz");
  if (auto* e = std::get_if<RuleError>(&a)) {
    if (e->line < 0 || e->line > lines) __builtin_trap();
  } else {
    auto& rules = std::get<AllowedHosts>(a);
    rules.check_address(*IpAddress::parse("127.0.0.1"));
    rules.check_address(*IpAddress::parse("::ffff:10.1.2.3"));
    rules.check_origin(std::string_view("https://a.example.com"), "h:1", false);
    rules.check_origin(text.substr(0, 64), text.substr(0, 16), true);
  }
  auto t = TargetHosts::parse(text, "fuzz");
  if (auto* e = std::get_if<RuleError>(&t)) {
    if (e->line < 0 || e->line > lines) __builtin_trap();
  } else {
    auto& rules = std::get<TargetHosts>(t);
    auto req = rules.resolve_request(text.substr(0, 80));
    if (auto* tr = std::get_if<TargetRequest>(&req))
      rules.check_connect(tr->host, *IpAddress::parse("10.0.0.1"), tr->port, tr->named, tr->scheme);
    rules.check_connect("example.com", *IpAddress::parse("2001:db8::1"), 22, false);
  }
  IpAddress::parse(text);
  Cidr::parse(text);
  parse_cidr_list(text);
  return 0;
}
