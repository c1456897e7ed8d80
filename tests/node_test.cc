// Node agents on this host over tcp://127.0.0.1 (tests/netns_hosts_test.cc runs them in
// network namespaces): real agents (this binary with --mpx-node), real CURVE links,
// real kills. Maps of a pure task must come back exact, each result once, whatever
// happens to an agent or its workers mid-map.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "framework/node/keys.h"
#include "framework/router/status.h"
#include "framework/testing/testing.h"
#include "mpx/mpx.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;

long long node_square(long long x) { return x * x; }
MPX_PURE_TASK(node_square);

int read_shared(mpx::Value<int> v) { return v.load(); }
MPX_TASK(read_shared);

int quick_unless_negative(int x) {
  if (x < 0) ::raise(SIGKILL);
  return x;
}
MPX_TASK(quick_unless_negative);

std::string temp_path(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name + "-" + std::to_string(::getpid());
}

// An agent: this binary with --mpx-node. Its stderr goes to the test's.
struct Agent {
  pid_t pid = -1;
  Agent(const std::string& endpoint, const std::string& key, int slots, int connect_timeout_s = 30,
        const std::string& program = mpx::testing::self_exe()) {
    std::vector<std::string> args = {program, "--mpx-node=" + endpoint, "--mpx-key=" + key,
                                     "--mpx-slots=" + std::to_string(slots),
                                     "--mpx-connect-timeout=" + std::to_string(connect_timeout_s)};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) pid = -1;
  }
  // Its exit code (or -signal), waiting up to timeout (then killed: kTimedOut).
  int wait_exit(std::chrono::milliseconds timeout) { return mpx::testing::wait_exit(std::exchange(pid, -1), timeout); }
  ~Agent() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

std::vector<long long> iota(long long n) {
  std::vector<long long> v(n);
  for (long long i = 0; i < n; ++i) v[i] = i;
  return v;
}

bool maps_libzmq(pid_t pid) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("libzmq") != std::string::npos) return true;
  }
  return false;
}

mpx::PoolOptions listening(const std::string& key) {
  return mpx::PoolOptions().processes(0).listen("tcp://127.0.0.1:0").cluster_key(key).host_timeout(1000ms);
}

TEST(NodeTest, AgentsOverTcpGiveExactResults) {
  const std::string key = temp_path("cluster.key");
  std::vector<pid_t> agent_pids;
  std::unique_ptr<Agent> a, b;
  {
    mpx::Pool pool(listening(key));
    EXPECT_TRUE(maps_libzmq(pool.router_pid()));
    const std::string endpoint = pool.endpoint();
    EXPECT_EQ(endpoint.rfind("tcp://127.0.0.1:", 0), 0u) << endpoint;
    a = std::make_unique<Agent>(endpoint, key, 2);
    b = std::make_unique<Agent>(endpoint, key, 2);
    agent_pids = {a->pid, b->pid};
    pool.wait_for_workers(4, 60s);
    const auto out = pool.map(node_square, iota(20000));
    ASSERT_EQ(out.size(), 20000u);
    for (long long i = 0; i < 20000; ++i) ASSERT_EQ(out[i], i * i);
    // Workers run on the agents' side: the agents spawned them.
    EXPECT_EQ(mpx::testing::worker_pids(a->pid).size(), 2u);
    EXPECT_EQ(mpx::testing::worker_pids(b->pid).size(), 2u);
  }
  // The pool's graceful end tells the agents: they end their workers and exit 0.
  EXPECT_EQ(a->wait_exit(30s), 0);
  EXPECT_EQ(b->wait_exit(30s), 0);
  for (pid_t p : agent_pids) EXPECT_TRUE(mpx::testing::wait_no_descendants(10s, p).empty());
  struct stat st {};
  ASSERT_EQ(::stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ::unlink(key.c_str());
}

// The pool's router killed while agents serve it: its replacement listens on the same
// port, the agents (whose router went silent) dial again, and the pure map loses nothing.
TEST(NodeTest, AReplacedRouterListensWhereItsPredecessorDidAndTheAgentsRejoin) {
  const std::string key = temp_path("cluster-replaced.key");
  {
    mpx::Pool pool(listening(key));
    const std::string endpoint = pool.endpoint();
    Agent a(endpoint, key, 2);
    pool.wait_for_workers(2, 60s);
    const pid_t router = pool.router_pid();
    std::vector<long long> out;
    std::vector<long long> xs = iota(20000);
    bool killed = false;
    for (long long v : pool.imap(node_square, xs, 100)) {
      out.push_back(v);
      if (!killed && out.size() == 2000) {
        ASSERT_EQ(::kill(router, SIGKILL), 0);
        killed = true;
      }
    }
    ASSERT_EQ(out.size(), xs.size());
    for (long long i = 0; i < 20000; ++i) ASSERT_EQ(out[i], i * i);
    EXPECT_NE(pool.router_pid(), router);
    EXPECT_EQ(pool.endpoint(), endpoint);
  }
  ::unlink(key.c_str());
}

// `mpx status` of a pool that listens: its endpoint, each agent (host, pid, slots,
// workers, connected), each remote worker's host; a killed agent shows as lost.
TEST(NodeTest, StatusShowsTheNodesAndWhereEachWorkerRuns) {
  const std::string key = temp_path("cluster-status.key");
  {
    mpx::Pool pool(listening(key));
    Agent a(pool.endpoint(), key, 2);
    Agent b(pool.endpoint(), key, 1);
    pool.wait_for_workers(3, 60s);
    char host[256] = {0};
    ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
    const std::string place_a = std::string(host) + " (agent " + std::to_string(a.pid) + ", #";
    const std::string place_b = std::string(host) + " (agent " + std::to_string(b.pid) + ", #";
    const std::string status_endpoint = mpx::router::status_endpoint_name(pool.router_pid());
    std::string why;
    std::optional<mpx::router::PoolStatus> s;
    // Every worker says READY before the status counts it idle.
    mpx::testing::wait_until(
        [&] {
          s = mpx::router::query_status(status_endpoint, 10s, &why);
          if (!s || s->workers.size() != 3) return false;
          for (const auto& w : s->workers) {
            if (w.pid <= 0) return false;
          }
          return true;
        },
        30s);
    ASSERT_TRUE(s) << why;
    EXPECT_EQ(s->listen_endpoint, pool.endpoint());
    ASSERT_EQ(s->nodes.size(), 2u);
    for (const auto& n : s->nodes) {
      const bool is_a = n.agent_pid == a.pid;
      EXPECT_TRUE(is_a || n.agent_pid == b.pid) << n.agent_pid;
      EXPECT_EQ(n.host, host);
      EXPECT_EQ(n.place.rfind(is_a ? place_a : place_b, 0), 0u) << n.place;
      EXPECT_EQ(n.slots, is_a ? 2 : 1);
      EXPECT_EQ(n.workers, is_a ? 2u : 1u);
      EXPECT_TRUE(n.connected);
      EXPECT_EQ(n.lost, "");
    }
    int on_a = 0;
    for (const auto& w : s->workers) {
      EXPECT_FALSE(w.host.empty()) << w.name << " runs on an agent, not on the router's host";
      if (w.host.rfind(place_a, 0) == 0) {
        ++on_a;
        const auto pids = mpx::testing::worker_pids(a.pid);
        EXPECT_EQ(std::count(pids.begin(), pids.end(), w.pid), 1) << w.name << " " << w.pid;
      }
      EXPECT_EQ(w.rss_bytes, 0u) << "a remote worker's memory is its host's to tell";
    }
    EXPECT_EQ(on_a, 2);

    // The CLI shows the same.
    auto cli = mpx::testing::run_command({mpx::testing::runfile("tools/cli/mpx"), "status"}, {}, 30s);
    EXPECT_NE(cli.output.find("  node agents dial " + pool.endpoint() + "\n"), std::string::npos) << cli.output;
    EXPECT_NE(cli.output.find("  NODE"), std::string::npos) << cli.output;
    EXPECT_NE(cli.output.find("  workers 3/3  "), std::string::npos) << "the agents' slots are wanted too: "
                                                                     << cli.output;
    char row[512];
    std::snprintf(row, sizeof row, "  %-32s %7d %5d %7d  connected ", host, a.pid, 2, 2);
    EXPECT_NE(cli.output.find(row), std::string::npos) << row << "\n" << cli.output;
    EXPECT_NE(cli.output.find("  HOST\n"), std::string::npos) << cli.output;
    EXPECT_NE(cli.output.find("  " + place_b), std::string::npos) << cli.output;

    // Agent b is killed: after the host timeout it is lost, and so are its workers.
    ::kill(b.pid, SIGKILL);
    mpx::testing::wait_until(
        [&] {
          s = mpx::router::query_status(status_endpoint, 10s, &why);
          return s && s->nodes.size() == 2 && !s->nodes[1].connected;
        },
        30s);
    ASSERT_TRUE(s) << why;
    ASSERT_EQ(s->nodes.size(), 2u);
    EXPECT_EQ(s->nodes[0].agent_pid, a.pid);
    EXPECT_TRUE(s->nodes[0].connected);
    EXPECT_EQ(s->nodes[1].agent_pid, b.pid);
    EXPECT_FALSE(s->nodes[1].connected);
    EXPECT_EQ(s->nodes[1].workers, 0u);
    EXPECT_NE(s->nodes[1].lost.find("silent"), std::string::npos) << s->nodes[1].lost;
    for (const auto& w : s->workers) EXPECT_EQ(w.host.rfind(place_a, 0), 0u) << w.name << " on " << w.host;
    cli = mpx::testing::run_command({mpx::testing::runfile("tools/cli/mpx"), "status", "--json"}, {}, 30s);
    EXPECT_NE(cli.output.find("\"agent_pid\":" + std::to_string(b.pid) + ",\"slots\":1,\"workers\":0,"
                              "\"connected\":false,"),
              std::string::npos)
        << cli.output;
  }
  ::unlink(key.c_str());
}

TEST(NodeTest, LocalPoolDoesNotLoadZeroMq) {
  mpx::Pool pool(2);
  EXPECT_EQ(pool.map(node_square, iota(10))[3], 9);
  EXPECT_FALSE(maps_libzmq(pool.router_pid()));
  EXPECT_FALSE(maps_libzmq(::getpid()));
  EXPECT_THROW(pool.endpoint(), mpx::Error);
}

TEST(NodeTest, WaitForWorkersTimesOutNamingTheCount) {
  const std::string key = temp_path("short.key");
  mpx::Pool pool(listening(key));
  try {
    pool.wait_for_workers(3, 200ms);
    ADD_FAILURE() << "no throw";
  } catch (const mpx::TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("0 of 3"), std::string::npos) << e.what();
  }
  ::unlink(key.c_str());
}

// A pool of hosts alone that has no worker: the chunks of a call wait for an agent to
// join, and the router says so at once (in its log) rather than leaving the caller
// with a silent wait.
TEST(NodeHelper, DISABLED_CallWithoutHosts) {
  const char* key = std::getenv("MPX_NODE_TEST_KEY");
  if (key == nullptr) GTEST_SKIP();
  mpx::Pool pool(listening(key));
  auto squares = pool.map_async(node_square, iota(4), 1);
  std::printf("WAITED: %s\n", squares.wait_for(1500ms) ? "no" : "yes");
  std::fflush(stdout);
  pool.terminate();
}

TEST(NodeTest, ACallWithoutHostsSaysItWaitsForAnAgent) {
  const std::string key = temp_path("nohosts.key");
  const auto run = mpx::testing::run_helper("NodeHelper.DISABLED_CallWithoutHosts",
                                            {"MPX_NODE_TEST_KEY=" + key}, 60s);
  ASSERT_FALSE(run.timed_out) << run.output;
  EXPECT_NE(run.output.find("WAITED: yes"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("chunk(s) wait for a node agent to join (start agents with "
                            "--mpx-node=tcp://127.0.0.1:"),
            std::string::npos)
      << run.output;
  ::unlink(key.c_str());
}

// A pool bound to every interface prints the address it tells agents (its endpoint).
TEST(NodeHelper, DISABLED_WildcardEndpoint) {
  const char* key = std::getenv("MPX_NODE_TEST_KEY");
  if (key == nullptr) GTEST_SKIP();
  mpx::Pool pool(mpx::PoolOptions().processes(0).listen("tcp://0.0.0.0:0").cluster_key(key));
  std::printf("ENDPOINT: %s\n", pool.endpoint().c_str());
  std::fflush(stdout);
}

// On a host with two networks, where the first interface is not the one the default
// route leaves by (a private network listed first), a wildcard listen tells agents the
// default route's address, as Ray and Dask do: the first interface's may be unreachable
// from the other hosts. Run in a network namespace of its own with two veth links.
TEST(NodeTest, AWildcardListenTellsAgentsTheDefaultRoutesAddress) {
  // ip may live in /usr/sbin only (Fedora), outside a test's PATH.
  const std::string path = "PATH=/usr/sbin:/sbin:/usr/bin:/bin";
  const auto probe = mpx::testing::run_command(
      {"unshare", "--net", "sh", "-c", "ip link add probe0 type veth peer name probe1"}, {path}, 30s);
  if (!probe.exited_with(0)) {
    GTEST_SKIP() << "no network namespace with veth links to be had here (needs root and ip): "
                 << probe.output;
  }
  const std::string key = temp_path("wildcard.key");
  const auto endpoint_in_namespace = [&](const std::string& route) {
    const std::string setup =
        "ip link add first type veth peer name first-peer && "
        "ip link add second type veth peer name second-peer && "
        "ip addr add 10.1.0.1/24 dev first && ip addr add 10.2.0.1/24 dev second && "
        "for d in lo first first-peer second second-peer; do ip link set $d up; done && " +
        route + "exec \"$0\" \"$@\"";
    return mpx::testing::run_helper("NodeHelper.DISABLED_WildcardEndpoint",
                                    {"MPX_NODE_TEST_KEY=" + key, "MPX_LOG=info", "MPX_LOG_FILE=", path}, 60s,
                                    false, {"unshare", "--net", "sh", "-c", setup});
  };
  const auto routed = endpoint_in_namespace("ip route add default via 10.2.0.254 dev second && ");
  ASSERT_TRUE(routed.exited_with(0)) << routed.output;
  EXPECT_NE(routed.output.find("ENDPOINT: tcp://10.2.0.1:"), std::string::npos) << routed.output;
  EXPECT_NE(routed.output.find("(the default route's address; this host also has 10.1.0.1"), std::string::npos)
      << routed.output;
  // Without a default route: the first interface that is up, not loopback.
  const auto unrouted = endpoint_in_namespace("");
  ASSERT_TRUE(unrouted.exited_with(0)) << unrouted.output;
  EXPECT_NE(unrouted.output.find("ENDPOINT: tcp://10.1.0.1:"), std::string::npos) << unrouted.output;
  EXPECT_NE(unrouted.output.find("(the first interface's address: no default route; this host also has 10.2.0.1"),
            std::string::npos)
      << unrouted.output;
  ::unlink(key.c_str());
}

TEST(NodeTest, BadListenAndKeyFileAreRefusedClearly) {
  EXPECT_THROW(mpx::Pool(mpx::PoolOptions().processes(0).listen("tcp://nohost").cluster_key("k")), mpx::Error);
  EXPECT_THROW(mpx::Pool(mpx::PoolOptions().processes(0).listen("tcp://127.0.0.1:0")), mpx::Error);
  // A key in directories that do not exist yet: made, 0700, and the key 0600.
  const std::string dir = temp_path("keys") + "/nested";
  const std::string key = dir + "/open.key";
  { mpx::Pool pool(listening(key)); }
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // What the router refuses reaches the caller, not only the router's log.
  ::chmod(key.c_str(), 0644);
  try {
    mpx::Pool pool(listening(key));
    ADD_FAILURE() << "no throw";
  } catch (const mpx::PoolBroken& e) {
    EXPECT_NE(std::string(e.what()).find("the router could not start: mpx: cluster key file"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("chmod 600 " + key), std::string::npos) << e.what();
  }
  ::chmod(key.c_str(), 0600);
  {
    mpx::Pool first(listening(key));
    const std::string taken = first.endpoint();
    try {
      mpx::Pool second(mpx::PoolOptions().processes(0).listen(taken).cluster_key(key));
      ADD_FAILURE() << "two pools listen on " << taken;
    } catch (const mpx::PoolBroken& e) {
      EXPECT_NE(std::string(e.what()).find("Address already in use"), std::string::npos) << e.what();
    }
  }
  try {
    mpx::Pool named(mpx::PoolOptions().processes(0).listen("tcp://localhost:0").cluster_key(key));
    ADD_FAILURE() << "listened on a host name";
  } catch (const mpx::PoolBroken& e) {
    EXPECT_NE(std::string(e.what()).find("host names are not bound"), std::string::npos) << e.what();
  }
  // An agent given something it cannot dial says what it takes.
  const auto agent = mpx::testing::run_command(
      {mpx::testing::self_exe(), "--mpx-node=10.0.0.1:5555", "--mpx-key=" + key}, {}, 30s);
  EXPECT_TRUE(agent.exited_with(1)) << agent.output;
  EXPECT_NE(agent.output.find("--mpx-node=10.0.0.1:5555 is not an endpoint an agent can dial: give the "
                              "pool's endpoint(), tcp://host:port"),
            std::string::npos)
      << agent.output;
  ::unlink(key.c_str());
  ::rmdir(dir.c_str());
  ::rmdir(temp_path("keys").c_str());
}

// A free tcp port on 127.0.0.1 (bound and released: nobody else picks it in the
// moment this test needs).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// An agent whose key is not in the pool's key file never joins: the ZAP handler
// refuses its handshake, and it gives up with a message. It dials before the pool
// listens (ZeroMQ retries every 100 ms), so its first handshake meets the router as
// it starts: the handler is bound before the ROUTER, so there is no window.
TEST(NodeTest, StrangersKeyIsRefusedFromTheFirstHandshake) {
  const std::string key = temp_path("pool.key");
  const std::string other = temp_path("other.key");
  const std::string stranger = temp_path("stranger.key");
  auto mine = mpx::node::ClusterKey::load(key, true);
  const auto theirs = mpx::node::ClusterKey::load(other, true);
  mine.agent = theirs.agent;  // the pool's router key, an agent key it never saw
  mine.authorized.clear();
  {
    const int fd = ::open(stranger.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const std::string text = mine.text();
    ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    ::close(fd);
  }
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  Agent agent(endpoint, stranger, 2, /*connect_timeout_s=*/4);
  mpx::Pool pool(mpx::PoolOptions().processes(0).listen(endpoint).cluster_key(key).host_timeout(1000ms));
  EXPECT_EQ(pool.endpoint(), endpoint);
  EXPECT_THROW(pool.wait_for_workers(1, 2000ms), mpx::TimeoutError);
  EXPECT_EQ(agent.wait_exit(30s), 1);
  // The same pool admits an agent with its own key.
  Agent friendly(endpoint, key, 1);
  pool.wait_for_workers(1, 60s);
  EXPECT_EQ(pool.apply(node_square, 9), 81);
  for (const auto& f : {key, other, stranger}) ::unlink(f.c_str());
}

// Another program (another build-id, other tasks) is refused, saying why.
TEST(NodeTest, AnotherProgramIsRefusedSayingWhy) {
  const std::string key = temp_path("other-program.key");
  mpx::Pool pool(listening(key));
  const std::string program = std::string(std::getenv("TEST_SRCDIR")) + "/mpx/tests/node_other_program";
  const std::string log = temp_path("other-program.log");
  pid_t pid = -1;
  {
    std::vector<std::string> args = {program, "--mpx-node=" + pool.endpoint(), "--mpx-key=" + key, "--mpx-slots=1"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_EQ(::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << status;
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find("refused this agent: the agent runs another build of the program (build-id"),
            std::string::npos)
      << text.str();
  ::unlink(log.c_str());
  ::unlink(key.c_str());
}

// Agents on the same host may dial an ipc:// endpoint.
TEST(NodeTest, AgentOverIpc) {
  const std::string key = temp_path("ipc.key");
  const std::string endpoint = "ipc://@mpx-node-test-" + std::to_string(::getpid());
  mpx::Pool pool(mpx::PoolOptions().processes(1).listen(endpoint).cluster_key(key));
  EXPECT_EQ(pool.endpoint(), endpoint);
  Agent agent(endpoint, key, 2);
  pool.wait_for_workers(3, 60s);
  const auto out = pool.map(node_square, iota(1000));
  for (long long i = 0; i < 1000; ++i) ASSERT_EQ(out[i], i * i);
  ::unlink(key.c_str());
}

// A remote worker that dies with results it had not written yet (they wait to be
// written together, in the page it shares with its agent): the agent sends them with
// its exit, and only the items that killed workers are lost. Chunks relayed by the
// agent often arrive one at a time, so a death finds results waiting less often than
// on a local worker (tests/fault_test.cc): 15 deaths give it many chances.
TEST(NodeTest, QuickResultsNotYetWrittenWhenARemoteWorkerDiesAreDelivered) {
  const std::string key = temp_path("unsent.key");
  mpx::Pool pool(listening(key));
  Agent agent(pool.endpoint(), key, 1);
  pool.wait_for_workers(1, 60s);
  for (int round = 0; round < 5; ++round) {
    std::vector<int> xs(401);
    for (int i = 0; i < 401; ++i) xs[i] = i;
    for (int killer : {100, 200, 300}) xs[killer] = -1;
    auto it = pool.imap_unordered(quick_unless_negative, xs, 1);
    std::set<int> seen;
    std::set<std::uint64_t> lost;
    for (;;) {
      try {
        auto v = it.next(60s);
        if (!v) break;
        EXPECT_TRUE(seen.insert(*v).second) << "duplicate " << *v;
      } catch (const mpx::WorkerLost& e) {
        lost.insert(e.lost_tasks().begin(), e.lost_tasks().end());
      }
    }
    EXPECT_EQ(lost, (std::set<std::uint64_t>{100, 200, 300})) << "round " << round << ": only the killers";
    EXPECT_EQ(seen.size(), 398u) << "round " << round;
    pool.wait_for_workers(1, 60s);
  }
  ::unlink(key.c_str());
}

// Shared memory does not cross hosts: a call carrying a handle fails on a remote
// worker with an error that says so (the worker's pid is no process on another host).
TEST(NodeTest, SharedMemoryHandleOnARemoteWorkerIsRefusedClearly) {
  const std::string key = temp_path("shm.key");
  mpx::Pool pool(listening(key));
  Agent agent(pool.endpoint(), key, 1);
  pool.wait_for_workers(1, 60s);
  mpx::Value<int> v(7);
  try {
    pool.apply(read_shared, v);
    ADD_FAILURE() << "no throw";
  } catch (const mpx::RemoteError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot be used by a worker on another host"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(pool.apply(node_square, 5), 25) << "the worker goes on";
  ::unlink(key.c_str());
}

enum class Fault { kAgentKill, kAgentStop, kRemoteWorkerKill };

// 100,000 items of a pure task across two agents (2 workers each); the fault hits
// agent a once 1,000 results have come back.
void map_through_fault(Fault fault) {
  const std::string key = temp_path("fault.key");
  mpx::Pool pool(listening(key));
  // A short dial timeout: after the router's end they give up within 1 + 2 s.
  Agent a(pool.endpoint(), key, 2, 2), b(pool.endpoint(), key, 2, 2);
  pool.wait_for_workers(4, 60s);
  const long long n = 100000;
  auto it = pool.imap(node_square, iota(n), 50);
  long long i = 0;
  auto next = [&] {
    auto v = it.next();
    return v ? static_cast<long long>(*v) : -1;
  };
  for (; i < 1000; ++i) ASSERT_EQ(next(), i * i);
  switch (fault) {
    case Fault::kAgentKill:
      ::kill(a.pid, SIGKILL);
      break;
    case Fault::kAgentStop:
      ::kill(a.pid, SIGSTOP);
      break;
    case Fault::kRemoteWorkerKill: {
      const auto workers = mpx::testing::worker_pids(a.pid);
      ASSERT_FALSE(workers.empty());
      ::kill(workers.front(), SIGKILL);
      break;
    }
  }
  // imap yields each index once, in order: every value exact means none lost, none twice.
  for (; i < n; ++i) ASSERT_EQ(next(), i * i) << "item " << i;
  EXPECT_EQ(next(), -1);
  if (fault == Fault::kAgentStop) {
    // Woken after it was declared lost: told so (or finding the router silent), it
    // kills its old workers and joins again as a new agent.
    EXPECT_EQ(mpx::testing::worker_pids(a.pid).size(), 2u) << "its workers ran on while it was stopped";
    ::kill(a.pid, SIGCONT);
    pool.wait_for_workers(4, 60s);
    EXPECT_EQ(pool.map(node_square, iota(1000))[999], 999 * 999);
  }
  if (fault == Fault::kRemoteWorkerKill) {
    // The agent replaced its worker.
    EXPECT_TRUE(mpx::testing::wait_until([&] { return mpx::testing::worker_pids(a.pid).size() == 2; }, 30s));
  }
  const pid_t a_pid = a.pid, b_pid = b.pid;
  // terminate() kills the router at once: the agents find it silent for the host
  // timeout, kill their workers and exit 3.
  pool.terminate();
  if (fault != Fault::kAgentKill) {
    EXPECT_EQ(a.wait_exit(30s), 3);
  }
  EXPECT_EQ(b.wait_exit(30s), 3);
  for (pid_t p : {a_pid, b_pid}) {
    if (p > 0) {
      EXPECT_TRUE(mpx::testing::wait_no_descendants(10s, p).empty());
    }
  }
  ::unlink(key.c_str());
}

TEST(NodeTest, AgentKilledMidMapLosesNothing) { map_through_fault(Fault::kAgentKill); }
TEST(NodeTest, AgentStoppedMidMapLosesNothing) { map_through_fault(Fault::kAgentStop); }
TEST(NodeTest, RemoteWorkerKilledMidMapLosesNothing) { map_through_fault(Fault::kRemoteWorkerKill); }

}  // namespace
