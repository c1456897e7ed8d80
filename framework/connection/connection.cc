// Pipe and Connection: a unix stream socket pair carrying transport frames, and the
// hand-over of an end to another process (inherited by a Process child, duplicated with
// pidfd_getfd by anybody else). See mpx/connection.h.
#include "mpx/connection.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <unordered_map>

#include "framework/spawn/spawn.h"
#include "framework/transport/loop.h"
#include "framework/transport/transport.h"
#include "framework/wire/messages.h"
#include "mpx/detail/pins.h"
#include "mpx/runtime.h"

namespace mpx {
namespace detail {

namespace {
constexpr std::uint32_t kReadable = 1;
constexpr std::uint32_t kWritable = 2;
// A recv() blocked on an end that another thread closes notices within this.
constexpr std::chrono::milliseconds kRecvSlice{100};
}  // namespace

// An open descriptor, closed with its last owner.
struct OwnedFd {
  explicit OwnedFd(int f) : fd(f) {}
  ~OwnedFd() {
    if (fd >= 0) ::close(fd);
  }
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  const int fd;
};

// One end in this process, shared by every handle to it here.
struct ConnectionState {
  ConnectionState(int f, ino_t ino, std::uint32_t fl) : fd(f), inode(ino), flags(fl) {}
  ~ConnectionState();

  std::atomic<int> fd;  // -1 once closed; changed only with both mutexes held
  const ino_t inode;
  const std::uint32_t flags;
  std::atomic<bool> unreadable{false};  // recv_bytes(maxlength) refused a message

  std::mutex send_mu;  // one frame at a time
  std::mutex recv_mu;  // guards everything below
  transport::Reader reader;
  std::deque<std::string> messages;  // cut from reader, not yet received
  bool eof = false;                  // the other end is gone (nothing more will come)
  // A copy of fd pinned by Pool and actor calls carrying this end, reused while one
  // lives (guarded by send_mu).
  std::weak_ptr<OwnedFd> lease;
};

namespace {

// Every end open in this process, by socket inode: a handle received twice (a pool
// worker given the same end in every task) shares one descriptor.
std::mutex registry_mu;
std::unordered_map<ino_t, std::weak_ptr<ConnectionState>>& registry() {
  static auto* m = new std::unordered_map<ino_t, std::weak_ptr<ConnectionState>>();
  return *m;
}

std::shared_ptr<ConnectionState> adopt_fd(int fd, ino_t inode, std::uint32_t flags) {
  auto state = std::make_shared<ConnectionState>(fd, inode, flags);
  std::lock_guard<std::mutex> lock(registry_mu);
  registry()[inode] = state;
  return state;
}

ino_t inode_of(int fd) {
  struct stat st {};
  return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

std::string errno_text(int err) { return std::strerror(err); }

// With recv_mu held: moves the whole frames the reader holds into messages. Throws
// DecodeError (and gives up on the stream) on bytes that break the framing.
void cut_frames(ConnectionState& s) {
  wire::Header h;
  std::string_view header_bytes, payload;
  std::string why;
  for (;;) {
    const auto got = s.reader.next(h, header_bytes, payload, &why);
    if (got == transport::Reader::Next::kNone) return;
    if (got == transport::Reader::Next::kBroken) {
      s.eof = true;
      s.unreadable = true;
      throw DecodeError("mpx::Connection: the stream is corrupt (" + why + "); the end is no longer readable");
    }
    if (got == transport::Reader::Next::kBadFrame || h.type != wire::Type::kData) {
      logger().error("mpx::Connection: dropped a frame that is not a message ({})", why);
      continue;
    }
    s.messages.emplace_back(payload);
  }
}

// With recv_mu held (by lock): waits up to `slice` for the descriptor to be readable,
// without the lock, so that close() from another thread returns at once; the caller
// checks again (require) with the lock back. A descriptor closed meanwhile (its number
// perhaps reused) only ends the wait early.
void wait_readable(ConnectionState& s, std::unique_lock<std::mutex>& lock, std::chrono::milliseconds slice) {
  pollfd p{s.fd.load(), POLLIN, 0};
  lock.unlock();
  transport::poll(&p, 1, slice);
  lock.lock();
}

// With recv_mu held: reads what is there without waiting. Returns whether a message or
// the end of file is ready.
bool fill_now(ConnectionState& s) {
  if (!s.messages.empty() || s.eof) return true;
  const int fd = s.fd.load();
  if (fd < 0) return true;
  for (;;) {
    const auto fill = s.reader.fill(fd);
    if (fill == transport::Reader::Fill::kNothing) break;
    if (fill == transport::Reader::Fill::kClosed) {
      s.eof = true;
      break;
    }
    cut_frames(s);
  }
  cut_frames(s);
  return !s.messages.empty() || s.eof;
}

void require(const ConnectionState& s, std::uint32_t flag, const char* what) {
  if (s.fd.load() < 0) throw Error(std::string("mpx::Connection::") + what + ": the connection is closed");
  if ((s.flags & flag) == 0) {
    throw Error(std::string("mpx::Connection::") + what + ": this end is " +
                (flag == kReadable ? "write-only" : "read-only") + " (Pipe(false))");
  }
}

}  // namespace

ConnectionState::~ConnectionState() {
  const int f = fd.load();
  if (f >= 0) ::close(f);
  std::lock_guard<std::mutex> lock(registry_mu);
  auto it = registry().find(inode);
  if (it != registry().end() && it->second.expired()) registry().erase(it);
}

ExportedEnd HandleCodec<Connection>::export_end(const Connection& c) {
  ConnectionState& s = *c.state_;
  std::lock_guard<std::mutex> lock(s.send_mu);
  const int fd = s.fd.load();
  if (fd < 0) throw Error("mpx::Connection: a closed connection cannot be passed to another process");
  ExportedEnd e{getpid(), fd, static_cast<std::uint64_t>(s.inode), s.flags};
  if (FdTransfers* transfers = fd_scope()) {
    // A Process being built: its child inherits a copy of its own.
    const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) throw Error("mpx::Connection: cannot hand it over: dup: " + errno_text(errno));
    auto owned = std::make_shared<OwnedFd>(copy);
    transfers->push_back(FdTransfer{copy, owned});
  } else if (pinning()) {
    // A Pool or actor call: the receiver duplicates the copy the call keeps, so that
    // closing this end meanwhile does not take it away.
    std::shared_ptr<OwnedFd> lease = s.lease.lock();
    if (!lease) {
      const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (copy < 0) throw Error("mpx::Connection: cannot hand it over: dup: " + errno_text(errno));
      lease = std::make_shared<OwnedFd>(copy);
      s.lease = lease;
    }
    pin(lease);
    e.fd = lease->fd;
  }
  return e;
}

Connection HandleCodec<Connection>::unpack(const msgpack::object& o) {
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 5 ||
      o.via.array.ptr[0].type != msgpack::type::STR ||
      std::string_view(o.via.array.ptr[0].via.str.ptr, o.via.array.ptr[0].via.str.size) != "mpx.Connection") {
    throw msgpack::type_error();
  }
  const msgpack::object* f = o.via.array.ptr;
  const auto pid = static_cast<pid_t>(f[1].as<std::int64_t>());
  const int fd = f[2].as<int>();
  const auto inode = static_cast<ino_t>(f[3].as<std::uint64_t>());
  const auto flags = f[4].as<std::uint32_t>() & (kReadable | kWritable);
  {
    std::lock_guard<std::mutex> lock(registry_mu);
    auto it = registry().find(inode);
    if (it != registry().end()) {
      if (auto s = it->second.lock()) {
        if (s->fd.load() >= 0) return Connection(std::move(s));
      }
    }
  }
  const std::string from = "process " + std::to_string(pid);
  if (pid == getpid()) {
    throw SharedMemoryError("mpx::Connection: the connection is gone: every handle to it in this "
                            "process, which sent it, was closed or destroyed");
  }
  // A Process child: its parent handed the end over at spawn.
  int got = pid == getppid() ? spawning::claim_inherited_fd(inode) : -1;
  if (got < 0) {
    const int pidfd = spawning::pidfd_open(pid);
    if (pidfd < 0) {
      throw SharedMemoryError("mpx::Connection: the connection is gone: " + from +
                              ", which sent it, has exited");
    }
    got = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0));
    const int err = errno;
    ::close(pidfd);
    if (got < 0) {
      if (err == EPERM || err == EACCES) {
        throw SharedMemoryError("mpx::Connection: cannot take the connection from " + from +
                                ": pidfd_getfd: " + errno_text(err) +
                                " (connections pass only between processes of one user)");
      }
      if (err == ESRCH) {
        throw SharedMemoryError("mpx::Connection: the connection is gone: " + from +
                                ", which sent it, has exited");
      }
      throw SharedMemoryError("mpx::Connection: the connection is gone: " + from +
                              " no longer holds it (closed there before it was received)");
    }
    fcntl(got, F_SETFD, FD_CLOEXEC);
  }
  if (inode_of(got) != inode) {
    ::close(got);
    throw SharedMemoryError("mpx::Connection: the connection is gone: " + from +
                            " no longer holds it (its descriptor now names another file)");
  }
  // Two threads may race to take the same end: the registry keeps one.
  std::lock_guard<std::mutex> lock(registry_mu);
  auto& slot = registry()[inode];
  if (auto s = slot.lock()) {
    if (s->fd.load() >= 0) {
      ::close(got);
      return Connection(std::move(s));
    }
  }
  auto state = std::make_shared<ConnectionState>(got, inode, flags);
  slot = state;
  return Connection(std::move(state));
}

}  // namespace detail

using detail::ConnectionState;

std::pair<Connection, Connection> Pipe(bool duplex) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    throw Error("mpx::Pipe: socketpair: " + detail::errno_text(errno));
  }
  std::uint32_t first = detail::kReadable | detail::kWritable, second = first;
  if (!duplex) {
    // The kernel enforces the direction too.
    ::shutdown(fds[0], SHUT_WR);
    ::shutdown(fds[1], SHUT_RD);
    first = detail::kReadable;
    second = detail::kWritable;
  }
  return {Connection(detail::adopt_fd(fds[0], detail::inode_of(fds[0]), first)),
          Connection(detail::adopt_fd(fds[1], detail::inode_of(fds[1]), second))};
}

void Connection::send_bytes(const void* data, std::size_t size) {
  ConnectionState& s = *state_;
  if (size > transport::kMaxPayload) {
    throw std::length_error("mpx::Connection::send: a message of " + std::to_string(size) +
                            " bytes is over the limit of " + std::to_string(transport::kMaxPayload));
  }
  std::lock_guard<std::mutex> lock(s.send_mu);
  detail::require(s, detail::kWritable, "send");
  const wire::Header h = wire::Data{current_process().pid}.header();
  if (!transport::write_frame(s.fd.load(), h, std::string_view(static_cast<const char*>(data), size))) {
    throw BrokenPipeError("mpx::Connection::send: the other end is closed (every process that "
                          "held it closed it or exited)");
  }
}

std::string Connection::recv_bytes() { return recv_bytes(transport::kMaxPayload); }

std::string Connection::recv_bytes(std::size_t maxlength) {
  ConnectionState& s = *state_;
  std::unique_lock<std::mutex> lock(s.recv_mu);
  for (;;) {
    detail::require(s, detail::kReadable, "recv");
    if (s.unreadable) throw Error("mpx::Connection::recv: this end is no longer readable");
    if (detail::fill_now(s)) {
      if (!s.messages.empty()) break;
      throw EOFError("mpx::Connection::recv: the other end is closed (every process that held "
                     "it closed it or exited) and nothing is left to read");
    }
    detail::wait_readable(s, lock, detail::kRecvSlice);
  }
  std::string out = std::move(s.messages.front());
  s.messages.pop_front();
  if (out.size() > maxlength) {
    s.unreadable = true;
    throw Error("mpx::Connection::recv_bytes: a message of " + std::to_string(out.size()) +
                " bytes is longer than maxlength " + std::to_string(maxlength) +
                "; the connection is no longer readable");
  }
  return out;
}

bool Connection::poll() { return poll_until(detail::Clock::time_point::min()); }

bool Connection::poll_until(detail::Clock::time_point deadline) {
  ConnectionState& s = *state_;
  std::unique_lock<std::mutex> lock(s.recv_mu);
  for (;;) {
    detail::require(s, detail::kReadable, "poll");
    if (detail::fill_now(s)) return true;
    const auto now = detail::Clock::now();
    if (deadline != detail::Clock::time_point::max() && now >= deadline) return false;
    const auto left = deadline == detail::Clock::time_point::max()
                          ? detail::kRecvSlice
                          : std::min<std::chrono::milliseconds>(
                                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) +
                                    std::chrono::milliseconds(1),
                                detail::kRecvSlice);
    detail::wait_readable(s, lock, left);
  }
}

void Connection::close() {
  ConnectionState& s = *state_;
  std::lock_guard<std::mutex> send_lock(s.send_mu);
  std::lock_guard<std::mutex> recv_lock(s.recv_mu);
  const int fd = s.fd.exchange(-1);
  if (fd >= 0) ::close(fd);
}

bool Connection::closed() const { return state_->fd.load() < 0; }
bool Connection::readable() const { return (state_->flags & detail::kReadable) != 0; }
bool Connection::writable() const { return (state_->flags & detail::kWritable) != 0; }
int Connection::fileno() const { return state_->fd.load(); }

namespace connection {

std::vector<Waitable> wait(const std::vector<Waitable>& objects, std::chrono::milliseconds timeout) {
  const auto deadline = timeout.count() < 0 ? detail::Clock::time_point::max()
                                            : detail::deadline_after(timeout);
  std::vector<pollfd> fds(objects.size());
  for (;;) {
    for (std::size_t i = 0; i < objects.size(); ++i) fds[i] = pollfd{objects[i].fd(), POLLIN, 0};
    transport::poll(fds.data(), fds.size(), std::chrono::milliseconds(0));
    std::vector<Waitable> ready;
    for (std::size_t i = 0; i < objects.size(); ++i) {
      const Waitable& w = objects[i];
      bool is_ready = fds[i].revents != 0;
      if (w.is_connection()) {
        // Readable bytes may be half a message: a connection is ready once a whole one
        // (or the end of file) is there.
        ConnectionState& s = *detail::HandleCodec<Connection>::state(w.connection());
        std::lock_guard<std::mutex> lock(s.recv_mu);
        is_ready = s.fd.load() < 0 || detail::fill_now(s);
      }
      if (is_ready) ready.push_back(w);
    }
    if (!ready.empty()) return ready;
    const auto now = detail::Clock::now();
    if (deadline != detail::Clock::time_point::max() && now >= deadline) return ready;
    const auto left = deadline == detail::Clock::time_point::max()
                          ? std::chrono::milliseconds(-1)
                          : std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) +
                                std::chrono::milliseconds(1);
    transport::poll(fds.data(), fds.size(), left);
  }
}

}  // namespace connection
}  // namespace mpx
