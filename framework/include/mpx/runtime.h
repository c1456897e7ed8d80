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
};

// The calling process's identity, in every role.
const ProcessInfo& current_process();

// CPUs this process may run on (its affinity mask), at least 1.
int cpu_count();

// The process-wide logger. Every line carries the process name and pid. The level
// comes from the environment variable MPX_LOG (trace, debug, info, warn, error,
// critical, off); the default is info. Lines go to stderr.
spdlog::logger& logger();

}  // namespace mpx

#endif  // MPX_RUNTIME_H_
