// mpx/connection.h — Pipe() and Connection: messages between two processes (Python's
// multiprocessing.Pipe and multiprocessing.connection).
//
//   void child(mpx::Connection conn) {
//     conn.send(std::string("hello"));
//     int n = conn.recv<int>();
//   }
//   MPX_TASK(child);
//
//   auto [parent_end, child_end] = mpx::Pipe();     // duplex; Pipe(false): one-way
//   mpx::Process p(child, child_end);
//   p.start();
//   child_end.close();                    // as in Python: only the child holds it now
//   std::string greeting = parent_end.recv<std::string>();
//   parent_end.send(42);
//   if (parent_end.poll(std::chrono::seconds(1))) { ... }        // a message is there
//   auto ready = mpx::connection::wait({parent_end, p.sentinel()}, std::chrono::seconds(5));
//   parent_end.recv<int>();               // mpx::EOFError once the child is gone
//
// A Pipe is a unix stream socket pair; every message is one frame (the transport's
// header and payload). send<T>/recv<T> carry any msgpack-serializable T (the receiver
// must ask for the type that was sent, else DecodeError); send_bytes/recv_bytes carry
// raw bytes.
//
// Handles: a Connection is a handle to one end. Copies in one process share it (and
// close() closes it for all of them). Passed to a Process, the child inherits the end
// (as with fork), so closing this process's copy afterwards leaves the child the only
// holder; passed to a Pool task, an actor, or through a Queue or another Connection,
// the receiving process duplicates it from the sender (pidfd_getfd: same user only),
// the Pool call or actor call keeping the sender's copy until it is done. A process
// holds its copy only while a handle to it lives there.
//
// End of file: when every process holding the other end has closed it or died (killed
// with SIGKILL included), recv() returns what was sent before and then throws
// mpx::EOFError, poll() and wait() report the end ready; send() throws
// mpx::BrokenPipeError. As in Python, an end this process still holds itself (say, the
// child's end, not closed after start()) keeps the other end from seeing EOF.
//
// Thread safety: send and recv may run on different threads at once; two threads (or
// processes) reading one end at the same time may split messages between them, as in
// Python.
#ifndef MPX_CONNECTION_H_
#define MPX_CONNECTION_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <msgpack.hpp>

#include "mpx/detail/deadline.h"
#include "mpx/detail/codec.h"
#include "mpx/detail/handle.h"
#include "mpx/errors.h"

namespace mpx {
namespace detail {
struct ConnectionState;
}  // namespace detail

class Connection {
 public:
  // Sends obj as one message. Throws BrokenPipeError when the other end is gone,
  // mpx::Error when this end is closed or read-only, std::length_error for a message
  // over 1 GiB.
  template <class T>
  void send(const T& obj) {
    detail::Buffer buf;  // keeps -0.0 (see codec.h)
    msgpack::pack(buf, obj);
    send_bytes(buf.data(), buf.size());
  }
  // Waits for a message and decodes it as T. Throws EOFError when the other end is gone
  // and nothing is left to read, DecodeError when the message is not a T (it is
  // consumed), mpx::Error when this end is closed or write-only.
  template <class T>
  T recv() {
    const std::string bytes = recv_bytes();
    try {
      msgpack::object_handle oh = msgpack::unpack(bytes.data(), bytes.size());
      return oh.get().as<T>();
    } catch (const SharedMemoryError&) {
      throw;  // a handle inside the message names something that is gone
    } catch (const std::exception& e) {
      throw DecodeError(std::string("mpx::Connection::recv: the message could not be read as "
                                    "the type asked for: ") + e.what());
    }
  }
  void send_bytes(const void* data, std::size_t size);
  void send_bytes(std::string_view bytes) { send_bytes(bytes.data(), bytes.size()); }
  std::string recv_bytes();
  // Throws mpx::Error when the message is longer than maxlength; the end is then no
  // longer readable (as Python's OSError leaves it).
  std::string recv_bytes(std::size_t maxlength);

  // Whether a whole message (or the end of file) can be read without waiting.
  bool poll();
  // Waits up to timeout for one.
  template <class Rep, class Period>
  bool poll(const std::chrono::duration<Rep, Period>& timeout) {
    return poll_until(detail::deadline_after(timeout));
  }

  // Closes this end in this process (for every copy of the handle here). Idempotent.
  void close();
  bool closed() const;
  bool readable() const;
  bool writable() const;
  // The socket's descriptor (-1 once closed), for select/poll/epoll of your own.
  int fileno() const;

  friend bool operator==(const Connection& a, const Connection& b) { return a.state_ == b.state_; }
  friend bool operator!=(const Connection& a, const Connection& b) { return !(a == b); }

 private:
  explicit Connection(std::shared_ptr<detail::ConnectionState> state) : state_(std::move(state)) {}
  bool poll_until(detail::Clock::time_point deadline);
  std::shared_ptr<detail::ConnectionState> state_;
  friend struct detail::HandleCodec<Connection>;
  friend std::pair<Connection, Connection> Pipe(bool duplex);
};

// Python's Pipe(duplex): two connected ends. duplex: both send and receive; otherwise
// the first end only receives and the second only sends. Throws mpx::Error when the
// system refuses the sockets.
std::pair<Connection, Connection> Pipe(bool duplex = true);

namespace connection {

// What wait() watches: a Connection, or a descriptor that becomes readable, such as
// Process::sentinel() or ParentProcess::sentinel().
class Waitable {
 public:
  Waitable(const Connection& c) : connection_(c) {}  // NOLINT: implicit, as Python's lists mix both
  Waitable(int fd) : fd_(fd) {}                     // NOLINT: implicit
  bool is_connection() const { return connection_.has_value(); }
  // Only when is_connection().
  const Connection& connection() const { return *connection_; }
  // The descriptor (the connection's fileno() for a connection).
  int fd() const { return connection_ ? connection_->fileno() : fd_; }

 private:
  std::optional<Connection> connection_;
  int fd_ = -1;
};

// Python's multiprocessing.connection.wait: waits until at least one object is ready
// (a connection with a whole message or at its end, a descriptor readable) or timeout
// passes; returns the ready ones, in the order given (empty on timeout). A closed
// connection counts as ready, as Python's reports it.
// A negative timeout waits for ever.
std::vector<Waitable> wait(const std::vector<Waitable>& objects,
                           std::chrono::milliseconds timeout = std::chrono::milliseconds(-1));

}  // namespace connection

namespace detail {
// A Connection travels as ["mpx.Connection", pid, fd, inode, flags]: the process that
// sent it, its descriptor there, the socket's inode (checked by the receiver, so a
// recycled descriptor number never hands over another file) and readable/writable.
struct ExportedEnd {
  std::int64_t pid;
  int fd;
  std::uint64_t inode;
  std::uint32_t flags;
};
template <>
struct HandleCodec<Connection> {
  template <class Stream>
  static void pack(msgpack::packer<Stream>& pk, const Connection& c) {
    const ExportedEnd e = export_end(c);
    pk.pack_array(5);
    pk.pack(std::string_view("mpx.Connection"));
    pk.pack(e.pid);
    pk.pack(e.fd);
    pk.pack(e.inode);
    pk.pack(e.flags);
  }
  // Throws msgpack::type_error for something else, SharedMemoryError when the end
  // cannot be obtained from the sender.
  static Connection unpack(const msgpack::object& o);
  // Hands the descriptor to the active FdScope (a Process), or pins a copy of it while
  // a PinScope is active (a Pool or actor call). Throws mpx::Error for a closed end.
  static ExportedEnd export_end(const Connection& c);
  static const std::shared_ptr<ConnectionState>& state(const Connection& c) { return c.state_; }
};
}  // namespace detail

}  // namespace mpx

#endif  // MPX_CONNECTION_H_
