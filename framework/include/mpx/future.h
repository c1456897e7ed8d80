// mpx/future.h — the one future type of mpx: what Pool::apply_async / map_async /
// starmap_async and Actor<T>::call return, and Python's concurrent.futures.wait and
// as_completed over any mix of them.
//
//   mpx::Future<int> f = pool.apply_async(square, 7);    // mpx::AsyncResult<int> is an alias
//   f.then([](int v) { use(v); }, [](std::exception_ptr e) { report(e); });
//   std::vector<mpx::Future<int>> fs = {pool.apply_async(square, 2), counter.call(&Counter::add, 1)};
//   mpx::WaitResult<int> w = mpx::wait(fs, mpx::FIRST_COMPLETED, std::chrono::seconds(1));
//   for (mpx::Future<int>& g : mpx::as_completed(fs)) use(g.get());
//   int v = std::move(f).get();                         // moves the result out
//
// A Future is a copyable handle: every copy sees the same call. Thread-safe: any thread
// may wait on, cancel or add callbacks to any copy. A Future keeps what it needs of its
// pool or actor connection alive; once the pool stops, pending futures fail with
// mpx::PoolBroken.
//
// Callbacks (add_done_callback, then) run once each. mpx has no background thread: a
// pool's or actor's answers are collected by a thread of yours waiting on it (in get,
// wait, mpx::wait, as_completed, map, join, ...), and the callbacks of the futures they
// finish run in a thread waiting on that same pool or actor, once the answers in hand
// are handed out; a cancelled future's run in the thread calling cancel(), a finished
// future's at once in the thread adding them; a stopped pool's in the thread stopping
// it. So a program that adds callbacks waits for something of that pool or actor
// (pool.join(), mpx::wait(fs), ...) for them to run, as Python's own map_async callbacks
// need the pool alive. They run with no mpx lock held and not as the thread collecting
// answers: they may use the pool, the actor and futures, even wait on them. A callback
// that throws has its exception logged (mpx::logger()); the others still run.
#ifndef MPX_FUTURE_H_
#define MPX_FUTURE_H_

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpx/detail/deadline.h"
#include "mpx/detail/next_iterator.h"
#include "mpx/errors.h"
#include "mpx/runtime.h"

namespace mpx {
namespace detail {

// The callbacks of one call. Thread-safe (its own mutex, never held while a callback
// runs).
class Completion {
 public:
  // fn runs once, when fire() is called; at once, in this thread, if it was already.
  void add(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!fired_) {
        fns_.push_back(std::move(fn));
        return;
      }
    }
    run(fn);
  }
  // The call is complete and its outcome published, and no callback waits: marks it
  // fired (true; callbacks added later run at once). false when callbacks wait: fire()
  // must run them. Cheap, runs none: callable under a lock.
  bool settle() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!fns_.empty()) return false;
    fired_ = true;
    return true;
  }
  // The call is complete and its outcome published: runs the callbacks added so far.
  // Called by the completing thread with no mpx lock held; later calls do nothing.
  void fire() {
    std::vector<std::function<void()>> fns;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (fired_) return;
      fired_ = true;
      fns.swap(fns_);
    }
    for (auto& fn : fns) run(fn);
  }

 private:
  static void run(const std::function<void()>& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      logger().error("a future's callback threw {}; it was dropped", e.what());
    } catch (...) {
      logger().error("a future's callback threw a non-std exception; it was dropped");
    }
  }

  std::mutex mu_;
  bool fired_ = false;                       // guarded by mu_
  std::vector<std::function<void()>> fns_;   // guarded by mu_; cleared when fired
};

// What a Future sees of its call, whatever runs it (a pool: mpx/detail/call.h; an
// actor: mpx/actor.h). "The source" is the pool or actor connection whose answers
// complete the call; its lock is the one the *_locked members need.
class FutureBase {
 public:
  virtual ~FutureBase() = default;
  // Waits, collecting the source's answers, until done or the deadline; returns done.
  virtual bool wait_until(Clock::time_point deadline) = 0;
  // Waits like wait_until, until pred() holds; pred is evaluated under the source's
  // lock and may look at any call of the same source (their *_locked members).
  virtual bool wait_source(const std::function<bool()>& pred, Clock::time_point deadline) = 0;
  // Under the source's lock.
  virtual bool done_locked() = 0;
  virtual bool failed_locked() = 0;  // done with an error (or cancelled)
  // Identifies the source: futures with the same one can be waited for together.
  virtual const void* source() const = 0;
  // Source lock not held. cancel: true when the call was not finished and now is,
  // failing with CancelledError.
  virtual bool cancel() = 0;
  virtual bool cancelled() = 0;
  // Once done: the call's error, null when it succeeded.
  virtual std::exception_ptr error() = 0;
  virtual Completion& completion() = 0;
};

template <class T>
class FutureState : public FutureBase {
 public:
  // Once done: the result (a copy), or throws the call's error.
  virtual T value() = 0;
  // The same, moving the result out.
  virtual T take() = 0;
};

}  // namespace detail

// When mpx::wait returns (Python's concurrent.futures constants).
enum class ReturnWhen { kFirstCompleted, kFirstException, kAllCompleted };
inline constexpr ReturnWhen FIRST_COMPLETED = ReturnWhen::kFirstCompleted;
inline constexpr ReturnWhen FIRST_EXCEPTION = ReturnWhen::kFirstException;
inline constexpr ReturnWhen ALL_COMPLETED = ReturnWhen::kAllCompleted;

template <class T>
class Future {
 public:
  // An empty future (valid() false); every other member needs a valid one.
  Future() = default;
  bool valid() const { return state_ != nullptr; }

  // Waits for the result and returns it (a copy: the future keeps it, get() may be
  // called again), or throws what the call raised: RemoteError (the task or method
  // threw), WorkerLost, ActorDied, TimeoutError (a task_timeout, an actor call's own
  // timeout), PoolBroken, CancelledError, DecodeError.
  T get() const& {
    wait();
    return state_->value();
  }
  // std::move(f).get(): the same, moving the result out of the call (no copy). Every
  // copy of f shares the call: they see a moved-from result afterwards.
  T get() && {
    wait();
    return state_->take();
  }
  // Like get(), but throws mpx::TimeoutError when the result is not there in time.
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) const& {
    if (!wait_for(timeout)) throw TimeoutError("Future::get: the result was not ready in time");
    return state_->value();
  }
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) && {
    if (!wait_for(timeout)) throw TimeoutError("Future::get: the result was not ready in time");
    return state_->take();
  }
  void wait() const { state_->wait_until(detail::Clock::time_point::max()); }
  // Whether the call finished (successfully or not) within timeout.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return state_->wait_until(detail::deadline_after(timeout));
  }
  // Non-blocking: whether the call finished (succeeded, failed or was cancelled).
  bool ready() const { return state_->wait_until(detail::Clock::now()); }
  bool done() const { return ready(); }
  // Only once ready(): whether get() will return rather than throw. Throws mpx::Error
  // before (Python's AsyncResult.successful).
  bool successful() const {
    if (!ready()) throw Error("Future::successful: the result is not ready");
    return state_->error() == nullptr;
  }
  // Waits for the call; returns its error, null when it succeeded (a cancelled call's
  // is a CancelledError).
  std::exception_ptr exception() const {
    wait();
    return state_->error();
  }

  // Cancels the call unless it finished: true then, and get() throws CancelledError.
  // A pool task that has not started is dropped and never runs (also when it waits
  // in a worker's queue already); one that runs is stopped by killing its worker (which
  // is replaced; what else that worker held runs elsewhere). An actor call is only
  // cancelled for its caller: the actor still runs it if the message reached it, and
  // its answer is dropped. false once the call finished.
  bool cancel() const { return state_->cancel(); }
  bool cancelled() const { return state_->cancelled(); }

  // Runs fn(*this-like future) once the call finishes (see the top of this file for
  // the thread); at once if it has. fn may take `const Future<T>&`.
  template <class F>
  void add_done_callback(F&& fn) const {
    static_assert(std::is_invocable_v<F&, const Future<T>&>,
                  "Future::add_done_callback: the callback must take a const mpx::Future<T>&");
    Future self = *this;
    // The closure holds a copy of this future until it has run: the call's callbacks
    // are cleared when they fire, which breaks that cycle.
    state_->completion().add(
        [self, f = std::forward<F>(fn)]() mutable { f(static_cast<const Future&>(self)); });
  }
  // Python's callback / error_callback: on_value(result) after a success (on_value()
  // for Future<void>), on_error(std::exception_ptr) after a failure. Returns *this.
  template <class OnValue, class OnError>
  Future then(OnValue on_value, OnError on_error) const {
    add_done_callback([on_value = std::move(on_value), on_error = std::move(on_error)](
                          const Future& f) mutable {
      if (std::exception_ptr e = f.state_->error()) {
        on_error(e);
      } else if constexpr (std::is_void_v<T>) {
        on_value();
      } else {
        on_value(f.state_->value());
      }
    });
    return *this;
  }
  // Without an error callback, a failure is logged.
  template <class OnValue>
  Future then(OnValue on_value) const {
    return then(std::move(on_value), [](std::exception_ptr e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        logger().warn("a future with a then() callback and no error callback failed: {}", ex.what());
      }
    });
  }

  // For implementations (Pool, Actor): a future over state, keeping keep alive.
  Future(std::shared_ptr<void> keep, std::shared_ptr<detail::FutureState<T>> state)
      : keep_(std::move(keep)), state_(std::move(state)) {}
  detail::FutureState<T>& state() const { return *state_; }

 private:
  std::shared_ptr<void> keep_;  // what the state's source needs alive (a pool's core)
  std::shared_ptr<detail::FutureState<T>> state_;
};

// mpx::wait's answer: the futures that finished and those that did not, each in the
// order they were given.
template <class T>
struct WaitResult {
  std::vector<Future<T>> done;
  std::vector<Future<T>> not_done;
};

namespace detail {

template <class T>
void require_valid(const std::vector<Future<T>>& fs, const char* what) {
  for (std::size_t i = 0; i < fs.size(); ++i) {
    if (!fs[i].valid()) {
      throw Error(std::string(what) + ": futures[" + std::to_string(i) +
                  "] is an empty Future (default-constructed); pass futures that a pool or actor "
                  "returned");
    }
  }
}

// Waits until `when` holds for fs or the deadline. Futures of one source are waited for
// together with one predicate; with several sources (pools, actors) and
// FIRST_COMPLETED/FIRST_EXCEPTION, each is waited on in turn for a slice (1 ms growing
// to 20 ms), so an answer from another source is seen within a slice.
template <class T>
void wait_all_until(const std::vector<Future<T>>& fs, ReturnWhen when, Clock::time_point deadline) {
  std::vector<std::vector<FutureBase*>> groups;
  std::vector<const void*> sources;
  for (const auto& f : fs) {
    FutureBase* s = &f.state();
    auto it = std::find(sources.begin(), sources.end(), s->source());
    if (it == sources.end()) {
      sources.push_back(s->source());
      groups.emplace_back();
      it = sources.end() - 1;
    }
    groups[static_cast<std::size_t>(it - sources.begin())].push_back(s);
  }
  // Under a group's source lock: its part of the condition.
  auto all_done = [](const std::vector<FutureBase*>& g) {
    return std::all_of(g.begin(), g.end(), [](FutureBase* s) { return s->done_locked(); });
  };
  auto any_done = [](const std::vector<FutureBase*>& g) {
    return std::any_of(g.begin(), g.end(), [](FutureBase* s) { return s->done_locked(); });
  };
  auto any_failed = [](const std::vector<FutureBase*>& g) {
    return std::any_of(g.begin(), g.end(), [](FutureBase* s) { return s->failed_locked(); });
  };
  if (when == ReturnWhen::kAllCompleted || groups.size() == 1) {
    // Every group must finish for ALL_COMPLETED: waiting for them one after another
    // costs nothing. One group: one wait with the whole condition.
    for (const auto& g : groups) {
      bool stop = false;
      const bool ok = g.front()->wait_source(
          [&] {
            if (when == ReturnWhen::kFirstCompleted) return stop = any_done(g);
            if (when == ReturnWhen::kFirstException && any_failed(g)) return stop = true;
            return all_done(g);
          },
          deadline);
      if (!ok || stop) return;
    }
    return;
  }
  auto slice = std::chrono::milliseconds(1);
  for (;;) {
    bool all = true;
    for (const auto& g : groups) {
      const auto until = std::min(deadline, Clock::now() + slice);
      bool hit = false, finished = false;
      g.front()->wait_source(
          [&] {
            finished = all_done(g);
            hit = when == ReturnWhen::kFirstCompleted ? any_done(g) : any_failed(g);
            return hit || finished;
          },
          until);
      if (hit) return;
      all = all && finished;
    }
    if (all || Clock::now() >= deadline) return;
    slice = std::min(slice * 2, std::chrono::milliseconds(20));
  }
}

template <class T>
WaitResult<T> wait_until(const std::vector<Future<T>>& fs, ReturnWhen when, Clock::time_point deadline) {
  require_valid(fs, "mpx::wait");
  WaitResult<T> out;
  if (fs.empty()) return out;
  wait_all_until(fs, when, deadline);
  for (const auto& f : fs) (f.ready() ? out.done : out.not_done).push_back(f);
  return out;
}

}  // namespace detail

// Python's concurrent.futures.wait: waits until `when` holds (ALL_COMPLETED: every
// future finished; FIRST_COMPLETED: one did; FIRST_EXCEPTION: one failed, or all
// finished) or the timeout passes, and splits fs into done and not_done. Never throws
// for a timeout: not_done then holds what is left. Futures of pools and actors may be
// mixed. An empty fs returns at once; an empty Future in it throws mpx::Error.
template <class T>
WaitResult<T> wait(const std::vector<Future<T>>& fs, ReturnWhen when = ALL_COMPLETED) {
  return detail::wait_until(fs, when, detail::Clock::time_point::max());
}
template <class T, class Rep, class Period>
WaitResult<T> wait(const std::vector<Future<T>>& fs, ReturnWhen when,
                   std::chrono::duration<Rep, Period> timeout) {
  return detail::wait_until(fs, when, detail::deadline_after(timeout));
}

// Python's concurrent.futures.as_completed: the futures, each once, in the order they
// finish (those already finished first). Iterate it from one thread. With a timeout,
// the iteration throws mpx::TimeoutError once it passes with futures left.
template <class T>
class AsCompleted {
 public:
  AsCompleted(std::vector<Future<T>> fs, detail::Clock::time_point deadline)
      : pending_(std::move(fs)), deadline_(deadline) {
    detail::require_valid(pending_, "mpx::as_completed");
  }
  // The next finished future, or nullopt after the last.
  std::optional<Future<T>> next() {
    if (ready_.empty()) {
      if (pending_.empty()) return std::nullopt;
      auto w = detail::wait_until(pending_, FIRST_COMPLETED, deadline_);
      if (w.done.empty()) {
        throw TimeoutError("mpx::as_completed: " + std::to_string(pending_.size()) +
                           " future(s) not finished within the timeout");
      }
      pending_ = std::move(w.not_done);
      ready_ = std::move(w.done);
      std::reverse(ready_.begin(), ready_.end());
    }
    Future<T> f = std::move(ready_.back());
    ready_.pop_back();
    return f;
  }

  using iterator = detail::NextIterator<AsCompleted, Future<T>>;
  iterator begin() { return iterator(this); }
  iterator end() { return iterator(); }

 private:
  std::vector<Future<T>> pending_;
  std::vector<Future<T>> ready_;  // finished, not handed out yet (next one at the back)
  detail::Clock::time_point deadline_;
};

template <class T>
AsCompleted<T> as_completed(std::vector<Future<T>> fs) {
  return AsCompleted<T>(std::move(fs), detail::Clock::time_point::max());
}
template <class T, class Rep, class Period>
AsCompleted<T> as_completed(std::vector<Future<T>> fs, std::chrono::duration<Rep, Period> timeout) {
  return AsCompleted<T>(std::move(fs), detail::deadline_after(timeout));
}

}  // namespace mpx

#endif  // MPX_FUTURE_H_
