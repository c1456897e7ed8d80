// mpx/shared.h — Value<T> and Array<T>: plain data in shared memory, each with its own
// robust lock (Python's multiprocessing.Value and Array), and RawValue<T> and
// RawArray<T> without one (Python's RawValue and RawArray).
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
//   mpx::Lock shared_lock;                       // Python's lock=<a lock>: one lock
//   mpx::Value<int> a(0, shared_lock);           // guards both values
//   mpx::Array<double> b(16, shared_lock);
//   mpx::Value<int> unguarded(0, mpx::no_lock);  // Python's lock=False
//   mpx::RawArray<double> raw(1024);             // Python's RawArray: no lock at all
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
// other sizes take the lock (Value), or are plain copies (RawValue, or a Value made
// with no_lock). value() and operator[] are plain references to shared memory: guard
// them with get_lock() when more than one process writes.
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
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "mpx/detail/handle.h"
#include "mpx/sync.h"

namespace mpx {
namespace detail {

template <class T>
constexpr bool lock_free_size() {
  return (sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8) &&
         alignof(T) >= sizeof(T);
}

// The atomic operations every shared scalar offers, on the mapping (ptr_).
template <class T>
class ScalarOps {
 public:
  static constexpr bool kLockFree = lock_free_size<T>();

  // The shared object itself, for updates under a lock.
  T& value() const { return *ptr_; }

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

 protected:
  explicit ScalarOps(T* ptr) : ptr_(ptr) {}
  T atomic_load() const {
    T out;
    __atomic_load(ptr_, &out, __ATOMIC_SEQ_CST);
    return out;
  }
  void atomic_store(const T& v) const {
    T copy = v;
    __atomic_store(ptr_, &copy, __ATOMIC_SEQ_CST);
  }
  T copy_out() const {
    T out;
    std::memcpy(static_cast<void*>(&out), ptr_, sizeof(T));
    return out;
  }
  void copy_in(const T& v) const { std::memcpy(static_cast<void*>(ptr_), &v, sizeof(T)); }

  T* ptr_;

 private:
  template <class Op>
  T cas_loop(Op next) const {
    static_assert(std::is_floating_point_v<T> && kLockFree,
                  "mpx::Value::fetch_add/fetch_sub need an integral or floating-point T");
    T old = atomic_load();
    while (!compare_exchange(old, next(old))) {
    }
    return old;
  }
};

// The element access every shared array offers.
template <class T>
class SpanOps {
 public:
  using value_type = T;
  using iterator = T*;
  using const_iterator = const T*;

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

 protected:
  SpanOps(T* data, std::size_t size) : data_(data), size_(size) {}
  static void check_size(std::size_t size, std::size_t header) {
    if (size > (std::numeric_limits<std::size_t>::max() / 4 - header) / sizeof(T)) {
      throw std::length_error("mpx::Array: " + std::to_string(size) + " elements of " +
                              std::to_string(sizeof(T)) + " bytes do not fit in memory");
    }
  }
  T* data_;
  std::size_t size_;
};

template <class T>
struct SharedDataChecks {
  static_assert(std::is_trivially_copyable_v<T>,
                "mpx::Value<T>, Array<T>, RawValue<T> and RawArray<T> need a trivially copyable "
                "T: its bytes live in shared memory and are read by other processes, so T "
                "cannot own pointers or resources (send strings and containers through "
                "mpx::Queue instead)");
  static_assert(alignof(T) <= 64, "mpx shared data: T may be aligned to at most 64 bytes");
  static constexpr bool kOk = true;
};

[[noreturn]] void throw_no_lock(const char* what);

inline LockChoice lock_choice(const MutexHandle& lock) {
  return LockChoice{LockMode::kExternal, HandleAccess::segment(lock)};
}

// The segment of a Value or Array and the lock it chose (see LockChoice).
class Guarded {
 protected:
  // fresh: the creator's choice, written into the segment; null: read it from there.
  Guarded(std::shared_ptr<Segment> segment, const LockChoice* fresh)
      : segment_(std::move(segment)),
        lock_(fresh ? init_lock_choice(segment_, *fresh) : open_lock_choice(segment_)) {}
  Lock& lock_or_throw(const char* what) const {
    if (!lock_) throw_no_lock(what);
    return *lock_;
  }
  std::shared_ptr<Segment> segment_;
  mutable std::optional<Lock> lock_;
};

}  // namespace detail

template <class T>
class Value : public detail::ScalarOps<T>, private detail::Guarded {
  static_assert(detail::SharedDataChecks<T>::kOk);
  using Base = detail::ScalarOps<T>;

 public:
  // A new shared value holding initial, guarded by a recursive lock of its own. Throws
  // SharedMemoryError when the system refuses the memory.
  explicit Value(const T& initial = T{}) : Value(initial, detail::LockChoice{}) {}
  // Without a lock (Python's lock=False): get_lock() throws, and load()/store() of a T
  // that is not lock-free are plain copies.
  Value(const T& initial, NoLock) : Value(initial, detail::LockChoice{detail::LockMode::kNone, {}}) {}
  // Guarded by lock, which may guard other objects too (Python's lock=<a lock>).
  Value(const T& initial, const Lock& lock) : Value(initial, detail::lock_choice(lock)) {}
  Value(const T& initial, const RLock& lock) : Value(initial, detail::lock_choice(lock)) {}

  // Atomic for lock-free sizes; otherwise a copy taken under the lock.
  T load() const {
    if constexpr (Base::kLockFree) {
      return this->atomic_load();
    } else {
      if (!lock_) return this->copy_out();
      std::lock_guard<Lock> guard(*lock_);
      return this->copy_out();
    }
  }
  void store(const T& v) {
    if constexpr (Base::kLockFree) {
      this->atomic_store(v);
    } else {
      if (!lock_) return this->copy_in(v);
      std::lock_guard<Lock> guard(*lock_);
      this->copy_in(v);
    }
  }
  // The lock that guards this value (Python's get_lock()). Its own lock is recursive,
  // like the RLock Python gives a Value: load() and store() may be called while
  // holding it. Throws mpx::Error for a Value made with no_lock.
  Lock& get_lock() const { return lock_or_throw("Value"); }

 private:
  static constexpr std::size_t kBodyBytes = detail::kLockedHeaderBytes + sizeof(T);

  Value(const T& initial, const detail::LockChoice& choice)
      : Value(detail::AdoptTag{},
              detail::Segment::create(detail::SegmentKind::kValue, detail::type_tag<T>(), 1, kBodyBytes),
              &choice) {
    this->copy_in(initial);
  }
  Value(detail::AdoptTag, std::shared_ptr<detail::Segment> segment,
        const detail::LockChoice* fresh = nullptr)
      : Base(reinterpret_cast<T*>(segment->body() + detail::kLockedHeaderBytes)),
        Guarded(std::move(segment), fresh) {}

  friend struct detail::HandleAccess;
};

// A Value without a lock (Python's RawValue): the atomics of Value, no get_lock().
template <class T>
class RawValue : public detail::ScalarOps<T> {
  static_assert(detail::SharedDataChecks<T>::kOk);
  using Base = detail::ScalarOps<T>;

 public:
  explicit RawValue(const T& initial = T{})
      : RawValue(detail::AdoptTag{}, detail::Segment::create(detail::SegmentKind::kRawValue,
                                                             detail::type_tag<T>(), 1, sizeof(T))) {
    this->copy_in(initial);
  }
  // Atomic for T of 1, 2, 4 or 8 bytes; a plain copy otherwise.
  T load() const {
    if constexpr (Base::kLockFree) return this->atomic_load();
    return this->copy_out();
  }
  void store(const T& v) {
    if constexpr (Base::kLockFree) return this->atomic_store(v);
    this->copy_in(v);
  }

 private:
  RawValue(detail::AdoptTag, std::shared_ptr<detail::Segment> segment)
      : Base(reinterpret_cast<T*>(segment->body())), segment_(std::move(segment)) {}
  std::shared_ptr<detail::Segment> segment_;
  friend struct detail::HandleAccess;
};

template <class T>
class Array : public detail::SpanOps<T>, private detail::Guarded {
  static_assert(detail::SharedDataChecks<T>::kOk);
  using Base = detail::SpanOps<T>;

 public:
  // size zero-filled elements. Throws std::length_error when size * sizeof(T) does not
  // fit in memory, SharedMemoryError when the system refuses the memory.
  explicit Array(std::size_t size) : Array(size, detail::LockChoice{}) {}
  Array(std::initializer_list<T> items) : Array(items.begin(), items.end()) {}
  // Forward iterators (the range is measured, then copied).
  template <class It, class = std::enable_if_t<std::is_base_of_v<
                          std::forward_iterator_tag,
                          typename std::iterator_traits<It>::iterator_category>>>
  Array(It first, It last) : Array(static_cast<std::size_t>(std::distance(first, last))) {
    std::copy(first, last, this->data_);
  }
  // Python's lock=False and lock=<a lock>, as for Value.
  Array(std::size_t size, NoLock) : Array(size, detail::LockChoice{detail::LockMode::kNone, {}}) {}
  Array(std::size_t size, const Lock& lock) : Array(size, detail::lock_choice(lock)) {}
  Array(std::size_t size, const RLock& lock) : Array(size, detail::lock_choice(lock)) {}

  // A copy of the elements, taken under the lock (a plain copy without one).
  std::vector<T> to_vector() const {
    if (!lock_) return std::vector<T>(this->begin(), this->end());
    std::lock_guard<Lock> guard(*lock_);
    return std::vector<T>(this->begin(), this->end());
  }
  // Recursive, as Value's: to_vector() may be called while holding it. Throws
  // mpx::Error for an Array made with no_lock.
  Lock& get_lock() const { return lock_or_throw("Array"); }

 private:
  Array(std::size_t size, const detail::LockChoice& choice)
      : Array(detail::AdoptTag{}, create(size), &choice) {}
  static std::shared_ptr<detail::Segment> create(std::size_t size) {
    Base::check_size(size, detail::kLockedHeaderBytes);
    return detail::Segment::create(detail::SegmentKind::kArray, detail::type_tag<T>(), size,
                                   detail::kLockedHeaderBytes + size * sizeof(T));
  }
  Array(detail::AdoptTag, std::shared_ptr<detail::Segment> segment,
        const detail::LockChoice* fresh = nullptr)
      : Base(reinterpret_cast<T*>(segment->body() + detail::kLockedHeaderBytes),
             static_cast<std::size_t>(segment->ref().count)),
        Guarded(std::move(segment), fresh) {}

  friend struct detail::HandleAccess;
};

// An Array without a lock (Python's RawArray).
template <class T>
class RawArray : public detail::SpanOps<T> {
  static_assert(detail::SharedDataChecks<T>::kOk);
  using Base = detail::SpanOps<T>;

 public:
  explicit RawArray(std::size_t size) : RawArray(detail::AdoptTag{}, create(size)) {}
  RawArray(std::initializer_list<T> items) : RawArray(items.begin(), items.end()) {}
  template <class It, class = std::enable_if_t<std::is_base_of_v<
                          std::forward_iterator_tag,
                          typename std::iterator_traits<It>::iterator_category>>>
  RawArray(It first, It last) : RawArray(static_cast<std::size_t>(std::distance(first, last))) {
    std::copy(first, last, this->data_);
  }
  // A plain copy: nothing stops other processes writing meanwhile.
  std::vector<T> to_vector() const { return std::vector<T>(this->begin(), this->end()); }

 private:
  static std::shared_ptr<detail::Segment> create(std::size_t size) {
    Base::check_size(size, 0);
    return detail::Segment::create(detail::SegmentKind::kRawArray, detail::type_tag<T>(), size,
                                   size * sizeof(T));
  }
  RawArray(detail::AdoptTag, std::shared_ptr<detail::Segment> segment)
      : Base(reinterpret_cast<T*>(segment->body()), static_cast<std::size_t>(segment->ref().count)),
        segment_(std::move(segment)) {}
  std::shared_ptr<detail::Segment> segment_;
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
template <class T>
struct HandleTraits<RawValue<T>> {
  static constexpr SegmentKind kKind = SegmentKind::kRawValue;
  static const TypeTag& tag() { return type_tag<T>(); }
};
template <class T>
struct HandleTraits<RawArray<T>> {
  static constexpr SegmentKind kKind = SegmentKind::kRawArray;
  static const TypeTag& tag() { return type_tag<T>(); }
};
}  // namespace detail

}  // namespace mpx

#endif  // MPX_SHARED_H_
