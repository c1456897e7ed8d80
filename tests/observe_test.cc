// What a user sees of running pools: progress bars (mpx/progress.h) on a terminal, in a
// log and switched off, one line per pipeline stage; `mpx status` and `mpx top`
// (//tools/cli:mpx) against live pools and actors of helper drivers, in a pipe and in a
// pseudo-terminal, and never listing a pool or an actor that is gone.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "framework/testing/testing.h"
#include "mpx/mpx.h"

namespace {

using std::chrono::seconds;

int plus_one(int x) {
  // Slow enough that the run lasts several redraw intervals (100 ms): the stage lines
  // are drawn more than once, so the cursor moves back up over them.
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return x + 1;
}
MPX_TASK(plus_one);
int twice(int x) { return 2 * x; }
MPX_TASK(twice);
int square(int x) { return x * x; }
MPX_TASK(square);
int block_forever(int x) {
  for (;;) std::this_thread::sleep_for(seconds(1));
  return x;
}
MPX_TASK(block_forever);

// An actor for `mpx status`: calls that return, one that raises, one that never ends.
class Ledger {
 public:
  int add(int k) { return total_ += k; }
  int fail() { throw std::runtime_error("no"); }
  int hang() {
    for (;;) std::this_thread::sleep_for(seconds(1));
  }

 private:
  int total_ = 0;
};
MPX_ACTOR(Ledger, add, fail, hang);

using mpx::testing::runfile;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// ---- progress -----------------------------------------------------------------------

TEST(Progress, TerminalGetsABarRedrawnInPlace) {
  const auto run = mpx::testing::run_in_terminal({runfile("examples/pool/progress")}, {}, seconds(120));
  ASSERT_TRUE(run.exited_with(0)) << run.output;
  EXPECT_TRUE(contains(run.output, "\rsquares 100% [####")) << run.output;
  EXPECT_TRUE(contains(run.output, "] 300/300 [")) << run.output;
  EXPECT_TRUE(contains(run.output, "\rmap squares 100% [")) << run.output;
  EXPECT_TRUE(contains(run.output, "\rroots 100% [")) << run.output;
  EXPECT_TRUE(contains(run.output, ", 3 failed]")) << run.output;
  EXPECT_TRUE(contains(run.output, "roots: 3 failed")) << run.output;
}

TEST(Progress, LogGetsPlainLines) {
  const auto run = mpx::testing::run_command({runfile("examples/pool/progress")}, {}, seconds(120));
  ASSERT_TRUE(run.exited_with(0)) << run.output;
  EXPECT_TRUE(contains(run.output, "info: squares: 300/300 (100%) in ")) << run.output;
  EXPECT_TRUE(contains(run.output, "info: map squares: 300/300 (100%) in ")) << run.output;
  EXPECT_TRUE(contains(run.output, ", 3 failed\n")) << run.output;
  EXPECT_FALSE(contains(run.output, "\r")) << run.output;
  EXPECT_FALSE(contains(run.output, "#")) << run.output;
}

TEST(Progress, OffWithMpxProgress0) {
  const auto run = mpx::testing::run_in_terminal({runfile("examples/pool/progress")}, {"MPX_PROGRESS=0"},
                                                 seconds(120));
  ASSERT_TRUE(run.exited_with(0)) << run.output;
  EXPECT_EQ(run.output, "sum of squares: 8955050\r\nmap: 300 results, last 89401\r\nroots: 3 failed\r\n");
}

// ---- logs ---------------------------------------------------------------------------

std::string read_all(const std::string& path) {
  std::string out;
  if (FILE* f = std::fopen(path.c_str(), "r")) {
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    std::fclose(f);
  }
  return out;
}

TEST(Logs, FileAndPerRoleLevels) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp ? tmp : "/tmp") + "/mpx-observe.log";
  std::remove(path.c_str());
  const auto run = mpx::testing::run_command(
      {runfile("examples/pool/progress")},
      {"MPX_LOG_FILE=" + path, "MPX_LOG=warn", "MPX_LOG_ROUTER=debug"}, seconds(120));
  ASSERT_TRUE(run.exited_with(0)) << run.output;
  const std::string log = read_all(path);
  // The router at debug, in the file; the driver at warn: no progress lines (info).
  EXPECT_TRUE(contains(log, "[Router/")) << log;
  EXPECT_TRUE(contains(log, "debug: router: spawned PoolWorker-1")) << log;
  EXPECT_FALSE(contains(log, "[MainProcess/")) << log;
  EXPECT_FALSE(contains(run.output, "router: spawned")) << run.output;
  EXPECT_EQ(run.output, "sum of squares: 8955050\nmap: 300 results, last 89401\nroots: 3 failed\n");
  std::remove(path.c_str());
}

TEST(Logs, UnwritableFileFallsBackToStderrAndSaysSo) {
  const auto run = mpx::testing::run_command({runfile("examples/pool/progress")},
                                             {"MPX_LOG_FILE=/nonexistent-dir/mpx.log"}, seconds(120));
  ASSERT_TRUE(run.exited_with(0)) << run.output;
  EXPECT_TRUE(contains(run.output, "warning: cannot log to MPX_LOG_FILE=/nonexistent-dir/mpx.log (")) << run.output;
  EXPECT_TRUE(contains(run.output, "info: squares: 300/300 (100%)")) << run.output;
}

TEST(ProgressHelper, DISABLED_Pipeline) {
  if (std::getenv("MPX_OBSERVE_HELPER") == nullptr) GTEST_SKIP();
  std::vector<int> xs(200);
  std::iota(xs.begin(), xs.end(), 0);
  long sum = 0;
  for (int v : mpx::progress(mpx::Pipeline::from(xs).map(plus_one, 2).map(twice, 2).start(), "doubled")) {
    sum += v;
  }
  std::printf("SUM %ld\n", sum);
}

TEST(Progress, PipelineGetsOneLinePerStage) {
  const auto run = mpx::testing::run_in_terminal(
      {"/proc/self/exe", "--gtest_filter=ProgressHelper.DISABLED_Pipeline", "--gtest_also_run_disabled_tests"},
      {"MPX_OBSERVE_HELPER=1"}, seconds(120));
  ASSERT_TRUE(run.exited_with(0)) << run.output;
  EXPECT_TRUE(contains(run.output, "SUM 40200")) << run.output;
  // Three lines (two stages and the output), the cursor moved back up over them.
  EXPECT_TRUE(contains(run.output, "\x1b[2A\rmap(plus_one) 200 [")) << run.output;
  EXPECT_TRUE(contains(run.output, "\nmap(twice) 200 [")) << run.output;
  EXPECT_TRUE(contains(run.output, "\ndoubled 200 [")) << run.output;
}

// ---- mpx status / mpx top -------------------------------------------------------------

// A driver with a pool of 2 that finished 100 items and now runs two that never end.
// Sanitizers reserve terabytes of address space: a worker under RLIMIT_AS fails its
// first mapping after the limit (a lane's, say). The helper's pool has a memory limit
// only where one can apply.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr std::size_t kHelperMemoryLimit = 0;
constexpr const char* kHelperMemoryLimitText = "none";
#else
constexpr std::size_t kHelperMemoryLimit = std::size_t{4} << 30;
constexpr const char* kHelperMemoryLimitText = "4.0 GiB";
#endif

TEST(CliHelper, DISABLED_BusyPool) {
  if (std::getenv("MPX_OBSERVE_HELPER") == nullptr) GTEST_SKIP();
  // prefetch 1: each worker holds one chunk, so each runs one block_forever.
  mpx::Pool pool(mpx::PoolOptions().processes(2).prefetch(1).worker_memory_limit(kHelperMemoryLimit));
  std::vector<int> xs(100);
  std::iota(xs.begin(), xs.end(), 0);
  pool.map(square, xs);
  auto never = pool.map_async(block_forever, std::vector<int>{7, 8}, 1);
  std::printf("READY %d\n", pool.router_pid());
  std::fflush(stdout);
  never.get();
}

class CliTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (driver_ > 0) {
      kill(driver_, SIGKILL);
      waitpid(driver_, nullptr, 0);
      for (const auto& d : mpx::testing::wait_no_descendants(seconds(10), driver_)) {
        ADD_FAILURE() << "left behind: " << d.pid << " " << d.cmdline;
      }
    }
  }
  // Starts the helper; returns its router's pid.
  pid_t start_busy_pool() {
    const auto helper = mpx::testing::start_helper_driver("CliHelper.DISABLED_BusyPool", "MPX_OBSERVE_HELPER");
    driver_ = helper.pid;
    if (driver_ <= 0) return 0;
    return std::atoi(helper.output.c_str() + helper.output.find("READY ") + 6);
  }
  // SIGKILLs the helper driver: everything it started ends, and `mpx status` no longer
  // lists anything of it.
  void kill_driver_and_expect_it_unlisted() {
    kill(driver_, SIGKILL);
    waitpid(driver_, nullptr, 0);
    EXPECT_TRUE(mpx::testing::wait_no_descendants(seconds(10), driver_).empty());
    const std::string after = mpx_cli({"status"}).output;
    EXPECT_FALSE(contains(after, "driver " + std::to_string(driver_) + " ")) << after;
    driver_ = 0;
  }
  mpx::testing::HelperRun mpx_cli(const std::vector<std::string>& args) {
    std::vector<std::string> argv{runfile("tools/cli/mpx")};
    argv.insert(argv.end(), args.begin(), args.end());
    return mpx::testing::run_command(argv, {}, seconds(30));
  }
  // Runs `mpx status` until both workers are busy with block_forever.
  std::string busy_status(const std::vector<std::string>& args = {"status"}) {
    std::string out;
    mpx::testing::wait_until(
        [&] {
          out = mpx_cli(args).output;
          const auto first = out.find("block_forever");
          return first != std::string::npos && out.find("block_forever", first + 1) != std::string::npos;
        },
        seconds(30));
    return out;
  }
  pid_t driver_ = 0;
};

TEST_F(CliTest, StatusShowsEveryWorkerAndForgetsDeadPools) {
  const pid_t router = start_busy_pool();
  ASSERT_GT(driver_, 0);
  const std::string out = busy_status();
  EXPECT_TRUE(contains(out, "pool  router " + std::to_string(router) + "  driver " + std::to_string(driver_) +
                                "  /proc/self/exe --gtest_filter=CliHelper.DISABLED_BusyPool"))
      << out;
  EXPECT_TRUE(contains(out, std::string("workers 2/2  memory limit ") + kHelperMemoryLimitText +
                                "  queued 0 chunks  in flight 2 chunks"))
      << out;
  EXPECT_TRUE(contains(out, "items 102 submitted  100 done")) << out;
  EXPECT_TRUE(contains(out, "PoolWorker-1")) << out;
  EXPECT_TRUE(contains(out, "PoolWorker-2")) << out;
  EXPECT_TRUE(contains(out, " busy ")) << out;
  EXPECT_TRUE(contains(out, " MiB")) << "worker RSS: " << out;

  const std::string json = busy_status({"status", "--json"});
  EXPECT_TRUE(contains(json, "\"driver_pid\":" + std::to_string(driver_) + ",")) << json;
  EXPECT_TRUE(contains(json, "\"router_pid\":" + std::to_string(router) + ",")) << json;
  EXPECT_TRUE(contains(json, "\"task\":\"block_forever\"")) << json;
  EXPECT_TRUE(contains(json, "\"completed_items\":100,")) << json;
  EXPECT_EQ(json.rfind("{\"pools\":[{", 0), 0u) << json;
  EXPECT_TRUE(contains(json, "\"nodes\":[]}],\"actors\":[")) << "a pool without agents: " << json;

  // The driver dies: its router and workers go, and so does the pool from the list.
  kill_driver_and_expect_it_unlisted();
}

// A driver with two actors: "books" (named, restarted when it dies) answered 3 calls
// and raised once; the unnamed one answered 1 call and now runs hang() for ever.
TEST(CliHelper, DISABLED_Actors) {
  if (std::getenv("MPX_OBSERVE_HELPER") == nullptr) GTEST_SKIP();
  auto books = mpx::spawn<Ledger>(mpx::ActorOptions().name("books").restart(mpx::Restart::on_failure));
  for (int k = 1; k <= 3; ++k) books.call(&Ledger::add, k).get();
  EXPECT_THROW(books.call(&Ledger::fail).get(), mpx::RemoteError);
  auto busy = mpx::spawn<Ledger>();
  busy.call(&Ledger::add, 1).get();
  busy.tell(&Ledger::hang);
  std::printf("READY %d %d %s\n", books.pid(), busy.pid(), busy.name().c_str());
  std::fflush(stdout);
  for (;;) std::this_thread::sleep_for(seconds(1));
}

// Whether pid's process has ended (reaped, or a zombie not reaped yet).
bool process_gone(pid_t pid) {
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (f == nullptr) return true;
  char state = 0;
  const bool read = std::fscanf(f, "%*d (%*[^)]) %c", &state) == 1;
  std::fclose(f);
  return !read || state == 'Z' || state == 'X';
}

TEST_F(CliTest, StatusShowsActorsAndForgetsTheDead) {
  const auto helper = mpx::testing::start_helper_driver("CliHelper.DISABLED_Actors", "MPX_OBSERVE_HELPER");
  driver_ = helper.pid;
  ASSERT_GT(driver_, 0) << helper.output;
  int books = 0, busy = 0;
  char busy_name[64] = {0};
  ASSERT_EQ(std::sscanf(helper.output.c_str() + helper.output.find("READY "), "READY %d %d %63s", &books, &busy,
                        busy_name),
            3)
      << helper.output;
  // The tell to hang() may still be on its way: the unnamed actor is running it soon.
  std::string out;
  mpx::testing::wait_until([&] { return contains(out = mpx_cli({"status"}).output, "running hang"); }, seconds(30));
  EXPECT_TRUE(contains(out, "actors  driver " + std::to_string(driver_) +
                                "  /proc/self/exe --gtest_filter=CliHelper.DISABLED_Actors"))
      << out;
  // ACTOR CLASS PID STATE CALLS FAILED CALLERS RESTARTS
  EXPECT_TRUE(contains(out, "  books            Ledger         " + std::string(7 - std::to_string(books).size(), ' ') +
                                std::to_string(books) + " idle                        4       1       1        0"))
      << out;
  EXPECT_TRUE(contains(out, "  " + std::string(busy_name) + std::string(17 - std::strlen(busy_name), ' ') +
                                "Ledger         " + std::string(7 - std::to_string(busy).size(), ' ') +
                                std::to_string(busy) + " running hang                1       0       1        0"))
      << out;

  const std::string json = mpx_cli({"status", "--json"}).output;
  EXPECT_EQ(json.rfind("{\"pools\":[", 0), 0u) << json;
  EXPECT_TRUE(contains(json, "],\"actors\":[{")) << json;
  EXPECT_TRUE(contains(json, "\"pid\":" + std::to_string(books) + ",\"driver_pid\":" + std::to_string(driver_) +
                                 ",\"owner_pid\":" + std::to_string(driver_) + ","))
      << json;
  EXPECT_TRUE(contains(json, "\"class\":\"Ledger\",\"name\":\"books\",\"state\":\"idle\",\"method\":\"\","
                             "\"calls_done\":4,\"calls_failed\":1,"))
      << json;
  EXPECT_TRUE(contains(json, "\"state\":\"running\",\"method\":\"hang\",\"calls_done\":1,")) << json;

  // `mpx top` draws the same actors under its header.
  const std::string top = mpx_cli({"top", "--iterations", "1"}).output;
  EXPECT_TRUE(contains(top, " 2 actors\n")) << top;
  EXPECT_TRUE(contains(top, "actors  driver " + std::to_string(driver_) + "  ")) << top;
  EXPECT_TRUE(contains(top, " running hang ")) << top;

  // The unnamed actor dies (it is not restarted): it is listed no more. "books" dies
  // and is restarted: a new process, its counters anew, one restart.
  kill(busy, SIGKILL);
  kill(books, SIGKILL);
  mpx::testing::wait_until(
      [&] {
        out = mpx_cli({"status"}).output;
        return process_gone(busy) && !contains(out, busy_name) && contains(out, "  books ") &&
               !contains(out, " " + std::to_string(books) + " ");
      },
      seconds(30));
  EXPECT_FALSE(contains(out, busy_name)) << out;
  EXPECT_FALSE(contains(out, " " + std::to_string(books) + " ")) << out;
  EXPECT_TRUE(contains(out, " idle                        0       0       0        1 ")) << "restarted once: " << out;

  // The driver dies: its actors end, and nothing of it is listed.
  kill_driver_and_expect_it_unlisted();
}

TEST_F(CliTest, TopRefreshesInATerminalUntilQ) {
  const pid_t router = start_busy_pool();
  ASSERT_GT(driver_, 0);
  busy_status();
  int screens_seen = 0;
  const auto run = mpx::testing::run_in_terminal(
      {runfile("tools/cli/mpx"), "top", "--interval-ms", "100"}, {}, seconds(60), [&](const std::string& out) {
        // Press q once two full screens showed the busy workers.
        std::size_t n = 0;
        for (auto at = out.find("\x1b[H\x1b[2J"); at != std::string::npos; at = out.find("\x1b[H\x1b[2J", at + 1)) ++n;
        if (n >= 3 && screens_seen == 0) {
          screens_seen = static_cast<int>(n);
          return std::string("q");
        }
        return std::string();
      });
  EXPECT_TRUE(run.exited_with(0)) << run.output;
  EXPECT_GE(screens_seen, 3);
  EXPECT_TRUE(contains(run.output, "mpx top - ")) << run.output;
  EXPECT_TRUE(contains(run.output, " - q quits")) << run.output;
  EXPECT_TRUE(contains(run.output, "pool  router " + std::to_string(router))) << run.output;
  EXPECT_TRUE(contains(run.output, "block_forever")) << run.output;
  // From the second screen on, the rate is measured over the interval: nothing finished.
  EXPECT_TRUE(contains(run.output, "100 done  0.0/s")) << run.output;
}

TEST_F(CliTest, BadUsageSaysWhatToType) {
  auto run = mpx_cli({"frobnicate"});
  EXPECT_TRUE(run.exited_with(2));
  EXPECT_TRUE(contains(run.output, "mpx: unknown command 'frobnicate'\nusage: mpx status [--json]")) << run.output;
  run = mpx_cli({"top", "--interval-ms", "soon"});
  EXPECT_TRUE(run.exited_with(2));
  EXPECT_TRUE(contains(run.output, "top: --interval-ms wants a number (at least 10), not 'soon'")) << run.output;
  run = mpx_cli({"status", "--yaml"});
  EXPECT_TRUE(run.exited_with(2));
  EXPECT_TRUE(contains(run.output, "status: unknown option '--yaml'")) << run.output;
}

}  // namespace
