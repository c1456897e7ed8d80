// mpx/shared.h — Value<T> and Array<T>: plain data in shared memory, each with its own
// robust lock (Python's multiprocessing.Value and Array).
//
//   void increment(mpx::Value<int> counter) {
//     std::lock_guard<mpx::Lock> guard(counter.get_lock());
//     counter.value() += 1;
//   }
//   MPX_TASK(increment);
//
//   mpx::Value<int> counter(0);
//   mpx::Process p(increment, counter);
//   p.start();
//   p.join();
//   counter.load();        // 1
//   counter.fetch_add(3);  // lock-free, no message: an atomic on the shared mapping
//
// A Value or Array is a handle: copies, and handles passed to a Process, a Pool task or
// a Queue, all refer to the same memory. The memory lives while a handle to it lives in
// the process that created it (a Process or Pool call keeps the handles it was given
// until it is done); any process that has mapped it keeps it until its handles go. It
// is freed by the kernel once no process holds it, so it never outlives the program,
// even when every process is killed with SIGKILL, and nothing is left in /dev/shm.
//
// Thread and process safety: handles may be used from any thread of any process.
// load/store/fetch_* are sequentially consistent atomics for T of 1, 2, 4 or 8 bytes;
// other sizes take the lock. value() and operator[] are plain references to shared
// memory: guard them with get_lock() when more than one process writes.
#ifndef MPX_SHARED_H_
#define MPX_SHARED_H_

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "mpx/detail/handle.h"
#include "mpx/sync.h"

namespace mpx {

template <class T>
class Value {
  static_assert(std::is_trivially_copyable_v<T>,
                "mpx::Value<T> needs a trivially copyable T: its bytes live in shared memory "
                "and are read by other processes, so T cannot own pointers or resources "
                "(send strings and containers through mpx::Queue instead)");
  static_assert(alignof(T) <= 64, "mpx::Value<T>: T may be aligned to at most 64 bytes");
  static constexpr bool kLockFree =
      (sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8) &&
      alignof(T) >= sizeof(T);

 public:
  // A new shared value holding initial. Throws SharedMemoryError when the system
  // refuses the memory.
  explicit Value(const T& initial = T{})
      : Value(detail::AdoptTag{}, detail::Segment::create(detail::SegmentKind::kValue,
                                                          detail::type_tag<T>(), 1, kBodyBytes),
              true) {
    std::memcpy(static_cast<void*>(ptr_), &initial, sizeof(T));
  }

  // Atomic for lock-free sizes; otherwise a copy taken under the lock.
  T load() const {
    T out;
    if constexpr (kLockFree) {
      __atomic_load(ptr_, &out, __ATOMIC_SEQ_CST);
    } else {
      std::lock_guard<Lock> guard(lock_);
      std::memcpy(static_cast<void*>(&out), ptr_, sizeof(T));
    }
    return out;
  }
  void store(const T& v) {
    if constexpr (kLockFree) {
      T copy = v;
      __atomic_store(ptr_, &copy, __ATOMIC_SEQ_CST);
    } else {
      std::lock_guard<Lock> guard(lock_);
      std::memcpy(static_cast<void*>(ptr_), &v, sizeof(T));
    }
  }
  // The shared object itself, for updates under get_lock().
  T& value() const { return *ptr_; }
  // The lock that comes with this value (Python's get_lock()). Recursive, like the
  // RLock Python gives a Value: load() and store() may be called while holding it.
  Lock& get_lock() const { return lock_; }

  // Atomic read-modify-write on the mapping; each returns the previous value.
  // Integral T: lock-free. Floating-point T: a compare-and-swap loop.
  T fetch_add(T n) const {
    if constexpr (std::is_integral_v<T>) {
      return __atomic_fetch_add(ptr_, n, __ATOMIC_SEQ_CST);
    } else {
      return cas_loop([n](T old) { return static_cast<T>(old + n); });
    }
  }
  T fetch_sub(T n) const {
    if constexpr (std::is_integral_v<T>) {
      return __atomic_fetch_sub(ptr_, n, __ATOMIC_SEQ_CST);
    } else {
      return cas_loop([n](T old) { return static_cast<T>(old - n); });
    }
  }
  T fetch_and(T n) const {
    static_assert(std::is_integral_v<T>, "mpx::Value::fetch_and needs an integral T");
    return __atomic_fetch_and(ptr_, n, __ATOMIC_SEQ_CST);
  }
  T fetch_or(T n) const {
    static_assert(std::is_integral_v<T>, "mpx::Value::fetch_or needs an integral T");
    return __atomic_fetch_or(ptr_, n, __ATOMIC_SEQ_CST);
  }
  T fetch_xor(T n) const {
    static_assert(std::is_integral_v<T>, "mpx::Value::fetch_xor needs an integral T");
    return __atomic_fetch_xor(ptr_, n, __ATOMIC_SEQ_CST);
  }
  T exchange(T v) const {
    static_assert(kLockFree, "mpx::Value::exchange needs a T of 1, 2, 4 or 8 bytes");
    T old;
    __atomic_exchange(ptr_, &v, &old, __ATOMIC_SEQ_CST);
    return old;
  }
  // If the value equals expected, stores desired and returns true; else loads the
  // value into expected and returns false.
  bool compare_exchange(T& expected, T desired) const {
    static_assert(kLockFree, "mpx::Value::compare_exchange needs a T of 1, 2, 4 or 8 bytes");
    return __atomic_compare_exchange(ptr_, &expected, &desired, false, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST);
  }

 private:
  static constexpr std::size_t kBodyBytes = detail::kMutexBytes + sizeof(T);

  Value(detail::AdoptTag tag, std::shared_ptr<detail::Segment> segment, bool fresh = false)
      : segment_(std::move(segment)),
        lock_(make_lock(segment_, fresh)),
        ptr_(reinterpret_cast<T*>(segment_->body() + detail::kMutexBytes)) {}

  static Lock make_lock(const std::shared_ptr<detail::Segment>& segment, bool fresh) {
    if (fresh) detail::init_mutex(*segment, /*recursive=*/true);
    return Lock(detail::AdoptTag{}, segment);
  }

  template <class Op>
  T cas_loop(Op next) const {
    static_assert(std::is_floating_point_v<T> && kLockFree,
                  "mpx::Value::fetch_add/fetch_sub need an integral or floating-point T");
    T old = load();
    while (!compare_exchange(old, next(old))) {
    }
    return old;
  }

  std::shared_ptr<detail::Segment> segment_;
  mutable Lock lock_;
  T* ptr_;

  friend struct detail::HandleAccess;
};

template <class T>
class Array {
  static_assert(std::is_trivially_copyable_v<T>,
                "mpx::Array<T> needs a trivially copyable T: its bytes live in shared memory "
                "and are read by other processes, so T cannot own pointers or resources");
  static_assert(alignof(T) <= 64, "mpx::Array<T>: T may be aligned to at most 64 bytes");

 public:
  using value_type = T;
  using iterator = T*;
  using const_iterator = const T*;

  // size zero-filled elements. Throws std::length_error when size * sizeof(T) does not
  // fit in memory, SharedMemoryError when the system refuses the memory.
  explicit Array(std::size_t size) : Array(detail::AdoptTag{}, create(size), true) {}
  Array(std::initializer_list<T> items) : Array(items.begin(), items.end()) {}
  // Forward iterators (the range is measured, then copied).
  template <class It, class = std::enable_if_t<std::is_base_of_v<
                          std::forward_iterator_tag,
                          typename std::iterator_traits<It>::iterator_category>>>
  Array(It first, It last)
      : Array(static_cast<std::size_t>(std::distance(first, last))) {
    std::copy(first, last, data_);
  }

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T* data() const { return data_; }
  // Unchecked, as std::vector's.
  T& operator[](std::size_t i) const { return data_[i]; }
  // Throws std::out_of_range naming the index and the size.
  T& at(std::size_t i) const {
    if (i >= size_) {
      throw std::out_of_range("mpx::Array::at: index " + std::to_string(i) +
                              " is out of range for an array of " + std::to_string(size_));
    }
    return data_[i];
  }
  T* begin() const { return data_; }
  T* end() const { return data_ + size_; }
  // A copy of the elements, taken under the lock.
  std::vector<T> to_vector() const {
    std::lock_guard<Lock> guard(lock_);
    return std::vector<T>(begin(), end());
  }
  // Recursive, as Value's: to_vector() may be called while holding it.
  Lock& get_lock() const { return lock_; }

 private:
  static std::shared_ptr<detail::Segment> create(std::size_t size) {
    if (size > (std::numeric_limits<std::size_t>::max() / 4 - detail::kMutexBytes) / sizeof(T)) {
      throw std::length_error("mpx::Array: " + std::to_string(size) + " elements of " +
                              std::to_string(sizeof(T)) + " bytes do not fit in memory");
    }
    return detail::Segment::create(detail::SegmentKind::kArray, detail::type_tag<T>(), size,
                                   detail::kMutexBytes + size * sizeof(T));
  }
  Array(detail::AdoptTag, std::shared_ptr<detail::Segment> segment, bool fresh = false)
      : segment_(std::move(segment)),
        lock_(make_lock(segment_, fresh)),
        data_(reinterpret_cast<T*>(segment_->body() + detail::kMutexBytes)),
        size_(static_cast<std::size_t>(segment_->ref().count)) {}
  static Lock make_lock(const std::shared_ptr<detail::Segment>& segment, bool fresh) {
    if (fresh) detail::init_mutex(*segment, /*recursive=*/true);
    return Lock(detail::AdoptTag{}, segment);
  }

  std::shared_ptr<detail::Segment> segment_;
  mutable Lock lock_;
  T* data_;
  std::size_t size_;

  friend struct detail::HandleAccess;
};

namespace detail {
template <class T>
struct HandleTraits<Value<T>> {
  static constexpr SegmentKind kKind = SegmentKind::kValue;
  static const TypeTag& tag() { return type_tag<T>(); }
};
template <class T>
struct HandleTraits<Array<T>> {
  static constexpr SegmentKind kKind = SegmentKind::kArray;
  static const TypeTag& tag() { return type_tag<T>(); }
};
}  // namespace detail

}  // namespace mpx

#endif  // MPX_SHARED_H_
