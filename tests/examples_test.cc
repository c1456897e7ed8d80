// Smoke test for examples/: runs every example binary for real, as a user would, and
// checks that it exits 0 on its own, prints what its header promises, and leaves no
// process behind (router, pool workers, Process children).
//
// Each example runs under posix_spawn with stdout and stderr captured through pipes and
// a 60 s bound (killed and failed after that). The binaries come from `data` and are
// found through the runfiles tree: $TEST_SRCDIR/$TEST_WORKSPACE/examples/<topic>/<name>.

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "framework/testing/testing.h"

extern char** environ;

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

constexpr auto kRunLimit = seconds(60);
// After the example exits, how long its pipes may stay open (a leftover process
// holding them is a leak, reported by the descendants check).
constexpr auto kDrainLimit = seconds(5);
constexpr auto kCleanupLimit = seconds(5);

struct RunResult {
  pid_t pid = 0;
  bool exited = false;    // reaped, one way or another
  bool timed_out = false;  // killed after kRunLimit
  int exit_code = -1;     // exit status, or -signal
  std::string out;        // stdout
  std::string err;        // stderr
};

// target: "<topic>/<name>" in the runfiles, or an absolute path (a copy of one).
std::string ExamplePath(const std::string& target) {
  if (!target.empty() && target[0] == '/') return target;
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  return std::string(srcdir ? srcdir : ".") + "/" + (workspace ? workspace : "mpx") +
         "/examples/" + target;
}

// The test's environment with MPX_LOG pinned (info unless a case asks otherwise), so
// log checks do not depend on the caller's setting.
std::vector<std::string> ExampleEnvironment(const std::string& log_level) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "MPX_LOG=", 8) != 0) env.emplace_back(*e);
  }
  env.emplace_back("MPX_LOG=" + log_level);
  return env;
}

void RecordStatus(int status, RunResult& result) {
  result.exited = true;
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.exit_code = -WTERMSIG(status);
  }
}

// Runs examples/<target> with no arguments; captures its output and exit status.
RunResult RunExample(const std::string& target, const std::string& log_level) {
  RunResult result;
  const std::string path = ExamplePath(target);
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << std::strerror(errno);
    return result;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], STDERR_FILENO);

  std::vector<std::string> env = ExampleEnvironment(log_level);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string arg0 = path;
  char* argv[] = {arg0.data(), nullptr};

  const int rc = posix_spawn(&result.pid, path.c_str(), &actions, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (rc != 0) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    ADD_FAILURE() << "posix_spawn " << path << ": " << std::strerror(rc);
    result.pid = 0;
    return result;
  }

  const auto deadline = Clock::now() + kRunLimit;
  Clock::time_point drain_deadline = Clock::time_point::max();
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_pipes = 2;
  while (open_pipes > 0 || !result.exited) {
    if (!result.exited) {
      int status = 0;
      if (waitpid(result.pid, &status, WNOHANG) == result.pid) {
        RecordStatus(status, result);
        drain_deadline = Clock::now() + kDrainLimit;
      } else if (Clock::now() >= deadline) {
        result.timed_out = true;
        kill(result.pid, SIGKILL);
        if (waitpid(result.pid, &status, 0) == result.pid) RecordStatus(status, result);
        drain_deadline = Clock::now() + kDrainLimit;
      }
    }
    if (open_pipes == 0) {  // only the exit is left to wait for
      poll(nullptr, 0, 20);
      continue;
    }
    if (Clock::now() >= drain_deadline) break;
    if (poll(fds, 2, 20) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(fds[i].fd);
        fds[i].fd = -1;  // poll ignores negative descriptors
        --open_pipes;
      }
    }
  }
  for (auto& fd : fds) {
    if (fd.fd >= 0) close(fd.fd);
  }
  return result;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

bool HasLine(const std::string& text, const std::string& line) {
  const auto lines = Lines(text);
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string Describe(const RunResult& r) {
  return "pid " + std::to_string(r.pid) + ", exit " + std::to_string(r.exit_code) +
         (r.timed_out ? " (killed after 60 s)" : "") + "\n--- stdout ---\n" + r.out +
         "--- stderr ---\n" + r.err;
}

std::string DescribeLeft(const std::vector<mpx::testing::Descendant>& left) {
  std::string s;
  for (const auto& d : left) s += "  pid " + std::to_string(d.pid) + ": " + d.cmdline + "\n";
  return s;
}

// Runs the example, asserts a clean exit and no leftover processes, returns the result.
RunResult RunClean(const std::string& target, const std::string& log_level = "info") {
  RunResult r = RunExample(target, log_level);
  EXPECT_NE(r.pid, 0) << target;
  EXPECT_FALSE(r.timed_out) << target << ": " << Describe(r);
  EXPECT_TRUE(r.exited) << target << ": " << Describe(r);
  EXPECT_EQ(r.exit_code, 0) << target << ": " << Describe(r);
  if (r.pid != 0) {
    const auto left = mpx::testing::wait_no_descendants(
        std::chrono::duration_cast<milliseconds>(kCleanupLimit), r.pid);
    EXPECT_TRUE(left.empty()) << target << " left processes behind:\n" << DescribeLeft(left);
    for (const auto& d : left) kill(d.pid, SIGKILL);  // do not leak into later cases
  }
  return r;
}

#define EXPECT_LINE(text, line) \
  EXPECT_TRUE(HasLine(text, line)) << "missing line \"" << (line) << "\" in\n" << (text)
#define EXPECT_CONTAINS(text, part) \
  EXPECT_TRUE(Contains(text, part)) << "missing \"" << (part) << "\" in\n" << (text)

TEST(ExamplesTest, BasicProcess) {
  const RunResult r = RunClean("process/basic_process");
  EXPECT_LINE(r.out, "a new process ran (Process-1)");
  EXPECT_LINE(r.out, "joined Process-1, exitcode 0");
}

TEST(ExamplesTest, ProcessWithArgs) {
  const RunResult r = RunClean("process/process_with_args");
  EXPECT_LINE(r.out, "worker 5 ran: hello from the parent");
  EXPECT_LINE(r.out, "worker exitcode 0");
}

TEST(ExamplesTest, PoolMap) {
  const RunResult r = RunClean("pool/pool_map");
  EXPECT_EQ(r.out, "0 1 4 9 16 25 36 49 64 81\n");
}

TEST(ExamplesTest, LogLevelComesFromTheEnvironment) {
  const RunResult debug = RunClean("pool/pool_map", "debug");
  EXPECT_EQ(debug.out, "0 1 4 9 16 25 36 49 64 81\n");
  // The router's own debug lines, tagged with its name and pid.
  EXPECT_CONTAINS(debug.err, "[Router/");
  EXPECT_CONTAINS(debug.err, "debug: router: spawned PoolWorker-1");
  const RunResult quiet = RunClean("pool/pool_map", "off");
  EXPECT_EQ(quiet.out, "0 1 4 9 16 25 36 49 64 81\n");
  EXPECT_EQ(quiet.err, "");
}

TEST(ExamplesTest, PoolStarmap) {
  const RunResult r = RunClean("pool/pool_starmap");
  EXPECT_EQ(r.out, "2 12 30 56\n");
}

TEST(ExamplesTest, CpuCountPool) {
  // The example inherits our affinity mask, so it sees the same CPU count.
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  const int cpus = std::max(1, CPU_COUNT(&set));
  const int size = std::max(1, cpus - 1);

  const RunResult r = RunClean("pool/cpu_count_pool");
  EXPECT_LINE(r.out, "cpu_count " + std::to_string(cpus) + ", pool size " +
                         std::to_string(size));
  EXPECT_LINE(r.out, "pool has " + std::to_string(size) + " workers");
  EXPECT_LINE(r.out, "count 100");
  EXPECT_LINE(r.out, "sum 328350");  // sum of x*x for x in range(100)
  EXPECT_LINE(r.out, "last 9801");
}

TEST(ExamplesTest, ManyMachines) {
  const RunResult r = RunClean("pool/many_machines");
  EXPECT_LINE(r.out, "agents dial tcp://127.0.0.1:<port>");
  EXPECT_LINE(r.out, "5 workers serve: 1 here, 2 per agent");
  EXPECT_LINE(r.out, "sum of squares below 100000: 333328333350000");
  EXPECT_LINE(r.out, "agent exited with code 0");
}

TEST(ExamplesTest, StructTasks) {
  const RunResult r = RunClean("pool/struct_tasks");
  EXPECT_EQ(r.out,
            "map: (1, 2) -> (3, 2)\n"
            "map: (3, 4) -> (7, 12)\n"
            "map: (5, 6) -> (11, 30)\n"
            "apply_async: (10, 20) -> (30, 200)\n");
}

TEST(ExamplesTest, ProcessLogging) {
  const RunResult r = RunClean("logging/process_logging");
  EXPECT_LINE(r.out, "squares 1 4 9 16");

  // "process ワーカー1 pid <pid> exitcode 0": the child's log line carries that pid.
  int child_pid = 0;
  const std::string prefix = "process ワーカー1 pid ";
  for (const auto& line : Lines(r.out)) {
    if (line.rfind(prefix, 0) == 0) {
      child_pid = std::atoi(line.c_str() + prefix.size());
      EXPECT_LINE(r.out, prefix + std::to_string(child_pid) + " exitcode 0");
    }
  }
  ASSERT_GT(child_pid, 0) << Describe(r);
  EXPECT_NE(child_pid, r.pid);
  EXPECT_CONTAINS(r.err, "[ワーカー1/" + std::to_string(child_pid) +
                             "] info: process ワーカー1 started");
  EXPECT_CONTAINS(r.err, "[MainProcess/" + std::to_string(r.pid) + "] info: main started");
  EXPECT_CONTAINS(r.err, "[MainProcess/" + std::to_string(r.pid) + "] info: main done");
  // Every pool worker log line names its own worker, and all four items were logged.
  int squaring = 0;
  for (const auto& line : Lines(r.err)) {
    if (!Contains(line, " squaring ")) continue;
    ++squaring;
    const auto open = line.find("[PoolWorker-");
    ASSERT_NE(open, std::string::npos) << line;
    const auto slash = line.find('/', open);
    ASSERT_NE(slash, std::string::npos) << line;
    const std::string name = line.substr(open + 1, slash - open - 1);
    EXPECT_CONTAINS(line, "info: " + name + " squaring ");
  }
  EXPECT_EQ(squaring, 4) << r.err;
}

TEST(ExamplesTest, ErrorHandling) {
  const RunResult r = RunClean("errors/error_handling");
  EXPECT_EQ(r.out,
            "map failed: std::invalid_argument at item 3: bad input 3\n"
            "pool still usable: -1 -2 -4\n"
            "imap: -1\n"
            "imap: item 1 failed: bad input 3\n"
            "imap: -5\n"
            "imap: item 3 failed: bad input 6\n"
            "imap: -7\n"
            "failing process exitcode 1\n");
  // The child that threw logged why it failed, under its own name and pid.
  EXPECT_CONTAINS(r.err, "task 'failing_worker' raised std::runtime_error: worker gave up");
  const auto line = r.err.find("task 'failing_worker' raised");
  ASSERT_NE(line, std::string::npos);
  EXPECT_NE(r.err.rfind("[Process-1/", line), std::string::npos) << r.err;
}

TEST(ExamplesTest, SharedValue) {
  const RunResult r = RunClean("shared/shared_value");
  EXPECT_EQ(r.out,
            "final value: 5\n"
            "two processes, 100000 fetch_add each: 200000\n");
}

TEST(ExamplesTest, Lock) {
  const RunResult r = RunClean("shared/lock");
  EXPECT_EQ(r.out,
            "12 entries written, each worker's 3 together: yes\n"
            "holder exitcode -9\n"
            "lock acquired; previous owner died: yes\n");
  EXPECT_CONTAINS(r.err, "took over a lock whose holder (pid ");
}

TEST(ExamplesTest, PoolArray) {
  const RunResult r = RunClean("shared/pool_array");
  EXPECT_EQ(r.out,
            "filled 1000000 elements in 20 tasks\n"
            "a[144] = 12.0, sum = 666666166\n");
}

TEST(ExamplesTest, ProducerConsumer) {
  const RunResult r = RunClean("shared/producer_consumer");
  EXPECT_EQ(r.out,
            "results: 100, total length: 4950\n"
            "queue empty afterwards: yes\n");
}

TEST(ExamplesTest, Condition) {
  const RunResult r = RunClean("shared/condition");
  EXPECT_EQ(r.out,
            "a waiter was killed while waiting (exitcode -9)\n"
            "consumers served: 3, stock left: 0\n");
}

TEST(ExamplesTest, Pipe) {
  const RunResult r = RunClean("shared/pipe");
  EXPECT_EQ(r.out,
            "squares: 1 4 9 16 25\n"
            "ready while the child hangs: 0\n"
            "ready once it was killed: 2 (the connection and the sentinel)\n"
            "recv: EOFError, the other end is gone\n");
}

TEST(ExamplesTest, Manager) {
  const RunResult r = RunClean("shared/manager");
  EXPECT_EQ(r.out,
            "a: 4 words\n"
            "b: 2 words\n"
            "c: 6 words\n"
            "texts done: 3 (three short texts)\n");
}

TEST(ExamplesTest, SharedMemory) {
  const RunResult r = RunClean("shared/shared_memory");
  EXPECT_EQ(r.out,
            "a child attached by name and wrote 16 squares; their sum: 1240\n"
            "names: ada, grace\n");
}

TEST(ExamplesTest, Objects) {
  const RunResult r = RunClean("shared/objects");
  EXPECT_EQ(r.out,
            "4 tasks on one 64 MiB object: each sum 35184367894528\n"
            "8 windows, sums adding up to the whole: yes\n"
            "decoded in a worker: samples=8388608 windows=8 \n"
            "3 plain strings of 2 MiB: each arrived as an object\n"
            "a 2 MiB result: came back as an object this process owns, last square 68718952449\n");
}

TEST(ExamplesTest, JoinableQueue) {
  const RunResult r = RunClean("shared/joinable_queue");
  EXPECT_EQ(r.out,
            "after join: total 5050\n"
            "after shutdown: 3 of 3 workers ended cleanly\n");
}

TEST(ExamplesTest, ActorCounter) {
  const RunResult r = RunClean("actor/counter");
  EXPECT_EQ(r.out,
            "add(5) -> 15\n"
            "get() -> 16\n"
            "after 10 pool tasks added 1..10: 71\n"
            "get() with a 1 s timeout -> 71\n"
            "stopped: alive=no\n");
}

TEST(ExamplesTest, ActorTraining) {
  const RunResult r = RunClean("actor/training");
  EXPECT_CONTAINS(r.out, "12 fits on ");
  EXPECT_CONTAINS(r.out, "trainer actors, all mapping one shared data set");
  EXPECT_LINE(r.out, "best: lr=0.8 l2=0 log-loss 0.2997");
  EXPECT_LINE(r.out, "serial check: same winner");
}

TEST(ExamplesTest, WordCountPipeline) {
  const RunResult r = RunClean("pipeline/word_count");
  EXPECT_EQ(r.out,
            "24 files, 96000 words, 40 distinct\n"
            "1. the 4898\n"
            "2. of 4669\n"
            "3. and 4505\n"
            "serial check: same counts\n");
}

TEST(ExamplesTest, CrawlerPipeline) {
  const RunResult r = RunClean("pipeline/crawler");
  EXPECT_CONTAINS(r.out, "crawled 100 pages and 11 broken links from http://127.0.0.1:");
  EXPECT_LINE(r.out, "fetched 111 URLs for 111 distinct links: each once");
  EXPECT_LINE(r.out, "serial check: same pages");
  EXPECT_CONTAINS(r.err, "site process exitcode 0");
}

TEST(ExamplesTest, Futures) {
  const RunResult r = RunClean("pool/futures");
  EXPECT_LINE(r.out, "then: 49");
  EXPECT_LINE(r.out, "get: 49");
  EXPECT_LINE(r.out, "first done: 1, not done: 1");
  EXPECT_LINE(r.out, "completed: 1");
  EXPECT_LINE(r.out, "completed: 200");
  EXPECT_LINE(r.out, "cancelled: yes");
  EXPECT_CONTAINS(r.out, "get: CancelledError: task 'slow'");
  EXPECT_LINE(r.out, "pool still works: 81");
}

TEST(ExamplesTest, PlainFunctions) {
  const RunResult r = RunClean("pool/plain_functions");
  EXPECT_LINE(r.out, "cube: 0 1 8 27 64");
  EXPECT_LINE(r.out, "scale(double): 0.5 1.5 / scale(int): 10 30");
  EXPECT_LINE(r.out, "lambda: 42");
  EXPECT_LINE(r.out, "hello from the child, world");
  EXPECT_LINE(r.out, "process exited with 0");
}

// The same program stripped of its symbol table: the workers could not check its
// plain functions, so the call refuses them, naming why and what to do.
TEST(ExamplesTest, PlainFunctionsOfAStrippedProgramAreRefusedWithAdvice) {
  const std::string stripped = ::testing::TempDir() + "/plain_functions_stripped";
  const std::string command = "strip -o '" + stripped + "' '" + ExamplePath("pool/plain_functions") + "'";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const RunResult r = RunExample(stripped, "info");
  ASSERT_FALSE(r.timed_out) << Describe(r);
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_CONTAINS(r.err, "Pool::map: the function at exe+0x");
  EXPECT_CONTAINS(r.err, "has no symbol table of its local functions (was it stripped?)");
  EXPECT_CONTAINS(r.err, "register it with MPX_TASK");
  std::remove(stripped.c_str());
}

TEST(ExamplesTest, Flagship) {
  const RunResult r = RunClean("pool/flagship");
  EXPECT_LINE(r.out, "map: 0 1 4 9 16 25 36 49 64 81");
  EXPECT_LINE(r.out, "starmap: 2 12 30 56");
  EXPECT_LINE(r.out, "apply_async: 49");
  EXPECT_LINE(r.out, "imap sum: 55, imap_unordered sum: 55");
  EXPECT_CONTAINS(r.out, "process Process-1 (pid ");
  EXPECT_CONTAINS(r.out, ") exited with 0");
  EXPECT_CONTAINS(r.err, "info: worker 5 ran");
}

}  // namespace
