// Actors, caller and owner side: spawning and supervising actor processes, and the
// per-process connections that carry calls to them.
//
// Topology: every actor process listens on an abstract unix socket of its own (one per
// incarnation). A process that talks to an actor has one stream connection to it
// (ActorClient), shared by all its handles and threads (framework/transport says why
// unix streams): any thread writes calls, and the thread that waits reads answers for
// everybody (leader/follower, as the pool's driver does). The process that spawned the
// actor (its owner) runs one supervisor thread that reaps its actors and restarts
// them; everybody else learns of a death from the actor's pidfd and of the outcome
// from the control block (actor_internal.h).
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <iterator>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "framework/actor/actor_internal.h"
#include "framework/base/base.h"
#include "framework/base/futex.h"
#include "framework/transport/loop.h"
#include "framework/transport/pump.h"
#include "framework/transport/transport.h"
#include "framework/wire/messages.h"
#include "mpx/actor.h"
#include "mpx/runtime.h"

namespace mpx {
namespace actor {

transport::Endpoint incarnation_endpoint(const Control& control, std::uint32_t incarnation) {
  return transport::Endpoint::from(control.endpoint).with_suffix("-" + std::to_string(incarnation));
}

std::string encode_bootstrap(const Bootstrap& b) {
  detail::Buffer buf;
  msgpack::packer<detail::Buffer> pk(buf);
  pk.pack_array(4);
  pk.pack(b.factory_key);
  pk.pack_bin(static_cast<std::uint32_t>(b.args.size()));
  pk.pack_bin_body(b.args.data(), static_cast<std::uint32_t>(b.args.size()));
  pk.pack(b.endpoint);
  pk.pack(b.incarnation);
  return std::string(buf.data(), buf.size());
}

Bootstrap decode_bootstrap(const std::string& bytes) {
  try {
    auto oh = msgpack::unpack(bytes.data(), bytes.size());
    std::tuple<std::string, msgpack::type::raw_ref, std::string, std::uint32_t> t;
    oh.get().convert(t);
    Bootstrap b;
    b.factory_key = std::get<0>(t);
    b.args.assign(std::get<1>(t).ptr, std::get<1>(t).size);
    b.endpoint = std::get<2>(t);
    b.incarnation = std::get<3>(t);
    return b;
  } catch (const std::exception& e) {
    throw DecodeError(std::string("actor bootstrap: ") + e.what());
  }
}

namespace {

using detail::Clock;

// Sleeps while word holds expected, at most for slice.
void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                std::chrono::milliseconds slice) {
  base::futex_wait(word, expected, Clock::now() + slice);
}

State state_of(const Control& c) { return static_cast<State>(c.state.load(std::memory_order_acquire)); }

void copy_text(char* dst, std::size_t cap, const std::string& text) {
  const std::size_t n = std::min(cap - 1, text.size());
  std::memcpy(dst, text.data(), n);
  dst[n] = '\0';
}

// Only the owner's supervisor thread (and spawn, before anybody else sees the block)
// writes the control block: seq goes odd, the reason and state are written, seq goes
// even again (see Control::reason).
void publish(Control& c, State state, const std::string& reason) {
  c.seq.fetch_add(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);  // seq odd before any word changes
  if (!reason.empty()) {
    char text[sizeof c.reason] = {};
    copy_text(text, sizeof text, reason);
    for (std::size_t i = 0; i < std::size(c.reason); ++i) {
      std::uint64_t word;
      std::memcpy(&word, text + 8 * i, 8);
      c.reason[i].store(word, std::memory_order_relaxed);
    }
  }
  c.state.store(static_cast<std::uint32_t>(state), std::memory_order_release);
  c.seq.fetch_add(1, std::memory_order_release);
  base::futex_wake(&c.seq, INT32_MAX);
}

bool process_exists(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

}  // namespace

std::string read_reason(const Control& c) {
  char text[sizeof c.reason];
  // A publish is a few stores long; one that never ends had its process (the actor's
  // owner) die in the middle of it: after a while the text is read as it is.
  for (int tries = 0;; ++tries) {
    const std::uint32_t before = c.seq.load(std::memory_order_acquire);
    if ((before & 1) && tries < 10000) {
      sched_yield();
      continue;
    }
    for (std::size_t i = 0; i < std::size(c.reason); ++i) {
      const std::uint64_t word = c.reason[i].load(std::memory_order_relaxed);
      std::memcpy(text + 8 * i, &word, 8);
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if (c.seq.load(std::memory_order_relaxed) == before || tries >= 10000) break;
  }
  text[sizeof text - 1] = '\0';
  return std::string(text);
}

// ---- Spawning one incarnation --------------------------------------------------------

struct Supervised {
  std::shared_ptr<detail::Segment> control_segment;
  Control* control = nullptr;
  const detail::ActorFactoryEntry* factory = nullptr;
  std::string args;
  ActorOptions options;
  detail::Pins pins;  // shared objects among the constructor arguments (restarts reuse them)
  spawning::Child child;
};

struct StartFailure {
  bool constructor_threw = false;
  std::string type, message;  // constructor_threw
  std::string reason;         // otherwise: how the process ended
};

// Starts incarnation `incarnation` and waits until it is constructed and listening.
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
      const detail::ErrorInfo error = detail::decode_error(got.data() + 1, got.size() - 1);
      f.type = error.type;
      f.message = error.message;
    } catch (const std::exception& e) {
      f.type = "mpx::DecodeError";
      f.message = std::string("its report could not be decoded: ") + e.what();
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

// Set on the supervisor thread: what runs there must never wait for the supervisor.
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
    const auto status = spawning::reap(s->child, true);
    Control& c = *s->control;
    std::string reason = status ? spawning::describe(*status) : "ended";
    if (c.stop_requested.load(std::memory_order_acquire) != 0) {
      const bool clean = status && spawning::exitcode(*status) == 0;
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
        failure = StartFailure{false, "", "", e.what()};
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
                   ? "its constructor raised " + failure->type + ": " + failure->message
                   : failure->reason;
      logger().error("actor {}: restart {} failed: {}", c.name, restarts, reason);
    }
    publish(c, State::kDead, reason + "; not restarted again after " + std::to_string(restarts) +
                                 " restart(s) (ActorOptions::max_restarts)");
  }

  transport::Loop loop_;  // the actors' pidfds; touched by the supervisor thread only
  std::mutex mu_;
  std::vector<std::shared_ptr<Supervised>> added_;  // guarded by mu_: to watch next turn
};

}  // namespace actor

namespace detail {

using actor::Control;
using actor::process_exists;
using actor::State;
using actor::state_of;

// ---- Registry of constructors -------------------------------------------------------

namespace {
std::map<std::string, const ActorFactoryEntry*, std::less<>>& factories() {
  static auto* m = new std::map<std::string, const ActorFactoryEntry*, std::less<>>();
  return *m;
}
}  // namespace

bool register_actor_factory(const ActorFactoryEntry* entry) {
  factories().emplace(entry->key, entry);  // static initialisation: one thread
  return true;
}

const ActorFactoryEntry* find_actor_factory(std::string_view key) {
  auto& m = factories();
  auto it = m.find(key);
  return it == m.end() ? nullptr : it->second;
}

std::vector<std::string> split_method_names(const char* list) {
  std::vector<std::string> out;
  std::string cur;
  for (const char* p = list; ; ++p) {
    if (*p == ',' || *p == '\0') {
      const auto b = cur.find_first_not_of(" \t\n");
      const auto e = cur.find_last_not_of(" \t\n");
      out.push_back(b == std::string::npos ? "" : cur.substr(b, e - b + 1));
      cur.clear();
      if (*p == '\0') break;
    } else {
      cur += *p;
    }
  }
  return out;
}

// ---- Calls ----------------------------------------------------------------------------

struct ActorCall {
  std::uint64_t id = 0;
  std::uint32_t incarnation = 0;
  std::string method;  // "Counter::add", for errors
  Clock::time_point deadline = Clock::time_point::max();
  Pins pins;
  // Guarded by the client's mutex until done; read-only afterwards.
  bool done = false;
  std::string reply;
  std::exception_ptr error;
};

class ActorClient {
 public:
  ActorClient(std::shared_ptr<Segment> control, std::string class_name)
      : segment_(std::move(control)),
        control_(*reinterpret_cast<Control*>(segment_->body())),
        class_name_(std::move(class_name)),
        name_(control_.name),
        pump_([this](Clock::time_point until) { turn(until); }) {}
  ~ActorClient();

  Control& control() { return control_; }
  const std::shared_ptr<Segment>& segment() const { return segment_; }
  const std::string& name() const { return name_; }
  const std::string& class_name() const { return class_name_; }

  std::shared_ptr<ActorCall> send(std::uint32_t method, std::string_view method_name,
                                  Buffer&& args, Pins pins, bool want_reply,
                                  Clock::time_point deadline);
  bool wait(ActorCall& call, Clock::time_point deadline);
  // Sends STOP to the current incarnation; returns it (0 if the actor is already over).
  std::uint32_t send_stop();

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
  std::vector<std::pair<std::uint64_t, Pins>> tell_pins_;
  std::uint64_t next_id_ = 1;
  // Pump holder only: the connection and the incarnation's pidfd, and what fired.
  transport::Loop loop_;
  transport::Loop::Id conn_watch_ = 0, pid_watch_ = 0;
  bool readable_ = false, pid_fired_ = false;
};

namespace {
std::mutex registry_mu;
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
void forget_expired(std::uint64_t id) {
  std::lock_guard<std::mutex> lock(registry_mu);
  auto c = clients().find(id);
  if (c != clients().end() && c->second.expired()) clients().erase(c);
  auto o = owners().find(id);
  if (o != owners().end() && o->second.expired()) owners().erase(o);
}
}  // namespace

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
      call.error = std::make_exception_ptr(RemoteError(call.method, error.type, error.message, 0, h.pid));
    } else {
      call.reply.assign(payload.data(), payload.size());
    }
    call.done = true;
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

bool ActorClient::wait(ActorCall& call, Clock::time_point deadline) {
  std::unique_lock<std::mutex> lk(pump_.mu());
  // Past its own deadline a call is done: failed with TimeoutError, its answer dropped.
  auto done = [&] {
    if (!call.done && call.deadline <= Clock::now()) {
      pending_.erase(call.id);
      call.error = std::make_exception_ptr(TimeoutError(
          "actor " + name_ + ": " + call.method + " did not answer within the call's timeout"));
      call.done = true;
    }
    return call.done;
  };
  // Polls at least once, so ready() and zero timeouts see answers already there.
  return pump_.wait(lk, done, std::min(deadline, call.deadline));
}

// ---- Owner side ------------------------------------------------------------------------

// One thread (started on first use, leaked like the supervisor: stops may come during
// static destruction) that stops the actors whose last handle went on the supervisor
// thread, one after another.
class Stopper {
 public:
  static Stopper& get() {
    static Stopper* s = new Stopper();
    return *s;
  }
  void push(std::shared_ptr<ActorClient> client) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(client));
    }
    cv_.notify_one();
  }

 private:
  Stopper() {
    std::thread([this] {
      for (;;) {
        std::shared_ptr<ActorClient> client;
        {
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [this] { return !queue_.empty(); });
          client = std::move(queue_.front());
          queue_.pop_front();
        }
        stop_client(client);
      }
    }).detach();
  }
  static void stop_client(const std::shared_ptr<ActorClient>& client);
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<ActorClient>> queue_;  // guarded by mu_
};

class ActorOwner {
 public:
  ActorOwner(std::shared_ptr<ActorClient> client, std::shared_ptr<actor::Supervised> supervised)
      : client_(std::move(client)), supervised_(std::move(supervised)) {}
  ~ActorOwner() {
    if (actor::t_on_supervisor) {
      // The supervisor dropped the last handle (pinned by another actor's constructor
      // arguments). A stop waits for the supervisor to see the actor exit: it must
      // wait on another thread, or the supervisor would wait for itself.
      Stopper::get().push(client_);
      return;
    }
    stop(client_);
  }

  // Stops the actor behind client and waits for it (what the owner's destructor does).
  static void stop(const std::shared_ptr<ActorClient>& client) {
    try {
      ActorLink link{client, nullptr};
      actor_stop(link);
    } catch (const std::exception& e) {
      logger().error("actor {}: stopping it failed: {}", client->name(), e.what());
    }
    forget_expired(client->segment()->ref().id);
  }

 private:
  std::shared_ptr<ActorClient> client_;
  std::shared_ptr<actor::Supervised> supervised_;
};

void Stopper::stop_client(const std::shared_ptr<ActorClient>& client) { ActorOwner::stop(client); }

namespace {

std::shared_ptr<ActorClient> client_for(const std::shared_ptr<Segment>& control,
                                        const std::string& class_name) {
  std::lock_guard<std::mutex> lock(registry_mu);
  auto& slot = clients()[control->ref().id];
  if (auto c = slot.lock()) return c;
  auto c = std::make_shared<ActorClient>(control, class_name);
  slot = c;
  return c;
}

std::atomic<int> actor_counter{0};

}  // namespace

std::shared_ptr<ActorLink> spawn_actor(const ActorFactoryEntry& factory, std::string args, Pins pins,
                                       const ActorOptions& options) {
  base::require_init("mpx::spawn");
  auto segment = Segment::create(SegmentKind::kActor, untyped_tag(), 0, sizeof(Control));
  auto* control = new (segment->body()) Control();
  const std::string name = options.name().empty()
                               ? factory.class_name + "-" + std::to_string(++actor_counter)
                               : options.name();
  const std::string endpoint = transport::Endpoint::unique("actor").str();
  if (endpoint.size() + 12 >= sizeof control->endpoint) {
    throw Error("mpx::spawn: endpoint name too long: " + endpoint);
  }
  actor::copy_text(control->endpoint, sizeof control->endpoint, endpoint);
  actor::copy_text(control->name, sizeof control->name, name);

  auto supervised = std::make_shared<actor::Supervised>();
  supervised->control_segment = segment;
  supervised->control = control;
  supervised->factory = &factory;
  supervised->args = std::move(args);
  supervised->options = options;
  supervised->pins = std::move(pins);
  const auto failure = actor::start_incarnation(*supervised, 1);
  if (failure) {
    if (failure->constructor_threw) {
      throw RemoteError(factory.class_name + "::" + factory.class_name, failure->type,
                        failure->message, 0, supervised->child.pid);
    }
    throw ActorDied(name, "could not start: " + failure->reason, false);
  }
  control->pid.store(supervised->child.pid, std::memory_order_release);
  control->incarnation.store(1, std::memory_order_release);
  actor::publish(*control, State::kAlive, "");
  actor::Supervisor::get().add(supervised);

  auto client = client_for(segment, factory.class_name);
  auto owner = std::make_shared<ActorOwner>(client, std::move(supervised));
  {
    std::lock_guard<std::mutex> lock(registry_mu);
    owners()[segment->ref().id] = owner;
  }
  return std::make_shared<ActorLink>(ActorLink{std::move(client), std::move(owner)});
}

std::shared_ptr<ActorCall> actor_send(ActorClient& client, std::uint32_t method,
                                      std::string_view method_name, Buffer&& args, Pins pins,
                                      bool want_reply, Clock::time_point call_deadline) {
  return client.send(method, method_name, std::move(args), std::move(pins), want_reply, call_deadline);
}

bool actor_wait(ActorClient& client, ActorCall& call, Clock::time_point deadline) {
  return client.wait(call, deadline);
}

std::string_view actor_result(const ActorCall& call) {
  if (call.error) std::rethrow_exception(call.error);
  return call.reply;
}

namespace {

// Waits until the actor is over, or `deadline`; true if it is over.
bool wait_over(ActorClient& client, std::uint32_t stop_sent_to, Clock::time_point deadline) {
  Control& c = client.control();
  const pid_t owner = client.segment()->ref().owner;
  for (;;) {
    const std::uint32_t seq = c.seq.load(std::memory_order_acquire);
    if (actor::terminal(state_of(c))) return true;
    if (!client.segment()->owned() && !process_exists(owner)) return true;
    if (Clock::now() >= deadline) return false;
    if (state_of(c) == State::kAlive && c.incarnation.load() != stop_sent_to) {
      // A restart raced with the stop: tell the new incarnation too.
      stop_sent_to = client.send_stop();
      continue;
    }
    actor::futex_wait(&c.seq, seq, std::chrono::milliseconds(50));
  }
}

}  // namespace

void actor_stop(ActorLink& link) {
  Control& c = link.client->control();
  if (actor::terminal(state_of(c))) return;
  c.stop_requested.store(1, std::memory_order_release);
  const std::uint32_t sent = link.client->send_stop();
  wait_over(*link.client, sent, Clock::time_point::max());
}

bool actor_stop_for(ActorLink& link, std::chrono::milliseconds grace) {
  Control& c = link.client->control();
  if (actor::terminal(state_of(c))) return true;
  c.stop_requested.store(1, std::memory_order_release);
  const std::uint32_t sent = link.client->send_stop();
  if (wait_over(*link.client, sent, detail::deadline_after(grace))) return true;
  const pid_t pid = c.pid.load();
  if (pid > 0) ::kill(pid, SIGKILL);
  wait_over(*link.client, sent, Clock::time_point::max());
  return false;
}

void actor_kill(ActorLink& link) {
  Control& c = link.client->control();
  const std::uint32_t seq = c.seq.load(std::memory_order_acquire);
  if (actor::terminal(state_of(c))) return;
  const std::uint32_t incarnation = c.incarnation.load();
  const pid_t pid = c.pid.load();
  if (pid > 0) ::kill(pid, SIGKILL);
  // Returns once the owner has seen it: the next call then meets the new incarnation
  // (or ActorDied), never the dying one.
  std::uint32_t s = seq;
  const pid_t owner = link.client->segment()->ref().owner;
  while (state_of(c) == State::kAlive && c.incarnation.load() == incarnation) {
    if (!link.client->segment()->owned() && !process_exists(owner)) return;
    actor::futex_wait(&c.seq, s, std::chrono::milliseconds(50));
    s = c.seq.load(std::memory_order_acquire);
  }
}

pid_t actor_pid(const ActorClient& client) {
  auto& c = const_cast<ActorClient&>(client).control();
  return actor::terminal(state_of(c)) ? 0 : c.pid.load(std::memory_order_acquire);
}

bool actor_alive(const ActorClient& client) {
  auto& c = const_cast<ActorClient&>(client).control();
  return !actor::terminal(state_of(c));
}

int actor_restarts(const ActorClient& client) {
  return static_cast<int>(const_cast<ActorClient&>(client).control().restarts.load());
}

const std::string& actor_name(const ActorClient& client) { return client.name(); }

const std::shared_ptr<Segment>& actor_control(const ActorClient& client) { return client.segment(); }

void pin_actor(const ActorLink& link) {
  if (link.owner) pin(std::shared_ptr<const void>(link.owner));
}

std::shared_ptr<ActorLink> unpack_actor(const msgpack::object& o, std::string_view class_key) {
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 3 ||
      o.via.array.ptr[0].type != msgpack::type::STR || o.via.array.ptr[1].type != msgpack::type::STR ||
      std::string_view(o.via.array.ptr[0].via.str.ptr, o.via.array.ptr[0].via.str.size) != "mpx.Actor") {
    throw DecodeError("not an actor handle");
  }
  const std::string_view key(o.via.array.ptr[1].via.str.ptr, o.via.array.ptr[1].via.str.size);
  if (key != class_key) {
    throw DecodeError("a handle to an actor of class " + std::string(key) +
                      " cannot be used as an Actor<" + std::string(class_key) + ">");
  }
  auto segment = unpack_segment(o.via.array.ptr[2], SegmentKind::kActor, untyped_tag());
  // The class name shown in errors: the last component of the qualified name.
  std::string short_name(class_key);
  const auto colon = short_name.rfind("::");
  if (colon != std::string::npos) short_name = short_name.substr(colon + 2);
  auto link = std::make_shared<ActorLink>();
  link->client = client_for(segment, short_name);
  if (segment->owned()) {
    std::lock_guard<std::mutex> lock(registry_mu);
    auto it = owners().find(segment->ref().id);
    if (it != owners().end()) link->owner = it->second.lock();
  }
  return link;
}

}  // namespace detail
}  // namespace mpx
