#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <string_view>

#include "http/path.hpp"

using netwine::http::normalise_request_path;
using netwine::http::PathError;

namespace {

// The normalised path, or "ERR:<name>" so a failed CHECK shows what came back.
std::string norm(std::string_view raw) {
  auto r = normalise_request_path(raw);
  if (auto* s = std::get_if<std::string>(&r)) return *s;
  return std::string("ERR:") + netwine::http::to_string(std::get<PathError>(r));
}

PathError error_of(std::string_view raw) {
  auto r = normalise_request_path(raw);
  REQUIRE_MESSAGE(std::holds_alternative<PathError>(r), "accepted: " << norm(raw));
  return std::get<PathError>(r);
}

}  // namespace

TEST_SUITE("http.path") {
  TEST_CASE("plain paths pass through") {
    CHECK(norm("/") == "/");
    CHECK(norm("/index.html") == "/index.html");
    CHECK(norm("/a/b/c.js") == "/a/b/c.js");
    CHECK(norm("/dir/") == "/dir/");
  }

  TEST_CASE("empty and dot segments collapse, trailing slash is kept") {
    CHECK(norm("//etc//passwd") == "/etc/passwd");
    CHECK(norm("///") == "/");
    CHECK(norm("/a//") == "/a/");
    CHECK(norm("/a/./b/../c") == "/a/c");
    CHECK(norm("/.") == "/");
    CHECK(norm("/./") == "/");
    CHECK(norm("/a/.") == "/a/");
    CHECK(norm("/a/b/..") == "/a/");
    CHECK(norm("/a/..") == "/");
    CHECK(norm("/a/../") == "/");
    CHECK(norm("/a/b/../../c/") == "/c/");
  }

  TEST_CASE("percent-decoding") {
    CHECK(norm("/a%20b.html") == "/a b.html");
    CHECK(norm("/%41%62") == "/Ab");
    CHECK(norm("/caf%C3%A9.txt") == "/caf\xC3\xA9.txt");
    CHECK(norm("/caf\xC3\xA9.txt") == "/caf\xC3\xA9.txt");  // raw UTF-8 is fine too
    CHECK(norm("/a%3Fb") == "/a?b");                          // an encoded '?' is a name char
    // Encoded dots are dots (RFC 3986): resolved like literal ones.
    CHECK(norm("/a/%2e%2e/b") == "/b");
    CHECK(norm("/a/%2E/b") == "/a/b");
  }

  TEST_CASE("climbing above the root is refused") {
    CHECK(error_of("/..") == PathError::EscapesRoot);
    CHECK(error_of("/../") == PathError::EscapesRoot);
    CHECK(error_of("/../etc/passwd") == PathError::EscapesRoot);
    CHECK(error_of("/a/../../etc/passwd") == PathError::EscapesRoot);
    CHECK(error_of("/%2e%2e/") == PathError::EscapesRoot);
    CHECK(error_of("/%2E%2E/etc/passwd") == PathError::EscapesRoot);
    CHECK(error_of("/.%2e/") == PathError::EscapesRoot);
    CHECK(error_of("//../") == PathError::EscapesRoot);
    // ".." inside the tree that comes back down is fine, climbing out is not.
    CHECK(norm("/a/b/../../index.html") == "/index.html");
  }

  TEST_CASE("segments of three or more dots are refused") {
    CHECK(error_of("/...") == PathError::EscapesRoot);
    CHECK(error_of("/a/..../b") == PathError::EscapesRoot);
    CHECK(error_of("/%2e%2e%2e/") == PathError::EscapesRoot);
  }

  TEST_CASE("trailing dots and spaces are kept as part of the name") {
    CHECK(norm("/index.html.") == "/index.html.");
    CHECK(norm("/foo.") == "/foo.");
    CHECK(norm("/foo..") == "/foo..");
    CHECK(norm("/a%20") == "/a ");
    CHECK(norm("/.hidden") == "/.hidden");
    CHECK(norm("/..foo/") == "/..foo/");
  }

  TEST_CASE("encoded slashes and backslashes are refused") {
    CHECK(error_of("/%2f") == PathError::EncodedSlash);
    CHECK(error_of("/%2F") == PathError::EncodedSlash);
    CHECK(error_of("/..%2f") == PathError::EncodedSlash);
    CHECK(error_of("/..%2fetc%2fpasswd") == PathError::EncodedSlash);
    CHECK(error_of("/%2E%2E%2F") == PathError::EncodedSlash);
    CHECK(error_of("/a%2fb") == PathError::EncodedSlash);
    CHECK(error_of("/%5c") == PathError::EncodedSlash);
    CHECK(error_of("/..%5C..%5Cwindows") == PathError::EncodedSlash);
  }

  TEST_CASE("a raw backslash is refused") {
    CHECK(error_of("/..\\etc\\passwd") == PathError::EscapesRoot);
    CHECK(error_of("/a\\b") == PathError::EscapesRoot);
  }

  TEST_CASE("NUL bytes are refused, raw or encoded") {
    CHECK(error_of("/%00") == PathError::NulByte);
    CHECK(error_of("/index.html%00.png") == PathError::NulByte);
    CHECK(error_of(std::string_view("/a\0b", 4)) == PathError::NulByte);
    CHECK(error_of(std::string_view("/\0", 2)) == PathError::NulByte);
  }

  TEST_CASE("malformed escapes and control characters are refused") {
    CHECK(error_of("/%") == PathError::BadEncoding);
    CHECK(error_of("/%2") == PathError::BadEncoding);
    CHECK(error_of("/a%g0") == PathError::BadEncoding);
    CHECK(error_of("/a%0g") == PathError::BadEncoding);
    CHECK(error_of("/%%41") == PathError::BadEncoding);
    CHECK(error_of("/a%0d%0aSet-Cookie:x") == PathError::BadEncoding);
    CHECK(error_of("/a\tb") == PathError::BadEncoding);
    CHECK(error_of("/a%7f") == PathError::BadEncoding);
  }

  TEST_CASE("invalid UTF-8 is refused, overlong dots above all") {
    CHECK(error_of("/%c0%ae%c0%ae/") == PathError::BadUtf8);
    CHECK(error_of("/%c0%ae%c0%ae/etc/passwd") == PathError::BadUtf8);
    CHECK(error_of("/%C0%AF") == PathError::BadUtf8);        // overlong '/'
    CHECK(error_of("/%e0%80%ae") == PathError::BadUtf8);     // 3-byte overlong '.'
    CHECK(error_of("/%f0%80%80%ae") == PathError::BadUtf8);  // 4-byte overlong '.'
    CHECK(error_of("/%ed%a0%80") == PathError::BadUtf8);     // a surrogate
    CHECK(error_of("/%f4%90%80%80") == PathError::BadUtf8);  // above U+10FFFF
    CHECK(error_of("/%ff") == PathError::BadUtf8);
    CHECK(error_of("/%c3") == PathError::BadUtf8);           // truncated sequence
    CHECK(error_of("/\x80") == PathError::BadUtf8);          // stray continuation
    CHECK(norm("/%f0%9f%98%80") == "/\xF0\x9F\x98\x80");     // U+1F600 is fine
    CHECK(norm("/%ef%bf%bd") == "/\xEF\xBF\xBD");
  }

  TEST_CASE("relative and empty paths are refused") {
    CHECK(error_of("") == PathError::NotAbsolute);
    CHECK(error_of("*") == PathError::NotAbsolute);
    CHECK(error_of("index.html") == PathError::NotAbsolute);
    CHECK(error_of("../etc/passwd") == PathError::NotAbsolute);
    CHECK(error_of("%2findex.html") == PathError::NotAbsolute);
  }

  TEST_CASE("every error has a status: 403 for escapes, 400 otherwise") {
    using netwine::http::status_for;
    CHECK(status_for(PathError::EscapesRoot) == 403);
    for (auto e : {PathError::BadEncoding, PathError::NulByte, PathError::EncodedSlash,
                   PathError::NotAbsolute, PathError::BadUtf8}) {
      CHECK(status_for(e) == 400);
    }
  }

  TEST_CASE("a normalised path never leaves the root, for any short hostile input") {
    // Every string of up to 4 tokens from an alphabet of tricky pieces: whatever is
    // accepted must be absolute with no dot segments, no "//", no NUL or backslash.
    const char* pieces[] = {"/", ".", "..", "%2e", "%2f", "%5c", "%00", "a", "\\", "%c0%ae", "%"};
    std::string input;
    int accepted = 0;
    auto check = [&](const std::string& raw) {
      auto r = normalise_request_path(raw);
      if (auto* s = std::get_if<std::string>(&r)) {
        ++accepted;
        CHECK(s->front() == '/');
        CHECK(s->find("//") == std::string::npos);
        CHECK(s->find('\\') == std::string::npos);
        CHECK(s->find('\0') == std::string::npos);
        const std::string wrapped = *s + (s->back() == '/' ? "" : "/");
        CHECK(wrapped.find("/./") == std::string::npos);
        CHECK(wrapped.find("/../") == std::string::npos);
      }
    };
    std::function<void(int)> grow = [&](int depth) {
      check("/" + input);
      if (depth == 4) return;
      for (const char* p : pieces) {
        const size_t keep = input.size();
        input += p;
        grow(depth + 1);
        input.resize(keep);
      }
    };
    grow(0);
    CHECK(accepted > 100);
  }

  TEST_CASE("percent_encode_path keeps safe characters and encodes the rest") {
    using netwine::http::percent_encode_path;
    CHECK(percent_encode_path("/a/b-c_d.e~f/") == "/a/b-c_d.e~f/");
    CHECK(percent_encode_path("/a b?c#d%") == "/a%20b%3Fc%23d%25");
    CHECK(percent_encode_path("/caf\xC3\xA9/") == "/caf%C3%A9/");
    CHECK(percent_encode_path("/x\r\ny") == "/x%0D%0Ay");
    // Round trip through the normaliser.
    CHECK(norm(percent_encode_path("/a b/caf\xC3\xA9?/")) == "/a b/caf\xC3\xA9?/");
  }
}
