// mpx/detail/call.h — the state of one call submitted to a pool, shared between the
// caller's handle (Future, imap iterator) and the pool's result pump.
// Internal: not part of the public API.
//
// Concurrency: one thread at a time pumps the pool's result socket and hands results
// to calls (accept_* below) without holding the pool mutex; each call then publishes
// under the pool mutex (mu()). Readers wait through pool_wait with a predicate that is
// evaluated under the same mutex, so a completed call's data is visible to them.
#ifndef MPX_DETAIL_CALL_H_
#define MPX_DETAIL_CALL_H_

#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpx/detail/codec.h"
#include "mpx/detail/deadline.h"
#include "mpx/errors.h"
#include "mpx/future.h"
#include "mpx/task.h"

namespace mpx {
namespace detail {

class PoolCore;

class CallBase {
 public:
  CallBase(const TaskEntry& task, std::uint64_t total) : task_(task), total_(total) {}
  virtual ~CallBase() = default;
  CallBase(const CallBase&) = delete;
  CallBase& operator=(const CallBase&) = delete;

  // Called by the pumping thread, pool mutex not held. Each returns true when the call
  // needs no more messages (complete, or failed fast), so the pool can forget it and
  // ask the router to drop what is still queued.
  virtual bool accept_results(std::uint64_t start, std::uint32_t count, const char* data,
                              std::size_t size, bool has_errors, pid_t worker_pid) = 0;
  // timed_out: the tasks ran over PoolOptions::task_timeout (TimeoutError).
  virtual bool accept_lost(const std::vector<std::uint64_t>& indices, pid_t worker_pid,
                           const std::string& reason, bool timed_out) = 0;
  // The pool can deliver nothing more (router died, terminated, shut down).
  virtual void accept_failure(std::exception_ptr error) = 0;
  // Under mu(): fails a call not finished with error (a CancelledError); false when it
  // had finished. Only calls handed out as futures are cancelled.
  virtual bool cancel_locked(std::exception_ptr error) {
    (void)error;
    return false;
  }
  // The callbacks of a call handed out as a Future; null for the others.
  virtual Completion* completion_or_null() { return nullptr; }

  const TaskEntry& task() const { return task_; }
  std::uint64_t total() const { return total_; }
  std::uint64_t id() const { return id_; }
  void set_id(std::uint64_t id, std::mutex* mu, PoolCore* core) {
    id_ = id;
    mu_ = mu;
    core_ = core;
  }
  std::mutex& mu() { return *mu_; }
  // Valid while a Future of the call lives (it keeps the core).
  PoolCore& core() const { return *core_; }
  // Shared objects named in this call's arguments: kept while the call lives.
  Pins& pins() { return pins_; }
  // An open-ended call's reader of the rest of its input (an imap's): join() runs it,
  // without the pool mutex. Set before the call begins, never changed after.
  void set_feed_rest(std::function<void()> feed_rest) { feed_rest_ = std::move(feed_rest); }
  const std::function<void()>& feed_rest() const { return feed_rest_; }

  std::exception_ptr make_remote_error(std::uint64_t start, const ErrorInfo& e,
                                       pid_t worker_pid) const;
  std::exception_ptr make_lost_error(std::vector<std::uint64_t> indices, pid_t worker_pid,
                                     const std::string& reason, bool timed_out) const;

 private:
  const TaskEntry& task_;
  const std::uint64_t total_;
  std::uint64_t id_ = 0;
  std::mutex* mu_ = nullptr;
  PoolCore* core_ = nullptr;
  Pins pins_;  // written only by the submitting thread, before the call is shared
  std::function<void()> feed_rest_;
};

// Pool operations the templates use; defined in framework/pool/pool_core.cc (the
// CallBase members above in framework/pool/call.cc).
void pool_begin_call(PoolCore& core, const std::shared_ptr<CallBase>& call);
// Sends one chunk of call. Small chunks may wait in a buffer until pool_flush (or
// until enough gather): a submission sends its chunks, then flushes. objects: the
// chunk's arguments that travel as objects (ObjectSink), object_bytes their size
// (with lent's); the pool keeps them until the chunk is answered and counts them in its
// window. lent: the argument buffers the chunk names (ObjectSink::lent), given back for
// reuse once the chunk is answered.
void pool_send_chunk(PoolCore& core, CallBase& call, std::uint64_t start, std::uint32_t count,
                     Buffer&& payload, Pins&& objects = {}, std::size_t object_bytes = 0,
                     std::vector<std::shared_ptr<Segment>>&& lent = {});
// The size from which this pool's arguments travel as objects; 0 for never.
std::size_t pool_object_threshold(const PoolCore& core);
void pool_flush(PoolCore& core);
// Waits until ready() (evaluated under the pool mutex) or the deadline; returns ready().
// While waiting, the caller may become the thread that pumps results.
bool pool_wait(PoolCore& core, const std::function<bool()>& ready, Clock::time_point deadline);
// Withdraws a call whose chunks could not all be sent: the pool forgets it and the
// router drops what was queued. Its handle was never returned, so nobody waits on it.
void pool_abandon_call(PoolCore& core, CallBase& call);
// Future::cancel of a pool call: fails it with CancelledError (unless finished: false),
// and has the router drop its chunks not started and kill the workers running one.
bool pool_cancel(PoolCore& core, CallBase& call);
int pool_processes(const PoolCore& core);


template <class T, class = void>
struct is_sized : std::false_type {};
template <class T>
struct is_sized<T, std::void_t<decltype(std::size(std::declval<const T&>()))>> : std::true_type {};

// Python's automatic chunksize: ceil(n / (4 * workers)).
inline std::size_t auto_chunksize(std::size_t n, int workers) {
  const std::size_t parts = static_cast<std::size_t>(workers > 0 ? workers : 1) * 4;
  std::size_t c = n / parts + (n % parts ? 1 : 0);
  return c ? c : 1;
}

template <class R>
using Stored = std::conditional_t<std::is_void_v<R>, std::nullptr_t, R>;

// The error list that follows a chunk's values (at off), checked: its items are
// distinct items of the chunk, in order (see ChunkWriter). Throws DecodeError.
inline std::vector<ErrorInfo> read_error_list(const char* data, std::size_t size, std::size_t& off,
                                              std::uint32_t count) {
  msgpack::zone zone;
  std::vector<ErrorInfo> errors;
  try {
    errors = error_list_from(read_object(zone, data, size, off));
  } catch (const DecodeError& e) {
    throw DecodeError(std::string("result chunk: unreadable error list: ") + e.what());
  }
  for (std::size_t k = 0; k < errors.size(); ++k) {
    if (errors[k].item >= count || (k > 0 && errors[k].item <= errors[k - 1].item)) {
      throw DecodeError("result chunk: error list names an item outside the chunk");
    }
  }
  return errors;
}

// Decodes a results chunk; calls on_value(i, obj) per successful item and returns the
// failures in chunk order. Throws DecodeError when the payload is malformed.
template <class OnValue>
std::vector<ErrorInfo> read_results(const char* data, std::size_t size, std::uint32_t count,
                                    bool has_errors, OnValue&& on_value) {
  std::size_t off = 0;
  if (at_raw_chunk(data, size, off)) {
    const RawChunk chunk = read_raw_chunk(data, size, off, count, /*writable=*/false);
    const RawBlock& block = chunk.block;
    std::vector<ErrorInfo> errors;
    if (has_errors) errors = read_error_list(data, size, off, count);
    std::size_t next_error = 0;
    for (std::uint32_t i = 0; i < count; ++i) {
      if (next_error < errors.size() && errors[next_error].item == i) {
        ++next_error;
        continue;
      }
      on_value(i, raw_element(block, i));
    }
    return errors;
  }
  if (read_array_header(data, size, off) != count) {
    throw DecodeError("result chunk size does not match its header");
  }
  msgpack::zone zone;
  std::vector<ErrorInfo> errors;
  std::size_t values_off = off;
  for (std::uint32_t i = 0; i < count; ++i) {  // skip to the error list first if any
    if (!has_errors) break;
    zone.clear();
    read_object(zone, data, size, off);
  }
  if (has_errors) errors = read_error_list(data, size, off, count);
  off = values_off;
  std::size_t next_error = 0;
  for (std::uint32_t i = 0; i < count; ++i) {
    zone.clear();
    const msgpack::object obj = read_object(zone, data, size, off);
    if (next_error < errors.size() && errors[next_error].item == i) {
      ++next_error;
      continue;
    }
    on_value(i, obj);
  }
  return errors;
}

// A large vector, array or string result may come as an object (ArgumentCodec), whose
// memfd came with the frame (the pool reads results under an AttachedObjects scope).
template <class R>
void convert_result(const msgpack::object& obj, Stored<R>& out, const TaskEntry& task) {
  if constexpr (!std::is_void_v<R>) {
    try {
      if constexpr (ObjectLayout<Stored<R>>::kContiguous && !holds_views<Stored<R>>::value) {
        if (obj.type == msgpack::type::EXT && obj.via.ext.type() == kObjectArgumentExt) {
          out = ArgumentCodec<Stored<R>>::unpack(obj);
          return;
        }
      }
      obj.convert(out);
    } catch (const std::exception& e) {
      throw DecodeError("task '" + std::string(task.name) +
                        "': result could not be decoded: " + e.what());
    }
  }
}

// A pool call as a Future<T> sees it (mpx/future.h). The *_locked members need mu().
template <class T>
class ResultCall : public CallBase, public FutureState<T> {
 public:
  using CallBase::CallBase;
  bool wait_until(Clock::time_point deadline) override {
    return pool_wait(core(), [this] { return this->done_locked(); }, deadline);
  }
  bool wait_source(const std::function<bool()>& pred, Clock::time_point deadline) override {
    return pool_wait(core(), pred, deadline);
  }
  const void* source() const override { return &core(); }
  bool cancel() override { return pool_cancel(core(), *this); }
  Completion& completion() override { return completion_; }
  Completion* completion_or_null() override { return &completion_; }

 private:
  Completion completion_;
};

// A call whose caller wants all results at once: map, starmap, apply_async.
// T is what get() returns: std::vector<R> for the map family, R for apply.
template <class R, class T>
class GatherCall final : public ResultCall<T> {
 public:
  using CallBase::id;
  using CallBase::mu;
  using CallBase::task;
  using CallBase::total;
  GatherCall(const TaskEntry& task, std::uint64_t total)
      : ResultCall<T>(task, total), done_(total == 0) {
    if constexpr (kRawItem<Stored<R>>) {
      out_.reserve(total);  // filled in order by append_raw, never zero-filled first
    } else {
      out_.resize(total);
    }
  }

  bool accept_results(std::uint64_t start, std::uint32_t count, const char* data,
                      std::size_t size, bool has_errors, pid_t worker_pid) override {
    std::exception_ptr error;
    try {
      if (start + count > total()) throw DecodeError("result chunk outside the call's range");
      if constexpr (kRawItem<Stored<R>>) {
        auto errors = append_raw(start, count, data, size, has_errors);
        if (!errors.empty()) error = this->make_remote_error(start, errors.front(), worker_pid);
      } else {
      auto errors = read_results(data, size, count, has_errors,
                                 [&](std::uint32_t i, const msgpack::object& obj) {
                                   if constexpr (std::is_same_v<Stored<R>, bool>) {
                                     // std::vector<bool> hands out proxies, not bool&.
                                     bool v = false;
                                     convert_result<R>(obj, v, task());
                                     out_[start + i] = v;
                                   } else {
                                     convert_result<R>(obj, out_[start + i], task());
                                   }
                                 });
      if (!errors.empty()) error = this->make_remote_error(start, errors.front(), worker_pid);
      }
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mu());
    received_ += count;
    if (error && !error_) error_ = error;
    done_ = done_ || error_ || received_ >= total();
    return done_;
  }
  bool accept_lost(const std::vector<std::uint64_t>& indices, pid_t worker_pid,
                   const std::string& reason, bool timed_out) override {
    auto error = this->make_lost_error(indices, worker_pid, reason, timed_out);
    std::lock_guard<std::mutex> lock(mu());
    if (!error_) error_ = error;
    done_ = true;
    return true;
  }
  void accept_failure(std::exception_ptr error) override {
    std::lock_guard<std::mutex> lock(mu());
    if (!done_) {
      error_ = error;
      done_ = true;
    }
  }

  bool cancel_locked(std::exception_ptr error) override {
    if (done_) return false;
    error_ = error;
    done_ = cancelled_ = true;
    return true;
  }

  bool done_locked() override { return done_; }
  bool failed_locked() override { return done_ && error_; }
  bool cancelled() override {
    std::lock_guard<std::mutex> lock(mu());
    return cancelled_;
  }
  std::exception_ptr error() override {
    std::lock_guard<std::mutex> lock(mu());
    return error_;
  }
  T value() override {
    std::lock_guard<std::mutex> lock(mu());
    if (error_) std::rethrow_exception(error_);
    if constexpr (std::is_void_v<T>) {
      return;
    } else if constexpr (std::is_same_v<T, std::vector<R>>) {
      return out_;
    } else {
      return out_.front();
    }
  }
  T take() override {
    std::lock_guard<std::mutex> lock(mu());
    // The error leaves with the value: the thrown exception is then owned by the
    // catching thread alone, whichever thread drops this call last.
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    if constexpr (std::is_void_v<T>) {
      return;
    } else if constexpr (std::is_same_v<T, std::vector<R>>) {
      return std::move(out_);
    } else {
      return std::move(out_.front());
    }
  }

 private:
  // Numbers: a chunk's results are copied from its bytes straight to their place in
  // out_ (reserved, never zero-filled ahead). A chunk answered before those ahead of
  // it first grows out_ to its own end: the gap is zero-filled then and overwritten
  // when its chunks come, which is cheaper than keeping the chunk aside until then (an
  // allocation, fresh pages to fault in, and a second copy).
  std::vector<ErrorInfo> append_raw(std::uint64_t start, std::uint32_t count, const char* data,
                                    std::size_t size, bool has_errors) {
    using V = Stored<R>;
    std::size_t off = 0;
    std::vector<ErrorInfo> errors;
    if (at_raw_chunk(data, size, off)) {
      const RawChunk chunk = read_raw_chunk(data, size, off, count, /*writable=*/false);
      const RawBlock& block = chunk.block;
      if (block.code == raw_code<V>()) {
        if (has_errors) errors = read_error_list(data, size, off, count);
        place(start, RawIterator<V>(block.bytes), count);
        return errors;
      }
    }
    std::vector<V> decoded(count);
    errors = read_results(data, size, count, has_errors, [&](std::uint32_t i, const msgpack::object& obj) {
      convert_result<R>(obj, decoded[i], task());
    });
    place(start, decoded.begin(), count);
    return errors;
  }
  template <class It>
  void place(std::uint64_t start, It first, std::uint32_t count) {
    if (start == out_.size()) {
      out_.insert(out_.end(), first, first + count);
      return;
    }
    if (start + count > out_.size()) out_.resize(start + count);
    std::copy(first, first + count, out_.begin() + static_cast<std::ptrdiff_t>(start));
  }

  std::vector<Stored<R>> out_;  // written only by the pumping thread before done_
  std::uint64_t received_ = 0;  // guarded by mu()
  std::exception_ptr error_;    // guarded by mu()
  bool done_ = false;           // guarded by mu()
  bool cancelled_ = false;      // guarded by mu()
};

// A call whose results are consumed one by one: imap (ordered) and imap_unordered.
// Its input is read as results are consumed (ImapIterator): constructed with total
// kOpenEnded, its end is set by end_input_locked once the input has been read.
// kOpenEnded: the total of a call whose input length is not known when it starts (an
// imap, a pipeline stage).
constexpr std::uint64_t kOpenEnded = UINT64_MAX;
template <class R>
class StreamCall final : public CallBase {
 public:
  struct Slot {
    Stored<R> value{};
    std::exception_ptr error;
  };

  StreamCall(const TaskEntry& task, std::uint64_t total, bool ordered)
      : CallBase(task, total), ordered_(ordered), end_(total) {}

  bool accept_results(std::uint64_t start, std::uint32_t count, const char* data,
                      std::size_t size, bool has_errors, pid_t worker_pid) override {
    std::deque<Slot> slots(count);
    try {
      // An item that does not decode fails alone, as one that threw in its worker does.
      auto errors = read_results(data, size, count, has_errors,
                                 [&](std::uint32_t i, const msgpack::object& obj) {
                                   try {
                                     convert_result<R>(obj, slots[i].value, task());
                                   } catch (...) {
                                     slots[i].error = std::current_exception();
                                   }
                                 });
      for (const auto& e : errors) slots[e.item].error = make_remote_error(start, e, worker_pid);
    } catch (...) {  // the chunk itself did not decode
      auto error = std::current_exception();
      for (auto& s : slots) s.error = error;
    }
    return publish(start, std::move(slots));
  }
  bool accept_lost(const std::vector<std::uint64_t>& indices, pid_t worker_pid,
                   const std::string& reason, bool timed_out) override {
    auto error = make_lost_error(indices, worker_pid, reason, timed_out);
    // Lost indices arrive as whole chunks: publish each contiguous run as one chunk.
    bool done = false;
    std::size_t i = 0;
    while (i < indices.size()) {
      std::size_t j = i + 1;
      while (j < indices.size() && indices[j] == indices[j - 1] + 1) ++j;
      std::deque<Slot> slots(j - i);
      for (auto& s : slots) s.error = error;
      done = publish(indices[i], std::move(slots));
      i = j;
    }
    return done;
  }
  void accept_failure(std::exception_ptr error) override {
    std::lock_guard<std::mutex> lock(mu());
    if (!failure_) failure_ = error;
  }

  // Under mu(): the input ended after n items; error, if set, is what reading item n
  // raised: the iteration throws it after the n results. Returns whether every result
  // has arrived (the pool then no longer needs to route any to this call).
  bool end_input_locked(std::uint64_t n, std::exception_ptr error) {
    end_ = n;
    input_error_ = std::move(error);
    return received_ >= end_;
  }

  // Under mu(): whether next() can return without waiting.
  bool has_next_locked() const {
    if (consumed_ >= end_ || failure_) return true;
    if (ordered_) return !chunks_.empty() && chunks_.begin()->first == consumed_;
    return !ready_.empty();
  }
  // Under mu(), only when has_next_locked(): the next item, or nullopt at the end.
  std::optional<Slot> pop_locked() {
    if (consumed_ >= end_) {
      if (input_error_) std::rethrow_exception(std::exchange(input_error_, nullptr));
      return std::nullopt;
    }
    std::deque<Slot>* q = &ready_;
    if (ordered_) {
      if (chunks_.empty() || chunks_.begin()->first != consumed_) {
        std::rethrow_exception(failure_);
      }
      q = &chunks_.begin()->second;
    } else if (ready_.empty()) {
      std::rethrow_exception(failure_);
    }
    Slot s = std::move(q->front());
    q->pop_front();
    if (ordered_) {
      auto node = chunks_.extract(chunks_.begin());
      if (!q->empty()) {
        node.key() = consumed_ + 1;
        chunks_.insert(std::move(node));
      }
    }
    ++consumed_;
    return s;
  }

 private:
  bool publish(std::uint64_t start, std::deque<Slot> slots) {
    std::lock_guard<std::mutex> lock(mu());
    received_ += slots.size();
    if (ordered_) {
      chunks_.emplace(start, std::move(slots));
    } else {
      for (auto& s : slots) ready_.push_back(std::move(s));
    }
    return received_ >= end_;
  }

  const bool ordered_;
  // All guarded by mu().
  std::map<std::uint64_t, std::deque<Slot>> chunks_;  // ordered: chunk start -> items
  std::deque<Slot> ready_;                            // unordered: arrival order
  std::uint64_t received_ = 0;
  std::uint64_t consumed_ = 0;
  std::uint64_t end_;              // items in the input; kOpenEnded until it has ended
  std::exception_ptr input_error_;  // what ended the input early, thrown after the rest
  std::exception_ptr failure_;
};

// Whether std::size works on a Range (containers; not single-pass or generated ones).
template <class Range, class = void>
struct HasSize : std::false_type {};
template <class Range>
struct HasSize<Range, std::void_t<decltype(std::size(std::declval<const Range&>()))>> : std::true_type {};

// The input of an imap call, read chunk by chunk as results are consumed.
class StreamInput {
 public:
  virtual ~StreamInput() = default;
  // Packs up to max items into out as one chunk (a msgpack array); returns how many.
  // Fewer than max: the input ended, or reading or encoding the next item threw (error
  // is then set; the items before it are in out).
  virtual std::uint32_t read(Buffer& out, std::uint32_t max, std::exception_ptr& error) = 0;
  // How many items the input holds, when it can tell without reading them.
  virtual std::optional<std::uint64_t> known_size() const = 0;
};

// Range: the caller's range by reference (an lvalue: it must outlive the iteration) or
// an owned one (an rvalue, moved in). Works with single-pass input iterators.
template <class Codec, class Range>
class RangeInput final : public StreamInput {
 public:
  explicit RangeInput(Range&& range) : range_(std::forward<Range>(range)) {}
  std::uint32_t read(Buffer& out, std::uint32_t max, std::exception_ptr& error) override {
    const std::size_t header = out.size();
    const char array32[5] = {static_cast<char>(0xdd), 0, 0, 0, 0};  // count patched below
    out.write(array32, sizeof array32);
    msgpack::packer<Buffer> pk(out);
    std::uint32_t count = 0;
    std::size_t item_begins = out.size();
    try {
      if (!it_) it_.emplace(std::begin(range_));
      while (count < max && *it_ != std::end(range_)) {
        item_begins = out.size();
        Codec::pack_item(pk, **it_);
        ++count;
        item_begins = out.size();
        ++*it_;
      }
    } catch (...) {
      out.truncate(item_begins);
      error = std::current_exception();
    }
    char* p = out.data() + header + 1;
    for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((count >> (24 - 8 * i)) & 0xff);
    return count;
  }

  std::optional<std::uint64_t> known_size() const override {
    if constexpr (HasSize<std::remove_reference_t<Range>>::value) {
      return static_cast<std::uint64_t>(std::size(range_));
    } else {
      return std::nullopt;
    }
  }

 private:
  Range range_;
  std::optional<decltype(std::begin(std::declval<std::remove_reference_t<Range>&>()))> it_;
};

}  // namespace detail
}  // namespace mpx

#endif  // MPX_DETAIL_CALL_H_
