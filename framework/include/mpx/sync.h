// mpx/sync.h — process-shared synchronization: Lock, RLock, Condition, Semaphore,
// BoundedSemaphore, Event and Barrier (Python's multiprocessing names and semantics).
//
//   void worker(mpx::Lock lock, int i) {
//     std::lock_guard<mpx::Lock> guard(lock);
//     std::printf("hello world %d\n", i);
//   }
//   MPX_TASK(worker);
//
//   mpx::Lock lock;
//   mpx::Process p(worker, lock, 1);   // the child locks the same lock
//
// Every object here is a handle to state in shared memory (see mpx/shared.h): copying a
// handle or passing it to a Process, a Pool task or a Queue gives another handle to the
// same object, in this process or another. The state lives as long as a handle to it
// lives in the process that created it (a Process or Pool call that was given a handle
// keeps it alive until it is done); processes that already use it keep it mapped.
//
// Handles are thread-safe: any thread of any process may use any handle.
//
// Locks are robust. If a process dies while holding a Lock or RLock, the next acquirer
// gets the lock and previous_owner_died() returns true while it holds it, so it can
// check or repair the data the lock guards; the lock keeps working for everybody
// (Python's Lock deadlocks here). Semaphores, Events and Barriers keep no per-waiter
// state, so a process killed while waiting on one harms nobody. A Condition keeps one
// slot per waiter and skips the slots of waiters that died, so a notify is never lost
// to a dead process.
#ifndef MPX_SYNC_H_
#define MPX_SYNC_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "mpx/detail/deadline.h"
#include "mpx/detail/handle.h"
#include "mpx/errors.h"
#include "mpx/task.h"

namespace mpx {
namespace detail {

struct MutexState;
struct SemaphoreState;
struct EventState;
struct BarrierState;
struct ConditionState;

// Bytes a MutexState takes at the start of a Value's or Array's segment body.
constexpr std::size_t kMutexBytes = 64;

// A robust, process-shared mutex in a segment. The base of Lock and RLock, and the lock
// of every Value and Array.
class MutexHandle {
 public:
  // Blocks until held.
  void lock();
  // Takes the lock if it is free; returns whether it did.
  bool try_lock();
  // Waits until the lock is held or timeout passes; returns whether it is held.
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) {
    return lock_until(deadline_after(timeout));
  }
  template <class C, class D>
  bool try_lock_until(const std::chrono::time_point<C, D>& deadline) {
    return lock_until(to_steady(deadline));
  }
  // Releases the lock. Throws mpx::Error when the calling thread does not hold it.
  void unlock();

  // Python's names. acquire(timeout) returns false when the timeout passed first.
  void acquire() { lock(); }
  template <class Rep, class Period>
  bool acquire(const std::chrono::duration<Rep, Period>& timeout) {
    return try_lock_for(timeout);
  }
  void release() { unlock(); }

  // True while the caller holds a lock that it took over from a process or thread that
  // died holding it: the data it guards may be half-updated. Cleared by unlock().
  bool previous_owner_died() const;
  // Whether some thread of some process holds the lock now (Python's locked()). A lock
  // whose holder died is not locked: the next acquire takes it at once. The answer may
  // be stale by the time the caller looks.
  bool locked() const;

 protected:
  MutexHandle(std::shared_ptr<Segment> segment, MutexState* state)
      : segment_(std::move(segment)), state_(state) {}
  bool lock_until(Clock::time_point deadline);
  // Creates a segment whose body holds only a mutex.
  static std::shared_ptr<Segment> create_mutex_segment(SegmentKind kind, bool recursive);
  static MutexState* mutex_in(const Segment& segment);

  std::shared_ptr<Segment> segment_;
  MutexState* state_;

  friend struct HandleAccess;
};

// Creates the mutex at the start of segment's body.
MutexState* init_mutex(Segment& segment, bool recursive);

}  // namespace detail

// A non-recursive lock. lock() on a Lock the calling thread already holds throws
// mpx::Error (Python's would deadlock); try_lock() and acquire(timeout) return false
// then, as Python's acquire(False) does. Unlocking it from a thread that does not hold
// it throws mpx::Error. Satisfies the standard TimedLockable requirements
// (std::lock_guard, std::unique_lock).
//
// Dropping the last handle to a Lock while this process holds it keeps its memory
// mapped until the process exits (and logs an error), since the holding thread's robust
// list still points into it.
class Lock : public detail::MutexHandle {
 public:
  Lock();

 private:
  Lock(detail::AdoptTag, std::shared_ptr<detail::Segment> segment);
  template <class T>
  friend class Value;
  template <class T>
  friend class Array;
  friend struct detail::HandleAccess;
};

// A lock its holder may take again; each lock() needs its unlock().
class RLock : public detail::MutexHandle {
 public:
  RLock();

 private:
  RLock(detail::AdoptTag, std::shared_ptr<detail::Segment> segment);
  friend struct detail::HandleAccess;
};

// Python's lock=False for Value and Array: mpx::Value<int> v(0, mpx::no_lock).
struct NoLock {};
inline constexpr NoLock no_lock{};

namespace detail {
// Which lock guards a Value or Array (Python's lock=True, lock=False, lock=<a lock>).
// Their segment starts with their own recursive mutex, then a LockChoiceState
// (framework/shm/state.h), then the data at kLockedHeaderBytes.
enum class LockMode : std::uint32_t { kOwn = 0, kNone = 1, kExternal = 2 };
struct LockChoice {
  LockMode mode = LockMode::kOwn;
  std::shared_ptr<Segment> external;  // kExternal: the Lock's or RLock's segment
};
constexpr std::size_t kLockedHeaderBytes = 128;
// Creator side: writes the mutex and the choice into segment; returns the lock that
// guards it (none for kNone). An external lock is kept alive with the segment.
std::optional<Lock> init_lock_choice(const std::shared_ptr<Segment>& segment, const LockChoice& choice);
// Opener side: the lock the creator chose. Throws SharedMemoryError when an external
// lock cannot be mapped.
std::optional<Lock> open_lock_choice(const std::shared_ptr<Segment>& segment);
}  // namespace detail

namespace detail {
template <class H>
struct HandleCodec;
}

// Python's Condition: wait() releases the lock, sleeps until notify(), and takes the
// lock again; wait_for(predicate, timeout) waits until predicate() holds. The lock is
// an RLock of its own unless one is given (a Lock or RLock shared with other code).
// wait, wait_for and notify must be called with the lock held (else mpx::Error, as
// Python raises RuntimeError); lock()/unlock()/acquire()/release() are the lock's, so
// std::lock_guard<mpx::Condition> and std::unique_lock work.
//
//   void consumer(mpx::Condition ready, mpx::Value<int> stock) {
//     std::lock_guard<mpx::Condition> hold(ready);
//     ready.wait_for([&] { return stock.value() > 0; }, std::chrono::seconds(5));
//   }
//
// notify(n) wakes the n waiters that have waited longest (fewer if fewer wait);
// notify_all() wakes all. A waiter that dies is skipped (its slot freed), so the
// notification goes to a live one. A notifier that dies holding the lock hands it to
// the next acquirer with previous_owner_died() set, as every mpx lock does. Up to
// max_waiters threads (any processes) may wait at once; one more throws mpx::Error.
class Condition {
 public:
  static constexpr int kDefaultMaxWaiters = 256;
  // With a new RLock. Throws std::invalid_argument unless 1 <= max_waiters <= 65536.
  explicit Condition(int max_waiters = kDefaultMaxWaiters);
  explicit Condition(const Lock& lock, int max_waiters = kDefaultMaxWaiters);
  explicit Condition(const RLock& lock, int max_waiters = kDefaultMaxWaiters);

  void lock() { lock_.lock(); }
  bool try_lock() { return lock_.try_lock(); }
  void unlock() { lock_.unlock(); }
  void acquire() { lock_.lock(); }
  template <class Rep, class Period>
  bool acquire(const std::chrono::duration<Rep, Period>& timeout) {
    return lock_.acquire(timeout);
  }
  void release() { lock_.unlock(); }
  bool previous_owner_died() const { return lock_.previous_owner_died(); }

  // Releases the lock (every level of an RLock), waits for a notification, takes the
  // lock again (as many levels). Throws mpx::Error when the caller does not hold it.
  void wait() { wait_until(detail::Clock::time_point::max()); }
  // false when timeout passed without a notification.
  template <class Rep, class Period>
  bool wait(const std::chrono::duration<Rep, Period>& timeout) {
    return wait_until(detail::deadline_after(timeout));
  }
  // Waits until pred() is true (checked with the lock held); returns it.
  template <class Predicate>
  bool wait_for(Predicate pred) {
    while (!pred()) wait();
    return true;
  }
  // Returns pred()'s last value: false when timeout passed first.
  template <class Predicate, class Rep, class Period>
  bool wait_for(Predicate pred, const std::chrono::duration<Rep, Period>& timeout) {
    const auto deadline = detail::deadline_after(timeout);
    bool result = pred();
    while (!result && detail::Clock::now() < deadline) {
      wait_until(deadline);
      result = pred();
    }
    return result;
  }
  // Wakes up to n (>= 0) waiters. Throws mpx::Error when the caller does not hold the
  // lock, std::invalid_argument for n < 0.
  void notify(int n = 1);
  void notify_all();

 private:
  Condition(std::shared_ptr<detail::Segment> segment, detail::MutexHandle lock);
  static std::shared_ptr<detail::Segment> create_segment(int max_waiters);
  bool wait_until(detail::Clock::time_point deadline);

  std::shared_ptr<detail::Segment> segment_;
  detail::ConditionState* state_;
  detail::MutexHandle lock_;

  friend struct detail::HandleCodec<Condition>;
  friend struct detail::HandleAccess;
};

// A counter that acquire() decrements, waiting while it is zero, and release()
// increments. Any process or thread may release.
class Semaphore {
 public:
  // Throws std::invalid_argument for a negative value.
  explicit Semaphore(int value = 1);
  void acquire();
  // Returns false when timeout passed while the counter stayed zero.
  template <class Rep, class Period>
  bool acquire(const std::chrono::duration<Rep, Period>& timeout) {
    return acquire_until(detail::deadline_after(timeout));
  }
  bool try_acquire();
  // Adds n (>= 1) to the counter and wakes as many waiters. A BoundedSemaphore throws
  // mpx::Error when that would exceed its initial value (Python's ValueError).
  void release(int n = 1);
  // The counter now (it may have changed by the time the caller looks).
  int get_value() const;

 protected:
  Semaphore(int value, int bound);
  bool acquire_until(detail::Clock::time_point deadline);
  Semaphore(detail::AdoptTag, std::shared_ptr<detail::Segment> segment);

  std::shared_ptr<detail::Segment> segment_;
  detail::SemaphoreState* state_;

  friend struct detail::HandleAccess;
};

// A Semaphore whose counter may not be released above its initial value. As in Python
// it is a kind of Semaphore: a task taking a Semaphore accepts one, and the bound
// travels with it.
class BoundedSemaphore : public Semaphore {
 public:
  explicit BoundedSemaphore(int value = 1);

 private:
  BoundedSemaphore(detail::AdoptTag, std::shared_ptr<detail::Segment> segment);
  friend struct detail::HandleAccess;
};

// A flag processes wait for: set() wakes every waiter; wait() returns at once while set.
class Event {
 public:
  Event();
  bool is_set() const;
  void set();
  void clear();
  void wait();
  // Returns the flag: false when timeout passed before set().
  template <class Rep, class Period>
  bool wait(const std::chrono::duration<Rep, Period>& timeout) {
    return wait_until(detail::deadline_after(timeout));
  }

 private:
  Event(detail::AdoptTag, std::shared_ptr<detail::Segment> segment);
  bool wait_until(detail::Clock::time_point deadline);

  std::shared_ptr<detail::Segment> segment_;
  detail::EventState* state_;

  friend struct detail::HandleAccess;
};

// Python's Barrier(parties, action, timeout), builder style:
//   mpx::Barrier b(3, mpx::BarrierOptions().action(log_round, rounds).timeout(5s));
class BarrierOptions {
 public:
  // A registered task (MPX_TASK) and its arguments: run by the last party to arrive,
  // in its own process, before any party is released. If it throws, that party's
  // wait() throws it and the others get BrokenBarrierError; if its process dies
  // running it, everybody gets BrokenBarrierError. Shared objects among the arguments
  // live as long as the barrier does in this process. Throws NotRegistered for a
  // function that was not registered.
  template <class R, class... Params, class... Args>
  BarrierOptions& action(R (*fn)(Params...), Args&&... args) {
    static_assert(sizeof...(Params) == sizeof...(Args),
                  "mpx::BarrierOptions::action: wrong number of arguments for this task");
    action_ = &detail::require_task(fn, "BarrierOptions::action");
    detail::Buffer buf;
    pins_ = std::make_shared<detail::Pins>();
    detail::ObjectSink by_value;  // whatever scope the caller is in: these bytes outlive it
    {
      detail::PinScope scope(*pins_);
      detail::ObjectScope object_scope(by_value);
      msgpack::packer<detail::Buffer> pk(buf);
      detail::ArgCodec<Params...>::pack_call(pk, std::forward<Args>(args)...);
    }
    args_.assign(buf.data(), buf.size());
    return *this;
  }
  // The timeout of a wait() given none (Python's default timeout); > 0.
  template <class Rep, class Period>
  BarrierOptions& timeout(const std::chrono::duration<Rep, Period>& timeout) {
    timeout_ = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout);
    if (timeout_.count() <= 0) {
      throw std::invalid_argument("mpx::BarrierOptions::timeout: must be positive");
    }
    return *this;
  }

 private:
  const detail::TaskEntry* action_ = nullptr;
  std::string args_;
  std::shared_ptr<detail::Pins> pins_;
  std::chrono::nanoseconds timeout_{0};
  friend class Barrier;
};

// parties processes or threads wait() until all have arrived, then all go on. wait()
// returns a distinct index in [0, parties) to each (the last to arrive gets parties-1).
// A wait that times out breaks the barrier for everybody (they get BrokenBarrierError),
// as does abort(); reset() makes a broken barrier usable again.
class Barrier {
 public:
  // Throws std::invalid_argument unless parties >= 1.
  explicit Barrier(int parties);
  Barrier(int parties, const BarrierOptions& options);
  // Throws BrokenBarrierError when the barrier is or becomes broken (or the default
  // timeout passes); rethrows what the action threw in the party that ran it.
  int wait();
  template <class Rep, class Period>
  int wait(const std::chrono::duration<Rep, Period>& timeout) {
    return wait_until(detail::deadline_after(timeout));
  }
  // Waiters get BrokenBarrierError; the barrier is then fresh.
  void reset();
  // Waiters and later waits get BrokenBarrierError until reset().
  void abort();
  int parties() const;
  int n_waiting() const;
  bool broken() const;

 private:
  Barrier(detail::AdoptTag, std::shared_ptr<detail::Segment> segment);
  int wait_until(detail::Clock::time_point deadline);

  std::shared_ptr<detail::Segment> segment_;
  detail::BarrierState* state_;

  friend struct detail::HandleAccess;
};

namespace detail {
template <>
struct HandleTraits<Lock> {
  static constexpr SegmentKind kKind = SegmentKind::kLock;
  static const TypeTag& tag() { return untyped_tag(); }
};
template <>
struct HandleTraits<RLock> {
  static constexpr SegmentKind kKind = SegmentKind::kRLock;
  static const TypeTag& tag() { return untyped_tag(); }
};
template <>
struct HandleTraits<Semaphore> {
  static constexpr SegmentKind kKind = SegmentKind::kSemaphore;
  static const TypeTag& tag() { return untyped_tag(); }
};
template <>
struct HandleTraits<BoundedSemaphore> {
  static constexpr SegmentKind kKind = SegmentKind::kSemaphore;
  static const TypeTag& tag() { return untyped_tag(); }
};
template <>
struct HandleTraits<Event> {
  static constexpr SegmentKind kKind = SegmentKind::kEvent;
  static const TypeTag& tag() { return untyped_tag(); }
};
template <>
struct HandleTraits<Barrier> {
  static constexpr SegmentKind kKind = SegmentKind::kBarrier;
  static const TypeTag& tag() { return untyped_tag(); }
};

// A Condition travels as [its segment, its lock's segment].
template <>
struct HandleCodec<Condition> {
  template <class Stream>
  static void pack(msgpack::packer<Stream>& pk, const Condition& c) {
    pk.pack_array(2);
    pack_segment(pk, c.segment_);
    pack_segment(pk, HandleAccess::segment(c.lock_));
  }
  static Condition unpack(const msgpack::object& o);
};
}  // namespace detail

}  // namespace mpx

#endif  // MPX_SYNC_H_
