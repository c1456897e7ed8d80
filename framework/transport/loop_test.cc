// Unit tests for the Loop (handlers, their order, watching and unwatching from inside
// them, pauses, edge-triggered sources, wake-ups from other threads, deadlines) and the
// leader/follower Pump, over real pipes and threads in this process.
#include "framework/transport/loop.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>


namespace mpx {
namespace transport {
namespace {

using std::chrono::milliseconds;

struct Pipe {
  Pipe() { EXPECT_EQ(::pipe2(fd, O_CLOEXEC | O_NONBLOCK), 0); }
  ~Pipe() {
    ::close(fd[0]);
    ::close(fd[1]);
  }
  void put() { ASSERT_EQ(::write(fd[1], "x", 1), 1); }
  void take() {
    char c;
    [[maybe_unused]] ssize_t n = ::read(fd[0], &c, 1);
  }
  int fd[2] = {-1, -1};
};

Clock::time_point soon() { return Clock::now() + milliseconds(2000); }

TEST(Loop, RunsTheHandlersOfWhatIsReadyInTheOrderTheyWereWatched) {
  Loop loop;
  Pipe a, b, c;
  std::vector<std::string> ran;
  loop.watch(a.fd[0], POLLIN, [&](short ev) { EXPECT_TRUE(ev & POLLIN); ran.push_back("a"); a.take(); });
  loop.watch(b.fd[0], POLLIN, [&](short) { ran.push_back("b"); b.take(); });
  loop.watch(c.fd[0], POLLIN, [&](short) { ran.push_back("c"); c.take(); });
  c.put();
  a.put();
  EXPECT_EQ(loop.run_once(soon()), 2);
  EXPECT_EQ(ran, (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(loop.size(), 3u);
}

TEST(Loop, TheDeadlineEndsATurnWithNothingRun) {
  Loop loop;
  Pipe a;
  loop.watch(a.fd[0], POLLIN, [&](short) { ADD_FAILURE() << "nothing was written"; });
  const auto t0 = Clock::now();
  EXPECT_EQ(loop.run_once(t0 + milliseconds(30)), 0);
  EXPECT_GE(Clock::now() - t0, milliseconds(30));
  EXPECT_EQ(loop.run_once(Clock::now(), /*spin=*/true), 0) << "a deadline already passed: no wait";
}

TEST(Loop, HandlersMayUnwatchThemselvesAndWatchOthers) {
  Loop loop;
  Pipe a, b;
  int a_runs = 0, b_runs = 0;
  Loop::Id a_id = 0;
  a_id = loop.watch(a.fd[0], POLLIN, [&](short) {
    ++a_runs;
    a.take();
    loop.unwatch(a_id);  // its own function must survive this call
    loop.watch(b.fd[0], POLLIN, [&](short) { ++b_runs, b.take(); });
  });
  a.put();
  b.put();
  EXPECT_EQ(loop.run_once(soon()), 1) << "b was watched during the turn: next turn";
  a.put();
  EXPECT_EQ(loop.run_once(soon()), 1);
  EXPECT_EQ(a_runs, 1);
  EXPECT_EQ(b_runs, 1);
  EXPECT_EQ(loop.size(), 1u);
  // The freed slot is reused, and the new handler is the one that runs.
  int c_runs = 0;
  loop.watch(a.fd[0], POLLIN, [&](short) { ++c_runs, a.take(); });
  EXPECT_EQ(loop.run_once(soon()), 1);
  EXPECT_EQ(c_runs, 1);
}

// A loop watching one pipe, counting its handler's runs and what it was given.
struct CountingLoop {
  CountingLoop() : id(loop.watch(pipe.fd[0], POLLIN, [this](short ev) { ++runs, seen = ev; })) {}
  Loop loop;
  Pipe pipe;
  int runs = 0;
  short seen = -1;
  Loop::Id id;
};

TEST(Loop, PausedEntriesReportNothingUntilResumed) {
  CountingLoop c;
  c.loop.set_events(c.id, 0);
  c.pipe.put();
  EXPECT_EQ(c.loop.run_once(Clock::now() + milliseconds(20)), 0);
  c.loop.set_events(c.id, POLLIN);
  EXPECT_EQ(c.loop.run_once(soon()), 1);
  EXPECT_EQ(c.runs, 1);
}

TEST(Loop, ReadyAgainRunsAHandlerWithoutItsDescriptor) {
  CountingLoop c;
  Loop& loop = c.loop;
  const Loop::Id id = c.id;
  loop.ready_again(id);
  const auto t0 = Clock::now();
  EXPECT_EQ(loop.run_once(Clock::time_point::max()), 1) << "no wait for an entry marked ready";
  EXPECT_LT(Clock::now() - t0, milliseconds(1000));
  EXPECT_EQ(c.runs, 1);
  EXPECT_EQ(c.seen, 0) << "nothing was readable: the handler looks for itself";
  EXPECT_EQ(loop.run_once(Clock::now() + milliseconds(10)), 0) << "once only";
}

TEST(Loop, WakeFromAnotherThreadEndsTheWait) {
  Loop loop(/*wakeable=*/true);
  std::thread waker([&] {
    std::this_thread::sleep_for(milliseconds(20));
    loop.wake();
  });
  const auto t0 = Clock::now();
  EXPECT_EQ(loop.run_once(Clock::now() + milliseconds(10000)), 0) << "a wake-up runs no handler";
  EXPECT_LT(Clock::now() - t0, milliseconds(5000));
  waker.join();
  loop.wake();
  loop.wake();
  EXPECT_EQ(loop.run_once(soon()), 0);
  const auto t1 = Clock::now();
  EXPECT_EQ(loop.run_once(Clock::now() + milliseconds(30)), 0) << "the wake-ups were drained";
  EXPECT_GE(Clock::now() - t1, milliseconds(30));
}

TEST(Loop, SpinningCatchesWhatComesSoonAndAdaptsItsBudget) {
  if (!Spin::enabled()) GTEST_SKIP() << "MPX_SPIN=0";
  Loop loop;
  Pipe a;
  int runs = 0;
  loop.watch(a.fd[0], POLLIN, [&](short) { ++runs, a.take(); });
  a.put();
  EXPECT_EQ(loop.run_once(soon(), /*spin=*/true), 1);
  EXPECT_EQ(loop.spin().budget(), std::chrono::microseconds(100)) << "caught while spinning: doubled";
  EXPECT_EQ(loop.run_once(Clock::now() + milliseconds(5), /*spin=*/true), 0);
  EXPECT_EQ(loop.spin().budget(), std::chrono::microseconds(50)) << "missed: halved";
}

TEST(Loop, ASpinChecksHotEntriesOnlyAndNeverRunsAColdOneOnOldNews) {
  if (!Spin::enabled()) GTEST_SKIP() << "MPX_SPIN=0";
  Loop loop;
  Pipe hot, cold;
  std::vector<std::string> ran;
  loop.watch(hot.fd[0], POLLIN, [&](short) { ran.push_back("hot"); hot.take(); });
  loop.set_cold(loop.watch(cold.fd[0], POLLIN, [&](short) { ran.push_back("cold"); cold.take(); }));
  // A cold entry is seen once the spin has ended and the loop sleeps.
  cold.put();
  EXPECT_EQ(loop.run_once(soon(), /*spin=*/true), 1);
  EXPECT_EQ(ran, std::vector<std::string>{"cold"});
  EXPECT_EQ(loop.spin().budget(), std::chrono::microseconds(25)) << "the spin saw nothing: halved";
  // A spin that catches a hot one runs it alone: the cold one's last readiness is old.
  hot.put();
  EXPECT_EQ(loop.run_once(soon(), /*spin=*/true), 1);
  EXPECT_EQ(ran, (std::vector<std::string>{"cold", "hot"}));
}

TEST(Spin, BudgetDoublesHalvesAndIsProbedAgain) {
  if (!Spin::enabled()) GTEST_SKIP() << "MPX_SPIN=0";
  Spin s;
  EXPECT_EQ(s.budget(), std::chrono::microseconds(50));
  s.update(true);
  s.update(true);
  EXPECT_EQ(s.budget(), std::chrono::microseconds(100)) << "capped";
  for (int i = 0; i < 6; ++i) s.update(false);
  EXPECT_EQ(s.budget(), std::chrono::microseconds(0));
  for (int i = 0; i < 63; ++i) s.update(false);
  EXPECT_EQ(s.budget(), std::chrono::microseconds(20)) << "probed again after 64 misses at 0";
}

TEST(Spin, AFloorKeepsTheBudgetUp) {
  if (!Spin::enabled()) GTEST_SKIP() << "MPX_SPIN=0";
  Spin s;
  s.set_floor(std::chrono::microseconds(30));
  for (int i = 0; i < 10; ++i) s.update(false);
  EXPECT_EQ(s.budget(), std::chrono::microseconds(30));
  s.update(true);
  EXPECT_EQ(s.budget(), std::chrono::microseconds(60)) << "still doubles when it catches";
  s.set_floor(std::chrono::seconds(1));
  EXPECT_EQ(s.budget(), std::chrono::microseconds(100)) << "never past the ceiling";
}

TEST(Pump, OneThreadRunsTheTurnAndTheOthersSeeWhatItPublished) {
  std::atomic<int> turns{0}, in_turn{0};
  int answers = 0;  // guarded by the pump's mutex
  Pump* pump_ptr = nullptr;
  Pump pump([&](Clock::time_point) {
    EXPECT_EQ(in_turn.fetch_add(1), 0) << "two turns at once";
    std::this_thread::sleep_for(milliseconds(2));
    ++turns;
    {
      std::lock_guard<std::mutex> lock(pump_ptr->mu());
      ++answers;
    }
    in_turn.fetch_sub(1);
    pump_ptr->notify();
  });
  pump_ptr = &pump;
  std::vector<std::thread> waiters;
  for (int k = 1; k <= 4; ++k) {
    waiters.emplace_back([&, k] {
      std::unique_lock<std::mutex> lk(pump.mu());
      EXPECT_TRUE(pump.wait(lk, [&] { return answers >= 10 * k; }, Clock::time_point::max()));
    });
  }
  for (auto& t : waiters) t.join();
  EXPECT_GE(turns.load(), 40);
}

TEST(Pump, ATurnRunsOncePastTheDeadlineAndHoldKeepsTurnsOut) {
  int turns = 0;
  Pump pump([&](Clock::time_point) { ++turns; });
  std::unique_lock<std::mutex> lk(pump.mu());
  EXPECT_FALSE(pump.wait(lk, [] { return false; }, Clock::now()));
  EXPECT_EQ(turns, 1) << "a non-blocking check still pumps once";
  pump.hold(lk);
  EXPECT_FALSE(pump.wait(lk, [] { return false; }, Clock::now() + milliseconds(20)));
  EXPECT_EQ(turns, 1) << "held: nobody else runs the turn";
  pump.release();
  EXPECT_FALSE(pump.wait(lk, [] { return false; }, Clock::now()));
  EXPECT_EQ(turns, 2);
}

TEST(Pump, AnExceptionFromTheTurnReleasesThePump) {
  bool fail = true;
  Pump pump([&](Clock::time_point) {
    if (fail) throw std::runtime_error("connection broke");
  });
  std::unique_lock<std::mutex> lk(pump.mu());
  EXPECT_THROW(pump.wait(lk, [] { return false; }, Clock::time_point::max()), std::runtime_error);
  ASSERT_TRUE(lk.owns_lock());
  fail = false;
  EXPECT_FALSE(pump.wait(lk, [] { return false; }, Clock::now()));
}

}  // namespace
}  // namespace transport
}  // namespace mpx
