#include "framework/transport/transport.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <random>

namespace mpx {
namespace transport {
namespace {

void free_buffer(void* data, void*) { std::free(data); }

// ZeroMQ calls fail with EINTR when a signal handler runs during them (the caller's
// program may use timers or profilers); the frame is untouched then, so retry.
void send_frame(zmq::socket_t& socket, zmq::message_t& msg, zmq::send_flags flags) {
  for (;;) {
    try {
      socket.send(msg, flags);
      return;
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
}

void send_frame(zmq::socket_t& socket, zmq::message_t&& msg, zmq::send_flags flags) {
  send_frame(socket, msg, flags);
}

bool recv_frame(zmq::socket_t& socket, zmq::message_t& msg, zmq::recv_flags flags) {
  for (;;) {
    try {
      return socket.recv(msg, flags).has_value();
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
}

zmq::message_t header_message(const wire::Header& header) {
  char buf[wire::kMaxHeaderSize];
  const std::size_t n = wire::encode(header, buf);
  return zmq::message_t(buf, n);
}

// Consumes the remaining frames of a message that has already been judged bad.
void drain(zmq::socket_t& socket, zmq::message_t& last) {
  while (last.more()) {
    if (!recv_frame(socket, last, zmq::recv_flags::dontwait)) return;
  }
}

}  // namespace

zmq::context_t& context() {
  static zmq::context_t* ctx = [] {
    auto* c = new zmq::context_t(1);
    c->set(zmq::ctxopt::blocky, 0);
    return c;
  }();
  return *ctx;
}

std::string make_endpoint(std::string_view tag) {
  static std::atomic<unsigned> counter{0};
  std::random_device rd;
  return "ipc://@mpx-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + "-" +
         std::to_string(rd()) + "-" + std::string(tag);
}

zmq::socket_t make_socket(zmq::socket_type type, std::string_view routing_id) {
  zmq::socket_t s(context(), type);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::sndhwm, 0);
  s.set(zmq::sockopt::rcvhwm, 0);
  if (!routing_id.empty()) s.set(zmq::sockopt::routing_id, zmq::const_buffer(routing_id.data(), routing_id.size()));
  if (type == zmq::socket_type::router) {
    // Peers must be this user: the kernel's SO_PEERCRED check on ipc connections.
    const int uid = static_cast<int>(getuid());
    if (zmq_setsockopt(s.handle(), ZMQ_IPC_FILTER_UID, &uid, sizeof uid) != 0) {
      // A libzmq built without peer-credential support: abstract sockets then have no
      // access control at all, which callers must hear about.
      throw zmq::error_t();
    }
  }
  return s;
}

zmq::message_t adopt(detail::Buffer&& buffer) {
  const std::size_t size = buffer.size();
  char* data = buffer.release();
  if (data == nullptr) return zmq::message_t();
  return zmq::message_t(data, size, &free_buffer, nullptr);
}

void send(zmq::socket_t& socket, const wire::Header& header, zmq::message_t&& payload) {
  send_frame(socket, header_message(header), zmq::send_flags::sndmore);
  send_frame(socket, payload, zmq::send_flags::none);
}

void send(zmq::socket_t& socket, const wire::Header& header, std::string_view payload) {
  send(socket, header, zmq::message_t(payload.data(), payload.size()));
}

void send_to(zmq::socket_t& socket, std::string_view to, const wire::Header& header,
             zmq::message_t&& payload) {
  send_frame(socket, zmq::message_t(to.data(), to.size()), zmq::send_flags::sndmore);
  send(socket, header, std::move(payload));
}

void send_to(zmq::socket_t& socket, std::string_view to, const wire::Header& header,
             std::string_view payload) {
  send_to(socket, to, header, zmq::message_t(payload.data(), payload.size()));
}

void forward_to(zmq::socket_t& socket, std::string_view to, zmq::message_t&& header_frame,
                zmq::message_t&& payload) {
  send_frame(socket, zmq::message_t(to.data(), to.size()), zmq::send_flags::sndmore);
  send_frame(socket, header_frame, zmq::send_flags::sndmore);
  send_frame(socket, payload, zmq::send_flags::none);
}

int poll(zmq::pollitem_t* items, std::size_t count, std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const bool forever = timeout.count() < 0;
  const auto deadline = forever ? Clock::time_point::max() : Clock::now() + timeout;
  for (;;) {
    long left = -1;
    if (!forever) {
      left = std::max<long>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                   deadline - Clock::now()).count());
    }
    const int n = zmq_poll(items, static_cast<int>(count), left);
    if (n >= 0) return n;
    if (zmq_errno() != EINTR) throw zmq::error_t();
  }
}

void set_type(zmq::message_t& header_frame, wire::Type type) {
  // Layout: [0x98][0xcc version][0xcc type]...: the type byte is at offset 4.
  static_cast<std::uint8_t*>(header_frame.data())[4] = static_cast<std::uint8_t>(type);
}

RecvStatus receive(zmq::socket_t& socket, bool routed, Incoming& in, std::string* why) {
  if (routed) {
    if (!recv_frame(socket, in.from, zmq::recv_flags::dontwait)) return RecvStatus::kNothing;
    if (!in.from.more()) {
      *why = "message without frames after the routing id";
      return RecvStatus::kMalformed;
    }
    if (!recv_frame(socket, in.header_frame, zmq::recv_flags::none)) return RecvStatus::kNothing;
  } else {
    if (!recv_frame(socket, in.header_frame, zmq::recv_flags::dontwait)) return RecvStatus::kNothing;
  }
  if (!in.header_frame.more()) {
    *why = "message has no payload frame";
    return RecvStatus::kMalformed;
  }
  if (!recv_frame(socket, in.payload, zmq::recv_flags::none)) return RecvStatus::kNothing;
  if (in.payload.more()) {
    *why = "message has more than two frames";
    drain(socket, in.payload);
    return RecvStatus::kMalformed;
  }
  auto header = wire::decode(in.header_frame.data<char>(), in.header_frame.size(), why);
  if (!header) return RecvStatus::kMalformed;
  // The rewritten-type fast path (set_type) relies on our own fixed layout; a foreign
  // but valid encoding is re-encoded so forwarding stays correct.
  const auto* b = in.header_frame.data<std::uint8_t>();
  if (in.header_frame.size() < 5 || b[0] != 0x98 || b[1] != 0xcc || b[3] != 0xcc) {
    std::string name(header->name);
    wire::Header copy = *header;
    copy.name = name;
    in.header_frame = header_message(copy);
    header = wire::decode(in.header_frame.data<char>(), in.header_frame.size(), why);
  }
  in.header = *header;
  return RecvStatus::kMessage;
}

}  // namespace transport
}  // namespace mpx

#if defined(__SANITIZE_THREAD__)
// Programs built with -fsanitize=thread (bazel test --config=tsan) link this: Debian's
// libzmq is not TSan-instrumented, so the hand-over of messages through its lock-free
// queues to its I/O thread is reported as races on memory libzmq itself synchronises.
// Our own code stays fully checked.
extern "C" const char* __tsan_default_suppressions() {
  return "race:libzmq.so\n"
         "called_from_lib:libzmq.so\n";
}
#endif
