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

#include "framework/transport/transport.h"
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
bool fail_unreadable_chunk(transport::Reader& reader, int fd, Send& send,
                           std::uint64_t memory_limit) {
  std::string why;
  const auto dropped = reader.discard_frame(fd, &why);
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
  const std::string limit =
      memory_limit > 0 ? "the pool's worker_memory_limit of " + std::to_string(memory_limit) + " bytes"
                       : "this worker's available memory";
  const std::string message =
      "task '" + std::string(h->name) + "': the chunk's arguments (" +
      std::to_string(dropped->second) + " bytes for " + std::to_string(h->count) +
      " item(s)) do not fit in " + limit +
      " (the worker must hold them and their decoded values at once); pass smaller "
      "arguments or a smaller chunksize, or raise worker_memory_limit";
  logger().error("{}", message);
  detail::Buffer out = fail_all(h->count, "std::bad_alloc", message);
  wire::Header result;
  result.type = wire::Type::kResult;
  result.call_id = h->call_id;
  result.start = h->start;
  result.count = h->count;
  result.pid = getpid();
  result.flags = h->count > 0 ? wire::kFlagHasErrors : 0;
  send(result, std::string_view(out.data(), out.size()));
  return true;
}

}  // namespace

detail::Buffer run_task(const wire::Header& task, const char* payload, std::size_t size,
                        bool* has_errors) {
  const std::string name(task.name);
  const detail::TaskEntry* entry = detail::find_task(name);
  if (entry == nullptr) {
    *has_errors = task.count > 0;
    return fail_all(task.count, "mpx::NotRegistered",
                    "no task named '" + name + "' is registered in this program");
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
  const int parent_fd = spawning::open_parent_or_exit(boot.parent);
  const pid_t pid = getpid();
  // The bootstrap is "<router endpoint>\n<routing id>"; the router accepts this
  // worker's READY only from that (unguessable) id.
  const auto newline = boot.payload.find('\n');
  if (newline == std::string::npos) {
    logger().error("worker: malformed bootstrap");
    return 1;
  }
  // The word this worker shares with its router (see router_main.cc): which chunk runs.
  std::atomic<std::uint64_t>* running = nullptr;
  static std::atomic<std::uint64_t> unshared{0};
  if (boot.share_fd >= 0) {
    void* map = ::mmap(nullptr, sizeof(std::uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED,
                       boot.share_fd, 0);
    ::close(boot.share_fd);
    if (map != MAP_FAILED) running = static_cast<std::atomic<std::uint64_t>*>(map);
  }
  if (running == nullptr) running = &unshared;
  const std::string endpoint = boot.payload.substr(0, newline);
  const std::string id = boot.payload.substr(newline + 1);
  const int fd = transport::connect_as(endpoint, id);
  if (fd < 0) {
    logger().error("worker: cannot connect to the router: {}", std::strerror(errno));
    return 1;
  }
  // Every message leaves whole before the next task starts: a result, once a task is
  // done, is in the router's socket buffer even if the next task kills this process.
  // A peer gone is the router gone, which the parent pidfd below also reports.
  auto send = [fd](const wire::Header& h, std::string_view payload) {
    if (!transport::write_frame(fd, h, payload)) std::_Exit(0);
  };
  constexpr auto kQuickTask = std::chrono::microseconds(50);
  wire::Header ready;
  ready.type = wire::Type::kReady;
  ready.pid = pid;
  ready.name = boot.name;
  send(ready, {});

  transport::Reader reader;
  std::string why;
  std::uint64_t max_message_bytes = UINT64_MAX;  // from CONFIG
  std::uint64_t memory_limit = 0;               // from CONFIG; 0: none
  pollfd items[] = {{fd, POLLIN, 0}, {parent_fd, POLLIN, 0}};
  // After a task another one often follows within microseconds (a map's next chunk,
  // a caller's next apply): wait for it awake for a moment (see transport::Spin).
  transport::Spin spin;
  bool served = false;  // since the last wait
  for (;;) {
    if (served) {
      transport::poll_spinning(items, 2, std::chrono::milliseconds(-1), spin);
    } else {
      transport::poll(items, 2, std::chrono::milliseconds(-1));
    }
    served = false;
    if (items[1].revents & POLLIN) return 0;  // router gone
    transport::Reader::Fill fill;
    try {
      fill = reader.fill(fd);
    } catch (const std::bad_alloc&) {
      // A chunk too large for this worker's memory (its worker_memory_limit): its items
      // fail with a reason instead of the worker dying before the chunk even starts.
      if (!fail_unreadable_chunk(reader, fd, send, memory_limit)) return 1;
      continue;
    }
    for (;;) {
      wire::Header h;
      std::string_view header_bytes, payload;
      const auto got = reader.next(h, header_bytes, payload, &why);
      if (got == transport::Reader::Next::kNone) break;
      if (got != transport::Reader::Next::kFrame) {
        logger().error("worker: the router sent a malformed message: {}", why);
        return 1;
      }
      switch (h.type) {
        case wire::Type::kTask: {
          bool has_errors = false;
          const auto began = std::chrono::steady_clock::now();
          running->store(wire::chunk_mark(h.call_id, h.start), std::memory_order_release);
          detail::Buffer out = run_task(h, payload.data(), payload.size(), &has_errors);
          const bool quick = std::chrono::steady_clock::now() - began < kQuickTask;
          if (out.size() > max_message_bytes) {
            // The router would disconnect us for it: the items fail instead.
            const std::string why = "the results of this chunk encode to " +
                                    std::to_string(out.size()) +
                                    " bytes, more than the pool's max_message_bytes (" +
                                    std::to_string(max_message_bytes) + ")";
            out = fail_all(h.count, "mpx::Error", why);
            has_errors = true;
          }
          wire::Header result;
          result.type = wire::Type::kResult;
          result.call_id = h.call_id;
          result.start = h.start;
          result.count = h.count;
          result.pid = pid;
          result.flags = has_errors ? wire::kFlagHasErrors : 0;
          served = quick;  // after a long task the next one is no sooner for waiting awake
          send(result, std::string_view(out.data(), out.size()));
          // Cleared only once the result is in the router's socket buffer: a death with
          // the mark at 0 proves that every chunk this worker still held never started,
          // so the router requeues them free of charge.
          running->store(0, std::memory_order_release);
          break;
        }
        case wire::Type::kConfig: {
          if (h.start > 0) max_message_bytes = h.start;
          memory_limit = h.call_id;
          if (h.call_id > 0) {
            const rlimit limit{static_cast<rlim_t>(h.call_id), static_cast<rlim_t>(h.call_id)};
            if (setrlimit(RLIMIT_AS, &limit) != 0) {
              logger().warn("could not set the memory limit to {} bytes: {}", h.call_id,
                            std::strerror(errno));
            }
          }
          wire::Header configured;
          configured.type = wire::Type::kConfigured;
          configured.pid = pid;
          if (h.name.empty()) {
            send(configured, {});
            break;
          }
          const std::string name(h.name);
          const detail::TaskEntry* entry = detail::find_task(name);
          std::pair<std::string, std::string> error;
          if (entry == nullptr) {
            error = {"mpx::NotRegistered", "no task named '" + name + "' is registered"};
          } else {
            try {
              entry->run_call(*entry, payload.data(), payload.size());
              send(configured, {});
              break;
            } catch (...) {
              error = {detail::current_exception_type(), detail::current_exception_message()};
            }
          }
          logger().error("initializer '{}' failed: {}: {}", name, error.first, error.second);
          msgpack::sbuffer buf;
          msgpack::pack(buf, error);
          wire::Header failed;
          failed.type = wire::Type::kInitFailed;
          failed.pid = pid;
          send(failed, std::string_view(buf.data(), buf.size()));
          break;  // the router breaks the pool and kills us
        }
        case wire::Type::kPing: {
          wire::Header pong;
          pong.type = wire::Type::kPong;
          pong.pid = pid;
          send(pong, {});
          break;
        }
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
