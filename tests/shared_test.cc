// Shared state across real processes: Value, Array, locks, Semaphore, Event, Barrier
// and Queue used from Process children and Pool workers; lock holders and queue users
// killed with SIGKILL; and the whole program killed without leaving memory behind.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "framework/shm/state.h"
#include "framework/testing/testing.h"
#include "mpx/mpx.h"

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

void increment(mpx::Value<int> counter) {
  std::lock_guard<mpx::Lock> guard(counter.get_lock());
  counter.value() += 1;
}
int add_atomically(mpx::Value<long> total, int x) {
  total.fetch_add(x);
  return x;
}
void fill(mpx::Array<double> a, int i) { a.at(static_cast<std::size_t>(i)) = i * 0.5; }
int plus(mpx::Value<int> v, int x) { return v.load() + x; }
void lock_and_die(mpx::Lock lock) {
  lock.lock();
  raise(SIGKILL);
}
void hold_queue_lock_and_die(mpx::Queue<int> q) {
  auto* state = reinterpret_cast<mpx::detail::QueueState*>(
      mpx::detail::HandleAccess::segment(q)->body());
  mpx::detail::lock_robust(&state->lock, mpx::detail::Clock::time_point::max());
  state->count = 0;  // as if killed between committing an item and counting it
  raise(SIGKILL);
}
void produce(mpx::Queue<int> q, int n) {
  for (int i = 1; i <= n; ++i) q.put(i);
}
void consume_sum(mpx::Queue<int> q, int n, mpx::Value<long> sum) {
  for (int i = 0; i < n; ++i) sum.fetch_add(q.get());
}
void consume_forever(mpx::Queue<int> q, mpx::Event started) {
  started.set();
  for (;;) q.get();  // killed while blocked here, holding nothing
}
int load_from_queue(mpx::Queue<mpx::Value<int>> q) { return q.get().load(); }
void bounded_section(mpx::Semaphore sem, mpx::Value<int> active, mpx::Value<int> peak) {
  for (int round = 0; round < 200; ++round) {
    sem.acquire();
    const int now = active.fetch_add(1) + 1;
    int seen = peak.load();
    while (now > seen && !peak.compare_exchange(seen, now)) {
    }
    active.fetch_sub(1);
    sem.release();
  }
}
void wait_for_event(mpx::Event go, mpx::Value<int> woke) {
  go.wait();
  woke.fetch_add(1);
}
void barrier_party(mpx::Barrier b, mpx::Array<int> slots, int me) {
  slots.at(static_cast<std::size_t>(me)) = b.wait(seconds(30));
}
void sleep_forever_with(mpx::Value<int> v, mpx::Array<char> a, mpx::Queue<int> q, mpx::Lock l) {
  v.fetch_add(1);
  a[0] = 1;
  for (;;) pause();
}
MPX_TASK(increment);
MPX_TASK(add_atomically);
MPX_TASK(fill);
MPX_TASK(plus);
MPX_TASK(lock_and_die);
MPX_TASK(hold_queue_lock_and_die);
MPX_TASK(produce);
MPX_TASK(consume_sum);
MPX_TASK(consume_forever);
MPX_TASK(load_from_queue);
MPX_TASK(bounded_section);
MPX_TASK(wait_for_event);
MPX_TASK(barrier_party);
MPX_TASK(sleep_forever_with);

// ---- Condition, Barrier action, JoinableQueue, shutdown, lock choices -----------------

// Waits until stock > 0, takes one, records this process in taken (slot me).
void condition_consumer(mpx::Condition cond, mpx::Value<int> stock, mpx::Array<int> taken, int me) {
  std::lock_guard<mpx::Condition> hold(cond);
  if (cond.wait_for([&] { return stock.value() > 0; }, seconds(60))) {
    stock.value() -= 1;
    taken[static_cast<std::size_t>(me)] = 1;
  }
}
// Waits on the condition forever (until killed), after saying it waits.
void condition_waiter_forever(mpx::Condition cond, mpx::Event waiting) {
  std::lock_guard<mpx::Condition> hold(cond);
  waiting.set();
  for (;;) cond.wait();
}
// Notifies while holding the lock, then dies holding it.
void notify_and_die(mpx::Condition cond, mpx::Value<int> stock) {
  cond.acquire();
  stock.value() += 1;
  cond.notify();
  raise(SIGKILL);
}
// The waiter of NotifierKilledHoldingTheLock: 1 if woken and told the notifier died.
void wait_for_stock(mpx::Condition cond, mpx::Value<int> stock, mpx::Value<int> outcome, mpx::Event waiting) {
  std::lock_guard<mpx::Condition> hold(cond);
  waiting.set();
  const bool got = cond.wait_for([&] { return stock.value() > 0; }, seconds(60));
  outcome.store(got && cond.previous_owner_died() ? 1 : 2);
}
void record_round(mpx::Value<int> rounds, mpx::Array<int> runners) {
  const int round = rounds.fetch_add(1);
  if (round < static_cast<int>(runners.size())) runners[static_cast<std::size_t>(round)] = getpid();
}
void die_in_action() { raise(SIGKILL); }
// One wait() with the barrier's default timeout; exit code 2 on BrokenBarrierError.
void barrier_wait_default(mpx::Barrier b) {
  try {
    b.wait();
  } catch (const mpx::BrokenBarrierError&) {
    std::exit(2);
  }
}
// Waits at b rounds times; exit code 0, or 2 on BrokenBarrierError.
void barrier_rounds(mpx::Barrier b, int rounds) {
  try {
    for (int i = 0; i < rounds; ++i) b.wait(seconds(60));
  } catch (const mpx::BrokenBarrierError&) {
    std::exit(2);
  }
}
// Gets n items, adds them to sum, task_done for each.
void joinable_worker(mpx::JoinableQueue<int> q, mpx::Value<long> sum, int n) {
  for (int i = 0; i < n; ++i) {
    sum.fetch_add(q.get());
    q.task_done();
  }
}
// Gets one item and dies before task_done.
void get_and_die(mpx::JoinableQueue<int> q) {
  q.get();
  raise(SIGKILL);
}
// Blocks in get until the queue is shut down: exit code 3 on ShutDown.
void get_until_shutdown(mpx::Queue<int> q, mpx::Event started) {
  started.set();
  try {
    for (;;) q.get();
  } catch (const mpx::ShutDown&) {
    std::exit(3);
  }
}
void increment_pair(mpx::Value<int> a, mpx::Array<int> b, int n) {
  for (int i = 0; i < n; ++i) {
    std::lock_guard<mpx::Lock> guard(a.get_lock());  // also b's lock
    a.value() += 1;
    b[0] += 1;
  }
}
void add_to_raw(mpx::RawArray<long> a, int i) { a[static_cast<std::size_t>(i)] += i; }
bool lock_is_locked(mpx::Lock lock) { return lock.locked(); }
MPX_TASK(condition_consumer);
MPX_TASK(condition_waiter_forever);
MPX_TASK(notify_and_die);
MPX_TASK(wait_for_stock);
MPX_TASK(record_round);
MPX_TASK(die_in_action);
MPX_TASK(barrier_rounds);
MPX_TASK(barrier_wait_default);
MPX_TASK(joinable_worker);
MPX_TASK(get_and_die);
MPX_TASK(get_until_shutdown);
MPX_TASK(increment_pair);
MPX_TASK(add_to_raw);
MPX_TASK(lock_is_locked);

void write_by_name(std::string name, int value) {
  auto block = mpx::SharedMemory::attach(name);
  std::memcpy(block.buf(), &value, sizeof value);
}
long sum_list_by_name(std::string name) {
  long sum = 0;
  for (long x : mpx::ShareableList<long>::attach(name).to_vector()) sum += x;
  return sum;
}
void set_word(mpx::ShareableList<std::string> words, int i, std::string word) {
  words.set(static_cast<std::size_t>(i), word);
}
// Unlinks the block by name, then tries to create a new one under it: the error text.
std::string unlink_then_create(std::string name) {
  mpx::SharedMemory::attach(name).unlink();
  try {
    mpx::SharedMemory::create(name, 16);
    return "created";
  } catch (const mpx::SharedMemoryError& e) {
    return e.what();
  }
}
MPX_TASK(write_by_name);
MPX_TASK(unlink_then_create);
MPX_TASK(sum_list_by_name);
MPX_TASK(set_word);

class SharedTest : public ::testing::Test {
 protected:
  void TearDown() override {
    auto left = mpx::testing::wait_no_descendants(seconds(10));
    for (const auto& d : left) ADD_FAILURE() << "left running: pid " << d.pid << " " << d.cmdline;
  }
};

// The guide's example: five processes increment one shared value under its lock.
TEST_F(SharedTest, FiveProcessesIncrementUnderTheLock) {
  mpx::Value<int> counter(0);
  std::vector<mpx::Process> ps;
  for (int i = 0; i < 5; ++i) ps.emplace_back(increment, counter);
  for (auto& p : ps) p.start();
  for (auto& p : ps) p.join();
  for (auto& p : ps) EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(counter.load(), 5);
}

TEST_F(SharedTest, PoolTasksShareAValueAcrossWorkerCounts) {
  for (int workers : {1, 2, 4}) {
    mpx::Value<long> total(0);
    mpx::Pool pool(workers);
    std::vector<std::tuple<mpx::Value<long>, int>> items;
    long expected = 0;
    for (int i = 0; i < 2000; ++i) {
      items.emplace_back(total, i);
      expected += i;
    }
    pool.starmap(add_atomically, items);
    EXPECT_EQ(total.load(), expected) << workers << " workers";
  }
}

TEST_F(SharedTest, PoolFillsAnArrayInParallel) {
  mpx::Array<double> a(1000);
  mpx::Pool pool(2);
  std::vector<std::tuple<mpx::Array<double>, int>> items;
  for (int i = 0; i < 1000; ++i) items.emplace_back(a, i);
  pool.starmap(fill, items);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(a[static_cast<std::size_t>(i)], i * 0.5);
  // An index past the end fails that item with the task's exception, and only it.
  items.assign({{a, 1000}});
  try {
    pool.starmap(fill, items);
    FAIL() << "expected RemoteError";
  } catch (const mpx::RemoteInfo& e) {
    EXPECT_EQ(e.type_name(), "std::out_of_range");
    EXPECT_NE(e.message().find("index 1000"), std::string::npos) << e.message();
  }
}

// A handle passed to a call keeps its memory alive even if the caller's copy is gone.
TEST_F(SharedTest, ArgumentsArePinnedUntilTheCallIsDone) {
  mpx::Pool pool(1);
  auto result = pool.apply_async(plus, mpx::Value<int>(5), 1);
  EXPECT_EQ(result.get(), 6);
  mpx::Process p(increment, mpx::Value<int>(0));
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_F(SharedTest, HandleWhoseSegmentIsGoneFailsTheTaskByName) {
  mpx::Queue<mpx::Value<int>> q;
  {
    mpx::Value<int> short_lived(3);
    q.put(short_lived);  // items do not pin: the value dies with this scope
  }
  mpx::Pool pool(1);
  try {
    pool.apply(load_from_queue, q);
    FAIL() << "expected RemoteError";
  } catch (const mpx::RemoteError& e) {
    EXPECT_EQ(e.type_name(), "mpx::SharedMemoryError");
    EXPECT_NE(e.message().find("is gone"), std::string::npos) << e.message();
  }
}

TEST_F(SharedTest, LockHolderKilledHandsTheLockOnWithAFlag) {
  mpx::Lock lock;
  mpx::Process p(lock_and_die, lock);
  p.start();
  p.join();
  ASSERT_EQ(p.exitcode(), -SIGKILL);
  ASSERT_TRUE(lock.acquire(seconds(10)));
  EXPECT_TRUE(lock.previous_owner_died());
  lock.release();
  // It keeps working for everybody: five more processes take it in turn.
  mpx::Value<int> counter(0);
  std::vector<mpx::Process> ps;
  for (int i = 0; i < 5; ++i) ps.emplace_back(increment, counter);
  for (auto& q : ps) q.start();
  for (auto& q : ps) q.join();
  EXPECT_EQ(counter.load(), 5);
}

TEST_F(SharedTest, QueueCarriesItemsBetweenProcesses) {
  mpx::Queue<int> q(16);
  mpx::Value<long> sum(0);
  mpx::Process producer(produce, q, 5000);
  mpx::Process consumer(consume_sum, q, 5000, sum);
  consumer.start();
  producer.start();
  producer.join();
  consumer.join();
  EXPECT_EQ(producer.exitcode(), 0);
  EXPECT_EQ(consumer.exitcode(), 0);
  EXPECT_EQ(sum.load(), 5000L * 5001 / 2);
  EXPECT_TRUE(q.empty());
}

TEST_F(SharedTest, ConsumersKilledWhileWaitingLoseNothing) {
  mpx::Queue<int> q(8);
  std::vector<mpx::Event> started(3);
  std::vector<mpx::Process> doomed;
  for (auto& e : started) doomed.emplace_back(consume_forever, q, e);
  for (auto& d : doomed) d.start();
  for (auto& e : started) ASSERT_TRUE(e.wait(seconds(30)));
  for (auto& d : doomed) d.kill();
  for (auto& d : doomed) d.join();
  mpx::Value<long> sum(0);
  mpx::Process producer(produce, q, 1000);
  mpx::Process consumer(consume_sum, q, 1000, sum);
  producer.start();
  consumer.start();
  ASSERT_TRUE(consumer.join(milliseconds(60000)));
  producer.join();
  EXPECT_EQ(sum.load(), 1000L * 1001 / 2);
}

TEST_F(SharedTest, QueueLockHolderKilledMidUpdateIsRepaired) {
  mpx::Queue<int> q;
  q.put(1);
  q.put(2);
  mpx::Process p(hold_queue_lock_and_die, q);
  p.start();
  p.join();
  ASSERT_EQ(p.exitcode(), -SIGKILL);
  ASSERT_TRUE(q.put(3, seconds(10)));
  EXPECT_EQ(q.qsize(), 3u);
  EXPECT_EQ(q.get(), 1);
  EXPECT_EQ(q.get(), 2);
  EXPECT_EQ(q.get(), 3);
}

TEST_F(SharedTest, SemaphoreBoundsConcurrencyAcrossProcesses) {
  mpx::Semaphore sem(2);
  mpx::Value<int> active(0), peak(0);
  std::vector<mpx::Process> ps;
  for (int i = 0; i < 4; ++i) ps.emplace_back(bounded_section, sem, active, peak);
  for (auto& p : ps) p.start();
  for (auto& p : ps) p.join();
  for (auto& p : ps) EXPECT_EQ(p.exitcode(), 0);
  EXPECT_LE(peak.load(), 2);
  EXPECT_GE(peak.load(), 1);
  EXPECT_EQ(sem.get_value(), 2);
}

TEST_F(SharedTest, EventReleasesWaitingProcesses) {
  mpx::Event go;
  mpx::Value<int> woke(0);
  std::vector<mpx::Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(wait_for_event, go, woke);
  for (auto& p : ps) p.start();
  auto* state = reinterpret_cast<mpx::detail::EventState*>(mpx::detail::HandleAccess::segment(go)->body());
  ASSERT_TRUE(mpx::testing::wait_until([&] { return state->waiters.load() == 3; }, seconds(30)));
  EXPECT_EQ(woke.load(), 0);
  go.set();
  for (auto& p : ps) p.join();
  EXPECT_EQ(woke.load(), 3);
}

TEST_F(SharedTest, BarrierAcrossProcessesGivesDistinctIndices) {
  mpx::Barrier b(3);
  mpx::Array<int> slots(3);
  std::vector<mpx::Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(barrier_party, b, slots, i);
  for (auto& p : ps) p.start();
  for (auto& p : ps) p.join();
  for (auto& p : ps) EXPECT_EQ(p.exitcode(), 0);
  auto got = slots.to_vector();
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2}));
}

// ---- Condition --------------------------------------------------------------------

// Three consumer processes wait; the parent adds stock one unit at a time with
// notify(): each unit wakes exactly one consumer.
TEST_F(SharedTest, ConditionHandsEachNotificationToOneProcess) {
  mpx::Condition cond;
  mpx::Value<int> stock(0);
  mpx::Array<int> taken(3);
  std::vector<mpx::Process> consumers;
  for (int i = 0; i < 3; ++i) consumers.emplace_back(condition_consumer, cond, stock, taken, i);
  for (auto& p : consumers) p.start();
  for (int unit = 0; unit < 3; ++unit) {
    std::lock_guard<mpx::Condition> hold(cond);
    stock.value() += 1;
    cond.notify();
  }
  for (auto& p : consumers) p.join();
  for (auto& p : consumers) EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(taken.to_vector(), (std::vector<int>{1, 1, 1}));
  EXPECT_EQ(stock.load(), 0);
}

// A waiter killed with SIGKILL does not swallow a notification: notify(1) reaches the
// live waiter behind it, whether the parent joined the dead waiter already or not (a
// zombie: kill(pid, 0) still succeeds for it). (Python's notify() blocks forever here,
// waiting for the dead sleeper to acknowledge.)
TEST_F(SharedTest, ConditionWaiterKilledDoesNotSwallowANotify) {
  for (const bool joined : {true, false}) {
    SCOPED_TRACE(joined ? "the dead waiter joined" : "the dead waiter a zombie");
    mpx::Condition cond;
    mpx::Event first_waits;
    mpx::Process doomed(condition_waiter_forever, cond, first_waits);
    doomed.start();
    ASSERT_TRUE(first_waits.wait(seconds(30)));
    mpx::Value<int> stock(0);
    mpx::Array<int> taken(1);
    mpx::Process live(condition_consumer, cond, stock, taken, 0);
    live.start();
    // The live consumer waits behind the doomed one (its ticket is later).
    auto* s = reinterpret_cast<mpx::detail::ConditionState*>(mpx::detail::HandleAccess::segment(cond)->body());
    ASSERT_TRUE(mpx::testing::wait_until(
        [&] {
          int waiting = 0;
          for (std::uint32_t i = 0; i < s->capacity; ++i) waiting += s->slots[i].state.load() == mpx::detail::kSlotWaiting;
          return waiting == 2;
        },
        seconds(30)));
    const pid_t doomed_pid = doomed.pid();
    doomed.kill();
    if (joined) {
      doomed.join();
    } else {
      ASSERT_TRUE(mpx::testing::wait_until([&] { return mpx::testing::is_zombie(doomed_pid); }, seconds(30)));
    }
    {
      std::lock_guard<mpx::Condition> hold(cond);
      stock.value() = 1;
      cond.notify(1);
    }
    ASSERT_TRUE(live.join(milliseconds(30000)));
    EXPECT_EQ(live.exitcode(), 0);
    EXPECT_EQ(taken[0], 1);
    doomed.join();
  }
}

// A notifier killed while holding the lock: the waiter wakes, gets the lock and is told
// its holder died. (Python's waiter would wait forever for the lock.)
TEST_F(SharedTest, ConditionNotifierKilledHoldingTheLock) {
  mpx::Condition cond;
  mpx::Value<int> stock(0), outcome(0);
  mpx::Event waiting;
  mpx::Process waiter(wait_for_stock, cond, stock, outcome, waiting);
  waiter.start();
  ASSERT_TRUE(waiting.wait(seconds(30)));
  mpx::Process notifier(notify_and_die, cond, stock);
  notifier.start();
  notifier.join();
  EXPECT_EQ(notifier.exitcode(), -SIGKILL);
  ASSERT_TRUE(waiter.join(milliseconds(30000)));
  EXPECT_EQ(outcome.load(), 1) << "1: woken with previous_owner_died(); 2: otherwise";
}

// ---- Barrier action and timeout ------------------------------------------------------

TEST_F(SharedTest, BarrierActionRunsOncePerRoundInAParty) {
  mpx::Value<int> rounds(0);
  mpx::Array<int> runners(4);
  mpx::Barrier b(3, mpx::BarrierOptions().action(record_round, rounds, runners));
  std::vector<mpx::Process> parties;
  for (int i = 0; i < 3; ++i) parties.emplace_back(barrier_rounds, b, 4);
  for (auto& p : parties) p.start();
  std::set<int> pids;
  for (auto& p : parties) pids.insert(p.pid());
  for (auto& p : parties) p.join();
  for (auto& p : parties) EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(rounds.load(), 4);
  for (int r : runners.to_vector()) EXPECT_EQ(pids.count(r), 1u) << "the action ran in pid " << r;
}

// The party running the action is killed in it: the others get BrokenBarrierError
// instead of waiting forever.
TEST_F(SharedTest, BarrierActionKilledBreaksTheBarrierForTheOthers) {
  mpx::Barrier b(3, mpx::BarrierOptions().action(die_in_action));
  std::vector<mpx::Process> parties;
  for (int i = 0; i < 3; ++i) parties.emplace_back(barrier_rounds, b, 1);
  for (auto& p : parties) p.start();
  for (auto& p : parties) ASSERT_TRUE(p.join(milliseconds(30000)));
  std::multiset<int> codes;
  for (auto& p : parties) codes.insert(*p.exitcode());
  EXPECT_EQ(codes, (std::multiset<int>{-SIGKILL, 2, 2}));
  EXPECT_TRUE(b.broken());
}

TEST_F(SharedTest, BarrierDefaultTimeoutAcrossProcesses) {
  mpx::Barrier b(3, mpx::BarrierOptions().timeout(milliseconds(200)));
  mpx::Process lonely(barrier_wait_default, b);  // the only party that comes
  lonely.start();
  lonely.join();
  EXPECT_EQ(lonely.exitcode(), 2);
  EXPECT_TRUE(b.broken());
}

// ---- JoinableQueue, shutdown ---------------------------------------------------------

TEST_F(SharedTest, JoinableQueueJoinWaitsForEveryTaskDone) {
  mpx::JoinableQueue<int> q;
  mpx::Value<long> sum(0);
  std::vector<mpx::Process> workers;
  for (int i = 0; i < 2; ++i) workers.emplace_back(joinable_worker, q, sum, 500);
  for (auto& w : workers) w.start();
  for (int i = 1; i <= 1000; ++i) q.put(i);
  q.join();
  EXPECT_EQ(sum.load(), 1000L * 1001 / 2);  // join returned only after every task_done
  for (auto& w : workers) w.join();
}

// A consumer killed between get() and task_done(): its item stays unfinished, as in
// Python, so join(timeout) says false instead of hanging; the other items are done.
TEST_F(SharedTest, JoinableQueueConsumerKilledLeavesItsTaskUnfinished) {
  mpx::JoinableQueue<int> q;
  q.put(1);
  mpx::Process doomed(get_and_die, q);
  doomed.start();
  doomed.join();
  ASSERT_EQ(doomed.exitcode(), -SIGKILL);
  mpx::Value<long> sum(0);
  for (int i = 2; i <= 4; ++i) q.put(i);
  mpx::Process worker(joinable_worker, q, sum, 3);
  worker.start();
  worker.join();
  EXPECT_EQ(sum.load(), 9);
  EXPECT_FALSE(q.join(milliseconds(100)));
  q.task_done();  // the survivor accounts for it
  EXPECT_TRUE(q.join(milliseconds(0)));
}

TEST_F(SharedTest, ShutdownWakesBlockedConsumerProcesses) {
  mpx::Queue<int> q;
  std::vector<mpx::Event> started(2);
  std::vector<mpx::Process> consumers;
  for (auto& e : started) consumers.emplace_back(get_until_shutdown, q, e);
  for (auto& c : consumers) c.start();
  for (auto& e : started) ASSERT_TRUE(e.wait(seconds(30)));
  q.put(7);  // taken by one of them first
  q.shutdown();
  for (auto& c : consumers) ASSERT_TRUE(c.join(milliseconds(30000)));
  for (auto& c : consumers) EXPECT_EQ(c.exitcode(), 3);
  EXPECT_THROW(q.put(8), mpx::ShutDown);
}

// ---- Lock choices, RawArray, Lock::locked ---------------------------------------------

// A Value and an Array guarded by one Lock (Python's lock=<a lock>): every process
// updates both under it, so they always agree.
TEST_F(SharedTest, OneLockGuardsAValueAndAnArrayAcrossProcesses) {
  mpx::Lock lock;
  mpx::Value<int> a(0, lock);
  mpx::Array<int> b(1, lock);
  std::vector<mpx::Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(increment_pair, a, b, 2000);
  for (auto& p : ps) p.start();
  for (auto& p : ps) p.join();
  EXPECT_EQ(a.load(), 6000);
  EXPECT_EQ(b[0], 6000);
}

TEST_F(SharedTest, RawArrayFilledByAPool) {
  mpx::RawArray<long> a(100);
  mpx::Pool pool(2);
  std::vector<std::tuple<mpx::RawArray<long>, int>> items;
  for (int i = 0; i < 100; ++i) items.emplace_back(a, i);
  pool.starmap(add_to_raw, items);
  long sum = 0;
  for (long x : a) sum += x;
  EXPECT_EQ(sum, 4950);
}

TEST_F(SharedTest, LockedIsSeenFromAnotherProcess) {
  mpx::Lock lock;
  mpx::Pool pool(1);
  EXPECT_FALSE(pool.apply(lock_is_locked, lock));
  lock.lock();
  EXPECT_TRUE(pool.apply(lock_is_locked, lock));
  lock.unlock();
  mpx::Process p(lock_and_die, lock);
  p.start();
  p.join();
  EXPECT_FALSE(lock.locked()) << "a holder that died leaves the lock free to take";
}

// Runs as a separate driver (see KillingEverythingLeavesNoMemory); skipped otherwise.
TEST(SharedHelper, DISABLED_DriverWithSharedState) {
  if (std::getenv("MPX_SHARED_HELPER") == nullptr) GTEST_SKIP();
  mpx::Value<int> mapped(0);
  mpx::Array<char> big(8 << 20);
  mpx::Queue<int> q;
  mpx::Lock lock;
  mpx::Pool pool(2);
  mpx::Process child(sleep_forever_with, mapped, big, q, lock);
  child.start();
  auto a = pool.apply_async(sleep_forever_with, mapped, big, q, lock);
  while (mapped.load() < 2) std::this_thread::sleep_for(milliseconds(1));
  std::printf("READY %d\n", static_cast<int>(pool.router_pid()));
  std::fflush(stdout);
  a.get();
}

using mpx::testing::dev_shm_entries;

// ---- SharedMemory by name, ShareableList ---------------------------------------------

TEST_F(SharedTest, SharedMemoryFoundByNameInAChildAndAPoolWorker) {
  const std::string name = "block-" + std::to_string(getpid());
  auto block = mpx::SharedMemory::create(name, 64);
  mpx::Process p(write_by_name, name, 1234);
  p.start();
  p.join();
  ASSERT_EQ(p.exitcode(), 0);
  int value = 0;
  std::memcpy(&value, block.buf(), sizeof value);
  EXPECT_EQ(value, 1234);

  mpx::ShareableList<long> numbers({1, 2, 3, 4}, "numbers-" + std::to_string(getpid()));
  mpx::Pool pool(1);
  EXPECT_EQ(pool.apply(sum_list_by_name, numbers.shm().name()), 10);
  mpx::ShareableList<std::string> words({"alpha", "beta"});
  mpx::Process q(set_word, words, 1, std::string("gamma"));  // passed as a handle
  q.start();
  q.join();
  EXPECT_EQ(words[1], "gamma");
}

// unlink() in a process that did not create the block hides it from attach(), but the
// name stays with its creator until the creator unlinks it too: create() elsewhere says
// so, instead of "exists already" next to attach()'s "no block named".
TEST_F(SharedTest, SharedMemoryUnlinkedElsewhereSaysWhoHoldsTheName) {
  const std::string name = "unlinked-" + std::to_string(getpid());
  auto block = mpx::SharedMemory::create(name, 64);
  mpx::Pool pool(1);
  const std::string error = pool.apply(unlink_then_create, name);
  EXPECT_NE(error.find("was unlink()ed, but its name stays with process " + std::to_string(getpid())),
            std::string::npos) << error;
  EXPECT_THROW(mpx::SharedMemory::attach(name), mpx::SharedMemoryError);
  block.unlink();
  EXPECT_NO_THROW(mpx::SharedMemory::create(name, 16)) << "the creator's unlink() frees the name";
}

// Runs as a separate driver (SharedMemoryCreatorKilled...); skipped otherwise.
TEST(SharedHelper, DISABLED_DriverWithANamedBlock) {
  if (std::getenv("MPX_BLOCK_HELPER") == nullptr) GTEST_SKIP();
  auto block = mpx::SharedMemory::create("killed-" + std::to_string(getppid()), 1 << 20);
  const int value = 4321;
  std::memcpy(block.buf(), &value, sizeof value);
  std::printf("READY\n");
  std::fflush(stdout);
  for (;;) pause();
}

// The creator of a named block is killed with SIGKILL: the name is gone at once, a
// process that had attached keeps its mapping, and when it lets go nothing is left,
// not in memory and not in /dev/shm (Python leaves the block in /dev/shm).
TEST_F(SharedTest, SharedMemoryCreatorKilledLeavesNothingBehind) {
  const auto shm_before = dev_shm_entries();
  const std::string name = "killed-" + std::to_string(getpid());
  const auto helper = mpx::testing::start_helper_driver("SharedHelper.DISABLED_DriverWithANamedBlock",
                                                        "MPX_BLOCK_HELPER");
  ASSERT_GT(helper.pid, 0) << helper.output;
  const std::string prefix = "memfd:mpx-" + std::to_string(helper.pid) + "-SharedMemory";
  {
    auto attached = mpx::SharedMemory::attach(name);
    kill(helper.pid, SIGKILL);
    waitpid(helper.pid, nullptr, 0);
    int value = 0;
    std::memcpy(&value, attached.buf(), sizeof value);
    EXPECT_EQ(value, 4321) << "an attached process keeps its mapping";
    EXPECT_THROW(mpx::SharedMemory::attach(name), mpx::SharedMemoryError);
    EXPECT_EQ(mpx::testing::processes_mapping(prefix).size(), 1u);  // this process only
  }
  EXPECT_TRUE(mpx::testing::processes_mapping(prefix).empty());
  EXPECT_EQ(dev_shm_entries(), shm_before);
  auto reused = mpx::SharedMemory::create(name, 8);  // the name is free
  EXPECT_EQ(reused.size(), 8u);
}

TEST_F(SharedTest, KillingDriverRouterAndWorkerLeavesNoMemoryBehind) {
  const auto shm_before = dev_shm_entries();
  const auto helper =
      mpx::testing::start_helper_driver("SharedHelper.DISABLED_DriverWithSharedState", "MPX_SHARED_HELPER");
  ASSERT_GT(helper.pid, 0) << "helper driver did not start: " << helper.output;
  const pid_t router = std::atoi(helper.output.c_str() + helper.output.find("READY") + 6);
  const std::string prefix = "memfd:mpx-" + std::to_string(helper.pid) + "-";
  // The segments are mapped by the driver, the Process child and the busy worker.
  std::set<pid_t> mappers;
  for (const auto& line : mpx::testing::processes_mapping(prefix)) {
    mappers.insert(static_cast<pid_t>(std::atoi(line.c_str())));
  }
  EXPECT_GE(mappers.size(), 3u);
  pid_t worker = -1;
  for (pid_t w : mpx::testing::worker_pids(helper.pid)) {
    if (mappers.count(w)) worker = w;
  }
  ASSERT_GT(worker, 0) << "no pool worker maps the segments";
  ASSERT_GT(router, 0);

  kill(worker, SIGKILL);
  kill(router, SIGKILL);
  kill(helper.pid, SIGKILL);
  waitpid(helper.pid, nullptr, 0);
  const auto left = mpx::testing::wait_no_descendants(seconds(10), helper.pid);
  for (const auto& d : left) ADD_FAILURE() << "orphan: pid " << d.pid << " " << d.cmdline;
  EXPECT_TRUE(mpx::testing::wait_until(
      [&] { return mpx::testing::processes_mapping(prefix).empty(); }, seconds(10)));
  for (const auto& line : mpx::testing::processes_mapping(prefix)) ADD_FAILURE() << "still mapped: " << line;
  EXPECT_EQ(dev_shm_entries(), shm_before);
}

}  // namespace
