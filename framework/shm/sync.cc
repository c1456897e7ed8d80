// Robust mutexes, futexes, and Lock, RLock, Semaphore, Event and Barrier on them.
#include "mpx/sync.h"

#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>
#include <climits>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "framework/shm/state.h"
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif
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
  state->holder_pid.store(0, std::memory_order_relaxed);
}

bool held_by_caller(const MutexState* state) {
  return __atomic_load_n(&state->mutex.__data.__owner, __ATOMIC_RELAXED) == this_thread_id();
}

namespace {

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
  // An error-checking Lock the caller holds: the timed and try forms report "not
  // acquired", as Python's acquire(False) does; lock() throws below instead of hanging.
  if (err == EDEADLK && deadline != Clock::time_point::max()) return LockResult::kTimedOut;
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
      state->holder_pid.store(this_process_id(), std::memory_order_relaxed);
      return LockResult::kAcquired;
    case EBUSY:
      return LockResult::kTimedOut;
    case EOWNERDEAD: {
#if defined(__SANITIZE_THREAD__)
      // The kernel's hand-over from the dead holder orders its writes before ours;
      // ThreadSanitizer cannot see that (the holder never unlocked). See shm_test.
      __tsan_acquire(state);
#endif
      const int dead = state->holder_pid.load(std::memory_order_relaxed);
      pthread_mutex_consistent(m);
      state->recovered = 1;
      state->holder_pid.store(this_process_id(), std::memory_order_relaxed);
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
  if (!held_by_caller(state)) {
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
    if (wake_due(last, now) && state->woken_at.compare_exchange_strong(last, now) &&
        futex_wake(&state->wake_seq, 1) == 0) {
      // Nobody was asleep after all (the sleepers counted had died): do not let this
      // wake-up that reached nobody silence the next ones.
      std::uint32_t sent = now;
      state->woken_at.compare_exchange_strong(sent, 0);
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

int futex_wake(std::atomic<std::uint32_t>* word, int count) {
  const long woken = syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, count,
                             nullptr, nullptr, 0);
  return woken > 0 ? static_cast<int>(woken) : 0;
}

static_assert(sizeof(MutexState) <= kMutexBytes, "MutexState outgrew its slot");

MutexState* init_mutex(Segment& segment, bool recursive) {
  auto* state = new (segment.body()) MutexState();
  init_robust_mutex(state, recursive);
  return state;
}

class BarrierLock {
 public:
  explicit BarrierLock(BarrierState* s) : s_(s) {
    // A party that died holding this lock may have stopped anywhere in these few lines,
    // even between ending a round and waking its waiters: the barrier is broken for
    // everybody, and the round is ended (again, harmlessly, if it had ended) so that
    // no waiter sleeps on.
    if (lock_robust(&s_->lock, Clock::time_point::max()) == LockResult::kRecovered) {
      s_->lock.recovered = 0;
      s_->broken = 1;
      end_round(true);
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

bool MutexHandle::locked() const {
  // A robust mutex's word holds its owner's thread id; the kernel clears it (leaving
  // FUTEX_OWNER_DIED) when the owner dies.
  return (__atomic_load_n(&state_->mutex.__data.__lock, __ATOMIC_ACQUIRE) & FUTEX_TID_MASK) != 0;
}

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
      if (state_->value.compare_exchange_weak(v, v - 1)) {
        // A release of n wakes n sleepers; one of them may have been killed before
        // taking its unit. Passing the wake-up on keeps the others from sleeping on.
        if (v > 1 && state_->waiters.load() > 0) futex_wake(&state_->value, 1);
        return true;
      }
    }
    if (deadline == Clock::time_point::min()) return false;
    // Sequentially consistent increments of waiters here and of value in release():
    // either this thread sees the released value (the futex does not sleep) or the
    // releaser sees this waiter and wakes it. The slice bounds the wait for a wake-up
    // that went to a waiter killed before it could pass it on.
    const auto slice = std::min(deadline, Clock::now() + detail::kSleepSlice);
    state_->waiters.fetch_add(1);
    const bool in_time = futex_wait(&state_->value, 0, slice);
    state_->waiters.fetch_sub(1);
    if (!in_time && slice == deadline) deadline = Clock::time_point::min();  // last look
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
    std::uint32_t v = state_->value.load();
    do {
      if (v > static_cast<std::uint32_t>(INT_MAX) - add) {
        throw Error("mpx::Semaphore::release: the value would exceed " + std::to_string(INT_MAX));
      }
    } while (!state_->value.compare_exchange_weak(v, v + add));
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

bool Event::is_set() const { return (state_->word.load() & 1) != 0; }

void Event::set() {
  std::uint32_t v = state_->word.load();
  while (!state_->word.compare_exchange_weak(v, (v + 2) | 1)) {
  }
  if (state_->waiters.load() > 0) futex_wake(&state_->word, INT_MAX);
}

void Event::clear() { state_->word.fetch_and(~std::uint32_t{1}); }

void Event::wait() { wait_until(Clock::time_point::max()); }

bool Event::wait_until(Clock::time_point deadline) {
  const std::uint32_t start = state_->word.load();
  if (start & 1) return true;
  for (std::uint32_t seen = start;;) {
    state_->waiters.fetch_add(1);
    const bool in_time = futex_wait(&state_->word, seen, deadline);
    state_->waiters.fetch_sub(1);
    seen = state_->word.load();
    // Set now, or set (and cleared again) since the wait began: Python's wait()
    // returns True for both.
    if ((seen & 1) || (seen >> 1) != (start >> 1)) return true;
    if (!in_time) return false;
  }
}

// ---- Barrier ----------------------------------------------------------------------------



Barrier::Barrier(int parties) : Barrier(parties, BarrierOptions()) {}

Barrier::Barrier(int parties, const BarrierOptions& options) {
  if (parties < 1) throw std::invalid_argument("mpx::Barrier: parties must be >= 1");
  if (options.args_.size() > UINT32_MAX) {
    throw std::length_error("mpx::Barrier: the action's arguments are too large");
  }
  segment_ = Segment::create(SegmentKind::kBarrier, untyped_tag(), static_cast<std::uint64_t>(parties),
                             sizeof(BarrierState) + options.args_.size());
  state_ = new (segment_->body()) BarrierState();
  init_robust_mutex(&state_->lock, false);
  state_->parties = static_cast<std::uint32_t>(parties);
  state_->default_timeout_ns = static_cast<std::uint64_t>(options.timeout_.count());
  if (options.action_ != nullptr) {
    const std::string_view name = options.action_->name;
    std::memcpy(state_->action_name, name.data(), std::min(name.size(), sizeof state_->action_name - 1));
    state_->action_args_bytes = static_cast<std::uint32_t>(options.args_.size());
    std::memcpy(segment_->body() + sizeof(BarrierState), options.args_.data(), options.args_.size());
    if (options.pins_) segment_->keep(options.pins_);
  }
}

Barrier::Barrier(AdoptTag, std::shared_ptr<Segment> segment)
    : segment_(std::move(segment)), state_(reinterpret_cast<BarrierState*>(segment_->body())) {}

int Barrier::wait() {
  const std::uint64_t ns = state_->default_timeout_ns;
  return wait_until(ns == 0 ? Clock::time_point::max()
                            : detail::deadline_after(std::chrono::nanoseconds(ns)));
}

int Barrier::wait_until(Clock::time_point deadline) {
  std::uint32_t round;
  int index;
  {
    BarrierLock lock(state_);
    if (state_->broken) throw BrokenBarrierError("mpx::Barrier: the barrier is broken");
    round = state_->generation.load();
    index = static_cast<int>(state_->count++);
    if (state_->count == state_->parties) {
      if (state_->action_name[0] != '\0') {
        // Run with the lock held, as Python does: a party that dies here leaves the
        // lock to be recovered, which breaks the barrier for the others.
        const std::string name(state_->action_name,
                               strnlen(state_->action_name, sizeof state_->action_name));
        const detail::TaskEntry* action = detail::find_task(name);
        try {
          if (action == nullptr) {
            throw NotRegistered("mpx::Barrier: the action '" + name +
                                "' is not registered in this program");
          }
          action->run_call(*action, segment_->body() + sizeof(BarrierState),
                           state_->action_args_bytes);
        } catch (...) {
          state_->broken = 1;
          lock.end_round(true);
          throw;
        }
      }
      lock.end_round(false);
      return index;
    }
  }
  for (;;) {
    const auto slice = std::min(deadline, Clock::now() + detail::kSleepSlice);
    const bool in_time = futex_wait(&state_->generation, round, slice);
    if (state_->generation.load() != round) break;
    if (in_time) continue;
    // Taking the lock now and then lets a party that died holding it be noticed (the
    // lock's recovery ends the round) even if no other party comes by.
    BarrierLock lock(state_);
    if (state_->generation.load() != round) break;  // the round ended meanwhile
    if (slice == deadline) {
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

namespace mpx {
namespace detail {

static_assert(kMutexBytes + sizeof(LockChoiceState) <= kLockedHeaderBytes,
              "a Value's header outgrew its slot");

std::optional<Lock> init_lock_choice(const std::shared_ptr<Segment>& segment, const LockChoice& choice) {
  init_mutex(*segment, /*recursive=*/true);
  auto* state = reinterpret_cast<LockChoiceState*>(segment->body() + kMutexBytes);
  state->mode = static_cast<std::uint32_t>(choice.mode);
  switch (choice.mode) {
    case LockMode::kOwn:
      return HandleAccess::adopt<Lock>(segment);
    case LockMode::kNone:
      return std::nullopt;
    case LockMode::kExternal: {
      const SegmentRef& r = choice.external->ref();
      state->kind = static_cast<std::uint32_t>(r.kind);
      state->owner = r.owner;
      state->fd = r.fd;
      state->id = r.id;
      state->count = r.count;
      // Pinning the value pins its lock: a process handed the value can map both.
      segment->keep(choice.external);
      return HandleAccess::adopt<Lock>(choice.external);
    }
  }
  throw Error("mpx: unknown lock choice");
}

std::optional<Lock> open_lock_choice(const std::shared_ptr<Segment>& segment) {
  const auto* state = reinterpret_cast<const LockChoiceState*>(segment->body() + kMutexBytes);
  switch (static_cast<LockMode>(state->mode)) {
    case LockMode::kOwn:
      return HandleAccess::adopt<Lock>(segment);
    case LockMode::kNone:
      return std::nullopt;
    case LockMode::kExternal: {
      const auto kind = static_cast<SegmentKind>(state->kind);
      if (kind != SegmentKind::kLock && kind != SegmentKind::kRLock) break;
      SegmentRef ref{kind, state->owner, state->fd, state->id, 0, state->count};
      return HandleAccess::adopt<Lock>(Segment::open(ref, kind, untyped_tag()));
    }
  }
  throw SharedMemoryError("mpx: a shared " + std::string(segment_kind_name(segment->ref().kind)) +
                          " names a lock of an unknown kind");
}

void throw_no_lock(const char* what) {
  throw Error(std::string("mpx::") + what +
              "::get_lock: this object was created with mpx::no_lock (Python's lock=False) and "
              "has no lock; give it a Lock or RLock when creating it, or guard it with one of "
              "your own");
}

}  // namespace detail
}  // namespace mpx
