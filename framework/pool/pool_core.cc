#include "framework/pool/pool_core.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "framework/base/base.h"
#include "framework/router/router.h"
#include "mpx/runtime.h"

namespace mpx {
namespace detail {
namespace {

std::string random_token() {
  static const char kAlphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::random_device rd;
  std::string t(10, '0');
  for (char& c : t) c = kAlphabet[rd() % 36];
  return t;
}

}  // namespace

PoolCore::PoolCore(const PoolOptions& options)
    : processes_(options.processes() > 0 ? options.processes() : cpu_count()),
      token_(random_token()),
      initializer_pins_(options.initializer_pins()) {
  base::require_init("mpx::Pool");
  if (options.processes() < 0) throw Error("Pool: processes must be at least 1 (or 0 for cpu_count())");
  if (options.prefetch() < 1) throw Error("Pool: prefetch must be at least 1");
  router::Config config;
  config.front_endpoint = transport::make_endpoint("front");
  config.back_endpoint = transport::make_endpoint("back");
  config.workers = processes_;
  config.maxtasksperchild = options.maxtasksperchild();
  config.prefetch = options.prefetch();
  config.initializer = options.initializer_name();
  config.initializer_args = options.initializer_args();
  config.heartbeat_timeout = options.heartbeat_timeout();
  if (options.max_retries() < 0) throw Error("Pool: max_retries must be >= 0");
  config.max_retries = options.max_retries();
  config.pure_retries =
      options.max_retries_set() ? options.max_retries() : PoolOptions::kDefaultPureRetries;
  config.task_timeout = options.task_timeout();
  config.max_message_bytes = options.max_message_bytes();
  config.worker_memory_limit = options.worker_memory_limit();
  max_message_bytes_ = options.max_message_bytes();
  max_inflight_bytes_ = options.max_inflight_bytes();
  if (config.task_timeout.count() < 0) throw Error("Pool: task_timeout must be >= 0");
  // Frames carry 32-bit lengths and every reader refuses payloads over kMaxPayload.
  if (config.max_message_bytes == 0 || config.max_message_bytes > transport::kMaxPayload) {
    throw Error("Pool: max_message_bytes must be between 1 and " +
                std::to_string(transport::kMaxPayload) + " (1 GiB), got " +
                std::to_string(config.max_message_bytes));
  }
  if (config.heartbeat_timeout.count() <= 0) throw Error("Pool: heartbeat_timeout must be positive");

  // The router says on this pipe when it has bound its sockets: connecting earlier
  // would fail.
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    throw PoolBroken(std::string("Pool: eventfd: ") + std::strerror(errno) +
                     spawning::descriptor_advice(errno));
  }
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) {
    const int err = errno;
    ::close(wake_fd_);
    throw PoolBroken(std::string("Pool: pipe2: ") + std::strerror(err) +
                     spawning::descriptor_advice(err));
  }
  spawning::Spec spec;
  spec.role = Role::kRouter;
  spec.name = "Router";
  spec.bootstrap = config.encode();
  spec.ready_fd = ready[1];
  try {
    router_ = spawning::spawn_self(spec);
  } catch (...) {
    ::close(ready[0]);
    ::close(ready[1]);
    ::close(wake_fd_);
    throw;
  }
  ::close(ready[1]);
  router_pid_ = router_.pid;
  // From here on a failure must not leave the router (and so its workers) running:
  // the destructor does not run for a constructor that throws.
  try {
    wait_for_router_ready(ready[0]);
    ::close(ready[0]);
    ready[0] = -1;
    connect_and_greet(config.front_endpoint);
  } catch (...) {
    if (ready[0] >= 0) ::close(ready[0]);
    if (wake_fd_ >= 0) ::close(wake_fd_);
    if (fd_ >= 0) ::close(fd_);
    if (router_.pid > 0) {
      ::kill(router_.pid, SIGKILL);
      spawning::reap(router_, true);
    }
    throw;
  }
  logger().debug("pool: router pid {} with {} workers", router_pid_, processes_);
}

PoolCore::~PoolCore() {
  shutdown();
  ::close(wake_fd_);
  if (fd_ >= 0) ::close(fd_);
}

void PoolCore::interrupt() {
  // Taking mu_ orders this after the caller's state change for every waiter: one that
  // evaluated its predicate before it is already in cv_.wait (and gets notified).
  { std::lock_guard<std::mutex> lock(mu_); }
  cv_.notify_all();
  const std::uint64_t one = 1;
  // EAGAIN only when the counter is full: a wake-up is pending anyway.
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void PoolCore::connect_and_greet(const std::string& endpoint) {
  // "R" + token: the name the router sends this pool's results to.
  fd_ = transport::connect_as(endpoint, "R" + token_);
  if (fd_ < 0) {
    throw PoolBroken(std::string("Pool: cannot connect to the router: ") + std::strerror(errno) +
                     spawning::descriptor_advice(errno));
  }
  wire::Header hello;
  hello.type = wire::Type::kHello;
  hello.pid = getpid();
  if (!send(hello, {})) throw PoolBroken("Pool: the router closed the connection at once");

  // Results can reach this connection only once the router knows it: HELLO/WELCOME.
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  wire::Header h;
  std::string_view header_bytes, payload;
  std::string why;
  for (;;) {
    pollfd items[] = {{fd_, POLLIN, 0}, {router_.pidfd, POLLIN, 0}};
    transport::poll(items, 2, std::chrono::milliseconds(100));
    const auto fill = reader_.fill(fd_);
    const auto got = reader_.next(h, header_bytes, payload, &why);
    if (got == transport::Reader::Next::kFrame && h.type == wire::Type::kWelcome) return;
    if (got == transport::Reader::Next::kBroken || got == transport::Reader::Next::kBadFrame) {
      throw PoolBroken("Pool: the router's greeting was malformed: " + why);
    }
    if (items[1].revents & POLLIN) {
      auto status = spawning::reap(router_, true);
      throw PoolBroken("Pool: the router process failed to start: it " +
                       spawning::describe(status.value_or(0)));
    }
    if (fill == transport::Reader::Fill::kClosed) {
      throw PoolBroken("Pool: the router closed the connection before greeting");
    }
    if (Clock::now() > deadline) {
      throw PoolBroken("Pool: the router process did not answer within 30 s");
    }
  }
}

bool PoolCore::send(const wire::Header& h, std::string_view payload) {
  std::lock_guard<std::mutex> lock(send_mu_);
  return flush_locked() && fd_ >= 0 && transport::write_frame(fd_, h, payload);
}

bool PoolCore::flush_locked() {
  if (out_.empty()) return true;
  const bool ok = fd_ >= 0 && transport::write_frame_bytes(fd_, out_);
  out_.clear();
  return ok;
}

void PoolCore::flush() {
  std::lock_guard<std::mutex> lock(send_mu_);
  flush_locked();
}

void PoolCore::wait_for_router_ready(int ready_fd) {
  pollfd fds[2] = {{ready_fd, POLLIN, 0}, {router_.pidfd, POLLIN, 0}};
  int n;
  do {
    n = poll(fds, 2, 30000);
  } while (n < 0 && errno == EINTR);
  char byte;
  if (n > 0 && (fds[0].revents & POLLIN) && read(ready_fd, &byte, 1) == 1) return;
  if (n == 0) throw PoolBroken("Pool: the router process did not start within 30 s");
  // Closed without a byte, or the router ended: it failed during start-up.
  ::kill(router_.pid, SIGKILL);
  auto status = spawning::reap(router_, true);
  throw PoolBroken("Pool: the router process failed to start: it " +
                   spawning::describe(status.value_or(0)));
}

void PoolCore::begin_call(const std::shared_ptr<CallBase>& call) {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ != State::kRunning) {
    throw PoolBroken(state_ == State::kClosed ? "Pool is closed: no new work is accepted"
                                              : "Pool is broken: " + broken_reason_);
  }
  const std::uint64_t id = next_call_id_++;
  call->set_id(id, &mu_);
  if (call->total() > 0) calls_.emplace(id, call);
}

void PoolCore::send_chunk(CallBase& call, std::uint64_t start, std::uint32_t count,
                          Buffer&& payload) {
  if (payload.size() > max_message_bytes_) {
    throw Error("task '" + std::string(call.task().name) + "': a chunk of " +
                std::to_string(count) + " item(s) from index " + std::to_string(start) +
                " encodes to " + std::to_string(payload.size()) +
                " bytes, more than the pool's max_message_bytes (" +
                std::to_string(max_message_bytes_) + "); use a smaller chunksize or raise the limit");
  }
  // Backpressure: wait, collecting results, until the chunk fits in the window. What
  // is buffered goes out first: those chunks are what the window waits for.
  const std::size_t size = payload.size();
  bool full;
  {
    std::lock_guard<std::mutex> lock(mu_);
    full = state_ != State::kBroken && inflight_bytes_ != 0 && inflight_bytes_ + size > max_inflight_bytes_;
  }
  if (full) flush();
  wait(
      [&] {
        return state_ == State::kBroken || inflight_bytes_ == 0 ||
               inflight_bytes_ + size <= max_inflight_bytes_;
      },
      Clock::time_point::max());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == State::kBroken) throw PoolBroken("Pool is broken: " + broken_reason_);
    inflight_[{call.id(), start}] = size;
    inflight_chunks_.store(inflight_.size(), std::memory_order_relaxed);
    inflight_bytes_ += size;
  }
  wire::Header h;
  h.type = wire::Type::kSubmit;
  h.call_id = call.id();
  h.start = start;
  h.count = count;
  h.name = call.task().name;
  if (call.task().pure) h.flags = wire::kFlagPure;
  // A router gone shows up at the pump (its pidfd), which fails every call with why.
  constexpr std::size_t kBatchBytes = 64 << 10;
  bool sent = true;
  {
    std::lock_guard<std::mutex> lock(send_mu_);
    if (payload.size() >= kBatchBytes / 4) {
      // Large: its own write, without a copy. It may block for as long as the router
      // takes to read it; a terminate() meanwhile kills the router, which ends it.
      sent = flush_locked() && fd_ >= 0 &&
             transport::write_frame(fd_, h, std::string_view(payload.data(), payload.size()));
    } else {
      transport::append_frame(out_, h, std::string_view(payload.data(), payload.size()));
      if (out_.size() >= kBatchBytes) sent = flush_locked();
    }
  }
  if (!sent) {
    // The router is gone (or was stopped under us): this thread hears it now, with the
    // reason the pool's other callers get.
    std::string why = stop_reason();
    throw PoolBroken(why.empty() ? "Pool is broken: the connection to its router failed while "
                                   "sending task '" + std::string(call.task().name) + "'"
                                 : why);
  }
}

void pool_flush(PoolCore& core) { core.flush(); }

void PoolCore::release_chunk(std::uint64_t call_id, std::uint64_t start) {
  auto it = inflight_.find({call_id, start});
  if (it == inflight_.end()) return;
  inflight_bytes_ -= it->second;
  inflight_.erase(it);
  inflight_chunks_.store(inflight_.size(), std::memory_order_relaxed);
}

void PoolCore::release_call(std::uint64_t call_id) {
  auto it = inflight_.lower_bound({call_id, 0});
  while (it != inflight_.end() && it->first.first == call_id) {
    inflight_bytes_ -= it->second;
    it = inflight_.erase(it);
  }
  inflight_chunks_.store(inflight_.size(), std::memory_order_relaxed);
}

void PoolCore::abandon_call(CallBase& call) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    release_call(call.id());  // the router drops what it still queues
    if (calls_.erase(call.id()) == 0) return;
  }
  send_control(wire::Type::kCancel, call.id());
  cv_.notify_all();
}

void PoolCore::send_control(wire::Type type, std::uint64_t call_id) {
  wire::Header h;
  h.type = type;
  h.call_id = call_id;
  send(h, {});
}

bool PoolCore::wait(const std::function<bool()>& ready, Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  bool flushed = false;
  for (;;) {
    if (ready()) return true;
    if (!flushed) {
      // Nobody waits on chunks still in this process's buffer (a submitter that did
      // not flush would wait forever for their answers). Only a wait that waits: the
      // submitter's window check comes here for every chunk it buffers.
      flushed = true;
      lock.unlock();
      flush();
      lock.lock();
      continue;
    }
    const bool expired = Clock::now() >= deadline;
    if (!pumping_ && !stopping_) {
      // Pump even when the deadline has passed: with no background thread, a
      // non-blocking check (ready(), wait_for(0)) must still collect what arrived.
      pumping_ = true;
      lock.unlock();
      try {
        pump(deadline);
      } catch (...) {
        lock.lock();
        pumping_ = false;
        cv_.notify_all();
        throw;
      }
      lock.lock();
      pumping_ = false;
      cv_.notify_all();
      if (expired) return ready();
    } else {
      if (expired) return false;
      cv_.wait_until(lock, deadline);
    }
  }
}

void PoolCore::pump(Clock::time_point deadline) {
  // Frames read with an earlier one (with the WELCOME, say) are handled first; if
  // there were any, the waiters look at what they did before anybody polls.
  {
    wire::Header h;
    std::string_view header_bytes, payload;
    std::string why;
    bool handled = false;
    for (;;) {
      const auto got = reader_.next(h, header_bytes, payload, &why);
      if (got == transport::Reader::Next::kFrame) {
        dispatch(h, payload);
        handled = true;
      } else if (got == transport::Reader::Next::kBadFrame) {
        logger().warn("pool: dropped a malformed message from the router: {}", why);
      } else {
        break;  // kNone, or kBroken: read again below, where it is handled
      }
    }
    if (handled) return;
  }
  const auto now = Clock::now();
  auto timeout = std::chrono::milliseconds(1000);
  if (deadline - now < timeout) {
    timeout = std::max(std::chrono::milliseconds(0),
                       std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now));
  }
  pollfd items[] = {{router_closed_ ? -1 : fd_, POLLIN, 0},
                    {wake_fd_, POLLIN, 0},
                    {router_.pidfd, POLLIN, 0}};
  // A result is often tens of microseconds away: wait awake for a moment first, while
  // few chunks are out (a caller waiting on an answer); bulk work leaves the CPU to
  // the workers.
  const std::size_t count = router_.pidfd >= 0 ? 3 : 2;
  if (inflight_chunks_.load(std::memory_order_relaxed) <= static_cast<std::size_t>(processes_)) {
    transport::poll_spinning(items, count, timeout, spin_);
  } else {
    transport::poll(items, count, timeout);
  }
  if (items[1].revents & POLLIN) {
    std::uint64_t count;
    [[maybe_unused]] ssize_t n = ::read(wake_fd_, &count, sizeof count);
  }
  if (!router_closed_ && (items[0].revents & (POLLIN | POLLHUP | POLLERR))) {
    const auto fill = reader_.fill(fd_);
    wire::Header h;
    std::string_view header_bytes, payload;
    std::string why;
    bool broken = false;
    for (;;) {
      const auto got = reader_.next(h, header_bytes, payload, &why);
      if (got == transport::Reader::Next::kFrame) {
        dispatch(h, payload);
      } else if (got == transport::Reader::Next::kBadFrame) {
        logger().warn("pool: dropped a malformed message from the router: {}", why);
      } else {
        broken = got == transport::Reader::Next::kBroken;
        break;
      }
    }
    std::string lost;
    if (broken) {
      // The stream cannot be resynchronised: nothing more can arrive on it.
      lost = "Pool is broken: the router sent a malformed message (" + why + ")";
    } else if (fill == transport::Reader::Fill::kClosed) {
      lost = "Pool is broken: the router closed its connection";
    }
    if (!lost.empty()) {
      router_closed_ = true;
      // A router that is exiting says why below; one that lives on can reach no call.
      pollfd exiting{router_.pidfd, POLLIN, 0};
      if (router_.pidfd < 0 || transport::poll(&exiting, 1, std::chrono::milliseconds(100)) == 0) {
        logger().error("pool: {}", lost);
        fail_all(std::make_exception_ptr(PoolBroken(lost)));
      }
    }
  }
  if (router_.pidfd >= 0 && (items[2].revents & POLLIN)) check_router_exit();
}

std::string PoolCore::stop_reason() {
  std::lock_guard<std::mutex> lock(mu_);
  return stop_reason_;
}

void PoolCore::check_router_exit() {
  const pid_t pid = router_.pid;
  auto status = spawning::reap(router_, false);
  if (!status) return;
  std::string why = stop_reason();
  if (why.empty()) why = "the pool's router process (pid " + std::to_string(pid) + ") " + spawning::describe(*status);
  fail_all(std::make_exception_ptr(PoolBroken(why)));
}

void PoolCore::dispatch(const wire::Header& h, std::string_view payload) {
  if (h.type == wire::Type::kWelcome) return;
  if (h.type == wire::Type::kPoolError && h.call_id == 0) {
    fail_all(std::make_exception_ptr(
        PoolBroken("Pool is broken: " + std::string(payload.data(), payload.size()))));
    return;
  }
  std::shared_ptr<CallBase> call;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Whatever the call's state, an answered chunk leaves the backpressure window.
    if (h.type == wire::Type::kResult) {
      release_chunk(h.call_id, h.start);
    } else if (h.type == wire::Type::kLost) {
      try {
        auto oh = msgpack::unpack(payload.data(), payload.size());
        std::pair<std::string, std::vector<std::pair<std::uint64_t, std::uint32_t>>> lost;
        oh.get().convert(lost);
        for (const auto& range : lost.second) release_chunk(h.call_id, range.first);
      } catch (const std::exception&) {
        release_call(h.call_id);  // unreadable: the call fails below, as a whole
      }
    } else if (h.type == wire::Type::kPoolError) {
      release_call(h.call_id);
    }
    auto it = calls_.find(h.call_id);
    if (it == calls_.end()) {  // a late answer for a call that already finished
      cv_.notify_all();        // it may have opened the window for a submitter
      return;
    }
    call = it->second;
  }
  bool done = false;
  switch (h.type) {
    case wire::Type::kResult:
      done = call->accept_results(h.start, h.count, payload.data(), payload.size(),
                                  (h.flags & wire::kFlagHasErrors) != 0, h.pid);
      break;
    case wire::Type::kLost: {
      if (std::string why = stop_reason(); !why.empty()) {
        // Workers killed by our own terminate/shutdown: the stop is the reason.
        call->accept_failure(std::make_exception_ptr(PoolBroken(why)));
        done = true;
        break;
      }
      std::vector<std::uint64_t> indices;
      std::string reason;
      try {
        auto oh = msgpack::unpack(payload.data(), payload.size());
        std::pair<std::string, std::vector<std::pair<std::uint64_t, std::uint32_t>>> lost;
        oh.get().convert(lost);
        reason = lost.first;
        for (const auto& [start, count] : lost.second) {
          if (start + count > call->total() || start + count < start) throw DecodeError("range");
          for (std::uint32_t i = 0; i < count; ++i) indices.push_back(start + i);
        }
        if (indices.empty()) throw DecodeError("no tasks named");
      } catch (const std::exception& e) {
        // Which tasks died is unknown: the whole call fails rather than wait forever.
        call->accept_failure(std::make_exception_ptr(DecodeError(
            "task '" + std::string(call->task().name) + "': worker pid " + std::to_string(h.pid) +
            " died and the router's report of the lost tasks was unreadable (" + e.what() + ")")));
        done = true;
        break;
      }
      std::sort(indices.begin(), indices.end());
      done = call->accept_lost(indices, h.pid, reason, (h.flags & wire::kFlagTimedOut) != 0);
      break;
    }
    case wire::Type::kPoolError:
      call->accept_failure(std::make_exception_ptr(
          PoolBroken(std::string(payload.data(), payload.size()))));
      done = true;
      break;
    default:
      logger().warn("pool: dropped unexpected {} from the router", wire::type_name(h.type));
      return;
  }
  if (done) {
    // A call that failed fast is not cancelled: as in Python, its remaining items still
    // run (their side effects happen) and their results are dropped on arrival.
    std::lock_guard<std::mutex> lock(mu_);
    calls_.erase(h.call_id);
  }
  cv_.notify_all();
}

void PoolCore::fail_all(std::exception_ptr error) {
  std::unordered_map<std::uint64_t, std::shared_ptr<CallBase>> calls;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != State::kBroken) {
      state_ = State::kBroken;
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        broken_reason_ = e.what();
      }
    }
    calls.swap(calls_);
    inflight_.clear();
    inflight_bytes_ = 0;
    inflight_chunks_.store(0, std::memory_order_relaxed);
  }
  for (auto& [id, call] : calls) call->accept_failure(error);
  cv_.notify_all();
}

void PoolCore::close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ == State::kRunning) state_ = State::kClosed;
}

void PoolCore::join() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == State::kRunning) throw Error("Pool::join: call close() or terminate() first");
  }
  wait([this] { return calls_.empty(); }, Clock::time_point::max());
  stop_router(wire::Type::kShutdown, std::chrono::seconds(5), "Pool was joined");
}

void PoolCore::terminate() {
  stop_router(wire::Type::kTerminate, std::chrono::seconds(2), "Pool was terminated");
}

void PoolCore::shutdown() {
  stop_router(wire::Type::kShutdown, std::chrono::seconds(3), "Pool was shut down");
}

bool PoolCore::ask_router(wire::Type how) {
  if (router_.pid <= 0 || spawning::is_stopped(router_.pid)) return false;
  // Another thread may hold the connection for a long write (a large argument to a
  // router that does not read): a stop never waits for it.
  // (Polled rather than std::timed_mutex: ThreadSanitizer does not see the clocklock
  // that timed_mutex uses, and reports its unlock as one of an unlocked mutex.)
  std::unique_lock<std::mutex> lock(send_mu_, std::defer_lock);
  for (int tries = 0; !lock.try_lock(); ++tries) {
    if (tries == 20) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (fd_ < 0) return false;
  std::string bytes = std::move(out_);
  out_.clear();
  wire::Header h;
  h.type = how;
  transport::append_frame(bytes, h, {});
  return transport::write_frame_bytes(fd_, bytes, Clock::now() + std::chrono::milliseconds(50));
}

void PoolCore::stop_router(wire::Type how, std::chrono::milliseconds grace, const char* why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_reason_.empty()) stop_reason_ = why;
  }
  // terminate() kills at once: the workers die with the router (their parent-death
  // signal). A graceful stop is asked for; a router that cannot be asked promptly (it
  // is stopped, its connection is busy or full) is killed instead, so that no stop
  // waits on what the router or another thread does. Either happens before the pump
  // token is taken: a thread pumping results wakes up when the router exits.
  const bool asked = how != wire::Type::kTerminate && ask_router(how);
  if (!asked && router_.pid > 0) ::kill(router_.pid, SIGKILL);
  {
    std::unique_lock<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.wait(lock, [this] { return !pumping_; });
    pumping_ = true;
  }
  if (router_.pid > 0) {
    if (!spawning::reap_for(router_, grace)) {
      ::kill(router_.pid, SIGKILL);
      spawning::reap(router_, true);
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    pumping_ = false;
    stopping_ = false;
  }
  fail_all(std::make_exception_ptr(PoolBroken(why)));
}

}  // namespace detail
}  // namespace mpx
