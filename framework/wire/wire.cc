#include "framework/wire/wire.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mpx {
namespace wire {
namespace {

class Writer {
 public:
  explicit Writer(char* out) : out_(out) {}
  void byte(std::uint8_t b) { out_[n_++] = static_cast<char>(b); }
  void be(std::uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) byte(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  // Always the fixed-width form: headers have a constant shape, which keeps the
  // decoder's job trivial and the size predictable.
  void u8(std::uint8_t v) { byte(0xcc), byte(v); }
  void u32(std::uint32_t v) { byte(0xce), be(v, 4); }
  void u64(std::uint64_t v) { byte(0xcf), be(v, 8); }
  void i32(std::int32_t v) { byte(0xd2), be(static_cast<std::uint32_t>(v), 4); }
  void str(std::string_view s) {
    byte(0xd9), byte(static_cast<std::uint8_t>(s.size()));
    // An empty string_view may hold a null data(): memcpy from null is undefined even
    // for zero bytes (UBSan aborts every default Header's encoding).
    if (!s.empty()) std::memcpy(out_ + n_, s.data(), s.size());
    n_ += s.size();
  }
  std::size_t size() const { return n_; }

 private:
  char* out_;
  std::size_t n_ = 0;
};

// Minimal validating msgpack reader for the header's scalar fields. Accepts any
// msgpack integer encoding (other encoders may pick compact forms).
class Reader {
 public:
  Reader(const char* d, std::size_t n) : d_(reinterpret_cast<const std::uint8_t*>(d)), n_(n) {}
  bool have(std::size_t k) const { return n_ - i_ >= k; }
  bool array(std::uint32_t* len) {
    if (!have(1)) return false;
    const std::uint8_t b = d_[i_];
    if ((b & 0xf0) == 0x90) return ++i_, *len = b & 0x0f, true;
    if (b == 0xdc && have(3)) return *len = static_cast<std::uint32_t>(be(i_ + 1, 2)), i_ += 3, true;
    return false;
  }
  // Reads any integer; fails if it is negative and !allow_negative.
  bool integer(std::int64_t* sv, std::uint64_t* uv, bool* negative) {
    if (!have(1)) return false;
    const std::uint8_t b = d_[i_];
    *negative = false;
    if (b <= 0x7f) return ++i_, *uv = b, true;
    if (b >= 0xe0) return ++i_, *negative = true, *sv = static_cast<std::int8_t>(b), true;
    int bytes = 0;
    bool is_signed = false;
    switch (b) {
      case 0xcc: bytes = 1; break;
      case 0xcd: bytes = 2; break;
      case 0xce: bytes = 4; break;
      case 0xcf: bytes = 8; break;
      case 0xd0: bytes = 1, is_signed = true; break;
      case 0xd1: bytes = 2, is_signed = true; break;
      case 0xd2: bytes = 4, is_signed = true; break;
      case 0xd3: bytes = 8, is_signed = true; break;
      default: return false;
    }
    if (!have(1 + bytes)) return false;
    const std::uint64_t raw = be(i_ + 1, bytes);
    i_ += 1 + bytes;
    if (!is_signed) return *uv = raw, true;
    const int shift = 64 - 8 * bytes;
    const std::int64_t s = static_cast<std::int64_t>(raw << shift) >> shift;
    if (s < 0) return *negative = true, *sv = s, true;
    return *uv = static_cast<std::uint64_t>(s), true;
  }
  bool unsigned_max(std::uint64_t max, std::uint64_t* out) {
    std::int64_t s;
    bool neg;
    return integer(&s, out, &neg) && !neg && *out <= max;
  }
  bool signed32(std::int32_t* out) {
    std::int64_t s = 0;
    std::uint64_t u = 0;
    bool neg;
    if (!integer(&s, &u, &neg)) return false;
    if (neg) return s >= INT32_MIN ? (*out = static_cast<std::int32_t>(s), true) : false;
    return u <= INT32_MAX ? (*out = static_cast<std::int32_t>(u), true) : false;
  }
  bool str(std::string_view* out) {
    if (!have(1)) return false;
    const std::uint8_t b = d_[i_];
    std::size_t len, hdr;
    if ((b & 0xe0) == 0xa0) {
      len = b & 0x1f, hdr = 1;
    } else if (b == 0xd9 && have(2)) {
      len = d_[i_ + 1], hdr = 2;
    } else if (b == 0xda && have(3)) {
      len = be(i_ + 1, 2), hdr = 3;
    } else {
      return false;
    }
    if (len > kMaxNameSize || !have(hdr + len)) return false;
    *out = std::string_view(reinterpret_cast<const char*>(d_ + i_ + hdr), len);
    i_ += hdr + len;
    return true;
  }
  bool at_end() const { return i_ == n_; }

 private:
  std::uint64_t be(std::size_t at, int bytes) const {
    std::uint64_t v = 0;
    for (int k = 0; k < bytes; ++k) v = (v << 8) | d_[at + k];
    return v;
  }
  const std::uint8_t* d_;
  std::size_t n_;
  std::size_t i_ = 0;
};

bool fail(std::string* why, const char* reason) {
  if (why) *why = reason;
  return false;
}

}  // namespace

const char* type_name(Type t) {
  switch (t) {
    case Type::kHello: return "HELLO";
    case Type::kSubmit: return "SUBMIT";
    case Type::kCancel: return "CANCEL";
    case Type::kShutdown: return "SHUTDOWN";
    case Type::kTerminate: return "TERMINATE";
    case Type::kWelcome: return "WELCOME";
    case Type::kResult: return "RESULT";
    case Type::kLost: return "LOST";
    case Type::kPoolError: return "POOL_ERROR";
    case Type::kReady: return "READY";
    case Type::kConfig: return "CONFIG";
    case Type::kInitFailed: return "INIT_FAILED";
    case Type::kTask: return "TASK";
    case Type::kStop: return "STOP";
    case Type::kPing: return "PING";
    case Type::kPong: return "PONG";
    case Type::kConfigured: return "CONFIGURED";
    case Type::kCall: return "CALL";
    case Type::kReply: return "REPLY";
    case Type::kData: return "DATA";
    case Type::kLane: return "LANE";
    case Type::kLaneEnd: return "LANE_END";
    case Type::kResubmit: return "RESUBMIT";
    case Type::kLaneFree: return "LANE_FREE";
    case Type::kDescriptors: return "DESCRIPTORS";
  }
  return "UNKNOWN";
}

std::size_t encode(const Header& h, char* out) {
  // Checked in every build mode: without NDEBUG's assert a longer name would overflow
  // the caller's kMaxHeaderSize buffer (and its length byte would wrap).
  if (h.name.size() > kMaxNameSize) {
    std::fprintf(stderr, "mpx: wire::encode: name of %zu bytes exceeds the %zu-byte limit: %.*s...\n",
                 h.name.size(), kMaxNameSize, 64, h.name.data());
    std::abort();
  }
  if (h.fds > kMaxFds) {
    std::fprintf(stderr, "mpx: wire::encode: %u descriptors exceed the limit of %u per frame\n",
                 static_cast<unsigned>(h.fds), static_cast<unsigned>(kMaxFds));
    std::abort();
  }
  Writer w(out);
  // The ninth field only when there are descriptors: every other frame keeps the
  // eight-field shape (and size) it always had.
  w.byte(h.fds > 0 ? 0x99 : 0x98);  // fixarray of 9 or 8
  w.u8(kVersion);
  w.u8(static_cast<std::uint8_t>(h.type));
  w.u64(h.call_id);
  w.u64(h.start);
  w.u32(h.count);
  w.i32(h.pid);
  w.u8(h.flags);
  w.str(h.name);
  if (h.fds > 0) w.u8(h.fds);
  return w.size();
}

std::string encode(const Header& h) {
  char buf[kMaxHeaderSize];
  return std::string(buf, encode(h, buf));
}

std::optional<Header> decode(const char* data, std::size_t size, std::string* why) {
  if (size > kMaxHeaderSize) return fail(why, "header frame too large"), std::nullopt;
  Reader r(data, size);
  std::uint32_t len = 0;
  if (!r.array(&len)) return fail(why, "header is not a msgpack array"), std::nullopt;
  if (len != 8 && len != 9) return fail(why, "header array must have 8 or 9 fields"), std::nullopt;
  std::uint64_t version = 0, type = 0, count = 0, flags = 0;
  Header h;
  if (!r.unsigned_max(255, &version)) return fail(why, "bad version field"), std::nullopt;
  if (version != kVersion) return fail(why, "unsupported protocol version"), std::nullopt;
  if (!r.unsigned_max(static_cast<std::uint64_t>(Type::kLastType), &type) || type == 0) {
    return fail(why, "unknown message type"), std::nullopt;
  }
  h.type = static_cast<Type>(type);
  if (!r.unsigned_max(UINT64_MAX, &h.call_id)) return fail(why, "bad call id"), std::nullopt;
  if (!r.unsigned_max(UINT64_MAX, &h.start)) return fail(why, "bad start"), std::nullopt;
  if (!r.unsigned_max(UINT32_MAX, &count)) return fail(why, "bad count"), std::nullopt;
  h.count = static_cast<std::uint32_t>(count);
  if (!r.signed32(&h.pid)) return fail(why, "bad pid"), std::nullopt;
  if (!r.unsigned_max(255, &flags)) return fail(why, "bad flags"), std::nullopt;
  h.flags = static_cast<std::uint8_t>(flags);
  if (!r.str(&h.name)) return fail(why, "bad name"), std::nullopt;
  if (len == 9) {
    std::uint64_t fds = 0;
    if (!r.unsigned_max(kMaxFds, &fds) || fds == 0) return fail(why, "bad descriptor count"), std::nullopt;
    h.fds = static_cast<std::uint8_t>(fds);
  }
  if (!r.at_end()) return fail(why, "trailing bytes after header"), std::nullopt;
  return h;
}

}  // namespace wire
}  // namespace mpx
