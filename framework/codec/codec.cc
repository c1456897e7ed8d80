// Definitions of the msgpack helpers declared in mpx/detail/codec.h: the readers every
// decoder of a task payload, a result chunk or an actor call goes through, with their
// fast paths (scalars and small arrays of scalars without msgpack-c's parser) and their
// guards against hostile lengths, and the names of exceptions as they travel.
#include <cxxabi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <typeinfo>

#include "mpx/detail/codec.h"

namespace mpx {
namespace detail {
namespace {

// Parses one object without building it, adding up the elements its arrays and maps
// claim (a map entry counts twice) and stopping as soon as they exceed the budget.
// Every element takes at least one byte, so no well-formed object of n bytes claims
// more than n.
class ClaimedElements : public msgpack::null_visitor {
 public:
  explicit ClaimedElements(std::size_t budget) : budget_(budget) {}
  bool start_array(std::uint32_t n) { return take(n); }
  bool start_map(std::uint32_t n) { return take(std::size_t{n} * 2); }
  bool exceeded() const { return exceeded_; }

 private:
  bool take(std::size_t n) {
    if (n > budget_) return exceeded_ = true, false;  // false stops the parse
    budget_ -= n;
    return true;
  }
  std::size_t budget_;
  bool exceeded_ = false;
};

}  // namespace

std::uint32_t read_array_header(const char* data, std::size_t size, std::size_t& off) {
  if (off >= size) throw DecodeError("payload truncated: expected an array");
  const auto* p = reinterpret_cast<const unsigned char*>(data + off);
  const std::size_t left = size - off;
  if ((p[0] & 0xf0) == 0x90) {
    off += 1;
    return p[0] & 0x0f;
  }
  if (p[0] == 0xdc && left >= 3) {
    off += 3;
    return (std::uint32_t{p[1]} << 8) | p[2];
  }
  if (p[0] == 0xdd && left >= 5) {
    off += 5;
    return (std::uint32_t{p[1]} << 24) | (std::uint32_t{p[2]} << 16) |
           (std::uint32_t{p[3]} << 8) | p[4];
  }
  throw DecodeError("payload is not a msgpack array");
}

namespace {

std::uint64_t big_endian(const unsigned char* p, int n) {
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

// A scalar at data[off] (nil, bool, integers, floats, str, bin) as msgpack-c's
// create_object_visitor would build it, but without its parser (a std::vector stack,
// so a malloc and a free, per call: most of a map's decoding time). Strings and bins
// point into data. false: not a scalar (or truncated), for msgpack-c to handle.
bool read_scalar(const char* data, std::size_t size, std::size_t& off, msgpack::object& out) {
  if (off >= size) return false;
  const auto* p = reinterpret_cast<const unsigned char*>(data + off);
  const std::size_t left = size - off;
  const unsigned char b = p[0];
  auto take = [&](std::size_t n) {
    off += n;
    return true;
  };
  auto positive = [&](std::uint64_t v, std::size_t n) {
    out.type = msgpack::type::POSITIVE_INTEGER;
    out.via.u64 = v;
    return take(n);
  };
  auto signed_int = [&](std::int64_t v, std::size_t n) {
    if (v < 0) {
      out.type = msgpack::type::NEGATIVE_INTEGER;
      out.via.i64 = v;
    } else {
      out.type = msgpack::type::POSITIVE_INTEGER;
      out.via.u64 = static_cast<std::uint64_t>(v);
    }
    return take(n);
  };
  auto bytes = [&](msgpack::type::object_type type, std::size_t head, std::size_t n) {
    if (left < head || left - head < n) return false;
    // Never null, even when empty (msgpack-c gives a zone pointer; its operator== and
    // converters pass it to memcmp/memcpy).
    if (type == msgpack::type::STR) {
      out.type = msgpack::type::STR;
      out.via.str.size = static_cast<std::uint32_t>(n);
      out.via.str.ptr = data + off + head;
    } else {
      out.type = msgpack::type::BIN;
      out.via.bin.size = static_cast<std::uint32_t>(n);
      out.via.bin.ptr = data + off + head;
    }
    return take(head + n);
  };
  if (b <= 0x7f) return positive(b, 1);
  if (b >= 0xe0) return signed_int(static_cast<std::int8_t>(b), 1);
  if ((b & 0xe0) == 0xa0) return bytes(msgpack::type::STR, 1, b & 0x1f);
  switch (b) {
    case 0xc0:
      out.type = msgpack::type::NIL;
      return take(1);
    case 0xc2:
    case 0xc3:
      out.type = msgpack::type::BOOLEAN;
      out.via.boolean = b == 0xc3;
      return take(1);
    case 0xcc: return left >= 2 && positive(big_endian(p + 1, 1), 2);
    case 0xcd: return left >= 3 && positive(big_endian(p + 1, 2), 3);
    case 0xce: return left >= 5 && positive(big_endian(p + 1, 4), 5);
    case 0xcf: return left >= 9 && positive(big_endian(p + 1, 8), 9);
    case 0xd0: return left >= 2 && signed_int(static_cast<std::int8_t>(big_endian(p + 1, 1)), 2);
    case 0xd1: return left >= 3 && signed_int(static_cast<std::int16_t>(big_endian(p + 1, 2)), 3);
    case 0xd2: return left >= 5 && signed_int(static_cast<std::int32_t>(big_endian(p + 1, 4)), 5);
    case 0xd3: return left >= 9 && signed_int(static_cast<std::int64_t>(big_endian(p + 1, 8)), 9);
    case 0xca: {
      if (left < 5) return false;
      const auto bits = static_cast<std::uint32_t>(big_endian(p + 1, 4));
      float f;
      std::memcpy(&f, &bits, sizeof f);
      out.type = msgpack::type::FLOAT32;
      out.via.f64 = f;
      return take(5);
    }
    case 0xcb: {
      if (left < 9) return false;
      const std::uint64_t bits = big_endian(p + 1, 8);
      double d;
      std::memcpy(&d, &bits, sizeof d);
      out.type = msgpack::type::FLOAT64;
      out.via.f64 = d;
      return take(9);
    }
    case 0xd9: return left >= 2 && bytes(msgpack::type::STR, 2, big_endian(p + 1, 1));
    case 0xda: return left >= 3 && bytes(msgpack::type::STR, 3, big_endian(p + 1, 2));
    case 0xdb: return left >= 5 && bytes(msgpack::type::STR, 5, big_endian(p + 1, 4));
    case 0xc4: return left >= 2 && bytes(msgpack::type::BIN, 2, big_endian(p + 1, 1));
    case 0xc5: return left >= 3 && bytes(msgpack::type::BIN, 3, big_endian(p + 1, 2));
    case 0xc6: return left >= 5 && bytes(msgpack::type::BIN, 5, big_endian(p + 1, 4));
    default: return false;
  }
}

// A fixarray of scalars (a multi-argument task's item, a small vector of numbers), its
// elements in zone; false for anything else, with off untouched.
bool read_scalar_array(msgpack::zone& zone, const char* data, std::size_t size, std::size_t& off,
                       msgpack::object& out) {
  if (off >= size) return false;
  const auto b = static_cast<unsigned char>(data[off]);
  if ((b & 0xf0) != 0x90) return false;
  const std::uint32_t n = b & 0x0f;
  std::size_t at = off + 1;
  msgpack::object items[15];
  for (std::uint32_t i = 0; i < n; ++i) {
    if (!read_scalar(data, size, at, items[i])) return false;
  }
  out.type = msgpack::type::ARRAY;
  out.via.array.size = n;
  out.via.array.ptr = nullptr;
  if (n > 0) {
    auto* ptr = static_cast<msgpack::object*>(
        zone.allocate_align(sizeof(msgpack::object) * n, MSGPACK_ZONE_ALIGNOF(msgpack::object)));
    std::copy(items, items + n, ptr);
    out.via.array.ptr = ptr;
  }
  off = at;
  return true;
}

}  // namespace

msgpack::object read_object(msgpack::zone& zone, const char* data, std::size_t size,
                            std::size_t& off) {
  msgpack::object fast;
  if (read_scalar(data, size, off, fast) || read_scalar_array(zone, data, size, off, fast)) return fast;
  // msgpack-c allocates an array's or map's elements as soon as it reads the length,
  // before checking that the bytes are there: a 5-byte item claiming 2^32 elements asks
  // for ~100 GB. Every element takes at least one byte (a map entry two), so bound the
  // lengths by what is actually left.
  const std::size_t left = off < size ? size - off : 0;
  const msgpack::unpack_limit limit(/*array=*/left, /*map=*/left / 2, /*str=*/left, /*bin=*/left,
                                    /*ext=*/left);
  // That bound is per container, so nested containers each claiming `left` elements
  // (5 bytes apiece) still allocate left * left / 5 objects: a 64 KB payload took 2 s
  // and a 1 MB one 41 s and 800 MB. Containers are checked first, without allocating,
  // for claiming more elements in total than there are bytes (found by
  // tools/fuzz/payload_fuzz; see RunTaskTest.NestedOverclaimingContainersFailFast).
  const auto first = off < size ? static_cast<unsigned char>(data[off]) : 0;
  // fixmap, fixarray (0x80..0x9f), array16/32, map16/32 (0xdc..0xdf): scalars skip it.
  if ((first & 0xe0) == 0x80 || (first >= 0xdc && first <= 0xdf)) {
    ClaimedElements claims(left);
    std::size_t probe = off;
    msgpack::parse(data, size, probe, claims);
    if (claims.exceeded()) {
      throw DecodeError("payload could not be decoded: its arrays and maps claim more elements "
                        "than the " + std::to_string(left) + " bytes left could hold");
    }
  }
  try {
    return msgpack::unpack(zone, data, size, off, nullptr, nullptr, limit);
  } catch (const std::exception& e) {
    throw DecodeError(std::string("payload could not be decoded: ") + e.what());
  }
}

std::size_t begin_raw_block(Buffer& out, std::uint8_t code, std::size_t count) {
  const std::size_t width = code & 0x0f;
  if (count > (UINT32_MAX - 1) / width) throw std::length_error("raw chunk larger than 4 GiB");
  const auto len = static_cast<std::uint32_t>(1 + count * width);
  const char head[6] = {static_cast<char>(0xc6),        static_cast<char>(len >> 24),
                        static_cast<char>(len >> 16),   static_cast<char>(len >> 8),
                        static_cast<char>(len),         static_cast<char>(code)};
  out.write(head, sizeof head);
  return out.extend(count * width);
}

RawBlock read_raw_block(const char* data, std::size_t size, std::size_t& off,
                        std::size_t expected) {
  msgpack::object bin;
  std::size_t at = off;
  if (!read_scalar(data, size, at, bin) || bin.type != msgpack::type::BIN) {
    throw DecodeError("raw chunk truncated or not a msgpack bin");
  }
  if (bin.via.bin.size == 0) throw DecodeError("raw chunk without its type code");
  RawBlock block;
  block.code = static_cast<std::uint8_t>(bin.via.bin.ptr[0]);
  block.width = block.code & 0x0f;
  const int kind = block.code >> 4;
  const bool known = (kind == 1 || kind == 2) ? (block.width == 1 || block.width == 2 ||
                                                 block.width == 4 || block.width == 8)
                     : kind == 3              ? (block.width == 4 || block.width == 8)
                                              : false;
  if (!known) throw DecodeError("raw chunk of an unknown item type");
  if (bin.via.bin.size - 1 != expected * block.width) {
    throw DecodeError("raw chunk holds " + std::to_string(bin.via.bin.size - 1) + " bytes, not " +
                      std::to_string(expected) + " items of " + std::to_string(block.width));
  }
  block.count = expected;
  block.bytes = bin.via.bin.ptr + 1;
  off = at;
  return block;
}

namespace {
template <class T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
}  // namespace

msgpack::object raw_element(const RawBlock& block, std::size_t i) {
  const char* p = block.bytes + i * block.width;
  msgpack::object out;
  std::int64_t s = 0;
  switch (block.code) {
    case raw_code<float>(): out.type = msgpack::type::FLOAT64; out.via.f64 = load<float>(p); return out;
    case raw_code<double>(): out.type = msgpack::type::FLOAT64; out.via.f64 = load<double>(p); return out;
    case raw_code<std::uint8_t>(): out.type = msgpack::type::POSITIVE_INTEGER; out.via.u64 = load<std::uint8_t>(p); return out;
    case raw_code<std::uint16_t>(): out.type = msgpack::type::POSITIVE_INTEGER; out.via.u64 = load<std::uint16_t>(p); return out;
    case raw_code<std::uint32_t>(): out.type = msgpack::type::POSITIVE_INTEGER; out.via.u64 = load<std::uint32_t>(p); return out;
    case raw_code<std::uint64_t>(): out.type = msgpack::type::POSITIVE_INTEGER; out.via.u64 = load<std::uint64_t>(p); return out;
    case raw_code<std::int8_t>(): s = load<std::int8_t>(p); break;
    case raw_code<std::int16_t>(): s = load<std::int16_t>(p); break;
    case raw_code<std::int32_t>(): s = load<std::int32_t>(p); break;
    case raw_code<std::int64_t>(): s = load<std::int64_t>(p); break;
    default: throw DecodeError("raw chunk of an unknown item type");
  }
  if (s < 0) {
    out.type = msgpack::type::NEGATIVE_INTEGER;
    out.via.i64 = s;
  } else {
    out.type = msgpack::type::POSITIVE_INTEGER;
    out.via.u64 = static_cast<std::uint64_t>(s);
  }
  return out;
}

std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out(abi::__cxa_demangle(mangled, nullptr, nullptr, &status),
                                             std::free);
  return status == 0 && out ? std::string(out.get()) : std::string(mangled);
}

std::string current_exception_type() {
  const std::type_info* t = abi::__cxa_current_exception_type();
  return t ? demangle(t->name()) : std::string("unknown");
}

std::string current_exception_message() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (const std::string& s) {
    return s;
  } catch (const char* s) {
    return s ? s : "";
  } catch (...) {
    return "(exception not derived from std::exception)";
  }
}

std::int32_t process_id() { return static_cast<std::int32_t>(getpid()); }

ErrorInfo current_error(std::uint64_t item) {
  ErrorInfo e;
  e.type = current_exception_type();
  e.message = current_exception_message();
  e.item = item;
  e.pid = static_cast<std::int32_t>(getpid());
  try {
    throw;
  } catch (const std::system_error& error) {
    e.code = std::string(error.code().category().name()) + ":" + std::to_string(error.code().value());
  } catch (...) {
  }
  return e;
}

namespace {

// Walks the chain of causes without recursion first: a hostile payload nesting them a
// million deep must not overflow the stack of the recursive conversion.
void check_error_depth(const msgpack::object& obj) {
  const msgpack::object* at = &obj;
  for (int depth = 0;; ++depth) {
    if (at->type != msgpack::type::ARRAY || at->via.array.size < 5 || at->via.array.size > 6) {
      throw DecodeError("an error payload is not [type, message, item, pid, cause, code]");
    }
    const msgpack::object& cause = at->via.array.ptr[4];
    if (cause.type != msgpack::type::ARRAY || cause.via.array.size > 1) {
      throw DecodeError("an error's cause is not a list of at most one error");
    }
    if (cause.via.array.size == 0) return;
    if (depth + 1 >= kMaxErrorDepth) {
      throw DecodeError("an error's causes nest deeper than " + std::to_string(kMaxErrorDepth));
    }
    at = &cause.via.array.ptr[0];
  }
}

}  // namespace

ErrorInfo error_from(const msgpack::object& obj) {
  check_error_depth(obj);
  try {
    return obj.as<ErrorInfo>();
  } catch (const std::exception& e) {
    throw DecodeError(std::string("an error payload could not be decoded: ") + e.what());
  }
}

std::vector<ErrorInfo> error_list_from(const msgpack::object& obj) {
  if (obj.type != msgpack::type::ARRAY) throw DecodeError("an error list is not an array");
  std::vector<ErrorInfo> out;
  out.reserve(obj.via.array.size);
  for (std::uint32_t i = 0; i < obj.via.array.size; ++i) out.push_back(error_from(obj.via.array.ptr[i]));
  return out;
}

std::string encode_error(const ErrorInfo& error) {
  Buffer buf(256);
  msgpack::pack(buf, error);
  return std::string(buf.data(), buf.size());
}

ErrorInfo decode_error(const char* data, std::size_t size) {
  msgpack::zone zone;
  std::size_t off = 0;
  const msgpack::object obj = read_object(zone, data, size, off);
  if (off != size) throw DecodeError("trailing bytes after an error payload");
  return error_from(obj);
}

}  // namespace detail
}  // namespace mpx
