// Robust mutexes, futexes, and Lock, RLock, Semaphore, Event and Barrier on them.
#include "mpx/sync.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "framework/shm/state.h"
#include "mpx/runtime.h"

namespace mpx {
namespace detail {
namespace {

// Every mpx role is a fresh exec, never a fork of a running process, so a thread's id
// cached here stays right.
pid_t this_thread_id() {
  thread_local const pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
  return tid;
}

// getpid() is a system call; the lock fast path records the holder's pid.
pid_t this_process_id() {
  static const pid_t pid = getpid();
  return pid;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// A contended lock is usually released within a few hundred nanoseconds (the critical
// sections guarding shared counters are tiny), far sooner than a futex sleep and wake
// round trip (several microseconds): spin this many rounds on the lock word first.
constexpr int kSpinRounds = 200;
constexpr std::chrono::milliseconds kSleepSlice{50};

std::string lock_error(const char* what, int err) {
  return std::string("mpx::Lock: ") + what + ": " + std::strerror(err);
}

}  // namespace

void init_robust_mutex(MutexState* state, bool recursive) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  // An error-checking Lock tells a thread that locks it twice instead of hanging it.
  pthread_mutexattr_settype(&attr, recursive ? PTHREAD_MUTEX_RECURSIVE : PTHREAD_MUTEX_ERRORCHECK);
  const int err = pthread_mutex_init(&state->mutex, &attr);
  pthread_mutexattr_destroy(&attr);
  if (err != 0) throw Error(lock_error("pthread_mutex_init", err));
  state->recovered = 0;
  state->holder_pid = 0;
}

namespace {

bool held_by_caller(const pthread_mutex_t* m) {
  return __atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED) == this_thread_id();
}

// trylock, then up to kSpinRounds more tries whenever the lock word looks free.
int try_then_spin(pthread_mutex_t* m, bool spin) {
  int err = pthread_mutex_trylock(m);
  for (int round = 0; err == EBUSY && spin && round < kSpinRounds; ++round) {
    cpu_relax();
    if (__atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED) == 0) err = pthread_mutex_trylock(m);
  }
  return err;
}

}  // namespace

LockResult lock_robust(MutexState* state, Clock::time_point deadline) {
  pthread_mutex_t* m = &state->mutex;
  const bool may_wait = deadline != Clock::time_point::min();
  int err = try_then_spin(m, may_wait);
  if (err == EBUSY && held_by_caller(m)) err = EDEADLK;  // error-checking Lock, held
  while (err == EBUSY && may_wait) {
    const auto now = Clock::now();
    if (deadline != Clock::time_point::max() && now >= deadline) break;
    // The slice bounds how long a sleeper can miss the death of the holder (the kernel
    // marks the mutex but wakes nobody on wake_seq) or of a sleeper woken for it.
    const auto slice = std::min(deadline, now + kSleepSlice);
    state->sleepers.fetch_add(1);
    const std::uint32_t seen = state->wake_seq.load();
    err = pthread_mutex_trylock(m);
    if (err == EBUSY) futex_wait(&state->wake_seq, seen, slice);
    state->sleepers.fetch_sub(1);
    state->woken_at.store(0);
    if (err == EBUSY) err = try_then_spin(m, true);
  }
  switch (err) {
    case 0:
      state->holder_pid = this_process_id();
      return LockResult::kAcquired;
    case EBUSY:
      return LockResult::kTimedOut;
    case EOWNERDEAD: {
      const int dead = state->holder_pid;
      pthread_mutex_consistent(m);
      state->recovered = 1;
      state->holder_pid = this_process_id();
      logger().warn("took over a lock whose holder (pid {}) died holding it", dead);
      return LockResult::kRecovered;
    }
    case EDEADLK:
      throw Error("mpx::Lock: the calling thread already holds this lock (an RLock may be "
                  "locked again by its holder)");
    default:
      throw Error(lock_error("lock", err));
  }
}

void unlock_robust(MutexState* state) {
  pthread_mutex_t* m = &state->mutex;
  if (!held_by_caller(m)) {
    throw Error("mpx::Lock: unlock by a thread that does not hold the lock");
  }
  if (m->__data.__count <= 1) state->recovered = 0;  // the final unlock of an RLock
  const int err = pthread_mutex_unlock(m);
  if (err != 0) throw Error(lock_error("unlock", err));
  // Pairs with the sleeper's increment of sleepers before its trylock: either it sees
  // the lock free or this thread sees it counted.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (state->sleepers.load(std::memory_order_relaxed) > 0) {
    state->wake_seq.fetch_add(1);
    const std::uint32_t now = coarse_now_us();
    std::uint32_t last = state->woken_at.load();
    if (wake_due(last, now) && state->woken_at.compare_exchange_strong(last, now)) {
      futex_wake(&state->wake_seq, 1);
    }
  }
}

bool futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                Clock::time_point deadline) {
  timespec ts{};
  timespec* abs = nullptr;
  if (deadline != Clock::time_point::max()) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch());
    if (ns.count() <= 0) return false;
    ts = {static_cast<time_t>(ns.count() / 1000000000), static_cast<long>(ns.count() % 1000000000)};
    abs = &ts;
  }
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time (steady_clock's clock).
  // Shared, not FUTEX_PRIVATE: the word is in memory other processes map.
  const long r = syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT_BITSET,
                         expected, abs, nullptr, FUTEX_BITSET_MATCH_ANY);
  return !(r == -1 && errno == ETIMEDOUT);
}

void futex_wake(std::atomic<std::uint32_t>* word, int count) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, count, nullptr, nullptr, 0);
}

static_assert(sizeof(MutexState) <= kMutexBytes, "MutexState outgrew its slot");

MutexState* init_mutex(Segment& segment, bool recursive) {
  auto* state = new (segment.body()) MutexState();
  init_robust_mutex(state, recursive);
  return state;
}

struct SemaphoreState {
  std::atomic<std::uint32_t> value;    // the counter; also the futex word
  std::atomic<std::uint32_t> waiters;  // acquirers asleep, plus any that died asleep
  std::uint32_t bound;                 // BoundedSemaphore's ceiling; 0 for none. Immutable.
};

struct EventState {
  std::atomic<std::uint32_t> flag;     // 0 or 1; also the futex word
  std::atomic<std::uint32_t> waiters;  // as in SemaphoreState
};

struct BarrierState {
  MutexState lock;
  // Bumped when a round ends, normally or broken; the futex waiters sleep on.
  std::atomic<std::uint32_t> generation;
  std::uint32_t parties;  // immutable
  std::uint32_t count;    // parties arrived in this round; guarded by lock
  std::uint32_t broken;   // guarded by lock
  // Bit g % 64 set when round g ended broken, cleared when it ended normally, so a
  // waiter woken late still learns how its round ended. Guarded by lock.
  std::uint64_t broken_rounds;
};

class BarrierLock {
 public:
  explicit BarrierLock(BarrierState* s) : s_(s) {
    // A party that died inside these few lines left count or broken half-updated: the
    // round cannot end well, so it is broken for everybody.
    if (lock_robust(&s_->lock, Clock::time_point::max()) == LockResult::kRecovered) {
      s_->lock.recovered = 0;
      s_->broken = 1;
      if (s_->count > 0) end_round(true);
    }
  }
  ~BarrierLock() { unlock_robust(&s_->lock); }
  // Ends the current round: its waiters wake and learn whether it was broken.
  void end_round(bool broken) {
    const std::uint32_t g = s_->generation.load();
    const std::uint64_t bit = std::uint64_t{1} << (g % 64);
    s_->broken_rounds = broken ? (s_->broken_rounds | bit) : (s_->broken_rounds & ~bit);
    s_->count = 0;
    s_->generation.store(g + 1);
    futex_wake(&s_->generation, INT_MAX);
  }

 private:
  BarrierState* s_;
};

}  // namespace detail

using detail::AdoptTag;
using detail::BarrierLock;
using detail::BarrierState;
using detail::Clock;
using detail::EventState;
using detail::futex_wait;
using detail::futex_wake;
using detail::init_robust_mutex;
using detail::lock_robust;
using detail::unlock_robust;
using detail::LockResult;
using detail::MutexState;
using detail::Segment;
using detail::SegmentKind;
using detail::SemaphoreState;
using detail::untyped_tag;

// ---- Lock, RLock ----------------------------------------------------------------------

namespace detail {

std::shared_ptr<Segment> MutexHandle::create_mutex_segment(SegmentKind kind, bool recursive) {
  auto segment = Segment::create(kind, untyped_tag(), 0, kMutexBytes);
  init_mutex(*segment, recursive);
  return segment;
}

MutexState* MutexHandle::mutex_in(const Segment& segment) {
  return reinterpret_cast<MutexState*>(segment.body());
}

void MutexHandle::lock() { lock_robust(state_, Clock::time_point::max()); }

bool MutexHandle::try_lock() { return lock_robust(state_, Clock::time_point::min()) != LockResult::kTimedOut; }

bool MutexHandle::lock_until(Clock::time_point deadline) {
  return lock_robust(state_, deadline) != LockResult::kTimedOut;
}

void MutexHandle::unlock() { unlock_robust(state_); }

bool MutexHandle::previous_owner_died() const {
  return __atomic_load_n(&state_->mutex.__data.__owner, __ATOMIC_RELAXED) == this_thread_id() &&
         state_->recovered != 0;
}

}  // namespace detail

Lock::Lock() : MutexHandle(create_mutex_segment(SegmentKind::kLock, false), nullptr) {
  state_ = mutex_in(*segment_);
}
Lock::Lock(AdoptTag, std::shared_ptr<Segment> segment)
    : MutexHandle(std::move(segment), nullptr) {
  state_ = mutex_in(*segment_);
}

RLock::RLock() : MutexHandle(create_mutex_segment(SegmentKind::kRLock, true), nullptr) {
  state_ = mutex_in(*segment_);
}
RLock::RLock(AdoptTag, std::shared_ptr<Segment> segment)
    : MutexHandle(std::move(segment), nullptr) {
  state_ = mutex_in(*segment_);
}

// ---- Semaphore --------------------------------------------------------------------------


Semaphore::Semaphore(int value) : Semaphore(value, 0) {}

Semaphore::Semaphore(int value, int bound) {
  if (value < 0) throw std::invalid_argument("mpx::Semaphore: initial value must be >= 0");
  segment_ = Segment::create(SegmentKind::kSemaphore, untyped_tag(), 0, sizeof(SemaphoreState));
  state_ = new (segment_->body()) SemaphoreState();
  state_->value.store(static_cast<std::uint32_t>(value));
  state_->bound = static_cast<std::uint32_t>(bound);
}

Semaphore::Semaphore(AdoptTag, std::shared_ptr<Segment> segment)
    : segment_(std::move(segment)),
      state_(reinterpret_cast<SemaphoreState*>(segment_->body())) {}

void Semaphore::acquire() { acquire_until(Clock::time_point::max()); }
bool Semaphore::try_acquire() { return acquire_until(Clock::time_point::min()); }

bool Semaphore::acquire_until(Clock::time_point deadline) {
  for (;;) {
    std::uint32_t v = state_->value.load();
    while (v > 0) {
      if (state_->value.compare_exchange_weak(v, v - 1)) return true;
    }
    if (deadline == Clock::time_point::min()) return false;
    // Sequentially consistent increments of waiters here and of value in release():
    // either this thread sees the released value (the futex does not sleep) or the
    // releaser sees this waiter and wakes it.
    state_->waiters.fetch_add(1);
    const bool in_time = futex_wait(&state_->value, 0, deadline);
    state_->waiters.fetch_sub(1);
    if (!in_time) deadline = Clock::time_point::min();  // one last look, then give up
  }
}

void Semaphore::release(int n) {
  if (n < 1) throw std::invalid_argument("mpx::Semaphore::release: n must be >= 1");
  const auto add = static_cast<std::uint32_t>(n);
  if (state_->bound != 0) {
    std::uint32_t v = state_->value.load();
    do {
      if (v + add > state_->bound) {
        throw Error("mpx::BoundedSemaphore::release: released too many times (the value would "
                    "exceed " + std::to_string(state_->bound) + ")");
      }
    } while (!state_->value.compare_exchange_weak(v, v + add));
  } else {
    state_->value.fetch_add(add);
  }
  if (state_->waiters.load() > 0) futex_wake(&state_->value, n);
}

int Semaphore::get_value() const { return static_cast<int>(state_->value.load()); }

BoundedSemaphore::BoundedSemaphore(int value) : Semaphore(value, value) {
  if (value == 0) throw std::invalid_argument("mpx::BoundedSemaphore: initial value must be >= 1");
}
BoundedSemaphore::BoundedSemaphore(AdoptTag tag, std::shared_ptr<Segment> segment)
    : Semaphore(tag, std::move(segment)) {}

// ---- Event ------------------------------------------------------------------------------


Event::Event()
    : segment_(Segment::create(SegmentKind::kEvent, untyped_tag(), 0, sizeof(EventState))),
      state_(new (segment_->body()) EventState()) {}

Event::Event(AdoptTag, std::shared_ptr<Segment> segment)
    : segment_(std::move(segment)), state_(reinterpret_cast<EventState*>(segment_->body())) {}

bool Event::is_set() const { return state_->flag.load() != 0; }

void Event::set() {
  state_->flag.store(1);
  if (state_->waiters.load() > 0) futex_wake(&state_->flag, INT_MAX);
}

void Event::clear() { state_->flag.store(0); }

void Event::wait() { wait_until(Clock::time_point::max()); }

bool Event::wait_until(Clock::time_point deadline) {
  while (state_->flag.load() == 0) {
    state_->waiters.fetch_add(1);
    const bool in_time = futex_wait(&state_->flag, 0, deadline);
    state_->waiters.fetch_sub(1);
    if (!in_time) return state_->flag.load() != 0;
  }
  return true;
}

// ---- Barrier ----------------------------------------------------------------------------



Barrier::Barrier(int parties) {
  if (parties < 1) throw std::invalid_argument("mpx::Barrier: parties must be >= 1");
  segment_ = Segment::create(SegmentKind::kBarrier, untyped_tag(), static_cast<std::uint64_t>(parties),
                             sizeof(BarrierState));
  state_ = new (segment_->body()) BarrierState();
  init_robust_mutex(&state_->lock, false);
  state_->parties = static_cast<std::uint32_t>(parties);
}

Barrier::Barrier(AdoptTag, std::shared_ptr<Segment> segment)
    : segment_(std::move(segment)), state_(reinterpret_cast<BarrierState*>(segment_->body())) {}

int Barrier::wait() { return wait_until(Clock::time_point::max()); }

int Barrier::wait_until(Clock::time_point deadline) {
  std::uint32_t round;
  int index;
  {
    BarrierLock lock(state_);
    if (state_->broken) throw BrokenBarrierError("mpx::Barrier: the barrier is broken");
    round = state_->generation.load();
    index = static_cast<int>(state_->count++);
    if (state_->count == state_->parties) {
      lock.end_round(false);
      return index;
    }
  }
  for (;;) {
    const bool in_time = futex_wait(&state_->generation, round, deadline);
    if (state_->generation.load() != round) break;
    if (!in_time) {
      BarrierLock lock(state_);
      if (state_->generation.load() != round) break;  // the round ended meanwhile
      state_->broken = 1;
      lock.end_round(true);
      throw BrokenBarrierError("mpx::Barrier: wait timed out; the barrier is now broken");
    }
  }
  BarrierLock lock(state_);
  if (state_->broken_rounds & (std::uint64_t{1} << (round % 64))) {
    throw BrokenBarrierError("mpx::Barrier: the barrier was broken or reset while waiting");
  }
  return index;
}

void Barrier::reset() {
  BarrierLock lock(state_);
  if (state_->count > 0) lock.end_round(true);
  state_->broken = 0;
}

void Barrier::abort() {
  BarrierLock lock(state_);
  state_->broken = 1;
  if (state_->count > 0) lock.end_round(true);
}

int Barrier::parties() const { return static_cast<int>(state_->parties); }

int Barrier::n_waiting() const {
  BarrierLock lock(state_);
  return static_cast<int>(state_->count);
}

bool Barrier::broken() const {
  BarrierLock lock(state_);
  return state_->broken != 0;
}

}  // namespace mpx
