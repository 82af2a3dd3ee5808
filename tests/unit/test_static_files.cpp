#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include <sys/stat.h>
#include <unistd.h>

#include "http/static_files.hpp"

namespace http = netwine::http;
using http::ByteRange;
using http::FileLookup;
using http::RangeResult;
using http::StaticDecision;
using http::StaticRequest;
using Method = http::StaticRequest::Method;

namespace {

constexpr int64_t kNov1994 = 784111777;  // Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110 examples)

// The value of header `name` in a decision; "<absent>" when it is not there, and
// "<twice>" when it is there more than once (evhttp would send both).
std::string header(const StaticDecision& d, std::string_view name) {
  std::string found = "<absent>";
  for (const auto& h : d.headers) {
    if (h.name == name) found = found == "<absent>" ? h.value : "<twice>";
  }
  return found;
}

StaticRequest found_file(std::string path, http::FileMeta meta, Method method = Method::Get) {
  StaticRequest r;
  r.method = method;
  r.path = std::move(path);
  r.lookup = FileLookup::Found;
  r.meta = meta;
  return r;
}

const http::FileMeta kHtml{1000, kNov1994, 42};

void check_range(std::string_view header_value, uint64_t size, RangeResult result,
                 ByteRange expected = {}) {
  CAPTURE(header_value);
  CAPTURE(size);
  const auto r = http::parse_range(header_value, size);
  CHECK(r.result == result);
  if (result == RangeResult::Satisfiable && r.result == result) {
    CHECK(r.range.first == expected.first);
    CHECK(r.range.last == expected.last);
  }
}

// A directory tree under /tmp, removed again at the end of the test:
//   root/index.html, root/a.txt, root/empty.txt, root/sub/index.html, root/nodex/,
//   root/link_in -> a.txt, root/link_out -> ../outside/secret.txt,
//   root/dir_out -> ../outside, root/idx_out/index.html -> ../../outside/secret.txt,
//   root/loop -> loop, root/fifo, root/sub/up -> .. (a symlink that stays inside)
//   outside/secret.txt
struct TempTree {
  std::string base;  // real path of the temporary directory
  std::string root;  // base + "/root"

  TempTree() {
    char tmpl[] = "/tmp/netwine-static-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    char* real = ::realpath(tmpl, nullptr);
    REQUIRE(real != nullptr);
    base = real;
    std::free(real);
    root = base + "/root";
    namespace fs = std::filesystem;
    fs::create_directories(root + "/sub");
    fs::create_directories(root + "/nodex");
    fs::create_directories(root + "/idx_out");
    fs::create_directories(base + "/outside");
    write(root + "/index.html", "<h1>home</h1>");
    write(root + "/a.txt", "hello");
    write(root + "/empty.txt", "");
    write(root + "/sub/index.html", "<h1>sub</h1>");
    write(base + "/outside/secret.txt", "secret");
    REQUIRE(::symlink("a.txt", (root + "/link_in").c_str()) == 0);
    REQUIRE(::symlink("../outside/secret.txt", (root + "/link_out").c_str()) == 0);
    REQUIRE(::symlink("../outside", (root + "/dir_out").c_str()) == 0);
    REQUIRE(::symlink("../../outside/secret.txt", (root + "/idx_out/index.html").c_str()) == 0);
    REQUIRE(::symlink("loop", (root + "/loop").c_str()) == 0);
    REQUIRE(::symlink("..", (root + "/sub/up").c_str()) == 0);
    REQUIRE(::mkfifo((root + "/fifo").c_str(), 0600) == 0);
  }
  ~TempTree() {
    std::error_code ec;
    std::filesystem::remove_all(base, ec);
  }

  static void write(const std::string& path, std::string_view content) {
    std::ofstream(path, std::ios::binary) << content;
  }

  // The mapped real path, or "LOOKUP:<n>" for a refusal.
  std::string map(std::string_view normalised) const {
    auto r = http::map_to_file(root, normalised);
    if (auto* s = std::get_if<std::string>(&r)) return *s;
    return "LOOKUP:" + std::to_string(static_cast<int>(std::get<FileLookup>(r)));
  }
  static std::string refused(FileLookup l) {
    return "LOOKUP:" + std::to_string(static_cast<int>(l));
  }
};

}  // namespace

TEST_SUITE("http.static.validators") {
  TEST_CASE("make_etag is strong, quoted hex of size, mtime and inode") {
    CHECK(http::make_etag({10, 0x5f5e100, 0x1234}) == "\"a-5f5e100-1234\"");
    CHECK(http::make_etag({0, 0, 0}) == "\"0-0-0\"");
    CHECK(http::make_etag({10, 1, 2}) != http::make_etag({10, 1, 3}));  // a deploy by rename
    CHECK(http::make_etag({10, 1, 2}) != http::make_etag({11, 1, 2}));
    CHECK(http::make_etag({10, 1, 2}) != http::make_etag({10, 2, 2}));
  }

  TEST_CASE("http_date formats IMF-fixdate") {
    CHECK(http::http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
    CHECK(http::http_date(kNov1994) == "Sun, 06 Nov 1994 08:49:37 GMT");
    CHECK(http::http_date(1709208000) == "Thu, 29 Feb 2024 12:00:00 GMT");
    CHECK(http::http_date(4102444799) == "Thu, 31 Dec 2099 23:59:59 GMT");
    CHECK(http::http_date(-1) == "Thu, 01 Jan 1970 00:00:00 GMT");  // clamped
    CHECK(http::http_date(INT64_MAX) == "Fri, 31 Dec 9999 23:59:59 GMT");
  }

  TEST_CASE("parse_http_date reads the three RFC 9110 forms") {
    CHECK(http::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == kNov1994);
    CHECK(http::parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == kNov1994);
    CHECK(http::parse_http_date("Sun Nov  6 08:49:37 1994") == kNov1994);
    CHECK(http::parse_http_date("Thu Feb 29 12:00:00 2024") == 1709208000);
    CHECK(http::parse_http_date("  Sun, 06 Nov 1994 08:49:37 GMT ") == kNov1994);
    // RFC 850's two-digit years: 70-99 are 19xx, 00-69 are 20xx.
    CHECK(http::parse_http_date("Thursday, 01-Jan-70 00:00:00 GMT") == 0);
    CHECK(http::parse_http_date("Saturday, 01-Jan-00 00:00:00 GMT") == 946684800);
  }

  TEST_CASE("parse_http_date refuses everything else") {
    const char* bad[] = {
        "",
        "yesterday",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Nov 1994 08:49:37 GMT x",
        "sun, 06 nov 1994 08:49:37 gmt",  // HTTP-date is case-sensitive
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 29 Feb 2023 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "1994-11-06T08:49:37Z",
        "784111777",
    };
    for (const char* s : bad) {
      CAPTURE(s);
      CHECK_FALSE(http::parse_http_date(s).has_value());
    }
  }

  TEST_CASE("http_date and parse_http_date round-trip") {
    for (int64_t t = 0; t < 253402300799; t += 7919LL * 86400 + 3607) {
      CAPTURE(t);
      CHECK(http::parse_http_date(http::http_date(t)) == t);
    }
    CHECK(http::parse_http_date(http::http_date(253402300799)) == 253402300799);
  }

  TEST_CASE("If-None-Match: lists, star, weak comparison") {
    const std::string etag = "\"a-1-2\"";
    CHECK(http::if_none_match_matches("\"a-1-2\"", etag));
    CHECK(http::if_none_match_matches("*", etag));
    CHECK(http::if_none_match_matches(" * ", etag));
    CHECK(http::if_none_match_matches("W/\"a-1-2\"", etag));
    CHECK(http::if_none_match_matches("\"x\", \"a-1-2\"", etag));
    CHECK(http::if_none_match_matches("\"x\",W/\"a-1-2\"", etag));
    CHECK(http::if_none_match_matches("\"x\" ,\t\"y\",  \"a-1-2\"", etag));
    CHECK(http::if_none_match_matches("\"a-1-2\"", "W/\"a-1-2\""));
    CHECK_FALSE(http::if_none_match_matches("\"a-1-3\"", etag));
    CHECK_FALSE(http::if_none_match_matches("\"x\", \"y\"", etag));
    CHECK_FALSE(http::if_none_match_matches("", etag));
    CHECK_FALSE(http::if_none_match_matches("a-1-2", etag));           // unquoted
    CHECK_FALSE(http::if_none_match_matches("\"a-1-2", etag));         // unterminated
    CHECK_FALSE(http::if_none_match_matches("junk, \"a-1-2\"", etag)); // bad from the start
    CHECK_FALSE(http::if_none_match_matches("\"*\"", etag));
  }

  TEST_CASE("If-Range: a strong ETag or the exact Last-Modified date") {
    const std::string etag = "\"a-1-2\"";
    CHECK(http::if_range_matches("\"a-1-2\"", etag, kNov1994));
    CHECK(http::if_range_matches("Sun, 06 Nov 1994 08:49:37 GMT", etag, kNov1994));
    CHECK_FALSE(http::if_range_matches("W/\"a-1-2\"", etag, kNov1994));
    CHECK_FALSE(http::if_range_matches("\"a-1-3\"", etag, kNov1994));
    CHECK_FALSE(http::if_range_matches("Sun, 06 Nov 1994 08:49:38 GMT", etag, kNov1994));
    CHECK_FALSE(http::if_range_matches("Sun, 06 Nov 1994 08:49:36 GMT", etag, kNov1994));
    CHECK_FALSE(http::if_range_matches("garbage", etag, kNov1994));
    CHECK_FALSE(http::if_range_matches("", etag, kNov1994));
  }
}

TEST_SUITE("http.static.range") {
  TEST_CASE("absent or blank Range is None") {
    check_range("", 10, RangeResult::None);
    check_range("  ", 10, RangeResult::None);
  }

  TEST_CASE("first-last ranges") {
    check_range("bytes=0-0", 10, RangeResult::Satisfiable, {0, 0});
    check_range("bytes=0-9", 10, RangeResult::Satisfiable, {0, 9});
    check_range("bytes=9-9", 10, RangeResult::Satisfiable, {9, 9});  // the last byte
    check_range("bytes=2-5", 10, RangeResult::Satisfiable, {2, 5});
    check_range("bytes=5-100", 10, RangeResult::Satisfiable, {5, 9});  // clamped
    check_range("bytes=0-18446744073709551615", 10, RangeResult::Satisfiable, {0, 9});
    check_range("bytes=0-99999999999999999999999", 10, RangeResult::Satisfiable, {0, 9});
    check_range("bytes=10-10", 10, RangeResult::Unsatisfiable);
    check_range("bytes=10-20", 10, RangeResult::Unsatisfiable);
    check_range("bytes=99999999999999999999999-99999999999999999999999", 10,
                RangeResult::Unsatisfiable);
  }

  TEST_CASE("open-ended ranges") {
    check_range("bytes=0-", 10, RangeResult::Satisfiable, {0, 9});
    check_range("bytes=9-", 10, RangeResult::Satisfiable, {9, 9});
    check_range("bytes=10-", 10, RangeResult::Unsatisfiable);
    check_range("bytes=99999999999999999999999-", 10, RangeResult::Unsatisfiable);
  }

  TEST_CASE("suffix ranges") {
    check_range("bytes=-1", 10, RangeResult::Satisfiable, {9, 9});
    check_range("bytes=-3", 10, RangeResult::Satisfiable, {7, 9});
    check_range("bytes=-10", 10, RangeResult::Satisfiable, {0, 9});
    check_range("bytes=-11", 10, RangeResult::Satisfiable, {0, 9});  // larger than the file
    check_range("bytes=-99999999999999999999999", 10, RangeResult::Satisfiable, {0, 9});
    check_range("bytes=-0", 10, RangeResult::Unsatisfiable);
  }

  TEST_CASE("empty and one-byte files") {
    check_range("bytes=0-", 0, RangeResult::Unsatisfiable);
    check_range("bytes=0-0", 0, RangeResult::Unsatisfiable);
    check_range("bytes=-5", 0, RangeResult::Ignore);
    check_range("bytes=-0", 0, RangeResult::Unsatisfiable);
    check_range("bytes=0-0", 1, RangeResult::Satisfiable, {0, 0});
    check_range("bytes=-1", 1, RangeResult::Satisfiable, {0, 0});
    check_range("bytes=-2", 1, RangeResult::Satisfiable, {0, 0});
    check_range("bytes=1-", 1, RangeResult::Unsatisfiable);
  }

  TEST_CASE("whitespace, case and empty list elements are tolerated") {
    check_range("bytes= 0-1", 10, RangeResult::Satisfiable, {0, 1});
    check_range("  bytes=0-1\t", 10, RangeResult::Satisfiable, {0, 1});
    check_range("BYTES=0-1", 10, RangeResult::Satisfiable, {0, 1});
    check_range("bytes=0-1,", 10, RangeResult::Satisfiable, {0, 1});
    check_range("bytes=, ,0-1", 10, RangeResult::Satisfiable, {0, 1});
  }

  TEST_CASE("several ranges are ignored (the whole file is served)") {
    check_range("bytes=0-1,3-4", 10, RangeResult::Ignore);
    check_range("bytes=0-1, -2", 10, RangeResult::Ignore);
    check_range("bytes=20-30,40-50", 10, RangeResult::Ignore);
  }

  TEST_CASE("malformed headers are ignored") {
    const char* bad[] = {"bytes=",      "bytes=,",   "bytes=-",     "bytes=5-4", "bytes=a-b",
                         "bytes=1-2-3", "bytes=+1-2", "bytes=1 -2",  "bytes=0x1-2", "bytes 0-1",
                         "items=0-1",   "=0-1",       "bytes=1",     "bytes=--1", "bytes=-1-2",
                         "bytes=1-+2"};
    for (const char* s : bad) check_range(s, 10, RangeResult::Ignore);
  }
}

TEST_SUITE("http.static.decide") {
  TEST_CASE("methods other than GET and HEAD get 405 with Allow") {
    StaticRequest r = found_file("/index.html", kHtml, Method::Other);
    const auto d = http::decide(r);
    CHECK(d.status == 405);
    CHECK(header(d, "Allow") == "GET, HEAD");
    CHECK(d.body == "405 method not allowed\n");
    CHECK(header(d, "Content-Type") == "text/plain; charset=utf-8");
    CHECK(header(d, "Content-Length") == std::to_string(d.body.size()));
    CHECK_FALSE(d.send_file);
    // Even when the path is hostile: the method is checked first.
    r.path = http::PathError::EscapesRoot;
    CHECK(http::decide(r).status == 405);
  }

  TEST_CASE("path errors: 400 with the reason, 403 for escapes") {
    StaticRequest r;
    r.path = http::PathError::EncodedSlash;
    auto d = http::decide(r);
    CHECK(d.status == 400);
    CHECK(d.body == "400 bad request: encoded slash or backslash\n");
    r.path = http::PathError::EscapesRoot;
    d = http::decide(r);
    CHECK(d.status == 403);
    CHECK(d.body.starts_with("403 forbidden"));
    for (auto e : {http::PathError::BadEncoding, http::PathError::NulByte,
                   http::PathError::NotAbsolute, http::PathError::BadUtf8}) {
      r.path = e;
      CHECK(http::decide(r).status == 400);
    }
  }

  TEST_CASE("lookup outcomes: 404, 403, 301, 500") {
    StaticRequest r;
    r.path = std::string("/missing.html");
    r.lookup = FileLookup::NotFound;
    auto d = http::decide(r);
    CHECK(d.status == 404);
    CHECK(d.body == "404 not found\n");
    CHECK(header(d, "X-Content-Type-Options") == "nosniff");

    r.lookup = FileLookup::Forbidden;
    d = http::decide(r);
    CHECK(d.status == 403);
    CHECK(d.body == "403 forbidden\n");

    r.lookup = FileLookup::Failed;
    CHECK(http::decide(r).status == 500);

    r.path = std::string("/docs");
    r.lookup = FileLookup::IsDirectory;
    d = http::decide(r);
    CHECK(d.status == 301);
    CHECK(header(d, "Location") == "/docs/");
    r.query = "a=1&b=2";
    CHECK(header(http::decide(r), "Location") == "/docs/?a=1&b=2");
    r.query.clear();
    r.path = std::string("/my docs/caf\xC3\xA9?#");
    CHECK(header(http::decide(r), "Location") == "/my%20docs/caf%C3%A9%3F%23/");
  }

  TEST_CASE("HEAD error responses: same headers, no body") {
    StaticRequest r;
    r.method = Method::Head;
    r.path = std::string("/missing");
    r.lookup = FileLookup::NotFound;
    const auto d = http::decide(r);
    CHECK(d.status == 404);
    CHECK(d.body.empty());
    CHECK(header(d, "Content-Length") == "14");  // strlen("404 not found\n")
  }

  TEST_CASE("200 with every header, the whole file as the range") {
    const auto d = http::decide(found_file("/index.html", kHtml));
    CHECK(d.status == 200);
    CHECK(header(d, "Content-Type") == "text/html; charset=utf-8");
    CHECK(header(d, "Content-Length") == "1000");
    CHECK(header(d, "ETag") == http::make_etag(kHtml));
    CHECK(header(d, "Last-Modified") == "Sun, 06 Nov 1994 08:49:37 GMT");
    CHECK(header(d, "Cache-Control") == "no-cache");
    CHECK(header(d, "Accept-Ranges") == "bytes");
    CHECK(header(d, "X-Content-Type-Options") == "nosniff");
    CHECK(header(d, "Content-Range") == "<absent>");
    CHECK(d.body.empty());
    REQUIRE(d.send_file);
    CHECK(d.range.first == 0);
    CHECK(d.range.last == 999);
  }

  TEST_CASE("Cache-Control: no-cache for HTML and aliases, an hour for the rest") {
    CHECK(header(http::decide(found_file("/app.js", kHtml)), "Cache-Control") ==
          "public, max-age=3600");
    CHECK(header(http::decide(found_file("/a.htm", kHtml)), "Cache-Control") == "no-cache");
    // A directory request serves index.html: its type and policy follow.
    const auto dir = http::decide(found_file("/docs/", kHtml));
    CHECK(header(dir, "Content-Type") == "text/html; charset=utf-8");
    CHECK(header(dir, "Cache-Control") == "no-cache");
    StaticRequest alias = found_file("/netwine.js", kHtml);
    alias.is_alias = true;
    const auto a = http::decide(alias);
    CHECK(header(a, "Cache-Control") == "no-cache");
    CHECK(header(a, "Content-Type") == "text/javascript; charset=utf-8");
  }

  TEST_CASE("HEAD: the 200 headers with the real length, no body") {
    const auto d = http::decide(found_file("/index.html", kHtml, Method::Head));
    CHECK(d.status == 200);
    CHECK(header(d, "Content-Length") == "1000");
    CHECK(header(d, "ETag") == http::make_etag(kHtml));
    CHECK_FALSE(d.send_file);
    CHECK(d.body.empty());
  }

  TEST_CASE("an empty file is 200 with length 0 and nothing to send") {
    const auto d = http::decide(found_file("/empty.txt", {0, kNov1994, 7}));
    CHECK(d.status == 200);
    CHECK(header(d, "Content-Length") == "0");
    CHECK_FALSE(d.send_file);
  }

  TEST_CASE("304 from If-None-Match") {
    const std::string etag = http::make_etag(kHtml);
    for (const std::string& inm : {etag, "W/" + etag, "\"other\", " + etag, std::string("*")}) {
      CAPTURE(inm);
      StaticRequest r = found_file("/index.html", kHtml);
      r.if_none_match = inm;
      const auto d = http::decide(r);
      CHECK(d.status == 304);
      CHECK(header(d, "ETag") == etag);
      CHECK(header(d, "Last-Modified") == "Sun, 06 Nov 1994 08:49:37 GMT");
      CHECK(header(d, "Cache-Control") == "no-cache");
      CHECK(header(d, "Content-Length") == "<absent>");
      CHECK(header(d, "Content-Type") == "<absent>");
      CHECK(d.body.empty());
      CHECK_FALSE(d.send_file);
    }
    StaticRequest r = found_file("/index.html", kHtml);
    r.if_none_match = "\"stale\"";
    CHECK(http::decide(r).status == 200);
  }

  TEST_CASE("304 from If-Modified-Since, when there is no If-None-Match") {
    StaticRequest r = found_file("/a.png", kHtml);
    r.if_modified_since = "Sun, 06 Nov 1994 08:49:37 GMT";  // equal: not modified
    CHECK(http::decide(r).status == 304);
    r.if_modified_since = "Mon, 07 Nov 1994 08:49:37 GMT";  // later: not modified
    CHECK(http::decide(r).status == 304);
    r.if_modified_since = "Sunday, 06-Nov-94 08:49:37 GMT";
    CHECK(http::decide(r).status == 304);
    r.if_modified_since = "Sun, 06 Nov 1994 08:49:36 GMT";  // file is newer
    CHECK(http::decide(r).status == 200);
    r.if_modified_since = "not a date";  // ignored
    CHECK(http::decide(r).status == 200);
  }

  TEST_CASE("If-None-Match takes precedence over If-Modified-Since") {
    StaticRequest r = found_file("/a.png", kHtml);
    r.if_modified_since = "Mon, 07 Nov 1994 08:49:37 GMT";  // alone it would be 304
    r.if_none_match = "\"stale\"";
    CHECK(http::decide(r).status == 200);
    r.if_modified_since = "Sat, 05 Nov 1994 08:49:37 GMT";  // alone it would be 200
    r.if_none_match = http::make_etag(kHtml);
    CHECK(http::decide(r).status == 304);
  }

  TEST_CASE("conditionals apply to HEAD too") {
    StaticRequest r = found_file("/index.html", kHtml, Method::Head);
    r.if_none_match = http::make_etag(kHtml);
    CHECK(http::decide(r).status == 304);
  }

  TEST_CASE("206 for one satisfiable range") {
    StaticRequest r = found_file("/v.mp4", kHtml);
    r.range = "bytes=100-199";
    auto d = http::decide(r);
    CHECK(d.status == 206);
    CHECK(header(d, "Content-Range") == "bytes 100-199/1000");
    CHECK(header(d, "Content-Length") == "100");
    CHECK(header(d, "Content-Type") == "video/mp4");
    CHECK(header(d, "ETag") == http::make_etag(kHtml));
    REQUIRE(d.send_file);
    CHECK(d.range.first == 100);
    CHECK(d.range.last == 199);

    r.range = "bytes=-1";
    d = http::decide(r);
    CHECK(d.status == 206);
    CHECK(header(d, "Content-Range") == "bytes 999-999/1000");
    CHECK(header(d, "Content-Length") == "1");
  }

  TEST_CASE("416 for an unsatisfiable range") {
    StaticRequest r = found_file("/v.mp4", kHtml);
    r.range = "bytes=1000-";
    auto d = http::decide(r);
    CHECK(d.status == 416);
    CHECK(header(d, "Content-Range") == "bytes */1000");
    CHECK(d.body == "416 range not satisfiable\n");
    CHECK_FALSE(d.send_file);

    r = found_file("/empty.txt", {0, kNov1994, 7});
    r.range = "bytes=0-";
    d = http::decide(r);
    CHECK(d.status == 416);
    CHECK(header(d, "Content-Range") == "bytes */0");
  }

  TEST_CASE("ignored ranges serve the whole file") {
    for (const char* range : {"bytes=0-1,5-6", "bytes=5-1", "pages=1-2", "bytes=x"}) {
      CAPTURE(range);
      StaticRequest r = found_file("/v.mp4", kHtml);
      r.range = range;
      const auto d = http::decide(r);
      CHECK(d.status == 200);
      CHECK(header(d, "Content-Length") == "1000");
      CHECK(header(d, "Content-Range") == "<absent>");
    }
    // A suffix range of an empty file: 200 with nothing in it.
    StaticRequest r = found_file("/empty.txt", {0, kNov1994, 7});
    r.range = "bytes=-5";
    CHECK(http::decide(r).status == 200);
  }

  TEST_CASE("Range is for GET only: HEAD describes the 200") {
    StaticRequest r = found_file("/v.mp4", kHtml, Method::Head);
    r.range = "bytes=0-9";
    auto d = http::decide(r);
    CHECK(d.status == 200);
    CHECK(header(d, "Content-Length") == "1000");
    r.range = "bytes=5000-";
    CHECK(http::decide(r).status == 200);
  }

  TEST_CASE("If-Range: a match honours the range, a mismatch sends everything") {
    StaticRequest r = found_file("/v.mp4", kHtml);
    r.range = "bytes=0-9";
    r.if_range = http::make_etag(kHtml);
    CHECK(http::decide(r).status == 206);
    r.if_range = "Sun, 06 Nov 1994 08:49:37 GMT";
    CHECK(http::decide(r).status == 206);
    r.if_range = "\"stale\"";
    CHECK(http::decide(r).status == 200);
    r.if_range = "W/" + http::make_etag(kHtml);  // weak never matches If-Range
    CHECK(http::decide(r).status == 200);
    r.if_range = "Sat, 05 Nov 1994 08:49:37 GMT";
    CHECK(http::decide(r).status == 200);
    // A stale If-Range also turns a 416 into the whole new file.
    r.range = "bytes=5000-";
    CHECK(http::decide(r).status == 200);
    r.if_range = http::make_etag(kHtml);
    CHECK(http::decide(r).status == 416);
    // If-Range without Range changes nothing.
    r.range.reset();
    r.if_range = "\"stale\"";
    CHECK(http::decide(r).status == 200);
  }

  TEST_CASE("validators come before ranges") {
    StaticRequest r = found_file("/v.mp4", kHtml);
    r.range = "bytes=0-9";
    r.if_none_match = http::make_etag(kHtml);
    CHECK(http::decide(r).status == 304);
  }

  TEST_CASE("no header is ever sent twice") {
    StaticRequest r = found_file("/v.mp4", kHtml);
    r.range = "bytes=0-9";
    for (const auto& d : {http::decide(r), http::decide(found_file("/a", kHtml))}) {
      for (const auto& h : d.headers) CHECK(header(d, h.name) != "<twice>");
    }
  }
}

TEST_SUITE("http.static.map_to_file") {
  TEST_CASE("files, directories and index.html") {
    TempTree t;
    CHECK(t.map("/a.txt") == t.root + "/a.txt");
    CHECK(t.map("/empty.txt") == t.root + "/empty.txt");
    CHECK(t.map("/") == t.root + "/index.html");
    CHECK(t.map("/sub/") == t.root + "/sub/index.html");
    CHECK(t.map("/sub") == TempTree::refused(FileLookup::IsDirectory));
    CHECK(t.map("/nodex/") == TempTree::refused(FileLookup::NotFound));  // no listings
    CHECK(t.map("/nodex") == TempTree::refused(FileLookup::IsDirectory));
  }

  TEST_CASE("missing things are NotFound") {
    TempTree t;
    CHECK(t.map("/missing.html") == TempTree::refused(FileLookup::NotFound));
    CHECK(t.map("/missing/") == TempTree::refused(FileLookup::NotFound));
    CHECK(t.map("/missing/a.txt") == TempTree::refused(FileLookup::NotFound));
    CHECK(t.map("/a.txt/") == TempTree::refused(FileLookup::NotFound));
    CHECK(t.map("/a.txt/x") == TempTree::refused(FileLookup::NotFound));
    CHECK(t.map("/index.html.") == TempTree::refused(FileLookup::NotFound));
  }

  TEST_CASE("symlinks inside the root are followed, out of it refused") {
    TempTree t;
    CHECK(t.map("/link_in") == t.root + "/a.txt");
    CHECK(t.map("/sub/up/a.txt") == t.root + "/a.txt");
    CHECK(t.map("/sub/up/") == t.root + "/index.html");
    CHECK(t.map("/link_out") == TempTree::refused(FileLookup::Forbidden));
    CHECK(t.map("/dir_out/secret.txt") == TempTree::refused(FileLookup::Forbidden));
    CHECK(t.map("/dir_out/") == TempTree::refused(FileLookup::Forbidden));
    CHECK(t.map("/dir_out") == TempTree::refused(FileLookup::Forbidden));
    CHECK(t.map("/idx_out/") == TempTree::refused(FileLookup::Forbidden));
    CHECK(t.map("/loop") == TempTree::refused(FileLookup::Forbidden));
  }

  TEST_CASE("special files are refused") {
    TempTree t;
    CHECK(t.map("/fifo") == TempTree::refused(FileLookup::Forbidden));
  }

  TEST_CASE("unreadable directories are Forbidden") {
    TempTree t;
    if (::geteuid() == 0) return;  // root reads everything; nothing to test
    std::filesystem::create_directories(t.root + "/locked/inner");
    REQUIRE(::chmod((t.root + "/locked").c_str(), 0) == 0);
    CHECK(t.map("/locked/inner/x") == TempTree::refused(FileLookup::Forbidden));
    ::chmod((t.root + "/locked").c_str(), 0700);
  }

  TEST_CASE("the root may be given with a trailing slash, or be a prefix of a sibling") {
    TempTree t;
    CHECK(http::map_to_file(t.root + "/", "/a.txt") ==
          std::variant<std::string, FileLookup>(t.root + "/a.txt"));
    // "<base>/root" must not accept "<base>/root2/...": containment is per segment.
    std::filesystem::create_directories(t.base + "/root2");
    TempTree::write(t.base + "/root2/x.txt", "x");
    REQUIRE(::symlink("../root2/x.txt", (t.root + "/sibling").c_str()) == 0);
    CHECK(t.map("/sibling") == TempTree::refused(FileLookup::Forbidden));
  }

  TEST_CASE("hostile URLs never reach outside, end to end") {
    TempTree t;
    const char* attacks[] = {"/../outside/secret.txt", "/%2e%2e/outside/secret.txt",
                             "/..%2foutside%2fsecret.txt", "/%c0%ae%c0%ae/outside/secret.txt",
                             "/link_out", "/dir_out/secret.txt", "/sub/up/../../outside/secret.txt",
                             "/sub/up/up/outside/secret.txt", "//..//outside/secret.txt"};
    for (const char* raw : attacks) {
      CAPTURE(raw);
      auto norm = http::normalise_request_path(raw);
      if (auto* path = std::get_if<std::string>(&norm)) {
        auto mapped = http::map_to_file(t.root, *path);
        if (auto* file = std::get_if<std::string>(&mapped)) {
          CHECK(file->starts_with(t.root + "/"));
        }
      }
    }
  }
}
