// The Slurm half of the multi-host harness, proved for real: a local cluster of
// Debian's slurmctld, slurmd and munge (framework/testing SlurmCluster, over
// tools/cluster/up and down), two slurmd nodes each in its own network namespace.
// srun -N2 --ntasks-per-node=1 runs one task per node; a task (a copy of this test
// binary, as mpx's node agents will be) dials the test from its node's address;
// impossible requests fail at once; a second cluster waits for the first; and nothing
// is left, not even when the owner is killed. Needs root and the Slurm packages
// (tools/install-deps); skipped, with the reason, otherwise. Tagged "cluster":
// tools/test --quick skips it.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/testing/hosts.h"
#include "framework/testing/testing.h"
#include "tests/tcp_lines.h"

namespace {

using mpx::testing::SlurmCluster;
using std::chrono::seconds;

constexpr char kEndpointVar[] = "MPX_SLURM_TEST_ENDPOINT";
constexpr char kHelperVar[] = "MPX_SLURM_TEST_HELPER";

// --- helpers: copies of this binary ---------------------------------------------------

// A task of srun: dials the test and says which node and task it is.
TEST(SlurmHelper, DISABLED_SayWhereIRun) {
  const char* endpoint = std::getenv(kEndpointVar);
  if (endpoint == nullptr) GTEST_SKIP();
  const char* node = std::getenv("SLURMD_NODENAME");
  const char* task = std::getenv("SLURM_PROCID");
  std::_Exit(mpx_test::say_and_expect_echo(
      endpoint, std::string(node ? node : "no-SLURMD_NODENAME") + " task " + (task ? task : "?")));
}

// Brings a cluster up, says so, and waits to be killed.
TEST(SlurmHelper, DISABLED_OwnerToBeKilled) {
  if (std::getenv(kHelperVar) == nullptr) GTEST_SKIP();
  SlurmCluster cluster(1);
  std::printf("READY\n");
  std::fflush(stdout);
  pause();
}

// Tries to bring a cluster up while the test holds one (MPX_CLUSTER_LOCK_WAIT=1).
TEST(SlurmHelper, DISABLED_SecondCluster) {
  if (std::getenv(kHelperVar) == nullptr) GTEST_SKIP();
  try {
    SlurmCluster cluster(1);
    std::printf("second cluster came up\n");
  } catch (const std::exception& e) {
    std::printf("refused: %s\n", e.what());
  }
  std::fflush(stdout);
  std::_Exit(0);
}

// --- the tests ----------------------------------------------------------------------

// Prints how long each step took (for planning CI time; nothing is asserted on it).
class Stopwatch {
 public:
  void lap(const char* what) {
    const auto now = std::chrono::steady_clock::now();
    std::printf("[timing] %s: %.2f s\n", what, std::chrono::duration<double>(now - last_).count());
    std::fflush(stdout);
    last_ = now;
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

class SlurmClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = SlurmCluster::unavailable()) GTEST_SKIP() << *reason;
  }

  static void expect_gone(const std::vector<ino_t>& ids) {
    for (const auto& left : SlurmCluster::leftovers()) ADD_FAILURE() << "left: " << left;
    for (const auto& p : mpx::testing::processes_in_netns(ids)) {
      ADD_FAILURE() << "left running in a removed node: pid " << p.pid << " " << p.cmdline;
    }
  }

  static std::vector<std::string> sorted_lines(const std::string& text) {
    std::vector<std::string> out;
    std::size_t at = 0;
    while (at < text.size()) {
      const std::size_t end = std::min(text.find('\n', at), text.size());
      if (end > at) out.push_back(text.substr(at, end - at));
      at = end + 1;
    }
    std::sort(out.begin(), out.end());
    return out;
  }
};

TEST_F(SlurmClusterTest, SrunRunsOneTaskPerNodeFromTheNodesOwnAddress) {
  Stopwatch stopwatch;
  std::optional<SlurmCluster> cluster(std::in_place, 2);
  stopwatch.lap("cluster up (2 nodes)");
  std::vector<ino_t> ids = {cluster->netns_id(1), cluster->netns_id(2)};
  EXPECT_NE(ids[0], ids[1]);

  // The plain form: one task on each node.
  const auto names = mpx::testing::run_command(
      cluster->srun({"-N2", "--ntasks-per-node=1", "printenv", "SLURMD_NODENAME"}), {}, seconds(120));
  ASSERT_TRUE(names.exited_with(0)) << names.output;
  EXPECT_EQ(sorted_lines(names.output), (std::vector<std::string>{"node1", "node2"}));
  stopwatch.lap("srun printenv");

  // Copies of this binary as the tasks: each dials the test from its node's namespace.
  mpx_test::EchoListener listener(cluster->head_address());
  const auto run = mpx::testing::run_helper(
      "SlurmHelper.DISABLED_SayWhereIRun", {std::string(kEndpointVar) + "=" + listener.endpoint()},
      seconds(120), false, cluster->srun({"-N2", "--ntasks-per-node=1"}));
  EXPECT_TRUE(run.exited_with(0)) << run.output;
  std::vector<std::string> heard;
  for (const auto& h : listener.heard()) heard.push_back(h.peer + " " + h.line);
  std::sort(heard.begin(), heard.end());
  EXPECT_EQ(heard, (std::vector<std::string>{cluster->address(1) + " node1 task 0",
                                             cluster->address(2) + " node2 task 1"}))
      << run.output;
  stopwatch.lap("srun of this binary");

  // More nodes than the cluster has: refused at once, not queued until the timeout.
  const auto too_many = mpx::testing::run_command(cluster->srun({"-N3", "true"}), {}, seconds(60));
  EXPECT_FALSE(too_many.timed_out);
  EXPECT_FALSE(too_many.exited_with(0));
  EXPECT_NE(too_many.output.find("Node count specification invalid"), std::string::npos) << too_many.output;
  stopwatch.lap("srun -N3, refused");

  // One cluster at a time: a second one waits for the lock, then gives up saying why.
  const auto second = mpx::testing::run_helper("SlurmHelper.DISABLED_SecondCluster",
                                               {std::string(kHelperVar) + "=1", "MPX_CLUSTER_LOCK_WAIT=1"},
                                               seconds(60));
  EXPECT_TRUE(second.exited_with(0)) << second.output;
  EXPECT_NE(second.output.find("refused: SlurmCluster: the cluster lock /run/mpx-netns/0.lock is still held"),
            std::string::npos)
      << second.output;
  stopwatch.lap("second cluster, refused");
  const auto still = mpx::testing::run_command(cluster->srun({"-N2", "true"}), {}, seconds(120));
  EXPECT_TRUE(still.exited_with(0)) << "the second attempt disturbed the cluster: " << still.output;
  stopwatch.lap("srun true");

  cluster.reset();
  stopwatch.lap("cluster down");
  expect_gone(ids);
}

TEST_F(SlurmClusterTest, TheClusterOfAKilledOwnerIsStoppedByItsJanitor) {
  const auto owner = mpx::testing::start_helper_driver("SlurmHelper.DISABLED_OwnerToBeKilled", kHelperVar);
  ASSERT_GT(owner.pid, 0) << owner.output;
  EXPECT_FALSE(SlurmCluster::leftovers().empty());
  ASSERT_EQ(kill(owner.pid, SIGKILL), 0);
  ASSERT_EQ(waitpid(owner.pid, nullptr, 0), owner.pid);
  std::vector<std::string> left;
  EXPECT_TRUE(mpx::testing::wait_until([&] { return (left = SlurmCluster::leftovers()).empty(); }, seconds(60)));
  for (const auto& l : left) ADD_FAILURE() << "left: " << l;
}

TEST_F(SlurmClusterTest, BadArgumentsAreRefusedWithTheReason) {
  try {
    SlurmCluster cluster(0);
    ADD_FAILURE() << "0 nodes accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("1-200"), std::string::npos) << e.what();
  }
}

}  // namespace
