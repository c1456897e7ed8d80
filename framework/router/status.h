// What a live pool's router or a live actor tells `mpx status` / `mpx top`, and how
// they find it.
//
// Every router and every actor process listens on one more abstract unix socket,
// "@mpx-<pid namespace>-<pid>-status" (StatusListener): a peer that connects (same uid
// only: the listener checks SO_PEERCRED) reads one msgpack map, a PoolStatus or an
// ActorStatus told apart by its "kind", and the end of the stream. Discovery needs no
// daemon and no files: the live ones are exactly the listening sockets of that name in
// /proc/net/unix, and the kernel removes a socket when its process dies, so a dead pool
// or actor is never listed. The name is predictable (the pool's driver finds its
// router's for metrics): a reader accepts an answer only from a peer of its own uid, so
// another user who took the name first is refused, and that process then serves no
// status.
#ifndef MPX_FRAMEWORK_ROUTER_STATUS_H_
#define MPX_FRAMEWORK_ROUTER_STATUS_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <msgpack.hpp>

#include "framework/transport/transport.h"

namespace mpx {
namespace router {

struct WorkerStatus {
  std::int32_t pid = 0;  // on its host
  // Where it runs: empty on this host, else the place of its node agent (NodeStatus::place,
  // "<host name> (agent <pid>, #<n>)").
  std::string host;
  std::string name;   // "PoolWorker-3"
  std::string state;  // starting, idle, busy, retiring, stopping
  // The chunk it runs (first held), when busy: its task, call and items start..start+count-1.
  std::string task;
  std::uint64_t call_id = 0;
  std::uint64_t start = 0;
  std::uint32_t count = 0;
  std::uint32_t held = 0;          // chunks it holds (running and prefetched)
  std::uint64_t chunks_done = 0;   // results it sent
  std::uint64_t items_done = 0;
  std::uint64_t rss_bytes = 0;     // resident memory (/proc/<pid>/statm), 0 if unknown
  MSGPACK_DEFINE_MAP(pid, host, name, state, task, call_id, start, count, held, chunks_done, items_done,
                     rss_bytes);
};

// A node agent (framework/node) that joined a pool that listens: connected, or lost.
struct NodeStatus {
  std::string place;      // "<host> (agent <pid>, #<n>)": WorkerStatus::host of its workers
  std::string host;       // the agent's host name
  std::int64_t agent_pid = 0;  // on its host
  std::int32_t slots = 0;
  std::uint32_t workers = 0;   // running there now
  bool connected = false;
  double joined_s_ago = 0;
  double heard_s_ago = 0;      // its last message (heartbeats included)
  std::string lost;            // why it was declared lost, when !connected
  MSGPACK_DEFINE_MAP(place, host, agent_pid, slots, workers, connected, joined_s_ago, heard_s_ago, lost);
};

// Counters since the router started (monotonic, Prometheus counters) and gauges.
struct PoolStatus {
  std::string kind = "pool";
  std::int32_t router_pid = 0;
  std::int32_t driver_pid = 0;
  std::string program;  // the driver's command line, spaces between arguments
  std::int32_t workers_wanted = 0;
  std::uint64_t worker_memory_limit = 0;  // bytes, 0: none
  std::string front_endpoint;
  std::string listen_endpoint;  // where node agents dial, empty unless the pool listens
  std::string broken;  // why the pool is broken, empty if it is not
  double uptime_s = 0;
  std::uint64_t queued_chunks = 0;
  std::uint64_t in_flight_chunks = 0;
  std::uint64_t submitted_chunks = 0;
  std::uint64_t submitted_items = 0;
  std::uint64_t completed_chunks = 0;
  std::uint64_t completed_items = 0;
  std::uint64_t error_chunks = 0;   // result chunks carrying task errors (RemoteError)
  std::uint64_t lost_items = 0;     // failed with WorkerLost or TimeoutError
  std::uint64_t retried_chunks = 0; // run again after their worker died
  std::uint64_t taken_back_chunks = 0;  // taken back from a worker held up by a long chunk
  std::uint64_t bytes_in = 0;       // argument payloads received from clients
  std::uint64_t bytes_out = 0;      // result payloads forwarded to clients
  std::uint64_t worker_restarts = 0;  // workers replaced after a death
  std::map<std::string, std::uint64_t> worker_deaths;  // by cause: signal, exit, timeout, ...
  // Chunk latency (dispatch to result), cumulative counts per upper bound in seconds
  // (latency_bounds()), their count (the +Inf bucket) and sum. Timed: the chunk each
// worker runs, from when it became its first held to its result.
  std::vector<std::uint64_t> latency_buckets;
  std::uint64_t latency_count = 0;
  double latency_sum_s = 0;
  std::vector<WorkerStatus> workers;
  std::vector<NodeStatus> nodes;  // node agents, connected first
  MSGPACK_DEFINE_MAP(kind, router_pid, driver_pid, program, workers_wanted, worker_memory_limit,
                     front_endpoint, listen_endpoint, broken, uptime_s, queued_chunks, in_flight_chunks,
                     submitted_chunks, submitted_items, completed_chunks, completed_items,
                     error_chunks, lost_items, retried_chunks, bytes_in, bytes_out,
                     worker_restarts, worker_deaths, latency_buckets, latency_count, latency_sum_s,
                     workers, nodes, taken_back_chunks);
};

// One actor process (mpx::spawn): what its status thread reads of the counters its
// loop keeps, and what it was started as.
struct ActorStatus {
  std::string kind = "actor";
  std::int32_t pid = 0;
  std::int32_t driver_pid = 0;
  std::int32_t owner_pid = 0;  // the process that spawned it (and restarts it)
  std::string program;         // the driver's command line
  std::string class_name;
  std::string name;            // ActorOptions::name, or "<class>-<n>" for an unnamed actor
  std::string state;           // idle, running
  std::string method;          // the method it runs, when running
  std::uint64_t calls_done = 0;    // calls and tells that returned or raised
  std::uint64_t calls_failed = 0;  // of those, the ones that raised
  std::uint32_t callers = 0;       // processes connected to it
  std::uint32_t incarnation = 1;
  std::uint32_t restarts = 0;      // by its owner's supervisor (Restart::on_failure)
  double uptime_s = 0;             // of this incarnation
  std::uint64_t rss_bytes = 0;
  std::string endpoint;
  MSGPACK_DEFINE_MAP(kind, pid, driver_pid, owner_pid, program, class_name, name, state, method, calls_done,
                     calls_failed, callers, incarnation, restarts, uptime_s, rss_bytes, endpoint);
};

// Upper bounds (seconds) of PoolStatus::latency_buckets.
inline const std::vector<double>& latency_bounds() {
  static const std::vector<double> bounds(std::begin(wire::kLatencyBounds), std::end(wire::kLatencyBounds));
  return bounds;
}

// The status endpoint of the router or actor with this pid (in this pid namespace).
std::string status_endpoint_name(pid_t pid);
std::string encode_status(const PoolStatus& s);
std::string encode_status(const ActorStatus& s);
// Throws mpx::DecodeError for bytes that are not a PoolStatus (an ActorStatus).
PoolStatus decode_status(const std::string& bytes);
ActorStatus decode_actor_status(const std::string& bytes);

// The resident set of pid in bytes (/proc/<pid>/statm), 0 if it is gone or unreadable.
std::uint64_t rss_bytes(pid_t pid);
// pid's command line, spaces between arguments; empty if it is gone.
std::string command_line(pid_t pid);

// This process's status socket. Thread-compatible: one thread answers on it.
class StatusListener {
 public:
  StatusListener() = default;
  // Listens on status_endpoint_name(getpid()), unless the descriptor limit is below
  // descriptors_needed (the process's real work comes first) or the bind fails: then
  // logs why `mpx status` will not list `what` and returns an invalid listener.
  static StatusListener open(const std::string& what, std::size_t descriptors_needed);
  explicit operator bool() const { return static_cast<bool>(listener_); }
  int fd() const { return listener_.fd(); }
  // Without blocking: writes snapshot() (encoded) to every waiting peer of this uid and
  // closes it (others' are refused by the accept). Small enough for the socket buffer;
  // a reader that takes less gets a truncated answer and says so. False when accepting
  // failed for want of descriptors or memory: the socket stays readable, and the
  // caller must rest before it waits on it again, or it would spin.
  bool answer_waiting(const std::function<std::string()>& snapshot);

 private:
  explicit StatusListener(transport::Listener l) : listener_(std::move(l)) {}
  transport::Listener listener_;
};

// Status endpoints ("unix://@mpx-...-status") of the live routers and actors of this
// pid namespace (a container's or a sandbox's pids would mean nothing here), from
// /proc/net/unix (abstract listening sockets). Other users' are listed too (the table
// is global) but refuse the connection.
std::vector<std::string> status_endpoints();

// Reads the status of the router at endpoint; nullopt (and *why) if it is gone, refused
// (another user's), an actor, or answered garbage, within timeout.
std::optional<PoolStatus> query_status(const std::string& endpoint, std::chrono::milliseconds timeout,
                                       std::string* why);

// Every live pool and actor of this user on this machine.
struct LiveStatus {
  std::vector<PoolStatus> pools;    // in router pid order
  std::vector<ActorStatus> actors;  // in driver pid, then actor pid order
};
LiveStatus live_status(std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));

}  // namespace router
}  // namespace mpx

#endif  // MPX_FRAMEWORK_ROUTER_STATUS_H_
