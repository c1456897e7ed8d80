#include "framework/spawn/spawn.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include "framework/base/base.h"
#include "mpx/errors.h"
#include "mpx/runtime.h"

extern char** environ;

namespace mpx {
namespace spawning {
namespace {

constexpr int kBootstrapFd = 3;
constexpr int kReadyFd = 4;
constexpr int kShareFd = 5;
constexpr int kInheritFd = 6;

// Descriptors inherited from the spawner (Spec::inherit_fds), until claimed.
std::mutex inherited_mu;
std::vector<int>& inherited() {
  static auto* fds = new std::vector<int>();  // guarded by inherited_mu
  return *fds;
}

const char* role_flag(Role role) {
  switch (role) {
    case Role::kRouter: return "router";
    case Role::kWorker: return "worker";
    case Role::kProcess: return "process";
    case Role::kActor: return "actor";
    case Role::kDriver: return "driver";
  }
  return "driver";
}

// Above every fixed slot of the child: a descriptor moved there is never a dup2 onto
// itself (which would keep FD_CLOEXEC).
constexpr int kFirstFreeFd = kShareFd + 1;

std::string errno_text(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err) + descriptor_advice(err);
}

// A memfd holding bytes, positioned at 0, at a descriptor number above the ones the
// child's file actions touch (dup2 onto itself would keep FD_CLOEXEC).
int make_bootstrap_fd(const std::string& bytes) {
  int fd = memfd_create("mpx-bootstrap", MFD_CLOEXEC);
  if (fd < 0) throw ProcessError(errno_text("memfd_create", errno));
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      throw ProcessError(errno_text("writing the bootstrap memfd", err));
    }
    done += static_cast<std::size_t>(n);
  }
  lseek(fd, 0, SEEK_SET);
  if (fd <= kBootstrapFd + 1) {
    int high = fcntl(fd, F_DUPFD_CLOEXEC, kFirstFreeFd);
    close(fd);
    if (high < 0) throw ProcessError(errno_text("fcntl(F_DUPFD_CLOEXEC)", errno));
    fd = high;
  }
  return fd;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

long parse_long(std::string_view v, const char* flag) {
  std::string s(v);
  char* end = nullptr;
  errno = 0;
  long x = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0) {
    throw Error(std::string("mpx: malformed ") + flag + " flag: '" + s + "'");
  }
  return x;
}

}  // namespace

void raise_descriptor_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);  // best effort: the limit stays as it was otherwise
}

std::string descriptor_advice(int err) {
  if (err != EMFILE && err != ENFILE) return "";
  if (err == ENFILE) return " (the system's open-file table is full)";
  rlimit limit{};
  std::string now = "its limit";
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    now = std::to_string(limit.rlim_cur);
  }
  return " (this process may open " + now +
         " descriptors; each pool needs about 3 per worker plus a few: raise the limit, e.g. "
         "`ulimit -n 4096`, or use fewer processes)";
}

int pidfd_open(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

void ensure_standard_fds() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
    // open returns the lowest free descriptor: fd itself, as all below it are open.
    const int opened = ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (opened >= 0 && opened != fd) {
      ::dup2(opened, fd);
      ::close(opened);
    }
  }
}

bool is_stopped(pid_t pid) {
  // T: stopped by a signal, t: stopped by a tracer.
  const char state = base::process_state(pid);
  return state == 'T' || state == 't';
}

Child spawn_self(const Spec& spec) {
  const pid_t self = getpid();
  if (spec.inherit_fds.size() > kMaxInherited) {
    throw ProcessError("cannot hand more than " + std::to_string(kMaxInherited) +
                       " descriptors to a child (got " + std::to_string(spec.inherit_fds.size()) + ")");
  }
  // Copies above every slot the child's file actions fill, so that no dup2 lands on a
  // source still to be copied (or on itself, which would keep FD_CLOEXEC).
  std::vector<int> inherit;
  auto close_inherit = [&] {
    for (int fd : inherit) close(fd);
  };
  const int above = kInheritFd + static_cast<int>(spec.inherit_fds.size());
  for (int fd : spec.inherit_fds) {
    const int high = fcntl(fd, F_DUPFD_CLOEXEC, above);
    if (high < 0) {
      const int err = errno;
      close_inherit();
      throw ProcessError(errno_text("fcntl(F_DUPFD_CLOEXEC) of a descriptor to hand over", err));
    }
    inherit.push_back(high);
  }
  int boot;
  try {
    boot = make_bootstrap_fd(spec.bootstrap);
  } catch (...) {
    close_inherit();
    throw;
  }
  int ready = spec.ready_fd;
  if (ready >= 0 && ready <= kReadyFd) {
    ready = fcntl(spec.ready_fd, F_DUPFD_CLOEXEC, kFirstFreeFd);
    if (ready < 0) {
      const int err = errno;
      close(boot);
      close_inherit();
      throw ProcessError(errno_text("fcntl(F_DUPFD_CLOEXEC)", err));
    }
  }
  std::vector<std::string> args = {
      "mpx-" + std::string(role_flag(spec.role)),
      std::string("--mpx-role=") + role_flag(spec.role),
      "--mpx-name=" + spec.name,
      // The root of the process tree, also for processes a spawned process starts.
      "--mpx-driver=" + std::to_string(spec.driver ? spec.driver : base::driver_pid()),
      "--mpx-parent=" + std::to_string(self),
      "--mpx-parent-name=" + current_process().name,
      "--mpx-bootstrap-fd=" + std::to_string(kBootstrapFd),
  };
  if (spec.ready_fd >= 0) args.push_back("--mpx-ready-fd=" + std::to_string(kReadyFd));
  // Moved above the fixed slots first, like ready, so no dup2 lands on itself.
  int share = spec.share_fd;
  if (share >= 0 && share <= kShareFd) {
    share = fcntl(spec.share_fd, F_DUPFD_CLOEXEC, kFirstFreeFd);
    if (share < 0) {
      const int err = errno;
      close(boot);
      if (ready != spec.ready_fd) close(ready);
      close_inherit();
      throw ProcessError(errno_text("fcntl(F_DUPFD_CLOEXEC)", err));
    }
  }
  if (share >= 0) args.push_back("--mpx-share-fd=" + std::to_string(kShareFd));
  if (!inherit.empty()) args.push_back("--mpx-inherit=" + std::to_string(inherit.size()));
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, boot, kBootstrapFd);
  // Both sources are above kReadyFd (see make_bootstrap_fd and the caller's pipe), so a
  // dup2 never lands on itself and always clears FD_CLOEXEC.
  if (ready >= 0) posix_spawn_file_actions_adddup2(&actions, ready, kReadyFd);
  // The slots before a filled one must not stay empty for the child to reuse by accident.
  const bool fill_share_slot = share >= 0 || !inherit.empty();
  if (fill_share_slot && ready < 0) {
    posix_spawn_file_actions_addopen(&actions, kReadyFd, "/dev/null", O_RDONLY, 0);
  }
  if (share >= 0) {
    posix_spawn_file_actions_adddup2(&actions, share, kShareFd);
  } else if (!inherit.empty()) {
    posix_spawn_file_actions_addopen(&actions, kShareFd, "/dev/null", O_RDONLY, 0);
  }
  for (std::size_t i = 0; i < inherit.size(); ++i) {
    posix_spawn_file_actions_adddup2(&actions, inherit[i], kInheritFd + static_cast<int>(i));
  }
  const int last = !inherit.empty() ? kInheritFd + static_cast<int>(inherit.size()) - 1
                   : share >= 0     ? kShareFd
                   : ready >= 0     ? kReadyFd
                                    : kBootstrapFd;
  posix_spawn_file_actions_addclosefrom_np(&actions, last + 1);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // The child starts with default signal handling and an empty mask whatever the
  // spawning thread had.
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  pid_t pid = -1;
  const int rc = posix_spawn(&pid, "/proc/self/exe", &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(boot);
  if (ready != spec.ready_fd) close(ready);
  if (share != spec.share_fd) close(share);
  close_inherit();
  if (rc != 0) throw ProcessError(errno_text("posix_spawn of /proc/self/exe", rc));
  Child child;
  child.pid = pid;
  child.pidfd = pidfd_open(pid);
  if (child.pidfd < 0) {
    const int err = errno;
    ::kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    throw ProcessError(errno_text("pidfd_open", err));
  }
  return child;
}

std::optional<int> reap(Child& child, bool block) {
  if (child.pid <= 0) return std::nullopt;
  int status = 0;
  pid_t r;
  do {
    r = waitpid(child.pid, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return std::nullopt;
  if (child.pidfd >= 0) close(child.pidfd);
  child.pidfd = -1;
  child.pid = -1;
  if (r < 0) return 0;  // already reaped elsewhere: nothing more to learn
  return status;
}

std::optional<int> reap_for(Child& child, std::chrono::milliseconds timeout) {
  if (child.pid <= 0) return std::nullopt;
  pollfd p{child.pidfd, POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const long long ms = std::min<long long>(std::max<long long>(0, left.count()), INT32_MAX);
    int r = poll(&p, 1, static_cast<int>(ms));
    if (r == 0 && ms == INT32_MAX) continue;  // a wait longer than poll's int allows
    if (r > 0) return reap(child, true);
    if (r == 0) return std::nullopt;
    if (errno != EINTR) return reap(child, false);
  }
}

int exitcode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return 0;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* text = strsignal(sig);
    return "killed by signal " + std::to_string(sig) + " (" + (text ? text : "?") + ")";
  }
  return "ended with wait status " + std::to_string(status);
}

std::optional<Bootstrap> parse_child_args(int argc, char** argv) {
  Bootstrap b;
  bool any = false;
  int boot_fd = -1;
  for (int i = 1; i < argc; ++i) {
    std::string_view a(argv[i]);
    if (!starts_with(a, "--mpx-")) continue;
    any = true;
    const auto eq = a.find('=');
    const std::string_view key = a.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? "" : a.substr(eq + 1);
    if (key == "--mpx-role") {
      if (value == "router") b.role = Role::kRouter;
      else if (value == "worker") b.role = Role::kWorker;
      else if (value == "process") b.role = Role::kProcess;
      else if (value == "actor") b.role = Role::kActor;
      else throw Error("mpx: unknown --mpx-role '" + std::string(value) + "'");
    } else if (key == "--mpx-name") {
      b.name = std::string(value);
    } else if (key == "--mpx-driver") {
      b.driver = static_cast<pid_t>(parse_long(value, "--mpx-driver"));
    } else if (key == "--mpx-parent") {
      b.parent = static_cast<pid_t>(parse_long(value, "--mpx-parent"));
    } else if (key == "--mpx-bootstrap-fd") {
      boot_fd = static_cast<int>(parse_long(value, "--mpx-bootstrap-fd"));
    } else if (key == "--mpx-ready-fd") {
      b.ready_fd = static_cast<int>(parse_long(value, "--mpx-ready-fd"));
    } else if (key == "--mpx-share-fd") {
      b.share_fd = static_cast<int>(parse_long(value, "--mpx-share-fd"));
    } else if (key == "--mpx-parent-name") {
      b.parent_name = std::string(value);
    } else if (key == "--mpx-inherit") {
      const long n = parse_long(value, "--mpx-inherit");
      if (n < 0 || n > static_cast<long>(kMaxInherited)) {
        throw Error("mpx: malformed --mpx-inherit flag: '" + std::string(value) + "'");
      }
      std::lock_guard<std::mutex> lock(inherited_mu);
      for (long i = 0; i < n; ++i) inherited().push_back(kInheritFd + static_cast<int>(i));
    } else {
      throw Error("mpx: unknown flag '" + std::string(a) + "'");
    }
  }
  if (!any) return std::nullopt;
  if (b.role == Role::kDriver || b.parent <= 0 || boot_fd < 0) {
    throw Error("mpx: incomplete child flags (need --mpx-role, --mpx-parent, --mpx-bootstrap-fd)");
  }
  char buf[65536];
  for (;;) {
    ssize_t n = read(boot_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(errno_text("mpx: reading the bootstrap fd", errno));
    if (n == 0) break;
    b.payload.append(buf, static_cast<std::size_t>(n));
  }
  close(boot_fd);
  return b;
}

void signal_ready(int ready_fd) {
  if (ready_fd < 0) return;
  const char byte = 'r';
  while (write(ready_fd, &byte, 1) < 0 && errno == EINTR) {
  }
  close(ready_fd);
}

void signal_failure(int ready_fd, const std::string& reason) {
  if (ready_fd < 0) return;
  const std::string message = "!" + reason.substr(0, kMaxStartFailure - 1);
  while (write(ready_fd, message.data(), message.size()) < 0 && errno == EINTR) {
  }
  close(ready_fd);
}

std::optional<std::string> read_ready(int ready_read_fd) {
  char buf[kMaxStartFailure];
  ssize_t n;
  while ((n = read(ready_read_fd, buf, sizeof buf)) < 0 && errno == EINTR) {
  }
  if (n == 1 && buf[0] == 'r') return std::nullopt;
  if (n > 0 && buf[0] == '!') return std::string(buf + 1, static_cast<std::size_t>(n - 1));
  return std::string();
}

int open_parent_or_exit(pid_t parent) {
  const int fd = pidfd_open(parent);
  // Checked after opening: if the parent died before, we have been re-parented.
  if (fd < 0 || getppid() != parent) _exit(1);
  return fd;
}

int claim_inherited_fd(ino_t ino) {
  std::lock_guard<std::mutex> lock(inherited_mu);
  auto& fds = inherited();
  for (auto it = fds.begin(); it != fds.end(); ++it) {
    struct stat st {};
    if (fstat(*it, &st) == 0 && st.st_ino == ino) {
      const int fd = *it;
      fds.erase(it);
      // Hidden from any later spawn (the child's own children get only what they are
      // handed).
      fcntl(fd, F_SETFD, FD_CLOEXEC);
      return fd;
    }
  }
  return -1;
}

void kill_self_when_gone(int pidfd) {
  std::thread([pidfd] {
    pollfd p{pidfd, POLLIN, 0};
    while (poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    ::kill(getpid(), SIGKILL);
  }).detach();
}

}  // namespace spawning
}  // namespace mpx
