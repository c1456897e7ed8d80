// Unit tests for the msgpack readers of mpx/detail/codec.h (framework/codec): their
// fast paths must build exactly the objects msgpack-c builds, and refuse what it
// refuses.
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <msgpack.hpp>

#include "mpx/detail/codec.h"
#include "mpx/errors.h"

namespace mpx {
namespace {

// Deep equality of two msgpack objects. (msgpack-c's operator== hands an empty
// string's null pointer to memcmp, which UBSan rightly refuses.)
bool same_object(const msgpack::object& a, const msgpack::object& b) {
  if (a.type != b.type) return false;
  switch (a.type) {
    case msgpack::type::NIL: return true;
    case msgpack::type::BOOLEAN: return a.via.boolean == b.via.boolean;
    case msgpack::type::POSITIVE_INTEGER: return a.via.u64 == b.via.u64;
    case msgpack::type::NEGATIVE_INTEGER: return a.via.i64 == b.via.i64;
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return a.via.f64 == b.via.f64;
    case msgpack::type::STR:
      return a.via.str.size == b.via.str.size &&
             (a.via.str.size == 0 || std::memcmp(a.via.str.ptr, b.via.str.ptr, a.via.str.size) == 0);
    case msgpack::type::BIN:
      return a.via.bin.size == b.via.bin.size &&
             (a.via.bin.size == 0 || std::memcmp(a.via.bin.ptr, b.via.bin.ptr, a.via.bin.size) == 0);
    case msgpack::type::ARRAY:
      if (a.via.array.size != b.via.array.size) return false;
      for (std::uint32_t i = 0; i < a.via.array.size; ++i) {
        if (!same_object(a.via.array.ptr[i], b.via.array.ptr[i])) return false;
      }
      return true;
    default:
      return false;  // maps and ext do not take the fast path
  }
}

// read_object decodes scalars itself (msgpack-c's parser allocates on every call): the
// objects must be exactly what msgpack-c builds, for every encoding and its limits.
TEST(ReadObjectTest, ScalarsDecodeAsMsgpackDoes) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  std::vector<std::pair<std::size_t, std::size_t>> spans;
  auto mark = [&](auto&& pack) {
    const std::size_t begin = buf.size();
    pack();
    spans.emplace_back(begin, buf.size() - begin);
  };
  for (std::uint64_t v : {0ull, 1ull, 127ull, 128ull, 255ull, 256ull, 65535ull, 65536ull,
                          4294967295ull, 4294967296ull, 18446744073709551615ull}) {
    mark([&] { pk.pack(v); });
  }
  for (std::int64_t v : {-1ll, -32ll, -33ll, -128ll, -129ll, -32768ll, -32769ll, -2147483648ll,
                         -2147483649ll, static_cast<long long>(std::numeric_limits<std::int64_t>::min())}) {
    mark([&] { pk.pack(v); });
  }
  // Signed encodings of non-negative values (other encoders emit them).
  mark([&] { pk.pack_int8(5); });
  mark([&] { pk.pack_int16(300); });
  mark([&] { pk.pack_int32(70000); });
  mark([&] { pk.pack_int64(5000000000ll); });
  mark([&] { pk.pack_float(1.5f); });
  mark([&] { pk.pack_float(-0.1f); });
  mark([&] { pk.pack_double(3.141592653589793); });
  mark([&] { pk.pack_double(std::numeric_limits<double>::infinity()); });
  mark([&] { pk.pack(true); });
  mark([&] { pk.pack(false); });
  mark([&] { pk.pack_nil(); });
  for (std::size_t n : {0u, 1u, 31u, 32u, 255u, 256u, 65535u, 65536u}) {
    mark([&] { pk.pack(std::string(n, 's')); });
    mark([&] {
      pk.pack_bin(static_cast<std::uint32_t>(n));
      pk.pack_bin_body(std::string(n, 'b').data(), static_cast<std::uint32_t>(n));
    });
  }
  for (const auto& [begin, length] : spans) {
    msgpack::zone zone;
    std::size_t off = 0;
    const msgpack::object ours = detail::read_object(zone, buf.data() + begin, length, off);
    EXPECT_EQ(off, length) << "at " << begin;
    msgpack::object_handle theirs = msgpack::unpack(buf.data() + begin, length);
    EXPECT_EQ(ours.type, theirs.get().type) << "at " << begin;
    EXPECT_TRUE(same_object(ours, theirs.get())) << "at " << begin;
    // Every proper prefix is truncated input: an error, as before.
    for (std::size_t cut : {std::size_t{0}, length / 2, length - 1}) {
      if (cut >= length) continue;
      std::size_t o = 0;
      EXPECT_THROW(detail::read_object(zone, buf.data() + begin, cut, o), DecodeError)
          << "a " << cut << "-byte prefix of the " << length << "-byte object at " << begin;
    }
  }
  // The reserved byte 0xc1 is no object at all.
  msgpack::zone zone;
  std::size_t off = 0;
  EXPECT_THROW(detail::read_object(zone, "\xc1", 1, off), DecodeError);
}

// Small arrays of scalars (argument tuples) decode without msgpack-c too; mixed ones
// (a nested container inside) are left to it. Both must match msgpack-c.
TEST(ReadObjectTest, SmallArraysOfScalarsDecodeAsMsgpackDoes) {
  std::vector<std::string> encoded;
  auto add = [&](const auto& value) {
    msgpack::sbuffer b;
    msgpack::pack(b, value);
    encoded.emplace_back(b.data(), b.size());
  };
  add(std::make_tuple());
  add(std::make_tuple(1, -2));
  add(std::make_tuple(std::int64_t{1} << 40, 2.5, std::string("x"), true));
  add(std::vector<int>(15, 7));
  add(std::vector<int>(16, 7));                        // array16: msgpack-c's
  add(std::make_tuple(1, std::vector<int>{2, 3}));     // nested: msgpack-c's
  add(std::make_tuple(std::string(300, 'q'), msgpack::type::nil_t()));
  for (const std::string& bytes : encoded) {
    msgpack::zone zone;
    std::size_t off = 0;
    const msgpack::object ours = detail::read_object(zone, bytes.data(), bytes.size(), off);
    EXPECT_EQ(off, bytes.size());
    msgpack::object_handle theirs = msgpack::unpack(bytes.data(), bytes.size());
    EXPECT_TRUE(same_object(ours, theirs.get()));
    std::size_t o = 0;
    if (bytes.size() > 1) {
      EXPECT_THROW(detail::read_object(zone, bytes.data(), bytes.size() - 1, o), DecodeError);
    }
  }
}

}  // namespace
}  // namespace mpx

namespace mpx {
namespace {

// mpx's streams keep the sign of -0.0, which msgpack-c's own packer turns into the
// integer 0, and keep its compact integer form for every other whole number.
TEST(FloatPackingTest, NegativeZeroKeepsItsSignAndWholeNumbersStayCompact) {
  const auto packed = [](auto value) {
    detail::Buffer buf(16);
    msgpack::packer<detail::Buffer> pk(buf);
    pk.pack(value);
    return std::string(buf.data(), buf.size());
  };
  const auto back = [](const std::string& bytes, auto as) {
    return msgpack::unpack(bytes.data(), bytes.size())->as<decltype(as)>();
  };
  EXPECT_EQ(packed(-0.0), std::string("\xcb\x80\0\0\0\0\0\0\0", 9));
  EXPECT_TRUE(std::signbit(back(packed(-0.0), 0.0)));
  EXPECT_EQ(packed(-0.0f), std::string("\xca\x80\0\0\0", 5));
  EXPECT_TRUE(std::signbit(back(packed(-0.0f), 0.0f)));
  EXPECT_EQ(packed(0.0), std::string("\0", 1));
  EXPECT_EQ(packed(3.0), std::string("\x03", 1));
  EXPECT_EQ(packed(-5.0f), std::string("\xfb", 1));
  EXPECT_EQ(back(packed(0.5), 0.0), 0.5);
  // 2^64 does not fit a uint64 (msgpack-c would convert it anyway): a float 64.
  const double two_64 = 18446744073709551616.0;
  EXPECT_EQ(packed(two_64).size(), 9u);
  EXPECT_EQ(back(packed(two_64), 0.0), two_64);
  EXPECT_EQ(back(packed(-9223372036854775808.0), 0.0), -9223372036854775808.0);
  EXPECT_TRUE(std::isnan(back(packed(std::numeric_limits<double>::quiet_NaN()), 0.0)));
  const auto nested = back(packed(std::vector<double>{1.0, -0.0}), std::vector<double>());
  EXPECT_TRUE(std::signbit(nested[1]));
}

TEST(ErrorInfoTest, RoundTripsWithItsCause) {
  detail::ErrorInfo e{"mpx::PipelineError", "stage 2 failed", 7, 1234, {}};
  e.cause.push_back({"std::invalid_argument", "negative", 3, 4321, {}});
  const detail::ErrorInfo back = detail::decode_error(detail::encode_error(e).data(),
                                                      detail::encode_error(e).size());
  EXPECT_EQ(back.type, e.type);
  EXPECT_EQ(back.message, e.message);
  EXPECT_EQ(back.item, 7u);
  EXPECT_EQ(back.pid, 1234);
  ASSERT_EQ(back.cause.size(), 1u);
  EXPECT_EQ(back.cause[0].type, "std::invalid_argument");
  EXPECT_EQ(back.cause[0].item, 3u);
}

TEST(ErrorInfoTest, CurrentErrorNamesTheExceptionAndThisProcess) {
  try {
    throw std::out_of_range("index 9");
  } catch (...) {
    const detail::ErrorInfo e = detail::current_error(5);
    EXPECT_EQ(e.type, "std::out_of_range");
    EXPECT_EQ(e.message, "index 9");
    EXPECT_EQ(e.item, 5u);
    EXPECT_EQ(e.pid, detail::process_id());
  }
}

TEST(ErrorInfoTest, MalformedOrTooDeepErrorsAreRefused) {
  // Causes a million deep would overflow the recursive conversion's stack: refused
  // after kMaxErrorDepth, before converting anything.
  msgpack::sbuffer deep;
  msgpack::packer<msgpack::sbuffer> pk(deep);
  const int levels = 100000;
  for (int i = 0; i < levels; ++i) {
    pk.pack_array(5);
    pk.pack(std::string("t"));
    pk.pack(std::string("m"));
    pk.pack(0);
    pk.pack(0);
    pk.pack_array(i + 1 < levels ? 1 : 0);
  }
  EXPECT_THROW(detail::decode_error(deep.data(), deep.size()), DecodeError);
  for (const std::string& bad : {std::string(""), std::string("\xc1"), std::string("\x92\xa1t\xa1m"),
                                 std::string("\x95\xa1t\xa1m\x00\x00\x01")}) {
    EXPECT_THROW(detail::decode_error(bad.data(), bad.size()), DecodeError);
  }
}

TEST(ErrorInfoTest, ASystemErrorsCodeTravelsAndAFivePartPayloadStillDecodes) {
  try {
    throw std::system_error(ENOENT, std::generic_category(), "open");
  } catch (...) {
    EXPECT_EQ(detail::current_error().code, "generic:" + std::to_string(ENOENT));
  }
  // [type, message, item, pid, cause]: no code.
  const std::string five("\x95\xa1t\xa1m\x00\x00\x90", 8);
  EXPECT_EQ(detail::decode_error(five.data(), five.size()).code, "");
}

// What a forged or foreign error payload can make the caller throw: never anything but
// a typed standard exception or RemoteError.
TEST(RemoteExceptionTest, AnUnreadableSystemErrorCodeFallsBackToRemoteError) {
  for (const std::string& code : {std::string(""), std::string("generic"), std::string("generic:"),
                                  std::string("generic:12x"), std::string("nonsuch:5"),
                                  std::string("generic:99999999999999999999")}) {
    detail::ErrorInfo e{"std::system_error", "open: denied", 0, 77, {}, code};
    try {
      std::rethrow_exception(detail::remote_exception("t", e, 2, 77));
    } catch (const RemoteError& r) {
      EXPECT_EQ(r.type_name(), "std::system_error") << code;
      EXPECT_EQ(r.message(), "open: denied");
    } catch (const std::exception& other) {
      ADD_FAILURE() << "code '" << code << "' gave " << other.what();
    }
  }
  detail::ErrorInfo e{"std::system_error", "open: denied", 0, 77, {}, "system:13"};
  try {
    std::rethrow_exception(detail::remote_exception("t", e, 2, 77));
  } catch (const std::system_error& r) {
    EXPECT_EQ(r.code().value(), 13);
    EXPECT_EQ(&r.code().category(), &std::system_category());
    EXPECT_EQ(dynamic_cast<const RemoteInfo&>(r).task_index(), 2u);
  }
}

// Raw chunks (numbers as one msgpack bin: a code byte, then the items' bytes).
template <class T>
std::string raw_chunk(const std::vector<T>& items) {
  detail::Buffer buf;
  const std::size_t at = detail::begin_raw_block(buf, detail::raw_code<T>(), items.size());
  if (!items.empty()) std::memcpy(buf.data() + at, items.data(), items.size() * sizeof(T));
  return std::string(buf.data(), buf.size());
}

TEST(RawBlockTest, RoundTripsNumbersOfEveryKind) {
  const std::vector<std::int32_t> ints{0, -1, 7, std::numeric_limits<std::int32_t>::min()};
  std::string bytes = raw_chunk(ints);
  ASSERT_TRUE(detail::at_raw_block(bytes.data(), bytes.size(), 0));
  std::size_t off = 0;
  detail::RawBlock block = detail::read_raw_block(bytes.data(), bytes.size(), off, ints.size());
  EXPECT_EQ(off, bytes.size());
  EXPECT_EQ(block.code, detail::raw_code<std::int32_t>());
  ASSERT_EQ(block.count, ints.size());
  for (std::size_t i = 0; i < ints.size(); ++i) {
    EXPECT_EQ(detail::raw_element(block, i).as<std::int32_t>(), ints[i]);
    EXPECT_EQ(*(detail::RawIterator<std::int32_t>(block.bytes) + static_cast<std::ptrdiff_t>(i)), ints[i]);
  }
  // Negative numbers are built as msgpack-c builds them (NEGATIVE_INTEGER).
  EXPECT_EQ(detail::raw_element(block, 1).type, msgpack::type::NEGATIVE_INTEGER);

  const std::vector<std::uint64_t> wide{std::numeric_limits<std::uint64_t>::max(), 3};
  bytes = raw_chunk(wide);
  off = 0;
  block = detail::read_raw_block(bytes.data(), bytes.size(), off, wide.size());
  EXPECT_EQ(detail::raw_element(block, 0).as<std::uint64_t>(), wide[0]);

  const std::vector<double> reals{0.5, -2.25, 1e300};
  bytes = raw_chunk(reals);
  off = 0;
  block = detail::read_raw_block(bytes.data(), bytes.size(), off, reals.size());
  const std::vector<double> back(detail::RawIterator<double>(block.bytes),
                                 detail::RawIterator<double>(block.bytes) + 3);
  EXPECT_EQ(back, reals);
  EXPECT_EQ(detail::raw_element(block, 1).as<double>(), -2.25);

  const std::vector<float> floats{1.5f};
  bytes = raw_chunk(floats);
  off = 0;
  block = detail::read_raw_block(bytes.data(), bytes.size(), off, 1);
  EXPECT_EQ(detail::raw_element(block, 0).as<float>(), 1.5f);

  // An empty chunk is a block holding only its code.
  bytes = raw_chunk(std::vector<std::int16_t>{});
  off = 0;
  EXPECT_EQ(detail::read_raw_block(bytes.data(), bytes.size(), off, 0).count, 0u);
}

TEST(RawBlockTest, ArraysAndOtherObjectsAreNotRawBlocks) {
  detail::Buffer buf;
  msgpack::packer<detail::Buffer> pk(buf);
  pk.pack(std::vector<int>{1, 2});
  EXPECT_FALSE(detail::at_raw_block(buf.data(), buf.size(), 0));
  EXPECT_FALSE(detail::at_raw_block(buf.data(), 0, 0));
  const char ext8[] = {static_cast<char>(0xc7), 0, 1};
  EXPECT_FALSE(detail::at_raw_block(ext8, sizeof ext8, 0));
}

TEST(RawBlockTest, WrongSizesCodesAndTruncationAreRefused) {
  const std::string bytes = raw_chunk(std::vector<std::int32_t>{1, 2, 3});
  std::size_t off = 0;
  // The size must be exactly the expected items.
  EXPECT_THROW(detail::read_raw_block(bytes.data(), bytes.size(), off, 2), DecodeError);
  EXPECT_THROW(detail::read_raw_block(bytes.data(), bytes.size(), off, 4), DecodeError);
  // Truncated anywhere.
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    off = 0;
    EXPECT_THROW(detail::read_raw_block(bytes.data(), cut, off, 3), DecodeError) << cut;
    EXPECT_EQ(off, 0u);
  }
  // Unknown codes: a 3-byte integer, a 2-byte float, an unknown kind, no code at all.
  for (const unsigned char code : {0x13, 0x32, 0x44, 0x00}) {
    std::string bad = bytes;
    bad[5] = static_cast<char>(code);
    off = 0;
    const std::size_t expected = (code & 0x0f) ? 12 / (code & 0x0f) : 0;
    EXPECT_THROW(detail::read_raw_block(bad.data(), bad.size(), off, expected), DecodeError)
        << int{code};
  }
  const char empty_bin[] = {static_cast<char>(0xc4), 0};
  off = 0;
  EXPECT_THROW(detail::read_raw_block(empty_bin, sizeof empty_bin, off, 0), DecodeError);
}

}  // namespace
}  // namespace mpx
