// How an mpx process waits: the Loop (below) and, on top of it, the Pump (at the end).
//
// Loop: the one way an mpx process waits for its descriptors — connections, listeners,
// pidfds of the processes it watches, a wake-up from its other threads — with a bounded,
// adaptive spin before it sleeps. The router, the pool worker, the pool driver's result
// pump, the actor server, the actor caller's pump and the actor supervisor all wait in
// one.
//
//   transport::Loop loop;
//   loop.watch(conn.fd(), POLLIN, [&](short revents) { read(conn); });
//   loop.watch(pidfd, POLLIN, [&](short) { reap(child); });
//   for (;;) loop.run_once(next_deadline(), /*spin=*/answers_are_near);
//
// A handler runs on the thread that called run_once; it may watch, unwatch (itself
// included) and change what other entries wait for. Only wake() may be called from
// another thread. Timers are the deadline each turn is given: every role has at most a
// couple of deadlines (a heartbeat tick, a call's timeout), which it knows best.
#ifndef MPX_FRAMEWORK_TRANSPORT_LOOP_H_
#define MPX_FRAMEWORK_TRANSPORT_LOOP_H_

#include <poll.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <vector>

namespace mpx {
namespace transport {

using Clock = std::chrono::steady_clock;

// poll that resumes after signal handlers (EINTR) with the time that is left, as
// Python does since PEP 475; a negative timeout waits forever. Returns the number of
// ready descriptors (0 on timeout); throws mpx::Error on a real failure.
int poll(pollfd* fds, std::size_t count, std::chrono::milliseconds timeout);

// How long a waiter checks for its message awake before it sleeps — the one spin policy
// of every mpx wait on a socket. Spinning pays when messages follow each other within
// microseconds (a call's reply, a map's next chunk): on a virtual machine a cross-CPU
// wake-up costs ~20 us, several times the message. It costs when they do not: the CPU
// it takes is the workers'. So the budget follows what spinning achieved lately:
// doubled (up to 100 us) when the message came while spinning, halved when it did not,
// and tried again now and then once it reached 0.
//
// MPX_SPIN=0 in the environment turns spinning off (for a machine whose CPUs are all
// busy with other work, where every spin is stolen from it).
//
// Between two checks a spinning waiter either yields its CPU (kYield: a pool's driver,
// router and workers are more processes than CPUs, and the one a waiter spins for may
// need the waiter's CPU to answer) or only pauses (kPause: an actor and its caller, two
// processes whose answer never waits for the spinner's CPU; yielding there hands the
// CPU to whatever else runs, for a whole time slice, and a loaded machine then answers
// late).
class Spin {
 public:
  enum class Style { kYield, kPause };
  Spin() : budget_(enabled() ? std::chrono::microseconds(50) : std::chrono::microseconds(0)) {}
  std::chrono::microseconds budget() const { return budget_; }
  void update(bool caught);
  static bool enabled();
  // The budget never drops below floor: for a waiter whose next message is known to
  // follow at once in the usual case, however often the machine delays it (an actor
  // that just answered: its caller's next call).
  void set_floor(std::chrono::microseconds floor);

 private:
  static constexpr std::chrono::microseconds kMax{100};
  std::chrono::microseconds budget_;
  std::chrono::microseconds floor_{0};
  unsigned idle_ = 0;
};

class Loop {
 public:
  using Handler = std::function<void(short revents)>;
  using Id = std::size_t;

  // wakeable: wake() may be called (the loop then holds an eventfd; std::system_error
  // when it cannot have one).
  explicit Loop(bool wakeable = false);
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Runs handler with the revents whenever fd has one of events (POLLHUP and POLLERR
  // always count). The descriptor stays the caller's.
  Id watch(int fd, short events, Handler handler);
  // What entry id waits for from now on; 0 pauses it (not even a hang-up is reported).
  void set_events(Id id, short events);
  // Entry id is not checked while the loop spins, only when it sleeps: for what may
  // wait a spin's length (at most Spin's 100 us) and costs a spin check dearly (a
  // pidfd, a listener, the wake-up eventfd): a spin then polls only what answers
  // arrive on.
  void set_cold(Id id);
  void unwatch(Id id);
  // Runs id's handler on the next turn without waiting for its descriptor: for a
  // source whose readiness is edge-triggered (a ZeroMQ socket's ZMQ_FD) and that has
  // more to give than its descriptor says.
  void ready_again(Id id);

  // From any thread: the current or next run_once returns (having run no handler for
  // it). Only for a wakeable loop.
  void wake();

  // One turn: waits until something is ready or deadline passes, spinning first (for
  // spin().budget(), yielding the CPU between checks) when spin is true, then runs the
  // handlers of what is ready, in the order they were watched. Returns how many ran
  // (0: the deadline passed, or only a wake-up came). Throws mpx::Error if poll fails.
  int run_once(Clock::time_point deadline, bool spin = false);

  Spin& spin() { return spin_; }
  // How this loop waits between checks while it spins (default kYield).
  void set_spin_style(Spin::Style style) { style_ = style; }
  std::size_t size() const { return live_; }

 private:
  struct Entry {
    int fd = -1;
    short events = 0;
    Handler handler;
    bool live = false;
    bool again = false;  // ready_again: run on the next turn
    bool cold = false;   // set_cold
    std::size_t slot = 0;  // its index in fds_ while !dirty_
    std::size_t hot_slot = 0;  // its index in hot_ while !dirty_ (not cold)
  };
  void rebuild();
  int wait(int timeout_ms_or_forever, Clock::time_point deadline, bool spin);

  std::deque<Entry> entries_;  // by Id; a deque, so a running handler never moves
  std::vector<Id> free_;       // unwatched ids, reusable
  std::vector<Id> freed_;      // unwatched during a turn: reusable after it
  std::vector<pollfd> fds_;    // rebuilt from entries_ when dirty_
  std::vector<Id> fd_ids_;     // fds_[i] belongs to entries_[fd_ids_[i]]
  std::vector<pollfd> hot_;    // the entries that are not cold, polled while spinning
  std::vector<std::size_t> hot_slots_;  // hot_[i] is fds_[hot_slots_[i]]
  bool dirty_ = true;
  bool dispatching_ = false;
  std::size_t live_ = 0;
  std::size_t again_ = 0;  // entries with again set
  int wake_fd_ = -1;
  Spin spin_;
  Spin::Style style_ = Spin::Style::kYield;
};

// Pump: leader/follower waiting on one connection's answers, shared by the pool driver
// (PoolCore) and the actor caller (ActorClient).
//
// A process has no background thread per pool or actor: whichever thread waits for an
// answer reads the connection for everybody (the leader, running the turn its owner
// gave), publishes what came under mu() and wakes the others (the followers), who
// re-check their predicates. So an answer costs no extra thread wake-up.
//
//   transport::Pump pump([&](Clock::time_point until) { read_and_publish(until); });
//   std::unique_lock<std::mutex> lk(pump.mu());
//   pump.wait(lk, [&] { return call.done; }, deadline);
//
// Every waiter, a future's get() or wait_for() included, goes through wait(): a
// future type shared by pools and actors is a handle on a Pump and a predicate.
class Pump {
 public:
  using Clock = std::chrono::steady_clock;
  // Reads what came, until `until` at the latest, and publishes it under mu() (then
  // notify()). Runs with mu() released, on one thread at a time.
  using Turn = std::function<void(Clock::time_point until)>;

  explicit Pump(Turn turn) : turn_(std::move(turn)) {}

  // The mutex answers are published under; wait's predicates are evaluated under it.
  std::mutex& mu() { return mu_; }

  // Waits until ready() (evaluated with mu() held) or deadline; returns ready(). While
  // nobody else runs the turn, this thread does. A turn runs at least once even past the
  // deadline, so that a non-blocking check (deadline now) still collects what arrived.
  // An exception from the turn propagates (the pump is released first). lk holds mu().
  bool wait(std::unique_lock<std::mutex>& lk, const std::function<bool()>& ready,
            Clock::time_point deadline);

  // wait() that breaks off whenever due() holds (evaluated under mu() too) to call
  // run(lk) outside the turn: the pump is not held then, so run may wait on this pump
  // itself (a future's callbacks do). run gets lk held and returns with it held.
  bool wait_between(std::unique_lock<std::mutex>& lk, const std::function<bool()>& ready,
                    Clock::time_point deadline, const std::function<bool()>& due,
                    const std::function<void(std::unique_lock<std::mutex>&)>& run);

  // Wakes the followers after something was published. mu() need not be held.
  void notify() { cv_.notify_all(); }

  // Exclusive use of what the turn reads (to replace the connection, to stop the peer):
  // waits for the running turn to end and keeps new ones from starting until release().
  // lk holds mu().
  void hold(std::unique_lock<std::mutex>& lk);
  // mu() held.
  void release();

 private:
  Turn turn_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool pumping_ = false;     // a thread runs the turn or holds the pump; guarded by mu_
  int holders_waiting_ = 0;  // hold() calls waiting: no new turn starts; guarded by mu_
};

}  // namespace transport
}  // namespace mpx

#endif  // MPX_FRAMEWORK_TRANSPORT_LOOP_H_
