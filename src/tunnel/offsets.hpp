// The offset bookkeeping of SPEC §2, without I/O. Downstream bytes are numbered
// from 0 by their position in the target's byte stream; so are upstream bytes.
#pragma once

#include <cstdint>

namespace netwine::tunnel {

// What to do with an upstream send of `length` bytes claiming to start at `offset`
// when the next byte the target should get is number `expected`.
struct UpstreamDecision {
  enum class Kind {
    Apply,      // write bytes [skip, length) of the send; `skip` were applied before
    Duplicate,  // everything in it was applied before: a harmless no-op
    Gap,        // it starts past `expected`: refuse (409), the client must resend from there
  } kind;
  uint64_t skip = 0;
};

constexpr UpstreamDecision decide_upstream(uint64_t expected, uint64_t offset, uint64_t length) {
  if (offset > expected) return {UpstreamDecision::Kind::Gap, 0};
  uint64_t already = expected - offset;
  if (already >= length) return {UpstreamDecision::Kind::Duplicate, length};
  return {UpstreamDecision::Kind::Apply, already};
}

// An acknowledgement that the client holds every downstream byte before `ack`,
// given that the server keeps bytes [base, end) and has produced up to `end`.
struct AckDecision {
  enum class Kind {
    Advance,  // drop `drop` bytes from the front of the kept buffer
    Stale,    // ack <= base: nothing new (a late or repeated ack); fine
    Invalid,  // ack > end: the client claims bytes that were never sent (400)
  } kind;
  uint64_t drop = 0;
};

constexpr AckDecision decide_ack(uint64_t base, uint64_t end, uint64_t ack) {
  if (ack > end) return {AckDecision::Kind::Invalid, 0};
  if (ack <= base) return {AckDecision::Kind::Stale, 0};
  return {AckDecision::Kind::Advance, ack - base};
}

}  // namespace netwine::tunnel
