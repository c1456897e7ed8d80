#include "framework/router/router.h"

#include "framework/codec/fields.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <iterator>
#include <map>
#include <optional>
#include <tuple>
#include <utility>

#include <msgpack.hpp>

#include "mpx/errors.h"
#include "mpx/runtime.h"

namespace mpx {
namespace router {
namespace {

// See InFlight::free_requeues.
constexpr int kMaxFreeRequeues = 3;

using wire::Ranges;

// What a lane carried, counted as if the router had handed it out and forwarded its
// results.
void add_lane_counts(PoolStatus& s, const wire::LaneCounts& c) {
  s.submitted_chunks += c.received_chunks;
  s.submitted_items += c.received_items;
  s.bytes_in += c.bytes_in;
  s.completed_chunks += c.completed_chunks;
  s.completed_items += c.completed_items;
  s.error_chunks += c.error_chunks;
  s.bytes_out += c.bytes_out;
  s.latency_count += c.latency_count;
  s.latency_sum_s += static_cast<double>(c.latency_sum_ns) * 1e-9;
  for (std::size_t b = 0; b < wire::kLatencyBuckets && b < s.latency_buckets.size(); ++b) {
    s.latency_buckets[b] += c.latency_buckets[b];
  }
}

}  // namespace

std::string Config::encode() const { return detail::encode_fields(*this); }

Config Config::decode(const std::string& bytes) {
  Config c;
  detail::decode_fields(bytes, c, "router config");
  if (c.workers < (c.listen.empty() ? 1 : 0) || c.prefetch < 1 || c.max_retries < 0 || c.pure_retries < 0 ||
      c.task_timeout.count() < 0) {
    throw DecodeError("router config: workers (unless listening) and prefetch must be >= 1, "
                      "retries and task_timeout >= 0");
  }
  return c;
}

RouterCore::RouterCore(Config config, RouterIo& io, WorkerSupervisor& workers)
    : config_(std::move(config)), io_(io), supervisor_(workers) {
  lanes_allowed_ = config_.task_timeout.count() == 0 && config_.maxtasksperchild == 0;
}

void RouterCore::start(Clock::time_point now) {
  now_ = now;
  started_at_ = now;
  counters_.latency_buckets.assign(latency_bounds().size(), 0);
  for (int i = 0; i < config_.workers; ++i) spawn_one();
  next_tick_ = now_ + config_.heartbeat_interval;
}

void RouterCore::enter(Worker& w, State state) {
  w.state = state;
  w.since = now_;
}

void RouterCore::spawn_one(const std::string& place) {
  const std::string name = "PoolWorker-" + std::to_string(next_worker_number_++);
  WorkerSupervisor::Started started;
  try {
    started = place.empty() ? supervisor_.spawn(name) : supervisor_.spawn_at(name, place);
  } catch (const std::exception& e) {
    if (!place.empty()) {
      logger().warn("router: cannot start a worker on {}: {}", place, e.what());
      return;
    }
    break_pool(std::string("cannot start a worker: ") + e.what());
    return;
  }
  Worker& w = workers_[started.id];
  w.place = place;
  w.pid = started.pid;
  w.id = std::move(started.id);
  w.name = name;
  w.last_seen = w.last_ping = w.since = now_;
  logger().debug("router: spawned {} (pid {})", name, w.pid);
}

RouterCore::Worker* RouterCore::worker_by_id(std::string_view id) {
  auto it = workers_.find(id);
  return it == workers_.end() || it->second.state == State::kStarting ? nullptr : &it->second;
}

void RouterCore::on_client(transport::Incoming& in, Clock::time_point now) {
  now_ = now;
  const std::string_view sender = in.sender();
  if (sender.size() < 2 || sender[0] != 'R') {
    logger().warn("router: dropped {} from a peer with an unexpected routing id",
                  wire::type_name(in.header.type));
    return;
  }
  const wire::Header& h = in.header;
  switch (h.type) {
    case wire::Type::kHello: {
      clients_.emplace(sender);
      if (wire::Hello::from(h).wants_lane && lanes_allowed_) lane_wanted_.emplace(sender);
      // A local pool's count is its configuration; one that listens reports who serves.
      const int workers = config_.listen.empty() ? config_.workers : serving();
      const wire::Welcome welcome{static_cast<std::uint32_t>(workers),
                                  static_cast<std::int32_t>(getpid())};
      io_.send_client(sender, welcome.header(), transport::Message(endpoint_.data(), endpoint_.size()));
      if (broken()) send_pool_error(sender, 0, broken_reason_);
      grant_lanes();
      return;
    }
    case wire::Type::kSubmit: {
      if (stopping_) return;
      const auto submit = wire::Submit::from(h);
      std::string why;
      if (!submit.valid(std::string_view(static_cast<const char*>(in.payload.data()), in.payload.size()), &why)) {
        // Its sender waits for an answer: the call fails, naming why, rather than hang.
        // One small answer, whatever the chunk claimed (no error per announced item).
        logger().warn("router: refused {}", why);
        send_pool_error(sender, submit.call_id, "the router refused " + why, "mpx::DecodeError");
        return;
      }
      if (broken()) {
        send_pool_error(sender, submit.call_id, broken_reason_);
        return;
      }
      if (Worker* lane = lane_worker_of(sender)) lane->lane_busy = submit.lane_busy;
      ++counters_.submitted_chunks;
      counters_.submitted_items += submit.count;
      counters_.bytes_in += in.payload.size();
      InFlight what{std::string(sender), submit.call_id, submit.start, submit.count};
      what.pure = submit.pure;
      // Runs lost with a lane's worker (RESUBMIT) count against its retries.
      what.attempts = std::min(submit.attempts, retries_for(what));
      if (submit.attempts > 0) ++counters_.retried_chunks;
      queue_.push_back(Task{std::move(what), std::move(in.header_frame), std::move(in.payload)});
      dispatch();
      return;
    }
    case wire::Type::kCancel: {
      const std::string_view client = sender;
      const auto cancel = wire::Cancel::from(h);
      const std::uint64_t call_id = cancel.call_id;
      // Chunks held by workers are never run again if their worker dies; the worker
      // skips those it has not started (answering them as cancelled); one running is
      // stopped with its worker when the client asks (kill_running), else it finishes.
      for (auto& [id, w] : workers_) {
        bool holds = false;
        for (auto& f : w.in_flight) {
          if (f.call_id == call_id && f.client == client) holds = f.cancelled = true;
        }
        const bool on_lane = cancel.on_lane && w.lane_client == client;
        if ((!holds && !on_lane) || w.state == State::kStopping) continue;
        const std::optional<std::uint64_t> mark = supervisor_.cancel_call(id, call_id);
        if (!cancel.kill_running) continue;
        if (on_lane && mark && *mark != 0) {
          const std::optional<LaneChunk> lane = supervisor_.running_lane_chunk(id);
          if (lane && lane->call_id == call_id && wire::chunk_mark(lane->call_id, lane->start) == *mark) {
            w.lane_cancelled_call = call_id;
            kill_running(w, "call " + std::to_string(call_id) + " was cancelled while it ran", false);
            continue;
          }
        }
        const bool runs = std::any_of(w.in_flight.begin(), w.in_flight.end(), [&](const InFlight& f) {
          if (f.call_id != call_id || f.client != client) return false;
          // Without the shared mark, the first chunk held is presumed running.
          return mark ? *mark != 0 && wire::chunk_mark(f.call_id, f.start) == *mark
                      : &f == &w.in_flight.front();
        });
        if (runs) kill_running(w, "call " + std::to_string(call_id) + " was cancelled while it ran", false);
      }
      if (cancel.want_ack) io_.send_client(client, wire::Cancel{call_id}.header(), transport::Message());
      queue_.erase(std::remove_if(queue_.begin(), queue_.end(),
                                  [&](const Task& t) {
                                    return t.what.call_id == call_id && t.what.client == client;
                                  }),
                   queue_.end());
      return;
    }
    case wire::Type::kLaneFree:
      // Chunks held back from that worker for its lane's may go to it now.
      if (Worker* lane = lane_worker_of(sender)) lane->lane_busy = false;
      dispatch();
      return;
    case wire::Type::kShutdown:
      stop_all(false, now);
      return;
    case wire::Type::kTerminate:
      stop_all(true, now);
      return;
    default:
      logger().warn("router: dropped unexpected {} from a client", wire::type_name(h.type));
  }
}

void RouterCore::on_worker(transport::Incoming& in, Clock::time_point now) {
  now_ = now;
  const wire::Header& h = in.header;
  if (h.type == wire::Type::kReady) {
    // A worker is known by the identity it connected with; a READY from any other
    // peer, or a second one, is not taken.
    const auto ready = wire::Ready::from(h);
    auto it = workers_.find(in.sender());
    if (it == workers_.end() || it->second.state != State::kStarting) {
      // A shutdown kills the workers still starting; one may have sent READY before it
      // died, and the frame is read after its exit took it off the table. Expected then.
      if (stopping_) {
        logger().debug("router: dropped READY from pid {}, stopped while it started", ready.pid);
      } else {
        logger().warn("router: dropped READY from unknown worker pid {}", ready.pid);
      }
      return;
    }
    Worker& w = it->second;
    if (w.pid != 0 && ready.pid != w.pid) {
      logger().warn("router: dropped READY for {} (pid {}) naming another pid, {}", w.name, w.pid,
                    ready.pid);
      return;
    }
    if (w.pid == 0) w.pid = ready.pid;  // a worker whose supervisor did not know it
    enter(w, State::kReady);
    w.last_seen = w.last_ping = now;
    if (stopping_) {
      supervisor_.kill(w.id);
      return;
    }
    wire::WorkerConfig config;
    config.initializer = config_.initializer;
    config.initializer_args = config_.initializer_args;
    config.max_message_bytes = config_.max_message_bytes;
    config.memory_limit = config_.worker_memory_limit;
    config.object_threshold = w.place.empty() ? config_.result_object_threshold : 0;
    const std::string payload = wire::encode(config);
    io_.send_worker(w.id, wire::Config().header(), transport::Message(payload.data(), payload.size()));
    dispatch();
    return;
  }
  Worker* w = worker_by_id(in.sender());
  if (w == nullptr) {
    logger().warn("router: dropped {} from an unknown worker", wire::type_name(h.type));
    return;
  }
  w->last_seen = now;
  switch (h.type) {
    case wire::Type::kResult: {
      auto it = std::find_if(w->in_flight.begin(), w->in_flight.end(), [&](const InFlight& f) {
        return f.call_id == h.call_id && f.start == h.start;
      });
      if (it == w->in_flight.end() || it->count != h.count) {
        logger().warn("router: dropped a RESULT {} did not hold (call {}, start {})", w->name,
                      h.call_id, h.start);
        return;
      }
      // With more chunks queued behind this one, the worker was busy since its last
      // result: the gap is this chunk's service time.
      if (w->in_flight.size() >= 2 && w->last_result.time_since_epoch().count() != 0) {
        const double gap = std::chrono::duration<double, std::micro>(now - w->last_result).count();
        w->service_us = w->service_us < 0 ? gap : 0.8 * w->service_us + 0.2 * gap;
      }
      w->last_result = now;
      ++w->chunks_done;
      w->items_done += h.count;
      ++counters_.completed_chunks;
      counters_.completed_items += h.count;
      counters_.bytes_out += in.payload.size();
      if (h.flags & wire::kFlagHasErrors) ++counters_.error_chunks;
      if (it == w->in_flight.begin() && !counters_.latency_buckets.empty()) {
        // Service time of the chunk that ran (prefetched ones are timed from when they
        // became first).
        const double s = std::chrono::duration<double>(now - it->started).count();
        counters_.latency_sum_s += s;
        ++counters_.latency_count;
        const auto& bounds = latency_bounds();
        for (std::size_t b = 0; b < bounds.size(); ++b) {
          if (s <= bounds[b]) ++counters_.latency_buckets[b];
        }
      }
      const std::string client = std::move(it->client);
      const bool was_running = it == w->in_flight.begin();
      w->in_flight.erase(it);
      if (was_running && !w->in_flight.empty()) w->in_flight.front().started = now;
      if (in.fds.size() != in.fds_expected) {
        // Some of the result's objects did not come (the kernel drops descriptors past
        // this process's RLIMIT_NOFILE): the header says what is passed on, so the
        // client's reader takes exactly those, and the items whose object is missing
        // fail there, naming it.
        logger().warn("router: a RESULT from {} counts {} objects, {} arrived (the router is at its "
                      "descriptor limit?); their items fail in the driver",
                      w->name, in.fds_expected, in.fds.size());
        wire::Header fixed = h;
        fixed.fds = wire::own_fds(in.fds.size());
        in.header_frame = transport::header_message(fixed);
      }
      io_.forward_client(client, std::move(in.header_frame), std::move(in.payload), std::move(in.fds));
      retire_if_done(*w);
      dispatch();
      return;
    }
    case wire::Type::kInitFailed: {
      // The router decodes this payload (an ErrorInfo, from a worker it trusts as far as
      // its identity), never a task's.
      std::string detail = "(undecodable error)";
      try {
        const wire::ErrorInfo e = detail::decode_error(in.payload.data<char>(), in.payload.size());
        detail = e.type + ": " + e.message;
      } catch (const std::exception&) {
      }
      break_pool("initializer '" + config_.initializer + "' raised " + detail + " in " + w->name +
                 " (pid " + std::to_string(w->pid) + ")");
      return;
    }
    case wire::Type::kPong:
      return;
    case wire::Type::kConfigured:
      w->configured = true;
      startup_failures_ = 0;
      startup_kills_ = 0;
      dispatch();
      report_workers();
      grant_lanes();
      return;
    default:
      logger().warn("router: dropped unexpected {} from {}", wire::type_name(h.type), w->name);
  }
}

void RouterCore::on_unsent_results(std::string_view id, std::string_view frames, Clock::time_point now) {
  if (frames.empty()) return;
  Worker* w = worker_by_id(id);
  if (w == nullptr) return;
  transport::Reader reader;
  reader.put(frames);
  std::size_t taken = 0;
  for (;;) {
    transport::Incoming in;
    std::string why;
    const auto got = reader.next(in, &why);
    if (got == transport::Reader::Next::kNone) break;
    if (got != transport::Reader::Next::kFrame) {
      logger().warn("router: {}'s unsent results end in a malformed frame: {}", w->name, why);
      break;
    }
    // A frame written before the worker died was read from its socket already.
    const bool held = in.header.type == wire::Type::kResult &&
                      std::any_of(w->in_flight.begin(), w->in_flight.end(), [&](const InFlight& f) {
                        return f.call_id == in.header.call_id && f.start == in.header.start;
                      });
    if (!held) continue;
    in.from = std::string(id);
    on_worker(in, now);
    ++taken;
    w = worker_by_id(id);  // on_worker may retire it
    if (w == nullptr) break;
  }
  if (taken > 0) logger().debug("router: {} results that {} had not written when it ended", taken, id);
}

void RouterCore::on_worker_exit(std::string_view id, int wait_status,
                                std::optional<std::uint64_t> running_mark, Clock::time_point now,
                                const LaneReport& lane) {
  now_ = now;
  auto it = workers_.find(id);
  if (it == workers_.end()) return;
  Worker w = std::move(it->second);
  workers_.erase(it);
  add_lane_counts(counters_, lane.counts);
  const std::string lane_client = w.lane_client;
  if (!lane_client.empty() && lane.running) {
    // The lane chunk it died running: accounted for as the chunk that ran, ahead of any
    // it held from the router (none of which started).
    InFlight f{lane_client, lane.running->call_id, lane.running->start, lane.running->count};
    f.pure = lane.running->pure;
    f.lane = true;
    f.cancelled = w.lane_cancelled_call != 0 && w.lane_cancelled_call == f.call_id;
    f.started = now;
    w.in_flight.push_front(std::move(f));
  }
  const pid_t pid = w.pid;
  const std::string how = wait_status >= 0 ? spawning::describe(wait_status) : std::string("ended");
  finalize(std::move(w), how, wait_status, running_mark);
  if (!lane_client.empty()) {
    // After what finalize said of its lane chunk: the client submits again what it still
    // waits for from the lane (it had not started).
    lanes_.erase(lane_client);
    io_.send_client(lane_client, wire::LaneEnd{static_cast<std::int32_t>(pid)}.header(), transport::Message());
    grant_lanes();
  }
  report_workers();
}

RouterCore::Worker* RouterCore::lane_worker_of(std::string_view client) {
  auto it = lanes_.find(client);
  if (it == lanes_.end()) return nullptr;
  auto w = workers_.find(it->second);
  return w == workers_.end() ? nullptr : &w->second;
}

void RouterCore::grant_lanes() {
  if (stopping_ || broken()) return;
  for (const std::string& client : lane_wanted_) {
    if (lanes_.count(client) != 0) continue;
    for (auto& [id, w] : workers_) {
      if (w.state != State::kReady || !w.configured || !w.place.empty() || !w.lane_client.empty()) continue;
      if (io_.open_lane(id, client, w.pid)) {
        w.lane_client = client;
        lanes_.emplace(client, id);
      }
      break;
    }
  }
}

int RouterCore::serving() const {
  int n = 0;
  for (const auto& [id, w] : workers_) n += w.configured && w.state == State::kReady;
  return n;
}

void RouterCore::report_workers() {
  if (config_.listen.empty()) return;  // the count does not change
  const int n = serving();
  if (n == reported_workers_) return;
  reported_workers_ = n;
  const wire::Welcome welcome{static_cast<std::uint32_t>(n), static_cast<std::int32_t>(getpid())};
  for (const std::string& c : clients_) {
    io_.send_client(c, welcome.header(), transport::Message(endpoint_.data(), endpoint_.size()));
  }
}

void RouterCore::add_host(const std::string& place, int slots, Clock::time_point now) {
  now_ = now;
  if (stopping_ || broken()) return;
  hosts_.insert(place);
  for (int i = 0; i < slots; ++i) spawn_one(place);
}

void RouterCore::lose_host(const std::string& place, const std::string& reason, Clock::time_point now) {
  now_ = now;
  hosts_.erase(place);
  std::vector<std::string> ids;
  for (const auto& [id, w] : workers_) {
    if (w.place == place) ids.push_back(id);
  }
  // Every worker there ended now; the running mark is unknown (the first chunk each
  // held is presumed running). The host is gone, so none is replaced there.
  for (const std::string& id : ids) {
    auto it = workers_.find(id);
    Worker w = std::move(it->second);
    workers_.erase(it);
    w.death_cause = "host";
    finalize(std::move(w), reason, -1, std::nullopt);
  }
  report_workers();
  warn_if_waiting_for_hosts();
}

void RouterCore::warn_if_waiting_for_hosts() {
  // Only a pool of hosts alone has none at times: local workers are always replaced.
  if (config_.workers > 0 || !workers_.empty() || queue_.empty() || stopping_ || broken()) {
    waiting_for_hosts_since_ = Clock::time_point();
    return;
  }
  if (waiting_for_hosts_since_ == Clock::time_point()) {
    waiting_for_hosts_since_ = now_;
  } else if (now_ < next_host_warning_) {
    return;
  }
  next_host_warning_ = now_ + kHostWarningEvery;
  const auto waited = std::chrono::duration_cast<std::chrono::seconds>(now_ - waiting_for_hosts_since_);
  logger().warn("router: no workers: {} chunk(s) wait for a node agent to join{} (start agents with "
                "--mpx-node={}; a call's get(timeout) bounds its wait)",
                queue_.size(),
                waited.count() > 0 ? " (for " + std::to_string(waited.count()) + " s now)" : std::string(),
                endpoint_.empty() ? config_.listen : endpoint_);
  next_tick_ = std::min(next_tick_, next_host_warning_);
}

void RouterCore::finalize(Worker w, const std::string& exit_how, int wait_status,
                          std::optional<std::uint64_t> mark) {
  const pid_t pid = w.pid;
  const std::string how =
      w.killed_because.empty() ? exit_how : "was killed: " + w.killed_because;
  if (!w.death_cause.empty()) {
    ++counters_.worker_deaths[w.death_cause];
  } else if (w.state != State::kStopping && !stopping_ && !broken()) {
    const bool signalled = wait_status >= 0 && WIFSIGNALED(wait_status);
    ++counters_.worker_deaths[signalled ? "signal" : "exit"];
  }
  if (!w.in_flight.empty()) {
    logger().warn("router: {} (pid {}) {} holding {} chunk(s)", w.name, pid, how,
                  w.in_flight.size());
    // The chunk that ran (it timed out) has failed already: the others held were not
    // running, and this death was its doing, not theirs.
    bool runner_failed = false;
    if (w.timed_out && w.in_flight.front().call_id == w.timed_out_chunk.first &&
        w.in_flight.front().start == w.timed_out_chunk.second) {
      // The chunk that ran over its budget (still held: its result did not come after
      // all) fails as timed out unless it may run again; the ones queued behind it
      // follow the usual rules below.
      InFlight& first = w.in_flight.front();
      if (first.cancelled || first.attempts >= retries_for(first) || stopping_ || broken()) {
        std::vector<InFlight> timed_out;
        timed_out.push_back(std::move(first));
        fail_lost(timed_out, pid, w.killed_because, /*timed_out=*/true);
        w.in_flight.erase(w.in_flight.begin());
        runner_failed = true;
      }
    }
    std::vector<InFlight> lost;
    // Back to front, so that requeued chunks keep their order at the queue's head. Only
    // the chunk that was running spends an attempt; retryable chunks queued behind it
    // go back for free, so that a task that crashes its worker does not use up the
    // retries of its neighbours, and so do chunks before it that had finished but
    // whose results died in flight with the worker. The worker's shared mark says which
    // one ran; without it, the first one held (a worker runs its chunks in order).
    const InFlight* running = w.in_flight.empty() || runner_failed ? nullptr : &w.in_flight.front();
    if (mark && !runner_failed) {
      running = nullptr;
      for (const InFlight& f : w.in_flight) {
        if (*mark != 0 && wire::chunk_mark(f.call_id, f.start) == *mark) running = &f;
      }
    }
    // Which chunk killed the worker, kept past the moves below.
    std::optional<std::pair<std::uint64_t, std::uint64_t>> culprit;
    std::string culprit_items;
    if (running) {
      culprit.emplace(running->call_id, running->start);
      culprit_items = running->count == 1 ? "item " + std::to_string(running->start)
                                          : "items " + std::to_string(running->start) + "-" +
                                                std::to_string(running->start + running->count - 1);
    }
    // Chunks held before the running one had finished (a worker runs its chunks in
    // order and writes each result whole before it clears its mark and starts the
    // next), so their results were read unless the router dropped them: they ran, and
    // are charged like it.
    const auto running_at = std::find_if(w.in_flight.begin(), w.in_flight.end(),
                                         [&](const InFlight& f) { return &f == running; });
    for (auto it = w.in_flight.rbegin(); it != w.in_flight.rend(); ++it) {
      // Only chunks that ran are charged an attempt. A chunk that never
      // started goes back to the queue free, whatever its retries (0 by default): a
      // death while another chunk ran was that chunk's doing. A death while no chunk
      // ran (between tasks: reading, decoding, or a kill from outside) charges nobody,
      // at most kMaxFreeRequeues times per chunk, so that a chunk that kills its worker
      // before it starts (too large for its memory limit) cannot respawn workers forever.
      bool spends = false;
      if (running != nullptr && std::next(it).base() <= running_at) {
        spends = true;
      } else if (running == nullptr && !runner_failed) {
        if (it->free_requeues >= kMaxFreeRequeues) {
          spends = true;
        } else {
          ++it->free_requeues;
        }
      }
      if (!it->cancelled && !stopping_ && !broken() &&
          (!spends || it->attempts < retries_for(*it))) {
        logger().info("router: running call {} items {}-{} again{}", it->call_id, it->start,
                      it->start + it->count - 1,
                      spends ? " (attempt " + std::to_string(it->attempts + 2) + " of " +
                                   std::to_string(retries_for(*it) + 1) + ")"
                             : std::string(" (not the chunk that was running)"));
        if (it->lane) {
          // Its client holds the only copy.
          const wire::Resubmit again{it->call_id, it->start, it->count, it->attempts + (spends ? 1 : 0)};
          if (spends) ++counters_.retried_chunks;
          io_.send_client(it->client, again.header(), transport::Message());
          continue;
        }
        Task task{std::move(*it), transport::Message(), transport::Message()};
        task.header_frame = std::move(task.what.retry_header);
        task.payload = std::move(task.what.retry_payload);
        if (spends) {
          ++task.what.attempts;
          ++counters_.retried_chunks;
        }
        queue_.push_front(std::move(task));
      } else {
        lost.push_back(std::move(*it));
      }
    }
    std::reverse(lost.begin(), lost.end());  // report in the order they were sent
    // The chunk that was running is reported first and on its own: a caller that keeps
    // the first error (map, a pipeline) names the item that killed the worker, not a
    // neighbour that had finished or not started and was lost with it.
    // (Not when the pool stops: the callers then hear of the stop, not of the deaths.)
    if (stopping_ || broken()) culprit.reset();
    auto is_culprit = [&](const InFlight& f) {
      return culprit && f.call_id == culprit->first && f.start == culprit->second;
    };
    auto first_other = std::stable_partition(lost.begin(), lost.end(), is_culprit);
    if (first_other != lost.begin()) {
      fail_lost(std::vector<InFlight>(std::make_move_iterator(lost.begin()),
                                      std::make_move_iterator(first_other)),
                pid, how);
    }
    if (first_other != lost.end()) {
      fail_lost(std::vector<InFlight>(std::make_move_iterator(first_other),
                                      std::make_move_iterator(lost.end())),
                pid, culprit ? how + " while running " + culprit_items : how);
    }
  } else if (w.state != State::kStopping && !stopping_) {
    logger().warn("router: {} (pid {}) {}", w.name, pid, how);
  }
  if (stopping_ || broken()) return;
  // A worker of a host that is gone is not replaced (there or elsewhere: a host that
  // joins brings its own workers).
  if (!w.place.empty() && !hosts_.count(w.place)) {
    dispatch();
    return;
  }
  // Work goes only to configured workers, so one that dies unconfigured died starting
  // or in its initializer (a crash there would otherwise respawn workers forever).
  // A SIGKILL the router did not send came from outside (an operator, a chaos test,
  // the OOM killer): a few in a row say little about the program, so they are allowed
  // more often before the pool gives up. And while another worker serves, deaths of
  // starting ones cannot be a crash loop of the whole program: the pool goes on.
  const bool unconfigured = !w.configured && w.state != State::kStopping;
  const bool killed_from_outside = wait_status >= 0 && WIFSIGNALED(wait_status) &&
                                   WTERMSIG(wait_status) == SIGKILL && w.killed_because.empty();
  if (unconfigured) {
    const int failures = killed_from_outside ? ++startup_kills_ : ++startup_failures_;
    const int limit = killed_from_outside ? kStartupKillsFactor * config_.max_startup_failures
                                          : config_.max_startup_failures;
    const bool someone_serves = std::any_of(workers_.begin(), workers_.end(), [](const auto& e) {
      return e.second.configured && e.second.state == State::kReady;
    });
    if (failures >= limit && !someone_serves) {
      break_pool("workers keep dying before they are ready (starting, or in the initializer); "
                 "the last one (pid " + std::to_string(pid) + ") " + how);
      return;
    }
  }
  // A retiring worker's replacement was started when it retired.
  if (w.state != State::kStopping && w.state != State::kRetiring) {
    ++counters_.worker_restarts;
    spawn_one(w.place);
  }
  dispatch();
}

void RouterCore::fail_lost(const std::vector<InFlight>& lost, pid_t pid, const std::string& reason,
                           bool timed_out) {
  std::map<std::pair<std::string, std::uint64_t>, Ranges> by_call;
  for (const InFlight& f : lost) {
    by_call[{f.client, f.call_id}].emplace_back(f.start, f.count);
    counters_.lost_items += f.count;
  }
  for (auto& [key, ranges] : by_call) {
    const wire::Lost lost{key.second, static_cast<std::int32_t>(pid), timed_out};
    wire::LostChunks chunks;
    chunks.error.type = timed_out ? "mpx::TimeoutError" : "mpx::WorkerLost";
    chunks.error.message = reason;
    chunks.error.pid = static_cast<std::int32_t>(pid);
    chunks.ranges = std::move(ranges);
    const std::string payload = wire::encode(chunks);
    io_.send_client(key.first, lost.header(), transport::Message(payload.data(), payload.size()));
  }
}

void RouterCore::send_pool_error(std::string_view client, std::uint64_t call_id,
                                 const std::string& reason, const char* type) {
  detail::ErrorInfo error;
  error.type = type;
  error.message = reason;
  error.pid = static_cast<std::int32_t>(getpid());
  const std::string payload = detail::encode_error(error);
  io_.send_client(client, wire::PoolError{call_id}.header(), transport::Message(payload.data(), payload.size()));
}

void RouterCore::break_pool(const std::string& reason) {
  if (broken()) return;
  broken_reason_ = reason;
  logger().error("router: pool broken: {}", reason);
  for (const std::string& c : clients_) send_pool_error(c, 0, reason);
  queue_.clear();
  for (auto& [id, w] : workers_) {
    w.in_flight.clear();  // their clients were just told the whole pool failed
    supervisor_.kill(id);
  }
}

std::size_t RouterCore::credit(const Worker& w) const {
  const auto floor = static_cast<std::size_t>(config_.prefetch);
  const auto ceiling = static_cast<std::size_t>(std::max(config_.prefetch, config_.max_prefetch));
  if (w.service_us < 0) return floor;
  const double wanted = static_cast<double>(config_.credit_window.count()) / std::max(w.service_us, 1.0);
  return std::clamp(static_cast<std::size_t>(wanted), floor, ceiling);
}

bool RouterCore::is_held_up(const Worker& w) const {
  return !w.in_flight.empty() && now_ - w.in_flight.front().started >= kTakeBackAfter;
}

void RouterCore::dispatch() {
  while (!queue_.empty() && !stopping_) {
    // The least loaded worker with credit, a local one held up by a long chunk last:
    // what it is given waits for that chunk, or is taken back. Not a remote one: its
    // first chunk often looks held up behind the link (results come back in bursts),
    // and ranking such workers last made a chunksize=1 map over two namespace hosts
    // fall to 10k items/s in half of the runs (39k otherwise).
    Worker* best = nullptr;
    std::pair<bool, std::size_t> best_rank;
    for (auto& [id, w] : workers_) {
      if (w.state != State::kReady || !w.configured) continue;
      const std::size_t load = w.in_flight.size() + lane_load(w);
      if (load >= credit(w)) continue;
      const std::pair<bool, std::size_t> rank{w.place.empty() && is_held_up(w), load};
      if (best == nullptr || rank < best_rank) {
        best = &w;
        best_rank = rank;
      }
    }
    if (best == nullptr) {
      if (workers_.empty()) warn_if_waiting_for_hosts();
      break;
    }
    Task task = std::move(queue_.front());
    queue_.pop_front();
    transport::set_type(task.header_frame, wire::Type::kTask);
    // Kept (shared, no byte copy) until the chunk is answered: a chunk that never
    // started when its worker died goes out again whatever its retries.
    task.what.retry_header = task.header_frame;
    task.what.retry_payload = task.payload;
    if (best->in_flight.empty()) {
      task.what.started = now_;
      if (config_.task_timeout.count() > 0) {
        next_tick_ = std::min(next_tick_, now_ + chunk_budget(config_.task_timeout, task.what.count));
      }
    }
    task.what.position = best->sent++;
    best->in_flight.push_back(std::move(task.what));
    ++best->assigned;
    io_.forward_worker(best->id, std::move(task.header_frame), std::move(task.payload));
    if (config_.maxtasksperchild && best->assigned >= config_.maxtasksperchild) {
      enter(*best, State::kRetiring);
      spawn_one(std::string(best->place));
      // spawn_one may rehash nothing (std::map): best stays valid.
    }
  }
  take_back_waiting();
}

void RouterCore::take_back_waiting() {
  if (taking_back_ || stopping_ || broken() || !queue_.empty()) return;
  const bool someone_idles = std::any_of(workers_.begin(), workers_.end(), [&](const auto& entry) {
    const Worker& w = entry.second;
    return w.state == State::kReady && w.configured && w.in_flight.empty() && lane_load(w) == 0;
  });
  if (!someone_idles) return;
  for (auto& [id, w] : workers_) {
    if (w.state != State::kReady && w.state != State::kRetiring) continue;
    // A worker on another host shares no page with this router: what it holds stays.
    if (!w.place.empty()) continue;
    // Chunks wait in w: behind its first, or all of them behind its lane's chunk, which
    // its client says is out, or its shared page says runs (another client's chunks
    // may have come first). The page is read last: the worker writes that line with
    // every chunk it runs.
    if (w.in_flight.empty()) continue;
    if (w.in_flight.size() == 1 && !w.lane_busy &&
        (w.lane_client.empty() || !is_held_up(w) || !supervisor_.running_lane_chunk(id))) {
      continue;
    }
    if (!is_held_up(w)) {
      next_tick_ = std::min(next_tick_, w.in_flight.front().started + kTakeBackAfter);
      continue;
    }
    const std::optional<std::uint64_t> from = supervisor_.take_back(id, w.sent);
    if (!from || *from >= w.sent) continue;
    // in_flight is in the order sent: the chunks taken back are its last ones.
    const auto first = std::find_if(w.in_flight.begin(), w.in_flight.end(), [&](const InFlight& f) {
      return f.position != kNotSent && f.position >= *from;
    });
    std::size_t taken = 0;
    for (auto it = first; it != w.in_flight.end(); ++it) {
      if (it->cancelled) continue;  // its call is cancelled: dropped, as from the queue
      transport::Message header = it->retry_header, payload = it->retry_payload;
      queue_.push_back(Task{std::move(*it), std::move(header), std::move(payload)});
      --w.assigned;
      ++taken;
    }
    w.in_flight.erase(first, w.in_flight.end());
    counters_.taken_back_chunks += taken;
    logger().debug("router: took back {} chunk(s) waiting behind the long one {} (pid {}) runs",
                   taken, w.name, w.pid);
    // A retiring worker left holding nothing (it had started none of its chunks) is
    // told to stop now: no result of its would tell later.
    retire_if_done(w);
  }
  if (queue_.empty()) return;
  taking_back_ = true;
  dispatch();
  taking_back_ = false;
}

void RouterCore::retire_if_done(Worker& w) {
  if (w.state != State::kRetiring || !w.in_flight.empty()) return;
  enter(w, State::kStopping);
  io_.send_worker(w.id, wire::Stop().header(), transport::Message());
}

void RouterCore::stop_all(bool kill_now, Clock::time_point now) {
  if (!stopping_) {
    stopping_ = true;
    stop_deadline_ = now + config_.stop_grace;
    next_tick_ = std::min(next_tick_, stop_deadline_);
  }
  queue_.clear();
  for (auto& [id, w] : workers_) {
    if (kill_now || w.state == State::kStarting) {
      supervisor_.kill(id);
    } else if (w.state != State::kStopping) {
      enter(w, State::kStopping);
      io_.send_worker(w.id, wire::Stop().header(), transport::Message());
    }
  }
}

void RouterCore::terminate() {
  now_ = Clock::now();
  stop_all(true, now_);
}

void RouterCore::on_tick(Clock::time_point now) {
  now_ = now;
  if (stopping_) {
    if (now >= stop_deadline_) {
      for (auto& [id, w] : workers_) supervisor_.kill(id);
      stop_deadline_ = now + config_.stop_grace;
    }
    next_tick_ = std::min(now + config_.heartbeat_interval, stop_deadline_);
    return;
  }
  Clock::time_point next_deadline = now + config_.heartbeat_interval;
  for (auto& [id, w] : workers_) {
    // A worker that never announced itself, or ignores STOP, is killed: its exit
    // then follows the usual path (a start-up failure, or an expected stop).
    if (w.state == State::kStarting && now - w.since > config_.startup_timeout) {
      logger().warn("router: {} (pid {}) did not start within {} ms; killing it", w.name, w.pid,
                    config_.startup_timeout.count());
      w.killed_because = "did not start within " + std::to_string(config_.startup_timeout.count()) +
                         " ms";
      w.death_cause = "startup";
      supervisor_.kill(id);
      w.since = now;  // kill again only after another timeout
      continue;
    }
    if (w.state == State::kStopping && now - w.since > config_.stop_grace) {
      supervisor_.kill(id);
      w.since = now;
      continue;
    }
    const bool busy = !w.configured || !w.in_flight.empty() || runs_lane_chunk(w);
    if (busy && (w.state == State::kReady || w.state == State::kRetiring)) {
      // A busy worker cannot answer pings: watch its state and its time budget instead,
      // and count its silence from now on only (a lane chunk's end reaches the driver,
      // not this router, so nothing else would tell it the worker was just busy).
      w.last_seen = now;
      if (!supervisor_.is_stopped(id)) {
        w.stopped_since = Clock::time_point();
      } else if (w.stopped_since == Clock::time_point()) {
        w.stopped_since = now;
      } else if (now - w.stopped_since > config_.heartbeat_timeout) {
        kill_running(w, "stopped (not running) for more than " +
                            std::to_string(config_.heartbeat_timeout.count()) + " ms",
                     false);
        continue;
      }
      if (config_.task_timeout.count() > 0 && !w.in_flight.empty()) {
        const InFlight& f = w.in_flight.front();
        const auto budget = chunk_budget(config_.task_timeout, f.count);
        if (now - f.started > budget) {
          kill_running(w, "call " + std::to_string(f.call_id) + " items " +
                              std::to_string(f.start) + "-" + std::to_string(f.start + f.count - 1) +
                              " ran longer than " + std::to_string(config_.task_timeout.count()) +
                              " ms per task",
                       true);
          continue;
        }
        next_deadline = std::min(next_deadline, f.started + budget);
      }
      continue;
    }
    if (w.state != State::kReady || busy) continue;
    if (now - w.last_seen > config_.heartbeat_timeout) {
      logger().warn("router: {} (pid {}) stopped answering heartbeats; replacing it", w.name, w.pid);
      w.death_cause = "heartbeat";
      ++counters_.worker_restarts;
      supervisor_.kill(id);
      enter(w, State::kStopping);  // its exit must not count as a start-up failure
      spawn_one(std::string(w.place));
    } else if (now - w.last_seen >= config_.heartbeat_interval &&
               now - w.last_ping >= config_.heartbeat_interval) {
      io_.send_worker(w.id, wire::Ping().header(), transport::Message());
      w.last_ping = now;
    }
  }
  next_tick_ = std::max(next_deadline, now + std::chrono::milliseconds(1));
  take_back_waiting();
  warn_if_waiting_for_hosts();
}

void RouterCore::kill_running(Worker& w, std::string why, bool timed_out) {
  logger().warn("router: {} (pid {}) {}; killing and replacing it", w.name, w.pid, why);
  w.killed_because = std::move(why);
  w.timed_out = timed_out;
  w.death_cause = timed_out ? "timeout" : "stopped";
  ++counters_.worker_restarts;
  if (timed_out && !w.in_flight.empty()) {
    w.timed_out_chunk = {w.in_flight.front().call_id, w.in_flight.front().start};
  }
  supervisor_.kill(w.id);
  // Its exit (pidfd) finalizes it: what it held is retried or reported. It gets no
  // more work, and its replacement starts now.
  enter(w, State::kStopping);
  spawn_one(std::string(w.place));
}

PoolStatus RouterCore::status(Clock::time_point now) const {
  PoolStatus s = counters_;
  s.workers_wanted = config_.workers;
  s.worker_memory_limit = config_.worker_memory_limit;
  s.broken = broken_reason_;
  s.uptime_s = std::chrono::duration<double>(now - started_at_).count();
  s.queued_chunks = queue_.size();
  s.in_flight_chunks = outstanding() - queue_.size();
  for (const auto& [id, w] : workers_) {
    WorkerStatus ws;
    // What its lane carried counts as if handed out here.
    const wire::LaneCounts c = w.lane_client.empty() ? wire::LaneCounts{} : supervisor_.lane_counts(id);
    const std::uint64_t lane_held = c.received_chunks - std::min(c.received_chunks, c.completed_chunks);
    add_lane_counts(s, c);
    s.in_flight_chunks += lane_held;
    ws.pid = w.pid;
    ws.host = w.place;
    ws.name = w.name;
    switch (w.state) {
      case State::kStarting: ws.state = "starting"; break;
      case State::kReady:
        ws.state = !w.configured ? "initializing" : w.in_flight.empty() && lane_held == 0 ? "idle" : "busy";
        break;
      case State::kRetiring: ws.state = "retiring"; break;
      case State::kStopping: ws.state = "stopping"; break;
    }
    ws.held = static_cast<std::uint32_t>(w.in_flight.size() + lane_held);
    if (!w.in_flight.empty()) {
      const InFlight& f = w.in_flight.front();
      ws.call_id = f.call_id;
      ws.start = f.start;
      ws.count = f.count;
      // The task's name travels in the chunk's header, kept for a retry: decoded here,
      // when someone asks, never on the hot path.
      std::string why;
      if (auto h = wire::decode(f.retry_header.data<char>(), f.retry_header.size(), &why)) {
        ws.task = std::string(h->name);
      }
    }
    ws.chunks_done = w.chunks_done + c.completed_chunks;
    ws.items_done = w.items_done + c.completed_items;
    // A remote worker's pid is its host's: this host's /proc knows nothing of it.
    if (w.pid > 0 && w.place.empty()) ws.rss_bytes = rss_bytes(w.pid);
    s.workers.push_back(std::move(ws));
  }
  return s;
}

}  // namespace router
}  // namespace mpx
