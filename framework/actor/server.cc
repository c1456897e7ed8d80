// The actor role: construct the object, then serve its callers one message at a time.
//
// One thread: a Loop over the listening socket and one stream per caller process.
// Answers are queued per caller and written without blocking, so a caller that stops
// reading cannot stall the others.
//
// `mpx status`: a second thread answers on the actor's status socket
// (framework/router/status.h) from counters the serving thread keeps. It is a thread,
// not a watch in the Loop, because a method may run for hours, and that is when one
// asks what the actor does; the serving thread pays a few relaxed stores per call.
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "framework/actor/control.h"
#include "framework/actor/server.h"
#include "framework/base/heap.h"
#include "framework/router/status.h"
#include "framework/transport/loop.h"
#include "framework/transport/transport.h"
#include "framework/wire/messages.h"
#include "mpx/actor.h"
#include "mpx/detail/segment.h"
#include "mpx/runtime.h"

namespace mpx {
namespace actor {
namespace {

void write_all(int fd, const std::string& bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the spawner is gone or gave up; nothing else to tell
    off += static_cast<std::size_t>(n);
  }
}

void report(int ready_fd, const std::string& bytes) {
  if (ready_fd < 0) return;
  write_all(ready_fd, bytes);
  ::close(ready_fd);
}

void report_failure(int ready_fd, std::string type, std::string message) {
  detail::ErrorInfo error;
  error.type = std::move(type);
  error.message = std::move(message);
  error.pid = static_cast<std::int32_t>(getpid());
  report(ready_fd, std::string(1, kFailedByte) + detail::encode_error(error));
}

struct Caller {
  transport::Connection conn;
  transport::Loop::Id watch = 0;
  std::string out;  // answers not yet written
  bool watching_out = false;
  unsigned ignored = 0;  // messages dropped; only the first few are logged one by one
};

constexpr unsigned kLoggedDrops = 3;

// What the serving thread tells the status thread. Written by the serving thread only
// (so a relaxed load and store make an increment); read by the status thread, which
// needs no ordering between them. Leaked: the status thread may read it while the
// process exits.
struct Activity {
  std::atomic<std::int32_t> method{-1};  // running now, -1: idle
  std::atomic<std::uint64_t> calls_done{0};
  std::atomic<std::uint64_t> calls_failed{0};
  std::atomic<std::uint32_t> callers{0};
};

void bump(std::atomic<std::uint64_t>& counter) {
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

// Answers `mpx status` on a thread of its own, for the rest of the process's life. Bound
// before the actor reports ready, so a spawned actor is listed from the start; the
// rest is the thread's.
void serve_status(const spawning::Bootstrap& boot, const Bootstrap& b, const detail::ActorFactoryEntry& factory,
                  const Activity& activity) {
  // The status socket and one reader at a time beside the actor's listener, callers
  // and shared segments; under a tighter limit the callers come first.
  auto listener = router::StatusListener::open("actor " + boot.name, 64);
  if (!listener) return;
  router::ActorStatus fixed;
  fixed.pid = static_cast<std::int32_t>(getpid());
  fixed.driver_pid = static_cast<std::int32_t>(boot.driver);
  fixed.owner_pid = static_cast<std::int32_t>(boot.parent);
  fixed.class_name = factory.class_name;
  fixed.name = boot.name;
  fixed.incarnation = b.incarnation;
  fixed.restarts = b.incarnation - 1;
  fixed.endpoint = b.endpoint;
  const auto started = std::chrono::steady_clock::now();
  std::thread([listener = std::move(listener), fixed = std::move(fixed), started, &factory, &activity]() mutable {
    fixed.program = router::command_line(fixed.driver_pid);
    for (;;) {
      pollfd p{listener.fd(), POLLIN, 0};
      if (::poll(&p, 1, -1) < 0 && errno != EINTR) return;
      const bool accepted = listener.answer_waiting([&] {
        router::ActorStatus s = fixed;
        const std::int32_t method = activity.method.load(std::memory_order_relaxed);
        s.state = method < 0 ? "idle" : "running";
        if (method >= 0) s.method = (*factory.method_names)[static_cast<std::size_t>(method)];
        s.calls_done = activity.calls_done.load(std::memory_order_relaxed);
        s.calls_failed = activity.calls_failed.load(std::memory_order_relaxed);
        s.callers = activity.callers.load(std::memory_order_relaxed);
        s.uptime_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        s.rss_bytes = router::rss_bytes(getpid());
        return router::encode_status(s);
      });
      // Out of descriptors: the socket stays readable; rest instead of spinning.
      if (!accepted) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }).detach();
}

class Server {
 public:
  Server(const detail::ActorFactoryEntry& factory, void* object, std::uint32_t incarnation,
         transport::Listener listener, Activity& activity)
      : factory_(factory),
        object_(object),
        incarnation_(incarnation),
        listener_(std::move(listener)),
        activity_(activity) {}

  // Serves until STOP; returns the exit code.
  int run() {
    // Its callers are other processes on other CPUs: spinning pauses, never yields. And
    // a caller that got its answer usually calls again at once (a call loop): after
    // each message the actor checks awake for at least 50 us, however often that
    // missed lately (on a loaded machine the caller is often late).
    loop_.set_spin_style(transport::Spin::Style::kPause);
    loop_.spin().set_floor(std::chrono::microseconds(50));
    loop_.watch(listener_.fd(), POLLIN, [this](short) { accept_all(); });
    // After serving a message the loop checks awake for a moment (transport::Spin): a
    // caller that sends its next call within it (a tight call loop does) finds the
    // actor awake.
    bool served = false;
    base::IdleTrim idle;  // kept buffers and mappings go back once the actor idles
    while (!stopped_) {
      served_ = false;
      loop_.run_once(idle.deadline(), /*spin=*/served);
      if (idle.after_wait(served_)) detail::forget_recently_opened_segments();
      served = served_;
    }
    drain_answers();
    return 0;
  }

 private:
  void accept_all() {
    for (;;) {
      auto c = std::make_unique<Caller>();
      long uid = -1;
      const auto got = listener_.accept(&c->conn, &uid);
      // kNone, or out of fds: the caller sees its connection refused or closed.
      if (got == transport::Listener::Accept::kNone || got == transport::Listener::Accept::kFailed) return;
      if (got == transport::Listener::Accept::kForeign) {
        // Same trust boundary as the pools: only this user's processes may call.
        logger().warn("refused a connection from uid {}: actors serve their own user only", uid);
        continue;
      }
      Caller* raw = c.get();
      const int fd = raw->conn.fd();
      raw->watch = loop_.watch(fd, POLLIN, [this, raw](short ev) { on_ready(*raw, ev); });
      callers_.emplace(fd, std::move(c));
      activity_.callers.store(static_cast<std::uint32_t>(callers_.size()), std::memory_order_relaxed);
    }
  }

  void on_ready(Caller& c, short ev) {
    if (stopped_) return;
    if (ev & POLLOUT) flush(c);
    if (!(ev & (POLLIN | POLLHUP | POLLERR))) return;
    const auto fill = c.conn.fill();
    if (fill == transport::Reader::Fill::kData) {
      served_ = true;
      if (serve(c)) {  // STOP
        stopped_ = true;
        return;
      }
    }
    if (fill == transport::Reader::Fill::kClosed || dropped_) {
      dropped_ = false;
      drop(c);
      return;
    }
    flush(c);
  }

  // After STOP: the answers to the calls that came before it leave before the process
  // ends (more than a socket buffer holds, the caller reads them as it waits for the
  // end: actor_stop pumps). A caller that reads nothing for kDrainPatience loses the
  // rest; its calls fail with ActorDied.
  void drain_answers() {
    static constexpr auto kDrainPatience = std::chrono::seconds(5);
    auto last_progress = std::chrono::steady_clock::now();
    std::size_t last_pending = SIZE_MAX;
    for (;;) {
      std::vector<pollfd> waiting;
      std::size_t pending = 0;
      for (auto& [fd, c] : callers_) {
        flush(*c);
        if (c->out.empty()) continue;
        pending += c->out.size();
        waiting.push_back(pollfd{fd, POLLOUT, 0});
      }
      if (pending == 0) return;
      const auto now = std::chrono::steady_clock::now();
      if (pending < last_pending) {
        last_pending = pending;
        last_progress = now;
      } else if (now - last_progress > kDrainPatience) {
        logger().warn("stopping with {} bytes of answers unread by their callers for {} s", pending,
                      std::chrono::duration_cast<std::chrono::seconds>(kDrainPatience).count());
        return;
      }
      transport::poll(waiting.data(), waiting.size(), std::chrono::milliseconds(100));
    }
  }

  void drop(Caller& c) {
    if (c.ignored > kLoggedDrops) {
      logger().warn("dropped {} more messages from that caller", c.ignored - kLoggedDrops);
    }
    loop_.unwatch(c.watch);
    callers_.erase(c.conn.fd());  // closes it
    activity_.callers.store(static_cast<std::uint32_t>(callers_.size()), std::memory_order_relaxed);
  }

  void flush(Caller& c) {
    if (!c.out.empty()) {
      bool gone = false;
      c.out.erase(0, c.conn.send_some(c.out, &gone));
      if (gone) c.out.clear();  // the caller is gone: its answers have nobody to go to
    }
    const bool want = !c.out.empty();
    if (want != c.watching_out) {
      loop_.set_events(c.watch, static_cast<short>(POLLIN | (want ? POLLOUT : 0)));
      c.watching_out = want;
    }
  }

  void answer_error(Caller& c, std::uint64_t call_id, const detail::ErrorInfo& error) {
    transport::append_frame(c.out, wire::Reply{call_id, pid_, /*failed=*/true}.header(),
                            detail::encode_error(error));
  }

  // Runs every complete message the caller sent; true on STOP.
  bool serve(Caller& c) {
    wire::Header h;
    std::string_view header_bytes, payload;
    bool bad = false;
    std::string why;
    for (;;) {
      const auto got = c.conn.next(h, header_bytes, payload, &why);
      if (got == transport::Reader::Next::kNone) break;
      if (got == transport::Reader::Next::kBadFrame) {
        if (++c.ignored <= kLoggedDrops) logger().warn("dropped a malformed message: {}", why);
        continue;
      }
      if (got == transport::Reader::Next::kBroken) {
        bad = true;
        break;
      }
      switch (h.type) {
        case wire::Type::kCall:
          call(c, h, payload);
          // Each answer leaves at once: the next method may run long, or kill the
          // process, and must not take an answer already computed with it.
          flush(c);
          break;
        case wire::Type::kStop:
          for (auto& [fd, other] : callers_) flush(*other);
          factory_.destroy(object_);
          return true;
        default:
          if (++c.ignored <= kLoggedDrops) {
            logger().warn("dropped a {} message: actors take CALL and STOP", wire::type_name(h.type));
          }
      }
    }
    if (bad) {
      logger().warn("dropped a caller that sent a malformed message: {}", why);
      dropped_ = true;
    }
    return false;
  }

  void call(Caller& c, const wire::Header& h, std::string_view payload) {
    const auto call = wire::Call::from(h);
    if (h.start != incarnation_) {
      logger().debug("dropped call {} addressed to incarnation {}", call.call_id, h.start);
      return;
    }
    if (call.method >= factory_.method_count) {
      if (++c.ignored <= kLoggedDrops) {
        logger().warn("dropped a call to method #{}: {} has {} methods", call.method,
                      factory_.class_name, factory_.method_count);
      }
      if (!call.tell) {
        detail::ErrorInfo error;
        error.type = "mpx::DecodeError";
        error.message = "no method #" + std::to_string(call.method);
        error.pid = pid_;
        answer_error(c, call.call_id, error);
      }
      return;
    }
    out_.clear();
    activity_.method.store(static_cast<std::int32_t>(call.method), std::memory_order_relaxed);
    try {
      factory_.methods[call.method](object_, payload.data(), payload.size(), out_);
      activity_.method.store(-1, std::memory_order_relaxed);
      bump(activity_.calls_done);
    } catch (...) {
      activity_.method.store(-1, std::memory_order_relaxed);
      bump(activity_.calls_done);
      bump(activity_.calls_failed);
      const detail::ErrorInfo error = detail::current_error();
      if (call.tell) {
        logger().error("{}::{} (told, nobody waits for it) raised {}: {}", factory_.class_name,
                       (*factory_.method_names)[call.method], error.type, error.message);
      } else {
        answer_error(c, call.call_id, error);
      }
      return;
    }
    if (call.tell) return;
    transport::append_frame(c.out, wire::Reply{call.call_id, pid_, false}.header(),
                            std::string_view(out_.data(), out_.size()));
  }

  const detail::ActorFactoryEntry& factory_;
  void* object_;
  const std::uint32_t incarnation_;
  transport::Listener listener_;
  Activity& activity_;
  const std::int32_t pid_ = static_cast<std::int32_t>(getpid());
  transport::Loop loop_;
  bool stopped_ = false;  // STOP came: the object is destroyed, the process exits
  bool served_ = false;   // this turn ran a message
  bool dropped_ = false;
  detail::Buffer out_;
  std::unordered_map<int, std::unique_ptr<Caller>> callers_;
};

}  // namespace

int run_actor(const spawning::Bootstrap& boot) {
  // The spawner may start actors from any thread (and restarts them from its
  // supervisor thread), so PR_SET_PDEATHSIG, which follows the spawning thread, would
  // fire too early: watch the spawner's pidfd instead.
  spawning::kill_self_when_gone(spawning::open_parent_or_exit(boot.parent));
  Bootstrap b;
  try {
    b = decode_bootstrap(boot.payload);
  } catch (const std::exception& e) {
    report_failure(boot.ready_fd, "mpx::DecodeError", e.what());
    return 1;
  }
  const detail::ActorFactoryEntry* factory = detail::find_actor_factory(b.factory_key);
  if (factory == nullptr) {
    report_failure(boot.ready_fd, "mpx::NotRegistered",
                   "no actor constructor '" + b.factory_key + "' is registered in this program");
    return 1;
  }
  std::string why;
  const auto endpoint = transport::Endpoint::parse(b.endpoint, &why);
  transport::Listener listener;
  if (endpoint) {
    listener = transport::Listener::bind(*endpoint);
    if (!listener) why = std::strerror(errno);
  }
  if (!listener) {
    report_failure(boot.ready_fd, "mpx::ProcessError", "cannot listen on " + b.endpoint + ": " + why);
    return 1;
  }
  void* object = nullptr;
  try {
    object = factory->create(b.args.data(), b.args.size());
  } catch (...) {
    report(boot.ready_fd, std::string(1, kFailedByte) + detail::encode_error(detail::current_error()));
    return 3;
  }
  auto* activity = new Activity();  // leaked: see Activity
  serve_status(boot, b, *factory, *activity);
  report(boot.ready_fd, std::string(1, kReadyByte));
  Server server(*factory, object, b.incarnation, std::move(listener), *activity);
  return server.run();
}

}  // namespace actor
}  // namespace mpx
