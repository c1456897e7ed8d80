// PoolCore: the driver's side of a pool — its router process, the connection to it, and
// the table of calls waiting for results.
//
// Threads: any thread may submit (whole frames written under send_mu_). Results are
// pumped by whichever waiting thread gets there first (transport::Pump: leader/follower):
// it runs the pool's Loop over the connection and the router's pidfd without holding the
// pool mutex, hands each message to its call, and wakes the others. No background thread
// exists, so a result costs no extra wake-up in the driver.
//
// The router is a RouterProcess and the connection a transport::Connection, both
// replaced by the pump holder, with send_mu_ held, when the router dies (heal_router):
// a new router starts its own workers, chunks of tasks that may run twice are sent to it
// again, the others fail with RouterLost. At most kRouterDeaths deaths within
// kRouterDeathWindow: one more breaks the pool.
#ifndef MPX_FRAMEWORK_POOL_POOL_CORE_H_
#define MPX_FRAMEWORK_POOL_POOL_CORE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "framework/router/router.h"
#include "framework/spawn/spawn.h"
#include "framework/transport/loop.h"
#include "framework/transport/transport.h"
#include "mpx/detail/call.h"
#include "mpx/pool.h"

namespace mpx {
namespace detail {

// A pool's router child, as its driver sees it. Not thread-safe: PoolCore uses it from
// the constructor and then only with the pump held.
class RouterProcess {
 public:
  RouterProcess() = default;
  ~RouterProcess();  // kills and reaps a router still running
  RouterProcess(const RouterProcess&) = delete;
  RouterProcess& operator=(const RouterProcess&) = delete;

  // Spawns a router with config and waits until it listens. Throws PoolBroken (the
  // child reaped) if it dies or stays silent for 30 s.
  void start(const router::Config& config);
  pid_t pid() const { return child_.pid; }
  // Readable once the router has ended; -1 once reaped.
  int pidfd() const { return child_.pidfd; }
  bool running() const { return child_.pid > 0; }
  bool is_stopped() const { return running() && spawning::is_stopped(child_.pid); }
  // From any thread (a stop does not wait for the pump holder, which may be starting a
  // new router): SIGKILLs the router started last, if it was not reaped yet.
  void kill();
  // Its wait status once it has ended (blocking: waits for that); nullopt while it runs
  // or once reaped.
  std::optional<int> reap(bool block);
  // Waits up to grace for it to end; then kills it. Returns its wait status.
  std::optional<int> reap_within(std::chrono::milliseconds grace);
  // The last router reaped was killed by a signal that kill() did not send: somebody
  // else killed it (a router fails by itself with an exit code).
  bool killed_from_outside() const;

 private:
  spawning::Child child_;
  std::atomic<pid_t> killable_{0};  // child_.pid until it is reaped
  std::atomic<bool> killed_here_{false};
  std::optional<int> last_status_;
};

class PoolCore {
 public:
  explicit PoolCore(const PoolOptions& options);
  ~PoolCore();

  void begin_call(const std::shared_ptr<CallBase>& call);
  void send_chunk(CallBase& call, std::uint64_t start, std::uint32_t count, Buffer&& payload,
                  Pins&& objects, std::size_t object_bytes,
                  std::vector<std::shared_ptr<Segment>>&& lent = {});
  std::size_t object_threshold() const { return object_threshold_; }
  void abandon_call(CallBase& call);
  bool wait(const std::function<bool()>& ready, Clock::time_point deadline);
  // Wakes every thread in wait() so it evaluates its predicate again, also the one
  // blocked in the pump's Loop: for predicates that depend on state outside the pool
  // (a pipeline's failure, its other stages). Callable from any thread, with the pool
  // mutex not held; the state the predicates read must be changed before calling it.
  void interrupt();
  // Writes the chunks buffered by send_chunk (see out_).
  void flush();

  // Fails call with CancelledError unless it finished (false); the router drops its
  // chunks that have not started and, with kill_running, kills the workers running one.
  bool cancel(CallBase& call, bool kill_running);
  void close();
  void join();
  // Pool::shutdown: close, cancel what is pending if asked, join.
  void shutdown_pool(bool cancel_futures);
  void terminate();
  // Graceful stop used by ~Pool: STOP to workers, a short grace, then kill.
  void shutdown();
  int processes() const { return processes_; }
  pid_t router_pid() const { return router_pid_.load(std::memory_order_acquire); }
  std::string endpoint() const;
  int serving() const { return serving_.load(std::memory_order_relaxed); }
  void wait_for_workers(int n, std::chrono::milliseconds timeout);

 private:
  enum class State { kRunning, kClosed, kBroken };
  // The pump's turn: what was read already, else one Loop turn (up to deadline).
  void turn(Clock::time_point deadline);
  // Handles every complete frame the reader holds; returns whether there was one.
  bool dispatch_buffered(bool* broken, std::string* why);
  // The connection is readable (Loop handler).
  void read_router();
  // One frame from the router, or a RESULT by the lane; payload views into from, the
  // reader of the connection it came on (only the pumping thread reads those, and
  // nothing here reads it again before this returns).
  void dispatch(const wire::Header& h, std::string_view payload, transport::Reader& from);
  // ---- The lane (wire::Lane); pump holder, send_mu_ not held ----
  // The lane is readable (Loop handler).
  void read_lane();
  // Handles every complete frame the lane's reader holds; false if the lane broke
  // (anything but a RESULT on it), which fails the call on it (fail_lane_chunk).
  bool dispatch_lane_frames();
  // The call of the chunk on the lane fails with mpx::DecodeError, saying why.
  void fail_lane_chunk(const std::string& why);
  // The lane brought an answer: it is free; the router hears it if chunks of ours are
  // out (LANE_FREE: it may have held some back from the lane's worker).
  void lane_answered();
  // Reads what the lane holds to its end (its worker is gone: all it wrote is there).
  void drain_lane();
  void close_lane();
  // LANE: a new lane, its descriptor in from's frame.
  void open_lane(const wire::Header& h, transport::Reader& from);
  // Sends the chunk on the lane (call_id, start), unanswered, to the router instead,
  // with attempts runs lost; nothing if it is answered or not the lane's any more.
  void resubmit_lane_chunk(std::uint64_t call_id, std::uint64_t start, std::int32_t attempts);
  // Fails every pending call with error and refuses new ones. Pool mutex not held.
  void fail_all(std::exception_ptr error);
  // Writes one frame to the router now (after what is buffered); false when it is gone.
  bool send(const wire::Header& h, std::string_view payload);
  bool flush_locked();  // send_mu_ held
  void stop_router(wire::Type how, std::chrono::milliseconds grace, const char* why);
  // Sends the router a stop (with what is buffered) if that can be done at once;
  // false when it cannot (see stop_router).
  bool ask_router(wire::Type how);
  // The router's pidfd fired (Loop handler), or a stop reaped it: stops watching it.
  void check_router_exit();
  // After a router death that was not a stop: reads what it wrote before dying, then
  // starts another and hands it the unanswered chunks (see the class comment). Pump
  // holder; returns why the pool cannot go on, or "".
  std::string heal_router(pid_t pid, const std::string& death);
  // Sends every unanswered chunk kept for resending to the new router and fails the
  // calls of the others (pump holder, send_mu_ held).
  void resend_unanswered(pid_t dead_router, const std::string& death);
  void router_reaped();
  std::string stop_reason();
  // Connects and waits for the router's WELCOME to our HELLO (send_mu_ held, or no
  // other thread knows the pool yet).
  void connect_and_greet(const std::string& endpoint);
  // Starts a router on new endpoints and greets it (send_mu_ held, or no other thread
  // knows the pool yet). One killed from outside during its start-up counts as a router
  // death and is replaced while the bound allows; throws PoolBroken otherwise.
  void start_router();
  // Counts a router death now; false when it is one more than the bound allows.
  bool count_router_death();
  // An answered chunk's argument buffers, kept until its results, which may be in them,
  // are read: then reused, or freed when the chunk went to a router that died (a
  // worker of the dead router may still be reading them).
  struct AnsweredBuffers {
    std::vector<std::shared_ptr<Segment>> reuse, free;
    // The chunk's argument objects, until its results are read: a result may view one
    // (a task returning a Span of its Span argument).
    Pins objects;
    AnsweredBuffers() = default;
    AnsweredBuffers(const AnsweredBuffers&) = delete;
    AnsweredBuffers& operator=(const AnsweredBuffers&) = delete;
    ~AnsweredBuffers();
  };
  // Forgets one chunk, or every chunk of a call. Pool mutex held. The chunk's argument
  // buffers go to *answered when given (its worker answered it: a result, or its
  // death); they are freed at once otherwise.
  void release_chunk(std::uint64_t call_id, std::uint64_t start,
                     AnsweredBuffers* answered = nullptr);
  void release_call(std::uint64_t call_id);
  // Pool mutex held: call is finished; its callbacks, if any, wait in finished_.
  void finished_locked(const std::shared_ptr<CallBase>& call);
  // Pool mutex held (released on return): runs the callbacks waiting in finished_.
  void fire_finished(std::unique_lock<std::mutex>& lock);

  int processes_;
  std::string token_;
  // Where node agents dial (WELCOME's payload; "" if not listening): a replacement
  // router may bind another port. Guarded by endpoint_mu_.
  std::string endpoint_;
  mutable std::mutex endpoint_mu_;
  // Workers serving, as the router last said (WELCOME); written under the pool mutex
  // (wait_for_workers' predicate), read anywhere.
  std::atomic<int> serving_{0};
  // Shared objects among the initializer's arguments: respawned workers open them too.
  Pins initializer_pins_;
  std::size_t max_message_bytes_ = 0;   // immutable after construction
  std::size_t max_inflight_bytes_ = 0;  // immutable after construction
  std::size_t object_threshold_ = 0;    // immutable after construction
  router::Config config_;  // what each router starts with; the endpoints change per router
  // Every task may run twice (PoolOptions().max_retries(n), n > 0), not only pure ones.
  bool resend_all_ = false;
  // An argument chunk sent and not yet answered. payload: kept for a router that
  // replaces a dead one, for tasks that may run twice (pure, or max_retries).
  struct Unanswered {
    std::size_t size = 0;
    std::uint32_t count = 0;
    std::optional<Buffer> payload;
    Pins objects;  // its arguments sent as objects, until it is answered
    std::vector<std::shared_ptr<Segment>> lent;  // its argument buffers (ObjectSink::lent)
    bool resent = false;  // to a router that replaced a dead one
    bool again = false;   // may go to a router that replaces a dead one (pure, max_retries)
    // Sent by the lane (payload kept: the router has no copy, see wire::Lane).
    bool lane = false;
  };
  // The chunks sent and not yet answered, by (call id, start), and their sizes' sum:
  // the backpressure window. Guarded by the pool mutex; a chunk enters with send_mu_
  // held too, together with its write (so a router replacement, which holds send_mu_,
  // sees every chunk written to the dead router and none meant for the new one).
  std::map<std::pair<std::uint64_t, std::uint64_t>, Unanswered> inflight_;
  std::size_t inflight_bytes_ = 0;
  // inflight_.size(), for the pump to read without the mutex: it spins only while few
  // chunks are unanswered (latency), not during bulk work (throughput).
  std::atomic<std::size_t> inflight_chunks_{0};

  RouterProcess router_;  // reaped by the pump holder or by stop_router (holding the pump)
  std::atomic<pid_t> router_pid_{0};
  // When the routers that died (not stopped) died, within kRouterDeathWindow. Pump holder.
  std::vector<Clock::time_point> router_deaths_;
  static constexpr int kRouterDeaths = 3;
  static constexpr std::chrono::seconds kRouterDeathWindow{60};

  // The connection to the router: written whole frames at a time under send_mu_ (any
  // thread), read only by the pump holder.
  transport::Connection conn_;
  std::mutex send_mu_;
  // Small frames of the submission in progress, written together (one system call for
  // many chunks) when it ends, before any wait, or once 64 KiB have gathered.
  std::string out_;  // guarded by send_mu_
  bool router_closed_ = false;  // it closed the connection; pump holder only
  std::size_t dropped_fds_seen_ = 0;  // the reader's dropped_fds() last reported (pumping thread)
  // The lane (wire::Lane): a stream to one worker, opened by the router for this pool. A
  // call of one chunk made while nothing else is out goes on it and is answered on it,
  // without the router's two hops. Replaced, closed and written under send_mu_; read
  // by the pump holder, who alone watches it.
  bool wants_lane_ = false;  // immutable after construction
  transport::Connection lane_;
  transport::Loop::Id lane_watch_ = 0;
  bool lane_watched_ = false;         // pump holder
  std::size_t lane_dropped_fds_seen_ = 0;  // as dropped_fds_seen_, for the lane's reader
  // The chunk on the lane and unanswered: at most one. Pool mutex.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> lane_chunk_;
  // The lane's worker has a chunk of ours that it has not answered on the lane (the one
  // in lane_chunk_, or one whose call was cancelled since): no other goes on the lane,
  // and the router hears it with each SUBMIT (lane_busy). Pool mutex.
  bool lane_busy_ = false;
  // What the pump waits on: the connection and the router's pidfd. Pump holder only,
  // but for wake() (interrupt).
  std::unique_ptr<transport::Loop> loop_;  // wakeable
  transport::Loop::Id conn_watch_ = 0, router_watch_ = 0;
  bool router_watched_ = false;  // pump holder only

  // Its mutex is the pool mutex: it guards everything below and the calls' states.
  transport::Pump pump_;
  State state_ = State::kRunning;
  std::string broken_reason_;
  // With pump_.mu() held, state_ not kRunning: what a new call is told, the reason said
  // once ("Pool is broken: ..." or, once joined or terminated, "Pool is not running").
  std::string not_running_text() const;
  // Why we are stopping the router (set before the stop is sent): what pending calls
  // and the router's exit then report, instead of the kills the stop causes.
  std::string stop_reason_;
  std::uint64_t next_call_id_ = 1;
  std::unordered_map<std::uint64_t, std::shared_ptr<CallBase>> calls_;
  // Finished calls whose callbacks wait to run: fired by a thread that returns from
  // wait() (never the pump holder: a callback may wait itself), by a stop, a cancel.
  std::vector<std::shared_ptr<CallBase>> finished_;
  // Calls whose CANCEL the router has acknowledged, until their cancel() sees it.
  std::set<std::uint64_t> cancel_acks_;
  // Routers replaced so far (resend_unanswered counts them): a cancel waiting for the
  // acknowledgement of a router that died stops waiting.
  std::uint64_t router_epoch_ = 0;
};

}  // namespace detail
}  // namespace mpx

#endif  // MPX_FRAMEWORK_POOL_POOL_CORE_H_
