// The multi-host harness, proved for real: hosts made of network namespaces
// (framework/testing NetnsHosts) reach a listener of the test on the bridge address
// from their own addresses, a cut host reaches nothing and holds its open connections
// until it is restored, and nothing is left behind: not by the destructor, not when
// the owner is killed (its janitor cleans up), not even when both are killed (the next
// owner sweeps). The processes in the hosts are copies of this test binary, as the
// node agents of mpx will be. Needs root; skipped, with the reason, otherwise.
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

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

using mpx::testing::NetnsHosts;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kEndpointVar[] = "MPX_NETNS_TEST_ENDPOINT";
constexpr char kLineVar[] = "MPX_NETNS_TEST_LINE";
constexpr char kHelperVar[] = "MPX_NETNS_TEST_HELPER";

// --- helpers: copies of this binary, run inside a host ------------------------------

// Dials the test's endpoint, says a line, expects it back; exit code 3 if it cannot
// connect (say_and_expect_echo).
TEST(NetnsHelper, DISABLED_SayHello) {
  const char* endpoint = std::getenv(kEndpointVar);
  if (endpoint == nullptr) GTEST_SKIP();
  std::_Exit(mpx_test::say_and_expect_echo(endpoint, std::getenv(kLineVar)));
}

// Dials the test's endpoint, prints READY, then sends back every line it gets until
// the test closes the connection.
TEST(NetnsHelper, DISABLED_EchoBack) {
  if (std::getenv(kHelperVar) == nullptr) GTEST_SKIP();
  std::string error;
  const int fd = mpx_test::connect_tcp(std::getenv(kEndpointVar), seconds(10), &error);
  ASSERT_GE(fd, 0) << error;
  std::printf("READY\n");
  std::fflush(stdout);
  while (const auto line = mpx_test::read_line(fd, seconds(300))) {
    if (!mpx_test::write_all(fd, *line + "\n")) break;
  }
  close(fd);
  std::_Exit(0);  // before gtest prints into the stdout the test no longer reads
}

// Makes hosts of its own, says which slot and its janitor's pid, and waits to be
// killed.
TEST(NetnsHelper, DISABLED_OwnerToBeKilled) {
  if (std::getenv(kHelperVar) == nullptr) GTEST_SKIP();
  NetnsHosts hosts(1);
  std::printf("SLOT %d\nREADY\n", hosts.slot());
  std::fflush(stdout);
  pause();
}

// Blocks in a host until killed.
TEST(NetnsHelper, DISABLED_Block) {
  if (std::getenv(kHelperVar) == nullptr) GTEST_SKIP();
  std::printf("READY\n");
  std::fflush(stdout);
  pause();
}

// --- the tests ----------------------------------------------------------------------

class NetnsHostsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto reason = NetnsHosts::unavailable()) GTEST_SKIP() << *reason;
  }

  // Makes the test's hosts, remembering what remove_hosts() checks.
  NetnsHosts& make_hosts(int n) {
    hosts_.emplace(n);
    slot_ = hosts_->slot();
    ids_.clear();
    for (int h = 1; h <= n; ++h) ids_.push_back(hosts_->netns_id(h));
    return *hosts_;
  }

  // Destroys the hosts; everything they had must be gone: names, and every process
  // in their namespaces.
  void remove_hosts() {
    hosts_.reset();
    expect_gone(slot_, ids_);
  }

  static void expect_gone(int slot, const std::vector<ino_t>& ids) {
    for (const auto& name : NetnsHosts::leftovers(slot)) ADD_FAILURE() << "left: " << name;
    for (const auto& p : mpx::testing::processes_in_netns(ids)) {
      ADD_FAILURE() << "left running in a removed host: pid " << p.pid << " " << p.cmdline;
    }
  }

  // Runs DISABLED_SayHello in host with line; returns its run.
  static mpx::testing::HelperRun say_hello(const NetnsHosts& hosts, int host,
                                           const mpx_test::EchoListener& listener,
                                           const std::string& line) {
    return mpx::testing::run_helper(
        "NetnsHelper.DISABLED_SayHello",
        {std::string(kEndpointVar) + "=" + listener.endpoint(), std::string(kLineVar) + "=" + line},
        seconds(60), false, hosts.launcher(host));
  }

  static int heard_from(const mpx_test::EchoListener& listener, const std::string& peer,
                        const std::string& line) {
    int n = 0;
    for (const auto& h : listener.heard()) n += h.peer == peer && h.line == line;
    return n;
  }

  std::optional<NetnsHosts> hosts_;
  int slot_ = -1;
  std::vector<ino_t> ids_;
};

TEST_F(NetnsHostsTest, HostsReachTheBridgeAddressFromTheirOwnAndACutHostDoesNot) {
  NetnsHosts& hosts = make_hosts(2);
  EXPECT_NE(hosts.address(1), hosts.address(2));
  EXPECT_NE(hosts.netns_id(1), hosts.netns_id(2));
  mpx_test::EchoListener listener(hosts.bridge_address());

  for (int h = 1; h <= 2; ++h) {
    const auto run = say_hello(hosts, h, listener, "host" + std::to_string(h));
    EXPECT_TRUE(run.exited_with(0)) << run.output;
    // The connection came from the host's own address, not the root namespace's.
    EXPECT_EQ(heard_from(listener, hosts.address(h), "host" + std::to_string(h)), 1)
        << hosts.address(h);
  }

  hosts.cut(1);
  const auto cut = say_hello(hosts, 1, listener, "cut");
  EXPECT_TRUE(cut.exited_with(mpx_test::kCannotConnect)) << cut.output;
  const auto other = say_hello(hosts, 2, listener, "other host while 1 is cut");
  EXPECT_TRUE(other.exited_with(0)) << other.output;

  hosts.restore(1);
  const auto back = say_hello(hosts, 1, listener, "restored");
  EXPECT_TRUE(back.exited_with(0)) << back.output;
  EXPECT_EQ(heard_from(listener, hosts.address(1), "restored"), 1);
  EXPECT_EQ(heard_from(listener, hosts.address(1), "cut"), 0);
  EXPECT_EQ(listener.heard().size(), 4u);

  remove_hosts();
}

TEST_F(NetnsHostsTest, ACutHoldsAnOpenConnectionUntilTheHostIsRestored) {
  NetnsHosts& hosts = make_hosts(1);
  int port = 0;
  std::string error;
  const int listener = mpx_test::listen_tcp(hosts.bridge_address(), &port, &error);
  ASSERT_GE(listener, 0) << error;
  const std::string endpoint = hosts.bridge_address() + ":" + std::to_string(port);

  const auto helper = mpx::testing::start_helper_driver(
      "NetnsHelper.DISABLED_EchoBack", kHelperVar, {std::string(kEndpointVar) + "=" + endpoint},
      hosts.launcher(1));
  ASSERT_GT(helper.pid, 0) << helper.output;
  std::string peer;
  const int fd = mpx_test::accept_tcp(listener, seconds(30), &peer);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(peer, hosts.address(1));

  ASSERT_TRUE(mpx_test::write_all(fd, "before\n"));
  EXPECT_EQ(mpx_test::read_line(fd, seconds(30)), "before");

  // A partition, not a reset: the line waits in TCP's retransmission queue.
  hosts.cut(1);
  ASSERT_TRUE(mpx_test::write_all(fd, "during\n"));
  EXPECT_EQ(mpx_test::read_line(fd, milliseconds(1500)), std::nullopt) << "passed a cut link";
  hosts.restore(1);
  EXPECT_EQ(mpx_test::read_line(fd, seconds(60)), "during");

  close(fd);
  close(listener);
  int status = 0;
  ASSERT_EQ(waitpid(helper.pid, &status, 0), helper.pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  remove_hosts();
}

TEST_F(NetnsHostsTest, TheDestructorKillsWhatStillRunsInTheHosts) {
  NetnsHosts& hosts = make_hosts(2);
  std::vector<pid_t> blocked;
  for (int h = 1; h <= 2; ++h) {
    const auto helper =
        mpx::testing::start_helper_driver("NetnsHelper.DISABLED_Block", kHelperVar, {}, hosts.launcher(h));
    ASSERT_GT(helper.pid, 0) << helper.output;
    blocked.push_back(helper.pid);
    ASSERT_EQ(mpx::testing::processes_in_netns({hosts.netns_id(h)}).size(), 1u);
  }
  remove_hosts();
  for (pid_t pid : blocked) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << status;
  }
}

TEST_F(NetnsHostsTest, HostsOfAKilledOwnerAreRemovedByItsJanitor) {
  const auto owner = mpx::testing::start_helper_driver("NetnsHelper.DISABLED_OwnerToBeKilled", kHelperVar);
  ASSERT_GT(owner.pid, 0) << owner.output;
  const int slot = std::atoi(owner.output.substr(owner.output.find("SLOT ") + 5).c_str());
  ASSERT_GT(slot, 0) << owner.output;
  EXPECT_FALSE(NetnsHosts::leftovers(slot).empty());
  ASSERT_EQ(kill(owner.pid, SIGKILL), 0);
  ASSERT_EQ(waitpid(owner.pid, nullptr, 0), owner.pid);
  EXPECT_TRUE(mpx::testing::wait_until([&] { return NetnsHosts::leftovers(slot).empty(); }, seconds(60)))
      << "slot " << slot << " still has hosts after its owner was killed";
}

// The janitor's process, found by its command line ("... mpx-janitor <netns> del S").
pid_t janitor_of(int slot) {
  const std::string tail = " del " + std::to_string(slot);
  DIR* proc = opendir("/proc");
  pid_t found = -1;
  while (dirent* e = proc != nullptr ? readdir(proc) : nullptr) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    const std::string cmd = pid > 0 ? mpx::testing::cmdline_of(pid) : "";
    if (cmd.find("mpx-janitor") != std::string::npos && cmd.size() >= tail.size() &&
        cmd.compare(cmd.size() - tail.size(), tail.size(), tail) == 0) {
      found = pid;
    }
  }
  if (proc != nullptr) closedir(proc);
  return found;
}

TEST_F(NetnsHostsTest, HostsLeftByAnOwnerKilledWithItsJanitorAreSweptByTheNextOwner) {
  const auto owner = mpx::testing::start_helper_driver("NetnsHelper.DISABLED_OwnerToBeKilled", kHelperVar);
  ASSERT_GT(owner.pid, 0) << owner.output;
  const int slot = std::atoi(owner.output.substr(owner.output.find("SLOT ") + 5).c_str());
  ASSERT_GT(slot, 0) << owner.output;
  const pid_t janitor = janitor_of(slot);
  ASSERT_GT(janitor, 0);
  // As when everything is killed at once: nobody cleans up.
  ASSERT_EQ(kill(janitor, SIGKILL), 0);
  ASSERT_EQ(kill(owner.pid, SIGKILL), 0);
  ASSERT_EQ(waitpid(owner.pid, nullptr, 0), owner.pid);
  ASSERT_TRUE(mpx::testing::wait_until([&] { return mpx::testing::cmdline_of(janitor).empty(); }, seconds(10)));
  EXPECT_FALSE(NetnsHosts::leftovers(slot).empty());

  {
    NetnsHosts next(1);  // sweeps the slots whose owner is gone
    EXPECT_TRUE(NetnsHosts::leftovers(slot).empty() || next.slot() == slot)
        << "stale slot " << slot << " not swept";
  }
  EXPECT_TRUE(NetnsHosts::leftovers(slot).empty());
}

TEST_F(NetnsHostsTest, BadArgumentsAreRefusedWithTheReason) {
  try {
    NetnsHosts hosts(0);
    ADD_FAILURE() << "0 hosts accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("1-253"), std::string::npos) << e.what();
  }
  NetnsHosts hosts(1);
  EXPECT_THROW(hosts.address(2), std::out_of_range);
  EXPECT_THROW(hosts.cut(0), std::out_of_range);
}

}  // namespace
