#include "framework/testing/testing.h"

#include <dirent.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string_view>
#include <thread>

extern char** environ;

namespace mpx {
namespace testing {
namespace {

// Processes come and go while /proc is scanned: a read that fails (ESRCH from a
// process that just exited) yields what was read so far, never an exception.
std::string read_file(const std::string& path) {
  std::string out;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  return out;
}


struct Spawned {
  pid_t pid = -1;
  int out = -1;  // read end of the process's stdout (and stderr, if asked)
};

enum class Output { kStdout, kStdoutAndStderr, kNone };

// env added to this process's environment minus Bazel's and GoogleTest's result-file
// variables (see spawn_process).
std::vector<std::string> helper_environment(const std::vector<std::string>& env) {
  static const char* const kDropped[] = {"XML_OUTPUT_FILE=",       "TEST_PREMATURE_EXIT_FILE=",
                                         "TEST_SHARD_STATUS_FILE=", "TEST_WARNINGS_OUTPUT_FILE=",
                                         "TEST_SHARD_INDEX=",       "TEST_TOTAL_SHARDS=",
                                         "GTEST_"};
  std::vector<std::string> env_strings = env;
  for (char** e = environ; *e; ++e) {
    const std::string_view var(*e);
    bool keep = true;
    for (const char* prefix : kDropped) keep = keep && var.rfind(prefix, 0) != 0;
    if (keep) env_strings.emplace_back(var);
  }
  return env_strings;
}

// Starts argv (argv[0] searched in PATH; "/proc/self/exe" is this binary) with env
// added to this process's environment minus Bazel's and GoogleTest's result-file
// variables: the results belong to this test (a helper running as another user could
// not write them, and gtest would remove this test's premature-exit marker).
Spawned spawn_process(const std::vector<std::string>& args, const std::vector<std::string>& env,
                      Output output, int inherited_fd9 = -1) {
  Spawned spawned;
  int out[2];
  if (args.empty() || pipe2(out, O_CLOEXEC) != 0) return spawned;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (output == Output::kNone) {
    // As a daemon or a service starts: no stdout, no stderr at all.
    posix_spawn_file_actions_addclose(&actions, 1);
    posix_spawn_file_actions_addclose(&actions, 2);
  } else {
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    if (output == Output::kStdoutAndStderr) posix_spawn_file_actions_adddup2(&actions, out[1], 2);
  }
  // dup2 clears close-on-exec on the copy; onto itself it would not, so go through 10.
  if (inherited_fd9 >= 0) {
    posix_spawn_file_actions_adddup2(&actions, inherited_fd9, 10);
    posix_spawn_file_actions_adddup2(&actions, 10, 9);
    posix_spawn_file_actions_addclose(&actions, 10);
  }
  std::vector<std::string> arg_strings = args;
  std::vector<char*> argv;
  for (auto& a : arg_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings = helper_environment(env);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  const int err = args[0] == "/proc/self/exe"
                      ? posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), envp.data())
                      : posix_spawnp(&pid, args[0].c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (err != 0) {
    close(out[0]);
    return spawned;
  }
  spawned.pid = pid;
  spawned.out = out[0];
  return spawned;
}

// The command line of a helper: this binary running only gtest_filter (disabled
// tests included), here or through launcher.
std::vector<std::string> helper_args(const std::string& gtest_filter, const Launcher& launcher) {
  std::vector<std::string> args = launcher;
  args.push_back(launcher.empty() ? "/proc/self/exe" : self_exe());
  args.push_back("--gtest_filter=" + gtest_filter);
  args.push_back("--gtest_also_run_disabled_tests");
  return args;
}

// Reads the output of spawned until it has exited (not until EOF: a process it
// started may keep the pipe open), then what is left in the pipe; kills it after
// timeout.
HelperRun finish(const Spawned& spawned, std::chrono::milliseconds timeout,
                 const std::function<std::string(const std::string&)>& respond = {}) {
  HelperRun run;
  if (spawned.pid < 0) return run;
  const pid_t pid = spawned.pid;
  const int fd = spawned.out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  fcntl(fd, F_SETFL, O_NONBLOCK);
  auto drain = [&] {
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) run.output.append(buf, static_cast<std::size_t>(n));
  };
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    poll(&p, 1, 20);
    drain();
    if (respond) {
      const std::string keys = respond(run.output);
      if (!keys.empty() && write(fd, keys.data(), keys.size()) < 0) {
      }
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      drain();
      run.wait_status = status;
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      drain();
      run.wait_status = status;
      run.timed_out = true;
      break;
    }
  }
  close(fd);
  return run;
}

}  // namespace

bool is_zombie(pid_t pid) {
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() || stat[close + 2] == 'Z' ||
         stat[close + 2] == 'X';
}

std::string cmdline_of(pid_t pid) {
  std::string cmd = read_file("/proc/" + std::to_string(pid) + "/cmdline");
  if (!cmd.empty() && cmd.back() == '\0') cmd.pop_back();
  for (char& c : cmd) {
    if (c == '\0') c = ' ';
  }
  return cmd;
}

std::vector<pid_t> pids() {
  std::vector<pid_t> out;
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return out;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (end != e->d_name && *end == '\0' && pid > 0) out.push_back(static_cast<pid_t>(pid));
  }
  closedir(dir);
  return out;
}

std::vector<Descendant> descendants(pid_t driver) {
  if (driver == 0) driver = getpid();
  const std::string marker = "--mpx-driver=" + std::to_string(driver);
  std::vector<Descendant> out;
  for (const pid_t pid : pids()) {
    const std::string cmd = cmdline_of(pid);
    // Match the whole flag, not a prefix of a longer pid.
    if ((cmd + " ").find(marker + " ") == std::string::npos) continue;
    if (is_zombie(pid)) continue;
    out.push_back({pid, cmd});
  }
  return out;
}

std::vector<Descendant> wait_no_descendants(std::chrono::milliseconds timeout, pid_t driver) {
  std::vector<Descendant> left;
  wait_until([&] { return (left = descendants(driver)).empty(); }, timeout);
  return left;
}

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline) return cond();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

int wait_exit(pid_t pid, std::chrono::milliseconds timeout) {
  int status = 0;
  if (!wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout)) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return kTimedOut;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

std::string mutate(std::string bytes, std::mt19937& rng, int max_edits) {
  const int edits = 1 + static_cast<int>(rng() % static_cast<unsigned>(max_edits));
  for (int e = 0; e < edits && !bytes.empty(); ++e) {
    const std::size_t at = rng() % bytes.size();
    switch (rng() % 3) {
      case 0: bytes[at] = static_cast<char>(rng()); break;
      case 1: bytes.insert(at, 1, static_cast<char>(rng())); break;
      case 2: bytes.erase(at, 1); break;
    }
  }
  return bytes;
}

std::vector<pid_t> worker_pids(pid_t driver) {
  std::vector<pid_t> out;
  for (const auto& d : descendants(driver)) {
    if (d.cmdline.find("--mpx-role=worker") != std::string::npos) out.push_back(d.pid);
  }
  return out;
}

HelperDriver start_helper_driver(const std::string& gtest_filter, const std::string& env_flag,
                                 const std::vector<std::string>& env, const Launcher& launcher) {
  HelperDriver helper;
  std::vector<std::string> helper_env = env;
  helper_env.push_back(env_flag + "=1");
  const Spawned spawned =
      spawn_process(helper_args(gtest_filter, launcher), helper_env, Output::kStdout);
  if (spawned.pid < 0) return helper;
  const pid_t pid = spawned.pid;
  const int fd = spawned.out;
  pollfd p{fd, POLLIN, 0};
  while (helper.output.find("READY") == std::string::npos && poll(&p, 1, 30000) > 0) {
    char buf[256];
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    helper.output.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  if (helper.output.find("READY") != std::string::npos) {
    helper.pid = pid;
  } else {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  return helper;
}

std::vector<std::string> processes_mapping(const std::string& needle) {
  std::vector<std::string> found;
  for (const pid_t pid : pids()) {
    const std::string maps = read_file("/proc/" + std::to_string(pid) + "/maps");
    for (std::size_t at = maps.find(needle); at != std::string::npos; at = maps.find(needle, at + 1)) {
      const std::size_t begin = maps.rfind('\n', at);
      const std::size_t stop = maps.find('\n', at);
      found.push_back(std::to_string(pid) + ": " +
                      maps.substr(begin == std::string::npos ? 0 : begin + 1,
                                  (stop == std::string::npos ? maps.size() : stop) -
                                      (begin == std::string::npos ? 0 : begin + 1)));
    }
  }
  return found;
}

std::set<std::string> dev_shm_entries(const std::string& needle) {
  std::set<std::string> names;
  if (DIR* d = opendir("/dev/shm")) {
    while (dirent* e = readdir(d)) {
      if (std::string(e->d_name).find(needle) != std::string::npos) names.insert(e->d_name);
    }
    closedir(d);
  }
  return names;
}

std::string hex(const std::string& bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

std::string unhex(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i + 1 < text.size(); i += 2) {
    out += static_cast<char>(std::stoi(text.substr(i, 2), nullptr, 16));
  }
  return out;
}

std::vector<std::string> listening_endpoints(pid_t pid) {
  std::vector<std::string> out;
  const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
  std::vector<std::string> inodes;  // "socket:[123]" -> "123"
  DIR* dir = opendir(fd_dir.c_str());
  if (dir == nullptr) return out;
  while (dirent* e = readdir(dir)) {
    char target[64];
    const ssize_t n = readlink((fd_dir + "/" + e->d_name).c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    const std::string link(target, static_cast<std::size_t>(n));
    if (link.rfind("socket:[", 0) == 0 && link.back() == ']') {
      inodes.push_back(link.substr(8, link.size() - 9));
    }
  }
  closedir(dir);
  // "Num RefCount Protocol Flags Type St Inode Path"; Flags 00010000: listening.
  const std::string table = read_file("/proc/net/unix");
  std::size_t begin = table.find('\n');
  while (begin != std::string::npos && begin + 1 < table.size()) {
    const std::size_t end = table.find('\n', begin + 1);
    const std::string line =
        table.substr(begin + 1, (end == std::string::npos ? table.size() : end) - begin - 1);
    begin = end;
    std::vector<std::string> fields;
    std::size_t at = 0;
    while (at < line.size()) {
      const std::size_t start = line.find_first_not_of(' ', at);
      if (start == std::string::npos) break;
      const std::size_t stop = line.find(' ', start);
      fields.push_back(line.substr(start, stop == std::string::npos ? std::string::npos : stop - start));
      at = stop == std::string::npos ? line.size() : stop;
    }
    if (fields.size() < 8 || fields[3] != "00010000" || fields[7].empty() || fields[7][0] != '@') {
      continue;
    }
    if (std::find(inodes.begin(), inodes.end(), fields[6]) == inodes.end()) continue;
    out.push_back("unix://" + fields[7]);
  }
  return out;
}

bool HelperRun::exited_with(int code) const {
  return !timed_out && wait_status >= 0 && WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == code;
}

HelperRun run_helper(const std::string& gtest_filter, const std::vector<std::string>& env,
                     std::chrono::milliseconds timeout, bool stdio_closed, const Launcher& launcher) {
  return finish(spawn_process(helper_args(gtest_filter, launcher), env,
                              stdio_closed ? Output::kNone : Output::kStdoutAndStderr),
                timeout);
}

HelperRun run_command(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                      std::chrono::milliseconds timeout, int inherited_fd9) {
  return finish(spawn_process(argv, env, Output::kStdoutAndStderr, inherited_fd9), timeout);
}

int free_tcp_port() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

HelperRun run_in_terminal(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                          std::chrono::milliseconds timeout,
                          const std::function<std::string(const std::string&)>& respond) {
  if (argv.empty()) return HelperRun();
  // Everything the child needs is built before the fork: after it, only exec.
  std::vector<std::string> arg_strings = argv;
  std::vector<char*> args;
  for (auto& a : arg_strings) args.push_back(a.data());
  args.push_back(nullptr);
  std::vector<std::string> env_strings = helper_environment(env);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  winsize size{};
  size.ws_row = 50;
  size.ws_col = 160;
  int master = -1;
  const pid_t pid = forkpty(&master, nullptr, nullptr, &size);
  if (pid < 0) return HelperRun();
  if (pid == 0) {
    execvpe(args[0], args.data(), envp.data());
    _exit(127);
  }
  Spawned spawned;
  spawned.pid = pid;
  spawned.out = master;
  return finish(spawned, timeout, respond);
}

std::string self_exe() {
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  return n > 0 ? std::string(path, static_cast<std::size_t>(n)) : std::string("/proc/self/exe");
}

std::string runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  return std::string(srcdir ? srcdir : ".") + "/" + (workspace ? workspace : "mpx") + "/" + path;
}

}  // namespace testing
}  // namespace mpx
