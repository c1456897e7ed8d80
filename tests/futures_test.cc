// mpx::Future with real processes: pool and actor futures, callbacks, then, wait,
// as_completed, cancel (queued in a worker, running, finished), Pool::shutdown with
// cancel_futures.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "framework/testing/log_capture.h"
#include "framework/testing/testing.h"
#include "mpx/mpx.h"

namespace {

int square(int x) { return x * x; }
int fail_on_three(int x) {
  if (x == 3) throw std::invalid_argument("three is not allowed");
  return x;
}
int worker_pid(int) { return static_cast<int>(getpid()); }
// Counts that it started, then waits for go: a task that runs as long as a test wants.
int gated(mpx::Event go, mpx::Value<int> started, int x) {
  started.fetch_add(1);
  go.wait();
  return x;
}
// Records that it ran: a cancelled task must never get here.
int record(mpx::Value<int> ran, int x) {
  ran.fetch_add(1);
  return x;
}
std::vector<std::string> words(int n) { return std::vector<std::string>(static_cast<std::size_t>(n), "word"); }

MPX_TASK(square);
MPX_TASK(fail_on_three);
MPX_TASK(worker_pid);
MPX_TASK(gated);
MPX_TASK(record);
MPX_TASK(words);

class Counter {
 public:
  explicit Counter(int start) : n_(start) {}
  int add(int k) { return n_ += k; }
  int slow_add(int k) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    return n_ += k;
  }
  int get() const { return n_; }

 private:
  int n_;
};
MPX_ACTOR(Counter, add, slow_add, get);

class FuturesTest : public ::testing::Test {
 protected:
  void TearDown() override {
    auto left = mpx::testing::wait_no_descendants(std::chrono::seconds(10));
    for (const auto& d : left) ADD_FAILURE() << "left running: pid " << d.pid << " " << d.cmdline;
  }
};

using mpx::testing::LogCapture;

TEST_F(FuturesTest, PoolFutureBasics) {
  mpx::Pool pool(2);
  mpx::Future<int> f = pool.apply_async(square, 7);
  mpx::AsyncResult<int> same = f;  // the alias names the same type
  EXPECT_EQ(f.get(), 49);
  EXPECT_EQ(f.get(std::chrono::seconds(30)), 49);
  EXPECT_TRUE(f.ready());
  EXPECT_TRUE(same.done());
  EXPECT_TRUE(f.wait_for(std::chrono::seconds(0)));
  EXPECT_TRUE(f.successful());
  EXPECT_EQ(f.exception(), nullptr);
  EXPECT_FALSE(f.cancel());  // finished: too late
  EXPECT_FALSE(f.cancelled());
  EXPECT_EQ(f.get(), 49);

  mpx::Future<int> bad = pool.apply_async(fail_on_three, 3);
  std::exception_ptr e = bad.exception();
  ASSERT_NE(e, nullptr);
  EXPECT_THROW(std::rethrow_exception(e), std::invalid_argument);
  EXPECT_FALSE(bad.successful());
  EXPECT_FALSE(mpx::Future<int>().valid());
  EXPECT_TRUE(f.valid());
}

TEST_F(FuturesTest, MovingGetMovesTheResultOut) {
  mpx::Pool pool(1);
  mpx::Future<std::vector<std::string>> f = pool.apply_async(words, 1000);
  mpx::Future<std::vector<std::string>> copy = f;
  std::vector<std::string> v = std::move(f).get();
  EXPECT_EQ(v.size(), 1000u);
  // The call's vector was moved from, not copied: the shared state holds an empty one.
  EXPECT_TRUE(copy.get().empty());
}

TEST_F(FuturesTest, CallbacksRunOnceAlsoWhenAddedAfterCompletion) {
  mpx::Pool pool(2);
  std::atomic<int> calls{0}, value{0};
  mpx::Future<int> f = pool.apply_async(square, 6);
  f.add_done_callback([&](const mpx::Future<int>& g) {
    value = g.get();
    ++calls;
  });
  EXPECT_EQ(f.get(), 36);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(value.load(), 36);
  // Added after completion: runs at once, in this thread.
  const auto self = std::this_thread::get_id();
  std::thread::id ran_on;
  f.add_done_callback([&](const mpx::Future<int>&) {
    ran_on = std::this_thread::get_id();
    ++calls;
  });
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(ran_on, self);
  f.get();
  EXPECT_EQ(calls.load(), 2) << "each callback runs once";
}

TEST_F(FuturesTest, ThenGetsValueOrError) {
  mpx::Pool pool(2);
  std::atomic<int> got{0};
  std::atomic<bool> failed{false};
  std::string message;
  auto ok = pool.apply_async(fail_on_three, 4).then([&](int v) { got = v; },
                                                    [&](std::exception_ptr) { failed = true; });
  auto bad = pool.apply_async(fail_on_three, 3)
                 .then([&](int) { got = -1; },
                       [&](std::exception_ptr e) {
                         try {
                           std::rethrow_exception(e);
                         } catch (const mpx::RemoteInfo& r) {
                           message = r.description();
                         }
                       });
  std::vector<int> squares;
  pool.map_async(square, std::vector<int>{1, 2, 3}).then([&](std::vector<int> v) { squares = v; });
  pool.close();
  pool.join();  // collects the results: the callbacks have run when it returns
  EXPECT_EQ(got.load(), 4);
  EXPECT_FALSE(failed.load());
  EXPECT_NE(message.find("three is not allowed"), std::string::npos) << message;
  EXPECT_EQ(squares, (std::vector<int>{1, 4, 9}));
  EXPECT_TRUE(ok.done() && bad.done());
}

// A callback runs with no mpx lock held and not as the thread collecting answers: it
// may wait on the same pool.
TEST_F(FuturesTest, CallbackMayWaitOnTheSamePool) {
  mpx::Pool pool(2);
  std::atomic<int> inner{0};
  mpx::Future<int> f = pool.apply_async(square, 2);
  f.add_done_callback([&](const mpx::Future<int>& g) { inner = pool.apply(square, g.get()); });
  f.wait();
  ASSERT_TRUE(mpx::testing::wait_until(
      [&] {
        pool.apply_async(square, 1).get();  // collects answers, so runs what is due
        return inner.load() != 0;
      },
      std::chrono::seconds(30)));
  EXPECT_EQ(inner.load(), 16);
}

TEST_F(FuturesTest, ThrowingCallbackIsLoggedAndOthersRun) {
  LogCapture log;
  mpx::Pool pool(1);
  std::atomic<int> after{0};
  mpx::Future<int> f = pool.apply_async(square, 3);
  f.add_done_callback([](const mpx::Future<int>&) { throw std::runtime_error("callback exploded"); });
  f.add_done_callback([&](const mpx::Future<int>&) { ++after; });
  EXPECT_EQ(f.get(), 9);
  EXPECT_EQ(after.load(), 1);
  EXPECT_NE(log.text().find("callback exploded"), std::string::npos) << log.text();
}

TEST_F(FuturesTest, CancelOfATaskQueuedInTheWorkerDropsIt) {
  mpx::Pool pool(mpx::PoolOptions().processes(1).prefetch(4));
  mpx::Event go;
  mpx::Value<int> started(0), ran(0);
  mpx::Future<int> running = pool.apply_async(gated, go, started, 1);
  ASSERT_TRUE(mpx::testing::wait_until([&] { return started.load() == 1; }, std::chrono::seconds(30)));
  // With prefetch 4 the one worker holds this chunk already, behind the running one.
  mpx::Future<int> queued = pool.apply_async(record, ran, 2);
  EXPECT_TRUE(queued.cancel());
  EXPECT_TRUE(queued.cancelled());
  EXPECT_FALSE(queued.cancel()) << "a second cancel finds it finished";
  try {
    queued.get();
    ADD_FAILURE() << "get() of a cancelled future returned";
  } catch (const mpx::CancelledError& e) {
    EXPECT_NE(std::string(e.what()).find("task 'record'"), std::string::npos) << e.what();
  }
  ASSERT_NE(queued.exception(), nullptr);
  go.set();
  EXPECT_EQ(running.get(), 1) << "the running task of another call was not disturbed";
  const int before = pool.apply(worker_pid, 0);
  EXPECT_EQ(pool.apply(record, ran, 3), 3);
  EXPECT_EQ(ran.load(), 1) << "the cancelled task ran";
  EXPECT_EQ(pool.apply(worker_pid, 0), before) << "no worker was killed";
}

TEST_F(FuturesTest, CancelOfARunningTaskKillsItsWorkerAndRequeuesTheRest) {
  mpx::Pool pool(mpx::PoolOptions().processes(1).prefetch(4));
  const int first_worker = pool.apply(worker_pid, 0);
  mpx::Event go;  // never set: only the cancel ends this task
  mpx::Value<int> started(0);
  mpx::Future<int> running = pool.apply_async(gated, go, started, 1);
  ASSERT_TRUE(mpx::testing::wait_until([&] { return started.load() == 1; }, std::chrono::seconds(30)));
  mpx::Future<int> behind = pool.apply_async(square, 5);  // held by the same worker
  EXPECT_TRUE(running.cancel());
  EXPECT_THROW(running.get(), mpx::CancelledError);
  EXPECT_EQ(behind.get(), 25) << "the chunk held behind the cancelled one was requeued";
  EXPECT_NE(pool.apply(worker_pid, 0), first_worker) << "the worker was replaced";
  EXPECT_FALSE(running.cancel());
}

TEST_F(FuturesTest, ActorFutureSharesTheType) {
  auto c = mpx::spawn<Counter>(10);
  mpx::Future<int> f = c.call(&Counter::add, 5);
  std::atomic<int> seen{0};
  f.then([&](int v) { seen = v; });
  EXPECT_EQ(f.get(), 15);
  EXPECT_EQ(seen.load(), 15);
  EXPECT_FALSE(f.cancel());

  // Cancelled for the caller: get() throws; the actor still runs it, and goes on.
  mpx::Future<int> slow = c.call(&Counter::slow_add, 1);
  EXPECT_TRUE(slow.cancel());
  EXPECT_TRUE(slow.cancelled());
  EXPECT_THROW(slow.get(), mpx::CancelledError);
  EXPECT_EQ(c.call(&Counter::get).get(), 16);
}

// prefetch 1: a task never waits in the queue of a worker running a gated one.
TEST_F(FuturesTest, WaitMixesPoolAndActorFutures) {
  mpx::Pool pool(mpx::PoolOptions().processes(2).prefetch(1));
  auto c = mpx::spawn<Counter>(0);
  mpx::Event go;
  mpx::Value<int> started(0);
  std::vector<mpx::Future<int>> fs = {pool.apply_async(gated, go, started, 1), c.call(&Counter::add, 1)};
  mpx::WaitResult<int> w = mpx::wait(fs, mpx::FIRST_COMPLETED);
  ASSERT_EQ(w.done.size(), 1u);
  EXPECT_EQ(w.done[0].get(), 1);
  EXPECT_EQ(w.not_done.size(), 1u);
  // A timeout is no error: what is left comes back in not_done.
  w = mpx::wait(fs, mpx::ALL_COMPLETED, std::chrono::milliseconds(1));
  EXPECT_EQ(w.not_done.size(), 1u);
  go.set();
  w = mpx::wait(fs, mpx::ALL_COMPLETED);
  EXPECT_EQ(w.done.size(), 2u);
  EXPECT_TRUE(w.not_done.empty());

  mpx::Event never;
  std::vector<mpx::Future<int>> failing = {pool.apply_async(gated, never, started, 2),
                                           pool.apply_async(fail_on_three, 3)};
  w = mpx::wait(failing, mpx::FIRST_EXCEPTION);
  ASSERT_EQ(w.done.size(), 1u);
  EXPECT_NE(w.done[0].exception(), nullptr);
  ASSERT_EQ(w.not_done.size(), 1u);
  EXPECT_TRUE(w.not_done[0].cancel());  // stops the task that waits for `never`

  EXPECT_TRUE(mpx::wait(std::vector<mpx::Future<int>>{}).done.empty());
  std::vector<mpx::Future<int>> with_empty = {pool.apply_async(square, 1), mpx::Future<int>()};
  try {
    mpx::wait(with_empty);
    ADD_FAILURE() << "an empty future was accepted";
  } catch (const mpx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("futures[1]"), std::string::npos) << e.what();
  }
}

TEST_F(FuturesTest, AsCompletedYieldsInCompletionOrder) {
  mpx::Pool pool(mpx::PoolOptions().processes(2).prefetch(1));
  auto c = mpx::spawn<Counter>(100);
  mpx::Event go;
  mpx::Value<int> started(0);
  std::vector<mpx::Future<int>> fs = {pool.apply_async(gated, go, started, 7), pool.apply_async(square, 3)};
  std::vector<int> order;
  for (mpx::Future<int>& g : mpx::as_completed(fs)) {
    order.push_back(g.get());
    if (order.size() == 1) go.set();  // the gated one can finish only after the first
  }
  EXPECT_EQ(order, (std::vector<int>{9, 7}));

  mpx::Event never;
  std::vector<mpx::Future<int>> mixed = {pool.apply_async(gated, never, started, 1), c.call(&Counter::get)};
  auto it = mpx::as_completed(mixed, std::chrono::milliseconds(200));
  auto first = it.begin();
  EXPECT_EQ(first->get(), 100);
  EXPECT_THROW(++first, mpx::TimeoutError);
  EXPECT_TRUE(mixed[0].cancel());
}

TEST_F(FuturesTest, ShutdownWithCancelFuturesDropsWhatHasNotStarted) {
  mpx::Pool pool(mpx::PoolOptions().processes(1).prefetch(1));
  mpx::Event go;
  mpx::Value<int> started(0), ran(0);
  mpx::Future<int> running = pool.apply_async(gated, go, started, 1);
  ASSERT_TRUE(mpx::testing::wait_until([&] { return started.load() == 1; }, std::chrono::seconds(30)));
  std::vector<mpx::Future<int>> queued;
  for (int i = 0; i < 5; ++i) queued.push_back(pool.apply_async(record, ran, i));
  std::thread stopper([&] { pool.shutdown(/*cancel_futures=*/true); });
  for (auto& q : queued) {
    EXPECT_THROW(q.get(), mpx::CancelledError);
  }
  EXPECT_THROW(pool.apply_async(square, 1), mpx::PoolBroken) << "no submissions after shutdown";
  go.set();  // the running task finishes; shutdown then returns
  stopper.join();
  EXPECT_EQ(ran.load(), 0) << "a task cancelled by shutdown ran";
}

}  // namespace
