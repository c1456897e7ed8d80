// Pool with real processes: a router and spawned workers for every case, across
// worker counts 1, 2 and more than this machine's cores.
#include <signal.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <deque>
#include <numeric>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "framework/testing/testing.h"
#include "mpx/mpx.h"

// A C function: its symbol does not say what it takes, so a worker could not check it.
extern "C" int pool_test_c_function(int x) { return x; }

// A type whose encoding throws for one value: submission fails part-way in the driver.
struct Bomb {
  int v = 0;
};
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
namespace adaptor {
template <>
struct pack<Bomb> {
  template <class Stream>
  packer<Stream>& operator()(packer<Stream>& o, const Bomb& b) const {
    if (b.v == 13) throw std::runtime_error("13 cannot be encoded");
    o.pack(b.v);
    return o;
  }
};
template <>
struct convert<Bomb> {
  const msgpack::object& operator()(const msgpack::object& o, Bomb& b) const {
    b.v = o.as<int>();
    return o;
  }
};
}  // namespace adaptor
}
}  // namespace msgpack

namespace {

int square(int x) { return x * x; }
int multiply(int x, int y) { return x * y; }
std::string shout(const std::string& s, int times) {
  std::string out;
  for (int i = 0; i < times; ++i) out += s;
  return out + "!";
}
int fail_on_three(int x) {
  if (x == 3) throw std::invalid_argument("three is not allowed");
  return x;
}
int worker_pid(int) { return static_cast<int>(getpid()); }
bool is_even(int x) { return x % 2 == 0; }
std::string worker_name(int) { return mpx::current_process().name; }
int slow_square(int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(x));
  return x * x;
}
void nothing(int) {}
int never_registered(int x) { return x; }
int unregistered_difference(int a, int b) { return a - b; }
double unregistered_half(double x) noexcept { return x / 2; }
int overloaded(int x) { return x + 1; }
std::string overloaded(std::string s) { return s + "!"; }
int unregistered_throws(int x) {
  if (x == 2) throw std::out_of_range("two is out of range");
  return x;
}

struct Point {
  double x = 0;
  double y = 0;
  std::string label;
  MSGPACK_DEFINE(x, y, label);
};
Point scale(Point p, double k) { return Point{p.x * k, p.y * k, p.label + "*"}; }

int defuse(Bomb b) { return b.v; }

int initialized_value = 0;
void set_initialized(int v) { initialized_value = v; }
int read_initialized(int) { return initialized_value; }
void broken_initializer(int) { throw std::runtime_error("no database"); }

// Held until the driver sets done, for a minute at most: whether it was set.
bool wait_for_event(mpx::Event done) { return done.wait(std::chrono::seconds(60)); }
MPX_TASK(wait_for_event);
MPX_TASK(square);
MPX_TASK(multiply);
MPX_TASK(shout);
MPX_TASK(fail_on_three);
MPX_TASK(worker_pid);
MPX_TASK(is_even);
MPX_TASK(worker_name);
MPX_TASK(slow_square);
MPX_TASK(nothing);
MPX_TASK(scale);
MPX_TASK(set_initialized);
MPX_TASK(read_initialized);
MPX_TASK(broken_initializer);
MPX_TASK(defuse);

// Numbers travel as raw chunks (mpx/detail/codec.h); the middle item of the large maps
// below throws.
constexpr int kMiddle = 150001;
int triple_but_middle(int x) {
  if (x == kMiddle) throw std::domain_error("the middle item");
  return 3 * x;
}
double halve_but_middle(double x) {
  if (x == kMiddle) throw std::domain_error("the middle item");
  return x / 2;
}
MPX_TASK(triple_but_middle);
MPX_TASK(halve_but_middle);

std::vector<int> iota(int n) {
  std::vector<int> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// Every test must leave no process behind.
class PoolTest : public ::testing::Test {
 protected:
  void TearDown() override {
    auto left = mpx::testing::wait_no_descendants(std::chrono::seconds(10));
    for (const auto& d : left) ADD_FAILURE() << "left running: pid " << d.pid << " " << d.cmdline;
  }
};

class PoolSizes : public PoolTest, public ::testing::WithParamInterface<int> {};

TEST_P(PoolSizes, MapMatchesSerialForEveryChunksize) {
  mpx::Pool pool(GetParam());
  EXPECT_EQ(pool.processes(), GetParam());
  const std::vector<int> xs = iota(1000);
  std::vector<int> expected;
  for (int x : xs) expected.push_back(x * x);
  EXPECT_EQ(pool.map(square, xs), expected);
  EXPECT_EQ(pool.map(square, xs, 1), expected);
  EXPECT_EQ(pool.map(square, xs, 7), expected);
  EXPECT_EQ(pool.map(square, xs, 5000), expected);
}

// bool results land in std::vector<bool>, whose elements are proxies, not bool&.
TEST_P(PoolSizes, BoolResults) {
  mpx::Pool pool(GetParam());
  const std::vector<bool> even = pool.map(is_even, iota(9), 2);
  EXPECT_EQ(even, (std::vector<bool>{true, false, true, false, true, false, true, false, true}));
  EXPECT_TRUE(pool.apply(is_even, 4));
  EXPECT_FALSE(pool.apply_async(is_even, 3).get());
  int trues = 0;
  for (bool b : pool.imap_unordered(is_even, iota(10))) trues += b;
  EXPECT_EQ(trues, 5);
}

TEST_P(PoolSizes, StarmapApplyAndImap) {
  mpx::Pool pool(GetParam());
  std::vector<std::tuple<int, int>> pairs = {{1, 2}, {3, 4}, {5, 6}, {7, 8}};
  EXPECT_EQ(pool.starmap(multiply, pairs), (std::vector<int>{2, 12, 30, 56}));
  EXPECT_EQ(pool.apply_async(square, 7).get(), 49);
  EXPECT_EQ(pool.apply(multiply, 6, 7), 42);

  const std::vector<int> xs = iota(200);
  std::vector<int> ordered;
  for (int v : pool.imap(square, xs, 3)) ordered.push_back(v);
  std::vector<int> expected;
  for (int x : xs) expected.push_back(x * x);
  EXPECT_EQ(ordered, expected);

  std::vector<int> unordered;
  for (int v : pool.imap_unordered(square, xs, 3)) unordered.push_back(v);
  std::sort(unordered.begin(), unordered.end());
  EXPECT_EQ(unordered, expected);
}

TEST_P(PoolSizes, WorkSpreadsOverWorkers) {
  mpx::Pool pool(GetParam());
  // Slow items with chunksize 1 keep every worker busy at once.
  std::vector<int> pids = pool.map(worker_pid, std::vector<int>(4 * GetParam(), 0), 1);
  std::set<int> distinct(pids.begin(), pids.end());
  EXPECT_LE(distinct.size(), static_cast<std::size_t>(GetParam()));
  EXPECT_EQ(distinct.count(static_cast<int>(getpid())), 0u) << "tasks must not run in the driver";
}

INSTANTIATE_TEST_SUITE_P(Workers, PoolSizes, ::testing::Values(1, 2, 5));

TEST_F(PoolTest, MaxMessageBytesIsCheckedAgainstTheTransport) {
  try {
    mpx::Pool pool(mpx::PoolOptions().processes(1).max_message_bytes(std::size_t{2} << 30));
    FAIL() << "a 2 GiB message limit was accepted";
  } catch (const mpx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_message_bytes must be between 1 and"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(mpx::Pool(mpx::PoolOptions().processes(1).max_message_bytes(0)), mpx::Error);
}

TEST_F(PoolTest, DefaultSizeIsCpuCount) {
  mpx::Pool pool;
  EXPECT_EQ(pool.processes(), mpx::cpu_count());
  EXPECT_EQ(pool.map(square, std::vector<int>{3}), std::vector<int>{9});
}

// -0.0 crosses as -0.0, inside a struct and as an argument and result of its own, as
// pickle keeps it (msgpack-c alone packs a whole double as an integer: 0).
TEST_F(PoolTest, NegativeZeroKeepsItsSign) {
  mpx::Pool pool(1);
  const Point p = pool.apply(scale, Point{-0.0, 0.0, "z"}, 1.0);
  EXPECT_TRUE(std::signbit(p.x));
  EXPECT_FALSE(std::signbit(p.y));
  EXPECT_TRUE(std::signbit(pool.apply(unregistered_half, -0.0)));
  const std::vector<double> halves = pool.map(unregistered_half, std::vector<double>{-0.0, 3.0, -0.0}, 1);
  EXPECT_TRUE(std::signbit(halves[0]) && std::signbit(halves[2]));
  EXPECT_EQ(halves[1], 1.5);
}

TEST_F(PoolTest, StringsStructsAndVoidTasks) {
  mpx::Pool pool(2);
  EXPECT_EQ(pool.apply(shout, std::string("ab"), 3), "ababab!");
  std::vector<std::tuple<Point, double>> in = {{Point{1, 2, "a"}, 2.0}, {Point{-1, 0.5, "b"}, 4.0}};
  std::vector<Point> out = pool.starmap(scale, in);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_DOUBLE_EQ(out[0].x, 2);
  EXPECT_DOUBLE_EQ(out[1].y, 2);
  EXPECT_EQ(out[1].label, "b*");
  pool.map(nothing, iota(10));  // returns void; must simply complete
  mpx::AsyncResult<void> r = pool.apply_async(nothing, 1);
  r.get();
  EXPECT_TRUE(r.successful());
}

TEST_F(PoolTest, EmptyInputs) {
  mpx::Pool pool(2);
  EXPECT_TRUE(pool.map(square, std::vector<int>{}).empty());
  int n = 0;
  for (int v : pool.imap(square, std::vector<int>{})) n += v + 1;
  EXPECT_EQ(n, 0);
  EXPECT_TRUE(pool.map_async(square, std::vector<int>{}).ready());
}

// Python's workers take tasks from one queue, so a short task never waits for a long
// one while a worker is free. mpx's workers hold the chunks they are given (prefetch):
// those waiting behind a long one are taken back for a worker that idles. Otherwise
// each map below would wait for the long task, which waits for the map: it gives up
// after a minute and says so. The long task runs by the lane in a default pool, and
// as a chunk from the router where lanes are off (maxtasksperchild).
TEST_F(PoolTest, ShortTasksDoNotWaitBehindALongOneWhileAWorkerIsFree) {
  for (const auto& options : {mpx::PoolOptions().processes(2),
                              mpx::PoolOptions().processes(2).prefetch(4).maxtasksperchild(100000)}) {
    mpx::Pool pool(options);
    for (int round = 0; round < 3; ++round) {
      mpx::Event done;
      auto long_one = pool.apply_async(wait_for_event, done);
      const std::vector<int> xs = iota(50);
      const std::vector<int> squares = pool.map(square, xs, 1);
      done.set();
      ASSERT_TRUE(long_one.get()) << "round " << round << ": the map waited for the long task";
      for (int x : xs) EXPECT_EQ(squares[x], x * x);
    }
  }
}

TEST_F(PoolTest, AsyncResultWaitsAndTimesOut) {
  mpx::Pool pool(1);
  mpx::AsyncResult<int> slow = pool.apply_async(slow_square, 300);
  EXPECT_FALSE(slow.ready());
  EXPECT_THROW(slow.successful(), mpx::Error);
  EXPECT_THROW(slow.get(std::chrono::milliseconds(1)), mpx::TimeoutError);
  EXPECT_FALSE(slow.wait_for(std::chrono::milliseconds(1)));
  EXPECT_EQ(slow.get(), 90000);
  EXPECT_TRUE(slow.ready());
  EXPECT_TRUE(slow.successful());
  EXPECT_EQ(slow.get(), 90000) << "get() may be called again";
}

TEST_F(PoolTest, ManyThreadsShareOnePool) {
  mpx::Pool pool(2);
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        const std::vector<int> xs = iota(50 + t);
        std::vector<int> got = pool.map(square, xs, 4);
        bool same = got.size() == xs.size();
        for (std::size_t i = 0; same && i < xs.size(); ++i) same = got[i] == xs[i] * xs[i];
        if (same && pool.apply_async(multiply, t, round).get() == t * round) ++ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 80);
}

TEST_F(PoolTest, WorkersHaveNamesAndPids) {
  mpx::Pool pool(2);
  for (const std::string& name : pool.map(worker_name, iota(8), 1)) {
    EXPECT_EQ(name.rfind("PoolWorker-", 0), 0u) << name;
  }
  EXPECT_EQ(mpx::current_process().name, "MainProcess");
  EXPECT_EQ(mpx::current_process().pid, getpid());
}

TEST_F(PoolTest, MaxTasksPerChildReplacesWorkers) {
  mpx::Pool pool(mpx::PoolOptions().processes(2).maxtasksperchild(1));
  std::vector<int> pids = pool.map(worker_pid, iota(12), 1);
  std::set<int> distinct(pids.begin(), pids.end());
  EXPECT_EQ(distinct.size(), 12u) << "each chunk must run in a fresh worker";
  EXPECT_EQ(pool.map(square, iota(10), 1), pool.map(square, iota(10)));
}

TEST_F(PoolTest, InitializerRunsInEveryWorker) {
  mpx::Pool pool(mpx::PoolOptions().processes(3).initializer(set_initialized, 41));
  for (int v : pool.map(read_initialized, iota(30), 1)) EXPECT_EQ(v, 41);
}

TEST_F(PoolTest, FailingInitializerBreaksThePoolWithItsError) {
  mpx::Pool pool(mpx::PoolOptions().processes(2).initializer(broken_initializer, 0));
  try {
    pool.map(square, iota(10));
    FAIL() << "expected PoolBroken";
  } catch (const mpx::PoolBroken& e) {
    EXPECT_NE(std::string(e.what()).find("broken_initializer"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no database"), std::string::npos) << e.what();
  }
  try {
    pool.apply(square, 1);
    FAIL() << "expected PoolBroken";
  } catch (const mpx::PoolBroken& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("Pool is broken: ", 0), 0u) << what;
    EXPECT_EQ(what.find("Pool is broken", 1), std::string::npos) << "said twice: " << what;
    EXPECT_NE(what.find("no database"), std::string::npos) << what;
  }
}

TEST_F(PoolTest, TaskExceptionBecomesRemoteErrorAndPoolStaysUsable) {
  mpx::Pool pool(2);
  try {
    pool.map(fail_on_three, iota(10), 2);
    FAIL() << "expected RemoteError";
  } catch (const mpx::RemoteInfo& e) {
    EXPECT_EQ(e.task_name(), "fail_on_three");
    EXPECT_EQ(e.type_name(), "std::invalid_argument");
    EXPECT_EQ(e.message(), "three is not allowed");
    EXPECT_EQ(e.task_index(), 3u);
    EXPECT_GT(e.worker_pid(), 0);
    EXPECT_NE(e.worker_pid(), getpid());
    EXPECT_NE(std::string(e.description()).find("item 3"), std::string::npos) << e.description();
  }
  mpx::AsyncResult<int> r = pool.apply_async(fail_on_three, 3);
  EXPECT_THROW(r.get(), std::invalid_argument);
  EXPECT_FALSE(r.successful());
  EXPECT_EQ(pool.map(square, iota(5)), (std::vector<int>{0, 1, 4, 9, 16}));
}

// A chunksize far above the input is one chunk, as in map (imap used to reserve 8
// bytes per possible item of it: 32 GiB for SIZE_MAX).
TEST_F(PoolTest, ImapTakesAnyChunksize) {
  mpx::Pool pool(2);
  const std::vector<int> xs = iota(100);
  std::vector<int> expected;
  for (int x : xs) expected.push_back(x * x);
  for (std::size_t chunksize : {std::size_t{UINT32_MAX}, SIZE_MAX}) {
    SCOPED_TRACE(chunksize);
    std::vector<int> ordered;
    for (int v : pool.imap(square, xs, chunksize)) ordered.push_back(v);
    EXPECT_EQ(ordered, expected);
    std::vector<int> unordered;
    for (int v : pool.imap_unordered(square, xs, chunksize)) unordered.push_back(v);
    std::sort(unordered.begin(), unordered.end());
    EXPECT_EQ(unordered, expected);
  }
}

// Python's pattern: it = pool.imap(...); pool.close(); pool.join(); for r in it: ...
// join() reads the input the consumer has not (it waited for ever for those results).
TEST_F(PoolTest, JoinReadsTheRestOfAnImapsInput) {
  for (const bool ordered : {true, false}) {
    SCOPED_TRACE(ordered ? "imap" : "imap_unordered");
    mpx::Pool pool(2);
    const std::vector<int> xs = iota(1000);
    mpx::ImapIterator<int> it = ordered ? pool.imap(square, xs, 1) : pool.imap_unordered(square, xs, 1);
    std::vector<int> got{*it.next()};
    pool.close();
    pool.join();
    for (auto v = it.next(); v; v = it.next()) got.push_back(*v);
    std::sort(got.begin(), got.end());
    std::vector<int> expected;
    for (int x : xs) expected.push_back(x * x);
    EXPECT_EQ(got, expected);
  }
}

TEST_F(PoolTest, ImapRaisesAtTheFailingItemAndContinues) {
  mpx::Pool pool(2);
  mpx::ImapIterator<int> it = pool.imap(fail_on_three, iota(6), 1);
  std::vector<int> got;
  int errors = 0;
  for (int i = 0; i < 6; ++i) {
    try {
      got.push_back(*it.next());
    } catch (const mpx::RemoteInfo& e) {
      EXPECT_EQ(e.task_index(), 3u);
      ++errors;
    }
  }
  EXPECT_FALSE(it.next().has_value());
  EXPECT_EQ(errors, 1);
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 4, 5}));
}

TEST_F(PoolTest, LargeMapsOfNumbersKeepEveryResultAndNameTheFailingItem) {
  mpx::Pool pool(2);
  constexpr int kN = 300000;
  const std::vector<int> xs = iota(kN);
  std::vector<double> ds(xs.begin(), xs.end());
  // All items succeed: ints (one copy per chunk), doubles, and items that are not an
  // array of the parameter type (converted one by one).
  const std::vector<int> small = iota(40000);  // squares that fit in an int
  std::vector<int> squares = pool.map(square, small);
  ASSERT_EQ(squares.size(), small.size());
  for (int i = 0; i < 40000; ++i) ASSERT_EQ(squares[i], i * i) << i;
  const std::deque<long> longs(xs.begin(), xs.begin() + 1000);
  std::vector<int> from_longs = pool.map(square, longs, 7);
  EXPECT_EQ(from_longs, std::vector<int>(squares.begin(), squares.begin() + 1000));
  std::vector<double> halves = pool.map(halve_but_middle, std::vector<double>(ds.begin(), ds.begin() + 1000), 3);
  EXPECT_EQ(halves[999], 499.5);

  // One item throws: map fails with its index...
  for (auto run : {+[](mpx::Pool& p, const std::vector<int>& v, const std::vector<double>& d) {
                     (void)d;
                     p.map(triple_but_middle, v);
                   },
                   +[](mpx::Pool& p, const std::vector<int>& v, const std::vector<double>& d) {
                     (void)v;
                     p.map(halve_but_middle, d, 1000);
                   }}) {
    try {
      run(pool, xs, ds);
      FAIL() << "expected the typed remote error";
    } catch (const mpx::RemoteInfo& e) {
      EXPECT_EQ(e.task_index(), static_cast<std::uint64_t>(kMiddle));
      EXPECT_EQ(e.type_name(), "std::domain_error");
      EXPECT_EQ(e.message(), "the middle item");
    }
  }
  // ...and imap hands out every other result, in order, and the error at its place.
  mpx::ImapIterator<double> it = pool.imap(halve_but_middle, ds, 5000);
  std::size_t got = 0, errors = 0;
  for (int i = 0; i < kN; ++i) {
    try {
      const std::optional<double> v = it.next();
      ASSERT_TRUE(v.has_value()) << i;
      ASSERT_EQ(*v, i / 2.0) << i;
      ++got;
    } catch (const mpx::RemoteInfo& e) {
      EXPECT_EQ(i, kMiddle);
      EXPECT_EQ(e.task_index(), static_cast<std::uint64_t>(kMiddle));
      ++errors;
    }
  }
  EXPECT_FALSE(it.next().has_value());
  EXPECT_EQ(got, static_cast<std::size_t>(kN - 1));
  EXPECT_EQ(errors, 1u);
  // The pool stays usable.
  EXPECT_EQ(pool.map(square, iota(4)), (std::vector<int>{0, 1, 4, 9}));
}

// Functions without MPX_TASK run in every call, each by its own place in the program.
TEST_F(PoolTest, PlainFunctionsRunWithoutRegistration) {
  mpx::Pool pool(2);
  EXPECT_EQ(pool.map(never_registered, iota(5)), iota(5));
  EXPECT_EQ(pool.apply(never_registered, 7), 7);
  EXPECT_EQ(pool.apply_async(unregistered_difference, 9, 4).get(), 5);
  EXPECT_EQ(pool.starmap(unregistered_difference, std::vector<std::tuple<int, int>>{{3, 1}, {10, 20}}),
            (std::vector<int>{2, -10}));
  EXPECT_EQ(pool.map(unregistered_half, std::vector<double>{1, 3}), (std::vector<double>{0.5, 1.5}));
  EXPECT_EQ(pool.map(static_cast<int (*)(int)>(overloaded), iota(2)), (std::vector<int>{1, 2}));
  EXPECT_EQ(pool.map(static_cast<std::string (*)(std::string)>(overloaded), std::vector<std::string>{"a"}),
            (std::vector<std::string>{"a!"}));
  int sum = 0;
  for (int v : pool.imap(never_registered, iota(4))) sum += v;
  EXPECT_EQ(sum, 6);
  try {
    pool.map(unregistered_throws, iota(4));
    FAIL() << "expected std::out_of_range";
  } catch (const std::out_of_range& e) {
    const auto& info = dynamic_cast<const mpx::RemoteInfo&>(e);
    EXPECT_EQ(info.task_index(), 2u);
    EXPECT_EQ(std::string(e.what()).find("two is out of range") != std::string::npos, true) << e.what();
  }
}

TEST_F(PoolTest, AFunctionWorkersCannotCheckIsRefusedWithAdvice) {
  mpx::Pool pool(1);
  try {
    pool.map(pool_test_c_function, iota(3));
    FAIL() << "expected NotRegistered";
  } catch (const mpx::NotRegistered& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("Pool::map: the function at exe+0x", 0), 0u) << what;
    EXPECT_NE(what.find("pool_test_c_function"), std::string::npos) << what;
    EXPECT_NE(what.find("MPX_TASK"), std::string::npos) << what;
  }
  EXPECT_THROW(pool.apply_async(pool_test_c_function, 1), mpx::NotRegistered);
  EXPECT_EQ(pool.apply(square, 3), 9);
}

TEST_F(PoolTest, AnItemThatCannotBeEncodedFailsTheCallAndLeavesNothingPending) {
  mpx::Pool pool(2);
  std::vector<Bomb> items = {{1}, {2}, {13}, {4}};
  EXPECT_THROW(pool.map(defuse, items, 1), std::runtime_error);
  EXPECT_THROW(pool.apply_async(defuse, Bomb{13}), std::runtime_error);
  EXPECT_EQ(pool.map(defuse, std::vector<Bomb>{{5}, {6}}), (std::vector<int>{5, 6}));
  pool.close();
  pool.join();  // must not wait for the items that were never sent
}

TEST_F(PoolTest, PollingReadyCollectsTheResult) {
  mpx::Pool pool(1);
  mpx::AsyncResult<int> r = pool.apply_async(square, 7);
  // No thread waits in get(): ready() itself must bring the result in.
  EXPECT_TRUE(mpx::testing::wait_until([&] { return r.ready(); }, std::chrono::seconds(20)));
  EXPECT_TRUE(r.successful());
  EXPECT_EQ(r.get(), 49);
}

void on_alarm(int) {}

TEST_F(PoolTest, SignalHandlersDoNotInterruptCalls) {
  struct sigaction action {};
  action.sa_handler = on_alarm;  // no SA_RESTART: every blocking call sees EINTR
  struct sigaction previous {};
  ASSERT_EQ(sigaction(SIGALRM, &action, &previous), 0);
  itimerval every_ms{{0, 1000}, {0, 1000}};
  ASSERT_EQ(setitimer(ITIMER_REAL, &every_ms, nullptr), 0);
  {
    mpx::Pool pool(2);
    EXPECT_EQ(pool.map(slow_square, std::vector<int>{20, 30, 40}, 1),
              (std::vector<int>{400, 900, 1600}));
    EXPECT_EQ(pool.apply_async(slow_square, 25).get(), 625);
    mpx::Process p(nothing, 1);
    p.start();
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  itimerval off{};
  setitimer(ITIMER_REAL, &off, nullptr);
  sigaction(SIGALRM, &previous, nullptr);
}

TEST_F(PoolTest, MovedFromPoolSaysSo) {
  mpx::Pool a(1);
  mpx::Pool b(std::move(a));
  EXPECT_THROW(a.close(), mpx::PoolBroken);
  EXPECT_THROW(a.processes(), mpx::PoolBroken);
  EXPECT_THROW(a.map(square, std::vector<int>{1}), mpx::PoolBroken);
  EXPECT_EQ(b.apply(square, 4), 16);
}

TEST_F(PoolTest, HugeTimeoutsMeanForever) {
  mpx::Pool pool(1);
  mpx::AsyncResult<int> r = pool.apply_async(slow_square, 20);
  EXPECT_EQ(r.get(std::chrono::hours::max()), 400);
  EXPECT_TRUE(r.wait_for(std::chrono::seconds::max()));
  mpx::ImapIterator<int> it = pool.imap(slow_square, std::vector<int>{10});
  EXPECT_EQ(it.next(std::chrono::nanoseconds::max()), 100);
}

TEST_F(PoolTest, BadSizesAreErrors) {
  EXPECT_THROW(mpx::Pool(0), mpx::Error);
  EXPECT_THROW(mpx::Pool(-2), mpx::Error);
  EXPECT_THROW(mpx::Pool(mpx::PoolOptions().processes(1).prefetch(0)), mpx::Error);
  EXPECT_THROW(mpx::Pool(mpx::PoolOptions().processes(1).max_retries(-1)), mpx::Error);
  EXPECT_THROW(mpx::Pool(mpx::PoolOptions().processes(1).heartbeat_timeout(std::chrono::milliseconds(0))),
               mpx::Error);
}

TEST_F(PoolTest, CloseJoinTerminate) {
  mpx::Pool pool(2);
  mpx::AsyncResult<std::vector<int>> pending = pool.map_async(square, iota(100));
  EXPECT_THROW(pool.join(), mpx::Error) << "join before close is an error, as in Python";
  pool.close();
  EXPECT_THROW(pool.map(square, iota(3)), mpx::PoolBroken);
  pool.join();
  EXPECT_EQ(pending.get().size(), 100u) << "join waits for submitted work";
  EXPECT_TRUE(mpx::testing::wait_no_descendants(std::chrono::seconds(5)).empty());
  try {
    pool.apply(square, 1);
    FAIL() << "expected PoolBroken";
  } catch (const mpx::PoolBroken& e) {
    EXPECT_STREQ(e.what(), "Pool is not running: Pool was joined (Python: ValueError: Pool not running)");
  }

  mpx::Pool other(2);
  mpx::AsyncResult<int> slow = other.apply_async(slow_square, 5000);
  other.terminate();
  EXPECT_THROW(slow.get(), mpx::PoolBroken);
}

TEST_F(PoolTest, TerminateWakesThreadsWaitingForResults) {
  mpx::Pool pool(2);
  mpx::AsyncResult<int> slow = pool.apply_async(slow_square, 60000);
  std::atomic<bool> failed{false};
  std::thread waiter([&] {
    try {
      slow.get();
    } catch (const mpx::PoolBroken&) {
      failed = true;
    }
  });
  // The waiter is pumping results (or about to); terminate must still get through.
  pool.terminate();
  waiter.join();
  EXPECT_TRUE(failed.load());
}

TEST_F(PoolTest, ResultsOutliveThePool) {
  mpx::AsyncResult<int> done = [] {
    mpx::Pool pool(1);
    auto r = pool.apply_async(square, 5);
    r.wait();
    return r;
  }();
  EXPECT_EQ(done.get(), 25);
  mpx::AsyncResult<int> cut = [] {
    mpx::Pool pool(1);
    return pool.apply_async(slow_square, 3000);
  }();
  EXPECT_THROW(cut.get(), mpx::PoolBroken) << "a destroyed pool fails what it had not finished";
}

}  // namespace
