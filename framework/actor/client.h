// ActorClient: this process's one connection to one actor, shared by every handle and
// thread (mpx/actor.h's Future and Actor<T> call through it), and the table that lets a
// handle received in a message find the connection and owner already here.
//
// Any thread writes calls (send_mu_ keeps them in id order); the thread that waits
// reads answers for everybody through a transport::Pump; the incarnation's pidfd in the
// pump's Loop tells of its death at once, the control block of what followed.
#ifndef MPX_FRAMEWORK_ACTOR_CLIENT_H_
#define MPX_FRAMEWORK_ACTOR_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "framework/actor/control.h"
#include "framework/transport/loop.h"
#include "framework/transport/transport.h"
#include "mpx/actor.h"
#include "mpx/errors.h"

namespace mpx {
namespace detail {

using actor::Control;
using actor::State;
using actor::state_of;

struct ActorCall {
  std::uint64_t id = 0;
  std::uint32_t incarnation = 0;
  std::string method;  // "Counter::add", for errors
  Clock::time_point deadline = Clock::time_point::max();
  Pins pins;
  // Guarded by the client's mutex until done; read-only afterwards.
  bool done = false;
  bool cancelled = false;  // Future::cancel: failed with CancelledError for the caller
  std::string reply;
  std::exception_ptr error;
  Completion completion;  // its Future's callbacks: fired once done, no lock held
};

class ActorClient {
 public:
  ActorClient(std::shared_ptr<Segment> control, std::string class_name)
      : segment_(std::move(control)),
        control_(*reinterpret_cast<Control*>(segment_->body())),
        class_name_(std::move(class_name)),
        name_(control_.name),
        pump_([this](Clock::time_point until) { turn(until); }) {
    // An actor answers from its own process, on another CPU: waiting for it awake
    // needs no yield (which, on a loaded machine, gives the CPU away for a time slice).
    loop_.set_spin_style(transport::Spin::Style::kPause);
  }
  ~ActorClient();

  Control& control() { return control_; }
  const std::shared_ptr<Segment>& segment() const { return segment_; }
  const std::string& name() const { return name_; }
  const std::string& class_name() const { return class_name_; }

  std::shared_ptr<ActorCall> send(std::uint32_t method, std::string_view method_name,
                                  Buffer&& args, Pins pins, bool want_reply,
                                  Clock::time_point deadline);
  bool wait(ActorCall& call, Clock::time_point deadline);
  // Waits, collecting answers, until pred() (evaluated under the lock) or deadline.
  bool wait_until(const std::function<bool()>& pred, Clock::time_point deadline);
  // Under the lock (inside a wait's predicate): whether call is done; one past its own
  // deadline fails with TimeoutError here.
  bool done_locked(ActorCall& call);
  // Fails call with CancelledError unless it is done (false then); its answer, if it
  // comes, is dropped.
  bool cancel(ActorCall& call);
  std::exception_ptr error_of(ActorCall& call);
  bool cancelled(ActorCall& call);
  // Sends STOP to the current incarnation; returns it (0 if the actor is already over).
  std::uint32_t send_stop();
  // Whether calls of this process wait for answers on an open connection.
  bool awaits_answers() {
    std::lock_guard<std::mutex> lk(pump_.mu());
    return !pending_.empty() && conn_ != nullptr;
  }

 private:
  bool connected_to_current() const {
    return connected_ != 0 && connected_ == control_.incarnation.load(std::memory_order_acquire) &&
           state_of(control_) == State::kAlive;
  }
  void ensure_connected(std::unique_lock<std::mutex>& lk);
  void close_connection();
  // The pump's turn: answers (or the incarnation's death) until `until`.
  void turn(Clock::time_point until);
  void deliver_frames();
  void incarnation_died(std::unique_lock<std::mutex>& lk);
  // lk held: runs the callbacks of the calls finished meanwhile, with lk released.
  void fire_finished(std::unique_lock<std::mutex>& lk);
  std::exception_ptr death_error(const std::string& method, std::uint32_t incarnation);
  ActorDied dead_error(const std::string& doing);
  void wait_for_change(std::uint32_t seq, std::chrono::milliseconds slice) {
    actor::futex_wait(&control_.seq, seq, slice);
  }

  std::shared_ptr<Segment> segment_;
  Control& control_;
  const std::string class_name_;
  const std::string name_;

  // Held while a message is numbered and written: the actor reads them in id order,
  // which the tell pins rely on. Taken before the pump's mutex.
  std::mutex send_mu_;
  // Its mutex guards what follows but for the loop; holding the pump (its turn or
  // hold()) is needed to replace the connection or read it.
  transport::Pump pump_;
  // The stream to the connected incarnation: senders write it (send_mu_), the pump
  // holder reads it; kept alive by each user while it writes.
  std::shared_ptr<transport::Connection> conn_;
  std::uint32_t connected_ = 0;  // incarnation conn_ talks to; 0: none
  int pidfd_ = -1;
  std::unordered_map<std::uint64_t, std::shared_ptr<ActorCall>> pending_;
  // Calls finished whose callbacks have not been fired yet (see fire_finished).
  std::vector<std::shared_ptr<ActorCall>> finished_;
  std::vector<std::pair<std::uint64_t, Pins>> tell_pins_;
  std::uint64_t next_id_ = 1;
  // Pump holder only: the connection and the incarnation's pidfd, and what fired.
  transport::Loop loop_;  // spins pausing (Spin::Style::kPause): see the constructor
  transport::Loop::Id conn_watch_ = 0, pid_watch_ = 0;
  bool readable_ = false, pid_fired_ = false;
};

// The connection to the actor behind control, shared with every handle of this
// process (created on first use).
std::shared_ptr<ActorClient> client_for(const std::shared_ptr<Segment>& control,
                                        const std::string& class_name);
// The owner of the actor with control-block id, if this process spawned it and it
// still lives; and its registration.
std::shared_ptr<ActorOwner> owner_of(std::uint64_t id);
void remember_owner(std::uint64_t id, const std::shared_ptr<ActorOwner>& owner);
// Drops the table entries of actor id that no handle uses any more.
void forget_expired(std::uint64_t id);

}  // namespace detail
}  // namespace mpx

#endif  // MPX_FRAMEWORK_ACTOR_CLIENT_H_
