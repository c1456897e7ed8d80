#include "mpx/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "framework/base/base.h"
#include "framework/process/process_child.h"
#include "framework/spawn/spawn.h"
#include "mpx/detail/deadline.h"
#include "mpx/runtime.h"

namespace mpx {
namespace detail {

struct ProcessState {
  const TaskEntry* task = nullptr;
  std::string args;
  Pins pins;          // shared objects named in args; kept for the life of this Process object
  FdTransfers fds;    // descriptors the child inherits; dropped once it is spawned
  std::string name;
  bool daemon = false;
  bool started = false;
  bool closed = false;
  pid_t pid = 0;
  int sentinel = -1;  // our own pidfd of the child: open until close() or destruction

  // Guards child and status: active_children() and the exit handler reap from any
  // thread, while the Process object's thread may join.
  mutable std::mutex mu;
  spawning::Child child;
  std::optional<int> status;  // wait status once reaped

  ~ProcessState() {
    if (sentinel >= 0) ::close(sentinel);
  }
  // Reaps the child if it has ended; returns whether it has.
  bool try_reap() {
    std::lock_guard<std::mutex> lock(mu);
    if (!status) {
      if (auto s = spawning::reap(child, false)) status = s;
    }
    return status.has_value();
  }
  bool ended() const {
    std::lock_guard<std::mutex> lock(mu);
    return status.has_value();
  }
  // Waits on the sentinel (without the lock), then reaps. false on timeout.
  bool wait_for_end(std::chrono::milliseconds timeout) {
    if (try_reap()) return true;
    pollfd p{sentinel, POLLIN, 0};
    const auto deadline = detail::deadline_after(timeout);  // milliseconds::max(): forever
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      const long long ms = std::clamp<long long>(left.count(), 0, INT32_MAX);
      const int r = ::poll(&p, 1, static_cast<int>(ms));
      if (r > 0 || (r < 0 && errno != EINTR)) return try_reap();
      if (r == 0 && ms < INT32_MAX) return try_reap();
    }
  }
  void signal(int sig) {
    std::lock_guard<std::mutex> lock(mu);
    if (!status) ::kill(pid, sig);
  }
};

}  // namespace detail

namespace {

using detail::ProcessState;

std::atomic<int> next_process_number{1};

// Every Process started here, for active_children() and the exit handler: the objects'
// states (weak: the Process object owns them) and the daemonic ones whose object was
// destroyed while they ran (strong: nobody else will reap them).
struct Children {
  std::mutex mu;
  std::vector<std::weak_ptr<ProcessState>> started;            // guarded by mu
  std::vector<std::shared_ptr<ProcessState>> detached_daemons;  // guarded by mu
};
Children& children() {
  static auto* c = new Children();  // never destroyed: the exit handler uses it
  return *c;
}

// Daemonic children whose Process object is gone and that have ended: reaped, as
// Python's start() does (_cleanup), so that a program that starts many and never
// joins them does not pile up zombies and descriptors.
void reap_detached_daemons(Children& c) {
  c.detached_daemons.erase(std::remove_if(c.detached_daemons.begin(), c.detached_daemons.end(),
                                          [&](const std::shared_ptr<ProcessState>& s) {
                                            return s->try_reap();
                                          }),
                           c.detached_daemons.end());
}

std::vector<std::shared_ptr<ProcessState>> live_children() {
  Children& c = children();
  std::lock_guard<std::mutex> lock(c.mu);
  std::vector<std::shared_ptr<ProcessState>> out;
  auto keep = [&](const std::shared_ptr<ProcessState>& s) {
    if (s && !s->try_reap()) out.push_back(s);
  };
  c.started.erase(std::remove_if(c.started.begin(), c.started.end(),
                                 [&](const std::weak_ptr<ProcessState>& w) {
                                   auto s = w.lock();
                                   keep(s);
                                   return !s || s->ended();
                                 }),
                  c.started.end());
  reap_detached_daemons(c);
  for (const auto& s : c.detached_daemons) {
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  }
  return out;
}

}  // namespace

// Python's exit function (multiprocessing.util._exit_function): daemonic children are
// terminated (SIGTERM, SIGKILL a second later), then the others are joined. Non-daemonic
// children are usually joined by their Process objects' destructors already; this
// reaches those whose objects are still alive (std::exit, a Process on the heap).
void process_child::end_children() {
  std::vector<std::shared_ptr<ProcessState>> daemons;
  std::vector<std::shared_ptr<ProcessState>> others;
  for (auto& s : live_children()) (s->daemon ? daemons : others).push_back(s);
  for (auto& s : daemons) s->signal(SIGTERM);
  const auto grace_end = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (auto& s : daemons) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        grace_end - std::chrono::steady_clock::now());
    if (!s->wait_for_end(std::max(left, std::chrono::milliseconds(0)))) {
      s->signal(SIGKILL);
      s->wait_for_end(std::chrono::milliseconds(5000));
    }
  }
  for (auto& s : others) s->wait_for_end(std::chrono::milliseconds::max());
}

namespace {
void end_children_at_exit() { process_child::end_children(); }
}  // namespace

void Process::init(const detail::TaskEntry& task, std::string args, detail::Pins pins,
                   detail::FdTransfers fds) {
  // Not make_shared: the registry's weak references would keep the whole state's
  // memory, not just its control block, until they are swept.
  state_ = std::shared_ptr<ProcessState>(new ProcessState());
  state_->task = &task;
  state_->args = std::move(args);
  state_->pins = std::move(pins);
  state_->fds = std::move(fds);
  state_->name = "Process-" + std::to_string(next_process_number++);
}

detail::ProcessState& Process::state(const char* what) const {
  if (!state_) throw ProcessError(std::string("Process::") + what + ": this Process was moved from");
  if (state_->closed) {
    throw ProcessError(std::string("Process::") + what + ": " + state_->name +
                       " was closed (close())");
  }
  return *state_;
}

Process::~Process() {
  if (!state_ || !state_->started || state_->ended()) return;
  if (state_->daemon) {
    // Python lets a daemonic child run on; it is reaped by active_children() or
    // terminated at exit.
    Children& c = children();
    std::lock_guard<std::mutex> lock(c.mu);
    c.detached_daemons.push_back(state_);
    return;
  }
  try {
    join();
  } catch (...) {
  }
}

Process::Process(Process&&) noexcept = default;
Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    Process previous(std::move(*this));  // joins (or lets go of) what this one ran
    state_ = std::move(other.state_);
  }
  return *this;
}

void Process::start() {
  ProcessState& s = state("start");
  base::require_init("mpx::Process::start");
  if (s.started) throw ProcessError("Process::start: " + s.name + " was already started");
  spawning::Spec spec;
  spec.role = Role::kProcess;
  spec.name = s.name;
  spec.bootstrap = process_child::encode_bootstrap(*s.task, s.args, s.daemon);
  for (const auto& t : s.fds) spec.inherit_fds.push_back(t.fd);
  spawning::Child child = spawning::spawn_self(spec);
  // The child holds its own copies now; ours would keep its end of a Pipe open (no EOF
  // for the other end when the child dies).
  s.fds.clear();
  const int sentinel = fcntl(child.pidfd, F_DUPFD_CLOEXEC, 0);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.child = child;
    s.pid = child.pid;
    s.sentinel = sentinel;
    s.started = true;
  }
  Children& c = children();
  std::lock_guard<std::mutex> lock(c.mu);
  if (c.started.size() >= 64 && c.started.size() % 64 == 0) {
    // A program that starts many processes and never asks for active_children():
    // forget the ones whose Process object is gone.
    c.started.erase(std::remove_if(c.started.begin(), c.started.end(),
                                   [](const std::weak_ptr<ProcessState>& w) { return w.expired(); }),
                    c.started.end());
  }
  c.started.push_back(state_);
  reap_detached_daemons(c);
  static const bool registered = (std::atexit(end_children_at_exit), true);
  (void)registered;
}

void Process::join() {
  ProcessState& s = state("join");
  if (!s.started) throw ProcessError("Process::join: the process was not started");
  while (!s.wait_for_end(std::chrono::hours(24))) {
  }
}

bool Process::join(std::chrono::milliseconds timeout) {
  ProcessState& s = state("join");
  if (!s.started) throw ProcessError("Process::join: the process was not started");
  return s.wait_for_end(timeout);
}

bool Process::is_alive() {
  ProcessState& s = state("is_alive");
  return s.started && !s.try_reap();
}

std::optional<int> Process::exitcode() const {
  ProcessState& s = state("exitcode");
  if (s.started) s.try_reap();  // as Python's exitcode, which polls
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.status) return std::nullopt;
  return spawning::exitcode(*s.status);
}

pid_t Process::pid() const { return state("pid").pid; }

const std::string& Process::name() const {
  static const std::string kMovedFrom;
  return state_ ? state_->name : kMovedFrom;
}

void Process::set_name(std::string name) {
  ProcessState& s = state("set_name");
  if (s.started) throw ProcessError("Process::set_name: " + s.name + " already started");
  s.name = std::move(name);
}

void Process::set_daemon(bool daemon) {
  ProcessState& s = state("set_daemon");
  if (s.started) throw ProcessError("Process::set_daemon: " + s.name + " already started");
  s.daemon = daemon;
}

bool Process::daemon() const { return state("daemon").daemon; }

int Process::sentinel() const {
  ProcessState& s = state("sentinel");
  if (!s.started) throw ProcessError("Process::sentinel: " + s.name + " was not started");
  return s.sentinel;
}

void Process::terminate() {
  ProcessState& s = state("terminate");
  if (s.started) s.signal(SIGTERM);
}

void Process::kill() {
  ProcessState& s = state("kill");
  if (s.started) s.signal(SIGKILL);
}

void Process::close() {
  if (!state_ || state_->closed) return;
  if (state_->started && !state_->try_reap()) {
    throw ProcessError("Process::close: " + state_->name +
                       " is still running; join() or terminate() it first");
  }
  state_->closed = true;
  state_->pins.clear();
  state_->fds.clear();
  state_->args.clear();
  if (state_->sentinel >= 0) ::close(state_->sentinel);
  state_->sentinel = -1;
}

std::vector<ProcessInfo> active_children() {
  std::vector<ProcessInfo> out;
  for (const auto& s : live_children()) {
    ProcessInfo info{s->name, s->pid, Role::kProcess};
    info.daemon = s->daemon;
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace mpx
