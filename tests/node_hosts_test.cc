// Node agents on hosts that are network namespaces (their own addresses, a bridge):
// a host partitioned mid-map with `ip link set ... down` is lost, the map completes
// exact, and once the link is back the agent rejoins as a new agent. And on a real
// local Slurm cluster: srun starts the agents, a map runs across them. Root only
// (skipped with the reason otherwise); tagged "cluster" (tools/test --quick skips it).
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "framework/testing/hosts.h"
#include "framework/testing/testing.h"
#include "mpx/mpx.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;

long long hosts_square(long long x) { return x * x; }
MPX_PURE_TASK(hosts_square);
// n doubles 0, 1, 2, ... (a large result), and the sum of its argument (a large one).
std::vector<double> hosts_ramp(std::size_t n) {
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<double>(i);
  return v;
}
MPX_TASK(hosts_ramp);
double hosts_sum(std::vector<double> v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}
MPX_TASK(hosts_sum);

std::string temp_path(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name + "-" + std::to_string(::getpid());
}

// A command started in the background (a launcher and what it runs); killed and
// reaped by the destructor if still running.
struct Started {
  pid_t pid = -1;
  explicit Started(std::vector<std::string> argv) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    if (::posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0) pid = -1;
  }
  // Its exit code (or -signal), waiting up to timeout (then killed: kTimedOut).
  int wait_exit(std::chrono::milliseconds timeout) { return mpx::testing::wait_exit(std::exchange(pid, -1), timeout); }
  ~Started() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

std::vector<std::string> agent_args(const mpx::testing::Launcher& launcher, const std::string& endpoint,
                                    const std::string& key, int slots) {
  std::vector<std::string> argv = launcher;
  argv.push_back(mpx::testing::self_exe());
  argv.push_back("--mpx-node=" + endpoint);
  argv.push_back("--mpx-key=" + key);
  argv.push_back("--mpx-slots=" + std::to_string(slots));
  argv.push_back("--mpx-connect-timeout=30");
  return argv;
}

std::vector<long long> iota(long long n) {
  std::vector<long long> v(n);
  for (long long i = 0; i < n; ++i) v[i] = i;
  return v;
}

TEST(NodeHostsTest, PartitionedHostIsLostThenRejoins) {
  if (auto reason = mpx::testing::NetnsHosts::unavailable()) GTEST_SKIP() << *reason;
  mpx::testing::NetnsHosts hosts(2);
  const std::string key = temp_path("netns.key");
  std::unique_ptr<Started> a, b;
  {
    mpx::Pool pool(mpx::PoolOptions()
                       .processes(0)
                       .listen("tcp://" + hosts.bridge_address() + ":0")
                       .cluster_key(key)
                       .host_timeout(1000ms));
    EXPECT_EQ(pool.endpoint().rfind("tcp://" + hosts.bridge_address() + ":", 0), 0u) << pool.endpoint();
    a = std::make_unique<Started>(agent_args(hosts.launcher(1), pool.endpoint(), key, 2));
    b = std::make_unique<Started>(agent_args(hosts.launcher(2), pool.endpoint(), key, 2));
    pool.wait_for_workers(4, 60s);
    const long long n = 100000;
    auto it = pool.imap(hosts_square, iota(n), 50);
    auto next = [&] {
      auto v = it.next();
      return v ? static_cast<long long>(*v) : -1;
    };
    long long i = 0;
    for (; i < 1000; ++i) ASSERT_EQ(next(), i * i);
    hosts.cut(1);
    for (; i < n; ++i) ASSERT_EQ(next(), i * i) << "item " << i;
    EXPECT_EQ(next(), -1);
    hosts.restore(1);
    // Host 1's agent found the router silent, ended its workers and dials again: it
    // joins as a new agent.
    pool.wait_for_workers(4, 60s);
    const auto out = pool.map(hosts_square, iota(2000), 1);
    for (long long k = 0; k < 2000; ++k) ASSERT_EQ(out[k], k * k);
  }
  // The pool's end tells both agents (host 1's rejoined one too): they exit 0.
  EXPECT_EQ(a->wait_exit(30s), 0);
  EXPECT_EQ(b->wait_exit(30s), 0);
  ::unlink(key.c_str());
}

// A value that takes longer than host_timeout to cross a slow link: the link's other
// messages (heartbeats) queue behind it, but its pieces keep coming, so neither side
// takes the other for lost (a 16 MiB result over 40 Mbit/s takes about 3.4 s here; the
// host timeout is 1 s).
TEST(NodeHostsTest, LargeValuesOverASlowLinkDoNotLoseTheHost) {
  if (auto reason = mpx::testing::NetnsHosts::unavailable()) GTEST_SKIP() << *reason;
  mpx::testing::NetnsHosts hosts(1);
  const std::string key = temp_path("slow.key");
  std::unique_ptr<Started> agent;
  {
    mpx::Pool pool(mpx::PoolOptions()
                       .processes(0)
                       .listen("tcp://" + hosts.bridge_address() + ":0")
                       .cluster_key(key)
                       .host_timeout(1000ms));
    agent = std::make_unique<Started>(agent_args(hosts.launcher(1), pool.endpoint(), key, 1));
    pool.wait_for_workers(1, 60s);
    hosts.throttle(1, "40mbit");
    const std::size_t n = std::size_t{2} << 20;  // 16 MiB of doubles
    const std::vector<double> ramp = pool.apply(hosts_ramp, n);
    ASSERT_EQ(ramp.size(), n);
    for (std::size_t i = 0; i < n; i += 4099) ASSERT_EQ(ramp[i], static_cast<double>(i));
    EXPECT_EQ(pool.apply(hosts_sum, ramp), static_cast<double>(n) * static_cast<double>(n - 1) / 2);
    hosts.throttle(1, "off");
    EXPECT_EQ(pool.apply(hosts_sum, std::vector<double>{1, 2}), 3.0) << "the same host, joined once";
  }
  EXPECT_EQ(agent->wait_exit(30s), 0) << "the agent was never told it was lost";
  ::unlink(key.c_str());
}

TEST(NodeHostsTest, SrunStartsTheAgents) {
  if (auto reason = mpx::testing::SlurmCluster::unavailable()) GTEST_SKIP() << *reason;
  mpx::testing::SlurmCluster cluster(2);
  const std::string key = temp_path("slurm.key");
  std::unique_ptr<Started> srun;
  {
    mpx::Pool pool(mpx::PoolOptions()
                       .processes(0)
                       .listen("tcp://" + cluster.head_address() + ":0")
                       .cluster_key(key)
                       .host_timeout(2000ms));
    std::vector<std::string> argv = cluster.srun({"-N2", "--ntasks-per-node=1"});
    for (const auto& a : agent_args({}, pool.endpoint(), key, 2)) argv.push_back(a);
    srun = std::make_unique<Started>(argv);
    pool.wait_for_workers(4, 120s);
    const auto out = pool.map(hosts_square, iota(50000));
    for (long long k = 0; k < 50000; ++k) ASSERT_EQ(out[k], k * k);
  }
  // The pool's end tells the agents: they exit 0, and so does srun.
  EXPECT_EQ(srun->wait_exit(60s), 0);
  ::unlink(key.c_str());
}

}  // namespace
