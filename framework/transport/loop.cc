#include "framework/transport/loop.h"

#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>

#include "framework/base/futex.h"
#include "mpx/errors.h"

namespace mpx {
namespace transport {

int poll(pollfd* fds, std::size_t count, std::chrono::milliseconds timeout) {
  const bool forever = timeout.count() < 0;
  const auto deadline = forever ? Clock::time_point::max() : Clock::now() + timeout;
  for (;;) {
    int left = -1;
    if (!forever) {
      // Rounded up: a poll that returns on its timeout has reached the deadline.
      left = static_cast<int>(std::clamp<long long>(
          std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count(), 0,
          INT32_MAX));
    }
    const int n = ::poll(fds, static_cast<nfds_t>(count), left);
    if (n > 0 || (n == 0 && (forever || Clock::now() >= deadline))) return n;
    if (n == 0) continue;  // woke a little early (timer slack): wait out the rest
    if (errno != EINTR) throw Error(std::string("poll: ") + std::strerror(errno));
  }
}

bool Spin::enabled() {
  static const bool on = [] {
    const char* v = std::getenv("MPX_SPIN");
    return v == nullptr || std::string_view(v) != "0";
  }();
  return on;
}

void Spin::update(bool caught) {
  if (!enabled()) return;
  if (caught) {
    budget_ = std::min(std::max(budget_ * 2, std::chrono::microseconds(10)), kMax);
  } else if (budget_.count() > 0) {
    budget_ /= 2;
    if (budget_ < std::chrono::microseconds(4)) budget_ = std::chrono::microseconds(0);
  } else if (++idle_ % 64 == 0) {
    budget_ = std::chrono::microseconds(20);
  }
  budget_ = std::max(budget_, floor_);
}

void Spin::set_floor(std::chrono::microseconds floor) {
  if (!enabled()) return;
  floor_ = std::min(floor, kMax);
  budget_ = std::max(budget_, floor_);
}

Loop::Loop(bool wakeable) {
  if (!wakeable) return;
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  // Drained by run_once itself; never counted as a handler that ran.
  const Id wake = watch(wake_fd_, POLLIN, [this](short) {
    std::uint64_t count;
    [[maybe_unused]] ssize_t n = ::read(wake_fd_, &count, sizeof count);
  });
  set_cold(wake);
}

Loop::~Loop() {
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

Loop::Id Loop::watch(int fd, short events, Handler handler) {
  Id id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else {
    id = entries_.size();
    entries_.emplace_back();
  }
  Entry& e = entries_[id];
  e.fd = fd;
  e.events = events;
  e.handler = std::move(handler);
  e.live = true;
  e.again = false;
  ++live_;
  dirty_ = true;
  return id;
}

void Loop::set_events(Id id, short events) {
  Entry& e = entries_[id];
  e.events = events;
  if (!dirty_ && e.live) {
    // revents of this turn are kept: a handler may change an entry the turn has not
    // reached yet.
    fds_[e.slot].fd = events ? e.fd : -1;
    fds_[e.slot].events = events;
    if (!e.cold) {
      hot_[e.hot_slot].fd = events ? e.fd : -1;
      hot_[e.hot_slot].events = events;
    }
  }
}

void Loop::set_cold(Id id) {
  entries_[id].cold = true;
  dirty_ = true;
}

void Loop::unwatch(Id id) {
  Entry& e = entries_[id];
  if (!e.live) return;
  e.live = false;
  if (e.again) --again_;
  e.again = false;
  --live_;
  dirty_ = true;
  // A handler may unwatch itself: its function must outlive the call.
  if (dispatching_) {
    freed_.push_back(id);
  } else {
    e.handler = nullptr;
    free_.push_back(id);
  }
}

void Loop::ready_again(Id id) {
  Entry& e = entries_[id];
  if (!e.live || e.again) return;
  e.again = true;
  ++again_;
}

void Loop::wake() {
  const std::uint64_t one = 1;
  // EAGAIN only when the counter is full: a wake-up is pending anyway.
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void Loop::rebuild() {
  fds_.clear();
  fd_ids_.clear();
  hot_.clear();
  hot_slots_.clear();
  for (Id id = 0; id < entries_.size(); ++id) {
    Entry& e = entries_[id];
    if (!e.live) continue;
    e.slot = fds_.size();
    fds_.push_back({e.events ? e.fd : -1, e.events, 0});
    fd_ids_.push_back(id);
    if (!e.cold) {
      e.hot_slot = hot_.size();
      hot_.push_back(fds_.back());
      hot_slots_.push_back(e.slot);
    }
  }
  dirty_ = false;
}

int Loop::wait(int timeout_ms, Clock::time_point deadline, bool spin) {
  const std::chrono::milliseconds timeout(timeout_ms);
  const auto budget = spin_.budget();
  if (!spin || budget.count() == 0 || timeout_ms == 0) {
    const int n = poll(fds_.data(), fds_.size(), timeout);
    if (spin && budget.count() == 0) spin_.update(false);
    return n;
  }
  // Checks awake (yielding the CPU, or pausing, between checks: see Spin::Style), then
  // sleeps for the rest of the time.
  const auto start = Clock::now();
  const auto until = std::min(deadline, start + Clock::duration(budget));
  do {
    const int n = ::poll(hot_.data(), static_cast<nfds_t>(hot_.size()), 0);
    if (n > 0) {
      // What the cold entries said last time is not news: only the hot ones ran now.
      for (pollfd& p : fds_) p.revents = 0;
      for (std::size_t i = 0; i < hot_.size(); ++i) fds_[hot_slots_[i]].revents = hot_[i].revents;
      spin_.update(true);
      return n;
    }
    if (n < 0 && errno != EINTR) throw Error(std::string("poll: ") + std::strerror(errno));
    if (style_ == Spin::Style::kYield) {
      sched_yield();
    } else {
      for (int i = 0; i < 16; ++i) base::cpu_relax();
    }
  } while (Clock::now() < until);
  spin_.update(false);
  if (timeout_ms < 0) return poll(fds_.data(), fds_.size(), timeout);
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
  return poll(fds_.data(), fds_.size(), std::max(left, std::chrono::milliseconds(0)));
}

int Loop::run_once(Clock::time_point deadline, bool spin) {
  if (dirty_) rebuild();
  int timeout_ms = -1;
  if (again_ > 0) {
    timeout_ms = 0;
    spin = false;
  } else if (deadline != Clock::time_point::max()) {
    timeout_ms = static_cast<int>(std::clamp<long long>(
        std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count(), 0,
        INT32_MAX));
  }
  if (timeout_ms == 0) spin = false;
  wait(timeout_ms, deadline, spin);
  struct Turn {
    Loop& loop;
    explicit Turn(Loop& l) : loop(l) { loop.dispatching_ = true; }
    ~Turn() {
      loop.dispatching_ = false;
      for (Id id : loop.freed_) {
        loop.entries_[id].handler = nullptr;
        loop.free_.push_back(id);
      }
      loop.freed_.clear();
    }
  } turn(*this);
  int ran = 0;
  const std::size_t count = fds_.size();
  for (std::size_t i = 0; i < count; ++i) {
    const Id id = fd_ids_[i];
    Entry& e = entries_[id];
    if (!e.live) continue;
    const short revents = fds_[i].revents;
    const bool again = e.again;
    if (revents == 0 && !again) continue;
    if (again) {
      e.again = false;
      --again_;
    }
    if (e.fd == wake_fd_ && wake_fd_ >= 0) {
      e.handler(revents);
      continue;
    }
    ++ran;
    e.handler(revents);
  }
  return ran;
}

// ---- Pump ---------------------------------------------------------------------------

bool Pump::wait(std::unique_lock<std::mutex>& lk, const std::function<bool()>& ready,
                Clock::time_point deadline) {
  for (;;) {
    if (ready()) return true;
    const bool expired = Clock::now() >= deadline;
    if (!pumping_ && holders_waiting_ == 0) {
      pumping_ = true;
      lk.unlock();
      try {
        turn_(deadline);
      } catch (...) {
        lk.lock();
        pumping_ = false;
        cv_.notify_all();
        throw;
      }
      lk.lock();
      pumping_ = false;
      cv_.notify_all();
      if (expired) return ready();
    } else {
      if (expired) return false;
      cv_.wait_until(lk, deadline);
    }
  }
}

bool Pump::wait_between(std::unique_lock<std::mutex>& lk, const std::function<bool()>& ready,
                        Clock::time_point deadline, const std::function<bool()>& due,
                        const std::function<void(std::unique_lock<std::mutex>&)>& run) {
  for (;;) {
    const bool ok = wait(lk, [&] { return due() || ready(); }, deadline);
    if (!due()) return ok;
    run(lk);
    if (ready()) return true;
    if (Clock::now() >= deadline) return false;
  }
}

void Pump::hold(std::unique_lock<std::mutex>& lk) {
  ++holders_waiting_;
  cv_.wait(lk, [this] { return !pumping_; });
  --holders_waiting_;
  pumping_ = true;
}

void Pump::release() {
  pumping_ = false;
  cv_.notify_all();
}

}  // namespace transport
}  // namespace mpx
