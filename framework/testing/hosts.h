// Several machines on one (testonly): "hosts" that are Linux network namespaces, and a
// real local Slurm cluster whose nodes are such hosts. Both need root; a test asks
// first and skips with the reason:
//
//   if (auto reason = mpx::testing::NetnsHosts::unavailable()) GTEST_SKIP() << *reason;
//   mpx::testing::NetnsHosts hosts(2);
//   // listen on hosts.bridge_address() in the test; run a copy of the test binary on host 1:
//   auto run = mpx::testing::run_helper("Helper.DISABLED_Dial", env, 30s, false,
//                                       hosts.launcher(1));
//   hosts.cut(1);      // host 1 partitioned: nothing passes, connections stay open
//   hosts.restore(1);
//
//   if (auto reason = mpx::testing::SlurmCluster::unavailable()) GTEST_SKIP() << *reason;
//   mpx::testing::SlurmCluster cluster(2);  // node1, node2
//   auto run = mpx::testing::run_command(
//       cluster.srun({"-N2", "--ntasks-per-node=1", "printenv", "SLURMD_NODENAME"}), {}, 60s);
//
// The work is done by the scripts in tools/cluster (netns, up, down), which a person
// can also run by hand; these classes find them in the runfiles (link the target
// //framework/testing:hosts) and hold the locks that keep parallel tests apart.
//
// Neither class is thread-safe; use one from one thread. Processes started inside a
// host are the caller's to reap, but whatever is still running in a host when the
// object goes is killed.
#ifndef MPX_FRAMEWORK_TESTING_HOSTS_H_
#define MPX_FRAMEWORK_TESTING_HOSTS_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "framework/testing/testing.h"

namespace mpx {
namespace testing {

// A slot of /run/mpx-netns held by this process and the janitor that cleans it up
// (hosts.cc).
class SlotLease;

// N hosts: network namespaces mpx<S>h1..mpx<S>hN, each with its own address
// 10.231.S.(h+1) on one bridge mpx<S>br, where the root namespace (this test) is
// 10.231.S.1. S, the slot, is free when taken (flock on /run/mpx-netns/S.lock, held
// for the object's lifetime), so tests running in parallel, in one Bazel or several,
// never share names or addresses. Hosts are numbered from 1, like their names.
//
// Cleanup: the destructor, or if this process dies first (however it dies) its
// janitor, kills every process in the hosts and removes namespaces, veths and bridge.
// The janitor is a `sh` in a session of its own, holding the slot's lock, that waits
// for EOF on a pipe only this process holds, then runs tools/cluster/netns del. Each
// constructor also sweeps the leftovers of slots whose owner is gone (both killed:
// tools/cluster/netns sweep).
class NetnsHosts {
 public:
  // Why hosts cannot be made here, or nullopt: not root, iproute2 or util-linux
  // missing, no network namespaces, veths or bridges in this kernel or container.
  static std::optional<std::string> unavailable();

  // Creates hosts 1..hosts (at most 253). Throws std::runtime_error saying what
  // failed (nothing is left behind then).
  explicit NetnsHosts(int hosts);
  NetnsHosts(const NetnsHosts&) = delete;
  NetnsHosts& operator=(const NetnsHosts&) = delete;
  ~NetnsHosts();

  int size() const { return hosts_; }
  int slot() const;
  // Where the root namespace is on the bridge: bind a listener here.
  std::string bridge_address() const;
  std::string address(int host) const;    // 10.231.S.(host+1)
  std::string netns(int host) const;      // mpx<S>h<host>, under /run/netns
  std::string interface(int host) const;  // mpx<S>v<host>: the host's veth in the root namespace
  // Runs a command in the host's network namespace (nsenter --net=; `ip netns exec`
  // would also remount /sys). Everything else (files, pids, users) is shared.
  Launcher launcher(int host) const;
  // The namespace's inode (/run/netns/<name>), to find its processes even after it is
  // gone from /run/netns: processes_in_netns({netns_id(h)}).
  ino_t netns_id(int host) const;

  // Partitions host: its veth goes down, nothing passes either way; sockets stay open
  // (TCP retransmits) until restore(). Throws std::runtime_error on failure.
  void cut(int host);
  void restore(int host);
  // A slow link: host sends and receives at most rate (tc's form: "40mbit") until
  // throttle(host, "off"). Throws std::runtime_error on failure.
  void throttle(int host, const std::string& rate);

  // Everything of slot that exists now ("netns mpx3h1", "link mpx3br", ...).
  static std::vector<std::string> leftovers(int slot);

 private:
  void check_host(int host) const;
  void set_link(const char* how, int host);

  int hosts_ = 0;
  std::unique_ptr<SlotLease> lease_;
  std::vector<ino_t> netns_ids_;
};

// A real local Slurm cluster (Debian's slurmctld, slurmd, munge) of `nodes` nodes
// node1..nodeN, brought up by tools/cluster/up for the object's lifetime and down by
// tools/cluster/down. Node K is its own host: namespace mpx0hK, address 10.231.0.(K+1);
// slurmctld is in the root namespace at 10.231.0.1, where the nodes' tasks reach the
// test. One cluster at a time per machine: the constructor waits (up to 300 s, or
// MPX_CLUSTER_LOCK_WAIT seconds) for the cluster lock /run/mpx-netns/0.lock, held until
// the object is gone, so tests that use it need no Bazel "exclusive" tag. Whatever
// cluster was up before (a person's, or one a dead test left) is replaced. Cleanup as
// for NetnsHosts: the destructor, or the janitor (tools/cluster/down) if this process
// dies first.
class SlurmCluster {
 public:
  // Why no cluster can be brought up here, or nullopt: not root, the packages
  // (slurmctld slurmd slurm-client munge: tools/install-deps) or namespaces missing.
  static std::optional<std::string> unavailable();

  // Brings the cluster up (nodes 1..200); returns once every node is idle. Throws
  // std::runtime_error with the script's output and the daemons' logs on failure
  // (nothing is left behind then).
  explicit SlurmCluster(int nodes = 2);
  SlurmCluster(const SlurmCluster&) = delete;
  SlurmCluster& operator=(const SlurmCluster&) = delete;
  ~SlurmCluster();

  int nodes() const { return nodes_; }
  std::string node_name(int node) const;  // node<K>
  std::string address(int node) const;    // 10.231.0.(K+1)
  std::string netns(int node) const;      // mpx0h<K>
  ino_t netns_id(int node) const;
  std::string head_address() const;       // 10.231.0.1
  std::string conf() const;               // /run/mpx-cluster/slurm.conf

  // `srun` for this cluster: {"env", "SLURM_CONF=<conf>", "srun", "--immediate=60",
  // args...} (a request that cannot be met fails instead of queueing until the test
  // times out). As a Launcher, args are srun's options: srun({"-N2",
  // "--ntasks-per-node=1"}); a task sees SLURMD_NODENAME, SLURM_PROCID and the rest.
  // Tasks inherit the environment of the process that runs srun.
  Launcher srun(const std::vector<std::string>& args) const;

  // What of a cluster exists now: processes of munged/slurmctld/slurmd/slurmstepd
  // whose command line names /run/mpx-cluster/ ("process PID CMDLINE"), namespaces and
  // links of slot 0 ("netns mpx0h1", "link mpx0br"); tools/cluster/down --dry-run.
  static std::vector<std::string> leftovers();

 private:
  int nodes_ = 0;
  std::unique_ptr<SlotLease> lease_;
  std::vector<ino_t> netns_ids_;
};

// Live processes whose network namespace is one of these (inodes, from netns_id()).
std::vector<Descendant> processes_in_netns(const std::vector<ino_t>& ids);

}  // namespace testing
}  // namespace mpx

#endif  // MPX_FRAMEWORK_TESTING_HOSTS_H_
