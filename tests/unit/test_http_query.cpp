#include <doctest/doctest.h>

#include <optional>
#include <random>
#include <string>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "http/http_util.hpp"

using netwine::http::query_value;

namespace {

// What evhttp itself makes of `query`: the table evhttp_parse_query_str() builds,
// searched with evhttp_find_header() (how query_param() worked until 2026-12-05).
std::optional<std::string> evhttp_answer(const std::string& query, const char* name) {
  evkeyvalq params;
  params.tqh_first = nullptr;
  params.tqh_last = &params.tqh_first;
  std::optional<std::string> out;
  if (evhttp_parse_query_str(query.c_str(), &params) == 0)
    if (const char* v = evhttp_find_header(&params, name)) out = v;
  evhttp_clear_headers(&params);
  return out;
}

}  // namespace

TEST_SUITE("http.query") {
  TEST_CASE("values are found, decoded, and the first one wins") {
    CHECK(query_value("target=host%3A23&mode=poll", "target") == std::optional<std::string>("host:23"));
    CHECK(query_value("target=host%3A23&mode=poll", "mode") == std::optional<std::string>("poll"));
    CHECK(query_value("Target=x", "target") == std::optional<std::string>("x"));  // names: any ASCII case
    CHECK(query_value("a=1&a=2", "a") == std::optional<std::string>("1"));
    CHECK(query_value("a=x+y%20z", "a") == std::optional<std::string>("x y z"));
    CHECK(query_value("a=b=c", "a") == std::optional<std::string>("b=c"));
    CHECK(query_value("a=", "a") == std::optional<std::string>(""));
    CHECK(query_value("a=1&", "a") == std::optional<std::string>("1"));
    CHECK(query_value("a=%zz", "a") == std::optional<std::string>("%zz"));  // not an escape: kept
    CHECK(query_value("a=x%00y", "a") == std::optional<std::string>("x"));  // a C string, as evhttp kept it
    CHECK_FALSE(query_value("b=1", "a"));
    CHECK_FALSE(query_value("", "a"));
    CHECK_FALSE(query_value("ab=1", "a"));
  }

  TEST_CASE("a malformed part leaves the whole query without values, as in evhttp") {
    CHECK_FALSE(query_value("a=1&b", "a"));
    CHECK_FALSE(query_value("&a=1", "a"));
    CHECK_FALSE(query_value("a=1&&b=2", "a"));
    CHECK_FALSE(query_value("=1&a=2", "a"));
  }

  TEST_CASE("the same answer as evhttp's own parser on 50,000 generated queries") {
    // Half random strings, half queries built of parts (names that match or almost
    // match, values with escapes and '+', now and then a part with no '=' or an
    // empty part), so that both refusals and values are met often.
    std::mt19937 rng(20261205);
    auto below = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
    const std::string noise = "aAbB=&%+02fFzx ";
    const char* names[] = {"a", "A", "ab", "b", "", "a b", "aa"};
    const std::string value_chars = "aA=+%02fFz x";
    int found = 0, refused = 0;
    for (int i = 0; i < 50000; ++i) {
      std::string q;
      if (i % 2 == 0) {
        for (size_t n = below(19); n > 0; --n) q += noise[below(noise.size())];
      } else {
        for (size_t parts = below(5); parts > 0; --parts) {
          if (!q.empty()) q += '&';
          q += names[below(std::size(names))];
          if (below(10) == 0) continue;  // no '='
          q += '=';
          for (size_t n = below(6); n > 0; --n) q += value_chars[below(value_chars.size())];
        }
        if (below(8) == 0) q += '&';
      }
      for (const char* name : {"a", "ab", "b"}) {
        auto want = evhttp_answer(q, name);
        INFO("query \"", q, "\" name ", name);
        REQUIRE(query_value(q, name) == want);
        found += want.has_value();
        refused += !want.has_value();
      }
    }
    CHECK(found > 10000);  // both outcomes are exercised, not only one
    CHECK(refused > 10000);
  }
}
