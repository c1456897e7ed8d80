// Transport: the one layer that touches ZeroMQ. Sockets are configured here once
// (no linger, no high-water-mark drops, same-uid peers only) and every message is
// sent and received as [routing id] + header frame + payload frame.
//
// "No message yet" and "malformed message" are ordinary outcomes (RecvStatus), not
// exceptions; zmq::error_t escapes only for real failures (context gone, bad socket).
#ifndef MPX_FRAMEWORK_TRANSPORT_TRANSPORT_H_
#define MPX_FRAMEWORK_TRANSPORT_TRANSPORT_H_

#include <chrono>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "framework/wire/wire.h"
#include "mpx/detail/codec.h"

namespace mpx {
namespace transport {

// The process's ZeroMQ context (one I/O thread). Never destroyed: sockets may be
// closed during static destruction in any order.
zmq::context_t& context();

// A fresh endpoint name in Linux's abstract socket namespace: nothing on disk to leak.
// Unique per (pid, call, random) so concurrent programs and tests never collide.
std::string make_endpoint(std::string_view tag);

// A socket with linger 0 and unlimited queues (a full queue must never drop results);
// ROUTER sockets additionally accept only peers of this process's uid.
zmq::socket_t make_socket(zmq::socket_type type, std::string_view routing_id = {});

// Moves a finished msgpack buffer into a message without copying.
zmq::message_t adopt(detail::Buffer&& buffer);

void send(zmq::socket_t& socket, const wire::Header& header, zmq::message_t&& payload);
void send(zmq::socket_t& socket, const wire::Header& header, std::string_view payload);
// For ROUTER sockets: to the peer with routing id `to`.
void send_to(zmq::socket_t& socket, std::string_view to, const wire::Header& header,
             zmq::message_t&& payload);
void send_to(zmq::socket_t& socket, std::string_view to, const wire::Header& header,
             std::string_view payload);
// Forwards header frame bytes unchanged except for the type byte (router hop).
void forward_to(zmq::socket_t& socket, std::string_view to, zmq::message_t&& header_frame,
                zmq::message_t&& payload);

struct Incoming {
  zmq::message_t from;  // routing id (ROUTER sockets only)
  zmq::message_t header_frame;
  zmq::message_t payload;
  wire::Header header;  // views into header_frame
  std::string_view sender() const { return {from.data<char>(), from.size()}; }
};

enum class RecvStatus { kMessage, kNothing, kMalformed };

// Non-blocking receive of one whole message. kMalformed: every frame of the bad message
// was consumed and *why says what was wrong; the socket stays usable.
RecvStatus receive(zmq::socket_t& socket, bool routed, Incoming& in, std::string* why);

// zmq_poll that resumes after signal handlers (EINTR) with the time that is left, as
// Python does since PEP 475; a negative timeout waits forever. Returns the number of
// ready items (0 on timeout).
int poll(zmq::pollitem_t* items, std::size_t count, std::chrono::milliseconds timeout);

// Rewrites the type byte of an encoded header in place (fixed layout, see wire.cc).
void set_type(zmq::message_t& header_frame, wire::Type type);

}  // namespace transport
}  // namespace mpx

#endif  // MPX_FRAMEWORK_TRANSPORT_TRANSPORT_H_
