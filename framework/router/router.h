// The router: owns a pool's task queue, hands chunks to workers, carries results
// back, and supervises the workers (replace the dead, retire after maxtasksperchild,
// fail the tasks a dead worker held, detect idle workers that stopped answering).
//
// RouterCore is the whole policy, free of sockets and processes: it reacts to
// messages, exits and ticks, and acts through RouterIo (messages) and WorkerSupervisor
// (processes). run_router wires it to real unix stream connections and LocalWorkers;
// tests drive RouterCore with a recording fake of both.
//
// Invariants: every chunk the router accepted is, at any time, in exactly one place —
// the queue, one worker's in-flight list, or answered (result forwarded, or reported
// lost / failed to its client). A client is one connection, routing id "R<token>":
// it submits, and what its calls produce goes back to it.
#ifndef MPX_FRAMEWORK_ROUTER_ROUTER_H_
#define MPX_FRAMEWORK_ROUTER_ROUTER_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <optional>
#include <string>
#include <string_view>
#include <vector>


#include "framework/router/status.h"
#include "framework/spawn/spawn.h"
#include "framework/transport/transport.h"
#include "framework/wire/messages.h"

namespace mpx {
namespace router {

using Clock = std::chrono::steady_clock;

// Longer than any run: a timeout from here on means none. Every duration in a Config
// is at most this, so that the clock's nanoseconds hold it, and a chunk's budget
// (chunk_budget) saturates here.
constexpr std::chrono::milliseconds kForever = std::chrono::hours(24 * 365 * 100);
// A chunk held behind one its worker has run this long may be taken back for an idle
// worker (RouterCore::take_back_waiting). Long against a quick chunk, so that a stream
// of them is not shuffled between workers; short against a task a user calls long.
constexpr std::chrono::milliseconds kTakeBackAfter{10};
// task_timeout for each of a chunk's count tasks, at most kForever.
inline std::chrono::milliseconds chunk_budget(std::chrono::milliseconds per_task, std::uint64_t count) {
  if (count != 0 && static_cast<std::uint64_t>(per_task.count()) > static_cast<std::uint64_t>(kForever.count()) / count) {
    return kForever;
  }
  return per_task * static_cast<std::int64_t>(count);
}

struct Config {
  std::string front_endpoint;  // clients connect here
  std::string back_endpoint;   // workers connect here
  int workers = 1;
  std::uint64_t maxtasksperchild = 0;  // chunks per worker before it is replaced; 0 = never
  int prefetch = 2;                    // chunks a worker may always hold at once
  // Credit grows past `prefetch` for workers that finish chunks quickly, so that each
  // holds about `credit_window` of queued work (tiny tasks would otherwise wait a
  // router round trip each), never more than max_prefetch chunks. Slow chunks keep the
  // credit at `prefetch`, so long tasks stay balanced across workers.
  int max_prefetch = 64;
  std::chrono::microseconds credit_window{500};
  std::string initializer;             // task name, empty for none
  std::string initializer_args;
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds heartbeat_timeout{10000};  // idle worker silent this long: killed
  std::chrono::milliseconds stop_grace{2000};          // after STOP, before SIGKILL
  std::chrono::milliseconds startup_timeout{30000};    // spawned but no READY: killed
  int max_startup_failures = 3;  // consecutive deaths before READY that break the pool
  // A chunk whose worker dies is queued again (at the front) up to this many times
  // before it is reported lost. Tasks then run at least once rather than at most once:
  // for tasks without side effects, or with idempotent ones.
  int max_retries = 0;
  // The same for chunks of tasks registered with MPX_PURE_TASK (wire::Submit::pure).
  int pure_retries = 0;
  // A chunk of n items still running after n * task_timeout is timed out: its worker is
  // killed and replaced, the chunk reported as timed out (or retried). 0: none.
  std::chrono::milliseconds task_timeout{0};
  // Payload frames larger than this are refused (the router disconnects the sender);
  // workers learn it in CONFIG and fail oversized results.
  std::uint64_t max_message_bytes = std::uint64_t{1} << 30;
  // RLIMIT_AS of each worker, 0 for none; sent in CONFIG.
  std::uint64_t worker_memory_limit = 0;
  // Results of this many bytes or more travel as objects (see mpx/object.h); 0: never.
  // Sent in CONFIG to workers on this host only: others could not hand the driver one.
  std::uint64_t result_object_threshold = 0;
  // Node agents on other hosts dial this ZeroMQ endpoint (tcp://, ipc://); empty: the
  // pool has local workers only (and never loads libzmq). workers may then be 0.
  std::string listen;
  std::string cluster_key;  // the key file's path
  // An agent silent this long is lost, with all its workers; agents lose the router
  // after the same silence.
  std::chrono::milliseconds host_timeout{3000};

  // Travels as a msgpack map of these names (absent ones keep the defaults above).
  template <class Self, class F>
  static void fields(Self& self, F&& field) {
    field("front_endpoint", self.front_endpoint);
    field("back_endpoint", self.back_endpoint);
    field("workers", self.workers);
    field("maxtasksperchild", self.maxtasksperchild);
    field("prefetch", self.prefetch);
    field("max_prefetch", self.max_prefetch);
    field("credit_window_us", self.credit_window);
    field("initializer", self.initializer);
    field("initializer_args", self.initializer_args);
    field("heartbeat_interval_ms", self.heartbeat_interval);
    field("heartbeat_timeout_ms", self.heartbeat_timeout);
    field("stop_grace_ms", self.stop_grace);
    field("startup_timeout_ms", self.startup_timeout);
    field("max_startup_failures", self.max_startup_failures);
    field("max_retries", self.max_retries);
    field("pure_retries", self.pure_retries);
    field("task_timeout_ms", self.task_timeout);
    field("max_message_bytes", self.max_message_bytes);
    field("worker_memory_limit", self.worker_memory_limit);
    field("result_object_threshold", self.result_object_threshold);
    field("listen", self.listen);
    field("cluster_key", self.cluster_key);
    field("host_timeout_ms", self.host_timeout);
  }
  std::string encode() const;
  static Config decode(const std::string& bytes);  // throws mpx::DecodeError
};

// The lane chunk a worker runs (wire::WorkerShared's lane_*), and what its lane carried:
// how the router answers for chunks it never handed out (see wire::Lane).
struct LaneChunk {
  std::uint64_t call_id = 0;
  std::uint64_t start = 0;
  std::uint32_t count = 0;
  bool pure = false;
};
struct LaneReport {
  std::optional<LaneChunk> running;  // the lane chunk it ran when it died, if any
  wire::LaneCounts counts;
};

// How RouterCore reaches its peers: clients by their "R<token>" identity, workers by
// their worker id (the identity each connects with). Messages to a peer that is gone
// are dropped.
class RouterIo {
 public:
  virtual ~RouterIo() = default;
  virtual void send_client(std::string_view client, const wire::Header& h, transport::Message&& payload) = 0;
  // fds: descriptors that came with the frame (a RESULT's objects), passed on with it.
  virtual void forward_client(std::string_view client, transport::Message&& header_frame,
                              transport::Message&& payload, transport::Fds&& fds) = 0;
  virtual void send_worker(std::string_view worker, const wire::Header& h, transport::Message&& payload) = 0;
  virtual void forward_worker(std::string_view worker, transport::Message&& header_frame,
                              transport::Message&& payload) = 0;
  // Opens a lane between client and worker (pid): a new stream, one end to each with a
  // LANE. false when it cannot (no descriptors, or one of them is not connected).
  virtual bool open_lane(std::string_view worker, std::string_view client, pid_t worker_pid) = 0;
};

// Where a pool's workers run and who watches them: RouterCore asks for workers, kills
// them and asks whether one is stopped; the supervisor reports each death back through
// RouterCore::on_worker_exit, with how the process ended and its running mark. The
// local one (local_workers.h) runs them as this router's children; a node agent on
// another host is the other kind. Workers are known by id, never by pid: a pid means
// nothing off its host.
class WorkerSupervisor {
 public:
  struct Started {
    std::string id;  // the identity it will connect with: unguessable, so no other peer can pose as it
    pid_t pid = 0;   // 0 when not known yet (RouterCore then takes READY's)
  };
  virtual ~WorkerSupervisor() = default;
  // Starts a worker process named name. Throws on failure.
  virtual Started spawn(const std::string& name) = 0;
  // The same on a host that joined the pool (RouterCore::add_host); "" is this one.
  virtual Started spawn_at(const std::string& name, const std::string& place) {
    return spawn(name);
  }
  virtual void kill(std::string_view id) = 0;
  // Whether the process is stopped (SIGSTOP, SIGTSTP, a tracer): it can neither run
  // its task nor answer a ping.
  virtual bool is_stopped(std::string_view id) = 0;
  // Tells worker id that call_id is cancelled, so that it skips the call's chunks it
  // has not started; returns the chunk_mark of the chunk it runs now (0: none), read
  // after the telling (wire::WorkerShared's handshake). nullopt: this supervisor cannot
  // tell its workers (they run every chunk they hold; the first is presumed running).
  // Every supervisor says (a composite must forward it: a silent default once made
  // cancels of local workers run their chunks anyway).
  virtual std::optional<std::uint64_t> cancel_call(std::string_view id, std::uint64_t call_id) = 0;
  // Takes back the TASKs worker id has not started yet, of the sent the router sent it
  // (wire::WorkerShared::take_back): the worker skips them. Returns the number of the
  // first one taken back (sent: none); nullopt: this supervisor cannot take chunks
  // back. Every supervisor says, as for cancel_call.
  virtual std::optional<std::uint64_t> take_back(std::string_view id, std::uint64_t sent) = 0;
  // Lanes reach workers on this host only; these read the page a local worker shares
  // (a supervisor without one says nothing). Whether worker id runs a chunk (its mark
  // is set), the lane chunk it runs, and what its lane carried so far.
  virtual bool runs_chunk(std::string_view id) { return false; }
  virtual std::optional<LaneChunk> running_lane_chunk(std::string_view id) { return std::nullopt; }
  virtual wire::LaneCounts lane_counts(std::string_view id) { return {}; }
};

class RouterCore {
 public:
  RouterCore(Config config, RouterIo& io, WorkerSupervisor& workers);

  void start(Clock::time_point now);  // spawns the workers
  void on_client(transport::Incoming& in, Clock::time_point now);
  void on_worker(transport::Incoming& in, Clock::time_point now);
  // Worker id ended with frames it had finished but not written (LocalWorkers reads
  // them from its shared page): the results among them whose chunks it still holds are
  // taken as if they had come from its socket. Called after its socket is drained
  // (frames read from there already are not held any more) and before on_worker_exit.
  void on_unsent_results(std::string_view id, std::string_view frames, Clock::time_point now);
  // Worker id ended. The caller first hands over every result it wrote (they are in
  // its connection's buffer); what it still held is then run again or reported lost.
  // running_mark: the wire::chunk_mark of the chunk it was running when it died, 0 if
  // it was between chunks, nullopt if unknown (the first chunk it held is then presumed
  // running). wait_status: how the process ended, -1 when unknown.
  void on_worker_exit(std::string_view id, int wait_status, std::optional<std::uint64_t> running_mark,
                      Clock::time_point now, const LaneReport& lane = {});
  // The driver is gone or asked to terminate: kill everything.
  void terminate();
  void on_tick(Clock::time_point now);
  // A host joined with slots workers (a node agent), known as place from now on: its
  // workers are started there, and replaced there while it lives.
  void add_host(const std::string& place, int slots, Clock::time_point now);
  // The host is gone (its agent silent, killed, cut off): every worker it ran ended at
  // once, for reason ("host X lost: ..."), with the usual retries and reports.
  void lose_host(const std::string& place, const std::string& reason, Clock::time_point now);
  // Where agents dial, told to clients in WELCOME's payload.
  void set_endpoint(std::string endpoint) { endpoint_ = std::move(endpoint); }
  // When the next on_tick is due.
  Clock::time_point next_tick() const { return next_tick_; }
  // All workers have ended after a shutdown or terminate: the router may exit.
  bool finished() const { return stopping_ && workers_.empty(); }

  // Introspection for tests.
  std::size_t queued() const { return queue_.size(); }
  // Chunks queued or held by workers: few means callers wait on single answers
  // (latency), many means bulk work (throughput).
  std::size_t outstanding() const {
    std::size_t n = queue_.size();
    for (const auto& [id, w] : workers_) n += w.in_flight.size();
    return n;
  }
  std::size_t live_workers() const { return workers_.size(); }
  bool broken() const { return !broken_reason_.empty(); }
  // What `mpx status` shows: the counters since start, the queue and every worker.
  // Leaves the driver's identity (router_pid, driver_pid, program, endpoint) to the caller.
  PoolStatus status(Clock::time_point now) const;

 private:
  static constexpr std::uint64_t kNotSent = UINT64_MAX;
  struct InFlight {
    std::string client;
    std::uint64_t call_id;
    std::uint64_t start;
    std::uint32_t count;
    int attempts = 0;  // earlier runs lost with a dead worker
    // Times it went back to the queue, free, after its worker died running no chunk at
    // all (between tasks). Capped (kMaxFreeRequeues): a worker that dies outside any
    // task (reading an oversized chunk under a memory limit) must not be replaced
    // forever for the same chunk.
    int free_requeues = 0;
    bool pure = false;       // from MPX_PURE_TASK: retried config.pure_retries times
    bool cancelled = false;  // its call was cancelled: never run again
    // A lane chunk its worker died running (on_worker_exit): the router has no copy;
    // to run again, its client submits it again (RESUBMIT).
    bool lane = false;
    // When it became the first chunk its worker holds, i.e. began to run (a worker runs
    // its chunks in the order it received them).
    Clock::time_point started;
    // Which TASK it was of those its worker was sent (Worker::sent before it); kNotSent
    // for a lane chunk, which the router never sent.
    std::uint64_t position = kNotSent;
    // Copies of the frames (reference-counted, no byte copy) so the chunk can be sent
    // again if its worker dies: retried, or requeued because it never started.
    transport::Message retry_header;
    transport::Message retry_payload;
  };
  struct Task {
    InFlight what;
    transport::Message header_frame;
    transport::Message payload;
  };
  enum class State { kStarting, kReady, kRetiring, kStopping };
  struct Worker {
    pid_t pid = 0;   // for messages and errors only: 0 until known
    std::string place;  // the host it runs on: "" for this one (see add_host)
    std::string id;  // routing id, trusted once its READY came from it
    std::string name;
    State state = State::kStarting;
    Clock::time_point since;  // when the worker entered `state`
    // Its initializer finished (CONFIGURED): it gets work and answers pings. Until then
    // a death counts as a start-up failure.
    bool configured = false;
    std::deque<InFlight> in_flight;  // first: running; results mostly retire the front
    std::uint64_t assigned = 0;  // chunks ever given
    std::uint64_t sent = 0;      // TASKs sent to it (position of the next one)
    Clock::time_point last_seen;
    Clock::time_point last_ping;
    Clock::time_point last_result;
    double service_us = -1;  // moving average of a chunk's service time; < 0: unknown
    // Why the router killed it while it ran a chunk (timeout, stopped), for finalize.
    std::string killed_because;
    bool timed_out = false;  // killed because a chunk ran over its time budget
    // That chunk (call id, start), as it was when the worker was killed: its result may
    // still arrive before the worker is gone, and then it did not time out.
    std::pair<std::uint64_t, std::uint64_t> timed_out_chunk{0, 0};
    Clock::time_point stopped_since;  // epoch while not seen stopped
    std::uint64_t chunks_done = 0;  // results it sent (status only)
    std::uint64_t items_done = 0;
    // Why the router ended it, for PoolStatus::worker_deaths ("timeout", "stopped",
    // "startup", "heartbeat"); empty: it died on its own, or was asked to stop.
    std::string death_cause;
    std::string lane_client;  // the client its lane goes to; empty: it has none
    bool lane_busy = false;   // its client said its lane is busy (SUBMIT's lane_busy, LANE_FREE)
    std::uint64_t lane_cancelled_call = 0;  // killed because its lane chunk's call was cancelled
  };
  // Gives a lane to each client that wants one and has none, while a configured local
  // worker without one serves (see wire::Lane).
  void grant_lanes();
  // Whether w runs a chunk the router did not hand out (its lane's).
  bool runs_lane_chunk(const Worker& w) {
    return !w.lane_client.empty() && w.in_flight.empty() && supervisor_.runs_chunk(w.id);
  }
  // A chunk of its lane's (said busy by its client, or seen running) counts as one held:
  // for its credit, and in choosing whom to hand a chunk.
  std::size_t lane_load(const Worker& w) {
    return !w.lane_client.empty() && (w.lane_busy || runs_lane_chunk(w)) ? 1 : 0;
  }
  // The worker at the other end of client's lane, if any.
  Worker* lane_worker_of(std::string_view client);
  int retries_for(const InFlight& f) const { return f.pure ? config_.pure_retries : config_.max_retries; }
  // Kills w (still running) for the reason given; finalize reports it.
  void kill_running(Worker& w, std::string why, bool timed_out);
  std::size_t credit(const Worker& w) const;
  // Whether w has run its first chunk for kTakeBackAfter or longer: chunks queued
  // behind it wait that long at least, so another worker gets them first.
  bool is_held_up(const Worker& w) const;
  // While a worker idles with nothing queued, takes back the chunks that wait behind a
  // held-up worker's and hands them out again (see wire::WorkerShared's taking back).
  void take_back_waiting();
  // A pool of hosts alone with chunks queued and no worker (no host joined, or all were
  // lost): says so at once and every kHostWarningEvery while it lasts. The chunks wait,
  // as in Ray: agents (re)join when they can.
  void warn_if_waiting_for_hosts();
  static constexpr std::chrono::seconds kHostWarningEvery{30};

  void spawn_one(const std::string& place = {});
  // Workers configured and serving: clients learn the count (WELCOME) when it changes.
  int serving() const;
  void report_workers();
  void enter(Worker& w, State state);
  void dispatch();
  Worker* worker_by_id(std::string_view id);
  void fail_lost(const std::vector<InFlight>& lost, pid_t pid, const std::string& reason,
                 bool timed_out = false);
  // Retries or reports what a worker that ended still held, and replaces it.
  void finalize(Worker w, const std::string& how, int wait_status, std::optional<std::uint64_t> mark);
  void break_pool(const std::string& reason);
  // POOL_ERROR to client: for call_id (0: every call of the client), as an error of
  // type (mpx::PoolBroken: the pool is broken; mpx::DecodeError: a chunk was refused).
  void send_pool_error(std::string_view client, std::uint64_t call_id, const std::string& reason,
                       const char* type = "mpx::PoolBroken");
  void retire_if_done(Worker& w);
  void stop_all(bool kill_now, Clock::time_point now);

  Config config_;
  RouterIo& io_;
  WorkerSupervisor& supervisor_;
  std::map<std::string, Worker, std::less<>> workers_;  // by id
  std::deque<Task> queue_;
  std::set<std::string> clients_;  // result sockets that said HELLO
  // Lanes: allowed unless a chunk's time or a worker's chunks are counted (task_timeout,
  // maxtasksperchild: only the router sees what it hands out); the clients that want
  // one, and the worker each has.
  bool lanes_allowed_ = false;
  std::set<std::string, std::less<>> lane_wanted_;
  std::map<std::string, std::string, std::less<>> lanes_;  // client -> worker id
  std::set<std::string> hosts_;    // places of hosts alive (add_host, lose_host)
  std::string endpoint_;
  int reported_workers_ = -1;
  int next_worker_number_ = 1;
  int startup_failures_ = 0;  // consecutive deaths before CONFIGURED
  int startup_kills_ = 0;     // the same, by a SIGKILL from outside the router
  static constexpr int kStartupKillsFactor = 4;
  std::string broken_reason_;
  bool stopping_ = false;
  Clock::time_point stop_deadline_;
  Clock::time_point next_tick_;
  Clock::time_point now_;  // time of the event being handled
  bool taking_back_ = false;  // in take_back_waiting (whose dispatch must not recurse)
  Clock::time_point waiting_for_hosts_since_;  // epoch: not waiting (warn_if_waiting_for_hosts)
  Clock::time_point next_host_warning_;
  Clock::time_point started_at_;
  PoolStatus counters_;  // only its counters are kept up to date (see status())
};

// The router role's main: binds, spawns workers, serves until shutdown or the driver's
// death. Returns the process exit code.
int run_router(const spawning::Bootstrap& boot);

}  // namespace router
}  // namespace mpx

#endif  // MPX_FRAMEWORK_ROUTER_ROUTER_H_
