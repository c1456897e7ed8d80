// Unit tests for the driver's side of a call (mpx/detail/call.h): how a map's result
// chunks, raw or msgpack, in any order, become its result vector. No processes: the
// chunks are written as a worker writes them (mpx/detail/codec.h).
#include "mpx/detail/call.h"

#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "mpx/detail/codec.h"
#include "mpx/errors.h"
#include "mpx/task.h"

namespace mpx_call_test {
int square(int x) { return x * x; }
MPX_TASK(square);
}  // namespace mpx_call_test

namespace mpx {
namespace {

using detail::Buffer;

// Results as a raw block, optionally followed by the error list.
Buffer raw_results(const std::vector<int>& values, const std::vector<detail::ErrorInfo>& errors = {}) {
  Buffer out;
  const std::size_t at = detail::begin_raw_block(out, detail::raw_code<int>(), values.size());
  std::memcpy(out.data() + at, values.data(), values.size() * sizeof(int));
  if (!errors.empty()) {
    msgpack::packer<Buffer> pk(out);
    pk.pack(errors);
  }
  return out;
}

Buffer msgpack_results(const std::vector<int>& values) {
  Buffer out;
  msgpack::packer<Buffer> pk(out);
  pk.pack(values);
  return out;
}

const detail::TaskEntry& square_task() { return *detail::find_task(std::string("square")); }

TEST(GatherCallTest, BuildsTheResultsFromChunksInAnyOrderAndForm) {
  std::mutex mu;
  detail::GatherCall<int, std::vector<int>> call(square_task(), 7);
  call.set_id(1, &mu, nullptr);
  const Buffer c2 = raw_results({25, 36});
  const Buffer c0 = raw_results({0, 1, 4});
  const Buffer c1 = msgpack_results({9, 16});  // a chunk whose arguments were not raw
  EXPECT_FALSE(call.accept_results(5, 2, c2.data(), c2.size(), false, 0));
  EXPECT_FALSE(call.accept_results(0, 3, c0.data(), c0.size(), false, 0));
  EXPECT_TRUE(call.accept_results(3, 2, c1.data(), c1.size(), false, 0));
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_FALSE(call.failed_locked());
  }
  EXPECT_EQ(call.take(), (std::vector<int>{0, 1, 4, 9, 16, 25, 36}));
}

TEST(GatherCallTest, RawChunksArrivingLastFirstFillTheirPlaces) {
  std::mutex mu;
  detail::GatherCall<int, std::vector<int>> call(square_task(), 6);
  call.set_id(1, &mu, nullptr);
  const Buffer c2 = raw_results({16, 25}), c1 = raw_results({4, 9}), c0 = raw_results({0, 1});
  EXPECT_FALSE(call.accept_results(4, 2, c2.data(), c2.size(), false, 0));
  EXPECT_FALSE(call.accept_results(2, 2, c1.data(), c1.size(), false, 0));
  EXPECT_TRUE(call.accept_results(0, 2, c0.data(), c0.size(), false, 0));
  EXPECT_EQ(call.take(), (std::vector<int>{0, 1, 4, 9, 16, 25}));
}

TEST(GatherCallTest, UnalignedRawResultsAreRead) {
  std::mutex mu;
  detail::GatherCall<int, std::vector<int>> call(square_task(), 3);
  call.set_id(1, &mu, nullptr);
  const Buffer c = raw_results({1, -2, 3});
  std::string shifted = " " + std::string(c.data(), c.size());  // items at an odd address
  EXPECT_TRUE(call.accept_results(0, 3, shifted.data() + 1, c.size(), false, 0));
  EXPECT_EQ(call.take(), (std::vector<int>{1, -2, 3}));
}

TEST(GatherCallTest, AFailedItemFailsTheCallWithItsIndex) {
  std::mutex mu;
  detail::GatherCall<int, std::vector<int>> call(square_task(), 6);
  call.set_id(1, &mu, nullptr);
  detail::ErrorInfo e;
  e.type = "std::domain_error";
  e.message = "no";
  e.item = 1;
  const Buffer c0 = raw_results({0, 1, 4});
  const Buffer c1 = raw_results({9, 0, 25}, {e});
  EXPECT_FALSE(call.accept_results(0, 3, c0.data(), c0.size(), false, 0));
  EXPECT_TRUE(call.accept_results(3, 3, c1.data(), c1.size(), true, 0));
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(call.failed_locked());
  }
  try {
    call.take();
    FAIL() << "no error";
  } catch (const RemoteInfo& err) {
    EXPECT_EQ(err.task_index(), 4u);
    EXPECT_EQ(err.type_name(), "std::domain_error");
  }
}

TEST(GatherCallTest, MalformedRawResultsFailTheCall) {
  std::mutex mu;
  detail::GatherCall<int, std::vector<int>> call(square_task(), 3);
  call.set_id(1, &mu, nullptr);
  const Buffer c = raw_results({1, 2});  // two items where three were sent
  EXPECT_TRUE(call.accept_results(0, 3, c.data(), c.size(), false, 0));
  EXPECT_THROW(call.take(), DecodeError);
}

}  // namespace
}  // namespace mpx
