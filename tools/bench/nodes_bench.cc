// Many machines (tools/bench/run --only=nodes): a pool whose 4 workers run on two
// network-namespace "hosts" (node agents, 2 slots each, ZeroMQ tcp with CURVE over a
// veth and a bridge) against the same pool with its 4 workers local (unix streams):
// map of 1M ints with default chunks, a map with chunksize=1, and one apply's round
// trip. The hop's own floor (TCP and ZeroMQ tcp to a namespace host) is floors'.
// Root only: without network namespaces it prints why and emits nothing.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "framework/testing/hosts.h"
#include "mpx/mpx.h"
#include "tools/bench/bench.h"

extern char** environ;

namespace {

long long nodes_square(long long x) { return x * x; }
MPX_PURE_TASK(nodes_square);

// An agent started in a host's namespace; killed and reaped when destroyed.
struct AgentProcess {
  pid_t pid = -1;
  AgentProcess(const mpx::testing::Launcher& launcher, const std::string& endpoint, const std::string& key) {
    std::vector<std::string> args = launcher;
    for (const std::string& a : {std::string("/proc/self/exe"), "--mpx-node=" + endpoint, "--mpx-key=" + key,
                                 std::string("--mpx-slots=2")}) {
      args.push_back(a);
    }
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) args[launcher.size()] = std::string(self, n);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
  }
  ~AgentProcess() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

void run(const bench::Args& args, mpx::Pool& pool, const std::string& where) {
  const long long n = static_cast<long long>(1000000 * args.scale);
  std::vector<long long> items(n);
  for (long long i = 0; i < n; ++i) items[i] = i;
  bench::measure(args, "map(square, 1M ints), default chunks, 4 workers " + where, "items/s", [&] {
    const auto t0 = bench::Clock::now();
    const auto out = pool.map(nodes_square, items);
    return static_cast<double>(out.size()) / bench::seconds_since(t0);
  });
  const std::vector<long long> few(items.begin(), items.begin() + std::min<long long>(n, 20000));
  bench::measure(args, "map(square, 20k ints), chunksize=1, 4 workers " + where, "items/s", [&] {
    const auto t0 = bench::Clock::now();
    const auto out = pool.map(nodes_square, few, 1);
    return static_cast<double>(out.size()) / bench::seconds_since(t0);
  });
  bench::measure(args, "apply round trip, " + where, "us", [&] {
    return bench::p50_us(50, 500, [&](int) { pool.apply(nodes_square, 3LL); });
  });
}

}  // namespace

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  const bench::Args args(argc, argv);
  {
    mpx::Pool local(mpx::PoolOptions().processes(4));
    run(args, local, "local");
  }
  if (auto reason = mpx::testing::NetnsHosts::unavailable()) {
    std::fprintf(stderr, "nodes_bench: no namespace hosts: %s\n", reason->c_str());
    return 0;
  }
  mpx::testing::NetnsHosts hosts(2);
  const std::string key = "/tmp/mpx-nodes-bench-" + std::to_string(::getpid()) + ".key";
  {
    mpx::Pool pool(mpx::PoolOptions()
                       .processes(0)
                       .listen("tcp://" + hosts.bridge_address() + ":0")
                       .cluster_key(key));
    AgentProcess a(hosts.launcher(1), pool.endpoint(), key), b(hosts.launcher(2), pool.endpoint(), key);
    pool.wait_for_workers(4, std::chrono::seconds(60));
    run(args, pool, "on 2 namespace hosts");
  }
  ::unlink(key.c_str());
  return 0;
}
