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
#ifndef MPX_FRAMEWORK_TRANSPORT_PUMP_H_
#define MPX_FRAMEWORK_TRANSPORT_PUMP_H_

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>

namespace mpx {
namespace transport {

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

#endif  // MPX_FRAMEWORK_TRANSPORT_PUMP_H_
