#include "framework/base/base.h"

#include "mpx/errors.h"

#include <sched.h>
#include <sys/random.h>
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

std::uint64_t random_u64() {
  std::uint64_t v = 0;
  if (getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) {
    // No entropy to be had (a very early boot, a seccomp filter): unique, not secret.
    static std::atomic<std::uint64_t> counter{0};
    v = (static_cast<std::uint64_t>(getpid()) << 32) ^ reinterpret_cast<std::uintptr_t>(&v) ^
        (counter.fetch_add(1) * 0x9E3779B97F4A7C15ull);
  }
  return v;
}

std::string random_token(std::size_t n) {
  static const char kAlphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string out(n, '0');
  // Six bits a letter, values past the alphabet drawn again: no letter is likelier.
  for (std::size_t i = 0; i < n;) {
    std::uint64_t bits = random_u64();
    for (int k = 0; k < 10 && i < n; ++k, bits >>= 6) {
      if ((bits & 63) < 36) out[i++] = kAlphabet[bits & 63];
    }
  }
  return out;
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

