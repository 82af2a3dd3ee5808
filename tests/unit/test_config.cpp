#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "config.hpp"

using namespace netwine;

namespace {
ParseOutcome parse(std::vector<const char*> args) {
  args.insert(args.begin(), "netwine");
  return parse_command_line(static_cast<int>(args.size()), args.data(), "/repo");
}
}  // namespace

TEST_SUITE("config") {
  TEST_CASE("defaults") {
    auto o = parse({});
    REQUIRE(o.config);
    CHECK(o.config->listen == std::vector<std::string>{"127.0.0.1:8080"});
    CHECK(o.config->www_dir == "/repo/www");
    CHECK(o.config->js_client_dir == "/repo/js-client");
    CHECK(o.config->prefix == "/netwine/");
    CHECK(o.config->poll_wait == doctest::Approx(25));
    CHECK(o.config->max_body_size == 1024 * 1024);
    CHECK_FALSE(o.config->open_proxy);
    CHECK(o.config->admin_allow == std::vector<std::string>{"127.0.0.0/8", "::1"});
    CHECK(o.config->bulk_after == 2 * 1024 * 1024);
  }

  TEST_CASE("flags: both spellings, repeatable lists replace the default, booleans") {
    auto o = parse({"--listen", "[::1]:0", "--listen=127.0.0.1:0", "--demo", "--max-body-size", "2M",
                    "--poll-wait=1500ms", "--open-proxy=false", "--bulk-after", "256K"});
    REQUIRE(o.config);
    CHECK(o.config->listen == std::vector<std::string>{"[::1]:0", "127.0.0.1:0"});
    CHECK(o.config->demo);
    CHECK(o.config->max_body_size == 2 * 1024 * 1024);
    CHECK(o.config->poll_wait == doctest::Approx(1.5));
    CHECK(o.config->bulk_after == 256 * 1024);
  }

  TEST_CASE("every list with a default is replaced, not extended, by the command line") {
    auto o = parse({"--admin-allow", "10.0.0.0/8", "--allowed-methods", "GET", "--listen", "127.0.0.1:0",
                    "--target", "a:1", "--allow-origin", "https://a.example", "--trusted-proxy", "10.0.0.1"});
    REQUIRE(o.config);
    CHECK(o.config->admin_allow == std::vector<std::string>{"10.0.0.0/8"});
    CHECK(o.config->allowed_methods == std::vector<std::string>{"GET"});
    CHECK(o.config->listen == std::vector<std::string>{"127.0.0.1:0"});
    CHECK(o.config->targets == std::vector<std::string>{"a:1"});
    CHECK(o.config->allow_origins == std::vector<std::string>{"https://a.example"});
    CHECK(o.config->trusted_proxies == std::vector<std::string>{"10.0.0.1"});
  }

  TEST_CASE("allowed-methods: default and unknown names") {
    auto d = parse({});
    REQUIRE(d.config);
    CHECK(d.config->allowed_methods == std::vector<std::string>{"GET", "HEAD", "POST", "OPTIONS"});
    auto mine = parse({"--allowed-methods", "GET", "--allowed-methods=HEAD"});
    REQUIRE(mine.config);
    CHECK(mine.config->allowed_methods == std::vector<std::string>{"GET", "HEAD"});
    auto bad = parse({"--allowed-methods", "GET,FETCH"});
    CHECK_FALSE(bad.config);
    CHECK(bad.exit_code == 2);
    CHECK(bad.message.find("allowed-methods: unknown method 'FETCH'") != std::string::npos);
  }

  TEST_CASE("--cert and --key are aliases of --tls-cert and --tls-key") {
    auto o = parse({"--cert", "/etc/ssl/a.pem", "--key=/etc/ssl/a.key"});
    REQUIRE(o.config);
    CHECK(o.config->tls_cert == "/etc/ssl/a.pem");
    CHECK(o.config->tls_key == "/etc/ssl/a.key");
    auto lone = parse({"--cert", "/etc/ssl/a.pem"});
    CHECK_FALSE(lone.config);
    CHECK(lone.exit_code == 2);
    CHECK(lone.message.find("tls-cert and tls-key must be given together") != std::string::npos);
  }

  TEST_CASE("help and version exit 0 with text") {
    auto h = parse({"--help"});
    CHECK_FALSE(h.config);
    CHECK(h.exit_code == 0);
    CHECK(h.message.find("--max-header-size") != std::string::npos);
    CHECK(h.message.find("(default: 16K)") != std::string::npos);
    auto v = parse({"--version"});
    CHECK(v.exit_code == 0);
    CHECK(v.message.find("netwine ") == 0);
  }

  TEST_CASE("command-line errors name the flag") {
    struct Case { std::vector<const char*> args; const char* expect; };
    std::vector<Case> cases = {
        {{"--bogus"}, "unknown option --bogus"},
        {{"--listen"}, "option --listen needs a value"},
        {{"--max-body-size", "lots"}, "option --max-body-size: expected a size"},
        {{"--max-body-size", "10"}, "option --max-body-size: value 10 out of range"},
        {{"--poll-wait", "-3"}, "option --poll-wait: expected a duration"},
        {{"--bulk-after", "4K"}, "option --bulk-after: value 4K out of range 65536..1073741824"},
        {{"--demo=maybe"}, "option --demo: expected true or false"},
        {{"--log-format", "xml"}, "option --log-format: expected text or json"},
        {{"--prefix", "netwine"}, "option --prefix: must start and end with '/'"},
        {{"stray"}, "unexpected argument 'stray'"},
        {{"--tls-cert", "c.pem"}, "tls-cert and tls-key must be given together"},
        {{"--config", "/nonexistent/netwine.json"}, "/nonexistent/netwine.json: cannot read config file"},
    };
    for (const auto& c : cases) {
      auto o = parse(c.args);
      CHECK_FALSE(o.config);
      CHECK(o.exit_code == 2);
      CHECK_MESSAGE(o.message.find(c.expect) != std::string::npos, o.message);
    }
  }

  TEST_CASE("JSON config: keys as flags, errors name file and key") {
    auto ok = parse_json_config(R"({"listen": ["127.0.0.1:9000"], "demo": true, "max-body-size": 65536,
                                    "poll-wait": "10s", "target": "127.0.0.1:22"})", "n.json", "/r");
    REQUIRE(ok.config);
    CHECK(ok.config->listen == std::vector<std::string>{"127.0.0.1:9000"});
    CHECK(ok.config->demo);
    CHECK(ok.config->max_body_size == 65536);
    CHECK(ok.config->poll_wait == doctest::Approx(10));
    CHECK(ok.config->targets == std::vector<std::string>{"127.0.0.1:22"});

    struct Case { const char* json; const char* expect; };
    std::vector<Case> cases = {
        {R"({"listne": []})", "n.json: unknown key \"listne\""},
        {R"({"demo": "yes"})", "n.json: key \"demo\": expected true or false"},
        {R"({"max-body-size": "big"})", "n.json: key \"max-body-size\": expected a size"},
        {R"({"listen": [1]})", "n.json: key \"listen\": expected an array of strings"},
        {R"({"www": 5})", "n.json: key \"www\": expected a string"},
        {R"([1,2])", "n.json: the top level must be a JSON object"},
        {R"({"demo": tru})", "n.json: not valid JSON"},
        {R"({"config": "x.json"})", "n.json: unknown key \"config\""},
        {R"({"li":6e1500})", "n.json: not valid JSON"},  // number overflow (fuzz finding)
    };
    for (const auto& c : cases) {
      auto o = parse_json_config(c.json, "n.json", "/r");
      CHECK_FALSE(o.config);
      CHECK(o.exit_code == 2);
      CHECK_MESSAGE(o.message.find(c.expect) != std::string::npos, o.message);
    }
  }

  TEST_CASE("sizes and durations") {
    CHECK(parse_size("0") == 0u);
    CHECK(parse_size("64K") == 65536u);
    CHECK(parse_size("1G") == 1073741824u);
    CHECK_FALSE(parse_size(""));
    CHECK_FALSE(parse_size("K"));
    CHECK_FALSE(parse_size("1T"));
    CHECK_FALSE(parse_size("99999999999999999999999"));
    CHECK(parse_duration("25") == doctest::Approx(25));
    CHECK(parse_duration("250ms") == doctest::Approx(0.25));
    CHECK(parse_duration("2m") == doctest::Approx(120));
    CHECK_FALSE(parse_duration("-1"));
    CHECK_FALSE(parse_duration("5 parsecs"));
  }
}
