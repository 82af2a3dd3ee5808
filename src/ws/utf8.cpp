#include "ws/utf8.hpp"

#include <cstring>

namespace netwine::ws {

namespace {

// All-ASCII test for 8 bytes: any byte with its top bit set is non-ASCII.
constexpr uint64_t kHighBits = 0x8080808080808080ULL;

}  // namespace

bool Utf8Validator::feed(std::span<const uint8_t> bytes) {
    if (failed_) return false;
    const uint8_t* p = bytes.data();
    const uint8_t* const end = p + bytes.size();

    while (p < end) {
        if (pending_ == 0) {
            // Fast path: most relayed text (base64, JSON, ASCII protocols) is
            // pure ASCII, so skip it 8 bytes at a time. memcpy keeps the load
            // legal at any alignment; compilers emit one unaligned load.
            while (end - p >= 8) {
                uint64_t word;
                std::memcpy(&word, p, sizeof word);
                if (word & kHighBits) break;
                p += 8;
            }
            if (p == end) break;

            const uint8_t b = *p++;
            if (b < 0x80) continue;
            // Lead byte: how many continuation bytes follow, and the range of
            // the first one (Unicode 15, table 3-7).
            lo_ = 0x80;
            hi_ = 0xBF;
            if (b >= 0xC2 && b <= 0xDF) {
                pending_ = 1;
            } else if (b == 0xE0) {
                pending_ = 2;
                lo_ = 0xA0;  // below is overlong (< U+0800)
            } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
                pending_ = 2;
            } else if (b == 0xED) {
                pending_ = 2;
                hi_ = 0x9F;  // above is a surrogate (U+D800..U+DFFF)
            } else if (b == 0xF0) {
                pending_ = 3;
                lo_ = 0x90;  // below is overlong (< U+10000)
            } else if (b >= 0xF1 && b <= 0xF3) {
                pending_ = 3;
            } else if (b == 0xF4) {
                pending_ = 3;
                hi_ = 0x8F;  // above is > U+10FFFF
            } else {
                // 80..BF: continuation without a lead; C0, C1: always overlong;
                // F5..FF: beyond U+10FFFF or not UTF-8 at all.
                failed_ = true;
                return false;
            }
        } else {
            const uint8_t b = *p++;
            if (b < lo_ || b > hi_) {
                failed_ = true;
                return false;
            }
            --pending_;
            lo_ = 0x80;
            hi_ = 0xBF;
        }
    }
    return true;
}

bool is_valid_utf8(std::string_view s) {
    Utf8Validator v;
    return v.feed({reinterpret_cast<const uint8_t*>(s.data()), s.size()}) && v.complete();
}

}  // namespace netwine::ws
