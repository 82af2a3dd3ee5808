// netwine.v1 client message parsing (ws/v1.hpp), shared by the event loop's
// WebSocket and the bulk relay thread: the header may arrive in any pieces, the
// reader keeps its place across them, and every refusal has its code and reason.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ws/v1.hpp"

using namespace netwine::ws;

namespace {

std::span<const uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

TEST_CASE("v1::Reader takes the 8-byte offset header from pieces of any size") {
  uint8_t be[v1::kOffsetHeader];
  v1::put_offset(be, 0x0102030405060708ull);
  std::vector<uint8_t> msg(be, be + sizeof be);
  msg.insert(msg.end(), {'x', 'y', 'z'});
  for (size_t cut = 0; cut <= msg.size(); ++cut) {
    CAPTURE(cut);
    v1::Reader r;
    size_t a = r.take_header({msg.data(), cut});
    CHECK(a == std::min(cut, v1::kOffsetHeader));
    CHECK(r.have_header() == (cut >= v1::kOffsetHeader));
    size_t b = r.take_header({msg.data() + a, msg.size() - a});
    CHECK(a + b == v1::kOffsetHeader);
    CHECK(r.have_header());
    CHECK(r.header_missing() == 0);
    CHECK(r.offset() == 0x0102030405060708ull);
    r.advance(3);
    CHECK(r.offset() == 0x0102030405060708ull + 3);
    CHECK_FALSE(r.end_binary());
    CHECK(r.header_missing() == v1::kOffsetHeader);  // ready for the next message
  }
}

TEST_CASE("v1::Reader refuses a data message shorter than its header with 1002") {
  v1::Reader r;
  const uint8_t four[4] = {0, 0, 0, 1};
  r.take_header(four);
  auto f = r.end_binary();
  REQUIRE(f);
  CHECK(f->code == 1002);
  CHECK(f->reason == "data message shorter than its 8-byte offset");
  CHECK_FALSE(r.have_header());
}

TEST_CASE("v1::Reader parses acknowledgements and refuses anything else") {
  v1::Reader r;
  REQUIRE_FALSE(r.add_text(bytes("A 12")));
  REQUIRE_FALSE(r.add_text(bytes("345")));  // a message may come in pieces
  auto a = r.end_text();
  CHECK_FALSE(a.failure);
  CHECK(a.offset == 12345);

  REQUIRE_FALSE(r.add_text(bytes("A 18446744073709551615")));
  CHECK(r.end_text().offset == 18446744073709551615ull);

  for (const char* bad : {"A 18446744073709551616", "A 12x", "A ", "A -1", "A  1"}) {
    CAPTURE(bad);
    REQUIRE_FALSE(r.add_text(bytes(bad)));
    auto b = r.end_text();
    REQUIRE(b.failure);
    CHECK(b.failure->code == 1002);
    CHECK(b.failure->reason == "malformed acknowledgement");
  }
  for (const char* other : {"hello", "B 1", "A", ""}) {
    CAPTURE(other);
    REQUIRE_FALSE(r.add_text(bytes(other)));
    auto b = r.end_text();
    REQUIRE(b.failure);
    CHECK(b.failure->code == 1003);
  }
  // Longer than any acknowledgement: refused as it arrives, not at its end.
  auto f = r.add_text(bytes(std::string(v1::kMaxText + 1, '1')));
  REQUIRE(f);
  CHECK(f->code == 1003);
}

TEST_CASE("v1 wording and encodings") {
  CHECK(v1::gap_reason(42) == "upstream offset gap, expected 42");
  CHECK(v1::ack_past_reason(9, 5) == "acknowledgement 9 is past the data sent (5)");
  CHECK(v1::ack_text(77) == "A 77");
  uint8_t be[v1::kOffsetHeader];
  v1::put_offset(be, 258);
  CHECK(std::vector<uint8_t>(be, be + 8) == std::vector<uint8_t>{0, 0, 0, 0, 0, 0, 1, 2});
  CHECK(v1::parse_u64("0") == 0u);
  CHECK_FALSE(v1::parse_u64(""));
  CHECK_FALSE(v1::parse_u64("+1"));
}
