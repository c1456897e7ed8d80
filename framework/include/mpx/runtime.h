// mpx/runtime.h — start-up, process identity, CPU count and logging.
//
// Every program that uses mpx calls mpx::init(argc, argv) first thing in main. The
// same executable plays every role: in the user's own process (the driver) init
// returns; in a process that mpx spawned (router, pool worker, Process child) init
// runs that role and exits the process, never returning.
//
//   int main(int argc, char** argv) {
//     mpx::init(argc, argv);
//     mpx::logger().info("{} has {} usable CPUs", mpx::current_process().name,
//                        mpx::cpu_count());
//   }
//
// Thread safety: init must run once, on the main thread, before other threads start.
// current_process, cpu_count and logger are safe from any thread after that.
#ifndef MPX_RUNTIME_H_
#define MPX_RUNTIME_H_

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>

#include <spdlog/spdlog.h>

namespace mpx {

// Enters the role chosen by the spawner. Returns only in the driver. Throws mpx::Error
// when the program's task registry is inconsistent (a name registered twice).
void init(int argc, char** argv);

enum class Role { kDriver, kRouter, kWorker, kProcess, kActor };

struct ProcessInfo {
  // "MainProcess" in the driver, "PoolWorker-N", "Process-N" or the name given to
  // mpx::Process in children, "Router" in a pool's router, "<Class>-N" (or the name
  // given in ActorOptions) in an actor.
  std::string name;
  pid_t pid;
  Role role;
  // A daemonic Process child (Process::set_daemon): it may not start processes,
  // pools or actors of its own, as in Python.
  bool daemon = false;
  // Python's current_process().is_alive() and .exitcode, for code written against
  // Process objects: the calling process is alive and has no exit code yet.
  bool is_alive() const { return true; }
  std::optional<int> exitcode() const { return std::nullopt; }
};

// The calling process's identity, in every role.
const ProcessInfo& current_process();

// The process that started this one (Python's parent_process()): a Process child's
// parent, a pool worker's router, an actor's spawner.
class ParentProcess {
 public:
  pid_t pid() const { return pid_; }
  // Its current_process().name when it started this process.
  const std::string& name() const { return name_; }
  // Whether it is still running (this process has not been re-parented).
  bool is_alive() const;
  // A pidfd of the parent, readable once it has ended (for poll, or
  // mpx::connection::wait). Owned by mpx: do not close it. -1 if it cannot be opened.
  int sentinel() const;
  // Waits until it has ended or timeout passed; returns whether it has ended.
  bool join(std::chrono::milliseconds timeout) const;

 private:
  ParentProcess(pid_t pid, std::string name) : pid_(pid), name_(std::move(name)) {}
  pid_t pid_;
  std::string name_;
  friend std::optional<ParentProcess> parent_process();
};

// nullopt in the driver (the user's own process), as Python's None.
std::optional<ParentProcess> parent_process();

// CPUs this process may run on (its affinity mask), at least 1.
int cpu_count();

// The process-wide logger. Every line carries the process name and pid. The level
// comes from the environment variable MPX_LOG (trace, debug, info, warn, error,
// critical, off); the default is info. Lines go to stderr.
spdlog::logger& logger();

}  // namespace mpx

#endif  // MPX_RUNTIME_H_
