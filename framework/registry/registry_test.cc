// Unit tests for the task registry (MPX_TASK, find_task, require_task) and the worker's
// chunk execution (mpx::worker::run_task), without any processes: chunks are encoded
// the way mpx::Pool encodes them, run, and decoded the way the driver decodes them.
#include "framework/registry/registry.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "framework/testing/testing.h"

#include "framework/wire/messages.h"
#include "framework/worker/worker.h"
#include "mpx/detail/call.h"
#include "mpx/detail/codec.h"
#include "mpx/errors.h"
#include "mpx/task.h"

namespace mpx_registry_test {

int square(int x) { return x * x; }
MPX_TASK(square);

int multiply(int a, int b) { return a * b; }
MPX_TASK(multiply);

// Overflow-free tasks for fuzzed inputs (any int may come out of a mutated payload).
int echo(int x) { return x; }
MPX_TASK(echo);

std::int64_t wide_multiply(int a, int b) { return std::int64_t{a} * b; }
MPX_TASK(wide_multiply);

int g_recorded_sum = 0;
void record(int x) { g_recorded_sum += x; }
MPX_TASK(record);

// Throws for multiples of 3.
int fragile(int x) {
  if (x % 3 == 0) throw std::runtime_error("bad input " + std::to_string(x));
  return x + 1;
}
MPX_TASK(fragile);

int throws_int(int x) {
  if (x == 1) throw 42;
  return x;
}
MPX_TASK(throws_int);

struct Point {
  int x = 0;
  int y = 0;
  std::string label;
  MSGPACK_DEFINE(x, y, label);
  bool operator==(const Point& o) const { return x == o.x && y == o.y && label == o.label; }
};

// Swaps the coordinates (no arithmetic: fuzzed inputs must not overflow).
Point shift(Point p) { return Point{p.y, p.x, p.label + "!"}; }
MPX_TASK(shift);

std::string describe(const std::string& s, int n, double d) {
  return s + ":" + std::to_string(n) + ":" + std::to_string(static_cast<int>(d));
}
MPX_TASK(describe);

double halve(double x) { return x / 2; }
MPX_TASK(halve);

std::string spell(int x) { return "#" + std::to_string(x); }
MPX_TASK(spell);

int never_registered(int x) { return x; }
int also_unregistered(int x) { return -x; }
int two_unregistered(int a, int b) { return a - b; }
extern "C" int c_linkage(int x) { return x + 1; }
// A signature whose demangled text alone is longer than a task name may be.
using LongType = std::map<std::string, std::vector<std::tuple<std::string, std::vector<double>, std::map<int, std::string>>>>;
std::size_t long_signature(LongType a, LongType b, std::vector<LongType> c) { return a.size() + b.size() + c.size(); }

}  // namespace mpx_registry_test

namespace mpx {
namespace {

namespace t = ::mpx_registry_test;
using detail::Buffer;
using detail::ErrorInfo;

template <auto F>
using CodecOf = typename detail::FunctionTraits<decltype(F)>::Codec;

// Encodes one chunk exactly like Pool::encode_chunks: an array of count items, each
// packed by the task's ArgCodec (pack_item for map, pack_star_item for starmap).
template <auto F, bool kStar = false, class Range>
std::string encode_chunk(const Range& items) {
  using Codec = CodecOf<F>;
  Buffer buf(items.size() * 8 + 16);
  msgpack::packer<Buffer> pk(buf);
  pk.pack_array(static_cast<std::uint32_t>(items.size()));
  for (const auto& item : items) {
    if constexpr (kStar) {
      Codec::pack_star_item(pk, item);
    } else {
      Codec::pack_item(pk, item);
    }
  }
  return std::string(buf.data(), buf.size());
}

wire::Task task_header(std::string_view name, std::uint32_t count) {
  wire::Task t;
  t.call_id = 1;
  t.start = 0;
  t.count = count;
  t.task = name;
  return t;
}

template <class R>
struct Outcome {
  std::vector<std::optional<R>> values;  // nullopt where the item failed
  std::vector<ErrorInfo> errors;
  bool has_errors = false;
};

// Runs payload through the worker's run_task and decodes the result chunk the way the
// driver does (read_results). The payload is copied to a buffer of exactly its size so
// a read past the end is an error under sanitizers.
template <class R>
Outcome<R> run(std::string_view name, std::uint32_t count, const std::string& payload) {
  std::unique_ptr<char[]> exact(new char[payload.size() + 1]);
  std::memcpy(exact.get(), payload.data(), payload.size());
  Outcome<R> o;
  o.has_errors = true;  // run_task must set it either way
  Buffer out = worker::run_task(task_header(name, count), exact.get(), payload.size(), &o.has_errors);
  o.values.resize(count);
  o.errors = detail::read_results(out.data(), out.size(), count, o.has_errors,
                                  [&](std::uint32_t i, const msgpack::object& obj) {
                                    R value{};
                                    if constexpr (!std::is_same_v<R, std::nullptr_t>) {
                                      obj.convert(value);
                                    } else {
                                      EXPECT_TRUE(obj.is_nil());
                                    }
                                    o.values[i] = std::move(value);
                                  });
  return o;
}

TEST(RegistryTest, FindTaskByNameAndPointer) {
  const detail::TaskEntry* by_name = detail::find_task(std::string("square"));
  ASSERT_NE(by_name, nullptr);
  EXPECT_STREQ(by_name->name, "square");
  EXPECT_EQ(by_name->arity, 1u);
  EXPECT_EQ(by_name->function, detail::function_address(&t::square));
  EXPECT_EQ(detail::find_task_at(detail::function_address(&t::square)), by_name);

  const detail::TaskEntry* mul = detail::find_task(std::string("multiply"));
  ASSERT_NE(mul, nullptr);
  EXPECT_EQ(mul->arity, 2u);
  EXPECT_EQ(detail::find_task_at(detail::function_address(&t::multiply)), mul);
  EXPECT_EQ(&detail::require_task(&t::multiply, "map"), mul);

  EXPECT_EQ(detail::find_task(std::string("no_such_task")), nullptr);
  EXPECT_EQ(detail::find_task(std::string("never_registered")), nullptr);
  EXPECT_EQ(detail::find_task_at(detail::function_address(&t::never_registered)), nullptr);
  EXPECT_TRUE(detail::duplicate_task_names().empty());
}

// A function without MPX_TASK gets a task named by where it is; another process finds
// it by that name (here: the same lookups a worker makes) and runs it.
TEST(RegistryTest, APlainFunctionIsFoundAgainByItsPlaceInTheProgram) {
  const detail::TaskEntry& e = detail::require_task(&t::never_registered, "map");
  const std::string name = e.name;
  EXPECT_EQ(name.rfind("function mpx_registry_test::never_registered(int) #", 0), 0u) << name;
  EXPECT_NE(name.find(" @exe+0x"), std::string::npos) << name;
  EXPECT_EQ(e.function, detail::function_address(&t::never_registered));
  EXPECT_EQ(e.arity, 1u);
  EXPECT_EQ(&detail::require_task(&t::never_registered, "map"), &e) << "made once";
  EXPECT_EQ(detail::find_task(name), &e);
  EXPECT_NE(&detail::require_task(&t::also_unregistered, "map"), &e);
  EXPECT_EQ(detail::require_task(&t::two_unregistered, "starmap").arity, 2u);
}

TEST(RegistryTest, ALongSignatureIsCutInTheShownNameOnly) {
  const detail::TaskEntry& e = detail::require_task(&t::long_signature, "map");
  const std::string name = e.name;
  EXPECT_LE(name.size(), 255u) << name;
  EXPECT_NE(name.find("... #"), std::string::npos) << name;
  std::string why;
  EXPECT_EQ(detail::find_task(name, &why), &e) << why;
  // Found again from the name alone, as another process would.
  const std::string renamed = "function x" + name.substr(name.find(" #"));
  const detail::TaskEntry* again = detail::find_task(renamed, &why);
  ASSERT_NE(again, nullptr) << why;
  EXPECT_EQ(again->function, detail::function_address(&t::long_signature));
  EXPECT_EQ(again->arity, 3u);
}

// The name of a function with the same signature, with its offset replaced: the
// shape a forged message would have.
std::string with_offset(const std::string& name, std::uintptr_t offset) {
  char hex[32];
  std::snprintf(hex, sizeof hex, "+0x%zx", static_cast<std::size_t>(offset));
  return name.substr(0, name.rfind("+0x")) + hex;
}
std::uintptr_t offset_in(const std::string& name) {
  return std::strtoull(name.c_str() + name.rfind("+0x") + 3, nullptr, 16);
}

TEST(RegistryTest, AForgedFunctionNameCallsNothingElse) {
  const std::string one = detail::require_task(&t::never_registered, "map").name;
  const std::string two = detail::require_task(&t::two_unregistered, "starmap").name;
  auto refused = [](const std::string& name) {
    std::string why;
    EXPECT_EQ(detail::find_task(name, &why), nullptr) << name;
    return why;
  };
  // Another function of the same parameters is accepted: the offset decides, not the
  // text shown before it, and the function there is one the signature allows.
  const std::string other = detail::require_task(&t::also_unregistered, "map").name;
  const std::string forged_text = "function anything" + one.substr(one.find(" #"));
  const std::string retargeted = with_offset(forged_text, offset_in(other));
  const detail::TaskEntry* e = detail::find_task(retargeted);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->function, detail::function_address(&t::also_unregistered));
  // The middle of a function.
  EXPECT_NE(refused(with_offset(one, offset_in(one) + 1)).find("no function starts at"), std::string::npos);
  // A function of other parameters under this signature.
  const std::string wrong = refused(with_offset(one, offset_in(two)));
  EXPECT_NE(wrong.find("two_unregistered(int, int)"), std::string::npos) << wrong;
  EXPECT_NE(wrong.find("is not a C++ function taking (int)"), std::string::npos) << wrong;
  // A C function: its symbol says nothing of its parameters.
  const auto c_function = detail::function_address(&t::c_linkage);
  const std::string exe_name = with_offset(one, offset_in(one) + (reinterpret_cast<std::uintptr_t>(c_function) -
                                                           reinterpret_cast<std::uintptr_t>(detail::function_address(&t::never_registered))));
  EXPECT_NE(refused(exe_name).find("c_linkage"), std::string::npos);
  // A signature the program never passes, a module it has not loaded, no offset.
  EXPECT_NE(refused("function f #0123456789abcdef @exe+0x10").find("no function of that signature"),
            std::string::npos);
  EXPECT_NE(refused(forged_text.substr(0, forged_text.rfind(" @")) + " @libnothing.so+0x10").find("no module named"),
            std::string::npos);
  EXPECT_NE(refused(forged_text.substr(0, forged_text.rfind("+0x")) + "+0xzz").find("no hexadecimal offset"),
            std::string::npos);
  EXPECT_NE(refused("function f").find("no task named"), std::string::npos);
}

TEST(RegistryTest, AFunctionOtherProcessesCannotCheckIsRefusedWithAdvice) {
  try {
    detail::require_task(&t::c_linkage, "Pool::map");
    FAIL() << "require_task did not throw";
  } catch (const NotRegistered& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("Pool::map: the function at exe+0x", 0), 0u) << what;
    EXPECT_NE(what.find("c_linkage"), std::string::npos) << what;
    EXPECT_NE(what.find("MPX_TASK"), std::string::npos) << what;
  }
}

TEST(RunTaskTest, ComputesEveryItem) {
  std::vector<int> xs;
  for (int i = -5; i < 20; ++i) xs.push_back(i * 1000);
  const auto o = run<int>("square", xs.size(), encode_chunk<&t::square>(xs));
  EXPECT_FALSE(o.has_errors);
  EXPECT_TRUE(o.errors.empty());
  for (std::size_t i = 0; i < xs.size(); ++i) {
    ASSERT_TRUE(o.values[i].has_value()) << i;
    EXPECT_EQ(*o.values[i], xs[i] * xs[i]);
  }
}

TEST(RunTaskTest, LargeChunksUseWideArrayHeaders) {
  for (std::size_t n : {15u, 16u, 65535u, 65536u, 70000u}) {
    SCOPED_TRACE(n);
    std::vector<int> xs(n);
    for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<int>(i % 1000);
    const auto o = run<int>("square", xs.size(), encode_chunk<&t::square>(xs));
    ASSERT_FALSE(o.has_errors);
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(*o.values[i], xs[i] * xs[i]) << i;
  }
}

TEST(RunTaskTest, EmptyChunk) {
  const auto o = run<int>("square", 0, encode_chunk<&t::square>(std::vector<int>{}));
  EXPECT_FALSE(o.has_errors);
  EXPECT_TRUE(o.values.empty());
}

TEST(RunTaskTest, MultipleArguments) {
  const std::vector<std::tuple<int, int>> pairs{{2, 3}, {-4, 5}, {0, 9}, {100000, 3}};
  for (bool star : {false, true}) {
    const std::string payload =
        star ? encode_chunk<&t::multiply, true>(pairs) : encode_chunk<&t::multiply>(pairs);
    const auto o = run<int>("multiply", pairs.size(), payload);
    EXPECT_FALSE(o.has_errors);
    for (std::size_t i = 0; i < pairs.size(); ++i) {
      EXPECT_EQ(*o.values[i], std::get<0>(pairs[i]) * std::get<1>(pairs[i]));
    }
  }
  const std::vector<std::tuple<std::string, int, double>> mixed{{"a", 1, 2.5}, {"bc", -2, 7.0}};
  const auto o = run<std::string>("describe", mixed.size(), encode_chunk<&t::describe, true>(mixed));
  EXPECT_FALSE(o.has_errors);
  EXPECT_EQ(*o.values[0], "a:1:2");
  EXPECT_EQ(*o.values[1], "bc:-2:7");
}

TEST(RunTaskTest, VoidTaskRunsAndReturnsNil) {
  t::g_recorded_sum = 0;
  const std::vector<int> xs{1, 2, 3, 4};
  const auto o = run<std::nullptr_t>("record", xs.size(), encode_chunk<&t::record>(xs));
  EXPECT_FALSE(o.has_errors);
  EXPECT_EQ(t::g_recorded_sum, 10);
  for (const auto& v : o.values) EXPECT_TRUE(v.has_value());
}

TEST(RunTaskTest, StructArgumentAndResult) {
  const std::vector<t::Point> ps{{1, 2, "a"}, {-3, 4, ""}, {0, 0, std::string(300, 'z')}};
  const auto o = run<t::Point>("shift", ps.size(), encode_chunk<&t::shift>(ps));
  EXPECT_FALSE(o.has_errors);
  for (std::size_t i = 0; i < ps.size(); ++i) {
    ASSERT_TRUE(o.values[i].has_value());
    EXPECT_EQ(*o.values[i], t::shift(ps[i]));
  }
}

TEST(RunTaskTest, ExceptionsArePerItem) {
  std::vector<int> xs{0, 1, 2, 3, 4, 5, 6, 7};
  const auto o = run<int>("fragile", xs.size(), encode_chunk<&t::fragile>(xs));
  EXPECT_TRUE(o.has_errors);
  ASSERT_EQ(o.errors.size(), 3u);
  const std::uint32_t failing[] = {0, 3, 6};
  for (std::size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(o.errors[k].item, failing[k]);
    EXPECT_EQ(o.errors[k].type, "std::runtime_error");
    EXPECT_EQ(o.errors[k].message, "bad input " + std::to_string(failing[k]));
  }
  for (int x : xs) {
    if (x % 3 == 0) {
      EXPECT_FALSE(o.values[x].has_value()) << x;
    } else {
      ASSERT_TRUE(o.values[x].has_value()) << x;
      EXPECT_EQ(*o.values[x], x + 1);
    }
  }
}

TEST(RunTaskTest, NonStandardExceptionsAreReported) {
  const std::vector<int> xs{0, 1, 2};
  const auto o = run<int>("throws_int", xs.size(), encode_chunk<&t::throws_int>(xs));
  ASSERT_EQ(o.errors.size(), 1u);
  EXPECT_EQ(o.errors[0].item, 1u);
  EXPECT_EQ(o.errors[0].type, "int");
  EXPECT_FALSE(o.errors[0].message.empty());
  EXPECT_EQ(*o.values[0], 0);
  EXPECT_EQ(*o.values[2], 2);
}

TEST(RunTaskTest, UnknownTaskFailsEveryItem) {
  const std::vector<int> xs{1, 2, 3};
  const auto o = run<int>("cube", xs.size(), encode_chunk<&t::square>(xs));
  EXPECT_TRUE(o.has_errors);
  ASSERT_EQ(o.errors.size(), 3u);
  for (std::uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(o.errors[i].item, i);
    EXPECT_EQ(o.errors[i].type, "mpx::NotRegistered");
    EXPECT_NE(o.errors[i].message.find("'cube'"), std::string::npos) << o.errors[i].message;
    EXPECT_FALSE(o.values[i].has_value());
  }
  // A registered function's name is needed, not its address's existence.
  const auto o2 = run<int>("never_registered", 1, encode_chunk<&t::square>(std::vector<int>{1}));
  ASSERT_EQ(o2.errors.size(), 1u);
  EXPECT_EQ(o2.errors[0].type, "mpx::NotRegistered");
  // A plain function's name runs it; a forged one says why it is refused.
  const std::string name = detail::require_task(&t::never_registered, "map").name;
  const auto o3 = run<int>(name, 2, encode_chunk<&t::square>(std::vector<int>{4, 5}));
  EXPECT_FALSE(o3.has_errors);
  EXPECT_EQ(*o3.values[1], 5);
  const auto o4 = run<int>(name.substr(0, name.size() - 1) + "z", 1, encode_chunk<&t::square>(std::vector<int>{1}));
  ASSERT_EQ(o4.errors.size(), 1u);
  EXPECT_EQ(o4.errors[0].type, "mpx::NotRegistered");
  EXPECT_NE(o4.errors[0].message.find("is refused: "), std::string::npos) << o4.errors[0].message;
}

TEST(RunTaskTest, WrongArgumentTypesFailPerItem) {
  // Strings where ints are expected.
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(4);
  pk.pack(std::string("one"));
  pk.pack(2);
  pk.pack(std::string("three"));
  pk.pack(std::int64_t{1} << 40);  // does not fit an int
  const auto o = run<int>("square", 4, std::string(buf.data(), buf.size()));
  EXPECT_TRUE(o.has_errors);
  ASSERT_EQ(o.errors.size(), 3u);
  const std::uint32_t failing[] = {0, 2, 3};
  for (std::size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(o.errors[k].item, failing[k]);
    EXPECT_EQ(o.errors[k].type, "mpx::DecodeError");
    EXPECT_NE(o.errors[k].message.find("'square'"), std::string::npos) << o.errors[k].message;
  }
  ASSERT_TRUE(o.values[1].has_value());
  EXPECT_EQ(*o.values[1], 4);

  // A multi-argument task given a bare int or a map instead of its argument array.
  buf.clear();
  msgpack::packer<msgpack::sbuffer> pk2(buf);
  pk2.pack_array(3);
  pk2.pack(5);
  pk2.pack(std::map<int, int>{{1, 2}});
  pk2.pack(std::make_tuple(6, 7));
  const auto m = run<int>("multiply", 3, std::string(buf.data(), buf.size()));
  ASSERT_EQ(m.errors.size(), 2u);
  for (std::uint32_t i = 0; i < 2; ++i) {
    EXPECT_EQ(m.errors[i].item, i);
    EXPECT_EQ(m.errors[i].type, "mpx::DecodeError");
    EXPECT_NE(m.errors[i].message.find("'multiply'"), std::string::npos) << m.errors[i].message;
  }
  EXPECT_EQ(*m.values[2], 42);
}

// msgpack-c converts an array into a std::tuple without checking its length; ArgCodec
// does, so multiply([6]) is an error instead of multiply(6, 0).
TEST(RunTaskTest, WrongArgumentCountFailsPerItem) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(3);
  pk.pack(std::make_tuple(6));
  pk.pack(std::make_tuple(6, 7, 8));
  pk.pack(std::make_tuple(6, 7));
  const auto m = run<int>("multiply", 3, std::string(buf.data(), buf.size()));
  ASSERT_EQ(m.errors.size(), 2u);
  EXPECT_EQ(m.errors[0].item, 0u);
  EXPECT_EQ(m.errors[0].type, "mpx::DecodeError");
  EXPECT_EQ(m.errors[1].item, 1u);
  EXPECT_EQ(m.errors[1].type, "mpx::DecodeError");
  EXPECT_NE(m.errors[0].message.find("expected 2 arguments, got 1"), std::string::npos)
      << m.errors[0].message;
  EXPECT_NE(m.errors[0].message.find("'multiply'"), std::string::npos) << m.errors[0].message;
  EXPECT_EQ(*m.values[2], 42);
}

TEST(RunTaskTest, PayloadNotAnArrayFailsEveryItem) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, std::string("not an array"));
  for (const std::string& payload :
       {std::string(buf.data(), buf.size()), std::string(), std::string("\xc1", 1),
        std::string("\xdc\x00", 2)}) {
    const auto o = run<int>("square", 3, payload);
    EXPECT_TRUE(o.has_errors);
    ASSERT_EQ(o.errors.size(), 3u);
    for (std::uint32_t i = 0; i < 3; ++i) {
      EXPECT_EQ(o.errors[i].item, i);
      EXPECT_EQ(o.errors[i].type, "mpx::DecodeError");
      EXPECT_NE(o.errors[i].message.find("'square'"), std::string::npos) << o.errors[i].message;
    }
  }
}

TEST(RunTaskTest, CountMismatchFailsEveryItem) {
  const std::string payload = encode_chunk<&t::square>(std::vector<int>{1, 2, 3});
  for (std::uint32_t count : {1u, 2u, 4u, 5u}) {
    SCOPED_TRACE(count);
    const auto o = run<int>("square", count, payload);
    EXPECT_TRUE(o.has_errors);
    ASSERT_EQ(o.errors.size(), count);
    for (std::uint32_t i = 0; i < count; ++i) {
      EXPECT_EQ(o.errors[i].type, "mpx::DecodeError");
      EXPECT_NE(o.errors[i].message.find("'square'"), std::string::npos);
      EXPECT_FALSE(o.values[i].has_value());
    }
  }
}

TEST(RunTaskTest, TruncatedPayloadKeepsEarlierResults) {
  // Values of different encoded widths so cuts fall inside items as well as between.
  const std::vector<int> xs{1, 200, -40000, -5, 3, 40000, 7};
  const std::string full = encode_chunk<&t::square>(xs);
  // end[i] = offset just past item i.
  std::vector<std::size_t> end;
  {
    std::size_t off = 1;  // fixarray header
    for (std::size_t i = 0; i < xs.size(); ++i) {
      msgpack::object_handle oh = msgpack::unpack(full.data(), full.size(), off);
      end.push_back(off);
    }
    ASSERT_EQ(end.back(), full.size());
  }
  for (std::size_t cut = 0; cut < full.size(); ++cut) {
    SCOPED_TRACE(cut);
    const auto o = run<int>("square", xs.size(), full.substr(0, cut));
    EXPECT_TRUE(o.has_errors);
    for (std::size_t i = 0; i < xs.size(); ++i) {
      if (end[i] <= cut) {
        ASSERT_TRUE(o.values[i].has_value()) << "item " << i;
        EXPECT_EQ(*o.values[i], xs[i] * xs[i]);
      } else {
        EXPECT_FALSE(o.values[i].has_value()) << "item " << i;
      }
    }
    std::size_t failed = 0;
    for (const ErrorInfo& e : o.errors) {
      EXPECT_EQ(e.type, "mpx::DecodeError");
      EXPECT_NE(e.message.find("'square'"), std::string::npos) << e.message;
      EXPECT_LE(end[e.item], full.size());
      EXPECT_GT(end[e.item], cut);
      ++failed;
    }
    std::size_t expected_failed = 0;
    for (std::size_t e : end) expected_failed += e > cut;
    EXPECT_EQ(failed, expected_failed);
  }
}

TEST(RunTaskTest, ResultsCarryTheRightShape) {
  // has_errors false: exactly one array follows; true: the error list follows it.
  bool has_errors = true;
  const std::string ok = encode_chunk<&t::square>(std::vector<int>{3});
  Buffer out = worker::run_task(task_header("square", 1), ok.data(), ok.size(), &has_errors);
  EXPECT_FALSE(has_errors);
  std::size_t off = 0;
  msgpack::object_handle oh = msgpack::unpack(out.data(), out.size(), off);
  EXPECT_EQ(off, out.size());
  std::vector<int> values;
  oh.get().convert(values);
  EXPECT_EQ(values, std::vector<int>{9});
}

TEST(RunTaskTest, ItemsClaimingHugeLengthsFailWithoutHugeAllocations) {
  // Each of these few-byte items announces ~2^32 elements or bytes that are not there.
  const std::string items[] = {
      std::string("\xdd\xff\xff\xff\xff", 5),          // array32
      std::string("\xdf\xff\xff\xff\xff", 5),          // map32
      std::string("\xdb\xff\xff\xff\xff", 5),          // str32
      std::string("\xc6\xff\xff\xff\xff", 5),          // bin32
      std::string("\x92\xdd\x7f\xff\xff\xff\x01", 7),  // nested array32
  };
  for (const std::string& item : items) {
    SCOPED_TRACE(::testing::PrintToString(item));
    // [1, <item>, 3]: the first item keeps its result, the rest cannot be read.
    const std::string payload = std::string("\x93\x01", 2) + item + std::string("\x03", 1);
    const auto o = run<int>("multiply", 3, payload);
    ASSERT_EQ(o.errors.size(), 3u);  // multiply wants [a, b]: item 0 fails too
    const auto s = run<int>("square", 3, payload);
    ASSERT_TRUE(s.values[0].has_value());
    EXPECT_EQ(*s.values[0], 1);
    ASSERT_EQ(s.errors.size(), 2u);
    EXPECT_EQ(s.errors[0].item, 1u);
    EXPECT_EQ(s.errors[0].type, "mpx::DecodeError");
    EXPECT_EQ(s.errors[1].item, 2u);
  }
  // The driver's side decodes results with the same reader.
  Buffer out;
  msgpack::packer<Buffer> pk(out);
  pk.pack_array(1);
  out.write("\xdd\xff\xff\xff\xff", 5);
  EXPECT_THROW(detail::read_results(out.data(), out.size(), 1, false,
                                    [](std::uint32_t, const msgpack::object&) {}),
               DecodeError);
}

TEST(RunTaskTest, MutatedPayloadsNeverCrashAndAlwaysAnswerEveryItem) {
  // Deterministic fuzzing: whatever the payload, run_task answers with a well-formed
  // result chunk of exactly `count` items, each a value or an error, never both.
  std::mt19937 rng(777);
  const std::string seeds[] = {
      encode_chunk<&t::echo>(std::vector<int>{1, 300, -70000, 5}),
      encode_chunk<&t::wide_multiply>(
          std::vector<std::tuple<int, int>>{{1, 2}, {300, 4}, {5, 6}, {7, 8}}),
      encode_chunk<&t::shift>(std::vector<t::Point>{{1, 2, "a"}, {3, 4, "bb"}, {5, 6, ""}, {7, 8, "c"}}),
  };
  const char* names[] = {"echo", "wide_multiply", "shift"};
  for (int iter = 0; iter < 6000; ++iter) {
    const int which = iter % 3;
    std::string bytes = seeds[which];
    bytes = mpx::testing::mutate(std::move(bytes), rng, 3);
    std::unique_ptr<char[]> exact(new char[bytes.size() + 1]);
    std::memcpy(exact.get(), bytes.data(), bytes.size());
    bool has_errors = false;
    Buffer out = worker::run_task(task_header(names[which], 4), exact.get(), bytes.size(), &has_errors);
    std::vector<bool> seen(4, false);
    std::vector<ErrorInfo> errors;
    ASSERT_NO_THROW(errors = detail::read_results(out.data(), out.size(), 4, has_errors,
                                                  [&](std::uint32_t i, const msgpack::object&) {
                                                    seen[i] = true;
                                                  }))
        << "iteration " << iter;
    EXPECT_EQ(has_errors, !errors.empty());
    for (const ErrorInfo& e : errors) {
      ASSERT_LT(e.item, 4u);
      EXPECT_FALSE(seen[e.item]);
      seen[e.item] = true;
    }
    for (int i = 0; i < 4; ++i) EXPECT_TRUE(seen[i]) << "iteration " << iter << " item " << i;
  }
}

// Found by tools/fuzz/payload_fuzz (its heap-growth property): containers nested in
// one item, each claiming every byte left, passed read_object's per-container limit,
// and msgpack-c allocated each claim up front, so n such bytes cost ~n * n / 5 objects
// (a 64 KB payload took 2 s, a 1 MB one 41 s and 800 MB). The claims of an item are now
// added up before anything is allocated: more elements than bytes cannot be real.
TEST(RunTaskTest, NestedOverclaimingContainersFailFast) {
  auto be32 = [](std::uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                       static_cast<char>(v >> 8), static_cast<char>(v)};
  };
  constexpr std::uint32_t kLinks = 13000;  // 65,000 bytes after the first item
  std::vector<std::string> chains;
  std::string arrays, maps;
  for (std::uint32_t i = 0; i < kLinks; ++i) {
    arrays += "\xdd" + be32(5 * kLinks);      // array32 claiming every byte left
    maps += "\xdf" + be32(5 * kLinks / 2);    // map32: each pair claims two
  }
  chains.push_back(arrays);
  chains.push_back(maps);
  chains.push_back(std::string(5 * kLinks, '\x9f'));  // fixarrays, 15 claimed per byte
  for (const std::string& chain : chains) {
    SCOPED_TRACE(::testing::PrintToString(chain.substr(0, 10)));
    // [1, <chain>]: the first item keeps its result, the second fails on its own.
    const auto o = run<int>("square", 2, std::string("\x92\x01", 2) + chain);
    ASSERT_TRUE(o.values[0].has_value());
    EXPECT_EQ(*o.values[0], 1);
    ASSERT_EQ(o.errors.size(), 1u);
    EXPECT_EQ(o.errors[0].item, 1u);
    EXPECT_EQ(o.errors[0].type, "mpx::DecodeError");
    EXPECT_NE(o.errors[0].message.find("claim more elements"), std::string::npos)
        << o.errors[0].message;
    // The driver reads result chunks with the same reader.
    const std::string results = std::string("\x92\x01", 2) + chain;
    try {
      detail::read_results(results.data(), results.size(), 2, false,
                           [](std::uint32_t, const msgpack::object&) {});
      FAIL() << "read_results accepted the chain";
    } catch (const DecodeError& e) {
      EXPECT_NE(std::string(e.what()).find("claim more elements"), std::string::npos) << e.what();
    }
  }
}

// The check above rejects only claims no bytes could back: deep nesting and large
// containers whose elements are all there decode as before.
TEST(RunTaskTest, DeepOrLargeContainersBackedByBytesStillDecode) {
  std::string deep(2000, '\x91');  // [[[...[7]...]]], 2000 levels
  deep += '\x07';
  msgpack::zone zone;
  std::size_t off = 0;
  msgpack::object obj = detail::read_object(zone, deep.data(), deep.size(), off);
  EXPECT_EQ(off, deep.size());
  for (int level = 0; level < 2000; ++level) {
    ASSERT_EQ(obj.type, msgpack::type::ARRAY) << level;
    ASSERT_EQ(obj.via.array.size, 1u);
    obj = obj.via.array.ptr[0];
  }
  EXPECT_EQ(obj.as<int>(), 7);

  std::map<int, int> wide;
  for (int i = 0; i < 70000; ++i) wide[i] = i;
  msgpack::sbuffer buf;
  // The tightest case: the 70000 ones take one byte each.
  msgpack::pack(buf, std::make_tuple(std::vector<int>(70000, 1), wide));
  off = 0;
  zone.clear();
  const auto both = detail::read_object(zone, buf.data(), buf.size(), off)
                        .as<std::tuple<std::vector<int>, std::map<int, int>>>();
  EXPECT_EQ(off, buf.size());
  EXPECT_EQ(std::get<0>(both).size(), 70000u);
  EXPECT_EQ(std::get<1>(both), wide);
}

// A chunk of numbers as Pool::encode_chunks sends it for a one-number task: one raw
// block (mpx/detail/codec.h).
template <class T>
std::string encode_raw_chunk(const std::vector<T>& items) {
  Buffer buf;
  const std::size_t at = detail::begin_raw_block(buf, detail::raw_code<T>(), items.size());
  if (!items.empty()) std::memcpy(buf.data() + at, items.data(), items.size() * sizeof(T));
  return std::string(buf.data(), buf.size());
}

// What a worker answers to a raw chunk of `name`.
Buffer run_raw(std::string_view name, std::uint32_t count, const std::string& payload,
               bool& has_errors) {
  std::unique_ptr<char[]> exact(new char[payload.size() + 1]);
  std::memcpy(exact.get(), payload.data(), payload.size());
  return worker::run_task(task_header(name, count), exact.get(), payload.size(), &has_errors);
}

TEST(RawChunkTest, NumbersTravelRawBothWays) {
  const std::vector<int> xs{-3, 0, 4, 1000};
  bool has_errors = true;
  Buffer out = run_raw("square", 4, encode_raw_chunk(xs), has_errors);
  EXPECT_FALSE(has_errors);
  ASSERT_TRUE(detail::at_raw_block(out.data(), out.size(), 0));
  std::size_t off = 0;
  const detail::RawBlock block = detail::read_raw_block(out.data(), out.size(), off, 4);
  EXPECT_EQ(off, out.size());
  EXPECT_EQ(block.code, detail::raw_code<int>());
  const std::vector<int> got(detail::RawIterator<int>(block.bytes), detail::RawIterator<int>(block.bytes) + 4);
  EXPECT_EQ(got, (std::vector<int>{9, 0, 16, 1000000}));

  // The generic reader (imap, the fuzzers) sees the same values.
  auto o = run<double>("halve", 3, encode_raw_chunk(std::vector<double>{1.0, -5.0, 0.25}));
  EXPECT_FALSE(o.has_errors);
  EXPECT_EQ(o.values, (std::vector<std::optional<double>>{0.5, -2.5, 0.125}));
}

TEST(RawChunkTest, AThrowingItemFailsAloneWithItsIndex) {
  bool has_errors = false;
  Buffer out = run_raw("fragile", 5, encode_raw_chunk(std::vector<int>{1, 3, 4, 6, 7}), has_errors);
  ASSERT_TRUE(has_errors);
  auto o = run<int>("fragile", 5, encode_raw_chunk(std::vector<int>{1, 3, 4, 6, 7}));
  EXPECT_EQ(o.values, (std::vector<std::optional<int>>{2, std::nullopt, 5, std::nullopt, 8}));
  ASSERT_EQ(o.errors.size(), 2u);
  EXPECT_EQ(o.errors[0].item, 1u);
  EXPECT_EQ(o.errors[0].type, "std::runtime_error");
  EXPECT_EQ(o.errors[0].message, "bad input 3");
  EXPECT_EQ(o.errors[1].item, 3u);
  // A failed item's bytes are zero.
  std::size_t off = 0;
  const detail::RawBlock block = detail::read_raw_block(out.data(), out.size(), off, 5);
  EXPECT_EQ(*(detail::RawIterator<int>(block.bytes) + 1), 0);
}

// A chunk of ints as Pool::lend_raw_chunk sends a large one: in an argument buffer of
// this process, with room for `results` ints after the items (at byte 64 here).
struct LentChunk {
  std::shared_ptr<detail::Segment> use;
  std::string payload;
};
LentChunk lend_raw_chunk(const std::vector<int>& items, std::size_t results) {
  const std::size_t total = 64 + results * sizeof(int);
  LentChunk c;
  c.use = detail::Segment::lend_buffer(detail::untyped_tag(), total, total, [&](char* body) {
    std::memcpy(body, items.data(), items.size() * sizeof(int));
  });
  Buffer buf;
  detail::pack_raw_chunk_ref(buf, c.use->ref(), detail::raw_code<int>(), 0, 64, results * sizeof(int));
  c.payload.assign(buf.data(), buf.size());
  return c;
}

TEST(RawChunkTest, AChunkInABufferIsReadThereAndAnsweredThere) {
  const LentChunk c = lend_raw_chunk({-3, 0, 4, 1000}, 4);
  ASSERT_TRUE(detail::at_raw_chunk(c.payload.data(), c.payload.size(), 0));
  bool has_errors = true;
  Buffer out = run_raw("square", 4, c.payload, has_errors);
  EXPECT_FALSE(has_errors);
  EXPECT_FALSE(detail::at_raw_block(out.data(), out.size(), 0)) << "the results are not in the message";
  ASSERT_TRUE(detail::at_raw_chunk(out.data(), out.size(), 0));
  EXPECT_LT(out.size(), 64u);
  std::size_t off = 0;
  const detail::RawChunk results = detail::read_raw_chunk(out.data(), out.size(), off, 4, false);
  EXPECT_EQ(off, out.size());
  EXPECT_EQ(results.block.bytes, c.use->body() + 64) << "written where the driver made room";
  const std::vector<int> got(detail::RawIterator<int>(results.block.bytes),
                             detail::RawIterator<int>(results.block.bytes) + 4);
  EXPECT_EQ(got, (std::vector<int>{9, 0, 16, 1000000}));

  // A throwing item: its slot is zero, its error follows the reference.
  const LentChunk f = lend_raw_chunk({1, 3, 4, 6, 7}, 5);
  auto o = run<int>("fragile", 5, f.payload);
  EXPECT_EQ(o.values, (std::vector<std::optional<int>>{2, std::nullopt, 5, std::nullopt, 8}));
  ASSERT_EQ(o.errors.size(), 2u);
  EXPECT_EQ(o.errors[1].item, 3u);
  EXPECT_EQ(*(detail::RawIterator<int>(f.use->body() + 64) + 1), 0);

  // Results that are not numbers, or no room for them: in the message, as before.
  auto spelled = run<std::string>("spell", 2, lend_raw_chunk({5, -1}, 0).payload);
  EXPECT_EQ(spelled.values, (std::vector<std::optional<std::string>>{"#5", "#-1"}));
  Buffer inline_out = run_raw("square", 2, lend_raw_chunk({5, -1}, 0).payload, has_errors);
  EXPECT_TRUE(detail::at_raw_block(inline_out.data(), inline_out.size(), 0));
}

TEST(RawChunkTest, AChunkWhoseBufferIsGoneOrTooSmallFailsEveryItemWithTheReason) {
  LentChunk c = lend_raw_chunk({1, 2, 3}, 3);
  auto too_many = run<int>("square", 40, c.payload);
  ASSERT_EQ(too_many.errors.size(), 40u);
  EXPECT_EQ(too_many.errors[0].type, "mpx::DecodeError");
  EXPECT_NE(too_many.errors[0].message.find("do not fit the buffer"), std::string::npos)
      << too_many.errors[0].message;

  c.use.reset();  // the driver let it go: the handle names nothing
  auto gone = run<int>("square", 3, c.payload);
  ASSERT_EQ(gone.errors.size(), 3u);
  EXPECT_EQ(gone.errors[2].type, "mpx::DecodeError");
  EXPECT_NE(gone.errors[2].message.find("raw chunk: mpx: shared argument"), std::string::npos)
      << gone.errors[2].message;
  EXPECT_NE(gone.errors[2].message.find("is gone"), std::string::npos) << gone.errors[2].message;
}

TEST(RawChunkTest, ResultsThatAreNotNumbersGoBackAsMsgpack) {
  auto o = run<std::string>("spell", 2, encode_raw_chunk(std::vector<int>{5, -1}));
  EXPECT_EQ(o.values, (std::vector<std::optional<std::string>>{"#5", "#-1"}));
  auto v = run<std::nullptr_t>("record", 2, encode_raw_chunk(std::vector<int>{5, 6}));
  EXPECT_FALSE(v.has_errors);
}

TEST(RawChunkTest, OtherNumberTypesConvertAsMsgpackWould) {
  // A raw block of another number type (never sent by the driver of this program) is
  // converted per item, as the same numbers in msgpack would be.
  auto o = run<int>("square", 2, encode_raw_chunk(std::vector<std::int64_t>{3, 4}));
  EXPECT_EQ(o.values, (std::vector<std::optional<int>>{9, 16}));
  auto f = run<int>("square", 2, encode_raw_chunk(std::vector<double>{3, 4.5}));
  ASSERT_EQ(f.errors.size(), 2u);
  EXPECT_EQ(f.errors[0].type, "mpx::DecodeError");
  // A two-parameter task cannot take a raw item: each fails with a DecodeError.
  auto m = run<int>("multiply", 1, encode_raw_chunk(std::vector<int>{3}));
  ASSERT_EQ(m.errors.size(), 1u);
  EXPECT_EQ(m.errors[0].type, "mpx::DecodeError");
}

TEST(RawChunkTest, ARawBlockOfTheWrongLengthFailsEveryItem) {
  auto o = run<int>("square", 3, encode_raw_chunk(std::vector<int>{1, 2}));
  ASSERT_EQ(o.errors.size(), 3u);
  EXPECT_EQ(o.errors[0].type, "mpx::DecodeError");
  EXPECT_NE(o.errors[0].message.find("raw chunk"), std::string::npos) << o.errors[0].message;
}

}  // namespace
}  // namespace mpx
