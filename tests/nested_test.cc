// Processes started by processes mpx spawned: a Process child, a pool worker and an
// actor each start a Process, a Pool or an actor of their own (Python allows children
// of non-daemonic processes); none outlives the process that started it.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "framework/testing/testing.h"
#include "mpx/mpx.h"

namespace {

using std::chrono::seconds;

int square(int x) { return x * x; }
MPX_TASK(square);

// The sum of squares 0..n-1, computed by a pool this process starts.
int sum_of_squares_in_own_pool(int n, int processes) {
  mpx::Pool inner(processes);
  std::vector<int> xs(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) xs[static_cast<std::size_t>(i)] = i;
  int sum = 0;
  for (int v : inner.map(square, xs)) sum += v;
  return sum;
}
MPX_TASK(sum_of_squares_in_own_pool);
int sum_of_squares_in_pool_of_two(int n) { return sum_of_squares_in_own_pool(n, 2); }
MPX_TASK(sum_of_squares_in_pool_of_two);

// A Process target: stores the pool's answer where the parent can read it.
void pool_in_a_process(mpx::Value<int> out) { out.store(sum_of_squares_in_own_pool(10, 2)); }
MPX_TASK(pool_in_a_process);

// A Process whose target starts a Process that runs a Pool. (A daemonic Process may
// not: tests/process_test.cc checks the message.)
void process_in_a_process(mpx::Value<int> out) {
  mpx::Process inner(pool_in_a_process, out);
  inner.start();
  inner.join();
  if (inner.exitcode() != 0) throw std::runtime_error("inner process failed");
}
MPX_TASK(process_in_a_process);

void store_pid(mpx::Value<int> out) { out.store(static_cast<int>(getpid())); }
MPX_TASK(store_pid);

// Starts a pool, says so, then waits for ever: killed by the test.
void pool_then_wait(mpx::Event started) {
  mpx::Pool inner(2);
  inner.map(square, std::vector<int>{1, 2, 3});
  started.set();
  for (;;) std::this_thread::sleep_for(seconds(1));
}
MPX_TASK(pool_then_wait);

class Launcher {
 public:
  // Starts a Process running store_pid, joins it; returns its exit code and the pid it
  // stored.
  std::vector<int> run_child() {
    mpx::Value<int> pid(0);
    mpx::Process p(store_pid, pid);
    p.start();
    p.join();
    return {*p.exitcode(), pid.load(), static_cast<int>(p.pid())};
  }
  int sum_in_pool(int n) { return sum_of_squares_in_own_pool(n, 2); }
};
MPX_ACTOR(Launcher, run_child, sum_in_pool);

class NestedTest : public ::testing::Test {
 protected:
  void TearDown() override {
    auto left = mpx::testing::wait_no_descendants(seconds(10));
    for (const auto& d : left) ADD_FAILURE() << "left running: pid " << d.pid << " " << d.cmdline;
  }
};

TEST_F(NestedTest, AProcessRunsItsOwnPoolOrItsOwnProcess) {
  for (auto* target : {&pool_in_a_process, &process_in_a_process}) {
    mpx::Value<int> out(-1);
    mpx::Process p(target, out);
    p.start();
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
    EXPECT_EQ(out.load(), 285);
  }
}

TEST_F(NestedTest, APoolTaskRunsItsOwnPool) {
  for (int outer : {1, 2}) {
    mpx::Pool pool(outer);
    EXPECT_EQ(pool.map(sum_of_squares_in_pool_of_two, std::vector<int>{4, 10}, 1),
              (std::vector<int>{14, 285}))
        << outer << " outer workers";
  }
  // Sequential calls: a worker starts and ends several pools in turn.
  mpx::Pool pool(1);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(pool.apply(sum_of_squares_in_own_pool, 5, 2), 30);
}

TEST_F(NestedTest, AnActorStartsAProcessAndAPool) {
  auto launcher = mpx::spawn<Launcher>();
  const std::vector<int> child = launcher.call(&Launcher::run_child).get();
  ASSERT_EQ(child.size(), 3u);
  EXPECT_EQ(child[0], 0);
  EXPECT_EQ(child[1], child[2]) << "the child ran and stored its own pid";
  EXPECT_NE(child[1], static_cast<int>(getpid()));
  EXPECT_NE(child[1], static_cast<int>(launcher.pid()));
  EXPECT_EQ(launcher.call(&Launcher::sum_in_pool, 10).get(), 285);
  launcher.stop();
}

// The nested pool's router and workers end with the Process that started them, even
// when it is killed without a chance to clean up.
TEST_F(NestedTest, KillingTheOuterProcessEndsEverythingItStarted) {
  mpx::Event started;
  mpx::Process p(pool_then_wait, started);
  p.start();
  ASSERT_TRUE(started.wait(seconds(60)));
  // The Process, its pool's router and two workers.
  EXPECT_GE(mpx::testing::descendants().size(), 4u);
  p.kill();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
  // TearDown checks that nothing carrying this driver's id is left.
}

}  // namespace
