// The actor role: construct the object, then serve its mailbox one message at a time.
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>

#include "framework/actor/actor_internal.h"
#include "framework/transport/transport.h"
#include "mpx/actor.h"
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

void reply_error(zmq::socket_t& socket, std::string_view to, std::uint64_t call_id,
                 const std::string& type, const std::string& message) {
  detail::Buffer out;
  msgpack::packer<detail::Buffer> pk(out);
  pk.pack_array(2);
  pk.pack(type);
  pk.pack(message);
  wire::Header h;
  h.type = wire::Type::kReply;
  h.call_id = call_id;
  h.flags = wire::kFlagHasErrors;
  h.pid = getpid();
  transport::send_to(socket, to, h, transport::adopt(std::move(out)));
}

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
    report(boot.ready_fd, std::string(1, kFailedByte) + "mpx::DecodeError\n" + e.what());
    return 1;
  }
  const detail::ActorFactoryEntry* factory = detail::find_actor_factory(b.factory_key);
  if (factory == nullptr) {
    report(boot.ready_fd, std::string(1, kFailedByte) + "mpx::NotRegistered\nno actor constructor '" +
                              b.factory_key + "' is registered in this program");
    return 1;
  }
  zmq::socket_t socket = transport::make_socket(zmq::socket_type::router);
  socket.set(zmq::sockopt::router_mandatory, 1);
  socket.bind(b.endpoint);

  void* object = nullptr;
  try {
    object = factory->create(b.args.data(), b.args.size());
  } catch (...) {
    report(boot.ready_fd, std::string(1, kFailedByte) + detail::current_exception_type() + "\n" +
                              detail::current_exception_message());
    return 3;
  }
  report(boot.ready_fd, std::string(1, kReadyByte));

  const auto& names = *factory->method_names;
  transport::Incoming in;
  std::string why;
  const pid_t pid = getpid();
  for (;;) {
    zmq::pollitem_t item{static_cast<void*>(socket), 0, ZMQ_POLLIN, 0};
    transport::poll(&item, 1, std::chrono::milliseconds(-1));
    for (;;) {
      const auto status = transport::receive(socket, true, in, &why);
      if (status == transport::RecvStatus::kNothing) break;
      if (status == transport::RecvStatus::kMalformed) {
        logger().warn("dropped a malformed message: {}", why);
        continue;
      }
      const wire::Header& h = in.header;
      switch (h.type) {
        case wire::Type::kHello: {
          wire::Header w;
          w.type = wire::Type::kWelcome;
          w.pid = pid;
          w.start = b.incarnation;
          try {
            transport::send_to(socket, in.sender(), w, zmq::message_t());
          } catch (const zmq::error_t&) {
            // The caller disconnected before the answer: nothing to do.
          }
          break;
        }
        case wire::Type::kCall: {
          const bool tell = (h.flags & wire::kFlagNoReply) != 0;
          const std::string reply_to(h.name);
          if (h.start != b.incarnation) {
            // Sent to an earlier incarnation: its caller already got ActorDied.
            logger().debug("dropped call {} addressed to incarnation {}", h.call_id, h.start);
            break;
          }
          if (h.count >= factory->method_count) {
            logger().warn("dropped a call to method #{}: {} has {} methods", h.count,
                          factory->class_name, factory->method_count);
            if (!tell) {
              try {
                reply_error(socket, reply_to, h.call_id, "mpx::DecodeError",
                            "no method #" + std::to_string(h.count));
              } catch (const zmq::error_t&) {
              }
            }
            break;
          }
          detail::Buffer out;
          bool failed = false;
          std::string type, message;
          try {
            factory->methods[h.count](object, in.payload.data<char>(), in.payload.size(), out);
          } catch (...) {
            failed = true;
            type = detail::current_exception_type();
            message = detail::current_exception_message();
          }
          if (tell) {
            if (failed) {
              logger().error("{}::{} (told, nobody waits for it) raised {}: {}",
                             factory->class_name, names[h.count], type, message);
            }
            break;
          }
          try {
            if (failed) {
              reply_error(socket, reply_to, h.call_id, type, message);
            } else {
              wire::Header r;
              r.type = wire::Type::kReply;
              r.call_id = h.call_id;
              r.pid = pid;
              transport::send_to(socket, reply_to, r, transport::adopt(std::move(out)));
            }
          } catch (const zmq::error_t& e) {
            // EHOSTUNREACH: the caller's reply socket is gone (it exited or timed out).
            logger().debug("answer to call {} undeliverable: {}", h.call_id, e.what());
          }
          break;
        }
        case wire::Type::kStop:
          factory->destroy(object);
          return 0;
        default:
          logger().warn("dropped a {} message: actors take CALL, HELLO and STOP",
                        wire::type_name(h.type));
      }
    }
  }
}

}  // namespace actor
}  // namespace mpx
