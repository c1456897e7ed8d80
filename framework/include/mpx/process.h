// mpx/process.h — one registered function run in a new OS process (Python's Process).
//
//   void worker(int number) { mpx::logger().info("worker {} ran", number); }
//   MPX_TASK(worker);
//
//   mpx::Process p(worker, 5);
//   p.start();
//   p.join();
//   assert(p.exitcode() == 0);
//
//   mpx::Process watcher(watch, 1);
//   watcher.set_daemon(true);   // terminated when this program exits; cannot have children
//   watcher.start();
//   mpx::connection::wait({watcher.sentinel()}, std::chrono::seconds(1));  // its pidfd
//
// The child is a fresh process of this program (posix_spawn of /proc/self/exe): it runs
// the function found by its registered name with the arguments sent to it, then exits
// 0, or 1 if the function threw (the error is logged in the child). A child killed by a
// signal has exitcode -signal, as in Python. If the parent dies, its children are killed.
// When the parent ends normally (main returns, std::exit, or a Process child's function
// returns), its daemonic children are terminated and the others joined, as in Python.
//
// Daemonic children (set_daemon(true) before start) are as in Python: when this program
// exits normally they are terminated (SIGTERM, then SIGKILL after a second), and they
// may not start processes, pools or actors themselves (that throws ProcessError in the
// child). A Process object destroyed while its non-daemonic child runs joins it (as
// std::jthread does); one whose daemonic child runs lets it go on, and
// active_children() still lists and reaps it.
//
// Thread safety: a Process object is used by one thread at a time; active_children()
// may run on any thread. Movable, not copyable.
#ifndef MPX_PROCESS_H_
#define MPX_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mpx/detail/codec.h"
#include "mpx/errors.h"
#include "mpx/runtime.h"
#include "mpx/task.h"

namespace mpx {
namespace detail {
struct ProcessState;
}

class Process {
 public:
  // Prepares a child that will run fn(args...) once started. Throws NotRegistered when
  // fn was not registered with MPX_TASK.
  template <class R, class... Params, class... Args>
  explicit Process(R (*fn)(Params...), Args&&... args) {
    static_assert(sizeof...(Params) == sizeof...(Args),
                  "mpx::Process: wrong number of arguments for this task");
    const detail::TaskEntry& task = detail::require_task(fn, "Process");
    detail::Buffer buf;
    detail::Pins pins;  // shared objects among the arguments live until the child is done
    detail::FdTransfers fds;  // Pipe ends among them: the child inherits them
    detail::ObjectSink objects{detail::default_object_threshold(), &pins};  // large ones
    {
      detail::PinScope scope(pins);
      detail::FdScope fd_scope(fds);
      detail::ObjectScope object_scope(objects);
      msgpack::packer<detail::Buffer> pk(buf);
      detail::ArgCodec<Params...>::pack_call(pk, std::forward<Args>(args)...);
    }
    init(task, std::string(buf.data(), buf.size()), std::move(pins), std::move(fds));
  }
  // A captureless lambda, as Pool calls take one: mpx::Process p([](int x) {...}, 3).
  template <class F, class... Args, class = detail::EnableIfClosure<F>>
  explicit Process(F, Args&&... args) : Process(detail::closure_task<F>(), std::forward<Args>(args)...) {}
  ~Process();
  Process(Process&&) noexcept;
  Process& operator=(Process&&) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // Spawns the child. Throws ProcessError if already started, closed, or the spawn
  // fails, and in a daemonic process (which cannot have children).
  void start();
  // Waits for the child to end. Throws ProcessError if never started.
  void join();
  // Waits at most timeout; returns whether the child has ended.
  bool join(std::chrono::milliseconds timeout);
  // Whether the child was started and has not ended yet (reaps it if it has).
  bool is_alive();
  // nullopt while running or before start; the exit status, or -signal.
  std::optional<int> exitcode() const;
  // 0 before start().
  pid_t pid() const;
  // "Process-N" unless set_name was called (before start).
  const std::string& name() const;
  void set_name(std::string name);
  // Python's daemon flag; set before start (ProcessError after).
  void set_daemon(bool daemon);
  bool daemon() const;
  // A pidfd of the child, readable once it has ended (Python's sentinel): for poll or
  // mpx::connection::wait. Valid until close() or destruction; do not close it.
  // Throws ProcessError before start().
  int sentinel() const;
  // SIGTERM / SIGKILL the child; no-op when it is not running.
  void terminate();
  void kill();
  // Releases what the object holds (its sentinel, the shared objects of its
  // arguments). Throws ProcessError while the child runs; afterwards every method but
  // name() and close() throws ProcessError.
  void close();

 private:
  void init(const detail::TaskEntry& task, std::string args, detail::Pins pins,
            detail::FdTransfers fds);
  detail::ProcessState& state(const char* what) const;
  std::shared_ptr<detail::ProcessState> state_;
};

// The Process children of this process that are still running (Python's
// active_children()): name, pid, daemon. Reaps the ones that have ended, as Python's
// does. Pool workers and actors are not listed: their processes belong to the Pool or
// Actor objects.
std::vector<ProcessInfo> active_children();

}  // namespace mpx

#endif  // MPX_PROCESS_H_
