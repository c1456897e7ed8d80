// mpx/sync.h — process-shared synchronization: Lock, RLock, Semaphore,
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
// state, so a process killed while waiting on one harms nobody.
#ifndef MPX_SYNC_H_
#define MPX_SYNC_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "mpx/detail/deadline.h"
#include "mpx/detail/handle.h"
#include "mpx/errors.h"

namespace mpx {
namespace detail {

struct MutexState;
struct SemaphoreState;
struct EventState;
struct BarrierState;

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

// parties processes or threads wait() until all have arrived, then all go on. wait()
// returns a distinct index in [0, parties) to each (the last to arrive gets parties-1).
// A wait that times out breaks the barrier for everybody (they get BrokenBarrierError),
// as does abort(); reset() makes a broken barrier usable again.
class Barrier {
 public:
  // Throws std::invalid_argument unless parties >= 1.
  explicit Barrier(int parties);
  // Throws BrokenBarrierError when the barrier is or becomes broken.
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
}  // namespace detail

}  // namespace mpx

#endif  // MPX_SYNC_H_
