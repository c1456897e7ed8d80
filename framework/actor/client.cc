// Calls to an actor from this process: connecting to its current incarnation (through
// restarts), writing calls, pumping answers, and failing the calls of an incarnation
// that died.
#include "framework/actor/client.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "framework/spawn/spawn.h"
#include "framework/wire/messages.h"
#include "mpx/runtime.h"

namespace mpx {
namespace detail {

using actor::process_exists;

namespace {
std::mutex registry_mu;  // guards both tables
// Every connection and owner of this process, by control-block id, so that a handle
// received in a message shares them with the handles already here.
std::unordered_map<std::uint64_t, std::weak_ptr<ActorClient>>& clients() {
  static auto* m = new std::unordered_map<std::uint64_t, std::weak_ptr<ActorClient>>();
  return *m;
}
std::unordered_map<std::uint64_t, std::weak_ptr<ActorOwner>>& owners() {
  static auto* m = new std::unordered_map<std::uint64_t, std::weak_ptr<ActorOwner>>();
  return *m;
}
}  // namespace

void forget_expired(std::uint64_t id) {
  std::lock_guard<std::mutex> lock(registry_mu);
  auto c = clients().find(id);
  if (c != clients().end() && c->second.expired()) clients().erase(c);
  auto o = owners().find(id);
  if (o != owners().end() && o->second.expired()) owners().erase(o);
}

std::shared_ptr<ActorClient> client_for(const std::shared_ptr<Segment>& control,
                                        const std::string& class_name) {
  std::lock_guard<std::mutex> lock(registry_mu);
  auto& slot = clients()[control->ref().id];
  if (auto c = slot.lock()) return c;
  auto c = std::make_shared<ActorClient>(control, class_name);
  slot = c;
  return c;
}

std::shared_ptr<ActorOwner> owner_of(std::uint64_t id) {
  std::lock_guard<std::mutex> lock(registry_mu);
  auto it = owners().find(id);
  return it == owners().end() ? nullptr : it->second.lock();
}

void remember_owner(std::uint64_t id, const std::shared_ptr<ActorOwner>& owner) {
  std::lock_guard<std::mutex> lock(registry_mu);
  owners()[id] = owner;
}

ActorClient::~ActorClient() {
  close_connection();
  forget_expired(segment_->ref().id);
}

void ActorClient::close_connection() {
  if (conn_) {
    loop_.unwatch(conn_watch_);
    loop_.unwatch(pid_watch_);
  }
  conn_.reset();
  if (pidfd_ >= 0) ::close(pidfd_);
  pidfd_ = -1;
  connected_ = 0;
}

ActorDied ActorClient::dead_error(const std::string& doing) {
  const State s = state_of(control_);
  std::string reason = s == State::kStopped ? "stopped" : actor::read_reason(control_);
  if (reason.empty()) reason = "its process is gone";
  return ActorDied(name_, doing + (s == State::kStopped ? " after it was " : " after it died: ") + reason,
                   false);
}

// With the pump held: connects to the current incarnation, waiting through
// a restart. Throws ActorDied when the actor is over.
void ActorClient::ensure_connected(std::unique_lock<std::mutex>& lk) {
  const pid_t owner = segment_->ref().owner;
  for (;;) {
    const std::uint32_t seq = control_.seq.load(std::memory_order_acquire);
    const State s = state_of(control_);
    const std::uint32_t incarnation = control_.incarnation.load(std::memory_order_acquire);
    if (actor::terminal(s)) {
      close_connection();
      throw dead_error("cannot take calls");
    }
    if (!segment_->owned() && !process_exists(owner)) {
      close_connection();
      throw ActorDied(name_, "cannot take calls: the process that spawned it (pid " +
                                 std::to_string(owner) + ") is gone, and its actors with it",
                      false);
    }
    if (s == State::kAlive && connected_ == incarnation && conn_) return;
    if (s == State::kAlive) {
      close_connection();
      const pid_t pid = control_.pid.load(std::memory_order_acquire);
      const int pidfd = spawning::pidfd_open(pid);
      // The pidfd is opened before connecting and the incarnation checked after: a
      // connection that succeeds then belongs to that very process.
      transport::Connection c;
      if (pidfd >= 0) {
        c = transport::Connection::dial(actor::incarnation_endpoint(control_, incarnation));
      }
      if (c && control_.incarnation.load() == incarnation) {
        pidfd_ = pidfd;
        conn_ = std::make_shared<transport::Connection>(std::move(c));
        connected_ = incarnation;
        conn_watch_ = loop_.watch(conn_->fd(), POLLIN, [this](short) { readable_ = true; });
        pid_watch_ = loop_.watch(pidfd_, POLLIN, [this](short) { pid_fired_ = true; });
        return;
      }
      c.close();
      if (pidfd >= 0) ::close(pidfd);
      // That incarnation is gone (refused): the supervisor will say what follows.
    }
    lk.unlock();
    wait_for_change(seq, std::chrono::milliseconds(100));
    lk.lock();
  }
}

std::shared_ptr<ActorCall> ActorClient::send(std::uint32_t method, std::string_view method_name,
                                             Buffer&& args, Pins pins, bool want_reply,
                                             Clock::time_point deadline) {
  auto call = std::make_shared<ActorCall>();
  call->method = class_name_ + "::" + std::string(method_name);
  call->deadline = deadline;
  std::lock_guard<std::mutex> order(send_mu_);
  std::unique_lock<std::mutex> lk(pump_.mu());
  if (!connected_to_current()) {
    // Only the pump holder may replace the connection.
    pump_.hold(lk);
    try {
      ensure_connected(lk);
    } catch (...) {
      pump_.release();
      throw;
    }
    pump_.release();
  }
  call->id = next_id_++;
  call->incarnation = connected_;
  const wire::Header h =
      wire::Call{call->id, connected_, method, current_process().pid, !want_reply}.header();
  if (want_reply) {
    call->pins = std::move(pins);
    // Registered before the write, so the answer always finds it; if the incarnation
    // dies first, its death fails it.
    pending_.emplace(call->id, call);
  } else {
    // Kept until an answer to a later call proves the actor has read this one.
    if (!pins.empty()) tell_pins_.emplace_back(call->id, std::move(pins));
    call->done = true;
  }
  const std::shared_ptr<transport::Connection> conn = conn_;
  lk.unlock();
  // A failed write means the actor is gone: its pidfd reports that to the waiters.
  conn->send(h, std::string_view(args.data(), args.size()));
  return call;
}

std::uint32_t ActorClient::send_stop() {
  std::lock_guard<std::mutex> order(send_mu_);
  std::unique_lock<std::mutex> lk(pump_.mu());
  pump_.hold(lk);
  try {
    ensure_connected(lk);
  } catch (const ActorDied&) {
    pump_.release();
    return 0;
  }
  const wire::Header h = wire::Stop().header();
  const std::shared_ptr<transport::Connection> conn = conn_;
  const std::uint32_t incarnation = connected_;
  pump_.release();
  lk.unlock();
  conn->send(h, {});
  return incarnation;
}

std::exception_ptr ActorClient::death_error(const std::string& method, std::uint32_t incarnation) {
  const State s = state_of(control_);
  const bool restarted = s == State::kRestarting ||
                         (s == State::kAlive && control_.incarnation.load() > incarnation);
  std::string reason = actor::read_reason(control_);
  if (reason.empty()) reason = "its process ended";
  if (s == State::kStopped) {
    return std::make_exception_ptr(ActorDied(name_, "stopped before answering " + method, false));
  }
  return std::make_exception_ptr(
      ActorDied(name_, "died before answering " + method + ": " + reason, restarted));
}

// With the lock and the pump held: completes the calls whose answers the connection's
// reader holds.
void ActorClient::deliver_frames() {
  wire::Header h;
  std::string_view header_bytes, payload;
  std::string why;
  bool bad = false;
  for (;;) {
    const auto got = conn_->next(h, header_bytes, payload, &why);
    if (got == transport::Reader::Next::kNone) break;
    if (got != transport::Reader::Next::kFrame) {
      bad = true;  // an actor sends only what we understand: its stream is not to be trusted
      break;
    }
    if (h.type != wire::Type::kReply) continue;
    const std::uint64_t id = h.call_id;
    // Answers come in the order calls were sent: every tell sent before this call has
    // been read by the actor, so the shared objects it carried may go.
    while (!tell_pins_.empty() && tell_pins_.front().first < id) tell_pins_.erase(tell_pins_.begin());
    auto it = pending_.find(id);
    if (it == pending_.end()) continue;  // timed out meanwhile: dropped
    ActorCall& call = *it->second;
    if (wire::Reply::from(h).failed) {
      detail::ErrorInfo error;
      try {
        error = detail::decode_error(payload.data(), payload.size());
      } catch (const std::exception& ex) {
        error.type = "unknown";
        error.message = std::string("(undecodable error: ") + ex.what() + ")";
      }
      call.error = detail::remote_exception(call.method, error, 0, h.pid);
    } else {
      call.reply.assign(payload.data(), payload.size());
    }
    call.done = true;
    if (!call.completion.settle()) finished_.push_back(std::move(it->second));
    pending_.erase(it);
  }
  if (bad) logger().error("actor {}: malformed answer stream ({}); dropping the connection", name_, why);
}

// With the lock and the pump held: the connected incarnation's process is gone (or
// closed the connection).
void ActorClient::incarnation_died(std::unique_lock<std::mutex>& lk) {
  const std::uint32_t incarnation = connected_;
  // Whatever the actor wrote before it died is still in the socket: nothing is lost
  // in flight.
  if (conn_) {
    while (conn_->fill() == transport::Reader::Fill::kData) deliver_frames();
  }
  // Let the owner's supervisor record how it ended (and whether it restarts), so the
  // error can say so; bounded, since the owner itself may be gone.
  lk.unlock();
  const auto told_until = Clock::now() + std::chrono::seconds(2);
  for (;;) {
    const std::uint32_t seq = control_.seq.load(std::memory_order_acquire);
    const State s = state_of(control_);
    if (s != State::kAlive || control_.incarnation.load() != incarnation) break;
    if (Clock::now() >= told_until || (!segment_->owned() && !process_exists(segment_->ref().owner))) break;
    wait_for_change(seq, std::chrono::milliseconds(50));
  }
  lk.lock();
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second->incarnation == incarnation) {
      it->second->error = death_error(it->second->method, incarnation);
      it->second->done = true;
      if (!it->second->completion.settle()) finished_.push_back(it->second);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  tell_pins_.clear();
  close_connection();
}

// With the pump held, the lock not: waits for answers (or the actor's death) until
// `until`.
void ActorClient::turn(Clock::time_point until) {
  // Only the pump holder replaces conn_: reading it here needs no lock.
  const std::shared_ptr<transport::Connection> conn = conn_;
  if (!conn) {
    // Between incarnations (the actor died and its calls failed): nothing to read.
    std::this_thread::sleep_for(std::min<Clock::duration>(
        std::max<Clock::duration>(until - Clock::now(), Clock::duration(0)), std::chrono::milliseconds(10)));
    return;
  }
  using Fill = transport::Reader::Fill;
  Fill fill = conn->fill();
  bool died = fill == Fill::kClosed;
  if (fill == Fill::kNothing) {
    // An answer usually comes within tens of microseconds: the loop waits for it awake
    // for a moment (transport::Spin), which saves the wake-up (about 20 us on a virtual
    // machine) that sleeping would cost. At most 100 ms at a time.
    readable_ = pid_fired_ = false;
    loop_.run_once(std::min(until, Clock::now() + std::chrono::milliseconds(100)), /*spin=*/true);
    if (readable_) {
      fill = conn->fill();
      if (fill == Fill::kClosed) died = true;
    }
    if (pid_fired_) died = true;
  }
  std::unique_lock<std::mutex> lk(pump_.mu());
  deliver_frames();
  if (died) incarnation_died(lk);
  lk.unlock();
  pump_.notify();
}

void ActorClient::fire_finished(std::unique_lock<std::mutex>& lk) {
  if (finished_.empty()) {
    lk.unlock();
    return;
  }
  std::vector<std::shared_ptr<ActorCall>> finished;
  finished.swap(finished_);
  lk.unlock();
  for (const auto& call : finished) call->completion.fire();
}

bool ActorClient::done_locked(ActorCall& call) {
  // Past its own deadline a call is done: failed with TimeoutError, its answer dropped.
  if (!call.done && call.deadline <= Clock::now()) {
    call.error = std::make_exception_ptr(TimeoutError(
        "actor " + name_ + ": " + call.method + " did not answer within the call's timeout"));
    call.done = true;
    auto it = pending_.find(call.id);
    if (it != pending_.end()) {
      if (!call.completion.settle()) finished_.push_back(std::move(it->second));
      pending_.erase(it);
    }
  }
  return call.done;
}

bool ActorClient::wait_until(const std::function<bool()>& pred, Clock::time_point deadline) {
  std::unique_lock<std::mutex> lk(pump_.mu());
  // Callbacks of calls finished meanwhile run here, with the pump released (they may
  // wait themselves).
  return pump_.wait_between(
      lk, pred, deadline, [this] { return !finished_.empty(); },
      [this](std::unique_lock<std::mutex>& l) {
        fire_finished(l);
        l.lock();
      });
}

bool ActorClient::cancel(ActorCall& call) {
  std::unique_lock<std::mutex> lk(pump_.mu());
  if (call.done) return false;
  call.error = std::make_exception_ptr(
      CancelledError("actor " + name_ + ": the call of " + call.method + " was cancelled"));
  call.done = call.cancelled = true;
  pending_.erase(call.id);
  lk.unlock();
  pump_.notify();
  call.completion.fire();
  return true;
}

std::exception_ptr ActorClient::error_of(ActorCall& call) {
  std::lock_guard<std::mutex> lk(pump_.mu());
  return call.done ? call.error : nullptr;
}

bool ActorClient::cancelled(ActorCall& call) {
  std::lock_guard<std::mutex> lk(pump_.mu());
  return call.cancelled;
}

bool ActorClient::wait(ActorCall& call, Clock::time_point deadline) {
  // Polls at least once, so ready() and zero timeouts see answers already there.
  return wait_until([&] { return done_locked(call); }, std::min(deadline, call.deadline));
}

}  // namespace detail
}  // namespace mpx
