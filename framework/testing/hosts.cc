#include "framework/testing/hosts.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "tools/cpp/runfiles/runfiles.h"

extern char** environ;

namespace mpx {
namespace testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Shared with tools/cluster (netns, lib.sh): where slot locks live, and the cluster's.
constexpr char kLockDir[] = "/run/mpx-netns";
constexpr char kClusterDir[] = "/run/mpx-cluster";
constexpr int kClusterSlot = 0;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

// The directory holding tools/cluster's scripts in this binary's runfiles, or why
// there is none.
struct ToolsDir {
  std::string path;
  std::string error;
};

const ToolsDir& tools_dir() {
  static const ToolsDir dir = [] {
    using bazel::tools::cpp::runfiles::Runfiles;
    ToolsDir found;
    std::string error;
    std::unique_ptr<Runfiles> runfiles(std::getenv("TEST_SRCDIR") != nullptr
                                           ? Runfiles::CreateForTest(&error)
                                           : Runfiles::Create(self_exe(), &error));
    const std::string netns = runfiles ? runfiles->Rlocation("mpx/tools/cluster/netns") : "";
    if (!netns.empty() && access(netns.c_str(), X_OK) == 0) {
      found.path = netns.substr(0, netns.rfind('/'));
    } else {
      found.error = "tools/cluster scripts not found in the runfiles of " + self_exe() +
                    " (depend on //framework/testing:hosts)" +
                    (error.empty() ? "" : ": " + error);
    }
    return found;
  }();
  return dir;
}

std::string tool(const std::string& name) {
  const ToolsDir& dir = tools_dir();
  if (dir.path.empty()) throw std::runtime_error(dir.error);
  return dir.path + "/" + name;
}

std::string describe(const std::vector<std::string>& argv, const HelperRun& run) {
  std::string what;
  for (const auto& a : argv) what += (what.empty() ? "" : " ") + a;
  if (run.timed_out) return "`" + what + "` timed out:\n" + run.output;
  if (run.wait_status < 0) return "`" + what + "` could not be started";
  if (WIFSIGNALED(run.wait_status)) {
    return "`" + what + "` killed by signal " + std::to_string(WTERMSIG(run.wait_status)) + ":\n" +
           run.output;
  }
  return "`" + what + "` exited with " + std::to_string(WEXITSTATUS(run.wait_status)) + ":\n" +
         run.output;
}

// Runs a tools/cluster script; throws std::runtime_error with its output on failure.
std::string run_tool(const std::vector<std::string>& argv, milliseconds timeout, int fd9 = -1) {
  const HelperRun run = run_command(argv, {}, timeout, fd9);
  if (!run.exited_with(0)) throw std::runtime_error(describe(argv, run));
  return run.output;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

// Why the machine cannot do it, as `script flag` says (netns check, up --check), or
// nullopt.
std::optional<std::string> check(const std::string& script, const std::string& flag) {
  if (geteuid() != 0) return "not root (uid " + std::to_string(geteuid()) + "): needs root";
  if (tools_dir().path.empty()) return tools_dir().error;
  const std::vector<std::string> argv = {tool(script), flag};
  const HelperRun run = run_command(argv, {}, seconds(60));
  if (run.exited_with(0)) return std::nullopt;
  std::string reason = run.output;
  while (!reason.empty() && reason.back() == '\n') reason.pop_back();
  return reason.empty() ? describe(argv, run) : reason;
}

// --- Janitor, SlotLease ----------------------------------------------------------------

// Runs a cleanup command when its owner lets go (release()) or dies, however it dies:
// a process in a session of its own waits for EOF on a pipe that only the owner holds,
// then runs the command. It holds the owner's lock (as fd 9) until the command is
// done, so nobody takes over what is being cleaned.
class Janitor {
 public:
  Janitor() = default;
  Janitor(const Janitor&) = delete;
  Janitor& operator=(const Janitor&) = delete;
  ~Janitor() { release(); }

  // Starts the process that will run cleanup (argv[0] searched in PATH) with fd 9 a
  // copy of lock_fd and its output in log_path. Throws std::runtime_error if it cannot
  // be started.
  void start(const std::vector<std::string>& cleanup, int lock_fd, const std::string& log_path);

  // Runs the cleanup now and waits for it (at most timeout, then kills it). Returns an
  // empty string on success, else what failed with the cleanup's log. Idempotent; does
  // nothing if never started.
  std::string release(milliseconds timeout = seconds(60));

 private:
  pid_t pid_ = -1;
  int owner_end_ = -1;
  std::string log_path_;
};

void Janitor::start(const std::vector<std::string>& cleanup, int lock_fd, const std::string& log_path) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[0], 0);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  // dup2 clears close-on-exec on the copy; onto itself it would not, so go through 10.
  posix_spawn_file_actions_adddup2(&actions, lock_fd, 10);
  posix_spawn_file_actions_adddup2(&actions, 10, 9);
  posix_spawn_file_actions_addclose(&actions, 10);
  // A session of its own: Bazel ends a test that times out by signalling its process
  // group, and the janitor is there for exactly that case. Default signal dispositions
  // and an empty mask, whatever this process set.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGHUP, SIGINT, SIGQUIT, SIGPIPE, SIGTERM}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  // Waits for EOF: this process closes its end in release(), the kernel when it dies.
  std::vector<std::string> args = {"/bin/sh", "-c", "cat >/dev/null; exec \"$@\"", "mpx-janitor"};
  args.insert(args.end(), cleanup.begin(), cleanup.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int err = posix_spawn(&pid, "/bin/sh", &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(pipe_fds[0]);
  if (err != 0) {
    close(pipe_fds[1]);
    throw std::runtime_error(std::string("cannot start the janitor: ") + std::strerror(err));
  }
  pid_ = pid;
  owner_end_ = pipe_fds[1];
  log_path_ = log_path;
}

std::string Janitor::release(milliseconds timeout) {
  if (pid_ < 0) return "";
  close(owner_end_);
  owner_end_ = -1;
  int status = 0;
  const bool done = wait_until([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, timeout);
  if (!done) {
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  if (done && WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
  return std::string(done ? "cleanup failed" : "cleanup timed out") + " (log " + log_path_ +
         "):\n" + slurp(log_path_);
}

}  // namespace

// Slot S's lock (/run/mpx-netns/S.lock) held by this process, and the janitor that
// runs cleanup when the lease ends or this process dies. The lock outlives the
// cleanup: nobody takes the slot while it is being cleaned.
class SlotLease {
 public:
  // Takes slot's lock, waiting up to wait; nullptr if it is still held then, with
  // *holder saying by whom.
  static std::unique_ptr<SlotLease> take(int slot, seconds wait, std::string* holder) {
    mkdir(kLockDir, 0755);
    const std::string path = std::string(kLockDir) + "/" + std::to_string(slot) + ".lock";
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
    if (!wait_until([&] { return flock(fd, LOCK_EX | LOCK_NB) == 0; }, wait)) {
      *holder = slurp(path);
      close(fd);
      return nullptr;
    }
    // Who holds it, for people and for the messages of those who wait; the lock is
    // what counts, so a failed write is no failure.
    const std::string owner = "pid " + std::to_string(getpid()) + " " + self_exe() + "\n";
    if (ftruncate(fd, 0) != 0 || pwrite(fd, owner.data(), owner.size(), 0) < 0) {
    }
    return std::unique_ptr<SlotLease>(new SlotLease(slot, fd));
  }

  SlotLease(const SlotLease&) = delete;
  SlotLease& operator=(const SlotLease&) = delete;

  ~SlotLease() {
    const std::string failed = janitor_.release();
    if (!failed.empty()) std::fprintf(stderr, "mpx::testing: slot %d: %s\n", slot_, failed.c_str());
    close(fd_);
  }

  // From now on, cleanup (a tools/cluster script) runs when the lease ends.
  void clean_up_with(const std::vector<std::string>& cleanup) {
    janitor_.start(cleanup, fd_, std::string(kLockDir) + "/" + std::to_string(slot_) + ".log");
  }

  int slot() const { return slot_; }
  int fd() const { return fd_; }

 private:
  SlotLease(int slot, int fd) : slot_(slot), fd_(fd) {}

  const int slot_;
  const int fd_;
  Janitor janitor_;
};

namespace {

// What every constructor checks first: a count of 1..max, and a machine that can.
void refuse_unless(const std::string& who, const std::string& what, int count, int max,
                   const std::optional<std::string>& unavailable) {
  if (count < 1 || count > max) {
    throw std::invalid_argument(who + ": " + what + " must be 1-" + std::to_string(max) + ", not " +
                                std::to_string(count));
  }
  if (unavailable) throw std::runtime_error(who + ": " + *unavailable);
}

ino_t inode_of(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

}  // namespace

// --- NetnsHosts ----------------------------------------------------------------------

std::optional<std::string> NetnsHosts::unavailable() {
  static const std::optional<std::string> reason = check("netns", "check");
  return reason;
}

NetnsHosts::NetnsHosts(int hosts) : hosts_(hosts) {
  refuse_unless("NetnsHosts", "hosts", hosts, 253, unavailable());
  const std::string netns = tool("netns");
  run_tool({netns, "sweep"}, seconds(120));
  std::string holder;
  for (int slot = 1; slot <= 254 && !lease_; ++slot) lease_ = SlotLease::take(slot, seconds(0), &holder);
  if (!lease_) throw std::runtime_error("NetnsHosts: all 254 slots of " + std::string(kLockDir) + " are taken");
  // From here on the lease removes whatever was made, even if the rest throws.
  lease_->clean_up_with({netns, "del", std::to_string(slot())});
  run_tool({netns, "add", std::to_string(slot()), std::to_string(hosts_)}, seconds(120), lease_->fd());
  for (int h = 1; h <= hosts_; ++h) netns_ids_.push_back(inode_of("/run/netns/" + this->netns(h)));
}

NetnsHosts::~NetnsHosts() = default;

int NetnsHosts::slot() const { return lease_->slot(); }

void NetnsHosts::check_host(int host) const {
  if (host < 1 || host > hosts_) {
    throw std::out_of_range("NetnsHosts: host " + std::to_string(host) + " of 1-" + std::to_string(hosts_));
  }
}

std::string NetnsHosts::bridge_address() const { return "10.231." + std::to_string(slot()) + ".1"; }

std::string NetnsHosts::address(int host) const {
  check_host(host);
  return "10.231." + std::to_string(slot()) + "." + std::to_string(host + 1);
}

std::string NetnsHosts::netns(int host) const {
  check_host(host);
  return "mpx" + std::to_string(slot()) + "h" + std::to_string(host);
}

std::string NetnsHosts::interface(int host) const {
  check_host(host);
  return "mpx" + std::to_string(slot()) + "v" + std::to_string(host);
}

Launcher NetnsHosts::launcher(int host) const {
  return {"nsenter", "--net=/run/netns/" + netns(host), "--"};
}

ino_t NetnsHosts::netns_id(int host) const {
  check_host(host);
  return netns_ids_[static_cast<std::size_t>(host - 1)];
}

void NetnsHosts::set_link(const char* how, int host) {
  check_host(host);
  run_tool({tool("netns"), how, std::to_string(slot()), std::to_string(host)}, seconds(30));
}

void NetnsHosts::cut(int host) { set_link("cut", host); }

void NetnsHosts::restore(int host) { set_link("restore", host); }

void NetnsHosts::throttle(int host, const std::string& rate) {
  check_host(host);
  if (rate == "off") {
    run_tool({tool("netns"), "unthrottle", std::to_string(slot()), std::to_string(host)}, seconds(30));
  } else {
    run_tool({tool("netns"), "throttle", std::to_string(slot()), std::to_string(host), rate}, seconds(30));
  }
}

std::vector<std::string> NetnsHosts::leftovers(int slot) {
  return lines(run_tool({tool("netns"), "list", std::to_string(slot)}, seconds(30)));
}

// --- SlurmCluster --------------------------------------------------------------------

std::optional<std::string> SlurmCluster::unavailable() {
  static const std::optional<std::string> reason = check("up", "--check");
  return reason;
}

SlurmCluster::SlurmCluster(int nodes) : nodes_(nodes) {
  refuse_unless("SlurmCluster", "nodes", nodes, 200, unavailable());
  const char* wait_env = std::getenv("MPX_CLUSTER_LOCK_WAIT");
  const seconds wait(wait_env != nullptr ? std::atoi(wait_env) : 300);
  std::string holder;
  lease_ = SlotLease::take(kClusterSlot, wait, &holder);
  if (!lease_) {
    throw std::runtime_error("SlurmCluster: the cluster lock " + std::string(kLockDir) + "/" +
                             std::to_string(kClusterSlot) + ".lock is still held after " +
                             std::to_string(wait.count()) + " s, by " + holder);
  }
  // From here on the lease stops whatever was started, even if the rest throws.
  lease_->clean_up_with({tool("down")});
  run_tool({tool("up"), "--fresh", "--nodes", std::to_string(nodes_)}, seconds(180), lease_->fd());
  for (int k = 1; k <= nodes_; ++k) netns_ids_.push_back(inode_of("/run/netns/" + netns(k)));
}

SlurmCluster::~SlurmCluster() = default;

std::string SlurmCluster::node_name(int node) const {
  if (node < 1 || node > nodes_) {
    throw std::out_of_range("SlurmCluster: node " + std::to_string(node) + " of 1-" + std::to_string(nodes_));
  }
  return "node" + std::to_string(node);
}

std::string SlurmCluster::address(int node) const {
  node_name(node);
  return "10.231." + std::to_string(kClusterSlot) + "." + std::to_string(node + 1);
}

std::string SlurmCluster::netns(int node) const {
  node_name(node);
  return "mpx" + std::to_string(kClusterSlot) + "h" + std::to_string(node);
}

ino_t SlurmCluster::netns_id(int node) const {
  node_name(node);
  return netns_ids_[static_cast<std::size_t>(node - 1)];
}

std::string SlurmCluster::head_address() const { return "10.231." + std::to_string(kClusterSlot) + ".1"; }

std::string SlurmCluster::conf() const { return std::string(kClusterDir) + "/slurm.conf"; }

Launcher SlurmCluster::srun(const std::vector<std::string>& args) const {
  // --immediate: a request that cannot be met within a minute fails instead of waiting
  // in the queue until the test times out.
  Launcher launcher = {"env", "SLURM_CONF=" + conf(), "srun", "--immediate=60"};
  launcher.insert(launcher.end(), args.begin(), args.end());
  return launcher;
}

std::vector<std::string> SlurmCluster::leftovers() {
  return lines(run_tool({tool("down"), "--dry-run"}, seconds(30)));
}

// --- processes -----------------------------------------------------------------------

std::vector<Descendant> processes_in_netns(const std::vector<ino_t>& ids) {
  std::vector<Descendant> out;
  for (const pid_t pid : pids()) {
    // A zombie has left its namespaces: stat fails on its ns links.
    const ino_t id = inode_of("/proc/" + std::to_string(pid) + "/ns/net");
    if (id != 0 && std::find(ids.begin(), ids.end(), id) != ids.end()) out.push_back({pid, cmdline_of(pid)});
  }
  return out;
}

}  // namespace testing
}  // namespace mpx
