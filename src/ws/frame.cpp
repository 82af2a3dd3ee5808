#include "ws/frame.hpp"

#include <algorithm>
#include <cstring>

namespace netwine::ws {

namespace {

bool is_control(Opcode op) { return (static_cast<uint8_t>(op) & 0x08) != 0; }

bool is_known_opcode(uint8_t op) {
    switch (op) {
        case 0: case 1: case 2: case 8: case 9: case 10: return true;
        default: return false;
    }
}

uint64_t read_be(const uint8_t* p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v = (v << 8) | p[i];
    return v;
}

void write_be(uint8_t* p, uint64_t v, size_t n) {
    for (size_t i = n; i-- > 0;) {
        p[i] = static_cast<uint8_t>(v);
        v >>= 8;
    }
}

}  // namespace

bool is_valid_wire_close_code(uint16_t code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

// --- Masking ---------------------------------------------------------------

void copy_masked(uint8_t* dst, const uint8_t* src, size_t len, const uint8_t key[4], size_t offset_in_payload) {
    // Key bytes in the order they meet src[0], src[1], ...: the key rotated
    // by the running offset, repeated twice to fill a 64-bit word. Because the
    // pattern has period 4 and 8 is a multiple of it, the same word fits every
    // 8-byte step, so the main loop needs no per-byte index arithmetic.
    uint8_t k[8];
    for (size_t i = 0; i < 8; ++i) k[i] = key[(offset_in_payload + i) & 3];
    uint64_t k64;
    std::memcpy(&k64, k, sizeof k64);

    // 32 bytes a step as a vector (GCC/Clang vector extension): SSE2 or AVX
    // instructions at any optimisation level. -O2 (the default build) does not
    // vectorise the word loop below by itself: the possible overlap of dst and
    // src would need a runtime check its cost model refuses.
    using Vec = uint64_t __attribute__((vector_size(32)));
    const Vec kv = {k64, k64, k64, k64};
    size_t i = 0;
    for (; i + sizeof(Vec) <= len; i += sizeof(Vec)) {
        Vec w;
        std::memcpy(&w, src + i, sizeof w);  // unaligned-safe; the whole load before the store (dst may be src)
        w ^= kv;
        std::memcpy(dst + i, &w, sizeof w);
    }
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        std::memcpy(&w, src + i, sizeof w);
        w ^= k64;
        std::memcpy(dst + i, &w, sizeof w);
    }
    for (; i < len; ++i) dst[i] = src[i] ^ k[i & 7];  // i starts a multiple of 8
}

void apply_mask(uint8_t* data, size_t len, const uint8_t key[4], size_t offset_in_payload) {
    copy_masked(data, data, len, key, offset_in_payload);
}

void Handler::on_masked_data(Opcode message_type, std::span<uint8_t> masked, const uint8_t key[4],
                             size_t offset) {
    apply_mask(masked.data(), masked.size(), key, offset);
    on_data(message_type, masked);
}

// --- Encoding ----------------------------------------------------------------

size_t encode_header(uint8_t out[kMaxHeader], Opcode op, bool fin, uint64_t payload_len,
                     const uint8_t* mask_key) {
    out[0] = static_cast<uint8_t>((fin ? 0x80 : 0x00) | static_cast<uint8_t>(op));
    const uint8_t mask_bit = mask_key ? 0x80 : 0x00;
    size_t n;
    if (payload_len < 126) {
        out[1] = static_cast<uint8_t>(mask_bit | payload_len);
        n = 2;
    } else if (payload_len <= 0xFFFF) {
        out[1] = mask_bit | 126;
        write_be(out + 2, payload_len, 2);
        n = 4;
    } else {
        out[1] = mask_bit | 127;
        write_be(out + 2, payload_len, 8);
        n = 10;
    }
    if (mask_key) {
        std::memcpy(out + n, mask_key, 4);
        n += 4;
    }
    return n;
}

std::vector<uint8_t> encode_frame(Opcode op, std::span<const uint8_t> payload, bool fin,
                                  const uint8_t* mask_key) {
    uint8_t header[kMaxHeader];
    const size_t hlen = encode_header(header, op, fin, payload.size(), mask_key);
    std::vector<uint8_t> out(hlen + payload.size());
    std::memcpy(out.data(), header, hlen);
    if (!payload.empty()) std::memcpy(out.data() + hlen, payload.data(), payload.size());
    if (mask_key) apply_mask(out.data() + hlen, payload.size(), mask_key, 0);
    return out;
}

std::vector<uint8_t> encode_close(uint16_t code, std::string_view reason,
                                  const uint8_t* mask_key) {
    if (code == static_cast<uint16_t>(CloseCode::NoStatus)) {
        return encode_frame(Opcode::Close, {}, true, mask_key);
    }
    if (!is_valid_utf8(reason)) reason = {};
    if (reason.size() > kMaxCloseReason) {
        // Back up from the first excluded byte to a lead byte, so the code
        // point it belongs to is dropped whole.
        size_t cut = kMaxCloseReason;
        while (cut > 0 && (static_cast<uint8_t>(reason[cut]) & 0xC0) == 0x80) --cut;
        reason = reason.substr(0, cut);
    }
    uint8_t payload[kMaxControlPayload];
    write_be(payload, code, 2);
    if (!reason.empty()) std::memcpy(payload + 2, reason.data(), reason.size());
    return encode_frame(Opcode::Close, {payload, 2 + reason.size()}, true, mask_key);
}

// --- Decoding ------------------------------------------------------------------

Decoder::Decoder(Role role, uint64_t max_message_size)
    : role_(role), max_message_size_(max_message_size) {}

std::optional<ProtocolError> Decoder::fail(CloseCode code, std::string reason) {
    state_ = State::Failed;
    error_ = ProtocolError{code, std::move(reason)};
    return error_;
}

std::optional<ProtocolError> Decoder::feed(std::span<uint8_t> chunk, Handler& h) {
    uint8_t* p = chunk.data();
    uint8_t* const end = p + chunk.size();

    // Each state consumes what it can and either moves to the next state or
    // returns because the chunk is used up. Zero-length payloads complete in
    // start_payload(), so no state waits for bytes it does not need.
    for (;;) {
        switch (state_) {
            case State::Failed:
                return error_;

            case State::Closed:
                return std::nullopt;

            case State::Header: {
                if (header_have_ < 2) {
                    if (p == end) return std::nullopt;
                    const size_t take = std::min(2 - header_have_, static_cast<size_t>(end - p));
                    std::memcpy(header_ + header_have_, p, take);
                    header_have_ += take;
                    p += take;
                    if (header_have_ < 2) return std::nullopt;
                    // Fail fast on what the first two bytes already tell us.
                    if (auto e = check_first_two_bytes()) return e;
                }
                if (header_have_ < header_need_) {
                    if (p == end) return std::nullopt;
                    const size_t take =
                        std::min(header_need_ - header_have_, static_cast<size_t>(end - p));
                    std::memcpy(header_ + header_have_, p, take);
                    header_have_ += take;
                    p += take;
                    if (header_have_ < header_need_) return std::nullopt;
                }
                if (auto e = start_payload(h)) return e;
                break;
            }

            case State::DataPayload: {
                if (p == end) return std::nullopt;
                const size_t take = static_cast<size_t>(
                    std::min<uint64_t>(payload_left_, static_cast<uint64_t>(end - p)));
                if (auto e = deliver_data({p, take}, h)) return e;
                p += take;
                if (payload_left_ == 0) {
                    if (auto e = finish_data_frame(h)) return e;
                }
                break;
            }

            case State::ControlPayload: {
                if (p == end) return std::nullopt;
                const size_t take = static_cast<size_t>(
                    std::min<uint64_t>(payload_left_, static_cast<uint64_t>(end - p)));
                std::memcpy(control_ + control_have_, p, take);
                control_have_ += take;
                payload_left_ -= take;
                p += take;
                if (payload_left_ == 0) {
                    if (auto e = finish_control_frame(h)) return e;
                }
                break;
            }
        }
    }
}

std::optional<ProtocolError> Decoder::check_first_two_bytes() {
    const uint8_t b0 = header_[0];
    const uint8_t b1 = header_[1];
    fin_ = (b0 & 0x80) != 0;
    masked_ = (b1 & 0x80) != 0;
    const uint8_t len7 = b1 & 0x7F;

    if (b0 & 0x70) {
        return fail(CloseCode::ProtocolError, "reserved bit set with no extension negotiated");
    }
    if (!is_known_opcode(b0 & 0x0F)) {
        return fail(CloseCode::ProtocolError, "reserved opcode " + std::to_string(b0 & 0x0F));
    }
    opcode_ = static_cast<Opcode>(b0 & 0x0F);

    if (is_control(opcode_)) {
        if (!fin_) return fail(CloseCode::ProtocolError, "fragmented control frame");
        if (len7 > kMaxControlPayload) {
            return fail(CloseCode::ProtocolError, "control frame payload over 125 bytes");
        }
    } else if (opcode_ == Opcode::Continuation) {
        if (!message_type_) {
            return fail(CloseCode::ProtocolError, "continuation frame with no message in progress");
        }
    } else if (message_type_) {
        return fail(CloseCode::ProtocolError,
                    "new data message while a fragmented message is in progress");
    }

    if (role_ == Role::Server && !masked_) {
        return fail(CloseCode::ProtocolError, "unmasked frame from a client");
    }
    if (role_ == Role::Client && masked_) {
        return fail(CloseCode::ProtocolError, "masked frame from a server");
    }

    header_need_ = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (masked_ ? 4 : 0);
    return std::nullopt;
}

std::optional<ProtocolError> Decoder::start_payload(Handler& h) {
    const uint8_t len7 = header_[1] & 0x7F;
    size_t at = 2;
    uint64_t len = len7;
    if (len7 == 126) {
        len = read_be(header_ + 2, 2);
        at = 4;
    } else if (len7 == 127) {
        len = read_be(header_ + 2, 8);
        at = 10;
        if (len >> 63) {
            return fail(CloseCode::ProtocolError, "64-bit payload length with the top bit set");
        }
    }
    if (masked_) std::memcpy(mask_key_, header_ + at, 4);
    payload_left_ = len;
    payload_seen_ = 0;

    if (is_control(opcode_)) {
        control_have_ = 0;
        state_ = State::ControlPayload;
        return len == 0 ? finish_control_frame(h) : std::nullopt;
    }

    // message_size_ <= max_message_size_ always holds, so this cannot wrap.
    if (len > max_message_size_ - message_size_) {
        return fail(CloseCode::MessageTooBig,
                    "message exceeds " + std::to_string(max_message_size_) + " bytes");
    }
    if (opcode_ != Opcode::Continuation) {
        message_type_ = opcode_;
        message_size_ = 0;
        utf8_.reset();
    }
    message_size_ += len;
    state_ = State::DataPayload;
    return len == 0 ? finish_data_frame(h) : std::nullopt;
}

std::optional<ProtocolError> Decoder::deliver_data(std::span<uint8_t> piece, Handler& h) {
    // Only the low two bits of the offset matter to the mask; reducing here
    // keeps the 64-bit count from being narrowed on 32-bit targets.
    const size_t mask_offset = static_cast<size_t>(payload_seen_ & 3);
    if (masked_ && *message_type_ != Opcode::Text) {
        payload_seen_ += piece.size();
        payload_left_ -= piece.size();
        h.on_masked_data(*message_type_, piece, mask_key_, mask_offset);
        return std::nullopt;
    }
    if (masked_) apply_mask(piece.data(), piece.size(), mask_key_, mask_offset);
    payload_seen_ += piece.size();
    payload_left_ -= piece.size();
    if (*message_type_ == Opcode::Text && !utf8_.feed(piece)) {
        return fail(CloseCode::InvalidPayload, "text message is not valid UTF-8");
    }
    h.on_data(*message_type_, piece);
    return std::nullopt;
}

std::optional<ProtocolError> Decoder::finish_data_frame(Handler& h) {
    header_have_ = 0;
    header_need_ = 2;
    state_ = State::Header;
    if (!fin_) return std::nullopt;

    const Opcode type = *message_type_;
    if (type == Opcode::Text && !utf8_.complete()) {
        return fail(CloseCode::InvalidPayload, "text message ends inside a UTF-8 sequence");
    }
    message_type_.reset();
    message_size_ = 0;
    h.on_message_end(type);
    return std::nullopt;
}

std::optional<ProtocolError> Decoder::finish_control_frame(Handler& h) {
    header_have_ = 0;
    header_need_ = 2;
    state_ = State::Header;
    if (masked_) apply_mask(control_, control_have_, mask_key_, 0);
    const std::span<const uint8_t> payload{control_, control_have_};

    switch (opcode_) {
        case Opcode::Ping:
            h.on_ping(payload);
            return std::nullopt;
        case Opcode::Pong:
            h.on_pong(payload);
            return std::nullopt;
        case Opcode::Close:
            break;
        default:  // check_first_two_bytes() admits no other control opcode
            return fail(CloseCode::InternalError, "unexpected control opcode");
    }

    if (payload.empty()) {
        state_ = State::Closed;
        h.on_close(std::nullopt, {});
        return std::nullopt;
    }
    if (payload.size() == 1) {
        return fail(CloseCode::ProtocolError, "close frame with a 1-byte payload");
    }
    const auto code = static_cast<uint16_t>(read_be(control_, 2));
    if (!is_valid_wire_close_code(code)) {
        return fail(CloseCode::ProtocolError, "invalid close code " + std::to_string(code));
    }
    const std::string_view reason{reinterpret_cast<const char*>(control_ + 2), payload.size() - 2};
    if (!is_valid_utf8(reason)) {
        return fail(CloseCode::InvalidPayload, "close reason is not valid UTF-8");
    }
    state_ = State::Closed;
    h.on_close(code, reason);
    return std::nullopt;
}

}  // namespace netwine::ws
