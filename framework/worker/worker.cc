#include "framework/worker/worker.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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
  zmq::socket_t socket = transport::make_socket(zmq::socket_type::dealer, id);
  socket.connect(endpoint);

  wire::Header ready;
  ready.type = wire::Type::kReady;
  ready.pid = pid;
  ready.name = boot.name;
  transport::send(socket, ready, zmq::message_t());

  transport::Incoming in;
  std::string why;
  std::uint64_t max_message_bytes = UINT64_MAX;  // from CONFIG
  zmq::pollitem_t items[] = {{socket.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, parent_fd, ZMQ_POLLIN, 0}};
  for (;;) {
    transport::poll(items, 2, std::chrono::milliseconds(-1));
    if (items[1].revents & ZMQ_POLLIN) return 0;  // router gone
    for (;;) {
      const auto st = transport::receive(socket, false, in, &why);
      if (st == transport::RecvStatus::kNothing) break;
      if (st == transport::RecvStatus::kMalformed) {
        logger().warn("dropped a malformed message: {}", why);
        continue;
      }
      const wire::Header& h = in.header;
      switch (h.type) {
        case wire::Type::kTask: {
          bool has_errors = false;
          running->store(wire::chunk_mark(h.call_id, h.start), std::memory_order_release);
          detail::Buffer out = run_task(h, in.payload.data<char>(), in.payload.size(), &has_errors);
          running->store(0, std::memory_order_release);
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
          transport::send(socket, result, transport::adopt(std::move(out)));
          break;
        }
        case wire::Type::kConfig: {
          if (h.start > 0) max_message_bytes = h.start;
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
            transport::send(socket, configured, zmq::message_t());
            break;
          }
          const std::string name(h.name);
          const detail::TaskEntry* entry = detail::find_task(name);
          std::pair<std::string, std::string> error;
          if (entry == nullptr) {
            error = {"mpx::NotRegistered", "no task named '" + name + "' is registered"};
          } else {
            try {
              entry->run_call(*entry, in.payload.data<char>(), in.payload.size());
              transport::send(socket, configured, zmq::message_t());
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
          transport::send(socket, failed, transport::adopt(std::move(buf)));
          break;  // the router breaks the pool and kills us
        }
        case wire::Type::kPing: {
          wire::Header pong;
          pong.type = wire::Type::kPong;
          pong.pid = pid;
          transport::send(socket, pong, zmq::message_t());
          break;
        }
        case wire::Type::kStop:
          return 0;
        default:
          logger().warn("dropped unexpected {}", wire::type_name(h.type));
      }
    }
  }
}

}  // namespace worker
}  // namespace mpx
