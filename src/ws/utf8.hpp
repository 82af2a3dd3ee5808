// Incremental UTF-8 validation for WebSocket text messages and close reasons
// (RFC 6455 5.6 and 8.1: invalid UTF-8 fails the connection with 1007).
//
// Pure: no I/O. The validator is fed a message in arbitrary pieces, because a
// text message arrives split across frames and across socket reads, and a
// code point may be cut anywhere.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace netwine::ws {

// Accepts exactly the well-formed UTF-8 of RFC 3629 / Unicode table 3-7:
// rejects overlong forms (C0 80, E0 80 80, F0 80 80 80), UTF-16 surrogates
// (U+D800..U+DFFF, i.e. ED A0..BF xx), code points above U+10FFFF
// (F4 90.. and F5..FF), and stray or missing continuation bytes.
//
// It fails fast: feed() returns false at the first piece that contains an
// invalid byte, so a peer cannot make us buffer or relay the rest of a bad
// message (Autobahn case 6.4 expects this).
class Utf8Validator {
public:
    // Validates the next piece. Returns false once the input so far is invalid;
    // the validator then stays failed until reset().
    bool feed(std::span<const uint8_t> bytes);

    // True when the input so far is valid and ends on a code point boundary.
    // A message that ends with complete() == false is invalid (truncated
    // sequence), even though every feed() returned true.
    bool complete() const { return !failed_ && pending_ == 0; }

    bool failed() const { return failed_; }

    // Forget everything: ready for the next message.
    void reset() { *this = Utf8Validator{}; }

private:
    // Continuation bytes still expected for the current code point (0..3).
    uint8_t pending_ = 0;
    // Allowed range of the NEXT continuation byte. The second byte of some
    // sequences has a narrower range than 80..BF; that is how overlongs,
    // surrogates and > U+10FFFF are rejected without decoding the code point.
    uint8_t lo_ = 0x80;
    uint8_t hi_ = 0xBF;
    bool failed_ = false;
};

// Whole-string convenience: valid and complete.
bool is_valid_utf8(std::string_view s);

}  // namespace netwine::ws
