#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "tunnel/offsets.hpp"

using namespace netwine::tunnel;
using Kind = UpstreamDecision::Kind;

TEST_SUITE("tunnel offsets") {
  TEST_CASE("upstream: apply, duplicate, overlap, gap") {
    CHECK(decide_upstream(0, 0, 10).kind == Kind::Apply);
    CHECK(decide_upstream(0, 0, 10).skip == 0);
    CHECK(decide_upstream(10, 0, 10).kind == Kind::Duplicate);  // retried send
    CHECK(decide_upstream(10, 5, 3).kind == Kind::Duplicate);   // wholly inside
    auto overlap = decide_upstream(10, 5, 10);
    CHECK(overlap.kind == Kind::Apply);
    CHECK(overlap.skip == 5);
    CHECK(decide_upstream(10, 11, 1).kind == Kind::Gap);
    CHECK(decide_upstream(10, 10, 0).kind == Kind::Duplicate);  // empty send: no-op
  }

  TEST_CASE("upstream: a stream sent in random pieces, with retries and reordering, arrives once") {
    // Simulates a client that resends from arbitrary earlier offsets (as after a
    // dropped request) and sometimes sends ahead (a gap): the target must see
    // every byte exactly once, in order.
    std::mt19937 rng(1234);
    std::string source(20000, '\0');
    for (auto& c : source) c = static_cast<char>(rng());
    std::string target;
    uint64_t expected = 0, sent_hi = 0;
    int gaps = 0;
    for (int step = 0; step < 20000 && target.size() < source.size(); ++step) {
      uint64_t hi = std::min<uint64_t>(source.size(), sent_hi + 1 + rng() % 700);
      uint64_t start = hi > 0 ? rng() % (hi + 1) : 0;
      if (rng() % 5 == 0) start = std::min<uint64_t>(expected + 1 + rng() % 50, hi);  // try ahead
      uint64_t len = hi - start;
      auto d = decide_upstream(expected, start, len);
      if (d.kind == Kind::Gap) {
        ++gaps;
        continue;
      }
      if (d.kind == Kind::Apply) {
        target += source.substr(static_cast<size_t>(start + d.skip), static_cast<size_t>(len - d.skip));
        expected += len - d.skip;
      }
      sent_hi = std::max(sent_hi, hi);
    }
    CHECK(gaps > 0);
    CHECK(target == source.substr(0, target.size()));
    CHECK(target.size() == source.size());
  }

  TEST_CASE("acks: advance, stale, invalid") {
    auto a = decide_ack(100, 200, 150);
    CHECK(a.kind == AckDecision::Kind::Advance);
    CHECK(a.drop == 50);
    CHECK(decide_ack(100, 200, 200).drop == 100);
    CHECK(decide_ack(100, 200, 100).kind == AckDecision::Kind::Stale);
    CHECK(decide_ack(100, 200, 50).kind == AckDecision::Kind::Stale);
    CHECK(decide_ack(100, 200, 201).kind == AckDecision::Kind::Invalid);
  }
}
