// What a live pool's router tells `mpx status` / `mpx top`, and how they find it.
//
// Every router listens on one more abstract unix socket, "@mpx-<pid namespace>-<router pid>-status":
// a peer that connects (same uid only: the listener checks SO_PEERCRED) reads one
// msgpack PoolStatus and the end of the stream. Discovery needs no daemon and no
// files: the live routers are exactly the listening sockets of that name in
// /proc/net/unix, and the kernel removes a socket when its router dies, so a dead pool
// is never listed. The name is predictable (the pool's driver finds its router's for
// metrics): a reader accepts an answer only from a peer of its own uid, so another
// user who took the name first is refused, and that router then serves no status.
#ifndef MPX_FRAMEWORK_ROUTER_STATUS_H_
#define MPX_FRAMEWORK_ROUTER_STATUS_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <msgpack.hpp>

namespace mpx {
namespace router {

struct WorkerStatus {
  std::int32_t pid = 0;
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
  MSGPACK_DEFINE_MAP(pid, name, state, task, call_id, start, count, held, chunks_done, items_done,
                     rss_bytes);
};

// Counters since the router started (monotonic, Prometheus counters) and gauges.
struct PoolStatus {
  std::int32_t router_pid = 0;
  std::int32_t driver_pid = 0;
  std::string program;  // the driver's command line, spaces between arguments
  std::int32_t workers_wanted = 0;
  std::uint64_t worker_memory_limit = 0;  // bytes, 0: none
  std::string front_endpoint;
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
  MSGPACK_DEFINE_MAP(router_pid, driver_pid, program, workers_wanted, worker_memory_limit,
                     front_endpoint, broken, uptime_s, queued_chunks, in_flight_chunks,
                     submitted_chunks, submitted_items, completed_chunks, completed_items,
                     error_chunks, lost_items, retried_chunks, bytes_in, bytes_out,
                     worker_restarts, worker_deaths, latency_buckets, latency_count, latency_sum_s,
                     workers);
};

// Upper bounds (seconds) of PoolStatus::latency_buckets.
inline const std::vector<double>& latency_bounds() {
  static const std::vector<double> bounds{0.0001, 0.001, 0.01, 0.1, 1, 10, 60};
  return bounds;
}

// The status endpoint of the router with this pid (in this pid namespace).
std::string status_endpoint_name(pid_t router_pid);
std::string encode_status(const PoolStatus& s);
// Throws mpx::DecodeError for bytes that are not a PoolStatus.
PoolStatus decode_status(const std::string& bytes);

// The resident set of pid in bytes (/proc/<pid>/statm), 0 if it is gone or unreadable.
std::uint64_t rss_bytes(pid_t pid);

// Status endpoints ("unix://@mpx-...-status") of the live routers of this machine,
// from /proc/net/unix (abstract listening sockets). Others' routers are listed too
// (the table is global) but refuse the connection.
std::vector<std::string> status_endpoints();

// Reads the status of the router at endpoint; nullopt (and *why) if it is gone, refused
// (another user's) or answered garbage, within timeout.
std::optional<PoolStatus> query_status(const std::string& endpoint, std::chrono::milliseconds timeout,
                                       std::string* why);

// The statuses of every live pool of this user, in router pid order.
std::vector<PoolStatus> live_pools(std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));

}  // namespace router
}  // namespace mpx

#endif  // MPX_FRAMEWORK_ROUTER_STATUS_H_
