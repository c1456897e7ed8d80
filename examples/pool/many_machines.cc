// Many machines: a Pool whose workers run on other hosts. The same program runs on every
// host; there it is started as a node agent, which dials the pool and runs workers:
//
//   ./many_machines --mpx-node=tcp://head:5555 --mpx-key=cluster.key --mpx-slots=8
//
// (srun or ssh do that on a real cluster: README "Many machines"). So that this example
// runs anywhere, it starts two agents on this host itself, dialing 127.0.0.1.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "mpx/mpx.h"

extern char** environ;

long long square(long long x) { return x * x; }
MPX_PURE_TASK(square);

// Starts this program as a node agent (what srun or ssh would do on another host).
pid_t start_agent(const std::string& endpoint, const std::string& key, int slots) {
  std::vector<std::string> args = {"/proc/self/exe", "--mpx-node=" + endpoint, "--mpx-key=" + key,
                                   "--mpx-slots=" + std::to_string(slots)};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ);
  return pid;
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);  // an agent runs in here and exits when its pool is gone
  const std::string key = "/tmp/mpx-example-" + std::to_string(getpid()) + ".key";
  std::vector<pid_t> agents;
  {
    // One local worker; the agents bring the others. Port 0: any free port.
    mpx::Pool pool(mpx::PoolOptions().processes(1).listen("tcp://127.0.0.1:0").cluster_key(key));
    std::printf("agents dial %s\n", pool.endpoint().rfind("tcp://127.0.0.1:", 0) == 0 ? "tcp://127.0.0.1:<port>"
                                                                                        : "?");
    agents.push_back(start_agent(pool.endpoint(), key, 2));
    agents.push_back(start_agent(pool.endpoint(), key, 2));
    pool.wait_for_workers(5, std::chrono::seconds(60));
    std::printf("5 workers serve: 1 here, 2 per agent\n");
    std::vector<long long> xs(100000);
    for (long long i = 0; i < 100000; ++i) xs[i] = i;
    long long sum = 0;
    for (long long r : pool.map(square, xs)) sum += r;
    std::printf("sum of squares below 100000: %lld\n", sum);
  }  // the pool ends: it tells its agents, which end their workers and exit
  for (pid_t a : agents) {
    int status = 0;
    waitpid(a, &status, 0);
    std::printf("agent exited with code %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  }
  unlink(key.c_str());
  return 0;
}
