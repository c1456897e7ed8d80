// Unit tests for the wire header: encode/decode round trips, foreign (compact) msgpack
// encodings, and every way a header frame can be rejected.
#include "framework/wire/wire.h"

#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "framework/testing/testing.h"
#include <msgpack.hpp>

namespace mpx {
namespace wire {
namespace {

std::optional<Header> decode_string(const std::string& bytes, std::string* why) {
  return decode(bytes.data(), bytes.size(), why);
}

void expect_same(const Header& a, const Header& b) {
  EXPECT_EQ(a.type, b.type);
  EXPECT_EQ(a.call_id, b.call_id);
  EXPECT_EQ(a.start, b.start);
  EXPECT_EQ(a.count, b.count);
  EXPECT_EQ(a.pid, b.pid);
  EXPECT_EQ(a.flags, b.flags);
  EXPECT_EQ(a.name, b.name);
}

// Expects bytes to be rejected with a reason containing `reason`.
void expect_rejected(const std::string& bytes, const std::string& reason) {
  std::string why;
  const auto h = decode_string(bytes, &why);
  EXPECT_FALSE(h.has_value()) << "accepted: expected rejection for '" << reason << "'";
  EXPECT_NE(why.find(reason), std::string::npos) << "why = '" << why << "'";
}

Header sample(Type type = Type::kSubmit) {
  Header h;
  h.type = type;
  h.call_id = 42;
  h.start = 1000;
  h.count = 17;
  h.pid = 4321;
  h.flags = kFlagHasErrors;
  h.name = "square";
  return h;
}

template <class... T>
std::string pack(const std::tuple<T...>& t) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, t);
  return std::string(buf.data(), buf.size());
}

TEST(WireTest, RoundTripsEveryType) {
  for (int t = 1; t <= static_cast<int>(Type::kLastType); ++t) {
    SCOPED_TRACE(t);
    Header h = sample(static_cast<Type>(t));
    const std::string bytes = encode(h);
    EXPECT_LE(bytes.size(), kMaxHeaderSize);
    std::string why;
    const auto back = decode_string(bytes, &why);
    ASSERT_TRUE(back.has_value()) << why;
    expect_same(h, *back);
    EXPECT_STRNE(type_name(static_cast<Type>(t)), "UNKNOWN");
  }
}

TEST(WireTest, RoundTripsDefaultHeader) {
  Header h;  // zeros and an empty name
  std::string why;
  const std::string bytes = encode(h);
  const auto back = decode_string(bytes, &why);
  ASSERT_TRUE(back.has_value()) << why;
  expect_same(h, *back);
}

TEST(WireTest, RoundTripsExtremeValues) {
  const std::string long_name(kMaxNameSize, 'n');
  Header h;
  h.type = Type::kLastType;
  h.call_id = std::numeric_limits<std::uint64_t>::max();
  h.start = std::numeric_limits<std::uint64_t>::max();
  h.count = std::numeric_limits<std::uint32_t>::max();
  h.pid = std::numeric_limits<std::int32_t>::min();
  h.flags = 0xff;
  h.name = long_name;
  const std::string bytes = encode(h);
  EXPECT_LE(bytes.size(), kMaxHeaderSize);
  std::string why;
  auto back = decode_string(bytes, &why);
  ASSERT_TRUE(back.has_value()) << why;
  expect_same(h, *back);

  h.pid = -1;
  const std::string minus_one = encode(h);
  back = decode_string(minus_one, &why);
  ASSERT_TRUE(back.has_value()) << why;
  EXPECT_EQ(back->pid, -1);

  h.pid = std::numeric_limits<std::int32_t>::max();
  const std::string max_pid = encode(h);
  back = decode_string(max_pid, &why);
  ASSERT_TRUE(back.has_value()) << why;
  EXPECT_EQ(back->pid, std::numeric_limits<std::int32_t>::max());
}

TEST(WireTest, EncodeIntoBufferMatchesStringForm) {
  char buf[kMaxHeaderSize];
  const Header h = sample();
  const std::size_t n = encode(h, buf);
  EXPECT_EQ(std::string(buf, n), encode(h));
}

TEST(WireTest, DecodedNameViewsIntoTheFrame) {
  const std::string bytes = encode(sample());
  std::string why;
  const auto h = decode_string(bytes, &why);
  ASSERT_TRUE(h.has_value()) << why;
  EXPECT_GE(h->name.data(), bytes.data());
  EXPECT_LE(h->name.data() + h->name.size(), bytes.data() + bytes.size());
}

TEST(WireTest, AcceptsCompactEncodingsFromMsgpackC) {
  // msgpack-c picks the smallest integer form (positive fixint here) and a fixstr.
  const std::string bytes = pack(std::make_tuple(1, 2, 3, 4, 5, 6, 0, std::string("f")));
  ASSERT_EQ(static_cast<unsigned char>(bytes[0]), 0x98);
  ASSERT_EQ(static_cast<unsigned char>(bytes[1]), 0x01);  // fixint, not 0xcc 0x01
  std::string why;
  const auto h = decode_string(bytes, &why);
  ASSERT_TRUE(h.has_value()) << why;
  EXPECT_EQ(h->type, Type::kSubmit);
  EXPECT_EQ(h->call_id, 3u);
  EXPECT_EQ(h->start, 4u);
  EXPECT_EQ(h->count, 5u);
  EXPECT_EQ(h->pid, 6);
  EXPECT_EQ(h->flags, 0);
  EXPECT_EQ(h->name, "f");
}

TEST(WireTest, AcceptsMixedIntegerWidthsAndSignedForms) {
  // uint16 call id, uint32 start, negative fixint pid, int16 pid, str8 name.
  const std::string name40(40, 'x');
  {
    const std::string bytes = pack(std::make_tuple(1u, 7u, 300u, 70000u, 65535u, -1, 1u, name40));
    std::string why;
    const auto h = decode_string(bytes, &why);
    ASSERT_TRUE(h.has_value()) << why;
    EXPECT_EQ(h->type, Type::kResult);
    EXPECT_EQ(h->call_id, 300u);
    EXPECT_EQ(h->start, 70000u);
    EXPECT_EQ(h->count, 65535u);
    EXPECT_EQ(h->pid, -1);
    EXPECT_EQ(h->flags, 1);
    EXPECT_EQ(h->name, name40);
  }
  {
    // Signed encodings of non-negative values are fine too.
    const std::string bytes =
        pack(std::make_tuple(std::int64_t{1}, std::int8_t{6}, std::int64_t{5},
                             std::int64_t{1} << 40, std::int16_t{3}, std::int16_t{-300},
                             std::int8_t{0}, std::string()));
    std::string why;
    const auto h = decode_string(bytes, &why);
    ASSERT_TRUE(h.has_value()) << why;
    EXPECT_EQ(h->type, Type::kWelcome);
    EXPECT_EQ(h->call_id, 5u);
    EXPECT_EQ(h->start, std::uint64_t{1} << 40);
    EXPECT_EQ(h->count, 3u);
    EXPECT_EQ(h->pid, -300);
  }
  {
    // Max uint64 in msgpack-c's own encoding.
    const std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
    const std::string bytes = pack(std::make_tuple(1, 7, max, max, 1, INT32_MIN, 0, std::string("t")));
    std::string why;
    const auto h = decode_string(bytes, &why);
    ASSERT_TRUE(h.has_value()) << why;
    EXPECT_EQ(h->call_id, max);
    EXPECT_EQ(h->start, max);
    EXPECT_EQ(h->pid, INT32_MIN);
  }
}

TEST(WireTest, AcceptsSignedFormsOfNonNegativeValues) {
  // Other encoders may write non-negative values as int8/16/32/64 and names as str16.
  const unsigned char raw[] = {
      0x98,                                                  // array of 8
      0xd0, 0x01,                                            // version: int8 1
      0xd1, 0x00, 0x0d,                                      // type: int16 13 (TASK)
      0xd2, 0x00, 0x00, 0x01, 0x00,                          // call_id: int32 256
      0xd3, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,  // start: int64 2^32
      0xcd, 0x01, 0x00,                                      // count: uint16 256
      0xd0, 0xfa,                                            // pid: int8 -6
      0xd0, 0x00,                                            // flags: int8 0
      0xda, 0x00, 0x01, 'z',                                 // name: str16 "z"
  };
  std::string why;
  const auto h = decode(reinterpret_cast<const char*>(raw), sizeof raw, &why);
  ASSERT_TRUE(h.has_value()) << why;
  EXPECT_EQ(h->type, Type::kTask);
  EXPECT_EQ(h->call_id, 256u);
  EXPECT_EQ(h->start, std::uint64_t{1} << 32);
  EXPECT_EQ(h->count, 256u);
  EXPECT_EQ(h->pid, -6);
  EXPECT_EQ(h->flags, 0);
  EXPECT_EQ(h->name, "z");
}

TEST(WireTest, RejectsEmpty) {
  std::string why;
  EXPECT_FALSE(decode(nullptr, 0, &why).has_value());
  EXPECT_FALSE(why.empty());
  expect_rejected(std::string(), "not a msgpack array");
}

TEST(WireTest, RejectsGarbage) {
  expect_rejected(std::string("\xc1\xc1\xc1\xc1\xc1\xc1", 6), "not a msgpack array");
  expect_rejected("hello, world", "");
  std::string why;
  EXPECT_FALSE(decode_string("hello, world", &why).has_value());
  EXPECT_FALSE(why.empty());
}

TEST(WireTest, RejectsNotAnArray) {
  expect_rejected(pack(std::make_tuple(1)).substr(1), "not a msgpack array");  // bare fixint
  msgpack::sbuffer buf;
  msgpack::pack(buf, std::string("a string"));
  expect_rejected(std::string(buf.data(), buf.size()), "not a msgpack array");
  buf.clear();
  std::map<int, int> m{{1, 2}};
  msgpack::pack(buf, m);
  expect_rejected(std::string(buf.data(), buf.size()), "not a msgpack array");
}

TEST(WireTest, RejectsWrongFieldCount) {
  expect_rejected(pack(std::make_tuple(1, 2, 3, 4, 5, 6, 0)), "8 or 9 fields");
  expect_rejected(pack(std::make_tuple(1, 2, 3, 4, 5, 6, 0, std::string("x"), 9, 1)), "8 or 9 fields");
  expect_rejected(pack(std::tuple<>()), "8 or 9 fields");
  // array16 header with 8 elements is a valid array form; with 9 it is not.
  std::string a16 = encode(sample());
  a16[0] = '\x08';
  a16.insert(0, "\xdc\x00", 2);
  std::string why;
  EXPECT_TRUE(decode_string(a16, &why).has_value()) << why;
  a16[2] = '\x09';  // a ninth field announced, none there
  expect_rejected(a16, "bad descriptor count");
}

TEST(WireTest, ADescriptorCountTravelsAsANinthFieldOnlyWhenThereAreAny) {
  Header h = sample();
  EXPECT_EQ(static_cast<unsigned char>(encode(h)[0]), 0x98);
  h.fds = 3;
  const std::string bytes = encode(h);
  EXPECT_EQ(static_cast<unsigned char>(bytes[0]), 0x99);
  std::string why;
  const auto back = decode_string(bytes, &why);
  ASSERT_TRUE(back.has_value()) << why;
  EXPECT_EQ(back->fds, 3);
  EXPECT_EQ(back->name, h.name);
  EXPECT_EQ(decode_string(encode(sample()), &why)->fds, 0);
  // 0 is never written as a ninth field, and more than kMaxFds is not a header.
  expect_rejected(pack(std::make_tuple(1, 2, 3, 4, 5, 6, 0, std::string("x"), 0)), "bad descriptor count");
  expect_rejected(pack(std::make_tuple(1, 2, 3, 4, 5, 6, 0, std::string("x"), int{kMaxFds} + 1)),
                  "bad descriptor count");
  EXPECT_TRUE(decode_string(pack(std::make_tuple(1, 2, 3, 4, 5, 6, 0, std::string("x"), int{kMaxFds})), &why))
      << why;
}

TEST(WireTest, RejectsWrongVersion) {
  std::string bytes = encode(sample());
  ASSERT_EQ(static_cast<unsigned char>(bytes[1]), 0xcc);
  bytes[2] = static_cast<char>(kVersion + 1);
  expect_rejected(bytes, "version");
  bytes[2] = 0;
  expect_rejected(bytes, "version");
  expect_rejected(pack(std::make_tuple(-1, 2, 3, 4, 5, 6, 0, std::string("x"))), "version");
  expect_rejected(pack(std::make_tuple(1000, 2, 3, 4, 5, 6, 0, std::string("x"))), "version");
}

TEST(WireTest, RejectsUnknownType) {
  std::string bytes = encode(sample());
  ASSERT_EQ(static_cast<unsigned char>(bytes[3]), 0xcc);
  bytes[4] = 0;
  expect_rejected(bytes, "unknown message type");
  bytes[4] = static_cast<char>(static_cast<int>(Type::kLastType) + 1);
  expect_rejected(bytes, "unknown message type");
  bytes[4] = static_cast<char>(0xff);
  expect_rejected(bytes, "unknown message type");
  expect_rejected(pack(std::make_tuple(1, -3, 3, 4, 5, 6, 0, std::string("x"))), "unknown message type");
  expect_rejected(pack(std::make_tuple(1, 100000, 3, 4, 5, 6, 0, std::string("x"))),
                  "unknown message type");
}

TEST(WireTest, RejectsEveryTruncation) {
  const std::string name(kMaxNameSize, 'q');
  Header h = sample();
  h.name = name;
  for (const std::string& full :
       {encode(sample()), encode(h), pack(std::make_tuple(1, 2, 3, 4, 5, 6, 0, std::string("f")))}) {
    for (std::size_t n = 0; n < full.size(); ++n) {
      SCOPED_TRACE(n);
      // A heap copy of exactly n bytes so a read past the end is visible to sanitizers.
      std::unique_ptr<char[]> prefix(new char[n ? n : 1]);
      std::memcpy(prefix.get(), full.data(), n);
      std::string why;
      EXPECT_FALSE(decode(prefix.get(), n, &why).has_value());
      EXPECT_FALSE(why.empty());
    }
  }
}

TEST(WireTest, RejectsTrailingBytes) {
  expect_rejected(encode(sample()) + '\0', "trailing bytes");
  expect_rejected(encode(sample()) + encode(sample()), "trailing bytes");
}

TEST(WireTest, RejectsOversizedFrame) {
  std::string bytes = encode(sample());
  bytes.resize(kMaxHeaderSize + 1, '\0');
  expect_rejected(bytes, "too large");
  std::string why;
  EXPECT_FALSE(decode(std::string(1 << 20, '\x98').data(), 1 << 20, &why).has_value());
}

TEST(WireTest, RejectsNameTooLong) {
  const std::string name(kMaxNameSize + 1, 'x');
  expect_rejected(pack(std::make_tuple(1, 2, 3, 4, 5, 6, 0, name)), "bad name");
  // A str8 header that claims more bytes than the frame holds.
  std::string bytes = encode(sample());
  bytes[bytes.size() - 1 - 6] = static_cast<char>(200);  // the length byte of "square"
  expect_rejected(bytes, "bad name");
}

TEST(WireTest, RejectsNameOfWrongType) {
  expect_rejected(pack(std::make_tuple(1, 2, 3, 4, 5, 6, 0, 7)), "bad name");
  expect_rejected(pack(std::make_tuple(1, 2, 3, 4, 5, 6, 0, std::vector<int>{1})), "bad name");
}

TEST(WireTest, RejectsNegativeOrOutOfRangeFields) {
  expect_rejected(pack(std::make_tuple(1, 2, -1, 4, 5, 6, 0, std::string("x"))), "bad call id");
  expect_rejected(pack(std::make_tuple(1, 2, 3, -4, 5, 6, 0, std::string("x"))), "bad start");
  expect_rejected(pack(std::make_tuple(1, 2, 3, 4, -5, 6, 0, std::string("x"))), "bad count");
  expect_rejected(pack(std::make_tuple(1, 2, 3, 4, -(std::int64_t{1} << 40), 6, 0, std::string("x"))),
                  "bad count");
  expect_rejected(pack(std::make_tuple(1, 2, 3, 4, std::uint64_t{1} << 32, 6, 0, std::string("x"))),
                  "bad count");
  expect_rejected(pack(std::make_tuple(1, 2, 3, 4, 5, std::int64_t{INT32_MAX} + 1, 0, std::string("x"))),
                  "bad pid");
  expect_rejected(pack(std::make_tuple(1, 2, 3, 4, 5, std::int64_t{INT32_MIN} - 1, 0, std::string("x"))),
                  "bad pid");
  expect_rejected(pack(std::make_tuple(1, 2, 3, 4, 5, 6, 256, std::string("x"))), "bad flags");
  expect_rejected(pack(std::make_tuple(1, 2, 3, 4, 5, 6, -1, std::string("x"))), "bad flags");
  // Non-integers where integers belong.
  expect_rejected(pack(std::make_tuple(1, 2, 1.5, 4, 5, 6, 0, std::string("x"))), "bad call id");
  expect_rejected(pack(std::make_tuple(1, 2, 3, 4, 5, std::string("p"), 0, std::string("x"))),
                  "bad pid");
}

TEST(WireTest, WhyMayBeNull) {
  EXPECT_FALSE(decode("x", 1, nullptr).has_value());
  const std::string bytes = encode(sample());
  EXPECT_TRUE(decode(bytes.data(), bytes.size(), nullptr).has_value());
}

TEST(WireDeathTest, EncodingATooLongNameDiesLoudly) {
  const std::string name(kMaxNameSize + 1, 'x');
  Header h = sample();
  h.name = name;
  EXPECT_DEATH(encode(h), "exceeds the 255-byte limit");
}

TEST(WireTest, MutatedHeadersNeverCrashAndDecodeConsistently) {
  // Deterministic fuzzing: random byte flips, inserts and cuts of valid headers.
  std::mt19937 rng(20240601);
  const std::string name(40, 'm');
  Header long_name = sample();
  long_name.name = name;
  const std::string seeds[] = {encode(sample()), encode(long_name),
                               pack(std::make_tuple(1, 2, 3, 4, 5, 6, 0, std::string("f")))};
  int accepted = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string bytes = seeds[iter % 3];
    bytes = mpx::testing::mutate(std::move(bytes), rng, 4);
    std::unique_ptr<char[]> exact(new char[bytes.size() + 1]);
    std::memcpy(exact.get(), bytes.data(), bytes.size());
    std::string why;
    const auto h = decode(exact.get(), bytes.size(), &why);
    if (!h) {
      ASSERT_FALSE(why.empty());
      continue;
    }
    ++accepted;
    // Whatever is accepted is in range and survives our own encoding unchanged.
    ASSERT_GE(static_cast<int>(h->type), 1);
    ASSERT_LE(h->type, Type::kLastType);
    ASSERT_LE(h->name.size(), kMaxNameSize);
    const std::string reencoded = encode(*h);
    const auto again = decode_string(reencoded, &why);
    ASSERT_TRUE(again.has_value()) << why;
    expect_same(*h, *again);
  }
  EXPECT_GT(accepted, 0);
}

// Taking chunks back: a TASK is either taken up by its worker or taken back by the
// router, never both and never neither, whatever the interleaving.
TEST(WorkerSharedTest, TakingBackSplitsTheTasksAtTheFirstNotTakenUp) {
  WorkerShared shared{};
  EXPECT_TRUE(shared.take_up_next());   // TASK 0
  EXPECT_EQ(shared.take_back(1), 1u);   // nothing left to take back
  EXPECT_EQ(shared.take_back(4), 1u);   // TASKs 1-3 taken back
  EXPECT_EQ(shared.take_back(4), 4u);   // nothing more was sent
  EXPECT_FALSE(shared.take_up_next());  // 1
  EXPECT_FALSE(shared.take_up_next());  // 2
  EXPECT_FALSE(shared.take_up_next());  // 3
  EXPECT_TRUE(shared.take_up_next());   // 4, sent after the taking back
  EXPECT_EQ(shared.take_back(6), 5u);   // 5 taken back
  EXPECT_FALSE(shared.take_up_next());
  EXPECT_TRUE(shared.take_up_next());
}

// The worker ran its lane's chunk before it reached the TASKs taken back behind the
// last one: those sent since are taken back too, not left behind that chunk.
TEST(WorkerSharedTest, TakingBackAgainBeforeTheLastOnesAreSkipped) {
  WorkerShared shared{};
  EXPECT_TRUE(shared.take_up_next());   // TASK 0
  EXPECT_EQ(shared.take_back(3), 1u);   // 1-2
  EXPECT_EQ(shared.take_back(5), 3u);   // 3-4, while 1-2 wait to be skipped
  EXPECT_FALSE(shared.take_up_next());  // 1
  EXPECT_EQ(shared.take_back(6), 5u);   // 5, while 2-4 wait
  for (int i = 2; i <= 5; ++i) EXPECT_FALSE(shared.take_up_next()) << "TASK " << i;
  EXPECT_TRUE(shared.take_up_next());   // 6
  EXPECT_EQ(shared.take_back(7), 7u);
}

// The count taken up wraps in its bits; taking back goes on across the wrap.
TEST(WorkerSharedTest, TakingBackGoesOnWhenTheCountTakenUpWraps) {
  WorkerShared shared{};
  const std::uint64_t wrap = WorkerShared::kTakenUpMask + 1;
  shared.taken.store((WorkerShared::kTakenUpMask - 1) << WorkerShared::kSkipBits);  // wrap - 2 taken up
  EXPECT_TRUE(shared.take_up_next());                 // wrap - 2
  EXPECT_EQ(shared.take_back(wrap + 2), wrap - 1);   // wrap - 1 .. wrap + 1
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(shared.take_up_next());
  EXPECT_TRUE(shared.take_up_next());                 // wrap + 2
  EXPECT_EQ(shared.taken.load(), std::uint64_t{3} << WorkerShared::kSkipBits);
  EXPECT_EQ(shared.take_back(wrap + 4), wrap + 3);
}

// Past kMaxSkip TASKs not taken up, nothing is taken back (and nothing is lost).
TEST(WorkerSharedTest, TakingBackStopsPastItsLimit) {
  WorkerShared shared{};
  const std::uint64_t too_many = WorkerShared::kMaxSkip + 1;
  EXPECT_EQ(shared.take_back(too_many), too_many);
  EXPECT_TRUE(shared.take_up_next());
  EXPECT_EQ(shared.take_back(too_many), 1u);
}

TEST(WorkerSharedTest, ConcurrentTakingBackLosesAndDoublesNothing) {
  constexpr std::uint64_t kTasks = 200000;
  WorkerShared shared{};
  std::atomic<std::uint64_t> sent{0};
  std::vector<char> taken_up(kTasks, 0), taken_back(kTasks, 0);
  std::thread worker([&] {
    for (std::uint64_t i = 0; i < kTasks; ++i) {
      while (sent.load(std::memory_order_acquire) <= i) {
      }
      taken_up[i] = shared.take_up_next() ? 1 : 0;
    }
  });
  // The router sends in bursts and takes back at random, as an idle worker appears.
  std::mt19937 random(7);
  std::uint64_t n = 0;
  while (n < kTasks) {
    n = std::min(kTasks, n + 1 + random() % 8);
    sent.store(n, std::memory_order_release);
    if (random() % 3 == 0) {
      const std::uint64_t from = shared.take_back(n);
      for (std::uint64_t i = from; i < n; ++i) taken_back[i] = 1;
    }
  }
  worker.join();
  std::uint64_t back = 0;
  for (std::uint64_t i = 0; i < kTasks; ++i) {
    ASSERT_NE(taken_up[i], taken_back[i]) << "TASK " << i;
    back += taken_back[i];
  }
  EXPECT_GT(back, 0u);  // the race was run, not only one side of it
}

}  // namespace
}  // namespace wire
}  // namespace mpx
