// mpx/queue.h — Queue<T>: a bounded, multi-producer multi-consumer FIFO shared by
// processes (Python's multiprocessing.Queue), in shared memory; JoinableQueue<T>
// (task_done, join) and SimpleQueue<T> on the same ring.
//
//   void producer(mpx::Queue<int> q) {
//     for (int i = 0; i < 100; ++i) q.put(i);
//     q.put(-1);
//   }
//   MPX_TASK(producer);
//
//   mpx::Queue<int> q(/*maxsize=*/128);
//   mpx::Process p(producer, q);
//   p.start();
//   for (int x = q.get(); x != -1; x = q.get()) use(x);
//   std::optional<int> maybe = q.get(std::chrono::milliseconds(10));  // nullopt: empty
//
// Items are msgpack-serialized copies of any type msgpack can pack (MSGPACK_DEFINE for
// structs). They live in a ring buffer in the queue's segment: put() returns once the
// item is in shared memory, so it survives the process that put it, and an item leaves
// the queue only in the get() that returns it. A process killed anywhere in a put() or
// get(), even while holding the queue's lock, leaves every item either in the queue or
// in the hands of that get(); consumers killed while waiting hold nothing and lose
// nothing.
// Unlike Python's Queue there is no feeder thread: put() never returns before the item
// can be got.
//
// The queue is bounded twice: by maxsize items (0: no item limit) and by its buffer of
// buffer_bytes bytes. put() waits while either is full, get() while the queue is empty.
//
// shutdown() (Python 3.13): later put()s throw mpx::ShutDown, and so do get()s once the
// queue is empty (at once with shutdown(true), which empties it); blocked callers wake
// and throw. close() is Python's per-process close(): this handle (and its copies in
// this process) may no longer put or get; other processes are not affected.
//
//   mpx::JoinableQueue<Job> jobs;
//   ... workers: auto job = jobs.get(); run(job); jobs.task_done();
//   jobs.join();  // every job put so far has been got and task_done()
//
// Handle semantics, lifetime and thread safety are those of every shared object (see
// mpx/shared.h): copy it, pass it to a Process or a Pool task, use it from any thread.
// Handles packed inside items put into a Queue are not kept alive by the queue.
#ifndef MPX_QUEUE_H_
#define MPX_QUEUE_H_

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include <msgpack.hpp>

#include "mpx/detail/deadline.h"
#include "mpx/detail/codec.h"
#include "mpx/detail/handle.h"
#include "mpx/errors.h"

namespace mpx {
namespace detail {

struct QueueState;

// The type-independent part of Queue<T>: the ring buffer of encoded items.
class QueueBase {
 public:
  static constexpr std::size_t kDefaultBufferBytes = std::size_t{1} << 20;

  // Items in the queue now (may have changed by the time the caller looks).
  std::size_t qsize() const;
  bool empty() const;
  bool full() const;
  std::size_t maxsize() const;
  std::size_t buffer_bytes() const;

  // Python's close(): this handle and its copies in this process can no longer put or
  // get (mpx::Error); the queue and its other handles are unaffected. Idempotent.
  void close() { *closed_ = true; }
  // Python 3.13's shutdown(immediate): see the top of this file. For every process.
  void shutdown(bool immediate = false);
  bool is_shutdown() const;

 protected:
  QueueBase(std::size_t maxsize, std::size_t buffer_bytes, const TypeTag& tag);
  QueueBase(AdoptTag, std::shared_ptr<Segment> segment);
  // Appends one item; false when the deadline passed while the queue stayed full.
  // Throws std::length_error when size can never fit in the buffer.
  bool put_bytes(const char* data, std::size_t size, Clock::time_point deadline);
  // Removes the oldest item into out; false when the deadline passed while empty.
  bool get_bytes(std::string& out, Clock::time_point deadline);
  // JoinableQueue.
  void task_done_once();
  bool join_until(Clock::time_point deadline);
  void check_open(const char* what) const;

  std::shared_ptr<Segment> segment_;
  QueueState* state_;
  // close() in this process, shared by copies of this handle.
  std::shared_ptr<bool> closed_ = std::make_shared<bool>(false);

  friend struct HandleAccess;
};

}  // namespace detail

template <class T>
class Queue : public detail::QueueBase {
 public:
  // Throws std::invalid_argument for a buffer under 64 bytes or over a quarter of the
  // address space, SharedMemoryError when the system refuses the memory.
  explicit Queue(std::size_t maxsize = 0, std::size_t buffer_bytes = kDefaultBufferBytes)
      : QueueBase(maxsize, buffer_bytes, detail::type_tag<T>()) {}

  // Waits for room, then appends item. Throws std::length_error when the encoded item
  // is larger than the whole buffer, and what msgpack throws for an unpackable item;
  // mpx::ShutDown after shutdown(), mpx::Error after close().
  void put(const T& item) { put_until(item, detail::Clock::time_point::max()); }
  // Returns false, with nothing appended, when timeout passed while the queue was full.
  template <class Rep, class Period>
  bool put(const T& item, const std::chrono::duration<Rep, Period>& timeout) {
    return put_until(item, detail::deadline_after(timeout));
  }
  // Appends without waiting; false when full (Python's put_nowait raises Full).
  bool try_put(const T& item) { return put_until(item, detail::Clock::now()); }

  // Waits for an item and removes it. Throws DecodeError if it cannot be read as a T,
  // SharedMemoryError if it holds a handle whose segment is gone (the item is consumed);
  // mpx::ShutDown when the queue is shut down and empty, mpx::Error after close().
  T get() { return *get_until(detail::Clock::time_point::max()); }
  // nullopt when timeout passed while the queue was empty.
  template <class Rep, class Period>
  std::optional<T> get(const std::chrono::duration<Rep, Period>& timeout) {
    return get_until(detail::deadline_after(timeout));
  }
  // Removes an item without waiting; nullopt when empty (Python's get_nowait raises).
  std::optional<T> try_get() { return get_until(detail::Clock::now()); }

 private:
  Queue(detail::AdoptTag tag, std::shared_ptr<detail::Segment> segment)
      : QueueBase(tag, std::move(segment)) {}

  template <class U>
  friend class JoinableQueue;
  template <class U>
  friend class SimpleQueue;

  bool put_until(const T& item, detail::Clock::time_point deadline) {
    check_open("put");
    thread_local detail::Buffer buffer;  // keeps -0.0 (see codec.h)
    buffer.clear();
    msgpack::pack(buffer, item);
    return put_bytes(buffer.data(), buffer.size(), deadline);
  }
  std::optional<T> get_until(detail::Clock::time_point deadline) {
    check_open("get");
    thread_local std::string bytes;
    if (!get_bytes(bytes, deadline)) return std::nullopt;
    try {
      msgpack::object_handle oh = msgpack::unpack(bytes.data(), bytes.size());
      return oh.get().as<T>();
    } catch (const SharedMemoryError&) {
      throw;  // a handle inside the item names a segment that is gone
    } catch (const std::exception& e) {
      throw DecodeError(std::string("mpx::Queue::get: an item could not be read as ") +
                        std::string(detail::type_tag<T>().name) + ": " + e.what());
    }
  }

  friend struct detail::HandleAccess;
};

// A Queue whose consumers say when they finished each item (Python's JoinableQueue).
// A consumer killed between get() and task_done() leaves its item unfinished, as in
// Python; join(timeout) then returns false instead of waiting forever.
template <class T>
class JoinableQueue : public Queue<T> {
 public:
  explicit JoinableQueue(std::size_t maxsize = 0,
                         std::size_t buffer_bytes = detail::QueueBase::kDefaultBufferBytes)
      : Queue<T>(maxsize, buffer_bytes) {}
  // One item got earlier is finished. Throws mpx::Error when called more times than
  // items were put (Python's ValueError).
  void task_done() { this->task_done_once(); }
  // Waits until every item put has been got and task_done() (or the queue was shut
  // down immediately).
  void join() { this->join_until(detail::Clock::time_point::max()); }
  // false when timeout passed first.
  template <class Rep, class Period>
  bool join(const std::chrono::duration<Rep, Period>& timeout) {
    return this->join_until(detail::deadline_after(timeout));
  }

 private:
  JoinableQueue(detail::AdoptTag tag, std::shared_ptr<detail::Segment> segment)
      : Queue<T>(tag, std::move(segment)) {}
  friend struct detail::HandleAccess;
};

// Python's SimpleQueue: put, get, empty, close; no item limit (put waits only while the
// buffer of buffer_bytes is full).
template <class T>
class SimpleQueue : private Queue<T> {
 public:
  explicit SimpleQueue(std::size_t buffer_bytes = detail::QueueBase::kDefaultBufferBytes)
      : Queue<T>(0, buffer_bytes) {}
  using Queue<T>::put;
  using Queue<T>::get;
  using Queue<T>::empty;
  using Queue<T>::close;

 private:
  SimpleQueue(detail::AdoptTag tag, std::shared_ptr<detail::Segment> segment)
      : Queue<T>(tag, std::move(segment)) {}
  friend struct detail::HandleAccess;
};

namespace detail {
// Queue, JoinableQueue and SimpleQueue share one kind of segment: as in Python, a
// JoinableQueue may be passed where a Queue is expected.
template <class T>
struct HandleTraits<Queue<T>> {
  static constexpr SegmentKind kKind = SegmentKind::kQueue;
  static const TypeTag& tag() { return type_tag<T>(); }
};
template <class T>
struct HandleTraits<JoinableQueue<T>> : HandleTraits<Queue<T>> {};
template <class T>
struct HandleTraits<SimpleQueue<T>> : HandleTraits<Queue<T>> {};
}  // namespace detail

}  // namespace mpx

#endif  // MPX_QUEUE_H_
