#include "mpx/process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "framework/base/base.h"
#include "framework/process/process_child.h"
#include "framework/spawn/spawn.h"
#include "mpx/runtime.h"

namespace mpx {
namespace detail {

struct ProcessState {
  const TaskEntry* task = nullptr;
  std::string args;
  Pins pins;  // shared objects named in args; kept for the life of this Process object
  std::string name;
  spawning::Child child;
  pid_t pid = 0;
  bool started = false;
  std::optional<int> status;  // wait status once reaped

  void record(std::optional<int> s) {
    if (s) status = s;
  }
};

void ProcessStateDeleter::operator()(ProcessState* state) const { delete state; }

}  // namespace detail

namespace {
std::atomic<int> next_process_number{1};
}

void Process::init(const detail::TaskEntry& task, std::string args, detail::Pins pins) {
  state_.reset(new detail::ProcessState());
  state_->task = &task;
  state_->args = std::move(args);
  state_->pins = std::move(pins);
  state_->name = "Process-" + std::to_string(next_process_number++);
}

Process::~Process() {
  if (state_ && state_->started && !state_->status) {
    try {
      join();
    } catch (...) {
    }
  }
}

Process::Process(Process&&) noexcept = default;
Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    if (state_ && state_->started && !state_->status) join();
    state_ = std::move(other.state_);
  }
  return *this;
}

void Process::start() {
  base::require_init("mpx::Process::start");
  if (!state_) throw ProcessError("Process::start: this Process was moved from");
  if (state_->started) throw ProcessError("Process::start: " + state_->name + " was already started");
  spawning::Spec spec;
  spec.role = Role::kProcess;
  spec.name = state_->name;
  spec.bootstrap = process_child::encode_bootstrap(*state_->task, state_->args);
  state_->child = spawning::spawn_self(spec);
  state_->pid = state_->child.pid;
  state_->started = true;
}

void Process::join() {
  if (!state_ || !state_->started) throw ProcessError("Process::join: the process was not started");
  if (!state_->status) state_->record(spawning::reap(state_->child, true));
}

bool Process::join(std::chrono::milliseconds timeout) {
  if (!state_ || !state_->started) throw ProcessError("Process::join: the process was not started");
  if (!state_->status) state_->record(spawning::reap_for(state_->child, timeout));
  return state_->status.has_value();
}

bool Process::is_alive() {
  if (!state_ || !state_->started || state_->status) return false;
  state_->record(spawning::reap(state_->child, false));
  return !state_->status;
}

std::optional<int> Process::exitcode() const {
  if (!state_ || !state_->status) return std::nullopt;
  return spawning::exitcode(*state_->status);
}

pid_t Process::pid() const { return state_ ? state_->pid : 0; }

const std::string& Process::name() const {
  static const std::string kMovedFrom;
  return state_ ? state_->name : kMovedFrom;
}

void Process::set_name(std::string name) {
  if (!state_) throw ProcessError("Process::set_name: this Process was moved from");
  if (state_->started) throw ProcessError("Process::set_name: " + state_->name + " already started");
  state_->name = std::move(name);
}

void Process::terminate() {
  if (state_ && state_->started && !state_->status) ::kill(state_->pid, SIGTERM);
}

void Process::kill() {
  if (state_ && state_->started && !state_->status) ::kill(state_->pid, SIGKILL);
}

}  // namespace mpx
