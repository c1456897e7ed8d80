// mpx/errors.h — the error types every mpx call can throw.
//
// Every error mpx throws derives from mpx::Error, itself a std::exception, so one
// `catch (const mpx::Error&)` covers the framework. Errors that crossed a process
// boundary carry the data that describes them, not only a message, because the process
// they happened in may be gone.
//
// A task or actor method that threw comes back as its own type, as Python re-raises
// the original exception: a std::invalid_argument thrown in a worker is caught in the
// caller as std::invalid_argument (and as std::exception). Every remote failure also
// derives from mpx::RemoteInfo (type name, message, item, pid), so one
// `catch (const mpx::RemoteInfo&)` catches them all. Types mpx knows: every <stdexcept>
// type, std::bad_alloc, std::system_error (its code kept), and the ones a program
// registers with mpx::register_exception<T>(); any other type arrives as
// mpx::RemoteError.
//
//   try {
//     auto squares = pool.map(checked_sqrt, xs);
//   } catch (const std::domain_error& e) {             // the type the task threw
//     auto& remote = dynamic_cast<const mpx::RemoteInfo&>(e);
//     std::cerr << "item " << remote.task_index() << ": " << remote.message();
//   } catch (const mpx::RemoteInfo& e) {               // any other task failure
//     std::cerr << e.type_name() << " at item " << e.task_index() << ": " << e.message();
//   } catch (const mpx::WorkerLost& e) {
//     std::cerr << e.lost_tasks().size() << " tasks lost with worker " << e.worker_pid();
//   }
//
// Thread safety: immutable values, safe to copy and read from any thread.
// register_exception may be called from any thread; register before the calls whose
// failures should arrive typed (at start-up, in the process that makes the calls).
#ifndef MPX_ERRORS_H_
#define MPX_ERRORS_H_

#include <sys/types.h>

#include <cstdint>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

namespace mpx {

// Base of every error mpx throws.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// What every exception that crossed a process boundary carries: the failure as the
// process it happened in saw it. A mixin, not a std::exception: the typed remote
// exceptions below derive from their standard type (one std::exception base) and from
// this, so both `catch (const std::invalid_argument&)` and `catch (const RemoteInfo&)`
// match them.
class RemoteInfo {
 public:
  RemoteInfo(std::string task_name, std::string type_name, std::string message,
             std::uint64_t task_index, pid_t worker_pid);
  virtual ~RemoteInfo() = default;
  // Registered name of the task that threw ("square"), or the actor method
  // ("Counter::add").
  const std::string& task_name() const noexcept { return task_name_; }
  // Demangled type of the original exception ("std::runtime_error").
  const std::string& type_name() const noexcept { return type_name_; }
  // The original exception's what().
  const std::string& message() const noexcept { return message_; }
  // Position of the failing item in the call's input (0 for apply_async and actors).
  std::uint64_t task_index() const noexcept { return task_index_; }
  pid_t worker_pid() const noexcept { return worker_pid_; }
  // All of it in one line, the what() of every remote exception:
  // "task 'square' item 3 raised std::invalid_argument in worker pid 42: negative".
  const std::string& description() const noexcept { return description_; }

 private:
  std::string task_name_, type_name_, message_, description_;
  std::uint64_t task_index_;
  pid_t worker_pid_;
};

// A task raised an exception of a type mpx cannot recreate (see register_exception).
class RemoteError : public RemoteInfo, public Error {
 public:
  RemoteError(std::string task_name, std::string type_name, std::string message,
              std::uint64_t task_index, pid_t worker_pid);
};

// A task raised an exception of type E (a standard one, or one registered with
// register_exception<E>()): thrown as E and RemoteInfo at once. Its what() is
// RemoteInfo::description().
template <class E>
class RemoteException final : public E, public RemoteInfo {
 public:
  template <class... BaseArgs>
  explicit RemoteException(RemoteInfo info, BaseArgs&&... base_args)
      : E(std::forward<BaseArgs>(base_args)...), RemoteInfo(std::move(info)) {}
  const char* what() const noexcept override { return description().c_str(); }
};

namespace detail {
using RemoteFactory = std::exception_ptr (*)(RemoteInfo&& info);
// The factory of a type constructed from the original message.
template <class E>
std::exception_ptr make_remote_exception(RemoteInfo&& info) {
  std::string message = info.message();
  return std::make_exception_ptr(RemoteException<E>(std::move(info), std::move(message)));
}
// Registry (framework/codec/remote.cc): factories by the demangled name of the type.
void register_remote_factory(const std::type_info& type, RemoteFactory factory);
}  // namespace detail

// Makes a task's (or actor method's) exception of type E arrive as E in this process
// instead of as RemoteError. E must derive from std::exception, not be final, and be
// constructible from a std::string: it is constructed from the original what(), and
// RemoteInfo holds the rest. Register in the process that catches (registering at
// start-up, before the first call, registers it everywhere: every process runs the
// same program). Returns true, so it can initialise a namespace-scope constant:
//
//   struct ParseError : std::runtime_error { using std::runtime_error::runtime_error; };
//   static const bool registered = mpx::register_exception<ParseError>();
template <class E>
bool register_exception() {
  static_assert(std::is_class_v<E> && std::is_base_of_v<std::exception, E>,
                "mpx::register_exception<E>: E must derive from std::exception");
  static_assert(!std::is_final_v<E>,
                "mpx::register_exception<E>: E must not be final (the remote exception "
                "derives from it and from mpx::RemoteInfo)");
  static_assert(std::is_constructible_v<E, std::string>,
                "mpx::register_exception<E>: E must be constructible from a std::string "
                "(the original what()); add a constructor taking the message");
  detail::register_remote_factory(typeid(E), &detail::make_remote_exception<E>);
  return true;
}

// A worker process died (signal, exit, crash) while it held these tasks.
class WorkerLost : public Error {
 public:
  WorkerLost(std::string task_name, std::vector<std::uint64_t> lost_tasks, pid_t worker_pid,
             std::string reason);
  const std::string& task_name() const noexcept { return task_name_; }
  // Input positions whose results will never arrive, ascending.
  const std::vector<std::uint64_t>& lost_tasks() const noexcept { return lost_tasks_; }
  pid_t worker_pid() const noexcept { return worker_pid_; }
  // How the worker ended, e.g. "killed by signal 9 (Killed)".
  const std::string& reason() const noexcept { return reason_; }

 protected:
  WorkerLost(std::string what, std::string task_name, std::vector<std::uint64_t> lost_tasks,
             pid_t pid, std::string reason);

 private:
  std::string task_name_;
  std::vector<std::uint64_t> lost_tasks_;
  pid_t worker_pid_;
  std::string reason_;
};

// The pool's router died while these tasks had no result, and they were not sent again
// to the router that replaced it: only tasks that may run twice are (MPX_PURE_TASK, or
// PoolOptions().max_retries(n) with n > 0). worker_pid() is the router's pid.
class RouterLost : public WorkerLost {
 public:
  RouterLost(std::string task_name, std::vector<std::uint64_t> lost_tasks, pid_t router_pid,
             std::string reason);
};

// A function was used as a task but never registered with MPX_TASK, or a worker was
// asked to run a name its program does not register.
class NotRegistered : public Error {
 public:
  using Error::Error;
};

// A payload could not be decoded into the types the receiver expects.
class DecodeError : public Error {
 public:
  using Error::Error;
};

// A wait with a deadline ran out. Only thrown by calls documented to throw it; the
// `wait_for` forms return false instead.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// A Future that was cancelled (Future::cancel, Pool::shutdown(true)): its get() throws
// this (Python's concurrent.futures.CancelledError). The message names the call.
class CancelledError : public Error {
 public:
  using Error::Error;
};

// The pool can no longer run work: its router died, its initializer failed, or it was
// closed or terminated. Pending calls fail with this error; a new Pool works.
class PoolBroken : public Error {
 public:
  using Error::Error;
};

// Starting a process failed (spawn error, bad state such as start() twice).
class ProcessError : public Error {
 public:
  using Error::Error;
};

// A shared object (Value, Array, Lock, Queue, ...) could not be created or mapped: its
// segment is gone (every handle in its owner process was destroyed, or the owner
// exited), it holds another kind or type of object than the handle says, or the
// system refused (out of memory or file descriptors, another user's process).
class SharedMemoryError : public Error {
 public:
  using Error::Error;
};

// Barrier::wait on a barrier that was aborted, reset while waiting, or whose wait
// timed out (which breaks it for every party, as in Python).
class BrokenBarrierError : public Error {
 public:
  using Error::Error;
};

// A Queue was shut down (Queue::shutdown, Python 3.13's queue.ShutDown): put() throws
// it at once, get() once the queue is empty.
class ShutDown : public Error {
 public:
  using Error::Error;
};

// Connection::recv on a connection whose other end is closed, in every process that
// held it (closed, or its process died), with nothing left to read (Python's EOFError).
class EOFError : public Error {
 public:
  using Error::Error;
};

// Connection::send to a connection whose other end is gone (Python's BrokenPipeError).
class BrokenPipeError : public Error {
 public:
  using Error::Error;
};

// An actor's process died before answering a call, or a call was made to an actor that
// is dead or stopped. restarted() says whether a new instance (constructed again, its
// state lost) serves the calls made from now on.
class ActorDied : public Error {
 public:
  ActorDied(std::string actor_name, std::string reason, bool restarted);
  // The actor's name ("Counter-1").
  const std::string& actor_name() const noexcept { return actor_name_; }
  // How it ended, e.g. "killed by signal 9 (Killed)" or "stopped".
  const std::string& reason() const noexcept { return reason_; }
  bool restarted() const noexcept { return restarted_; }

 private:
  std::string actor_name_, reason_;
  bool restarted_;
};

}  // namespace mpx

#endif  // MPX_ERRORS_H_
