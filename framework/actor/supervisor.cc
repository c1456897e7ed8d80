// Spawning one incarnation of an actor and the supervisor thread of the process that
// spawned actors: it reaps them, restarts them, and publishes what happened.
#include "framework/actor/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "framework/transport/loop.h"
#include "mpx/detail/codec.h"
#include "mpx/errors.h"
#include "mpx/runtime.h"

namespace mpx {
namespace actor {

using detail::Clock;

std::optional<StartFailure> start_incarnation(Supervised& s, std::uint32_t incarnation) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    throw ProcessError(std::string("mpx::spawn: pipe: ") + std::strerror(errno));
  }
  spawning::Spec spec;
  spec.role = Role::kActor;
  spec.name = s.control->name;
  spec.bootstrap = encode_bootstrap(
      Bootstrap{s.factory->key, s.args, incarnation_endpoint(*s.control, incarnation).str(), incarnation});
  spec.ready_fd = fds[1];
  try {
    s.child = spawning::spawn_self(spec);
  } catch (...) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw;
  }
  ::close(fds[1]);
  std::string got;
  const auto deadline = detail::deadline_after(s.options.startup_timeout());
  bool over = false;  // the child reported, or died (EOF), or the pipe failed
  transport::Loop starting;
  starting.watch(fds[0], POLLIN, [&](short) {
    char buf[4096];
    ssize_t n;
    do {
      n = ::read(fds[0], buf, sizeof buf);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      over = true;  // EOF: the child reported, or died
      return;
    }
    got.append(buf, static_cast<std::size_t>(n));
    if (got.size() == 1 && got[0] == kReadyByte) over = true;
  });
  while (!over && Clock::now() < deadline) starting.run_once(deadline);
  const bool timed_out = !over;
  ::close(fds[0]);
  if (!timed_out && !got.empty() && got[0] == kReadyByte) return std::nullopt;
  StartFailure f;
  f.pid = s.child.pid;
  if (timed_out) {
    ::kill(s.child.pid, SIGKILL);
    spawning::reap(s.child, true);
    f.reason = "its constructor did not finish within " +
               std::to_string(s.options.startup_timeout().count()) + " ms";
    return f;
  }
  if (!got.empty() && got[0] == kFailedByte) {
    f.constructor_threw = true;
    try {
      f.error = detail::decode_error(got.data() + 1, got.size() - 1);
    } catch (const std::exception& e) {
      f.error.type = "mpx::DecodeError";
      f.error.message = std::string("its report could not be decoded: ") + e.what();
    }
  }
  auto status = spawning::reap_for(s.child, std::chrono::seconds(5));
  if (!status) {
    ::kill(s.child.pid, SIGKILL);
    status = spawning::reap(s.child, true);
  }
  f.reason = "its process " + (status ? spawning::describe(*status) : std::string("vanished")) +
             " while starting";
  return f;
}

// ---- The supervisor: one thread per process that spawned actors ---------------------

namespace {

thread_local bool t_on_supervisor = false;

class Supervisor {
 public:
  static Supervisor& get() {
    // Leaked on purpose: actors may be stopped during static destruction.
    static Supervisor* s = new Supervisor();
    return *s;
  }

  // From any thread: watch s's process from now on.
  void add(std::shared_ptr<Supervised> s) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      added_.push_back(std::move(s));
    }
    loop_.wake();
  }

 private:
  Supervisor() : loop_(/*wakeable=*/true) { std::thread([this] { run(); }).detach(); }

  // Supervisor thread only, like everything the loop does.
  void watch(std::shared_ptr<Supervised> s) {
    const int pidfd = s->child.pidfd;
    auto id = std::make_shared<transport::Loop::Id>();
    *id = loop_.watch(pidfd, POLLIN, [this, id, s = std::move(s)](short) mutable {
      loop_.unwatch(*id);
      ended(std::move(s));
    });
  }

  void run() {
    t_on_supervisor = true;
    for (;;) {
      try {
        loop_.run_once(Clock::time_point::max());
      } catch (const std::exception& e) {
        logger().critical("actor supervisor: {}", e.what());
        return;
      }
      std::vector<std::shared_ptr<Supervised>> added;
      {
        std::lock_guard<std::mutex> lock(mu_);
        added.swap(added_);
      }
      for (auto& s : added) watch(std::move(s));
    }
  }

  // Runs on the supervisor thread: the incarnation behind s->child has ended.
  void ended(std::shared_ptr<Supervised> s) {
    Control& c = *s->control;
    // Its pid is free for reuse once reaped: pid() says 0 and kill() signals nobody
    // until a next incarnation runs.
    c.pid.store(0, std::memory_order_release);
    const auto status = spawning::reap(s->child, true);
    std::string reason = status ? spawning::describe(*status) : "ended";
    if (c.stop_requested.load(std::memory_order_acquire) != 0) {
      const bool clean = status && spawning::exitcode(*status) == 0;
      s->name.reset();  // before the state a stopper waits for: its name is free again
      publish(c, State::kStopped, clean ? "stopped" : "stopped (" + reason + ")");
      return;
    }
    const bool restart = s->options.restart() == Restart::on_failure;
    std::uint32_t restarts = c.restarts.load();
    if (!restart || static_cast<int>(restarts) >= s->options.max_restarts()) {
      const std::string why =
          !restart ? reason
                   : reason + "; not restarted again after " + std::to_string(restarts) +
                         " restart(s) (ActorOptions::max_restarts)";
      logger().error("actor {} died: {}", c.name, why);
      s->name.reset();
      publish(c, State::kDead, why);
      return;
    }
    logger().warn("actor {} died ({}); restarting it from its constructor arguments: its "
                  "state is lost",
                  c.name, reason);
    publish(c, State::kRestarting, reason);
    while (static_cast<int>(restarts) < s->options.max_restarts()) {
      ++restarts;
      c.restarts.store(restarts, std::memory_order_release);
      const std::uint32_t incarnation = c.incarnation.load() + 1;
      std::optional<StartFailure> failure;
      try {
        failure = start_incarnation(*s, incarnation);
      } catch (const std::exception& e) {
        failure = StartFailure{false, {}, e.what()};
      }
      if (!failure) {
        c.pid.store(s->child.pid, std::memory_order_release);
        c.incarnation.store(incarnation, std::memory_order_release);
        if (c.stop_requested.load() != 0) {
          // A stop arrived during the restart: nobody will address this incarnation.
          ::kill(s->child.pid, SIGKILL);
        }
        publish(c, State::kAlive, reason);
        watch(std::move(s));
        return;
      }
      reason = failure->constructor_threw
                   ? "its constructor raised " + failure->error.type + ": " + failure->error.message
                   : failure->reason;
      logger().error("actor {}: restart {} failed: {}", c.name, restarts, reason);
    }
    s->name.reset();
    publish(c, State::kDead, reason + "; not restarted again after " + std::to_string(restarts) +
                                 " restart(s) (ActorOptions::max_restarts)");
  }

  transport::Loop loop_;  // the actors' pidfds; touched by the supervisor thread only
  std::mutex mu_;
  std::vector<std::shared_ptr<Supervised>> added_;  // guarded by mu_: to watch next turn
};

}  // namespace

bool on_supervisor_thread() { return t_on_supervisor; }

void supervise(std::shared_ptr<Supervised> s) { Supervisor::get().add(std::move(s)); }

}  // namespace actor
}  // namespace mpx
