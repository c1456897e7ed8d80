// Test support for suites that start real processes (testonly).
//
// Every process mpx spawns carries --mpx-driver=<driver pid> on its command line, so a
// test can find everything its own driver left running, whatever the nesting.
#ifndef MPX_FRAMEWORK_TESTING_TESTING_H_
#define MPX_FRAMEWORK_TESTING_TESTING_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace mpx {
namespace testing {

struct Descendant {
  pid_t pid;
  std::string cmdline;  // arguments joined by spaces
};

// Every process in /proc now, zombies included.
std::vector<pid_t> pids();

// The command line of process pid, arguments joined by spaces; empty if it is gone.
std::string cmdline_of(pid_t pid);

// Live (non-zombie) processes spawned on behalf of driver (default: this process).
std::vector<Descendant> descendants(pid_t driver = 0);

// Waits until no descendant of driver is alive; returns those still alive at timeout.
std::vector<Descendant> wait_no_descendants(std::chrono::milliseconds timeout, pid_t driver = 0);

// Whether pid has ended and not been reaped yet, or is gone (its /proc entry unreadable).
bool is_zombie(pid_t pid);

// Polls cond every few milliseconds until it holds or timeout passes; returns cond().
bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout);

// Reaps child pid, waiting up to timeout: its exit code, or -signal; after timeout it
// is killed (SIGKILL), reaped, and kTimedOut returned.
constexpr int kTimedOut = -999;
int wait_exit(pid_t pid, std::chrono::milliseconds timeout);

// A copy of bytes with 1..max_edits random byte edits (overwrite, insert, erase), for
// the mutation tests of the decoders; deterministic for a seeded rng.
std::string mutate(std::string bytes, std::mt19937& rng, int max_edits);

// Pids of the live pool workers (role worker) spawned for driver.
std::vector<pid_t> worker_pids(pid_t driver = 0);

// A command prefix that runs what follows elsewhere: in a host's network namespace
// (NetnsHosts::launcher, `nsenter --net=...`) or on a Slurm cluster's nodes
// (SlurmCluster::srun). Empty: here. argv[0] of a launcher is searched in PATH.
using Launcher = std::vector<std::string>;

// The absolute path of this executable (what /proc/self/exe points to), for a
// launcher that has to name it: /proc/self/exe would name the launcher itself.
std::string self_exe();

// The path of a Bazel runfile of this test ("tools/cli/mpx"): $TEST_SRCDIR/<workspace>/path.
std::string runfile(const std::string& path);

// A copy of this test binary started as a separate driver: it runs only gtest_filter
// (a DISABLED_ test that checks env_flag is set, then prints "READY" and blocks).
// Returns once READY was printed, with everything printed up to then in output;
// pid is -1 if the helper exited or stayed silent for 30 s. env (NAME=value) is added
// as for run_helper; launcher: where it runs (pid is then the launcher's process:
// nsenter becomes the helper, srun does not). The helper's stdout is closed once READY
// is read: a helper that goes on printing (gtest does, when its test ends) dies of
// SIGPIPE, so one meant to end by itself calls std::_Exit.
struct HelperDriver {
  pid_t pid = -1;
  std::string output;
};
HelperDriver start_helper_driver(const std::string& gtest_filter, const std::string& env_flag,
                                 const std::vector<std::string>& env = {},
                                 const Launcher& launcher = {});

// Live processes whose memory maps contain needle (e.g. a memfd name prefix), as
// "pid: map line". Scans every /proc/<pid>/maps this user can read.
std::vector<std::string> processes_mapping(const std::string& needle);

// Names in /dev/shm containing needle. mpx never creates anything there (segments are
// memfds): tests compare this before and after, to catch a change that would start to.
std::set<std::string> dev_shm_entries(const std::string& needle = "mpx");

// Bytes as lowercase hex and back, for handing packed handles to another program
// through an environment variable or a line of output.
std::string hex(const std::string& bytes);
std::string unhex(const std::string& text);

// Endpoints ("unix://@name") of the abstract unix sockets process pid listens
// on: how a test finds a live router's sockets (names end in "-front" and "-back").
// Reads /proc/<pid>/fd and /proc/net/unix; empty if pid is gone or not readable.
std::vector<std::string> listening_endpoints(pid_t pid);

// Runs a copy of this test binary to completion with only gtest_filter (a DISABLED_
// test), env (NAME=value) added to this process's environment, minus the variables
// through which Bazel collects a test's results (the helper must not write or remove
// this test's XML or premature-exit files). Killed after timeout. wait_status is -1 if
// the helper could not be started. stdio_closed: the helper starts with fds 1 and 2
// closed, as daemons do (output then stays empty). launcher: where the helper runs
// (with srun, one helper per task, their output interleaved in output).
struct HelperRun {
  int wait_status = -1;
  std::string output;  // stdout and stderr
  bool timed_out = false;
  bool exited_with(int code) const;  // exited normally (no signal, no timeout) with code
};
HelperRun run_helper(const std::string& gtest_filter, const std::vector<std::string>& env,
                     std::chrono::milliseconds timeout, bool stdio_closed = false,
                     const Launcher& launcher = {});

// Runs argv (argv[0] searched in PATH) to completion the way run_helper runs a helper:
// env added, Bazel's result variables removed, stdout and stderr in output, killed
// after timeout. inherited_fd9: a descriptor the command gets as its fd 9 (how the
// tools/cluster scripts receive the lock their caller holds), -1 for none.
HelperRun run_command(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                      std::chrono::milliseconds timeout, int inherited_fd9 = -1);

// A TCP port on 127.0.0.1 that nobody listens on now (the kernel's pick for port 0;
// another process may take it before the caller binds it, as with any such pick).
int free_tcp_port();

// Runs argv (argv[0] searched in PATH) in a new pseudo-terminal of 160x50, env added
// as for run_command: output is what the terminal showed, escape sequences and all.
// respond, called with the output so far after each read, returns keys to type ("" for
// none): how a test presses q in `mpx top`. Killed after timeout.
HelperRun run_in_terminal(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                          std::chrono::milliseconds timeout,
                          const std::function<std::string(const std::string&)>& respond = {});

}  // namespace testing
}  // namespace mpx

#endif  // MPX_FRAMEWORK_TESTING_TESTING_H_
