#include <doctest/doctest.h>

#include <cstring>
#include <ctime>
#include <string>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "http/http_util.hpp"

using netwine::http::add_date_header;
using netwine::http::date_value;

namespace {
void init_headers(evkeyvalq& h) {
  h.tqh_first = nullptr;
  h.tqh_last = &h.tqh_first;
}
}  // namespace

TEST_CASE("date_value: RFC 9110's example, and each second formatted anew") {
  CHECK(std::string(date_value(784111777)) == "Sun, 06 Nov 1994 08:49:37 GMT");
  // The same second again (the cached text), then the next ones.
  CHECK(std::string(date_value(784111777)) == "Sun, 06 Nov 1994 08:49:37 GMT");
  CHECK(std::string(date_value(784111778)) == "Sun, 06 Nov 1994 08:49:38 GMT");
  CHECK(std::string(date_value(784111777 + 86400 * 365)) == "Mon, 06 Nov 1995 08:49:37 GMT");
  // A second going back (the clock was set back) is formatted too.
  CHECK(std::string(date_value(0)) == "Thu, 01 Jan 1970 00:00:00 GMT");
  CHECK(std::string(date_value(1796464800)) == "Sat, 05 Dec 2026 10:00:00 GMT");
}

TEST_CASE("add_date_header: adds the current second's Date once, keeps one already there") {
  evkeyvalq headers;
  init_headers(headers);
  std::time_t before = std::time(nullptr);
  add_date_header(&headers);
  std::time_t after = std::time(nullptr);
  const char* d = evhttp_find_header(&headers, "Date");
  REQUIRE(d != nullptr);
  std::string got = d;
  CHECK((got == date_value(before) || got == date_value(after)));
  add_date_header(&headers);
  int dates = 0;
  for (evkeyval* h = headers.tqh_first; h; h = h->next.tqe_next) dates += std::strcmp(h->key, "Date") == 0;
  CHECK(dates == 1);
  evhttp_clear_headers(&headers);

  init_headers(headers);
  evhttp_add_header(&headers, "Date", "Sun, 06 Nov 1994 08:49:37 GMT");
  add_date_header(&headers);
  CHECK(std::string(evhttp_find_header(&headers, "Date")) == "Sun, 06 Nov 1994 08:49:37 GMT");
  evhttp_clear_headers(&headers);
}
