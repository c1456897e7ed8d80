// Layouts of the shared objects' state in their segments, and the primitives they are
// built from. Internal to framework/shm.
//
// Every field here is shared between processes, which may be killed at any instant.
// Two rules keep that safe:
//  - Waiting uses bare futexes on sequence words, never per-waiter records: a waiter
//    that dies leaves at most an inflated waiter count behind, which costs a spare
//    wake-up and nothing else.
//  - State guarded by a robust mutex is updated so that every prefix of an update is
//    either harmless or repaired by the next holder (see QueueState).
#ifndef MPX_FRAMEWORK_SHM_STATE_H_
#define MPX_FRAMEWORK_SHM_STATE_H_

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstdint>

#include "mpx/detail/deadline.h"

namespace mpx {
namespace detail {

// 32-bit futex words must be lock-free and address-free to be shared by processes.
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "futex words need lock-free atomics");

// A robust mutex with its own wait protocol.
//
// The pthread mutex gives ownership and robustness: the kernel marks it when its holder
// dies, and the next trylock returns EOWNERDEAD. It is only ever try-locked and
// unlocked, never blocked on: glibc's blocking path makes every later unlock a
// futex_wake system call as long as anybody once slept, which under steady contention
// costs more than the critical section. Waiters instead spin, then sleep on wake_seq in
// bounded slices; an unlock wakes one sleeper unless a wake-up sent less than a
// millisecond ago is still on its way (see woken_at).
struct MutexState {
  pthread_mutex_t mutex;  // PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST
  // Set by a holder that recovered the mutex from a dead owner, cleared by its final
  // unlock. Only the holder reads or writes it.
  std::uint32_t recovered;
  // Diagnostics only: who took it last. Atomic because a holder that died never
  // released it, so no lock orders its write before the next holder's read.
  std::atomic<std::int32_t> holder_pid;
  std::atomic<std::uint32_t> sleepers;      // waiters asleep on wake_seq (or died there)
  std::atomic<std::uint32_t> wake_seq;      // futex word; bumped by unlocks seen by sleepers
  // When the last wake-up was sent (coarse_now_us()), 0 once a sleeper picked it up.
  // A time, not a flag: a sleeper killed while asleep still counts in sleepers, and a
  // wake-up sent to nobody but it must not silence the next ones for long.
  std::atomic<std::uint32_t> woken_at;
};

// Initializes a robust process-shared mutex in zeroed shared memory.
void init_robust_mutex(MutexState* state, bool recursive);
enum class LockResult {
  kAcquired,
  kRecovered,  // acquired from an owner that died holding it; the mutex is usable again
  kTimedOut,
};
// Locks, waiting at most until deadline (time_point::max(): forever). Throws mpx::Error
// on states that only a bug can cause.
LockResult lock_robust(MutexState* state, Clock::time_point deadline);
// Throws mpx::Error when the calling thread does not hold the mutex.
void unlock_robust(MutexState* state);
// Whether the calling thread holds the mutex.
bool held_by_caller(const MutexState* state);

// Crash safety: put() writes the item's bytes past tail, then advances tail (the commit:
// a reader never looks past tail), then count. get() copies the item out, then advances
// head (the commit), then count. A process killed at any point leaves either the item
// fully in or fully out, and at worst count stale, which the next holder recomputes from
// head and tail when the robust mutex reports the death.
struct QueueState {
  MutexState lock;
  std::uint64_t capacity;  // ring bytes; immutable
  std::uint64_t maxsize;   // item limit, 0 for none; immutable
  std::uint64_t head;      // ring offset of the oldest item, monotonic; guarded by lock
  std::uint64_t tail;      // ring offset past the newest item, monotonic; guarded by lock
  std::uint64_t count;     // items between head and tail; guarded by lock
  std::atomic<std::uint32_t> not_empty;  // bumped by each put; getters sleep on it
  std::atomic<std::uint32_t> not_full;   // bumped by each get; putters sleep on it
  // Waiters asleep in get / put (or died there), and when a wake-up was last sent to
  // them (coarse_now_us(); 0 once one of them picked it up). Guarded by lock. A recent
  // wake-up makes further ones redundant: whoever was woken re-checks under the lock.
  std::uint32_t getters;
  std::uint32_t putters;
  std::uint32_t getters_woken_at;
  std::uint32_t putters_woken_at;
  // JoinableQueue: items got and not yet task_done() (negative when task_done ran for
  // items still queued, which Python allows). Unfinished tasks are count + taken, so an
  // item in flight in a put() or get() killed half-way is counted exactly as the
  // repaired count says. Guarded by lock.
  std::int64_t taken;
  // Python 3.13's shutdown(): 0 open, 1 shut down (no more puts; gets drain what is
  // queued), 2 shut down immediately (the queue was emptied). Guarded by lock.
  std::uint32_t shutdown;
  // Bumped when unfinished tasks reach zero (and on shutdown): join() sleeps on it.
  std::atomic<std::uint32_t> all_done;
};

// A wake-up younger than this is assumed on its way to a live sleeper.
constexpr std::uint32_t kWakeGraceUs = 1000;
// Steady-clock microseconds modulo 2^32, never 0 (0 means "no wake-up pending").
inline std::uint32_t coarse_now_us() {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                      Clock::now().time_since_epoch()).count();
  const auto t = static_cast<std::uint32_t>(us);
  return t == 0 ? 1 : t;
}
// Whether a wake-up should be sent given when the last one was (wrap-around safe).
inline bool wake_due(std::uint32_t woken_at, std::uint32_t now) {
  return woken_at == 0 || now - woken_at >= kWakeGraceUs;
}

// Blocks while *word == expected, at most until deadline (time_point::max(): forever).
// Returns false only when the deadline passed.
bool futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                Clock::time_point deadline);
// Returns how many sleepers it woke.
int futex_wake(std::atomic<std::uint32_t>* word, int count);

// The longest any waiter sleeps before looking again. It bounds the delay caused by a
// process killed at the wrong moment: a lock holder (the kernel marks the mutex but
// wakes nobody on our own wait words) or a waiter that was woken and died before it
// could pass the wake-up on.
constexpr std::chrono::milliseconds kSleepSlice{50};

struct SemaphoreState {
  std::atomic<std::uint32_t> value;    // the counter (<= INT_MAX); also the futex word
  std::atomic<std::uint32_t> waiters;  // acquirers asleep, plus any that died asleep
  std::uint32_t bound;                 // BoundedSemaphore's ceiling; 0 for none. Immutable.
};

struct EventState {
  // The futex word: bit 0 is the flag, bits 1-31 count set() calls, so a waiter that
  // slept through a set() quickly followed by clear() still sees that it happened.
  std::atomic<std::uint32_t> word;
  std::atomic<std::uint32_t> waiters;  // as in SemaphoreState
};

struct BarrierState {
  MutexState lock;
  // Immutable after creation: the wait() timeout used when none is given (0: none),
  // and the action run by the last party to arrive (a registered task's name and its
  // msgpack arguments, which follow this struct in the segment; empty: no action).
  std::uint64_t default_timeout_ns;
  std::uint32_t action_args_bytes;
  char action_name[256];
  // Bumped when a round ends, normally or broken; the futex waiters sleep on.
  std::atomic<std::uint32_t> generation;
  std::uint32_t parties;  // immutable
  std::uint32_t count;    // parties arrived in this round; guarded by lock
  std::uint32_t broken;   // guarded by lock
  // Bit g % 64 set when round g ended broken, cleared when it ended normally, so a
  // waiter woken late still learns how its round ended. Guarded by lock.
  std::uint64_t broken_rounds;
};

// One waiter of a Condition. The waiter sleeps on its own slot's state, so notify(n)
// wakes exactly the n oldest live waiters, and a waiter that dies (its pid is gone) is
// skipped and its slot freed instead of swallowing a notification (Python's notify
// then blocks forever waiting for the dead sleeper to acknowledge). Every write happens
// under the condition's lock; the waiter reads state while it sleeps without it.
struct ConditionSlot {
  std::atomic<std::uint32_t> state;  // kSlotFree, kSlotWaiting, kSlotNotified; futex word
  std::int32_t pid;                  // the waiting process
  std::uint64_t ticket;              // arrival order
};
constexpr std::uint32_t kSlotFree = 0;
constexpr std::uint32_t kSlotWaiting = 1;
constexpr std::uint32_t kSlotNotified = 2;

struct ConditionState {
  std::uint32_t capacity;    // slots; immutable
  std::uint32_t reserved;
  std::uint64_t next_ticket;  // guarded by the condition's lock
  ConditionSlot slots[1];     // capacity of them (the segment is sized for it)
};

// Value<T> and Array<T> begin with their own recursive mutex, then say which lock
// guards them: their own, none (Python's lock=False) or another Lock or RLock, whose
// segment is named here. Written once by the creator before the segment is shared.
struct LockChoiceState {
  std::uint32_t mode;  // LockMode
  std::uint32_t kind;  // of the external lock's segment: kLock or kRLock
  std::int32_t owner;
  std::int32_t fd;
  std::uint64_t id;
  std::uint64_t count;
};

}  // namespace detail
}  // namespace mpx

#endif  // MPX_FRAMEWORK_SHM_STATE_H_
