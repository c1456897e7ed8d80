// Captureless lambdas as pool tasks without MPX_TASK, with real processes.
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/testing/testing.h"
#include "mpx/mpx.h"

namespace {

using std::chrono::seconds;

int plain_square(int x) { return x * x; }  // not registered: wrapped in a lambda below

class LambdaTasksTest : public ::testing::Test {
 protected:
  void TearDown() override {
    auto left = mpx::testing::wait_no_descendants(seconds(10));
    for (const auto& d : left) ADD_FAILURE() << "left running: pid " << d.pid << " " << d.cmdline;
  }
};

TEST_F(LambdaTasksTest, EveryCallTakesALambda) {
  mpx::Pool pool(2);
  const std::vector<int> xs{1, 2, 3, 4};
  EXPECT_EQ(pool.map([](int x) { return x * x; }, xs), (std::vector<int>{1, 4, 9, 16}));
  EXPECT_EQ(pool.map_async([](int x) { return x + 1; }, xs).get(), (std::vector<int>{2, 3, 4, 5}));
  const std::vector<std::tuple<int, std::string>> pairs{{2, "ab"}, {3, "x"}};
  auto repeat = [](int n, const std::string& s) {
    std::string out;
    for (int i = 0; i < n; ++i) out += s;
    return out;
  };
  EXPECT_EQ(pool.starmap(repeat, pairs), (std::vector<std::string>{"abab", "xxx"}));
  EXPECT_EQ(pool.starmap_async(repeat, pairs).get().size(), 2u);
  EXPECT_NE(pool.apply([]() { return static_cast<int>(getpid()); }), static_cast<int>(getpid()))
      << "the lambda ran in a worker";
  EXPECT_EQ(pool.apply_async([](int a, int b) { return a * b; }, 6, 7).get(), 42);
  std::vector<int> got;
  for (int v : pool.imap([](int x) { return plain_square(x); }, xs)) got.push_back(v);
  EXPECT_EQ(got, (std::vector<int>{1, 4, 9, 16}));
  int sum = 0;
  for (int v : pool.imap_unordered([](int x) { return -x; }, xs, 1)) sum += v;
  EXPECT_EQ(sum, -10);
  // void results and mutable lambdas.
  pool.map([](int) mutable {}, xs);
  // A Process takes one as a Pool call does.
  mpx::Process p([](int code) { std::exit(code); }, 7);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 7);
}

TEST_F(LambdaTasksTest, TwoLambdasWithTheSameSignatureStayApart) {
  mpx::Pool pool(2);
  auto twice = [](int x) { return 2 * x; };
  auto thrice = [](int x) { return 3 * x; };
  EXPECT_EQ(pool.map(twice, std::vector<int>{1, 2}), (std::vector<int>{2, 4}));
  EXPECT_EQ(pool.map(thrice, std::vector<int>{1, 2}), (std::vector<int>{3, 6}));
}

TEST_F(LambdaTasksTest, ALambdasExceptionArrivesTypedAndNamesIt) {
  mpx::Pool pool(1);
  try {
    pool.map([](int x) {
      if (x == 2) throw std::out_of_range("two");
      return x;
    }, std::vector<int>{1, 2, 3});
    FAIL() << "no exception";
  } catch (const std::out_of_range& e) {
    const auto& info = dynamic_cast<const mpx::RemoteInfo&>(e);
    EXPECT_EQ(info.task_index(), 1u);
    EXPECT_EQ(info.task_name().rfind("lambda ", 0), 0u) << info.task_name();
    EXPECT_NE(info.task_name().find("@"), std::string::npos) << info.task_name();
  }
}

// Lambdas are found by name in the registry, like MPX_TASK's functions: a name no
// process registered (forged, or from another build) is refused, never called.
TEST_F(LambdaTasksTest, OnlyRegisteredLambdaNamesRun) {
  auto cube = [](int x) { return x * x * x; };
  mpx::Pool pool(1);
  EXPECT_EQ(pool.apply(cube, 2), 8);
  const auto* entry = mpx::detail::find_task_at(
      mpx::detail::function_address(mpx::detail::closure_task<decltype(cube)>()));
  ASSERT_NE(entry, nullptr);
  const std::string name = entry->name;
  EXPECT_EQ(mpx::detail::find_task(name), entry);
  EXPECT_LE(name.size(), 255u);
  // The same name with another offset names nothing.
  const std::string forged = name.substr(0, name.rfind("+0x")) + "+0x1";
  EXPECT_EQ(mpx::detail::find_task(forged), nullptr);
}

}  // namespace
