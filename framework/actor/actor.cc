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
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <linux/futex.h>
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
#include <random>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "framework/actor/actor_internal.h"
#include "framework/actor/named.h"
#include "framework/base/base.h"
#include "framework/transport/transport.h"
#include "mpx/actor.h"
#include "mpx/runtime.h"

namespace mpx {
namespace actor {

std::string incarnation_endpoint(const Control& control, std::uint32_t incarnation) {
  return std::string(control.endpoint) + "-" + std::to_string(incarnation);
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

bool futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                std::chrono::milliseconds timeout) {
  timespec ts{static_cast<time_t>(timeout.count() / 1000),
              static_cast<long>((timeout.count() % 1000) * 1000000)};
  const long r = syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT,
                         expected, &ts, nullptr, 0);
  return r == 0;
}

void futex_wake_all(std::atomic<std::uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr,
          nullptr, 0);
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
  futex_wake_all(&c.seq);
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
  std::shared_ptr<const void> name;  // its claim on ActorOptions::name (named.cc); supervisor thread
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
      Bootstrap{s.factory->key, s.args, incarnation_endpoint(*s.control, incarnation), incarnation});
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
  bool timed_out = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child reported, or died
    got.append(buf, static_cast<std::size_t>(n));
    if (got.size() == 1 && got[0] == kReadyByte) break;
  }
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
    const auto nl = got.find('\n');
    f.constructor_threw = true;
    f.type = got.substr(1, nl == std::string::npos ? std::string::npos : nl - 1);
    f.message = nl == std::string::npos ? "" : got.substr(nl + 1);
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

  void add(std::shared_ptr<Supervised> s) {
    std::lock_guard<std::mutex> lock(mu_);
    watch_locked(std::move(s));
  }

 private:
  Supervisor() {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) throw ProcessError(std::string("mpx actors: epoll: ") + std::strerror(errno));
    std::thread([this] { loop(); }).detach();
  }

  void watch_locked(std::shared_ptr<Supervised> s) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = s->child.pidfd;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, s->child.pidfd, &ev) != 0) {
      logger().error("actor {}: cannot watch its process: {}", s->control->name, std::strerror(errno));
    }
    by_fd_[s->child.pidfd] = std::move(s);
  }

  void loop() {
    t_on_supervisor = true;
    epoll_event events[16];
    for (;;) {
      const int n = epoll_wait(epfd_, events, 16, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        logger().critical("actor supervisor: epoll_wait: {}", std::strerror(errno));
        return;
      }
      for (int i = 0; i < n; ++i) {
        std::shared_ptr<Supervised> s;
        {
          std::lock_guard<std::mutex> lock(mu_);
          auto it = by_fd_.find(events[i].data.fd);
          if (it == by_fd_.end()) continue;
          s = std::move(it->second);
          by_fd_.erase(it);
          epoll_ctl(epfd_, EPOLL_CTL_DEL, events[i].data.fd, nullptr);
        }
        ended(std::move(s));
      }
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
      s->name.reset();
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
      s->name.reset();
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
        std::lock_guard<std::mutex> lock(mu_);
        watch_locked(std::move(s));
        return;
      }
      reason = failure->constructor_threw
                   ? "its constructor raised " + failure->type + ": " + failure->message
                   : failure->reason;
      logger().error("actor {}: restart {} failed: {}", c.name, restarts, reason);
    }
    publish(c, State::kDead, reason + "; not restarted again after " + std::to_string(restarts) +
                                 " restart(s) (ActorOptions::max_restarts)");
    s->name.reset();
  }

  std::mutex mu_;
  int epfd_ = -1;
  std::map<int, std::shared_ptr<Supervised>> by_fd_;
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

// One stream socket to one incarnation; closed when the last user lets go of it.
struct Connection {
  explicit Connection(int f) : fd(f) {}
  ~Connection() { ::close(fd); }
  const int fd;
};

class ActorClient {
 public:
  ActorClient(std::shared_ptr<Segment> control, std::string class_name)
      : segment_(std::move(control)),
        control_(*reinterpret_cast<Control*>(segment_->body())),
        class_name_(std::move(class_name)),
        name_(control_.name) {}
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
  void acquire_pump(std::unique_lock<std::mutex>& lk) {
    cv_.wait(lk, [this] { return !pumping_; });
    pumping_ = true;
  }
  void release_pump() {
    pumping_ = false;
    cv_.notify_all();
  }
  void ensure_connected(std::unique_lock<std::mutex>& lk);
  void close_connection();
  void pump(std::unique_lock<std::mutex>& lk, Clock::time_point until);
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
  // which the tell pins rely on. Taken before mu_.
  std::mutex send_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool pumping_ = false;  // a thread owns reader_ (and may replace the connection)
  std::shared_ptr<Connection> conn_;
  std::uint32_t connected_ = 0;  // incarnation conn_ talks to; 0: none
  int pidfd_ = -1;
  std::unordered_map<std::uint64_t, std::shared_ptr<ActorCall>> pending_;
  std::vector<std::pair<std::uint64_t, Pins>> tell_pins_;
  std::uint64_t next_id_ = 1;
  // Pump holder only.
  transport::Reader reader_;
  std::chrono::microseconds spin_{50};
  unsigned pumps_ = 0;
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
  conn_.reset();
  if (pidfd_ >= 0) ::close(pidfd_);
  pidfd_ = -1;
  connected_ = 0;
  reader_.reset();
}

ActorDied ActorClient::dead_error(const std::string& doing) {
  const State s = state_of(control_);
  std::string reason = s == State::kStopped ? "stopped" : actor::read_reason(control_);
  if (reason.empty()) reason = "its process is gone";
  return ActorDied(name_, doing + (s == State::kStopped ? " after it was " : " after it died: ") + reason,
                   false);
}

// With the pump held (pumping_): connects to the current incarnation, waiting through
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
      const int fd = pidfd < 0 ? -1 : transport::connect_to(actor::incarnation_endpoint(control_, incarnation));
      if (fd >= 0 && control_.incarnation.load() == incarnation) {
        pidfd_ = pidfd;
        conn_ = std::make_shared<Connection>(fd);
        connected_ = incarnation;
        return;
      }
      if (fd >= 0) ::close(fd);
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
  std::unique_lock<std::mutex> lk(mu_);
  if (!connected_to_current()) {
    // Only the pump holder may replace the connection.
    acquire_pump(lk);
    try {
      ensure_connected(lk);
    } catch (...) {
      release_pump();
      throw;
    }
    release_pump();
  }
  call->id = next_id_++;
  call->incarnation = connected_;
  wire::Header h;
  h.type = wire::Type::kCall;
  h.call_id = call->id;
  h.start = connected_;
  h.count = method;
  h.pid = current_process().pid;
  h.flags = want_reply ? 0 : wire::kFlagNoReply;
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
  const std::shared_ptr<Connection> conn = conn_;
  lk.unlock();
  // A failed write means the actor is gone: its pidfd reports that to the waiters.
  transport::write_frame(conn->fd, h, std::string_view(args.data(), args.size()));
  return call;
}

std::uint32_t ActorClient::send_stop() {
  std::lock_guard<std::mutex> order(send_mu_);
  std::unique_lock<std::mutex> lk(mu_);
  acquire_pump(lk);
  try {
    ensure_connected(lk);
  } catch (const ActorDied&) {
    release_pump();
    return 0;
  }
  wire::Header h;
  h.type = wire::Type::kStop;
  h.pid = current_process().pid;
  const std::shared_ptr<Connection> conn = conn_;
  const std::uint32_t incarnation = connected_;
  release_pump();
  lk.unlock();
  transport::write_frame(conn->fd, h, {});
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

// With the lock and the pump held: completes the calls whose answers reader_ holds.
void ActorClient::deliver_frames() {
  wire::Header h;
  std::string_view header_bytes, payload;
  std::string why;
  bool bad = false;
  for (;;) {
    const auto got = reader_.next(h, header_bytes, payload, &why);
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
    if (h.flags & wire::kFlagHasErrors) {
      std::string type = "unknown", message;
      try {
        auto oh = msgpack::unpack(payload.data(), payload.size());
        std::pair<std::string, std::string> e;
        oh.get().convert(e);
        type = e.first;
        message = e.second;
      } catch (const std::exception& ex) {
        message = std::string("(undecodable error: ") + ex.what() + ")";
      }
      call.error = std::make_exception_ptr(RemoteError(call.method, type, message, 0, h.pid));
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
    while (reader_.fill(conn_->fd) == transport::Reader::Fill::kData) deliver_frames();
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

// With the pump held: waits for answers (or the actor's death) until `until`.
void ActorClient::pump(std::unique_lock<std::mutex>& lk, Clock::time_point until) {
  if (!conn_) {
    cv_.wait_until(lk, std::min(until, Clock::now() + std::chrono::milliseconds(10)));
    return;
  }
  const std::shared_ptr<Connection> conn = conn_;
  const int pidfd = pidfd_;
  lk.unlock();
  using Fill = transport::Reader::Fill;
  Fill fill = reader_.fill(conn->fd);
  if (fill == Fill::kNothing && spin_.count() > 0) {
    // An answer usually comes within tens of microseconds: waiting for it awake saves
    // the wake-up (about 20 us on a virtual machine) that sleeping would cost. The
    // budget follows what spinning achieved lately.
    const auto spin_end = std::min(until, Clock::now() + spin_);
    while (fill == Fill::kNothing && Clock::now() < spin_end) {
      for (int i = 0; i < 16; ++i) __builtin_ia32_pause();
      fill = reader_.fill(conn->fd);
    }
    if (fill == Fill::kNothing) {
      spin_ /= 2;
    } else {
      spin_ = std::min(spin_ * 2, std::chrono::microseconds(100));
    }
  } else if (spin_.count() == 0 && (++pumps_ % 64) == 0) {
    spin_ = std::chrono::microseconds(20);  // probe again now and then
  }
  bool died = fill == Fill::kClosed;
  if (fill == Fill::kNothing) {
    pollfd items[2] = {{conn->fd, POLLIN, 0}, {pidfd, POLLIN, 0}};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    const auto slice = std::clamp(left + std::chrono::milliseconds(1), std::chrono::milliseconds(0),
                                  std::chrono::milliseconds(100));
    const int r = ::poll(items, 2, static_cast<int>(slice.count()));
    if (r > 0 && (items[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      fill = reader_.fill(conn->fd);
      if (fill == Fill::kClosed) died = true;
    }
    if (r > 0 && (items[1].revents & POLLIN)) died = true;
  }
  lk.lock();
  deliver_frames();
  if (died) incarnation_died(lk);
}

bool ActorClient::wait(ActorCall& call, Clock::time_point deadline) {
  std::unique_lock<std::mutex> lk(mu_);
  while (!call.done) {
    const auto now = Clock::now();
    if (call.deadline <= now) {
      pending_.erase(call.id);
      call.error = std::make_exception_ptr(TimeoutError(
          "actor " + name_ + ": " + call.method + " did not answer within the call's timeout"));
      call.done = true;
      break;
    }
    const auto until = std::min(deadline, call.deadline);
    if (!pumping_) {
      // Polls at least once, so ready() and zero timeouts see answers already there.
      pumping_ = true;
      try {
        pump(lk, until);
      } catch (...) {
        release_pump();
        throw;
      }
      release_pump();
    } else if (until > now) {
      cv_.wait_until(lk, until);
    }
    if (call.done) break;
    if (deadline <= Clock::now()) return false;
  }
  return true;
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
  std::string endpoint = transport::make_endpoint("actor");
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
  supervised->name = actor::claim_name(options.name(), *segment, factory.key);
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
