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
// The child is a fresh process of this program (posix_spawn of /proc/self/exe): it runs
// the function found by its registered name with the arguments sent to it, then exits
// 0, or 1 if the function threw (the error is logged in the child). A child killed by a
// signal has exitcode -signal, as in Python. If the parent dies, its children are killed.
//
// Thread safety: a Process object is used by one thread at a time. Movable, not copyable.
// The destructor joins a started, unjoined process, as std::jthread does.
#ifndef MPX_PROCESS_H_
#define MPX_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "mpx/detail/codec.h"
#include "mpx/errors.h"
#include "mpx/task.h"

namespace mpx {
namespace detail {
struct ProcessState;
struct ProcessStateDeleter {
  void operator()(ProcessState* state) const;
};
}

class Process {
 public:
  // Prepares a child that will run fn(args...) once started. Throws NotRegistered when
  // fn was not registered with MPX_TASK.
  template <class R, class... Params, class... Args>
  explicit Process(R (*fn)(Params...), Args&&... args) {
    static_assert(sizeof...(Params) == sizeof...(Args),
                  "mpx::Process: wrong number of arguments for this task");
    const detail::TaskEntry& task = detail::require_task(detail::function_address(fn), "Process");
    detail::Buffer buf;
    detail::Pins pins;  // shared objects among the arguments live until the child is done
    {
      detail::PinScope scope(pins);
      msgpack::packer<detail::Buffer> pk(buf);
      detail::ArgCodec<Params...>::pack_call(pk, std::forward<Args>(args)...);
    }
    init(task, std::string(buf.data(), buf.size()), std::move(pins));
  }
  ~Process();
  Process(Process&&) noexcept;
  Process& operator=(Process&&) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // Spawns the child. Throws ProcessError if already started or the spawn fails.
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
  // SIGTERM / SIGKILL the child; no-op when it is not running.
  void terminate();
  void kill();

 private:
  void init(const detail::TaskEntry& task, std::string args, detail::Pins pins);
  std::unique_ptr<detail::ProcessState, detail::ProcessStateDeleter> state_;
};

}  // namespace mpx

#endif  // MPX_PROCESS_H_
