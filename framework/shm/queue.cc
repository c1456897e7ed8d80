// Queue: a ring buffer of length-prefixed items in a segment, behind a robust mutex.
#include "mpx/queue.h"

#include <algorithm>
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

constexpr std::size_t kStateBytes = (sizeof(QueueState) + 63) & ~std::size_t{63};
constexpr std::size_t kLengthBytes = sizeof(std::uint32_t);

char* ring(QueueState* s) { return reinterpret_cast<char*>(s) + kStateBytes; }

void ring_write(QueueState* s, std::uint64_t at, const void* src, std::size_t n) {
  const std::size_t off = at % s->capacity;
  const std::size_t first = std::min<std::size_t>(n, s->capacity - off);
  std::memcpy(ring(s) + off, src, first);
  std::memcpy(ring(s), static_cast<const char*>(src) + first, n - first);
}

void ring_read(QueueState* s, std::uint64_t at, void* dst, std::size_t n) {
  const std::size_t off = at % s->capacity;
  const std::size_t first = std::min<std::size_t>(n, s->capacity - off);
  std::memcpy(dst, ring(s) + off, first);
  std::memcpy(static_cast<char*>(dst) + first, ring(s), n - first);
}

// Wakes getters, putters and joiners: after a repair or a shutdown, any of them may
// have to act.
void wake_everybody(QueueState* s) {
  s->not_empty.fetch_add(1);
  s->not_full.fetch_add(1);
  s->all_done.fetch_add(1);
  futex_wake(&s->not_empty, INT_MAX);
  futex_wake(&s->not_full, INT_MAX);
  futex_wake(&s->all_done, INT_MAX);
}

// Holds the queue's mutex; repairs the queue if the previous holder died mid-update.
class QueueLock {
 public:
  explicit QueueLock(QueueState* s) : s_(s) { lock(); }
  ~QueueLock() {
    if (held_) unlock_robust(&s_->lock);
  }
  QueueLock(const QueueLock&) = delete;
  QueueLock& operator=(const QueueLock&) = delete;

  void lock() {
    if (lock_robust(&s_->lock, Clock::time_point::max()) == LockResult::kRecovered) {
      s_->lock.recovered = 0;
      repair();
    }
    held_ = true;
  }
  void unlock() {
    held_ = false;
    unlock_robust(&s_->lock);
  }

 private:
  void repair() {
    std::uint64_t items = 0;
    for (std::uint64_t at = s_->head; at < s_->tail; ++items) {
      std::uint32_t len;
      ring_read(s_, at, &len, kLengthBytes);
      if (len > s_->tail - at - kLengthBytes) {
        // Cannot happen with the commit order above; if it does, drop what cannot be read
        // rather than hand out garbage.
        logger().error("mpx::Queue: dropped {} unreadable bytes after a holder died",
                       s_->tail - at);
        __atomic_store_n(&s_->tail, at, __ATOMIC_RELEASE);
        break;
      }
      at += kLengthBytes + len;
    }
    __atomic_store_n(&s_->count, items, __ATOMIC_RELEASE);
    // Whoever waits may now be able to proceed; the dead holder cannot tell them.
    wake_everybody(s_);
  }

  QueueState* s_;
  bool held_ = false;
};

bool expired(Clock::time_point deadline) {
  return deadline != Clock::time_point::max() &&
         (deadline == Clock::time_point::min() || Clock::now() >= deadline);
}

std::uint64_t load(const std::uint64_t& field) { return __atomic_load_n(&field, __ATOMIC_ACQUIRE); }
bool shut(const QueueState* s) { return __atomic_load_n(&s->shutdown, __ATOMIC_ACQUIRE) != 0; }

// Whether an item of need bytes fits now. Exact under the lock; a hint without it
// (the fields are then read atomically but not together).
bool has_room(QueueState* s, std::uint64_t need) {
  return s->capacity - (load(s->tail) - load(s->head)) >= need &&
         (s->maxsize == 0 || load(s->count) < s->maxsize);
}

// One side of the queue's waiting: getters (woken by puts) or putters (woken by gets).
struct Waiters {
  std::atomic<std::uint32_t>* seq;  // the futex word they sleep on
  std::uint32_t* asleep;
  std::uint32_t* woken_at;
};
Waiters getters_of(QueueState* s) { return {&s->not_empty, &s->getters, &s->getters_woken_at}; }
Waiters putters_of(QueueState* s) { return {&s->not_full, &s->putters, &s->putters_woken_at}; }

// Under the lock, after a change that may let w proceed: bumps their futex word so none
// can fall asleep on stale state. Returns a wake-up the caller must send once it has
// unlocked (some sleep and no recent wake-up is on its way), or one with stamp 0.
struct Wake {
  Waiters waiters;
  std::uint32_t stamp;
};
Wake claim_wake(const Waiters& w) {
  w.seq->fetch_add(1);
  if (*w.asleep == 0) return {w, 0};
  const std::uint32_t now = coarse_now_us();
  if (!wake_due(*w.woken_at, now)) return {w, 0};
  *w.woken_at = now;
  return {w, now};
}

// A consumer and a producer on two cores hand items over faster than a futex sleep and
// wake-up take, so a waiter first spins for roughly this many pause instructions.
constexpr int kSpinRounds = 2000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Sends a claimed wake-up (lock released). If it reached nobody (the sleepers counted
// had died), the stamp is withdrawn so that it does not silence the next wake-ups.
void send(QueueLock& lock, const Wake& wake) {
  if (wake.stamp == 0 || futex_wake(wake.waiters.seq, INT_MAX) > 0) return;
  lock.lock();
  if (*wake.waiters.woken_at == wake.stamp) *wake.waiters.woken_at = 0;
  lock.unlock();
}

// With the lock held, waits until ready() holds (lock held again) or the deadline
// passes (returns false).
template <class Ready>
bool wait_until_ready(QueueLock& lock, QueueState* s, const Waiters& w, Ready ready,
                      Clock::time_point deadline) {
  while (!ready()) {
    if (expired(deadline)) return false;
    lock.unlock();
    bool looks_ready = false;
    for (int i = 0; i < kSpinRounds && !(looks_ready = ready()); ++i) cpu_relax();
    lock.lock();
    if (looks_ready || ready()) continue;  // confirmed, or not, under the lock
    const auto slice = std::min(deadline, Clock::now() + kSleepSlice);
    const std::uint32_t seen = w.seq->load();
    ++*w.asleep;
    lock.unlock();
    const bool in_time = futex_wait(w.seq, seen, slice);
    lock.lock();
    --*w.asleep;
    *w.woken_at = 0;
    if (!in_time && slice == deadline) deadline = Clock::time_point::min();  // one last look
  }
  return true;
}

}  // namespace

QueueBase::QueueBase(std::size_t maxsize, std::size_t buffer_bytes, const TypeTag& tag) {
  if (buffer_bytes < 64 || buffer_bytes > (SIZE_MAX >> 2)) {
    throw std::invalid_argument("mpx::Queue: buffer_bytes must be at least 64 and at most " +
                                std::to_string(SIZE_MAX >> 2) + ", got " +
                                std::to_string(buffer_bytes));
  }
  segment_ = Segment::create(SegmentKind::kQueue, tag, 0, kStateBytes + buffer_bytes);
  state_ = new (segment_->body()) QueueState();
  init_robust_mutex(&state_->lock, false);
  state_->capacity = buffer_bytes;
  state_->maxsize = maxsize;
}

QueueBase::QueueBase(AdoptTag, std::shared_ptr<Segment> segment)
    : segment_(std::move(segment)), state_(reinterpret_cast<QueueState*>(segment_->body())) {
  if (segment_->body_bytes() < kStateBytes ||
      segment_->body_bytes() - kStateBytes < state_->capacity) {
    throw SharedMemoryError("mpx::Queue: the shared queue is smaller than its buffer");
  }
}

bool QueueBase::put_bytes(const char* data, std::size_t size, Clock::time_point deadline) {
  QueueState* s = state_;
  const std::uint64_t need = kLengthBytes + size;
  if (size > UINT32_MAX || need > s->capacity) {
    throw std::length_error("mpx::Queue::put: an item of " + std::to_string(size) +
                            " bytes does not fit in the queue's buffer of " +
                            std::to_string(s->capacity) +
                            " bytes (give the Queue a larger buffer_bytes)");
  }
  QueueLock lock(s);
  if (!wait_until_ready(lock, s, putters_of(s), [&] { return shut(s) || has_room(s, need); },
                        deadline)) {
    return false;
  }
  if (shut(s)) throw ShutDown("mpx::Queue::put: the queue was shut down");
  const auto len = static_cast<std::uint32_t>(size);
  ring_write(s, s->tail, &len, kLengthBytes);
  ring_write(s, s->tail + kLengthBytes, data, size);
  __atomic_store_n(&s->tail, s->tail + need, __ATOMIC_RELEASE);
  __atomic_store_n(&s->count, s->count + 1, __ATOMIC_RELEASE);
  const Wake getters = claim_wake(getters_of(s));
  const Wake putters = has_room(s, kLengthBytes) ? claim_wake(putters_of(s)) : Wake{{}, 0};
  lock.unlock();
  send(lock, getters);
  send(lock, putters);
  return true;
}

bool QueueBase::get_bytes(std::string& out, Clock::time_point deadline) {
  QueueState* s = state_;
  QueueLock lock(s);
  if (!wait_until_ready(lock, s, getters_of(s),
                        [&] { return load(s->count) > 0 || shut(s); }, deadline)) {
    return false;
  }
  if (s->count == 0) throw ShutDown("mpx::Queue::get: the queue was shut down and is empty");
  std::uint32_t len;
  ring_read(s, s->head, &len, kLengthBytes);
  out.resize(len);
  ring_read(s, s->head + kLengthBytes, out.data(), len);
  __atomic_store_n(&s->head, s->head + kLengthBytes + len, __ATOMIC_RELEASE);
  __atomic_store_n(&s->count, s->count - 1, __ATOMIC_RELEASE);
  ++s->taken;
  const Wake putters = claim_wake(putters_of(s));
  const Wake getters = s->count > 0 ? claim_wake(getters_of(s)) : Wake{{}, 0};
  lock.unlock();
  send(lock, putters);
  send(lock, getters);
  return true;
}

std::size_t QueueBase::qsize() const {
  return static_cast<std::size_t>(__atomic_load_n(&state_->count, __ATOMIC_RELAXED));
}
bool QueueBase::empty() const { return qsize() == 0; }
bool QueueBase::full() const {
  QueueLock lock(state_);
  return !has_room(state_, kLengthBytes + 1);
}
void QueueBase::check_open(const char* what) const {
  if (*closed_) {
    throw Error(std::string("mpx::Queue::") + what +
                ": this queue was closed in this process (close())");
  }
}

void QueueBase::shutdown(bool immediate) {
  QueueState* s = state_;
  QueueLock lock(s);
  __atomic_store_n(&s->shutdown, immediate ? 2u : std::max(1u, s->shutdown), __ATOMIC_RELEASE);
  if (immediate) {
    // Drained items leave the unfinished count with them (count + taken), as in Python.
    __atomic_store_n(&s->head, s->tail, __ATOMIC_RELEASE);
    __atomic_store_n(&s->count, std::uint64_t{0}, __ATOMIC_RELEASE);
  }
  wake_everybody(s);
}

bool QueueBase::is_shutdown() const { return shut(state_); }

void QueueBase::task_done_once() {
  QueueState* s = state_;
  QueueLock lock(s);
  if (static_cast<std::int64_t>(s->count) + s->taken <= 0) {
    throw Error("mpx::JoinableQueue::task_done: called more times than items were put");
  }
  if (--s->taken + static_cast<std::int64_t>(s->count) == 0) {
    s->all_done.fetch_add(1);
    futex_wake(&s->all_done, INT_MAX);
  }
}

bool QueueBase::join_until(Clock::time_point deadline) {
  QueueState* s = state_;
  for (;;) {
    std::uint32_t seen;
    {
      QueueLock lock(s);
      if (static_cast<std::int64_t>(s->count) + s->taken <= 0) return true;
      seen = s->all_done.load();
    }
    if (expired(deadline)) return false;
    futex_wait(&s->all_done, seen, std::min(deadline, Clock::now() + kSleepSlice));
  }
}

std::size_t QueueBase::maxsize() const { return static_cast<std::size_t>(state_->maxsize); }
std::size_t QueueBase::buffer_bytes() const { return static_cast<std::size_t>(state_->capacity); }

}  // namespace detail
}  // namespace mpx
