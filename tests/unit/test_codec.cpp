#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tunnel/codec.hpp"
#include "tunnel/key.hpp"

using namespace netwine::tunnel;

namespace {

// A stream body with every frame kind, in the given framing.
std::string sample_body(Framing f) {
  std::vector<uint8_t> a = {'h', 'i', 0, 0xff, '\n'};
  std::string body = padding_line(40) + ok_line("AAAAAAAAAAAAAAAAAAAAAAAA");
  body += data_header(f, 0, a.size());
  if (f == Framing::Text) body += base64_encode(a) + "\n";
  else body.append(a.begin(), a.end());
  body += heartbeat_line();
  body += data_header(f, 5, 0);
  if (f == Framing::Text) body += "\n";
  body += recycle_line() + close_line(1000, "target closed the connection");
  return body;
}

std::vector<Frame> read_all(Framing f, const std::vector<std::string>& chunks) {
  FrameReader r(f);
  std::vector<Frame> out;
  for (const auto& c : chunks) {
    REQUIRE(r.feed(c));
    while (auto fr = r.next()) out.push_back(*fr);
    REQUIRE_FALSE(r.failed());
  }
  return out;
}

void check_sample(const std::vector<Frame>& fr) {
  REQUIRE(fr.size() == 7);
  CHECK(fr[0].type == Frame::Type::Padding);
  CHECK(fr[1].type == Frame::Type::Ok);
  CHECK(fr[1].key == "AAAAAAAAAAAAAAAAAAAAAAAA");
  CHECK(fr[2].type == Frame::Type::Data);
  CHECK(fr[2].offset == 0);
  CHECK(fr[2].payload == std::vector<uint8_t>{'h', 'i', 0, 0xff, '\n'});
  CHECK(fr[3].type == Frame::Type::Heartbeat);
  CHECK(fr[4].type == Frame::Type::Data);
  CHECK(fr[4].offset == 5);
  CHECK(fr[4].payload.empty());
  CHECK(fr[5].type == Frame::Type::Recycle);
  CHECK(fr[6].type == Frame::Type::Close);
  CHECK(fr[6].code == 1000);
  CHECK(fr[6].reason == "target closed the connection");
}

}  // namespace

TEST_SUITE("tunnel codec") {
  TEST_CASE("base64 round trips every length and matches RFC 4648 vectors") {
    CHECK(base64_encode(std::vector<uint8_t>{}) == "");
    std::string s = "foobar";
    const char* expect[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t n = 0; n <= 6; ++n) {
      std::vector<uint8_t> in(s.begin(), s.begin() + static_cast<long>(n));
      CHECK(base64_encode(in) == expect[n]);
      auto back = base64_decode(expect[n]);
      REQUIRE(back);
      CHECK(*back == in);
    }
    std::vector<uint8_t> all(256);
    for (int i = 0; i < 256; ++i) all[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
    CHECK(*base64_decode(base64_encode(all)) == all);
  }

  TEST_CASE("base64 rejects malformed input") {
    CHECK_FALSE(base64_decode("Zg="));      // length not a multiple of 4
    CHECK_FALSE(base64_decode("Z===") );    // too much padding
    CHECK_FALSE(base64_decode("Zg==Zg=="));  // data after padding
    CHECK_FALSE(base64_decode("Zm9v\n"));    // stray characters
    CHECK_FALSE(base64_decode("Zm-v"));      // base64url is not accepted here
    CHECK_FALSE(base64_decode("bGP="));      // non-canonical: bits under the padding set (fuzz finding)
    CHECK_FALSE(base64_decode("Zh=="));
  }

  TEST_CASE("every frame kind, split at every byte offset, in both framings") {
    for (Framing f : {Framing::Text, Framing::Binary}) {
      std::string body = sample_body(f);
      check_sample(read_all(f, {body}));
      for (size_t cut = 0; cut <= body.size(); ++cut)
        check_sample(read_all(f, {body.substr(0, cut), body.substr(cut)}));
      std::vector<std::string> bytes;
      for (char c : body) bytes.emplace_back(1, c);
      check_sample(read_all(f, bytes));
    }
  }

  TEST_CASE("binary data frames may contain newlines and frame-looking bytes") {
    std::string payload = "C 1000 x\nD 0 5\nOK y\n";
    std::string body = data_header(Framing::Binary, 42, payload.size()) + payload;
    auto fr = read_all(Framing::Binary, {body});
    REQUIRE(fr.size() == 1);
    CHECK(fr[0].offset == 42);
    CHECK(std::string(fr[0].payload.begin(), fr[0].payload.end()) == payload);
  }

  TEST_CASE("malformed frames fail the reader") {
    for (std::string bad : {"X\n", "D x abc\n", "D 1\n", "C abc\n", "\n", "D 0 Zg=\n", "OKx\n", "HH\n"}) {
      FrameReader r(Framing::Text);
      r.feed(bad);
      while (r.next()) {}
      CHECK_MESSAGE(r.failed(), bad);
    }
    FrameReader r(Framing::Binary);
    r.feed(std::string(kMaxControlLine + 1, 'P'));
    CHECK_FALSE(r.next());
    CHECK(r.failed());
  }

  TEST_CASE("close lines never carry newlines and keep reasons short") {
    std::string line = close_line(1011, "a\nb\rc" + std::string(300, 'x'));
    CHECK(line.find('\n') == line.size() - 1);
    CHECK(line.find('\r') == std::string::npos);
    CHECK(line.size() <= 2 + 4 + 1 + 123 + 1);
  }

  TEST_CASE("framing names") {
    CHECK(parse_framing("text") == Framing::Text);
    CHECK(parse_framing("binary") == Framing::Binary);
    CHECK_FALSE(parse_framing("json"));
  }
}

TEST_SUITE("tunnel keys") {
  TEST_CASE("keys are 24 url-safe characters and do not repeat") {
    std::vector<std::string> keys;
    for (int i = 0; i < 1000; ++i) {
      std::string k = make_key();
      CHECK(k.size() == kKeyLength);
      CHECK(looks_like_key(k));
      keys.push_back(k);
    }
    std::sort(keys.begin(), keys.end());
    CHECK(std::adjacent_find(keys.begin(), keys.end()) == keys.end());
    CHECK_FALSE(looks_like_key("short"));
    CHECK_FALSE(looks_like_key(std::string(24, '/')));
    CHECK_FALSE(looks_like_key(std::string(25, 'a')));
  }

  TEST_CASE("a key names its event loop in its first character, the rest stays random") {
    for (size_t loop = 0; loop < kMaxLoops; ++loop) {
      std::string a = make_key(loop), b = make_key(loop);
      CHECK(looks_like_key(a));
      CHECK(key_loop(a) == loop);
      CHECK(key_loop(b) == loop);
      CHECK(a.substr(1) != b.substr(1));
    }
    CHECK(key_loop("A") == 0);
    CHECK(key_loop("a") == 26);
    CHECK(key_loop("0") == 52);
    CHECK(key_loop("-") == 62);
    CHECK(key_loop("_") == 63);
    CHECK(key_loop("") == 0);
    CHECK(make_key(kMaxLoops + 3)[0] == make_key(3)[0]);  // numbers wrap, never index out of range
  }
}
