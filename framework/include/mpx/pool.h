// mpx/pool.h — a pool of worker processes with Python's multiprocessing.Pool API.
//
//   int square(int x) { return x * x; }
//   MPX_TASK(square);
//
//   mpx::Pool pool(4);                                   // or mpx::Pool pool; (cpu_count())
//   std::vector<int> sq = pool.map(square, std::vector<int>{1, 2, 3});
//   mpx::Future<int> r = pool.apply_async(square, 7);     // mpx/future.h
//   for (int v : pool.imap_unordered(square, xs)) use(v);
//
// Architecture: the pool spawns a router process, which spawns the workers (fresh
// processes of this same program) and hands them chunks of work over unix streams. A worker
// that dies is replaced; the tasks it held fail with mpx::WorkerLost. If the driver
// dies, the router and its workers exit on their own.
//
// Thread safety: a Pool may be used from several threads at once. Results, handles and
// iterators may outlive the Pool object; once the pool shuts down their pending work
// fails with mpx::PoolBroken.
#ifndef MPX_POOL_H_
#define MPX_POOL_H_

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpx/detail/call.h"
#include "mpx/detail/codec.h"
#include "mpx/detail/next_iterator.h"
#include "mpx/errors.h"
#include "mpx/future.h"
#include "mpx/progress.h"
#include "mpx/task.h"

namespace mpx {

// Pool settings, builder style: mpx::PoolOptions().processes(2).maxtasksperchild(100).
class PoolOptions {
 public:
  // Number of worker processes; 0 (default) means cpu_count(), but with listen() an
  // explicit processes(0) means no local workers at all.
  PoolOptions& processes(int n) {
    processes_ = n;
    processes_set_ = true;
    return *this;
  }
  // Many machines: node agents on other hosts (the same program, started with
  // --mpx-node=<endpoint> --mpx-key=<key file>) dial this ZeroMQ endpoint and run
  // workers for the pool: "tcp://0.0.0.0:5555" (port 0: any free one; see
  // Pool::endpoint()) or "ipc:///path". Only a pool that listens loads libzmq. Calls
  // whose arguments carry shared-memory handles (Value, Lock, Queue, ...) fail on a
  // remote worker with mpx::RemoteError naming the handle: share those with local
  // workers only.
  PoolOptions& listen(std::string endpoint) {
    listen_ = std::move(endpoint);
    return *this;
  }
  // The cluster key file (CURVE keys: who may join), created 0600 if missing (with
  // its missing directories, 0700); copy it to the agents' hosts. Required with
  // listen(). A key the pool cannot use (others may read it) fails the Pool with
  // PoolBroken saying why, as does an endpoint it cannot listen on.
  PoolOptions& cluster_key(std::string path) {
    cluster_key_ = std::move(path);
    return *this;
  }
  // A host whose agent is silent this long (killed, stopped, cut off) is lost, all its
  // workers at once (their chunks retried or failed as for a dead worker); agents exit
  // after the same silence from the pool. Default 3 s.
  PoolOptions& host_timeout(std::chrono::milliseconds timeout) {
    host_timeout_ = timeout;
    return *this;
  }
  const std::string& listen() const { return listen_; }
  const std::string& cluster_key() const { return cluster_key_; }
  std::chrono::milliseconds host_timeout() const { return host_timeout_; }
  bool processes_set() const { return processes_set_; }
  // A worker is replaced by a fresh one after running this many chunks (Python counts
  // chunks as tasks too); 0 (default) means never.
  PoolOptions& maxtasksperchild(std::size_t n) {
    maxtasksperchild_ = n;
    return *this;
  }
  // Registered function every worker runs once before its first task. If it throws, the
  // pool is broken and every pending and later call fails with mpx::PoolBroken.
  template <class R, class... Params, class... Args>
  PoolOptions& initializer(R (*fn)(Params...), Args&&... args) {
    const detail::TaskEntry& task = detail::require_task(fn, "PoolOptions::initializer");
    initializer_ = task.name;
    detail::Buffer buf;
    initializer_pins_.clear();
    // By value, whatever scope the caller is in: these bytes outlive any chunk.
    detail::ObjectSink by_value;
    {
      detail::PinScope scope(initializer_pins_);
      detail::ObjectScope object_scope(by_value);
      msgpack::packer<detail::Buffer> pk(buf);
      detail::ArgCodec<Params...>::pack_call(pk, std::forward<Args>(args)...);
    }
    initializer_args_.assign(buf.data(), buf.size());
    return *this;
  }
  // Worker chunks a worker may hold at once (its credit), so it never idles while the
  // router forwards; default 2. Chunks held behind one that has run for 10 ms are taken
  // back when another worker idles, and run there: a short task does not wait for a
  // long one while a worker is free, as with Python's Pool (not for workers on other
  // hosts, whose chunks wait for them).
  PoolOptions& prefetch(int n) {
    prefetch_ = n;
    return *this;
  }

  // An idle worker that does not answer pings for this long is presumed hung, killed
  // and replaced; default 10 s. Idle workers are pinged every second, or four times per
  // timeout when it is shorter than 4 s. Workers busy with a task or their initializer
  // are not pinged.
  PoolOptions& heartbeat_timeout(std::chrono::milliseconds timeout) {
    heartbeat_timeout_ = timeout;
    return *this;
  }

  // A chunk whose worker dies (crash, kill, exit, timeout) is run again, up to n times,
  // before its items fail with WorkerLost (or TimeoutError). Retried tasks run at least
  // once instead of at most once. By default tasks registered with MPX_PURE_TASK get 3
  // retries and MPX_TASK ones none (Python's Pool has no retries); setting n applies it
  // to every task. Each retry can cost a worker if the task itself crashes.
  PoolOptions& max_retries(int n) {
    max_retries_ = n;
    max_retries_set_ = true;
    return *this;
  }

  // A chunk of k items still running after k * timeout (chunksize 1 for an exact
  // per-task limit) is timed out: its worker is killed and replaced, and its items
  // fail with mpx::TimeoutError, or run again if retries allow. Default: none. Here and
  // in the other timeouts, anything from 100 years on (milliseconds::max()) means never.
  PoolOptions& task_timeout(std::chrono::milliseconds timeout) {
    task_timeout_ = timeout;
    return *this;
  }

  int processes() const { return processes_; }
  // Largest message (a chunk of arguments, a chunk of results) the pool carries;
  // default and most 1 GiB (a larger value makes the Pool constructor throw). A call whose chunk is larger throws mpx::Error before anything is
  // sent; a result chunk larger fails its items; a peer that sends the router a larger
  // frame is disconnected.
  PoolOptions& max_message_bytes(std::size_t n) {
    max_message_bytes_ = n;
    return *this;
  }
  // Address-space limit (RLIMIT_AS) of each worker, 0 (default) for none: a task that
  // allocates past it gets std::bad_alloc (the caller too), or, if it cannot cope, its
  // worker dies and is replaced.
  PoolOptions& worker_memory_limit(std::size_t bytes) {
    worker_memory_limit_ = bytes;
    return *this;
  }
  // Backpressure: bytes of argument chunks sent but not yet answered. A submission
  // that would exceed it waits (collecting results meanwhile) until enough come back,
  // so a driver submitting faster than the workers drain holds still instead of
  // queueing everything in the router. Default 256 MiB; a single larger chunk still
  // goes when nothing else is in flight.
  PoolOptions& max_inflight_bytes(std::size_t n) {
    max_inflight_bytes_ = n;
    return *this;
  }
  std::size_t max_inflight_bytes() const { return max_inflight_bytes_; }
  // Large arguments and results as objects: an argument of at least n bytes that is a
  // std::vector, std::array or std::string of numbers (or other trivially copyable
  // elements), or an mpx::Span, is written once into a read-only object (mpx/object.h)
  // and the router forwards its ~40-byte handle instead of the bytes; the worker builds
  // the parameter from the mapping (a Span parameter views it without copying). The
  // object lives until its chunk is answered and counts in max_inflight_bytes; one the
  // task copies out (not a Span) goes into an argument buffer reused from then on
  // (Segment::lend_buffer in mpx/detail/segment.h). A task's
  // result of those types and sizes comes back the same way: the worker sends the
  // object's memfd with the result, and this process owns it from then on. 0: every
  // argument and result by value. Default 1 MiB (MPX_OBJECT_THRESHOLD in the
  // environment changes it for every Pool, Process and actor call). Not with listen():
  // remote workers cannot map this host's memory, so a listening pool sends everything
  // by value.
  PoolOptions& object_threshold(std::size_t n) {
    object_threshold_ = n;
    return *this;
  }
  std::size_t object_threshold() const {
    return object_threshold_ ? *object_threshold_ : detail::default_object_threshold();
  }
  bool object_threshold_set() const { return object_threshold_.has_value(); }
  // Serves Prometheus metrics of this pool at http://<address>/metrics ("127.0.0.1:9464",
  // "0.0.0.0:9464" for other hosts; a bare "9464" is every interface too, as in
  // civetweb) from the driver while the Pool lives: tasks
  // submitted/completed/lost, failed chunks, retries, worker deaths by cause, queue
  // depths, chunk latency, bytes, worker RSS. Needs //framework:metrics in the program's
  // deps (the Pool constructor says so otherwise) and throws mpx::Error if it cannot
  // listen there.
  PoolOptions& metrics(std::string address) {
    metrics_ = std::move(address);
    return *this;
  }
  const std::string& metrics() const { return metrics_; }
  std::size_t max_message_bytes() const { return max_message_bytes_; }
  std::size_t worker_memory_limit() const { return worker_memory_limit_; }

  int max_retries() const { return max_retries_; }
  // false: the default applies (kDefaultPureRetries for pure tasks, 0 for the others).
  bool max_retries_set() const { return max_retries_set_; }
  std::chrono::milliseconds task_timeout() const { return task_timeout_; }
  static constexpr int kDefaultPureRetries = 3;
  std::chrono::milliseconds heartbeat_timeout() const { return heartbeat_timeout_; }
  std::size_t maxtasksperchild() const { return maxtasksperchild_; }
  const std::string& initializer_name() const { return initializer_; }
  const std::string& initializer_args() const { return initializer_args_; }
  // Shared objects among the initializer's arguments; the pool keeps them.
  const detail::Pins& initializer_pins() const { return initializer_pins_; }
  int prefetch() const { return prefetch_; }

 private:
  int processes_ = 0;
  bool processes_set_ = false;
  std::string listen_;
  std::string cluster_key_;
  std::chrono::milliseconds host_timeout_{3000};
  std::size_t maxtasksperchild_ = 0;
  std::string initializer_;
  std::string initializer_args_;
  detail::Pins initializer_pins_;
  int prefetch_ = 2;
  std::chrono::milliseconds heartbeat_timeout_{10000};
  int max_retries_ = 0;
  bool max_retries_set_ = false;
  std::chrono::milliseconds task_timeout_{0};
  std::size_t max_message_bytes_ = std::size_t{1} << 30;
  std::size_t max_inflight_bytes_ = std::size_t{256} << 20;
  std::size_t worker_memory_limit_ = 0;
  std::optional<std::size_t> object_threshold_;
  std::string metrics_;
};

// The result of an asynchronous call (apply_async, map_async, starmap_async): an
// mpx::Future (mpx/future.h), under the name Python's multiprocessing gives it.
template <class T>
using AsyncResult = Future<T>;

// Results of imap / imap_unordered, consumed one at a time as they arrive. Single
// consumer: iterate it from one thread. A failed item throws from next() (or from the
// iterator's increment) at its position; iteration can continue past it.
//
// The input is read lazily, as in Python: next() reads and sends more of it while
// fewer than a read-ahead of chunks (two per worker) are unconsumed, so an endless or
// huge input streams. An input that throws while being read (or an item that cannot be
// encoded) ends it there: next() returns the results before it, then throws that
// error, then returns nullopt. An rvalue range is owned by the iterator; an lvalue
// one must outlive it. Destroying the iterator early drops the work not yet run.
// Pool::join() (after close()) reads the rest of the input first, as Python's does:
// the iteration then goes on over results that are all there.
template <class R>
class ImapIterator {
 public:
  ImapIterator(ImapIterator&&) noexcept = default;
  ImapIterator& operator=(ImapIterator&&) = delete;
  ~ImapIterator() {
    if (!feed_) return;  // moved from
    std::lock_guard<std::mutex> lock(feed_->mu);
    // Input not read to its end: the pool would wait for results nobody will take.
    if (feed_->input) {
      feed_->input.reset();
      detail::pool_abandon_call(*core_, *call_);
    }
  }
  // The next result, or nullopt after the last one. Throws the item's error.
  std::optional<detail::Stored<R>> next() { return next_until(detail::Clock::time_point::max()); }
  // Like next(), but throws mpx::TimeoutError if nothing arrives in time.
  template <class Rep, class Period>
  std::optional<detail::Stored<R>> next(std::chrono::duration<Rep, Period> timeout) {
    return next_until(detail::deadline_after(timeout));
  }
  // How many results the iteration yields: the input's size when it knows it (a
  // container), else the items read from it so far (all of them once it has ended).
  std::size_t size() const {
    if (!feed_) return 0;  // moved from
    std::lock_guard<std::mutex> lock(feed_->mu);
    return static_cast<std::size_t>(feed_->known_size.value_or(feed_->sent));
  }
  // Waits until next() would not block; false if nothing arrived in time. Reads ahead
  // first, as next() does.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) {
    read_ahead();
    auto* call = call_.get();
    return detail::pool_wait(*core_, [call] { return call->has_next_locked(); },
                             detail::deadline_after(timeout));
  }

  using iterator = detail::NextIterator<ImapIterator, detail::Stored<R>>;
  iterator begin() { return iterator(this); }
  iterator end() { return iterator(); }

 private:
  friend class Pool;
  // What reads the input: the consumer (next(), wait_for()), or join() once the pool is
  // closed (CallBase::feed_rest), one at a time.
  struct Feed {
    mutable std::mutex mu;  // guards everything below
    std::unique_ptr<detail::StreamInput> input;  // null once the input has ended
    std::optional<std::uint64_t> known_size;
    std::uint32_t chunksize = 1;
    std::uint64_t read_ahead = 1;  // items sent ahead of the consumer, at most
    std::uint64_t sent = 0;
    std::uint64_t consumed = 0;

    // Reads and sends chunks until read_ahead items are unconsumed (all: until the
    // input ends). Whatever goes wrong while reading or sending ends the input at that
    // item.
    void read(detail::PoolCore& core, detail::StreamCall<R>& call, bool all) {
      bool sent_any = false;
      while (input && (all || sent - consumed < read_ahead)) {
        // Room for the items this chunk can hold (the buffer grows past a guess): a
        // chunksize of SIZE_MAX over 100 items asked for 32 GiB.
        const std::uint64_t expected =
            std::min<std::uint64_t>(chunksize, known_size ? *known_size - std::min(*known_size, sent) : 4096);
        detail::Buffer buf(static_cast<std::size_t>(expected) * 8 + 16);
        std::exception_ptr error;
        std::uint32_t n = 0;
        try {
          detail::PinScope scope(call.pins());
          detail::Pins objects;
          std::vector<std::shared_ptr<detail::Segment>> lent;
          detail::ObjectSink sink{detail::pool_object_threshold(core), &objects};
          sink.lent = &lent;
          {
            detail::ObjectScope object_scope(sink);
            n = input->read(buf, chunksize, error);
          }
          if (n > 0) {
            detail::pool_send_chunk(core, call, sent, n, std::move(buf), std::move(objects), sink.bytes,
                                    std::move(lent));
          }
        } catch (...) {
          n = 0;  // not sent: the input ends before this chunk
          error = std::current_exception();
        }
        sent_any = sent_any || n > 0;
        sent += n;
        if (n < chunksize || error) {
          input.reset();
          bool complete;
          {
            std::lock_guard<std::mutex> lock(call.mu());
            complete = call.end_input_locked(sent, error);
          }
          if (complete) detail::pool_abandon_call(core, call);  // forgets it: all arrived
        }
      }
      if (sent_any) detail::pool_flush(core);
    }
  };

  // Begins the call (not begun yet: join() must find its feed_rest from the start).
  ImapIterator(std::shared_ptr<detail::PoolCore> core, std::shared_ptr<detail::StreamCall<R>> call,
               std::unique_ptr<detail::StreamInput> input, std::size_t chunksize)
      : core_(std::move(core)), call_(std::move(call)), feed_(std::make_shared<Feed>()) {
    feed_->known_size = input->known_size();
    feed_->input = std::move(input);
    feed_->chunksize = static_cast<std::uint32_t>(std::min<std::size_t>(chunksize, UINT32_MAX));
    feed_->read_ahead = std::uint64_t{feed_->chunksize} * 2 *
                        static_cast<std::uint64_t>(std::max(1, detail::pool_processes(*core_)));
    // As Python's task handler reads the whole input in the background, join() reads
    // what the consumer has not read ahead yet, or it would wait for ever.
    call_->set_feed_rest([feed = std::weak_ptr<Feed>(feed_), weak_call = std::weak_ptr<detail::StreamCall<R>>(call_),
                          core = core_.get()] {
      auto f = feed.lock();
      auto c = weak_call.lock();
      if (!f || !c) return;
      std::lock_guard<std::mutex> lock(f->mu);
      f->read(*core, *c, /*all=*/true);
    });
    detail::pool_begin_call(*core_, call_);
    read_ahead();
  }
  void read_ahead() {
    std::lock_guard<std::mutex> lock(feed_->mu);
    feed_->read(*core_, *call_, /*all=*/false);
  }
  std::optional<detail::Stored<R>> next_until(detail::Clock::time_point deadline) {
    read_ahead();
    auto* call = call_.get();
    if (!detail::pool_wait(*core_, [call] { return call->has_next_locked(); }, deadline)) {
      throw TimeoutError("imap: no result arrived in time");
    }
    std::optional<typename detail::StreamCall<R>::Slot> slot;
    {
      std::lock_guard<std::mutex> lock(call_->mu());
      slot = call_->pop_locked();
    }
    if (!slot) return std::nullopt;
    {
      std::lock_guard<std::mutex> lock(feed_->mu);
      ++feed_->consumed;
    }
    if (slot->error) std::rethrow_exception(slot->error);
    return std::move(slot->value);
  }

  std::shared_ptr<detail::PoolCore> core_;
  std::shared_ptr<detail::StreamCall<R>> call_;
  std::shared_ptr<Feed> feed_;
};

class Pool {
 public:
  // A pool of cpu_count() workers.
  Pool();
  // A pool of `processes` workers (Python's Pool(4)).
  explicit Pool(int processes);
  explicit Pool(const PoolOptions& options);
  // Stops the router and workers cleanly: queued work is dropped, running chunks are
  // allowed a short grace period, then everything is killed. Pending results fail with
  // PoolBroken. Never blocks for long.
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  Pool(Pool&&) noexcept;
  Pool& operator=(Pool&&) noexcept;

  // Applies fn to every item, in parallel, and returns the results in input order.
  // Throws the first error received (the task's exception, as in mpx/errors.h, WorkerLost
  // for a worker that died); the pool stays usable. chunksize 0 picks one as Python.
  template <class R, class P, class Range>
  auto map(R (*fn)(P), const Range& items, std::size_t chunksize = 0) {
    auto result = submit_gather<false, R, P>(fn, items, chunksize);
    if constexpr (std::is_void_v<R>) {
      std::move(result).get();
    } else {
      return std::move(result).get();
    }
  }
  // The same with per-call options: MapOptions().chunksize(n).progress("label") draws a
  // progress bar on stderr while it runs (mpx/progress.h). Throws the first error in
  // input order.
  template <class R, class P, class Range>
  auto map(R (*fn)(P), const Range& items, const MapOptions& options) {
    if (!options.progress()) return map(fn, items, options.chunksize());
    auto shown = progress(imap(fn, items, options.chunksize()), *options.progress());
    if constexpr (std::is_void_v<R>) {
      while (shown.next()) {
      }
    } else {
      std::vector<R> out;
      out.reserve(shown.source().size());
      while (auto v = shown.next()) out.push_back(std::move(*v));
      return out;
    }
  }
  template <class R, class P, class Range>
  AsyncResult<std::conditional_t<std::is_void_v<R>, void, std::vector<R>>> map_async(
      R (*fn)(P), const Range& items, std::size_t chunksize = 0) {
    return submit_gather<false, R, P>(fn, items, chunksize);
  }
  // Like map, for multi-argument functions: each item is a tuple of the arguments.
  template <class R, class... Params, class Range>
  auto starmap(R (*fn)(Params...), const Range& items, std::size_t chunksize = 0) {
    auto result = submit_gather<true, R, Params...>(fn, items, chunksize);
    if constexpr (std::is_void_v<R>) {
      std::move(result).get();
    } else {
      return std::move(result).get();
    }
  }
  template <class R, class... Params, class Range>
  AsyncResult<std::conditional_t<std::is_void_v<R>, void, std::vector<R>>> starmap_async(
      R (*fn)(Params...), const Range& items, std::size_t chunksize = 0) {
    return submit_gather<true, R, Params...>(fn, items, chunksize);
  }
  // Runs fn(args...) in a worker.
  template <class R, class... Params, class... Args>
  AsyncResult<R> apply_async(R (*fn)(Params...), Args&&... args) {
    static_assert(sizeof...(Params) == sizeof...(Args),
                  "apply_async: wrong number of arguments for this task");
    const detail::TaskEntry& task = lookup(fn, "apply_async");
    auto core = shared_core("apply_async");
    auto call = std::make_shared<detail::GatherCall<R, R>>(task, 1);
    std::array<std::tuple<detail::Bare<Params>...>, 1> one{
        std::tuple<detail::Bare<Params>...>(std::forward<Args>(args)...)};
    send_all<detail::ArgCodec<Params...>, true>(*core, call, one, 1, 1);
    return Future<R>(std::move(core), std::move(call));
  }
  template <class R, class... Params, class... Args>
  R apply(R (*fn)(Params...), Args&&... args) {
    return apply_async(fn, std::forward<Args>(args)...).get();
  }
  // Streams results in input order as they become available. chunksize 0 picks one as
  // map does (Python's imap defaults to 1: pass 1 for the lowest latency per item).
  // The input is read as results are consumed (see ImapIterator).
  template <class R, class P, class Range>
  ImapIterator<R> imap(R (*fn)(P), Range&& items, std::size_t chunksize = 0) {
    return submit_stream<R, P>(fn, std::forward<Range>(items), chunksize, true);
  }
  // Streams results in completion order.
  template <class R, class P, class Range>
  ImapIterator<R> imap_unordered(R (*fn)(P), Range&& items, std::size_t chunksize = 0) {
    return submit_stream<R, P>(fn, std::forward<Range>(items), chunksize, false);
  }
  // The same calls with a captureless lambda instead of a registered function:
  // pool.map([](int x) { return x * x; }, xs). See mpx/task.h.
  template <class F, class Range, class = detail::EnableIfClosure<F>>
  auto map(F, const Range& items, std::size_t chunksize = 0) {
    return map(detail::closure_task<F>(), items, chunksize);
  }
  template <class F, class Range, class = detail::EnableIfClosure<F>>
  auto map_async(F, const Range& items, std::size_t chunksize = 0) {
    return map_async(detail::closure_task<F>(), items, chunksize);
  }
  template <class F, class Range, class = detail::EnableIfClosure<F>>
  auto starmap(F, const Range& items, std::size_t chunksize = 0) {
    return starmap(detail::closure_task<F>(), items, chunksize);
  }
  template <class F, class Range, class = detail::EnableIfClosure<F>>
  auto starmap_async(F, const Range& items, std::size_t chunksize = 0) {
    return starmap_async(detail::closure_task<F>(), items, chunksize);
  }
  template <class F, class... Args, class = detail::EnableIfClosure<F>>
  auto apply_async(F, Args&&... args) {
    return apply_async(detail::closure_task<F>(), std::forward<Args>(args)...);
  }
  template <class F, class... Args, class = detail::EnableIfClosure<F>>
  auto apply(F, Args&&... args) {
    return apply(detail::closure_task<F>(), std::forward<Args>(args)...);
  }
  template <class F, class Range, class = detail::EnableIfClosure<F>>
  auto imap(F, Range&& items, std::size_t chunksize = 0) {
    return imap(detail::closure_task<F>(), std::forward<Range>(items), chunksize);
  }
  template <class F, class Range, class = detail::EnableIfClosure<F>>
  auto imap_unordered(F, Range&& items, std::size_t chunksize = 0) {
    return imap_unordered(detail::closure_task<F>(), std::forward<Range>(items), chunksize);
  }

  // No more submissions (they throw PoolBroken); running work continues.
  void close();
  // Waits for all submitted work and for the workers to exit. close() first, as in
  // Python (throws mpx::Error otherwise).
  void join();
  // Kills the workers and the router now; pending results fail with PoolBroken.
  void terminate();
  // Python's Executor.shutdown(wait=True, cancel_futures): no more submissions, then
  // waits for the submitted work and for the workers to exit (close() and join()).
  // cancel_futures: every pending future (apply_async, map_async, starmap_async; not
  // imap iterators) is cancelled first: its get() throws CancelledError, its tasks
  // that have not started never run, running ones finish and their results are dropped.
  // (Python cancels only futures not yet running; here a call's chunks may be spread
  // over several workers, and the whole call is cancelled.)
  void shutdown(bool cancel_futures = false);
  // Worker count (local ones).
  int processes() const;
  // Where node agents dial (a pool built with PoolOptions::listen), e.g.
  // "tcp://10.0.0.1:5555": the port chosen, a wildcard address replaced by the source
  // address of this host's default route, as Ray and Dask report (without a default
  // route, the first interface's; the router's log names the host's other addresses).
  // On a host whose agents reach it by another network, listen() on that address.
  // Throws mpx::Error for a pool that does not listen.
  std::string endpoint() const;
  // Waits until n workers (local and remote) serve; throws mpx::TimeoutError saying how
  // many do when timeout passes first.
  void wait_for_workers(int n, std::chrono::milliseconds timeout);
  // Pids of the router and of the live workers (for tests and monitoring).
  pid_t router_pid() const;

 private:
  template <class Fn>
  const detail::TaskEntry& lookup(Fn* fn, const char* what) const {
    core(what);
    return detail::require_task(fn, (std::string("Pool::") + what).c_str());
  }
  // The pool's core; throws PoolBroken for a moved-from Pool.
  detail::PoolCore& core(const char* what) const;
  // The same, shared: a submission holds it, so that a Pool destroyed by another
  // thread meanwhile (its stop fails the submission with PoolBroken) leaves the
  // submitting thread nothing dangling.
  std::shared_ptr<detail::PoolCore> shared_core(const char* what) const {
    core(what);
    return core_;
  }

  // Each chunk is encoded with an ObjectScope of its own (threshold: the pool's): its
  // large arguments become objects that the pool keeps until that chunk is answered.
  // result_width: the bytes of one result when results are numbers (raw), else 0.
  template <class Codec, bool kStar, class Range, class Send>
  static void encode_chunks(const Range& items, std::size_t n, std::size_t chunksize,
                            std::size_t object_threshold, std::size_t result_width, Send&& send) {
    auto it = std::begin(items);
    for (std::size_t start = 0; start < n; start += chunksize) {
      const std::size_t count = std::min(chunksize, n - start);
      detail::Buffer buf(count * 8 + 16);
      detail::Pins objects;
      std::vector<std::shared_ptr<detail::Segment>> lent;
      detail::ObjectSink sink{object_threshold, &objects};
      sink.lent = &lent;
      if constexpr (!kStar && Codec::kRawItems) {
        using P = typename Codec::Single;
        if (object_threshold == 0 || count * sizeof(P) < detail::kRawChunkBufferBytes ||
            !lend_raw_chunk<P>(items, it, start, count, result_width, buf, sink)) {
          encode_raw_chunk<P>(items, it, start, count, buf);
        }
      } else {
        detail::ObjectScope object_scope(sink);
        msgpack::packer<detail::Buffer> pk(buf);
        pk.pack_array(static_cast<std::uint32_t>(count));
        for (std::size_t i = 0; i < count; ++i, ++it) {
          if constexpr (kStar) {
            Codec::pack_star_item(pk, *it);
          } else {
            Codec::pack_item(pk, *it);
          }
        }
      }
      send(start, static_cast<std::uint32_t>(count), std::move(buf), sink);
    }
  }
  // A chunk of numbers as one raw block (detail/codec.h): one copy when the items are
  // already an array of the parameter type, else converted one by one.
  template <class P, class Range, class It>
  static void encode_raw_chunk(const Range& items, It& it, std::size_t start, std::size_t count,
                               detail::Buffer& buf) {
    const std::size_t at = detail::begin_raw_block(buf, detail::raw_code<P>(), count);
    copy_raw_items<P>(items, it, start, count, buf.data() + at);
  }
  // The same chunk in an argument buffer (mpx/detail/raw_chunk.h), with room for its
  // results after the items when they are numbers; the message names the buffer.
  // false, with nothing written or read, when no buffer can be had (no memfd left, no
  // memory to map one): the chunk then goes in the message.
  template <class P, class Range, class It>
  static bool lend_raw_chunk(const Range& items, It& it, std::size_t start, std::size_t count,
                             std::size_t result_width, detail::Buffer& buf, detail::ObjectSink& sink) {
    const std::size_t results_at = (count * sizeof(P) + 63) & ~std::size_t{63};
    const std::size_t total = results_at + count * result_width;
    std::shared_ptr<detail::Segment> use;
    bool filled = false;
    try {
      use = detail::Segment::lend_buffer(detail::untyped_tag(), total, total, [&](char* body) {
        filled = true;
        copy_raw_items<P>(items, it, start, count, body, /*to_buffer=*/true);
      });
    } catch (const SharedMemoryError&) {
      if (filled) throw;
      return false;
    }
    detail::pack_raw_chunk_ref(buf, use->ref(), detail::raw_code<P>(), 0, results_at,
                               count * result_width);
    sink.lent->push_back(std::move(use));
    sink.bytes += total;
    return true;
  }
  // count items from items[start] (it) as P, raw, at to; advances it past them. One copy
  // when the items are already an array of P, else converted one by one. to_buffer: to
  // is an argument buffer's body (Segment::copy_to_buffer).
  template <class P, class Range, class It>
  static void copy_raw_items(const Range& items, It& it, std::size_t start, std::size_t count,
                             char* to, bool to_buffer = false) {
    if constexpr (detail::kContiguousOf<Range, P>) {
      if (to_buffer) {
        detail::Segment::copy_to_buffer(to, std::data(items) + start, count * sizeof(P));
      } else {
        std::memcpy(to, std::data(items) + start, count * sizeof(P));
      }
      std::advance(it, count);
    } else {
      for (std::size_t i = 0; i < count; ++i, ++it) {
        const P v = static_cast<P>(*it);
        std::memcpy(to + i * sizeof(P), &v, sizeof(P));
      }
    }
  }

  // Registers call and sends all its chunks. If encoding throws part-way (an item
  // msgpack cannot pack, bad_alloc), the call is withdrawn so nothing waits for items
  // that were never sent, and the exception propagates.
  template <class Codec, bool kStar, class Range>
  static void send_all(detail::PoolCore& core, const std::shared_ptr<detail::CallBase>& call,
                       const Range& items, std::size_t n, std::size_t chunksize,
                       std::size_t result_width = 0) {
    detail::pool_begin_call(core, call);
    if (chunksize == 0) chunksize = detail::auto_chunksize(n, detail::pool_processes(core));
    // A chunk's item count travels as 32 bits.
    chunksize = std::min<std::size_t>(chunksize, UINT32_MAX);
    try {
      detail::PinScope scope(call->pins());
      encode_chunks<Codec, kStar>(items, n, chunksize, detail::pool_object_threshold(core), result_width,
                                  [&](std::uint64_t start, std::uint32_t count, detail::Buffer&& buf,
                                      detail::ObjectSink& objects) {
                                    detail::pool_send_chunk(core, *call, start, count, std::move(buf),
                                                            std::move(*objects.keep), objects.bytes,
                                                            std::move(*objects.lent));
                                  });
      detail::pool_flush(core);
    } catch (...) {
      detail::pool_flush(core);
      detail::pool_abandon_call(core, *call);
      throw;
    }
  }

  template <bool kStar, class R, class... Params, class Range>
  auto submit_gather(R (*fn)(Params...), const Range& items, std::size_t chunksize) {
    using T = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;
    using Codec = detail::ArgCodec<Params...>;
    const detail::TaskEntry& task = lookup(fn, kStar ? "starmap" : "map");
    auto core = shared_core(kStar ? "starmap" : "map");
    const auto n = static_cast<std::size_t>(std::distance(std::begin(items), std::end(items)));
    auto call = std::make_shared<detail::GatherCall<R, T>>(task, n);
    send_all<Codec, kStar>(*core, call, items, n, chunksize, detail::raw_width<R>());
    return Future<T>(std::move(core), std::move(call));
  }

  template <class R, class P, class Range>
  ImapIterator<R> submit_stream(R (*fn)(P), Range&& items, std::size_t chunksize, bool ordered) {
    using Codec = detail::ArgCodec<P>;
    const detail::TaskEntry& task =
        lookup(fn, ordered ? "imap" : "imap_unordered");
    auto core = shared_core(ordered ? "imap" : "imap_unordered");
    if (chunksize == 0) {
      // Python's automatic size needs the length; a lazy input without one gets 1.
      if constexpr (detail::is_sized<std::remove_reference_t<Range>>::value) {
        chunksize = detail::auto_chunksize(std::size(items), detail::pool_processes(*core));
      } else {
        chunksize = 1;
      }
    }
    auto input = std::make_unique<detail::RangeInput<Codec, Range>>(std::forward<Range>(items));
    auto call = std::make_shared<detail::StreamCall<R>>(task, detail::kOpenEnded, ordered);
    return ImapIterator<R>(std::move(core), call, std::move(input), chunksize);
  }

  std::shared_ptr<detail::PoolCore> core_;
  std::shared_ptr<void> metrics_;  // the metrics server, if asked for; stops before core_ goes
};

}  // namespace mpx

#endif  // MPX_POOL_H_
