// Queue: a ring buffer of length-prefixed items in a segment, behind a robust mutex.
#include "mpx/queue.h"

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
        s_->tail = at;
        break;
      }
      at += kLengthBytes + len;
    }
    s_->count = items;
    // Whoever waits may now be able to proceed; the dead holder cannot tell them.
    s_->not_empty.fetch_add(1);
    s_->not_full.fetch_add(1);
    futex_wake(&s_->not_empty, INT_MAX);
    futex_wake(&s_->not_full, INT_MAX);
  }

  QueueState* s_;
  bool held_ = false;
};

bool expired(Clock::time_point deadline) {
  return deadline != Clock::time_point::max() &&
         (deadline == Clock::time_point::min() || Clock::now() >= deadline);
}

}  // namespace

QueueBase::QueueBase(std::size_t maxsize, std::size_t buffer_bytes, const TypeTag& tag) {
  if (buffer_bytes < 64) {
    throw std::invalid_argument("mpx::Queue: buffer_bytes must be at least 64, got " +
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
  if (segment_->body_bytes() < kStateBytes + state_->capacity) {
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
  while (s->capacity - (s->tail - s->head) < need || (s->maxsize != 0 && s->count >= s->maxsize)) {
    if (expired(deadline)) return false;
    const std::uint32_t seen = s->not_full.load();
    ++s->putters;
    lock.unlock();
    const bool in_time = futex_wait(&s->not_full, seen, deadline);
    lock.lock();
    --s->putters;
    if (!in_time) deadline = Clock::time_point::min();  // one last look
  }
  const auto len = static_cast<std::uint32_t>(size);
  ring_write(s, s->tail, &len, kLengthBytes);
  ring_write(s, s->tail + kLengthBytes, data, size);
  __atomic_store_n(&s->tail, s->tail + need, __ATOMIC_RELEASE);
  __atomic_store_n(&s->count, s->count + 1, __ATOMIC_RELAXED);
  s->not_empty.fetch_add(1);
  // Every sleeping getter is woken, not one: a getter killed between its wake-up and
  // taking the item would otherwise strand the item while the others sleep on.
  const bool wake = s->getters > 0;
  lock.unlock();
  if (wake) futex_wake(&s->not_empty, INT_MAX);
  return true;
}

bool QueueBase::get_bytes(std::string& out, Clock::time_point deadline) {
  QueueState* s = state_;
  QueueLock lock(s);
  while (s->count == 0) {
    if (expired(deadline)) return false;
    const std::uint32_t seen = s->not_empty.load();
    ++s->getters;
    lock.unlock();
    const bool in_time = futex_wait(&s->not_empty, seen, deadline);
    lock.lock();
    --s->getters;
    if (!in_time) deadline = Clock::time_point::min();
  }
  std::uint32_t len;
  ring_read(s, s->head, &len, kLengthBytes);
  out.resize(len);
  ring_read(s, s->head + kLengthBytes, out.data(), len);
  __atomic_store_n(&s->head, s->head + kLengthBytes + len, __ATOMIC_RELEASE);
  __atomic_store_n(&s->count, s->count - 1, __ATOMIC_RELAXED);
  s->not_full.fetch_add(1);
  const bool wake = s->putters > 0;
  lock.unlock();
  if (wake) futex_wake(&s->not_full, INT_MAX);
  return true;
}

std::size_t QueueBase::qsize() const {
  return static_cast<std::size_t>(__atomic_load_n(&state_->count, __ATOMIC_RELAXED));
}
bool QueueBase::empty() const { return qsize() == 0; }
bool QueueBase::full() const {
  QueueLock lock(state_);
  return (state_->maxsize != 0 && state_->count >= state_->maxsize) ||
         state_->capacity - (state_->tail - state_->head) < kLengthBytes + 1;
}
std::size_t QueueBase::maxsize() const { return static_cast<std::size_t>(state_->maxsize); }
std::size_t QueueBase::buffer_bytes() const { return static_cast<std::size_t>(state_->capacity); }

}  // namespace detail
}  // namespace mpx
