#include "framework/worker/worker.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "framework/base/heap.h"
#include "framework/transport/loop.h"
#include "framework/wire/messages.h"
#include "framework/worker/result_batch.h"
#include "framework/transport/transport.h"
#include "mpx/detail/segment.h"
#include "mpx/runtime.h"
#include "mpx/task.h"

namespace mpx {
namespace worker {
namespace {

detail::Buffer fail_all(std::uint32_t count, const std::string& type, const std::string& message) {
  detail::Buffer out;
  detail::ChunkWriter writer(out, count);
  for (std::uint32_t i = 0; i < count; ++i) writer.fail(i, type, message);
  writer.finish();
  return out;
}

// After the reader ran out of memory on a frame: drops the frame's bytes and, if it
// was a chunk, answers it with every item failed as std::bad_alloc, saying why. false
// when the stream cannot go on.
template <class Send>
bool fail_unreadable_chunk(transport::Connection& router, Send& send, std::uint64_t memory_limit,
                           wire::WorkerShared& shared) {
  std::string why;
  const auto dropped = router.discard_frame(&why);
  if (!dropped) {
    logger().error("worker: out of memory reading a message from the router, and {}", why);
    return false;
  }
  const auto h = wire::decode(dropped->first.data(), dropped->first.size(), &why);
  // An answer names every item: for a chunk of very many small items, that answer
  // would not fit either, and the worker dies as it would have.
  constexpr std::uint32_t kMaxItemsToFail = 1 << 16;
  if (!h || h->type != wire::Type::kTask || h->count > kMaxItemsToFail) {
    logger().error("worker: out of memory reading a {} message of {} bytes",
                   h ? wire::type_name(h->type) : "malformed", dropped->second);
    return false;
  }
  if (!shared.take_up_next()) return true;  // taken back: another worker has it
  const auto task = wire::Task::from(*h);
  const std::string limit =
      memory_limit > 0 ? "the pool's worker_memory_limit of " + std::to_string(memory_limit) + " bytes"
                       : "this worker's available memory";
  const std::string message =
      "task '" + std::string(task.task) + "': the chunk's arguments (" +
      std::to_string(dropped->second) + " bytes for " + std::to_string(task.count) +
      " item(s)) do not fit in " + limit +
      " (the worker must hold them and their decoded values at once); pass smaller "
      "arguments or a smaller chunksize, or raise worker_memory_limit";
  logger().error("{}", message);
  detail::Buffer out = fail_all(task.count, "std::bad_alloc", message);
  const wire::Result result{task.call_id, task.start, task.count, static_cast<std::int32_t>(getpid()),
                            task.count > 0};
  send(result.header(), std::string_view(out.data(), out.size()));
  return true;
}

}  // namespace

detail::Buffer run_task(const wire::Task& task, const char* payload, std::size_t size,
                        bool* has_errors) {
  const std::string name(task.task);
  std::string why;
  const detail::TaskEntry* entry = detail::find_task(name, &why);
  if (entry == nullptr) {
    *has_errors = task.count > 0;
    return fail_all(task.count, "mpx::NotRegistered", why);
  }
  // A reservation guess only; the header's count is not trusted for sizing.
  detail::Buffer out(std::min<std::size_t>(size, 1 << 20) + 64);
  try {
    entry->run_chunk(*entry, payload, size, task.count, out, *has_errors);
    return out;
  } catch (const std::exception& e) {
    // Not an array of the announced length: run_chunk throws before running anything.
    *has_errors = task.count > 0;
    return fail_all(task.count, "mpx::DecodeError",
                    "task '" + name + "': " + e.what());
  }
}

int run_worker(const spawning::Bootstrap& boot) {
  // The router is single-threaded, so the parent-death signal is reliable here.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  spawning::raise_descriptor_limit();
  const int parent_fd = spawning::open_parent_or_exit(boot.parent);
  const pid_t pid = getpid();
  // The bootstrap is "<router endpoint>\n<routing id>"; the router accepts this
  // worker's READY only from that (unguessable) id.
  const auto newline = boot.payload.find('\n');
  if (newline == std::string::npos) {
    logger().error("worker: malformed bootstrap");
    return 1;
  }
  // The page this worker shares with its router (wire::WorkerShared): which chunk runs,
  // and which calls were cancelled.
  wire::WorkerShared* shared = nullptr;
  static wire::WorkerShared unshared{};
  if (boot.share_fd >= 0) {
    void* map = ::mmap(nullptr, sizeof(wire::WorkerShared), PROT_READ | PROT_WRITE, MAP_SHARED,
                       boot.share_fd, 0);
    ::close(boot.share_fd);
    // The router reads and writes this page as this worker's (running marks, cancels,
    // chunks taken back): a worker without it would run chunks the router gave to
    // another. It ends instead, and the router replaces it.
    if (map == MAP_FAILED) {
      logger().error("worker: cannot map the page it shares with its router: {}", std::strerror(errno));
      return 1;
    }
    shared = static_cast<wire::WorkerShared*>(map);
  }
  if (shared == nullptr) shared = &unshared;
  std::atomic<std::uint64_t>* running = &shared->running;
  std::string why;
  const auto endpoint = transport::Endpoint::parse(boot.payload.substr(0, newline), &why);
  if (!endpoint) {
    logger().error("worker: malformed bootstrap: {}", why);
    return 1;
  }
  const std::string id = boot.payload.substr(newline + 1);
  transport::Connection router = transport::Connection::dial(*endpoint, id);
  if (!router) {
    logger().error("worker: cannot connect to the router: {}", std::strerror(errno));
    return 1;
  }
  // Every message leaves whole, and a result is either in the router's socket buffer or
  // in the page it shares with the router (ResultBatch) before the next task starts:
  // the router gets it even if the next task kills this process. A peer gone is the
  // router gone, which the parent pidfd below also reports.
  ResultBatch batch(router, shared == &unshared ? nullptr : shared);
  auto send = [&batch](const wire::Header& h, std::string_view payload, const std::vector<int>& fds = {}) {
    batch.send(h, payload, fds);
  };
  constexpr auto kQuickTask = std::chrono::microseconds(50);
  send(wire::Ready{pid, boot.name}.header(), {});

  std::uint64_t max_message_bytes = UINT64_MAX;  // from CONFIG
  std::uint64_t memory_limit = 0;               // from CONFIG; 0: none
  std::uint64_t object_threshold = 0;           // from CONFIG; 0: results by value
  bool router_gone = false;
  bool readable = false;
  transport::Loop loop;
  loop.watch(router.fd(), POLLIN, [&](short) { readable = true; });
  loop.set_cold(loop.watch(parent_fd, POLLIN, [&](short) { router_gone = true; }));
  // The lane (wire::Lane): chunks straight from the driver, answered straight to it.
  transport::Connection lane;
  transport::Loop::Id lane_watch = 0;
  bool lane_readable = false;
  auto close_lane = [&] {
    if (!lane) return;
    loop.unwatch(lane_watch);
    lane.close();
  };
  // After a task another one often follows within microseconds (a map's next chunk,
  // a caller's next apply): wait for it awake for a moment (see transport::Spin).
  bool served = false;  // since the last wait
  base::IdleTrim idle;  // kept buffers and mappings go back once the worker idles
  // Runs a TASK that came from the router (lane: false) or by the lane, and answers it
  // where it came from.
  auto run_chunk = [&](const wire::Header& h, std::string_view payload, bool by_lane) {
    // Taken back while this worker was busy: an idle one runs it (see WorkerShared).
    if (!by_lane && !shared->take_up_next()) return;
    const auto task = wire::Task::from(h);
    bool has_errors = false;
    const auto began = std::chrono::steady_clock::now();
    if (by_lane) {
      shared->lane.received_chunks.fetch_add(1, std::memory_order_relaxed);
      shared->lane.received_items.fetch_add(task.count, std::memory_order_relaxed);
      shared->lane.bytes_in.fetch_add(payload.size(), std::memory_order_relaxed);
      // Named before the mark: a router that sees the mark finds the chunk it names.
      shared->lane_call.store(task.call_id);
      shared->lane_start.store(task.start);
      shared->lane_count.store(task.count);
      shared->lane_flags.store(h.flags);
    }
    // The lane's answers leave at once and whole, before the mark is cleared: the
    // driver reads them even if this process dies right after.
    auto answer = [&](const wire::Result& result, std::string_view bytes, const std::vector<int>& fds) {
      if (!by_lane) {
        send(result.header(), bytes, fds);
        return;
      }
      // Counted before it leaves, as the router counts a result when it forwards it: a
      // caller that has its answer finds it counted.
      shared->lane.completed_chunks.fetch_add(1, std::memory_order_relaxed);
      shared->lane.completed_items.fetch_add(result.count, std::memory_order_relaxed);
      if (result.has_errors) shared->lane.error_chunks.fetch_add(1, std::memory_order_relaxed);
      shared->lane.bytes_out.fetch_add(bytes.size(), std::memory_order_relaxed);
      const auto ns = static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - began).count());
      shared->lane.latency_sum_ns.fetch_add(ns, std::memory_order_relaxed);
      for (std::size_t b = 0; b < wire::kLatencyBuckets; ++b) {
        if (static_cast<double>(ns) <= wire::kLatencyBounds[b] * 1e9) {
          shared->lane.latency_buckets[b].fetch_add(1, std::memory_order_relaxed);
        }
      }
      shared->lane.latency_count.fetch_add(1, std::memory_order_relaxed);
      if (!lane.send(result.header(), bytes, fds)) close_lane();  // the driver let it go
    };
    // Marked running before looking for a cancel (wire::WorkerShared's handshake):
    // a chunk of a cancelled call is skipped here, or the router sees it running.
    running->store(wire::chunk_mark(task.call_id, task.start));
    if (shared->is_cancelled(task.call_id)) {
      const detail::Buffer out = fail_all(task.count, "mpx::CancelledError",
                                          "call " + std::to_string(task.call_id) +
                                              " was cancelled before this chunk started");
      answer(wire::Result{task.call_id, task.start, task.count, pid, true},
             std::string_view(out.data(), out.size()), {});
      running->store(0, std::memory_order_release);
      return;
    }
    // Large results become objects, whose memfds go with the RESULT frame: the
    // kernel holds them in flight, so they outlive this worker like the bytes do.
    detail::Pins objects;
    detail::ObjectSink sink{static_cast<std::size_t>(object_threshold), &objects};
    sink.max_objects = wire::kMaxFrameFds;
    detail::Buffer out(0);
    {
      detail::ResultObjectScope scope(sink);
      out = run_task(task, payload.data(), payload.size(), &has_errors);
    }
    const bool quick = std::chrono::steady_clock::now() - began < kQuickTask;
    if (out.size() > max_message_bytes) {
      // The router would disconnect us for it: the items fail instead.
      const std::string why = "the results of this chunk encode to " +
                              std::to_string(out.size()) +
                              " bytes, more than the pool's max_message_bytes (" +
                              std::to_string(max_message_bytes) + ")";
      out = fail_all(task.count, "mpx::Error", why);
      has_errors = true;
      objects.clear();
      sink.fds.clear();
    }
    const wire::Result result{task.call_id, task.start, task.count, pid, has_errors,
                              wire::own_fds(sink.fds.size())};
    served = quick;  // after a long task the next one is no sooner for waiting awake
    const std::string_view bytes(out.data(), out.size());
    if (!by_lane && quick && sink.fds.empty() && router.reader().frame_ready()) {
      batch.hold(result.header(), bytes);  // the next chunk is here: one write for both
    } else {
      answer(result, bytes, sink.fds);
    }
    objects.clear();  // in flight now: the kernel keeps them for the router
    // Cleared only once the result is in the router's socket buffer or in the
    // shared page: a death with the mark at 0 proves that every chunk this worker
    // still held and had not answered never started, so the router requeues them
    // free of charge.
    running->store(0, std::memory_order_release);
  };
  // What the lane brought: TASKs only. A lane the driver closed (or that broke) is
  // let go; its chunks are the router's business from then on.
  auto read_lane = [&] {
    transport::Reader::Fill fill;
    try {
      fill = lane.fill();
    } catch (const std::bad_alloc&) {
      logger().error("worker: out of memory reading from the lane");
      std::_Exit(1);  // the router reports the death; the driver submits the chunk again
    }
    for (;;) {
      wire::Header h;
      std::string_view header_bytes, payload;
      const auto got = lane.next(h, header_bytes, payload, &why);
      if (got == transport::Reader::Next::kNone) break;
      if (got == transport::Reader::Next::kFrame && h.type == wire::Type::kTask) {
        run_chunk(h, payload, true);
        if (!lane) return;
        continue;
      }
      // Only its driver writes to a lane, and only whole TASKs: this is a bug, not a
      // message to skip. The worker ends, so that its router reports the lane gone
      // and the driver sends what it waits for to the router (a lane closed by a live
      // worker would leave that call waiting).
      logger().error("worker: the lane broke: {}; ending",
                     got == transport::Reader::Next::kFrame
                         ? std::string("it brought a ") + wire::type_name(h.type)
                         : why);
      std::_Exit(1);
    }
    if (fill == transport::Reader::Fill::kClosed) close_lane();
  };
  bool worked = false;  // in the last pass: anything but a heartbeat
  for (;;) {
    // Counted once the pass is done, so that a pass that brought only a PING can trim.
    if (idle.after_wait(worked)) detail::forget_recently_opened_segments();
    worked = false;
    readable = false;
    lane_readable = false;
    loop.run_once(idle.deadline(), /*spin=*/served);
    served = false;
    if (router_gone) return 0;
    if (lane_readable && lane) {
      worked = true;
      read_lane();
    }
    if (!readable) continue;
    transport::Reader::Fill fill;
    try {
      fill = router.fill();
    } catch (const std::bad_alloc&) {
      // A chunk too large for this worker's memory (its worker_memory_limit): its items
      // fail with a reason instead of the worker dying before the chunk even starts.
      worked = true;
      if (!fail_unreadable_chunk(router, send, memory_limit, *shared)) return 1;
      continue;
    }
    for (;;) {
      wire::Header h;
      std::string_view header_bytes, payload;
      const auto got = router.next(h, header_bytes, payload, &why);
      if (got == transport::Reader::Next::kNone) {
        batch.flush();  // all read is done: what waits leaves before the worker waits
        break;
      }
      if (got != transport::Reader::Next::kFrame) {
        logger().error("worker: the router sent a malformed message: {}", why);
        return 1;
      }
      if (!wire::is_heartbeat(h.type)) worked = true;
      switch (h.type) {
        case wire::Type::kTask:
          run_chunk(h, payload, false);
          break;
        case wire::Type::kLane: {
          auto& fds = router.reader().frame_fds().get();
          if (fds.empty() || fds[0] < 0) {
            logger().warn("worker: a LANE came without its descriptor");
            break;
          }
          close_lane();
          lane = transport::Connection(fds[0]);
          fds[0] = -1;
          lane_watch = loop.watch(lane.fd(), POLLIN, [&](short) { lane_readable = true; });
          break;
        }
        case wire::Type::kConfig: {
          wire::WorkerConfig config;
          try {
            config = wire::decode_worker_config(payload);
          } catch (const std::exception& e) {
            logger().error("worker: the router sent a malformed CONFIG: {}", e.what());
            return 1;
          }
          max_message_bytes = config.max_message_bytes;
          memory_limit = config.memory_limit;
          object_threshold = config.object_threshold;
          if (memory_limit > 0) {
            const rlimit limit{static_cast<rlim_t>(memory_limit), static_cast<rlim_t>(memory_limit)};
            if (setrlimit(RLIMIT_AS, &limit) != 0) {
              logger().warn("could not set the memory limit to {} bytes: {}", memory_limit,
                            std::strerror(errno));
            }
          }
          const wire::Configured configured{pid};
          if (config.initializer.empty()) {
            send(configured.header(), {});
            break;
          }
          std::string why;
          const detail::TaskEntry* entry = detail::find_task(config.initializer, &why);
          detail::ErrorInfo error;
          if (entry == nullptr) {
            error.type = "mpx::NotRegistered";
            error.message = "initializer: " + why;
            error.pid = pid;
          } else {
            try {
              entry->run_call(*entry, config.initializer_args.data(), config.initializer_args.size());
              send(configured.header(), {});
              break;
            } catch (...) {
              error = detail::current_error();
            }
          }
          logger().error("initializer '{}' failed: {}: {}", config.initializer, error.type, error.message);
          send(wire::InitFailed{pid}.header(), detail::encode_error(error));
          break;  // the router breaks the pool and kills us
        }
        case wire::Type::kPing:
          send(wire::Pong{pid}.header(), {});
          break;
        case wire::Type::kStop:
          return 0;
        default:
          logger().warn("dropped unexpected {}", wire::type_name(h.type));
      }
    }
    if (fill == transport::Reader::Fill::kClosed) return 0;  // the router closed on us
  }
}

}  // namespace worker
}  // namespace mpx
