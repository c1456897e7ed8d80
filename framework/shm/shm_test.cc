// Single-process tests of the shared objects: semantics, error paths, and the robust
// recovery paths, driven by threads (a thread that exits holding a robust mutex is
// handled by the kernel exactly as a process that dies holding it). The same paths
// across real processes are in //tests:shared_test.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <csignal>
#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <msgpack.hpp>

#include "framework/shm/handle_bytes.h"
#include "framework/shm/state.h"
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif
#include "mpx/errors.h"
#include "mpx/queue.h"
#include "mpx/shared.h"
#include "mpx/shared_memory.h"
#include "mpx/sync.h"
#include "mpx/task.h"

// A C function: its symbol does not say what it takes, so no process could check it.
extern "C" void shm_test_c_function() {}

namespace mpx {
namespace {

using namespace std::chrono_literals;

struct Point {
  double x, y;
  int tag;
};

// A thread that ends here while holding a robust mutex stands for a process killed
// holding it. Under ThreadSanitizer the kernel's hand-over to the next holder is made
// visible (lock_robust acquires the same address), as it cannot see it by itself.
void die_holding(const void* mutex_state) {
#if defined(__SANITIZE_THREAD__)
  __tsan_release(const_cast<void*>(mutex_state));
#else
  (void)mutex_state;
#endif
}

using shm_testing::pack;
using shm_testing::unpack;

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const SharedMemoryError& e) {
    return e.what();
  }
  return "no SharedMemoryError";
}

std::string ref_bytes(int kind, std::int64_t owner, int fd, std::uint64_t id, std::uint64_t hash,
                      std::uint64_t count) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(6);
  pk.pack(kind);
  pk.pack(owner);
  pk.pack(fd);
  pk.pack(id);
  pk.pack(hash);
  pk.pack(count);
  return std::string(buf.data(), buf.size());
}

TEST(ValueTest, HoldsItsInitialValueAndAtomicOps) {
  Value<int> v(41);
  EXPECT_EQ(v.load(), 41);
  EXPECT_EQ(v.fetch_add(1), 41);
  EXPECT_EQ(v.fetch_sub(2), 42);
  EXPECT_EQ(v.exchange(7), 40);
  int expected = 8;
  EXPECT_FALSE(v.compare_exchange(expected, 9));
  EXPECT_EQ(expected, 7);
  EXPECT_TRUE(v.compare_exchange(expected, 9));
  EXPECT_EQ(v.load(), 9);
  EXPECT_EQ(v.fetch_or(6), 9);
  EXPECT_EQ(v.fetch_and(3), 15);
  EXPECT_EQ(v.fetch_xor(1), 3);
  EXPECT_EQ(v.load(), 2);
  Value<int> zero;
  EXPECT_EQ(zero.load(), 0);
}

TEST(ValueTest, FloatingPointAndStructs) {
  Value<double> d(1.5);
  EXPECT_EQ(d.fetch_add(2.25), 1.5);
  EXPECT_EQ(d.load(), 3.75);
  Value<Point> p(Point{1, 2, 3});
  EXPECT_EQ(p.load().y, 2);
  p.store(Point{4, 5, 6});
  {
    std::lock_guard<Lock> guard(p.get_lock());
    p.value().tag += 1;
  }
  EXPECT_EQ(p.load().tag, 7);
}

TEST(ValueTest, CopiesShareTheMemory) {
  Value<long> a(1);
  Value<long> b = a;
  b.store(5);
  EXPECT_EQ(a.load(), 5);
}

TEST(ValueTest, ConcurrentIncrementsUnderTheLockAndAtomically) {
  Value<int> locked(0), atomic(0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        std::lock_guard<Lock> guard(locked.get_lock());
        locked.value() += 1;
        atomic.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(locked.load(), 80000);
  EXPECT_EQ(atomic.load(), 80000);
}

TEST(HandleTest, RoundTripsThroughMsgpackToTheSameMemory) {
  Value<int> v(3);
  auto copy = unpack<Value<int>>(pack(v));
  copy.fetch_add(1);
  EXPECT_EQ(v.load(), 4);
  Array<short> a{1, 2, 3};
  auto a2 = unpack<Array<short>>(pack(a));
  EXPECT_EQ(a2.size(), 3u);
  a2[1] = 20;
  EXPECT_EQ(a[1], 20);
}

TEST(HandleTest, WrongTypeOrKindIsRefusedByName) {
  Value<int> v(3);
  const std::string bytes = pack(v);
  EXPECT_EQ(error_of([&] { unpack<Value<double>>(bytes); }),
            "mpx: a Value<int> (4-byte elements) cannot be used as a Value<double> "
            "(8-byte elements)");
  EXPECT_EQ(error_of([&] { unpack<Lock>(bytes); }), "mpx: a Value cannot be used as a Lock");
  EXPECT_EQ(error_of([&] { unpack<Array<int>>(bytes); }),
            "mpx: a Value cannot be used as an Array<int>");
  Queue<int> q;
  EXPECT_NE(error_of([&] { unpack<Queue<std::string>>(pack(q)); }).find("cannot be used as a Queue"),
            std::string::npos);
}

TEST(HandleTest, SegmentGoneInItsOwner) {
  std::string bytes;
  {
    Value<int> v(3);
    bytes = pack(v);
  }
  EXPECT_EQ(error_of([&] { unpack<Value<int>>(bytes); }),
            "mpx: shared Value<int> is gone: every handle to it in this process, which "
            "created it, was destroyed");
}

TEST(HandleTest, SegmentOfAnExitedOwner) {
  const pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);
  const auto bytes = ref_bytes(1, child, 5, 42, detail::type_tag<int>().hash, 1);
  EXPECT_EQ(error_of([&] { unpack<Value<int>>(bytes); }),
            "mpx: shared Value<int> is gone: process " + std::to_string(child) +
                ", which created it, has exited");
}

TEST(HandleTest, FdOfALiveProcessThatIsNotASegment) {
  // A live child of ours, whose fd 0 (inherited from us) is no mpx segment.
  const pid_t child = fork();
  if (child == 0) {
    for (;;) pause();
  }
  const auto bytes = ref_bytes(1, child, 0, 42, detail::type_tag<int>().hash, 1);
  const std::string error = error_of([&] { unpack<Value<int>>(bytes); });
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_NE(error.find("no longer holds it"), std::string::npos) << error;
}

TEST(HandleTest, MalformedRefIsATypeError) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, std::vector<int>{1, 2});
  auto oh = msgpack::unpack(buf.data(), buf.size());
  EXPECT_THROW(oh.get().as<Value<int>>(), msgpack::type_error);
  const auto bad_kind = ref_bytes(99, getpid(), 3, 1, 0, 1);
  auto oh2 = msgpack::unpack(bad_kind.data(), bad_kind.size());
  EXPECT_THROW(oh2.get().as<Value<int>>(), msgpack::type_error);
}

TEST(ArrayTest, IndexingIterationAndBounds) {
  Array<double> a(5);
  EXPECT_EQ(a.size(), 5u);
  for (double x : a) EXPECT_EQ(x, 0.0);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<double>(i) * 1.5;
  EXPECT_EQ(a.at(4), 6.0);
  EXPECT_EQ(a.to_vector(), (std::vector<double>{0, 1.5, 3, 4.5, 6}));
  try {
    a.at(5);
    FAIL() << "at(5) did not throw";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "mpx::Array::at: index 5 is out of range for an array of 5");
  }
  Array<int> empty(0);
  EXPECT_TRUE(empty.empty());
  EXPECT_THROW(empty.at(0), std::out_of_range);
  std::vector<int> src{3, 1, 4};
  Array<int> from(src.begin(), src.end());
  EXPECT_EQ(from.to_vector(), src);
  EXPECT_THROW(Array<double>(SIZE_MAX / 4), std::length_error);
}

TEST(LockTest, TryLockTimeoutAndOwnership) {
  Lock lock;
  lock.lock();
  std::thread other([&] {
    EXPECT_FALSE(lock.try_lock());
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_FALSE(lock.acquire(30ms));
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 30ms);
    EXPECT_THROW(lock.unlock(), Error);  // not the holder
  });
  other.join();
  EXPECT_THROW(lock.lock(), Error);  // would deadlock: error-checking
  EXPECT_FALSE(lock.try_lock());     // as Python's acquire(False) on a held Lock
  EXPECT_FALSE(lock.acquire(10ms));
  lock.unlock();
  EXPECT_THROW(lock.unlock(), Error);
  EXPECT_TRUE(lock.acquire(0ms));
  lock.release();
}

TEST(LockTest, RLockIsReentrant) {
  RLock r;
  r.lock();
  r.lock();
  std::thread other([&] { EXPECT_FALSE(r.try_lock()); });
  other.join();
  r.unlock();
  std::thread still([&] { EXPECT_FALSE(r.try_lock()); });
  still.join();
  r.unlock();
  std::thread free([&] {
    EXPECT_TRUE(r.try_lock());
    r.unlock();
  });
  free.join();
}

TEST(LockTest, HolderThatDiesHandsOverWithAFlag) {
  Lock lock;
  Value<int> guarded(0);
  std::thread dies([&] {
    lock.lock();
    guarded.store(1);  // "half-updated": the thread ends without unlocking
  });
  dies.join();
  EXPECT_TRUE(lock.acquire(5s));
  EXPECT_TRUE(lock.previous_owner_died());
  lock.unlock();
  EXPECT_FALSE(lock.previous_owner_died());
  // And the lock goes on working normally.
  lock.lock();
  EXPECT_FALSE(lock.previous_owner_died());
  lock.unlock();
}

// The waiter is already asleep when the holder dies: the kernel wakes nobody on the
// lock's wait word, so the waiter's bounded sleep must find the death by itself.
TEST(LockTest, SleepingWaiterTakesOverFromADeadHolder) {
  Lock lock;
  std::atomic<bool> held{false}, die{false};
  std::thread holder([&] {
    lock.lock();
    held = true;
    while (!die) std::this_thread::yield();
  });
  while (!held) std::this_thread::yield();
  std::atomic<int> outcome{0};
  std::thread waiter([&] {
    lock.lock();
    outcome = lock.previous_owner_died() ? 2 : 1;
    lock.unlock();
  });
  auto* state = reinterpret_cast<detail::MutexState*>(detail::HandleAccess::segment(lock)->body());
  while (state->sleepers.load() == 0) std::this_thread::yield();
  die = true;
  holder.join();
  waiter.join();
  EXPECT_EQ(outcome.load(), 2);
}

TEST(LockTest, ContendedLockAcrossThreadsStaysExclusive) {
  Lock lock;
  long plain = 0;  // guarded by lock
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50000; ++i) {
        std::lock_guard<Lock> guard(lock);
        ++plain;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(plain, 200000);
}

TEST(LockTest, ValueAndArrayLocksAreRecursiveLikePythons) {
  Value<Point> p(Point{1, 2, 3});
  {
    std::lock_guard<Lock> guard(p.get_lock());
    p.store(Point{4, 5, 6});  // takes the lock again
    EXPECT_EQ(p.load().tag, 6);
  }
  Array<int> a{1, 2};
  std::lock_guard<Lock> guard(a.get_lock());
  EXPECT_EQ(a.to_vector(), (std::vector<int>{1, 2}));
}

TEST(LockTest, DroppingAHeldLockKeepsItsMemory) {
  // The robust list of this thread links through the mutex: unmapping it would corrupt
  // the next lock operation. The segment stays mapped instead.
  {
    Lock doomed;
    doomed.lock();
  }
  Lock other;
  for (int i = 0; i < 100; ++i) {
    other.lock();
    other.unlock();
  }
}

TEST(LockTest, ValueLockRecoversToo) {
  Value<int> v(0);
  std::thread([&] { v.get_lock().lock(); }).join();
  std::lock_guard<Lock> guard(v.get_lock());
  EXPECT_TRUE(v.get_lock().previous_owner_died());
}

TEST(SemaphoreTest, CountsAndTimesOut) {
  Semaphore s(2);
  EXPECT_TRUE(s.try_acquire());
  s.acquire();
  EXPECT_EQ(s.get_value(), 0);
  EXPECT_FALSE(s.try_acquire());
  EXPECT_FALSE(s.acquire(20ms));
  std::thread releaser([&] { s.release(); });
  EXPECT_TRUE(s.acquire(5s));
  releaser.join();
  EXPECT_THROW(Semaphore(-1), std::invalid_argument);
  EXPECT_THROW(s.release(0), std::invalid_argument);
  Semaphore big(INT_MAX);
  EXPECT_THROW(big.release(), Error);
  EXPECT_EQ(big.get_value(), INT_MAX);
}

// A release whose wake-up went to a waiter killed before taking its unit: modelled by
// raising the counter behind the waiters' backs. They must still find it.
TEST(SemaphoreTest, WaiterFindsAUnitWhoseWakeUpWasLost) {
  Semaphore s(0);
  auto* state = reinterpret_cast<detail::SemaphoreState*>(detail::HandleAccess::segment(s)->body());
  std::thread waiter([&] { EXPECT_TRUE(s.acquire(10s)); });
  while (state->waiters.load() == 0) std::this_thread::yield();
  state->value.fetch_add(1);  // no futex_wake
  waiter.join();
  EXPECT_EQ(s.get_value(), 0);
}

TEST(SemaphoreTest, BoundedRefusesTooManyReleases) {
  BoundedSemaphore b(1);
  b.acquire();
  b.release();
  EXPECT_THROW(b.release(), Error);
  EXPECT_EQ(b.get_value(), 1);
}

TEST(EventTest, SetWakesEveryWaiter) {
  Event e;
  EXPECT_FALSE(e.is_set());
  EXPECT_FALSE(e.wait(10ms));
  auto* state = reinterpret_cast<detail::EventState*>(detail::HandleAccess::segment(e)->body());
  std::atomic<int> woke{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < 3; ++i) waiters.emplace_back([&] {
    e.wait();
    ++woke;
  });
  while (state->waiters.load() < 3) std::this_thread::yield();  // all asleep
  e.set();
  for (auto& t : waiters) t.join();
  EXPECT_EQ(woke.load(), 3);
  EXPECT_TRUE(e.wait(0ms));
  e.clear();
  EXPECT_FALSE(e.is_set());
}

// Python's wait() returns True after a set() even if clear() followed before it woke.
TEST(EventTest, SetThenClearStillReleasesWaiters) {
  Event e;
  auto* state = reinterpret_cast<detail::EventState*>(detail::HandleAccess::segment(e)->body());
  std::atomic<bool> released{false};
  std::thread waiter([&] { released = e.wait(10s); });
  while (state->waiters.load() == 0) std::this_thread::yield();
  e.set();
  e.clear();
  waiter.join();
  EXPECT_TRUE(released.load());
  EXPECT_FALSE(e.is_set());
}

TEST(BarrierTest, EveryPartyGetsADistinctIndex) {
  Barrier b(3);
  std::mutex mu;
  std::set<int> indices;
  for (int round = 0; round < 50; ++round) {
    std::vector<std::thread> parties;
    for (int i = 0; i < 3; ++i) parties.emplace_back([&] {
      const int idx = b.wait();
      std::lock_guard<std::mutex> g(mu);
      indices.insert(idx);
    });
    for (auto& t : parties) t.join();
    ASSERT_EQ(indices, (std::set<int>{0, 1, 2}));
    indices.clear();
  }
  EXPECT_EQ(b.parties(), 3);
  EXPECT_EQ(b.n_waiting(), 0);
  EXPECT_THROW(Barrier(0), std::invalid_argument);
}

TEST(BarrierTest, TimeoutBreaksItForEverybodyUntilReset) {
  Barrier b(3);
  std::atomic<int> broken{0};
  std::thread waiter([&] {
    try {
      b.wait();
    } catch (const BrokenBarrierError&) {
      ++broken;
    }
  });
  EXPECT_THROW(b.wait(50ms), BrokenBarrierError);
  waiter.join();
  EXPECT_EQ(broken.load(), 1);
  EXPECT_TRUE(b.broken());
  EXPECT_THROW(b.wait(), BrokenBarrierError);
  b.reset();
  EXPECT_FALSE(b.broken());
  Barrier one(1);
  EXPECT_EQ(one.wait(), 0);
}

// A party killed in the middle of ending a round (holding the barrier's lock, after
// resetting the count, before waking anybody) must not leave the waiters asleep.
TEST(BarrierTest, PartyDyingWhileEndingARoundBreaksIt) {
  Barrier b(3);
  auto* state = reinterpret_cast<detail::BarrierState*>(detail::HandleAccess::segment(b)->body());
  std::atomic<int> broken{0};
  std::thread waiter([&] {
    try {
      b.wait();
    } catch (const BrokenBarrierError&) {
      ++broken;
    }
  });
  while (b.n_waiting() == 0) std::this_thread::yield();
  std::thread([&] {
    ASSERT_EQ(detail::lock_robust(&state->lock, detail::Clock::time_point::max()),
              detail::LockResult::kAcquired);
    state->count = 0;  // and then it dies
    die_holding(&state->lock);
  }).join();
  waiter.join();
  EXPECT_EQ(broken.load(), 1);
  EXPECT_TRUE(b.broken());
  b.reset();
  EXPECT_FALSE(b.broken());
}

TEST(BarrierTest, AbortWakesWaiters) {
  Barrier b(2);
  std::thread waiter([&] { EXPECT_THROW(b.wait(), BrokenBarrierError); });
  while (b.n_waiting() == 0) std::this_thread::yield();
  b.abort();
  waiter.join();
  EXPECT_THROW(b.wait(1s), BrokenBarrierError);
}

TEST(QueueTest, FifoAcrossTypes) {
  Queue<std::string> q;
  q.put("a");
  q.put(std::string(1000, 'b'));
  q.put("");
  EXPECT_EQ(q.qsize(), 3u);
  EXPECT_EQ(q.get(), "a");
  EXPECT_EQ(q.get().size(), 1000u);
  EXPECT_EQ(q.get(), "");
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.try_get(), std::nullopt);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(q.get(30ms), std::nullopt);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 30ms);
}

TEST(QueueTest, NegativeZeroKeepsItsSign) {
  Queue<std::vector<double>> q;
  q.put({-0.0, 2.0});
  const std::vector<double> back = q.get();
  EXPECT_TRUE(std::signbit(back[0]));
  EXPECT_EQ(back[1], 2.0);
}

TEST(QueueTest, MaxsizeBlocksPutters) {
  Queue<int> q(2);
  EXPECT_TRUE(q.try_put(1));
  EXPECT_TRUE(q.put(2, 0ms));
  EXPECT_TRUE(q.full());
  EXPECT_FALSE(q.try_put(3));
  EXPECT_FALSE(q.put(3, 20ms));
  std::thread getter([&] { EXPECT_EQ(q.get(), 1); });
  EXPECT_TRUE(q.put(3, 5s));
  getter.join();
  EXPECT_EQ(q.get(), 2);
  EXPECT_EQ(q.get(), 3);
}

TEST(QueueTest, ByteBufferWrapsAndBounds) {
  Queue<std::string> q(0, 64);
  EXPECT_THROW(q.put(std::string(61, 'x')), std::length_error);
  // Items that straddle the end of the ring come back whole.
  for (int i = 0; i < 100; ++i) {
    const std::string item(static_cast<std::size_t>(i % 37), static_cast<char>('a' + i % 26));
    q.put(item);
    ASSERT_EQ(q.get(), item);
  }
  EXPECT_THROW(Queue<int>(0, 10), std::invalid_argument);
  EXPECT_THROW(Queue<int>(0, SIZE_MAX - 8), std::invalid_argument);
}

TEST(QueueTest, ManyProducersManyConsumersLoseNothing) {
  Queue<long> q(64);
  constexpr int kPerProducer = 20000;
  std::atomic<long> sum{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < 3; ++p) threads.emplace_back([&] {
    for (int i = 1; i <= kPerProducer; ++i) q.put(i);
  });
  for (int c = 0; c < 3; ++c) threads.emplace_back([&] {
    for (int i = 0; i < kPerProducer; ++i) sum += q.get();
  });
  for (auto& t : threads) t.join();
  EXPECT_EQ(sum.load(), 3L * kPerProducer * (kPerProducer + 1) / 2);
  EXPECT_TRUE(q.empty());
}

TEST(QueueTest, HolderDyingMidUpdateIsRepaired) {
  Queue<int> q;
  q.put(1);
  q.put(2);
  auto* state = reinterpret_cast<detail::QueueState*>(detail::HandleAccess::segment(q)->body());
  // A put that died after committing tail but before counting its item: the thread
  // exits holding the queue's lock with count one short.
  std::thread([&] {
    ASSERT_EQ(detail::lock_robust(&state->lock, detail::Clock::time_point::max()),
              detail::LockResult::kAcquired);
    state->count = 1;
    die_holding(&state->lock);
  }).join();
  q.put(3);  // recovers the lock and recounts
  EXPECT_EQ(q.qsize(), 3u);
  EXPECT_EQ(q.get(), 1);
  EXPECT_EQ(q.get(), 2);
  EXPECT_EQ(q.get(), 3);
}

struct Job {
  int id;
  std::string name;
  MSGPACK_DEFINE(id, name);
};

TEST(QueueTest, StructItems) {
  Queue<Job> q;
  q.put(Job{7, "seven"});
  Job j = q.get();
  EXPECT_EQ(j.id, 7);
  EXPECT_EQ(j.name, "seven");
}

// ---- Lock::locked, Value/Array lock choices, RawValue, RawArray -----------------------

TEST(LockTest, LockedSaysWhetherAnybodyHoldsIt) {
  Lock lock;
  EXPECT_FALSE(lock.locked());
  lock.lock();
  EXPECT_TRUE(lock.locked());
  std::thread([&] { EXPECT_TRUE(lock.locked()); }).join();
  lock.unlock();
  EXPECT_FALSE(lock.locked());
  // A holder that died: the next acquire takes it at once, so it is not locked.
  auto* state = reinterpret_cast<detail::MutexState*>(detail::HandleAccess::segment(lock)->body());
  std::thread([&] {
    lock.lock();
    die_holding(state);
  }).join();
  EXPECT_FALSE(lock.locked());
  ASSERT_TRUE(lock.try_lock());
  EXPECT_TRUE(lock.previous_owner_died());
  lock.unlock();
}

TEST(ValueTest, LockChoices) {
  Lock shared;
  Value<Point> a(Point{1, 2, 3}, shared);
  Array<int> b(4, shared);
  {
    std::lock_guard<Lock> guard(shared);
    EXPECT_TRUE(a.get_lock().locked());
    EXPECT_TRUE(b.get_lock().locked());
  }
  EXPECT_EQ(a.load().tag, 3);  // not lock-free: taken under the shared lock
  // The lock travels with the value: a handle read back uses the same lock.
  auto a2 = unpack<Value<Point>>(pack(a));
  shared.lock();
  EXPECT_TRUE(a2.get_lock().locked());
  shared.unlock();

  RLock rlock;
  Value<int> c(5, rlock);
  std::lock_guard<Lock> outer(c.get_lock());
  std::lock_guard<Lock> inner(c.get_lock());  // recursive: an RLock
  EXPECT_EQ(c.load(), 5);

  Value<Point> bare(Point{7, 8, 9}, no_lock);
  EXPECT_EQ(bare.load().tag, 9);
  bare.store(Point{0, 0, 1});
  EXPECT_EQ(unpack<Value<Point>>(pack(bare)).load().tag, 1);
  try {
    bare.get_lock();
    FAIL() << "expected mpx::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no_lock (Python's lock=False)"), std::string::npos) << e.what();
  }
  Array<char> bare_array(3, no_lock);
  EXPECT_THROW(bare_array.get_lock(), Error);
  EXPECT_EQ(bare_array.to_vector().size(), 3u);
}

// Dropping every other handle to a Value's external lock does not take the lock away:
// the value keeps it.
TEST(ValueTest, ExternalLockLivesWithTheValue) {
  std::string bytes;
  Value<int> v = [] {
    RLock lock;
    return Value<int>(3, lock);
  }();
  bytes = pack(v);
  auto again = unpack<Value<int>>(bytes);
  std::lock_guard<Lock> guard(again.get_lock());
  EXPECT_TRUE(v.get_lock().locked());
}

TEST(RawTest, RawValueAndRawArray) {
  RawValue<long> v(4);
  EXPECT_EQ(v.fetch_add(2), 4);
  EXPECT_EQ(v.load(), 6);
  RawValue<Point> p(Point{1, 2, 3});
  p.store(Point{4, 5, 6});
  EXPECT_EQ(p.load().x, 4);
  RawArray<int> a{1, 2, 3};
  a[1] = 20;
  EXPECT_EQ(a.to_vector(), (std::vector<int>{1, 20, 3}));
  EXPECT_THROW(a.at(3), std::out_of_range);
  auto b = unpack<RawArray<int>>(pack(a));
  EXPECT_EQ(b[1], 20);
  // A RawValue is not a Value, nor the other way round.
  EXPECT_NE(error_of([&] { unpack<Value<long>>(pack(v)); }).find("a RawValue cannot be used as a Value<"),
            std::string::npos);
  EXPECT_NE(error_of([&] { unpack<RawArray<int>>(pack(Array<int>(2))); }).find("cannot be used as a RawArray<int>"),
            std::string::npos);
}

// ---- Condition ----------------------------------------------------------------------

TEST(ConditionTest, WaitNotifyAndWaitFor) {
  Condition cond;
  int stock = 0;  // guarded by cond's lock (threads of one process here)
  std::thread consumer([&] {
    std::lock_guard<Condition> hold(cond);
    EXPECT_TRUE(cond.wait_for([&] { return stock > 0; }, 10s));
    --stock;
  });
  for (;;) {
    std::lock_guard<Condition> hold(cond);
    auto* s = reinterpret_cast<detail::ConditionState*>(detail::HandleAccess::segment(cond)->body());
    bool waiting = false;
    for (std::uint32_t i = 0; i < s->capacity; ++i) waiting |= s->slots[i].state.load() == detail::kSlotWaiting;
    if (waiting) {
      ++stock;
      cond.notify();
      break;
    }
  }
  consumer.join();
  EXPECT_EQ(stock, 0);
  std::lock_guard<Condition> hold(cond);
  EXPECT_FALSE(cond.wait(20ms));  // nobody notifies
  EXPECT_FALSE(cond.wait_for([] { return false; }, 20ms));
  EXPECT_TRUE(cond.wait_for([] { return true; }, 0ms));
}

TEST(ConditionTest, NotifyNWakesExactlyNOldestFirst) {
  Lock lock;
  Condition cond(lock);
  std::atomic<int> woke{0};
  std::vector<std::thread> waiters;
  std::vector<int> order;
  auto* s = reinterpret_cast<detail::ConditionState*>(detail::HandleAccess::segment(cond)->body());
  auto count_waiting = [&] {
    int n = 0;
    for (std::uint32_t i = 0; i < s->capacity; ++i) n += s->slots[i].state.load() == detail::kSlotWaiting;
    return n;
  };
  for (int i = 0; i < 4; ++i) {
    waiters.emplace_back([&, i] {
      std::lock_guard<Condition> hold(cond);
      if (cond.wait(30s)) {
        order.push_back(i);
        ++woke;
      }
    });
    // One at a time, so that arrival order is known.
    while (true) {
      std::lock_guard<Condition> hold(cond);
      if (count_waiting() == i + 1) break;
    }
  }
  {
    std::lock_guard<Condition> hold(cond);
    cond.notify(2);
  }
  while (woke.load() < 2) std::this_thread::yield();
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(woke.load(), 2);
  {
    std::lock_guard<Condition> hold(cond);
    std::sort(order.begin(), order.end());  // both woken; they retake the lock in any order
    EXPECT_EQ(order, (std::vector<int>{0, 1}));
    cond.notify_all();
  }
  for (auto& t : waiters) t.join();
  EXPECT_EQ(woke.load(), 4);
}

TEST(ConditionTest, MisuseIsReported) {
  Condition cond;
  try {
    cond.notify();
    FAIL() << "expected mpx::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("must hold the condition's lock"), std::string::npos);
  }
  EXPECT_THROW(cond.wait(1ms), Error);
  EXPECT_THROW(Condition(0), std::invalid_argument);
  cond.acquire();
  EXPECT_THROW(cond.notify(-1), std::invalid_argument);
  cond.release();
  // More waiters than slots.
  Condition small(1);
  std::thread first([&] {
    std::lock_guard<Condition> hold(small);
    small.wait(30s);
  });
  auto* s = reinterpret_cast<detail::ConditionState*>(detail::HandleAccess::segment(small)->body());
  while (s->slots[0].state.load() != detail::kSlotWaiting) std::this_thread::yield();
  {
    std::lock_guard<Condition> hold(small);
    try {
      small.wait(1ms);
      FAIL() << "expected mpx::Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("larger max_waiters"), std::string::npos) << e.what();
    }
    small.notify();
  }
  first.join();
}

// An RLock held several times is released whole while waiting, and taken back as deep.
TEST(ConditionTest, WaitReleasesEveryLevelOfAnRLock) {
  RLock rlock;
  Condition cond(rlock);
  cond.acquire();
  cond.acquire();
  std::thread other([&] {
    std::lock_guard<Condition> hold(cond);  // possible only while the waiter sleeps
    cond.notify();
  });
  EXPECT_TRUE(cond.wait(30s));
  other.join();
  cond.release();
  cond.release();
  EXPECT_FALSE(rlock.locked());
  auto c2 = unpack<Condition>(pack(cond));
  std::lock_guard<Condition> hold(c2);
  EXPECT_TRUE(rlock.locked());
}

// A notifier that dies holding the lock: the waiter wakes, takes the lock over and is
// told so.
TEST(ConditionTest, NotifierDyingHoldingTheLock) {
  RLock rlock;
  Condition cond(rlock);
  std::atomic<bool> waiting{false};
  std::thread waiter([&] {
    std::lock_guard<Condition> hold(cond);
    waiting = true;
    EXPECT_TRUE(cond.wait(30s));
    EXPECT_TRUE(cond.previous_owner_died());
  });
  while (!waiting) std::this_thread::yield();
  std::thread([&] {
    cond.acquire();
    cond.notify();
    die_holding(detail::HandleAccess::segment(rlock)->body());
  }).join();
  waiter.join();
}

// ---- Barrier action and default timeout ------------------------------------------------

void count_round(Value<int> rounds) { rounds.fetch_add(1); }
void failing_action() { throw std::runtime_error("action failed"); }
MPX_TASK(count_round);
MPX_TASK(failing_action);

TEST(BarrierTest, ActionRunsOncePerRoundInOneParty) {
  Value<int> rounds(0);
  Barrier b(3, BarrierOptions().action(count_round, rounds));
  std::vector<std::thread> parties;
  for (int i = 0; i < 3; ++i) parties.emplace_back([&] {
    for (int r = 0; r < 5; ++r) b.wait();
  });
  for (auto& t : parties) t.join();
  EXPECT_EQ(rounds.load(), 5);
}

TEST(BarrierTest, ThrowingActionBreaksTheBarrier) {
  Barrier b(2, BarrierOptions().action(failing_action));
  std::atomic<int> broken{0}, threw{0};
  std::vector<std::thread> parties;
  for (int i = 0; i < 2; ++i) parties.emplace_back([&] {
    try {
      b.wait();
    } catch (const BrokenBarrierError&) {
      ++broken;
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "action failed");
      ++threw;
    }
  });
  for (auto& t : parties) t.join();
  EXPECT_EQ(threw.load(), 1);
  EXPECT_EQ(broken.load(), 1);
  EXPECT_TRUE(b.broken());
}

TEST(BarrierTest, DefaultTimeoutBreaksIt) {
  Barrier b(2, BarrierOptions().timeout(30ms));
  EXPECT_THROW(b.wait(), BrokenBarrierError);
  EXPECT_TRUE(b.broken());
  EXPECT_THROW(BarrierOptions().timeout(0ms), std::invalid_argument);
  EXPECT_THROW(BarrierOptions().action(shm_test_c_function), NotRegistered);
}

// ---- Queue: shutdown, close, JoinableQueue, SimpleQueue --------------------------------

TEST(QueueTest, ShutdownDrainsThenRefuses) {
  Queue<int> q;
  q.put(1);
  q.put(2);
  q.shutdown();
  EXPECT_TRUE(q.is_shutdown());
  EXPECT_THROW(q.put(3), ShutDown);
  EXPECT_EQ(q.get(), 1);
  EXPECT_EQ(q.get(), 2);
  EXPECT_THROW(q.get(), ShutDown);
  EXPECT_THROW(q.get(1s), ShutDown);
}

TEST(QueueTest, ShutdownWakesBlockedGettersAndPutters) {
  Queue<int> q(1);
  q.put(0);
  std::thread putter([&] { EXPECT_THROW(q.put(1), ShutDown); });
  Queue<int> empty;
  std::thread getter([&] { EXPECT_THROW(empty.get(), ShutDown); });
  std::this_thread::sleep_for(30ms);
  q.shutdown(true);  // immediate: drops the queued item
  empty.shutdown();
  putter.join();
  getter.join();
  EXPECT_TRUE(q.empty());
  EXPECT_THROW(q.get(), ShutDown);
}

TEST(QueueTest, CloseIsPerProcessHandle) {
  Queue<int> q;
  Queue<int> copy = q;
  Queue<int> elsewhere = unpack<Queue<int>>(pack(q));  // as another process would hold it
  q.close();
  EXPECT_THROW(copy.put(1), Error);
  EXPECT_THROW(q.get(1ms), Error);
  elsewhere.put(5);
  EXPECT_EQ(elsewhere.get(), 5);
}

TEST(QueueTest, JoinableQueueCountsTasks) {
  JoinableQueue<int> q;
  EXPECT_TRUE(q.join(0ms));
  EXPECT_THROW(q.task_done(), Error);
  q.put(1);
  q.put(2);
  EXPECT_FALSE(q.join(10ms));
  std::thread worker([&] {
    for (int i = 0; i < 2; ++i) {
      q.get();
      q.task_done();
    }
  });
  q.join();
  worker.join();
  EXPECT_THROW(q.task_done(), Error);
  // A JoinableQueue may go where a Queue is expected, and back.
  Queue<int> plain = unpack<Queue<int>>(pack(q));
  plain.put(3);
  auto again = unpack<JoinableQueue<int>>(pack(plain));
  EXPECT_FALSE(again.join(1ms));
  EXPECT_EQ(again.get(), 3);
  again.task_done();
  EXPECT_TRUE(q.join(0ms));
  // shutdown(immediate) drops the queued items' tasks.
  q.put(4);
  q.shutdown(true);
  EXPECT_TRUE(q.join(0ms));
}

TEST(QueueTest, SimpleQueue) {
  SimpleQueue<std::string> q;
  EXPECT_TRUE(q.empty());
  q.put("x");
  EXPECT_FALSE(q.empty());
  auto back = unpack<SimpleQueue<std::string>>(pack(q));
  EXPECT_EQ(back.get(), "x");
  EXPECT_EQ(back.get(1ms), std::nullopt);
  q.close();
  EXPECT_THROW(q.put("y"), Error);
}

// ---- SharedMemory, ShareableList ------------------------------------------------------

TEST(SharedMemoryTest, CreateAttachByNameAndUnlink) {
  const std::string name = "shm-test-" + std::to_string(getpid());
  auto block = SharedMemory::create(name, 100);
  EXPECT_EQ(block.name(), name);
  EXPECT_EQ(block.size(), 100u);
  std::memcpy(block.buf(), "hello", 5);
  auto same = SharedMemory::attach("/" + name);  // Python's leading slash is accepted
  EXPECT_EQ(std::string(reinterpret_cast<char*>(same.buf()), 5), "hello");
  EXPECT_EQ(SharedMemory(name).size(), 100u);     // Python's SharedMemory(name)
  try {
    SharedMemory::create(name, 10);
    FAIL() << "expected SharedMemoryError";
  } catch (const SharedMemoryError& e) {
    EXPECT_NE(std::string(e.what()).find("exists already (Python's FileExistsError)"), std::string::npos);
  }
  // A handle travels like any other shared object.
  auto copy = unpack<SharedMemory>(pack(block));
  EXPECT_EQ(copy.buf()[0], 'h');
  block.unlink();
  EXPECT_THROW(SharedMemory::attach(name), SharedMemoryError);
  EXPECT_EQ(same.buf()[1], 'e');  // the memory stays while handles do
  auto reborn = SharedMemory::create(name, 8);  // the name is free again
  EXPECT_EQ(reborn.buf()[0], 0);
  block.close();
  EXPECT_THROW(block.buf(), Error);
}

TEST(SharedMemoryTest, NamesGoWithTheirLastHandle) {
  const std::string name = "shm-gone-" + std::to_string(getpid());
  { auto block = SharedMemory::create(name, 16); }
  try {
    SharedMemory::attach(name);
    FAIL() << "expected SharedMemoryError";
  } catch (const SharedMemoryError& e) {
    EXPECT_NE(std::string(e.what()).find("Python's FileNotFoundError"), std::string::npos);
  }
  auto fresh = SharedMemory::create(64);
  EXPECT_EQ(fresh.name().rfind("psm_", 0), 0u);
  EXPECT_THROW(SharedMemory::create("bad name!", 8), std::invalid_argument);
  EXPECT_THROW(SharedMemory::create(std::string(201, 'x'), 8), std::invalid_argument);
  EXPECT_THROW(SharedMemory::create("zero", 0), std::invalid_argument);
  EXPECT_THROW(SharedMemory::attach(""), std::invalid_argument);
}

TEST(ShareableListTest, NumbersAndStrings) {
  ShareableList<double> prices({1.5, 2.0, 7.25});
  auto seen = ShareableList<double>::attach(prices.shm().name());
  seen.set(0, 1.75);
  EXPECT_EQ(prices[0], 1.75);
  EXPECT_EQ(prices.size(), 3u);
  EXPECT_EQ(prices.index(7.25), 2u);
  EXPECT_EQ(prices.count(2.0), 1u);
  EXPECT_THROW(prices.index(9.0), std::invalid_argument);
  EXPECT_THROW(prices.get(3), std::out_of_range);

  const std::string name = "words-" + std::to_string(getpid());
  ShareableList<std::string> words({"alpha", "", "gamma"}, name);
  auto other = unpack<ShareableList<std::string>>(pack(words));
  other.set(1, "12345678");  // an empty item has 8 bytes of room
  EXPECT_EQ(words.to_vector(), (std::vector<std::string>{"alpha", "12345678", "gamma"}));
  EXPECT_THROW(other.set(1, "123456789"), std::length_error);
  other.set(0, "a");
  EXPECT_EQ(words[0], "a");
  try {
    ShareableList<int>::attach(name);
    FAIL() << "expected SharedMemoryError";
  } catch (const SharedMemoryError& e) {
    EXPECT_NE(std::string(e.what()).find("holds another element type than int"), std::string::npos) << e.what();
  }
  auto raw = SharedMemory::create(64);
  EXPECT_THROW(ShareableList<int>::attach(raw.name()), SharedMemoryError);
  ShareableList<int> empty(std::vector<int>{});
  EXPECT_EQ(empty.size(), 0u);
}

}  // namespace
}  // namespace mpx
