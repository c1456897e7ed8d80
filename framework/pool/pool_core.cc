#include "framework/pool/pool_core.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <system_error>
#include <thread>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "framework/base/base.h"
#include "framework/router/router.h"
#include "framework/wire/messages.h"
#include "mpx/detail/segment.h"
#include "mpx/runtime.h"

namespace mpx {
namespace detail {
namespace {
// Why the calls of a pool stopped on purpose fail (PoolCore::not_running_text).
const char* const kJoined = "Pool was joined";
const char* const kTerminated = "Pool was terminated";
const char* const kShutDown = "Pool was shut down";
}  // namespace

namespace {

// Frames under a quarter of this gather into one write, up to this much; larger ones
// are written on their own, without a copy.
constexpr std::size_t kBatchBytes = 64 << 10;

}  // namespace

RouterProcess::~RouterProcess() {
  if (!running()) return;
  kill();
  reap(true);
}

void RouterProcess::kill() {
  const pid_t pid = killable_.load(std::memory_order_acquire);
  if (pid <= 0) return;
  killed_here_.store(true, std::memory_order_release);
  ::kill(pid, SIGKILL);
}

std::optional<int> RouterProcess::reap(bool block) {
  auto status = spawning::reap(child_, block);
  if (status) {
    killable_.store(0, std::memory_order_release);
    last_status_ = status;
  }
  return status;
}

bool RouterProcess::killed_from_outside() const {
  return last_status_ && WIFSIGNALED(*last_status_) && !killed_here_.load(std::memory_order_acquire);
}

std::optional<int> RouterProcess::reap_within(std::chrono::milliseconds grace) {
  if (!running()) return std::nullopt;
  if (auto status = spawning::reap_for(child_, grace)) return status;
  kill();
  return reap(true);
}

void RouterProcess::start(const router::Config& config) {
  // The router says on this pipe when it has bound its sockets: connecting earlier
  // would fail.
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) {
    const int err = errno;
    throw PoolBroken(std::string("Pool: pipe2: ") + std::strerror(err) +
                     spawning::descriptor_advice(err));
  }
  spawning::Spec spec;
  spec.role = Role::kRouter;
  spec.name = "Router";
  spec.bootstrap = config.encode();
  spec.ready_fd = ready[1];
  try {
    child_ = spawning::spawn_self(spec);
    last_status_.reset();
    killed_here_.store(false, std::memory_order_release);
    killable_.store(child_.pid, std::memory_order_release);
  } catch (...) {
    ::close(ready[0]);
    ::close(ready[1]);
    throw;
  }
  ::close(ready[1]);
  bool signalled = false, ended = false;
  std::optional<std::string> failure;  // what the router said of why it cannot start
  {
    transport::Loop starting;
    starting.watch(ready[0], POLLIN, [&](short) {
      failure = spawning::read_ready(ready[0]);
      signalled = !failure;
      ended = !signalled;  // closed without the byte: it failed during start-up
    });
    starting.watch(child_.pidfd, POLLIN, [&](short) { ended = true; });
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (!signalled && !ended && Clock::now() < deadline) starting.run_once(deadline);
  }
  if (ended && !failure) {
    // Its exit may have been seen first: its reason, if it gave one, is in the pipe.
    pollfd p{ready[0], POLLIN, 0};
    if (::poll(&p, 1, 0) == 1) failure = spawning::read_ready(ready[0]);
  }
  ::close(ready[0]);
  if (signalled) return;
  if (!ended) kill();  // silent for 30 s; one that ended is only reaped (see killed_from_outside)
  const auto status = reap(true);
  if (!ended) throw PoolBroken("Pool: the router process did not start within 30 s");
  if (failure && !failure->empty()) throw PoolBroken("Pool: the router could not start: " + *failure);
  throw PoolBroken("Pool: the router process ended during its start-up: " +
                   spawning::describe(status.value_or(0)));
}

PoolCore::PoolCore(const PoolOptions& options)
    : processes_(options.processes() > 0                                  ? options.processes()
                 : !options.listen().empty() && options.processes_set() ? 0
                                                                          : cpu_count()),
      token_(base::random_token(10)),
      initializer_pins_(options.initializer_pins()),
      pump_([this](Clock::time_point deadline) { turn(deadline); }) {
  base::require_init("mpx::Pool");
  if (options.processes() < 0) throw Error("Pool: processes must be at least 1 (or 0 for cpu_count())");
  if (options.prefetch() < 1) throw Error("Pool: prefetch must be at least 1");
  router::Config& config = config_;
  config.workers = processes_;
  config.maxtasksperchild = options.maxtasksperchild();
  config.prefetch = options.prefetch();
  config.initializer = options.initializer_name();
  config.initializer_args = options.initializer_args();
  config.heartbeat_timeout = options.heartbeat_timeout();
  if (options.max_retries() < 0) throw Error("Pool: max_retries must be >= 0");
  config.max_retries = options.max_retries();
  config.pure_retries =
      options.max_retries_set() ? options.max_retries() : PoolOptions::kDefaultPureRetries;
  config.task_timeout = options.task_timeout();
  config.max_message_bytes = options.max_message_bytes();
  config.worker_memory_limit = options.worker_memory_limit();
  config.listen = options.listen();
  config.cluster_key = options.cluster_key();
  config.host_timeout = options.host_timeout();
  if (!config.listen.empty()) {
    std::string why;
    const auto at = transport::Endpoint::parse(config.listen, &why);
    if (!at || at->scheme() == transport::Endpoint::Scheme::kUnixAbstract) {
      throw Error("Pool: listen(\"" + config.listen + "\"): " +
                  (why.empty() ? "agents dial tcp://host:port or ipc://path" : why));
    }
    if (config.cluster_key.empty()) {
      throw Error("Pool: listen() needs cluster_key(\"<file>\"): the CURVE keys that say who may join");
    }
    if (config.host_timeout.count() <= 0) throw Error("Pool: host_timeout must be positive");
  }
  resend_all_ = options.max_retries() > 0;
  max_message_bytes_ = options.max_message_bytes();
  max_inflight_bytes_ = options.max_inflight_bytes();
  if (!config.listen.empty() && options.object_threshold_set() && options.object_threshold() != 0) {
    throw Error("Pool: object_threshold does not combine with listen(): workers on other hosts "
                "cannot map this host's memory, so a listening pool sends every argument by "
                "value (leave object_threshold unset, or 0)");
  }
  object_threshold_ = config.listen.empty() ? options.object_threshold() : 0;
  config.result_object_threshold = object_threshold_;
  if (config.task_timeout.count() < 0) throw Error("Pool: task_timeout must be >= 0");
  // Frames carry 32-bit lengths and every reader refuses payloads over kMaxPayload.
  if (config.max_message_bytes == 0 || config.max_message_bytes > transport::kMaxPayload) {
    throw Error("Pool: max_message_bytes must be between 1 and " +
                std::to_string(transport::kMaxPayload) + " (1 GiB), got " +
                std::to_string(config.max_message_bytes));
  }
  if (config.heartbeat_timeout.count() <= 0) throw Error("Pool: heartbeat_timeout must be positive");
  // milliseconds::max() and the like mean "never": held at router::kForever, which the
  // clock's nanoseconds can add to now.
  for (auto* timeout : {&config.task_timeout, &config.heartbeat_timeout, &config.host_timeout}) {
    *timeout = std::min(*timeout, router::kForever);
  }
  // An idle worker is pinged a heartbeat_interval after it was last heard from, and
  // replaced once silent for heartbeat_timeout: pings come at least four times per
  // timeout, or a timeout under the usual interval would replace every idle worker.
  config.heartbeat_interval = std::clamp(config.heartbeat_timeout / 4, std::chrono::milliseconds(1),
                                         config.heartbeat_interval);
  // A lane skips the router, which alone times chunks and counts a worker's chunks; and
  // it reaches this host's workers only. It costs a descriptor in this process and in
  // its worker, and two in the router while it opens one: not where descriptors are
  // counted (a limit under 256). MPX_LANES=0 in the environment turns lanes off.
  rlimit nofile{};
  const bool descriptors_to_spare = ::getrlimit(RLIMIT_NOFILE, &nofile) != 0 ||
                                    nofile.rlim_cur == RLIM_INFINITY || nofile.rlim_cur >= 256;
  const char* lanes = std::getenv("MPX_LANES");
  wants_lane_ = config.task_timeout.count() == 0 && config.maxtasksperchild == 0 && config.listen.empty() &&
                descriptors_to_spare && (lanes == nullptr || std::string_view(lanes) != "0");

  try {
    loop_ = std::make_unique<transport::Loop>(/*wakeable=*/true);
  } catch (const std::system_error& e) {
    throw PoolBroken(std::string("Pool: ") + e.what() + spawning::descriptor_advice(e.code().value()));
  }
  // A failure from here on must not leave the router (and so its workers) running:
  // RouterProcess's destructor kills it.
  start_router();
  conn_watch_ = loop_->watch(conn_.fd(), POLLIN, [this](short) { read_router(); });
  router_watch_ = loop_->watch(router_.pidfd(), POLLIN, [this](short) { check_router_exit(); });
  loop_->set_cold(router_watch_);  // its death may wait for the end of a spin
  router_watched_ = true;
  logger().debug("pool: router pid {} with {} workers", router_pid_, processes_);
}

PoolCore::~PoolCore() { shutdown(); }

std::string PoolCore::endpoint() const {
  std::lock_guard<std::mutex> lock(endpoint_mu_);
  if (endpoint_.empty()) throw Error("Pool::endpoint: this pool does not listen (PoolOptions::listen)");
  return endpoint_;
}

void PoolCore::wait_for_workers(int n, std::chrono::milliseconds timeout) {
  wait([&] { return serving_ >= n || state_ == State::kBroken; }, Clock::now() + timeout);
  std::lock_guard<std::mutex> lock(pump_.mu());
  if (serving_ >= n) return;
  if (state_ == State::kBroken) throw PoolBroken("Pool::wait_for_workers: " + not_running_text());
  throw TimeoutError("Pool::wait_for_workers: " + std::to_string(serving_.load()) + " of " + std::to_string(n) +
                     " workers serve after " + std::to_string(timeout.count()) + " ms");
}

void PoolCore::interrupt() {
  // Taking the mutex orders this after the caller's state change for every waiter: one
  // that evaluated its predicate before it is already asleep (and gets notified).
  { std::lock_guard<std::mutex> lock(pump_.mu()); }
  pump_.notify();
  loop_->wake();
}

bool PoolCore::count_router_death() {
  const auto now = Clock::now();
  router_deaths_.erase(std::remove_if(router_deaths_.begin(), router_deaths_.end(),
                                      [&](Clock::time_point t) { return now - t > kRouterDeathWindow; }),
                       router_deaths_.end());
  router_deaths_.push_back(now);
  return static_cast<int>(router_deaths_.size()) <= kRouterDeaths;
}

void PoolCore::start_router() {
  for (;;) {
    conn_ = transport::Connection();
    config_.front_endpoint = transport::Endpoint::unique("front").str();
    config_.back_endpoint = transport::Endpoint::unique("back").str();
    {
      // A replacement listens where its predecessor did: the agents dial that port again.
      std::lock_guard<std::mutex> lock(endpoint_mu_);
      const auto port_at = config_.listen.rfind(':');
      if (!endpoint_.empty() && port_at != std::string::npos &&
          config_.listen.compare(port_at, std::string::npos, ":0") == 0) {
        config_.listen.replace(port_at, std::string::npos, endpoint_.substr(endpoint_.rfind(':')));
      }
    }
    try {
      router_.start(config_);
      router_pid_.store(router_.pid(), std::memory_order_release);
      // A stop that came meanwhile could not reach this router: it goes now, and the
      // greeting fails.
      if (!stop_reason().empty()) router_.kill();
      connect_and_greet(config_.front_endpoint);
      return;
    } catch (const PoolBroken&) {
      // A router killed from outside may have closed its connection before its pidfd
      // said so: it is given a moment to be reaped as what it is, then killed.
      if (router_.running()) router_.reap_within(std::chrono::milliseconds(200));
      if (!router_.killed_from_outside() || !stop_reason().empty() || !count_router_death()) throw;
      logger().warn("pool: a router (pid {}) was killed during its start-up; starting another",
                    router_pid_.load());
    }
  }
}

void PoolCore::connect_and_greet(const std::string& endpoint) {
  // "R" + token: the name the router sends this pool's results to.
  conn_ = transport::Connection::dial(transport::Endpoint::from(endpoint), "R" + token_);
  if (!conn_) {
    throw PoolBroken(std::string("Pool: cannot connect to the router: ") + std::strerror(errno) +
                     spawning::descriptor_advice(errno));
  }
  if (!conn_.send(wire::Hello{static_cast<std::int32_t>(getpid()), wants_lane_}.header(), {})) {
    throw PoolBroken("Pool: the router closed the connection at once");
  }

  // Results can reach this connection only once the router knows it: HELLO/WELCOME.
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  bool ended = false;
  transport::Loop greeting;
  greeting.watch(conn_.fd(), POLLIN, [](short) {});
  greeting.watch(router_.pidfd(), POLLIN, [&](short) { ended = true; });
  wire::Header h;
  std::string_view header_bytes, payload;
  std::string why;
  for (;;) {
    greeting.run_once(Clock::now() + std::chrono::milliseconds(100));
    const auto fill = conn_.fill();
    const auto got = conn_.next(h, header_bytes, payload, &why);
    if (got == transport::Reader::Next::kFrame && h.type == wire::Type::kWelcome) {
      {
        std::lock_guard<std::mutex> lock(endpoint_mu_);
        endpoint_ = std::string(payload);
      }
      serving_ = static_cast<int>(wire::Welcome::from(h).workers);
      return;
    }
    if (got == transport::Reader::Next::kBroken || got == transport::Reader::Next::kBadFrame) {
      throw PoolBroken("Pool: the router's greeting was malformed: " + why);
    }
    if (ended) {
      auto status = router_.reap(true);
      throw PoolBroken("Pool: the router process ended during its start-up: " +
                       spawning::describe(status.value_or(0)));
    }
    if (fill == transport::Reader::Fill::kClosed) {
      throw PoolBroken("Pool: the router closed the connection before greeting");
    }
    if (Clock::now() > deadline) {
      throw PoolBroken("Pool: the router process did not answer within 30 s");
    }
  }
}

bool PoolCore::send(const wire::Header& h, std::string_view payload) {
  std::lock_guard<std::mutex> lock(send_mu_);
  return flush_locked() && conn_ && conn_.send(h, payload);
}

bool PoolCore::flush_locked() {
  if (out_.empty()) return true;
  const bool ok = conn_ && conn_.send_bytes(out_);
  out_.clear();
  return ok;
}

void PoolCore::flush() {
  std::lock_guard<std::mutex> lock(send_mu_);
  flush_locked();
}

std::string PoolCore::not_running_text() const {
  if (state_ == State::kClosed) return "Pool is closed: no new work is accepted";
  static const std::string kBroken = "Pool is broken: ";
  if (broken_reason_.compare(0, kBroken.size(), kBroken) == 0) return broken_reason_;
  if (broken_reason_ == kJoined || broken_reason_ == kTerminated || broken_reason_ == kShutDown) {
    return "Pool is not running: " + broken_reason_ + " (Python: ValueError: Pool not running)";
  }
  return kBroken + broken_reason_;
}

void PoolCore::begin_call(const std::shared_ptr<CallBase>& call) {
  std::unique_lock<std::mutex> lock(pump_.mu());
  if (state_ != State::kRunning) {
    throw PoolBroken(not_running_text());
  }
  const std::uint64_t id = next_call_id_++;
  call->set_id(id, &pump_.mu(), this);
  if (call->total() > 0) {
    calls_.emplace(id, call);
  } else if (Completion* c = call->completion_or_null()) {
    c->settle();  // finished at once: a callback added later runs at once
  }
}

void PoolCore::send_chunk(CallBase& call, std::uint64_t start, std::uint32_t count,
                          Buffer&& payload, Pins&& objects, std::size_t object_bytes,
                          std::vector<std::shared_ptr<Segment>>&& lent) {
  if (payload.size() > max_message_bytes_) {
    throw Error("task '" + std::string(call.task().name) + "': a chunk of " +
                std::to_string(count) + " item(s) from index " + std::to_string(start) +
                " encodes to " + std::to_string(payload.size()) +
                " bytes, more than the pool's max_message_bytes (" +
                std::to_string(max_message_bytes_) + "); use a smaller chunksize or raise the limit");
  }
  // Backpressure: wait, collecting results, until the chunk fits in the window. What
  // is buffered goes out first: those chunks are what the window waits for. Arguments
  // sent as objects count with their chunk: they are memory the chunk holds.
  const std::size_t size = payload.size() + object_bytes;
  bool full;
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    full = state_ != State::kBroken && inflight_bytes_ != 0 && inflight_bytes_ + size > max_inflight_bytes_;
  }
  if (full) flush();
  wait(
      [&] {
        return state_ == State::kBroken || inflight_bytes_ == 0 ||
               inflight_bytes_ + size <= max_inflight_bytes_;
      },
      Clock::time_point::max());
  wire::Header h = wire::Submit{call.id(), start, count, call.task().pure, call.task().name}.header();
  const std::string_view bytes(payload.data(), payload.size());
  const bool keep = call.task().pure || resend_all_;
  // Small chunks gather in out_ (one write for many); a large one is its own write,
  // without a copy. That write may block for as long as the router takes to read it; a
  // terminate() meanwhile kills the router, which ends it.
  const bool large = payload.size() >= kBatchBytes / 4;
  bool sent = true;
  {
    std::lock_guard<std::mutex> send_lock(send_mu_);
    // A call of one small chunk while nothing else is out (its worker is free) goes by
    // the lane, as the TASK the router would have made of it.
    std::string by_lane;
    {
      std::lock_guard<std::mutex> lock(pump_.mu());
      if (state_ == State::kBroken) throw PoolBroken(not_running_text());
      const bool lane = !large && lane_ && start == 0 && count == call.total() && out_.empty() &&
                        inflight_.empty() && !lane_busy_;
      if (lane) {
        transport::append_frame(
            by_lane, wire::Task{call.id(), start, count, call.task().pure, call.task().name}.header(), bytes);
        lane_chunk_.emplace(call.id(), start);
        lane_busy_ = true;
      } else {
        if (lane_busy_) h.flags |= wire::kFlagLaneBusy;
        if (!large) transport::append_frame(out_, h, bytes);
      }
      Unanswered& u = inflight_[{call.id(), start}];
      u.size = size;
      u.count = count;
      inflight_chunks_.store(inflight_.size(), std::memory_order_relaxed);
      inflight_bytes_ += size;
      u.objects = std::move(objects);
      u.lent = std::move(lent);
      u.again = keep;
      u.lane = lane;
      if ((keep || lane) && !large) u.payload.emplace(std::move(payload));
    }
    if (!by_lane.empty() && !lane_.send_bytes(by_lane)) {
      // Its worker is gone (the router will say so): the chunk goes to the router now.
      std::lock_guard<std::mutex> lock(pump_.mu());
      lane_chunk_.reset();
      lane_busy_ = false;
      auto it = inflight_.find({call.id(), start});
      if (it != inflight_.end() && it->second.payload) {
        it->second.lane = false;
        transport::append_frame(out_, h, std::string_view(it->second.payload->data(), it->second.payload->size()));
        if (!keep) it->second.payload.reset();
      }
    }
    if (!by_lane.empty()) {
      sent = flush_locked();
    } else if (large) {
      sent = flush_locked() && conn_ && conn_.send(h, bytes);
      if (keep) {
        std::lock_guard<std::mutex> lock(pump_.mu());
        auto it = inflight_.find({call.id(), start});
        if (it != inflight_.end()) it->second.payload.emplace(std::move(payload));
      }
    } else if (out_.size() >= kBatchBytes) {
      sent = flush_locked();
    }
  }
  if (!sent) {
    // Stopped under us: this thread hears it now, with the reason the pool's other
    // callers get. Otherwise the router died: the pump notices (its pidfd) and either
    // hands this chunk to a new router or fails it (heal_router).
    std::string why = stop_reason();
    if (!why.empty()) throw PoolBroken(why);
  }
}


PoolCore::AnsweredBuffers::~AnsweredBuffers() { Segment::recycle_buffers(reuse); }

void PoolCore::release_chunk(std::uint64_t call_id, std::uint64_t start,
                             AnsweredBuffers* answered) {
  auto it = inflight_.find({call_id, start});
  if (it == inflight_.end()) return;
  if (answered != nullptr) {
    auto& to = it->second.resent ? answered->free : answered->reuse;
    for (auto& use : it->second.lent) to.push_back(std::move(use));
    for (auto& object : it->second.objects) answered->objects.push_back(std::move(object));
  }
  inflight_bytes_ -= it->second.size;
  inflight_.erase(it);
  inflight_chunks_.store(inflight_.size(), std::memory_order_relaxed);
  if (lane_chunk_ && *lane_chunk_ == std::make_pair(call_id, start)) lane_chunk_.reset();
}

void PoolCore::release_call(std::uint64_t call_id) {
  if (lane_chunk_ && lane_chunk_->first == call_id) lane_chunk_.reset();
  auto it = inflight_.lower_bound({call_id, 0});
  while (it != inflight_.end() && it->first.first == call_id) {
    inflight_bytes_ -= it->second.size;
    it = inflight_.erase(it);
  }
  inflight_chunks_.store(inflight_.size(), std::memory_order_relaxed);
}

void PoolCore::abandon_call(CallBase& call) {
  wire::Cancel cancel{call.id()};
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    cancel.on_lane = lane_chunk_ && lane_chunk_->first == call.id();
    release_call(call.id());  // the router drops what it still queues
    if (calls_.erase(call.id()) == 0) return;
  }
  send(cancel.header(), {});
  pump_.notify();
}

bool PoolCore::wait(const std::function<bool()>& ready, Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(pump_.mu());
  if (ready()) {
    if (!finished_.empty()) fire_finished(lock);
    return true;
  }
  // Nobody waits on chunks still in this process's buffer (a submitter that did not
  // flush would wait forever for their answers). Only a wait that waits: the
  // submitter's window check comes here for every chunk it buffers.
  lock.unlock();
  flush();
  lock.lock();
  // Pumps even when the deadline has passed: with no background thread, a non-blocking
  // check (ready(), wait_for(0)) must still collect what arrived. Callbacks of futures
  // finished meanwhile run here, with the pump released (they may wait themselves).
  return pump_.wait_between(
      lock, ready, deadline, [this] { return !finished_.empty(); },
      [this](std::unique_lock<std::mutex>& lk) {
        fire_finished(lk);
        lk.lock();
      });
}

void PoolCore::turn(Clock::time_point deadline) {
  // Frames read with an earlier one (with the WELCOME, say) are handled first; if
  // there were any, the waiters look at what they did before anybody waits.
  bool broken = false;
  std::string why;
  if (dispatch_buffered(&broken, &why)) return;
  // A result is often tens of microseconds away: wait awake for a moment first, while
  // few chunks are out (a caller waiting on an answer); bulk work leaves the CPU to
  // the workers. At most a second at a time: the waiters' predicates are looked at
  // again.
  const bool spin = inflight_chunks_.load(std::memory_order_relaxed) <= static_cast<std::size_t>(processes_);
  loop_->run_once(std::min(deadline, Clock::now() + std::chrono::seconds(1)), spin);
}

bool PoolCore::dispatch_buffered(bool* broken, std::string* why) {
  wire::Header h;
  std::string_view header_bytes, payload;
  bool handled = false;
  for (;;) {
    const auto got = conn_.next(h, header_bytes, payload, why);
    if (got == transport::Reader::Next::kFrame) {
      dispatch(h, payload, conn_.reader());
      // Objects of a result no call adopted (a late answer, an item that failed to
      // decode) are let go now, not with the next frame, which may never come.
      conn_.reader().frame_fds().reset();
      handled = true;
    } else if (got == transport::Reader::Next::kBadFrame) {
      logger().warn("pool: dropped a malformed message from the router: {}", *why);
    } else {
      *broken = got == transport::Reader::Next::kBroken;
      return handled;
    }
  }
}

void PoolCore::read_router() {
  if (router_closed_) return;
  const auto fill = conn_.fill();
  bool broken = false;
  std::string why;
  dispatch_buffered(&broken, &why);
  std::string lost;
  if (broken) {
    // The stream cannot be resynchronised: nothing more can arrive on it.
    lost = "Pool is broken: the router sent a malformed message (" + why + ")";
  } else if (fill == transport::Reader::Fill::kClosed) {
    lost = "Pool is broken: the router closed its connection";
  }
  if (lost.empty()) return;
  router_closed_ = true;
  loop_->set_events(conn_watch_, 0);
  // A router that is exiting says why (its pidfd); one that lives on can reach no call.
  bool exiting = !router_watched_;
  if (router_watched_) {
    transport::Loop ending;
    ending.watch(router_.pidfd(), POLLIN, [&](short) { exiting = true; });
    ending.run_once(Clock::now() + std::chrono::milliseconds(100));
  }
  if (!exiting) {
    logger().error("pool: {}", lost);
    fail_all(std::make_exception_ptr(PoolBroken(lost)));
  }
}

std::string PoolCore::stop_reason() {
  std::lock_guard<std::mutex> lock(pump_.mu());
  return stop_reason_;
}

void PoolCore::check_router_exit() {
  const pid_t pid = router_.pid();
  auto status = router_.reap(false);
  if (!status) return;
  router_reaped();
  std::string why = stop_reason();
  if (why.empty()) {
    const std::string death = spawning::describe(*status);
    why = heal_router(pid, death);
    if (why.empty()) return;
  }
  fail_all(std::make_exception_ptr(PoolBroken(why)));
}

std::string PoolCore::heal_router(pid_t pid, const std::string& death) {
  const std::string router = "the pool's router process (pid " + std::to_string(pid) + ") " + death;
  // What it wrote before dying is still in the connection: those chunks are answered.
  for (int reads = 0; !router_closed_ && reads < 1 << 20; ++reads) {
    const auto fill = conn_.fill();
    bool broken = false;
    std::string why;
    dispatch_buffered(&broken, &why);
    if (broken || fill != transport::Reader::Fill::kData) break;
  }
  // Its workers die with it: what the lane's worker wrote is answered; a lane chunk
  // without an answer goes as the router's chunks go (again, or failed).
  drain_lane();
  close_lane();
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    lane_chunk_.reset();
    for (auto& [key, u] : inflight_) u.lane = false;
  }
  if (!count_router_death()) {
    return "Pool is broken: " + router + ", its " + std::to_string(router_deaths_.size()) +
           "th router death within " + std::to_string(kRouterDeathWindow.count()) +
           " s (at most " + std::to_string(kRouterDeaths) + " are replaced)";
  }
  std::lock_guard<std::mutex> send_lock(send_mu_);
  // Frames meant for the dead router: each chunk among them is in inflight_.
  out_.clear();
  loop_->unwatch(conn_watch_);
  router_closed_ = false;
  try {
    start_router();
  } catch (const std::exception& e) {
    if (std::string why = stop_reason(); !why.empty()) return why;
    return "Pool is broken: " + router + " and a new one could not be started: " + e.what();
  }
  conn_watch_ = loop_->watch(conn_.fd(), POLLIN, [this](short) { read_router(); });
  router_watch_ = loop_->watch(router_.pidfd(), POLLIN, [this](short) { check_router_exit(); });
  loop_->set_cold(router_watch_);  // its death may wait for the end of a spin
  router_watched_ = true;
  logger().warn("pool: {}; a new router (pid {}) takes over with new workers", router, router_.pid());
  resend_unanswered(pid, death);
  return "";
}

void PoolCore::resend_unanswered(pid_t dead_router, const std::string& death) {
  // The kept chunks go again, in order; the calls of the others fail, naming their items.
  std::vector<std::pair<wire::Header, std::string_view>> again;
  std::map<std::uint64_t, std::vector<std::uint64_t>> lost;     // call -> items
  std::vector<std::pair<std::shared_ptr<CallBase>, std::exception_ptr>> failed;
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    for (auto it = inflight_.begin(); it != inflight_.end();) {
      const auto [call_id, start] = it->first;
      Unanswered& u = it->second;
      auto call = calls_.find(call_id);
      if (call != calls_.end() && u.payload && u.again) {
        u.resent = true;  // the dead router's worker may still be decoding it
        const TaskEntry& task = call->second->task();
        again.emplace_back(wire::Submit{call_id, start, u.count, task.pure, task.name}.header(),
                           std::string_view(u.payload->data(), u.payload->size()));
        ++it;
        continue;
      }
      if (call != calls_.end()) {
        auto& items = lost[call_id];
        for (std::uint32_t i = 0; i < u.count; ++i) items.push_back(start + i);
      }
      inflight_bytes_ -= u.size;
      it = inflight_.erase(it);
    }
    inflight_chunks_.store(inflight_.size(), std::memory_order_relaxed);
    for (auto& [call_id, items] : lost) {
      auto call = calls_.find(call_id);
      failed.emplace_back(call->second, std::make_exception_ptr(RouterLost(
                                            std::string(call->second->task().name),
                                            std::move(items), dead_router, death)));
      calls_.erase(call);
    }
  }
  for (auto& [call, error] : failed) call->accept_failure(error);
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    for (auto& [call, error] : failed) finished_locked(call);
    // A CANCEL the dead router did not acknowledge needs no answer: the new one never
    // had the cancelled call's chunks (it was forgotten here, so none went again).
    ++router_epoch_;
  }
  // The chunks stay kept until answered, so their payloads stay where they are while
  // this writes them: only answers remove them, and only this thread dispatches answers.
  std::string batch;
  bool sent = true;
  for (const auto& [h, payload] : again) {
    if (payload.size() >= kBatchBytes / 4) {
      sent = sent && (batch.empty() || conn_.send_bytes(batch)) && conn_.send(h, payload);
      batch.clear();
    } else {
      transport::append_frame(batch, h, payload);
    }
  }
  if (sent && !batch.empty()) sent = conn_.send_bytes(batch);
  // Not sent: the new router died too, which its pidfd reports.
  if (!again.empty() || !failed.empty()) {
    logger().warn("pool: {} unanswered chunk(s) sent to the new router; {} call(s) failed with "
                  "RouterLost",
                  again.size(), failed.size());
  }
  pump_.notify();
}

void PoolCore::router_reaped() {
  // Its pidfd is closed with the reap: the Loop must not wait on it any more.
  if (router_watched_) loop_->unwatch(router_watch_);
  router_watched_ = false;
}

namespace {

// What a POOL_ERROR says.
std::string pool_error_text(std::string_view payload) {
  try {
    return detail::decode_error(payload.data(), payload.size()).message;
  } catch (const std::exception& e) {
    return std::string("(its router's report could not be decoded: ") + e.what() + ")";
  }
}

// A POOL_ERROR for one call: the pool is broken, or the router refused a chunk of the
// call that it could not read (mpx::DecodeError; the pool itself is fine).
std::exception_ptr call_error(std::string_view payload) {
  try {
    const detail::ErrorInfo e = detail::decode_error(payload.data(), payload.size());
    if (e.type == "mpx::DecodeError") return std::make_exception_ptr(DecodeError(e.message));
  } catch (const std::exception&) {
  }
  return std::make_exception_ptr(PoolBroken(pool_error_text(payload)));
}

}  // namespace

void PoolCore::read_lane() {
  if (!lane_watched_) return;
  const auto fill = lane_.fill();
  const bool intact = dispatch_lane_frames();
  // A lane that ended is let go; what its chunk became, the router says (LOST,
  // RESUBMIT, LANE_END).
  if (!intact || fill == transport::Reader::Fill::kClosed) close_lane();
}

bool PoolCore::dispatch_lane_frames() {
  for (;;) {
    wire::Header h;
    std::string_view header_bytes, payload;
    std::string why;
    const auto got = lane_.next(h, header_bytes, payload, &why);
    if (got == transport::Reader::Next::kNone) return true;
    if (got == transport::Reader::Next::kFrame && h.type == wire::Type::kResult) {
      dispatch(h, payload, lane_.reader());
      lane_.reader().frame_fds().reset();
      lane_answered();
      continue;
    }
    // Only its worker writes to a lane, and only whole RESULTs: anything else is a bug,
    // and what it meant cannot be known. The lane's call fails, naming why, rather than
    // wait for an answer that may have been this (the worker lives on: no LANE_END).
    if (got == transport::Reader::Next::kFrame) why = std::string("it brought a ") + wire::type_name(h.type);
    logger().error("pool: the lane broke: {}", why);
    fail_lane_chunk("the lane to its worker broke (" + why + ")");
    return false;
  }
}

void PoolCore::lane_answered() {
  bool tell;
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    tell = lane_busy_ && !inflight_.empty();
    lane_busy_ = false;
  }
  if (tell) send(wire::LaneFree().header(), {});
}

void PoolCore::fail_lane_chunk(const std::string& why) {
  std::shared_ptr<CallBase> call;
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    if (!lane_chunk_) return;
    const auto [call_id, start] = *lane_chunk_;
    release_chunk(call_id, start);
    auto it = calls_.find(call_id);
    if (it == calls_.end()) return;
    call = it->second;
    calls_.erase(it);
  }
  call->accept_failure(std::make_exception_ptr(
      DecodeError("task '" + std::string(call->task().name) + "': " + why + "; the call failed")));
  std::lock_guard<std::mutex> lock(pump_.mu());
  finished_locked(call);
  pump_.notify();
}

void PoolCore::drain_lane() {
  while (lane_watched_) {
    const auto fill = lane_.fill();
    if (!dispatch_lane_frames() || fill == transport::Reader::Fill::kClosed) {
      close_lane();
      return;
    }
    if (fill != transport::Reader::Fill::kData) return;
  }
}

void PoolCore::close_lane() {
  if (lane_watched_) {
    loop_->unwatch(lane_watch_);
    lane_watched_ = false;
  }
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    lane_busy_ = false;  // no chunk goes on it any more; the router learns it with the next SUBMIT
  }
  std::lock_guard<std::mutex> send_lock(send_mu_);
  lane_.close();
}

void PoolCore::open_lane(const wire::Header& h, transport::Reader& from) {
  auto& fds = from.frame_fds().get();
  if (fds.empty() || fds[0] < 0) {
    logger().warn("pool: a LANE came without its descriptor");
    return;
  }
  // The router opens one only after the last one's LANE_END: nothing waits on this one.
  close_lane();
  {
    std::lock_guard<std::mutex> send_lock(send_mu_);
    lane_ = transport::Connection(fds[0]);
    fds[0] = -1;
  }
  lane_dropped_fds_seen_ = 0;
  lane_watch_ = loop_->watch(lane_.fd(), POLLIN, [this](short) { read_lane(); });
  lane_watched_ = true;
  logger().debug("pool: a lane to worker pid {}", wire::Lane::from(h).pid);
}

void PoolCore::resubmit_lane_chunk(std::uint64_t call_id, std::uint64_t start, std::int32_t attempts) {
  std::lock_guard<std::mutex> send_lock(send_mu_);
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    auto it = inflight_.find({call_id, start});
    auto call = calls_.find(call_id);
    if (it == inflight_.end() || !it->second.lane || !it->second.payload || call == calls_.end()) return;
    if (lane_chunk_ && *lane_chunk_ == std::make_pair(call_id, start)) lane_chunk_.reset();
    Unanswered& u = it->second;
    u.lane = false;
    const TaskEntry& task = call->second->task();
    wire::Submit submit{call_id, start, u.count, task.pure, task.name};
    submit.attempts = attempts;
    transport::append_frame(out_, submit.header(), std::string_view(u.payload->data(), u.payload->size()));
    if (!u.again) u.payload.reset();
  }
  flush_locked();  // not sent: the router died, and its successor gets the chunk (or it fails)
}

void PoolCore::dispatch(const wire::Header& h, std::string_view payload, transport::Reader& from) {
  switch (h.type) {
    case wire::Type::kLane:
      open_lane(h, from);
      return;
    case wire::Type::kLaneEnd: {
      // Its worker is gone: what it answered is in the lane; a lane chunk still
      // unanswered never started (the router reported the one that did), and goes to
      // the router, free.
      drain_lane();
      close_lane();
      std::optional<std::pair<std::uint64_t, std::uint64_t>> left;
      {
        std::lock_guard<std::mutex> lock(pump_.mu());
        left = lane_chunk_;
      }
      if (left) resubmit_lane_chunk(left->first, left->second, 0);
      return;
    }
    case wire::Type::kResubmit: {
      const auto again = wire::Resubmit::from(h);
      drain_lane();  // its result may have come after all
      resubmit_lane_chunk(again.call_id, again.start, again.attempts);
      return;
    }
    case wire::Type::kLost: {
      bool on_lane;
      {
        std::lock_guard<std::mutex> lock(pump_.mu());
        on_lane = lane_chunk_ && lane_chunk_->first == h.call_id;
      }
      if (on_lane) drain_lane();  // its result may have come after all
      break;
    }
    default:
      break;
  }
  if (h.type == wire::Type::kWelcome) {
    std::lock_guard<std::mutex> lock(pump_.mu());
    serving_ = static_cast<int>(wire::Welcome::from(h).workers);
    return;
  }
  if (h.type == wire::Type::kCancel) {  // the router's acknowledgement of our CANCEL
    std::lock_guard<std::mutex> lock(pump_.mu());
    cancel_acks_.insert(h.call_id);
    pump_.notify();
    return;
  }
  if (h.type == wire::Type::kPoolError && wire::PoolError::from(h).call_id == 0) {
    fail_all(std::make_exception_ptr(PoolBroken("Pool is broken: " + pool_error_text(payload))));
    return;
  }
  // A LOST payload, decoded once; unreadable: the whole call fails.
  std::optional<wire::LostChunks> lost;
  std::string unreadable;
  if (h.type == wire::Type::kLost) {
    try {
      lost = wire::decode_lost(payload);
    } catch (const std::exception& e) {
      unreadable = e.what();
    }
  }
  std::shared_ptr<CallBase> call;
  // A chunk answered by its worker (a result, or the worker's death) was decoded by it:
  // its argument buffers are reused once its results, which may be in them, are read.
  AnsweredBuffers answered;
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    // Whatever the call's state, an answered chunk leaves the backpressure window.
    if (h.type == wire::Type::kResult) {
      release_chunk(h.call_id, h.start, &answered);
    } else if (h.type == wire::Type::kLost && lost) {
      for (const auto& range : lost->ranges) release_chunk(h.call_id, range.first, &answered);
    } else if (h.type == wire::Type::kLost || h.type == wire::Type::kPoolError) {
      release_call(h.call_id);
    }
    auto it = calls_.find(h.call_id);
    if (it == calls_.end()) {  // a late answer for a call that already finished
      pump_.notify();          // it may have opened the window for a submitter
      return;
    }
    call = it->second;
  }
  bool done = false;
  switch (h.type) {
    case wire::Type::kResult: {
      const auto result = wire::Result::from(h);
      // Results that came as objects are mapped from the descriptors that came with
      // the frame.
      transport::Fds& fds = from.frame_fds();
      std::size_t& dropped_seen = &from == &conn_.reader() ? dropped_fds_seen_ : lane_dropped_fds_seen_;
      if (fds.size() < from.frame_fds_expected() || from.dropped_fds() > dropped_seen) {
        dropped_seen = from.dropped_fds();
        logger().error("pool: objects of results of task '{}' did not arrive: the kernel dropped "
                       "their descriptors{}; those items fail",
                       call->task().name, spawning::descriptor_advice(EMFILE));
      }
      detail::AttachedObjects attached(fds.get());
      done = call->accept_results(result.start, result.count, payload.data(), payload.size(),
                                  result.has_errors, result.pid);
      break;
    }
    case wire::Type::kLost: {
      const auto header = wire::Lost::from(h);
      if (std::string why = stop_reason(); !why.empty()) {
        // Workers killed by our own terminate/shutdown: the stop is the reason.
        call->accept_failure(std::make_exception_ptr(PoolBroken(why)));
        done = true;
        break;
      }
      std::vector<std::uint64_t> indices;
      try {
        if (!lost) throw DecodeError(unreadable);
        for (const auto& [start, count] : lost->ranges) {
          if (start + count > call->total() || start + count < start) throw DecodeError("range");
          for (std::uint32_t i = 0; i < count; ++i) indices.push_back(start + i);
        }
        if (indices.empty()) throw DecodeError("no tasks named");
      } catch (const std::exception& e) {
        // Which tasks died is unknown: the whole call fails rather than wait forever.
        call->accept_failure(std::make_exception_ptr(DecodeError(
            "task '" + std::string(call->task().name) + "': worker pid " + std::to_string(header.pid) +
            " died and the router's report of the lost tasks was unreadable (" + e.what() + ")")));
        done = true;
        break;
      }
      std::sort(indices.begin(), indices.end());
      done = call->accept_lost(indices, header.pid, lost->error.message, header.timed_out);
      break;
    }
    case wire::Type::kPoolError:
      call->accept_failure(call_error(payload));
      done = true;
      break;
    default:
      logger().warn("pool: dropped unexpected {} from the router", wire::type_name(h.type));
      return;
  }
  if (done) {
    // A call that failed fast is not cancelled: as in Python, its remaining items still
    // run (their side effects happen) and their results are dropped on arrival.
    std::lock_guard<std::mutex> lock(pump_.mu());
    calls_.erase(h.call_id);
    finished_locked(call);
  }
  pump_.notify();
}

void PoolCore::finished_locked(const std::shared_ptr<CallBase>& call) {
  Completion* c = call->completion_or_null();
  if (c != nullptr && !c->settle()) finished_.push_back(call);
}

void PoolCore::fire_finished(std::unique_lock<std::mutex>& lock) {
  std::vector<std::shared_ptr<CallBase>> finished;
  finished.swap(finished_);
  lock.unlock();
  for (const auto& call : finished) call->completion_or_null()->fire();
}

void PoolCore::fail_all(std::exception_ptr error) {
  std::unordered_map<std::uint64_t, std::shared_ptr<CallBase>> calls;
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    if (state_ != State::kBroken) {
      state_ = State::kBroken;
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        broken_reason_ = e.what();
      }
    }
    calls.swap(calls_);
    inflight_.clear();
    lane_chunk_.reset();
    lane_busy_ = false;
    inflight_bytes_ = 0;
    inflight_chunks_.store(0, std::memory_order_relaxed);
  }
  for (auto& [id, call] : calls) call->accept_failure(error);
  std::lock_guard<std::mutex> lock(pump_.mu());
  for (auto& [id, call] : calls) finished_locked(call);
  pump_.notify();
}

bool PoolCore::cancel(CallBase& call, bool kill_running) {
  const auto error = std::make_exception_ptr(CancelledError(
      "task '" + std::string(call.task().name) + "' (call " + std::to_string(call.id()) +
      ", " + std::to_string(call.total()) + " item(s)) was cancelled"));
  bool on_lane = false;
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    if (!call.cancel_locked(error)) return false;
    on_lane = lane_chunk_ && lane_chunk_->first == call.id();
    release_call(call.id());
    calls_.erase(call.id());
  }
  // Chunks the router still queues are dropped; those in workers are skipped, or
  // stopped with their worker (kill_running), which is replaced.
  const std::uint64_t id = call.id();
  std::uint64_t epoch;
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    epoch = router_epoch_;
  }
  if (send(wire::Cancel{id, kill_running, /*want_ack=*/true, on_lane}.header(), {})) {
    // Until the router confirms, a worker might still start a chunk of the call. Bounded:
    // a router that does not answer (stopped) is for the pump to find out about.
    wait(
        [&] {
          return state_ == State::kBroken || router_epoch_ != epoch || cancel_acks_.count(id) != 0;
        },
        Clock::now() + std::chrono::seconds(10));
  }
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    cancel_acks_.erase(id);
  }
  pump_.notify();
  call.completion_or_null()->fire();
  return true;
}

void PoolCore::shutdown_pool(bool cancel_futures) {
  close();
  if (cancel_futures) {
    std::vector<std::shared_ptr<CallBase>> pending;
    {
      std::lock_guard<std::mutex> lock(pump_.mu());
      for (const auto& [id, call] : calls_) pending.push_back(call);
    }
    // As Python's Executor.shutdown(cancel_futures=True): what has not started never
    // will; running tasks finish (their results are dropped).
    for (const auto& call : pending) cancel(*call, /*kill_running=*/false);
  }
  join();
}

void PoolCore::close() {
  std::lock_guard<std::mutex> lock(pump_.mu());
  if (state_ == State::kRunning) state_ = State::kClosed;
}

void PoolCore::join() {
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    if (state_ == State::kRunning) throw Error("Pool::join: call close() or terminate() first");
  }
  std::vector<std::shared_ptr<CallBase>> open_ended;
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    for (const auto& [id, call] : calls_) {
      if (call->feed_rest()) open_ended.push_back(call);
    }
  }
  for (const auto& call : open_ended) call->feed_rest()();
  wait([this] { return calls_.empty(); }, Clock::time_point::max());
  stop_router(wire::Type::kShutdown, std::chrono::seconds(5), kJoined);
}

void PoolCore::terminate() {
  stop_router(wire::Type::kTerminate, std::chrono::seconds(2), kTerminated);
}

void PoolCore::shutdown() {
  stop_router(wire::Type::kShutdown, std::chrono::seconds(3), kShutDown);
}

bool PoolCore::ask_router(wire::Type how) {
  if (!router_.running() || router_.is_stopped()) return false;
  // Another thread may hold the connection for a long write (a large argument to a
  // router that does not read): a stop never waits for it.
  // (Polled rather than std::timed_mutex: ThreadSanitizer does not see the clocklock
  // that timed_mutex uses, and reports its unlock as one of an unlocked mutex.)
  std::unique_lock<std::mutex> lock(send_mu_, std::defer_lock);
  for (int tries = 0; !lock.try_lock(); ++tries) {
    if (tries == 20) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!conn_) return false;
  std::string bytes = std::move(out_);
  out_.clear();
  wire::Header h;
  h.type = how;  // SHUTDOWN or TERMINATE
  transport::append_frame(bytes, h, {});
  return conn_.send_bytes(bytes, Clock::now() + std::chrono::milliseconds(50));
}

void PoolCore::stop_router(wire::Type how, std::chrono::milliseconds grace, const char* why) {
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    if (stop_reason_.empty()) stop_reason_ = why;
  }
  // terminate() kills at once: the workers die with the router (their parent-death
  // signal). A graceful stop is asked for; a router that cannot be asked promptly (it
  // is stopped, its connection is busy or full) is killed instead, so that no stop
  // waits on what the router or another thread does. Either happens before the pump
  // is held: a thread pumping results wakes up when the router exits.
  const bool asked = how != wire::Type::kTerminate && ask_router(how);
  if (!asked) router_.kill();
  {
    std::unique_lock<std::mutex> lock(pump_.mu());
    pump_.hold(lock);
  }
  if (router_.running()) {
    router_.reap_within(grace);
    router_reaped();
  }
  close_lane();
  {
    std::lock_guard<std::mutex> lock(pump_.mu());
    pump_.release();
  }
  fail_all(std::make_exception_ptr(PoolBroken(why)));
  std::unique_lock<std::mutex> lock(pump_.mu());
  fire_finished(lock);
}

// ---- What mpx/detail/call.h's templates call (mpx::Pool's submissions and waits) ----

void pool_begin_call(PoolCore& core, const std::shared_ptr<CallBase>& call) { core.begin_call(call); }

void pool_send_chunk(PoolCore& core, CallBase& call, std::uint64_t start, std::uint32_t count,
                     Buffer&& payload, Pins&& objects, std::size_t object_bytes,
                     std::vector<std::shared_ptr<Segment>>&& lent) {
  core.send_chunk(call, start, count, std::move(payload), std::move(objects), object_bytes,
                  std::move(lent));
}

std::size_t pool_object_threshold(const PoolCore& core) { return core.object_threshold(); }

bool pool_wait(PoolCore& core, const std::function<bool()>& ready, Clock::time_point deadline) {
  return core.wait(ready, deadline);
}

// Remote workers count too (a pool that listens may have no local ones).
int pool_processes(const PoolCore& core) { return std::max({core.processes(), core.serving(), 1}); }

void pool_abandon_call(PoolCore& core, CallBase& call) { core.abandon_call(call); }

void pool_flush(PoolCore& core) { core.flush(); }

bool pool_cancel(PoolCore& core, CallBase& call) { return core.cancel(call, /*kill_running=*/true); }

}  // namespace detail
}  // namespace mpx
