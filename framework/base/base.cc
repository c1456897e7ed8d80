#include "framework/base/base.h"

#include "mpx/errors.h"

#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <memory>

#include <spdlog/sinks/stdout_sinks.h>

namespace mpx {
namespace base {
namespace {

ProcessInfo& identity() {
  static ProcessInfo info{"MainProcess", getpid(), Role::kDriver};
  return info;
}

std::shared_ptr<spdlog::logger> make_logger(const std::string& name) {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>(name, std::move(sink));
  // One line, one write: "12:00:01.123 [PoolWorker-1/4242] info: text".
  logger->set_pattern("%H:%M:%S.%e [%n/%P] %l: %v");
  spdlog::level::level_enum level = spdlog::level::info;
  if (const char* env = std::getenv("MPX_LOG")) level = spdlog::level::from_str(env);
  logger->set_level(level);
  logger->flush_on(spdlog::level::trace);
  return logger;
}

std::shared_ptr<spdlog::logger>& logger_slot() {
  static std::shared_ptr<spdlog::logger> slot = make_logger(identity().name);
  return slot;
}

}  // namespace

void set_identity(std::string name, Role role) {
  ProcessInfo& info = identity();
  info.name = std::move(name);
  info.pid = getpid();
  info.role = role;
  logger_slot() = make_logger(info.name);
}

namespace {
std::atomic<bool> initialized{false};
}

void mark_initialized() { initialized = true; }

void require_init(const char* what) {
  if (!initialized && identity().role != Role::kDriver) {
    // mpx::init was called: it ran this process's role instead of returning.
    throw Error(std::string(what) + ": cannot be started in " + identity().name +
                ", a process that mpx spawned: starting processes, pools or actors from "
                "spawned processes is not supported yet; start them in the main program and "
                "pass their handles (actor handles, shared objects) to the tasks instead");
  }
  if (!initialized) {
    throw Error(std::string(what) +
                ": call mpx::init(argc, argv) first thing in main; spawned processes re-run "
                "this program and must find their role there");
  }
}

}  // namespace base

const ProcessInfo& current_process() { return base::identity(); }

int cpu_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

spdlog::logger& logger() { return *base::logger_slot(); }

}  // namespace mpx

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer does not see libstdc++'s exception_ptr reference counts (libstdc++
// is not instrumented): an exception object
// shared by several calls' errors and freed by whichever thread drops it last is
// reported as a race with the catching thread's reads. The count is atomic.
extern "C" const char* __tsan_default_suppressions() {
  return "race:std::__exception_ptr::exception_ptr::_M_release\n";
}
#endif
