#include "framework/base/base.h"

#include "mpx/errors.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sched.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <memory>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace mpx {
namespace base {
namespace {

ProcessInfo& identity() {
  static ProcessInfo info{"MainProcess", getpid(), Role::kDriver};
  return info;
}

// The variable that sets one role's level over MPX_LOG.
const char* role_level_variable(Role role) {
  switch (role) {
    case Role::kDriver: return "MPX_LOG_DRIVER";
    case Role::kRouter: return "MPX_LOG_ROUTER";
    case Role::kWorker: return "MPX_LOG_WORKER";
    case Role::kProcess: return "MPX_LOG_PROCESS";
    case Role::kActor: return "MPX_LOG_ACTOR";
  }
  return "MPX_LOG";
}

// Log lines go to stderr, or with MPX_LOG_FILE=path to that file, appended: every
// process of the program opens it in append mode and writes each line in one write,
// so lines of different processes interleave whole.
std::shared_ptr<spdlog::logger> make_logger(const std::string& name, Role role) {
  spdlog::sink_ptr sink;
  std::string file_error;
  const char* file = std::getenv("MPX_LOG_FILE");
  if (file != nullptr && *file != '\0') {
    try {
      sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file, /*truncate=*/false);
    } catch (const std::exception& e) {
      file_error = e.what();
    }
  }
  if (!sink) sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>(name, std::move(sink));
  // One line, one write: "12:00:01.123 [PoolWorker-1/4242] info: text".
  logger->set_pattern("%H:%M:%S.%e [%n/%P] %l: %v");
  spdlog::level::level_enum level = spdlog::level::info;
  std::string bad_levels;
  // spdlog reads a name it does not know as "off", which would hide errors too: such a
  // value is refused with a warning, and case does not matter.
  auto read_level = [&](const char* variable) {
    const char* env = std::getenv(variable);
    if (env == nullptr) return;
    std::string text(env);
    std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
    const spdlog::level::level_enum read = spdlog::level::from_str(text);
    if (read == spdlog::level::off && text != "off") {
      bad_levels += std::string(bad_levels.empty() ? "" : ", ") + variable + "=" + env;
      return;
    }
    level = read;
  };
  read_level("MPX_LOG");
  read_level(role_level_variable(role));
  logger->set_level(level);
  logger->flush_on(spdlog::level::trace);
  if (!bad_levels.empty()) {
    logger->warn("ignored {}: a level is one of trace, debug, info, warn, error, critical, off", bad_levels);
  }
  if (!file_error.empty()) {
    logger->warn("cannot log to MPX_LOG_FILE={} ({}); logging to stderr", file, file_error);
  }
  return logger;
}

std::shared_ptr<spdlog::logger>& logger_slot() {
  static std::shared_ptr<spdlog::logger> slot = make_logger(identity().name, identity().role);
  return slot;
}

}  // namespace

void set_identity(std::string name, Role role) {
  ProcessInfo& info = identity();
  info.name = std::move(name);
  info.pid = getpid();
  info.role = role;
  logger_slot() = make_logger(info.name, role);
}

namespace {
std::atomic<bool> initialized{false};

struct Parent {
  pid_t pid = 0;  // 0 in the driver
  std::string name;
};
Parent& parent() {
  static Parent p;
  return p;
}
}  // namespace

void set_parent(pid_t pid, std::string name) {
  parent().pid = pid;
  parent().name = std::move(name);
}

void set_daemon(bool daemon) { identity().daemon = daemon; }

namespace {
pid_t& driver_slot() {
  static pid_t pid = getpid();
  return pid;
}
}  // namespace

void set_driver(pid_t pid) { driver_slot() = pid; }
pid_t driver_pid() { return driver_slot(); }



void mark_initialized() { initialized = true; }

void require_init(const char* what) {
  if (identity().daemon) {
    throw ProcessError(std::string(what) +
                       ": a daemonic process cannot have children, as in Python (this process "
                       "is a Process started with set_daemon(true))");
  }
  if (!initialized && identity().role != Role::kDriver) {
    // mpx::init ran this process's role instead of returning, and the role runs no
    // user code (a pool's router): only a bug in mpx gets here.
    throw Error(std::string(what) + ": cannot be started in " + identity().name +
                ", a pool's router process");
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

char process_state(pid_t pid) {
  if (pid <= 0) return 0;
  // "pid (comm) S ...": comm may hold spaces or parentheses; the state follows the
  // last ')'.
  char buf[512];
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n <= 0) return 0;
  const std::string_view stat(buf, static_cast<std::size_t>(n));
  const auto paren = stat.rfind(')');
  return paren != std::string_view::npos && paren + 2 < stat.size() ? stat[paren + 2] : 0;
}

bool process_ended(pid_t pid) {
  if (pid <= 0) return true;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  const char state = process_state(pid);
  return state == 'Z' || state == 'X';
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

std::optional<ParentProcess> parent_process() {
  const auto& p = base::parent();
  if (p.pid <= 0) return std::nullopt;
  return ParentProcess(p.pid, p.name);
}

bool ParentProcess::is_alive() const { return getppid() == pid_; }

int ParentProcess::sentinel() const {
  // One per process, opened on first use and kept: callers poll it, never close it.
  static const int fd = static_cast<int>(syscall(SYS_pidfd_open, base::parent().pid, 0));
  return fd;
}

bool ParentProcess::join(std::chrono::milliseconds timeout) const {
  if (!is_alive()) return true;
  const int fd = sentinel();
  if (fd < 0) return !is_alive();
  pollfd p{fd, POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const int r = ::poll(&p, 1, static_cast<int>(std::max<long long>(0, std::min<long long>(left.count(), 1 << 30))));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return !is_alive();
  }
}

}  // namespace mpx

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer does not see libstdc++'s exception_ptr reference counts (libstdc++
// is not instrumented): an exception object
// shared by several calls' errors and freed by whichever thread drops it last is
// reported as a race with the catching thread's reads. The count is atomic.
// libzmq (dlopened by node agents and listening routers) and libsodium (its CURVE) are
// not instrumented either: messages pass between the caller's thread and libzmq's I/O
// thread through its lock-free pipes, which TSan cannot see.
extern "C" const char* __tsan_default_suppressions() {
  return "race:std::__exception_ptr::exception_ptr::_M_release\n"
         "called_from_lib:libzmq.so.5\n"
         "called_from_lib:libsodium.so.23\n"
         "race:libzmq.so.5\n"
         "race:libsodium.so.23\n";
}
#endif
