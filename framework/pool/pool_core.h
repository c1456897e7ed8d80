// PoolCore: the driver's side of a pool — the router child, the connection to it, and
// the table of calls waiting for results.
//
// Threads: any thread may submit (whole frames written under send_mu_). Results are
// pumped by whichever waiting thread gets there first (leader/follower): it polls the
// connection without holding mu_, hands each message to its call, and wakes the others.
// No background thread exists, so a result costs no extra wake-up in the driver.
#ifndef MPX_FRAMEWORK_POOL_POOL_CORE_H_
#define MPX_FRAMEWORK_POOL_POOL_CORE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "framework/spawn/spawn.h"
#include "framework/transport/transport.h"
#include "mpx/detail/call.h"
#include "mpx/pool.h"

namespace mpx {
namespace detail {

class PoolCore {
 public:
  explicit PoolCore(const PoolOptions& options);
  ~PoolCore();

  void begin_call(const std::shared_ptr<CallBase>& call);
  void send_chunk(CallBase& call, std::uint64_t start, std::uint32_t count, Buffer&& payload);
  void abandon_call(CallBase& call);
  bool wait(const std::function<bool()>& ready, Clock::time_point deadline);
  // Wakes every thread in wait() so it evaluates its predicate again, also the one
  // blocked in the pump's poll: for predicates that depend on state outside the pool
  // (a pipeline's failure, its other stages). Callable from any thread, with mu_ not
  // held; the state the predicates read must be changed before calling it.
  void interrupt();

  void close();
  void join();
  void terminate();
  // Graceful stop used by ~Pool: STOP to workers, a short grace, then kill.
  void shutdown();
  int processes() const { return processes_; }
  pid_t router_pid() const { return router_pid_; }

 private:
  enum class State { kRunning, kClosed, kBroken };
  // One poll of the result socket and the router's pidfd, up to deadline.
  void pump(Clock::time_point deadline);
  // One frame from the router; payload views into reader_ (only the pumping thread
  // reads it, and nothing here reads it again before this returns).
  void dispatch(const wire::Header& h, std::string_view payload);
  // Fails every pending call with error and refuses new ones. mu_ not held.
  void fail_all(std::exception_ptr error);
  void send_control(wire::Type type, std::uint64_t call_id = 0);
  // Writes one frame to the router now (after what is buffered); false when it is gone.
  bool send(const wire::Header& h, std::string_view payload);
 public:
  // Writes the chunks buffered by send_chunk (see out_).
  void flush();
 private:
  bool flush_locked();  // send_mu_ held
  void stop_router(wire::Type how, std::chrono::milliseconds grace, const char* why);
  // Sends the router a stop (with what is buffered) if that can be done at once;
  // false when it cannot (see stop_router).
  bool ask_router(wire::Type how);
  void check_router_exit();
  std::string stop_reason();
  // Blocks until the router signals on ready_fd that it has bound; throws PoolBroken
  // (after reaping it) if it dies or stays silent for 30 s.
  void wait_for_router_ready(int ready_fd);
  // Connects and waits for the router's WELCOME to our HELLO.
  void connect_and_greet(const std::string& endpoint);

  int processes_;
  std::string token_;
  // Shared objects among the initializer's arguments: respawned workers open them too.
  Pins initializer_pins_;
  std::size_t max_message_bytes_ = 0;   // immutable after construction
  std::size_t max_inflight_bytes_ = 0;  // immutable after construction
  // Sizes of the argument chunks sent and not yet answered, by (call id, start), and
  // their sum: the backpressure window. Guarded by mu_.
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::size_t> inflight_;
  std::size_t inflight_bytes_ = 0;
  // inflight_.size(), for the pump to read without mu_: it spins only while few
  // chunks are unanswered (latency), not during bulk work (throughput).
  std::atomic<std::size_t> inflight_chunks_{0};
  // Forgets one chunk, or every chunk of a call. mu_ held.
  void release_chunk(std::uint64_t call_id, std::uint64_t start);
  void release_call(std::uint64_t call_id);
  spawning::Child router_;  // reaped by the pumping thread or by stop_router (under mu_)
  pid_t router_pid_ = 0;

  // The connection to the router: written whole frames at a time under send_mu_ (any
  // thread), read only by the thread with pumping_ set (into reader_).
  int fd_ = -1;
  std::mutex send_mu_;
  // Small frames of the submission in progress, written together (one system call for
  // many chunks) when it ends, before any wait, or once 64 KiB have gathered.
  std::string out_;  // guarded by send_mu_
  transport::Reader reader_;
  bool router_closed_ = false;  // it closed the connection; only the pumper touches it
  transport::Spin spin_;          // only the pumper touches it
  // An eventfd in the pump's poll set: interrupt() writes it, the pump drains it.
  int wake_fd_ = -1;

  std::mutex mu_;
  std::condition_variable cv_;
  bool pumping_ = false;                                            // guarded by mu_
  bool stopping_ = false;  // a stop waits for the pump token; guarded by mu_
  State state_ = State::kRunning;                                   // guarded by mu_
  std::string broken_reason_;                                       // guarded by mu_
  // Why we are stopping the router (set before the stop is sent): what pending calls
  // and the router's exit then report, instead of the kills the stop causes.
  std::string stop_reason_;  // guarded by mu_
  std::uint64_t next_call_id_ = 1;                                  // guarded by mu_
  std::unordered_map<std::uint64_t, std::shared_ptr<CallBase>> calls_;  // guarded by mu_
};

}  // namespace detail
}  // namespace mpx

#endif  // MPX_FRAMEWORK_POOL_POOL_CORE_H_
