// ZeroMQ for the links between hosts: libzmq opened with dlopen, so that only a process
// that uses these links (a pool's router that listens, a node agent) loads it. Nothing
// in mpx links libzmq: a local-only pool never maps it (tests/node_test checks
// /proc/<router>/maps), and a program runs on a host without libzmq until it listens.
//
// This is the one layer that calls libzmq (cppzmq's habit: wrap it once, convert its
// errors once). "Would block" and "peer unreachable" are statuses; real failures throw
// mpx::Error naming the call and errno text.
//
// ZMQ_FD is edge-triggered: after every send and receive the socket's ZMQ_EVENTS must be
// read again (Link does, and asks its Loop to run the handler again while messages wait).
#ifndef MPX_FRAMEWORK_NODE_ZMQ_H_
#define MPX_FRAMEWORK_NODE_ZMQ_H_

#include <deque>
#include <map>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "framework/transport/loop.h"
#include "framework/transport/transport.h"

namespace mpx {
namespace node {

// A CURVE keypair, Z85 text (40 characters each).
struct Keypair {
  std::string public_key;
  std::string secret_key;
};
// Generates a keypair (libzmq's zmq_curve_keypair). Throws mpx::Error.
Keypair new_keypair();
// The 32 bytes behind a Z85 key; throws mpx::Error naming what when it is not one.
std::string z85_decode(const std::string& text, const char* what);
std::string z85_encode(std::string_view bytes);

// A ZeroMQ context with one I/O thread. Throws mpx::Error when libzmq cannot be loaded
// (the message says which library and how to install it).
class Context {
 public:
  Context();
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  void* get() const { return ctx_; }

 private:
  void* ctx_ = nullptr;
};

// One socket, used without blocking. Not thread-safe (as ZeroMQ's own sockets).
class Socket {
 public:
  enum Type { kRouter, kDealer, kRep };
  Socket(Context& context, Type type);
  ~Socket();
  // A ROUTER's messages begin with the peer's routing id.
  bool routed() const { return type_ == kRouter; }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  void set(int option, int value);
  void set(int option, std::string_view bytes);
  std::string get_string(int option) const;
  void bind(const std::string& endpoint);
  void connect(const std::string& endpoint);
  int fd() const;
  bool readable() const;  // ZMQ_EVENTS has ZMQ_POLLIN

  enum class Send { kSent, kAgain, kUnreachable };
  // Sends parts as one message without waiting: kAgain when the peer's queue is full
  // (nothing was sent), kUnreachable when a ROUTER_MANDATORY socket knows no such peer.
  Send send(const std::vector<transport::Message>& parts);
  // One whole message without waiting; false when none waits.
  bool receive(std::vector<transport::Message>* parts);

 private:
  void* socket_ = nullptr;
  Type type_;
};

// A socket in a Loop, with a queue of its own for messages it could not send yet
// (EAGAIN: ZeroMQ's queue to that peer is full). Messages leave in the order they were
// given. on_message gets each whole message received.
//
// A message whose last part is over kPieceBytes crosses in pieces: that part's bytes
// but its last kPieceBytes or fewer go first, in messages of their own ([routing id,]
// node::Kind::kPiece, bytes), and the receiving Link puts them back in front of the
// last part. ZeroMQ hands over only whole messages, and a link carries one message at a
// time: unpieced, a value that takes longer than the host timeout to cross would hold
// back every heartbeat behind it, and its receiver would take a live peer for lost.
// on_message sees each piece too (the peer is heard), as a message of kind kPiece, and
// nothing (no parts) for a message whose pieces were more than transport::kMaxPayload.
class Link {
 public:
  using OnMessage = std::function<void(std::vector<transport::Message>& parts)>;
  Link(Socket& socket, transport::Loop& loop, OnMessage on_message);
  ~Link();
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // Sends now if the queue is empty and the socket takes it; queues it otherwise. An
  // unreachable peer's message is dropped (returns false).
  bool send(std::vector<transport::Message> parts);
  // Retries the queue and reads what waits: call after anything that may have changed
  // the socket's state without an edge on its descriptor, and on a timer.
  void service();
  std::size_t queued() const { return queue_.size(); }
  // Drops the pieces received from a peer (routing id; "" on a DEALER) that is gone.
  void forget(const std::string& peer) { pieces_.erase(peer); }
  // A fifth of a second at 40 Mbit/s: short against any host timeout, long enough that
  // the usual chunk (a map's 500 KiB of numbers) goes whole, copied no more than before.
  static constexpr std::size_t kPieceBytes = 1024 * 1024;

 private:
  bool send_whole(std::vector<transport::Message> parts);
  // A piece received: kept for its message. A message: its pieces put back in front.
  void take_pieces(std::vector<transport::Message>& parts);
  void flush_queue();
  Socket& socket_;
  transport::Loop& loop_;
  OnMessage on_message_;
  transport::Loop::Id watch_ = 0;
  std::deque<std::vector<transport::Message>> queue_;
  bool receiving_ = false;  // on_message is running: no nested receive
  // Pieces received, by peer, for the message that ends them (erased with it).
  struct Pieces {
    std::vector<transport::Message> parts;
    std::size_t size = 0;     // of parts
    bool overflowed = false;  // more than a message may hold: that message is dropped
  };
  std::map<std::string, Pieces, std::less<>> pieces_;
};

// Parts of a message as Messages (copies).
transport::Message part(std::string_view bytes);

}  // namespace node
}  // namespace mpx

#endif  // MPX_FRAMEWORK_NODE_ZMQ_H_
