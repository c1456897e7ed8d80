// The router process: real sockets and real children around RouterCore. Clients and
// workers connect over unix streams (framework/transport); each connection names
// itself first, and RouterCore routes on those names.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "framework/router/router.h"
#include "mpx/errors.h"
#include "mpx/runtime.h"

namespace mpx {
namespace router {
namespace {

// 16 random letters and digits: a worker's routing identity.
std::string random_id() {
  static const char kAlphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::random_device rd;
  std::string id(16, '0');
  for (char& c : id) c = kAlphabet[rd() % 36];
  return id;
}

// A peer's queued frames are written at once from this size on (see deliver).
constexpr std::size_t kWriteNowBytes = 64 << 10;

// A stream connection to a client (a Pool's driver) or a worker.
struct Conn {
  int fd = -1;
  bool front = false;  // accepted on the clients' endpoint
  std::string id;      // its identity; empty until the preamble arrived
  transport::Reader reader;
  transport::Writer writer;
  Clock::time_point opened;
  bool dead = false;   // closed at the end of the loop turn
  // Writing failed (EPIPE: the peer closed). Not dead: what the peer wrote before it
  // closed is still read, to the end of the stream, so no result it sent is lost.
  bool write_gone = false;
  bool dirty = false;  // has frames queued this turn (ProcessIo::flush_all)
  Conn(int f, bool is_front, std::size_t max_payload, Clock::time_point now)
      : fd(f), front(is_front), reader(max_payload), opened(now) {}
  ~Conn() {
    if (fd >= 0) ::close(fd);
  }
};

class ProcessIo final : public RouterIo {
 public:
  ProcessIo(std::string back_endpoint, pid_t driver)
      : back_endpoint_(std::move(back_endpoint)), driver_(driver) {}

  void send_client(std::string_view client, const wire::Header& h, transport::Message&& payload) override {
    deliver(client, transport::header_message(h), std::move(payload));
  }
  void forward_client(std::string_view client, transport::Message&& header_frame,
                      transport::Message&& payload) override {
    deliver(client, std::move(header_frame), std::move(payload));
  }
  void send_worker(std::string_view worker, const wire::Header& h, transport::Message&& payload) override {
    deliver(worker, transport::header_message(h), std::move(payload));
  }
  void forward_worker(std::string_view worker, transport::Message&& header_frame,
                      transport::Message&& payload) override {
    deliver(worker, std::move(header_frame), std::move(payload));
  }
  pid_t spawn_worker(const std::string& name, std::string* routing_id) override {
    *routing_id = "W" + random_id();
    spawning::Spec spec;
    spec.role = Role::kWorker;
    spec.name = name;
    spec.bootstrap = back_endpoint_ + '\n' + *routing_id;
    spec.driver = driver_;
    // One shared word per worker: the chunk it is running (wire::chunk_mark). It tells
    // the chunk that killed a worker from the ones it had finished or not started.
    const int memfd = ::memfd_create("mpx-worker-mark", MFD_CLOEXEC);
    void* map = MAP_FAILED;
    if (memfd >= 0 && ::ftruncate(memfd, kMarkBytes) == 0) {
      map = ::mmap(nullptr, kMarkBytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    }
    if (map != MAP_FAILED) spec.share_fd = memfd;
    spawning::Child child;
    try {
      child = spawning::spawn_self(spec);
    } catch (...) {
      if (memfd >= 0) ::close(memfd);
      if (map != MAP_FAILED) ::munmap(map, kMarkBytes);
      throw;
    }
    if (memfd >= 0) ::close(memfd);
    if (map != MAP_FAILED) marks_[child.pid] = static_cast<std::atomic<std::uint64_t>*>(map);
    children_[child.pid] = child;
    ids_[child.pid] = *routing_id;
    return child.pid;
  }
  std::optional<std::uint64_t> take_running_mark(pid_t pid) override {
    auto it = marks_.find(pid);
    if (it == marks_.end()) return std::nullopt;
    const std::uint64_t mark = it->second->load(std::memory_order_acquire);
    ::munmap(it->second, kMarkBytes);
    marks_.erase(it);
    return mark;
  }
  void kill_worker(pid_t pid) override {
    if (children_.count(pid)) ::kill(pid, SIGKILL);
  }
  bool is_stopped(pid_t pid) override { return children_.count(pid) != 0 && spawning::is_stopped(pid); }

  std::map<pid_t, spawning::Child>& children() { return children_; }
  static constexpr std::size_t kMarkBytes = 4096;

  // ---- Connections ----
  std::map<int, std::unique_ptr<Conn>>& conns() { return conns_; }
  void add(std::unique_ptr<Conn> c) { conns_[c->fd] = std::move(c); }
  // Registers c under id once its preamble arrived; false (and c is to be dropped)
  // when that identity is taken already.
  bool identify(Conn& c, std::string id) {
    if (by_id_.count(id)) return false;
    c.id = std::move(id);
    by_id_[c.id] = &c;
    return true;
  }
  // The live connection of worker pid, if it has one.
  Conn* worker_conn(pid_t pid) {
    auto it = ids_.find(pid);
    if (it == ids_.end()) return nullptr;
    auto c = by_id_.find(it->second);
    return c == by_id_.end() ? nullptr : c->second;
  }
  void forget_worker(pid_t pid) {
    children_.erase(pid);
    ids_.erase(pid);
  }
  // Closes the connections marked dead.
  // Writes what c's writer holds; a peer that is gone for writing gets nothing more.
  static void flush(Conn& c) {
    if (c.dead || c.write_gone) return;
    if (c.writer.flush(c.fd) == transport::Writer::Status::kGone) {
      c.write_gone = true;
      c.writer.discard();
    }
  }
  void reap_conns() {
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (!it->second->dead) {
        ++it;
        continue;
      }
      if (!it->second->id.empty()) by_id_.erase(it->second->id);
      it = conns_.erase(it);
    }
  }

 private:
  void deliver(std::string_view to, transport::Message&& header_frame, transport::Message&& payload) {
    auto it = by_id_.find(to);
    if (it == by_id_.end() || it->second->dead || it->second->write_gone) {
      // Its peer is gone (a driver that exited, a dead worker): the message has nobody
      // to go to and is dropped.
      logger().debug("router: dropped a message for {}, which is not connected", to);
      return;
    }
    Conn& c = *it->second;
    c.writer.push(std::move(header_frame), std::move(payload));
    // Small frames are written at the end of the loop turn (flush_all): what one turn
    // forwards to a peer leaves in one system call, and nothing waits longer than that
    // turn. Large ones leave at once, so the peer works while the rest is read.
    if (c.writer.pending_bytes() >= kWriteNowBytes) {
      flush(c);
      return;
    }
    if (!c.dirty) {
      c.dirty = true;
      dirty_.push_back(&c);
    }
  }

 public:
  // Writes what this turn queued for each peer.
  void flush_all() {
    for (Conn* c : dirty_) {
      c->dirty = false;
      flush(*c);
    }
    dirty_.clear();
  }

 private:
  std::vector<Conn*> dirty_;  // connections with frames queued this turn

  std::string back_endpoint_;
  pid_t driver_;
  std::map<pid_t, spawning::Child> children_;
  std::map<pid_t, std::string> ids_;  // worker pid -> its identity
  std::map<pid_t, std::atomic<std::uint64_t>*> marks_;
  std::map<int, std::unique_ptr<Conn>> conns_;  // by fd
  std::map<std::string, Conn*, std::less<>> by_id_;
};

// Connections that announce no identity within this long are closed.
constexpr auto kIdentityTimeout = std::chrono::seconds(10);
// More connections than this at once are refused.
constexpr std::size_t kMaxConns = 4096;

}  // namespace

int run_router(const spawning::Bootstrap& boot) {
  const Config config = Config::decode(boot.payload);
  const int driver_fd = spawning::open_parent_or_exit(boot.parent);
  signal(SIGPIPE, SIG_IGN);

  const int front = transport::listen_on(config.front_endpoint);
  const int back = transport::listen_on(config.back_endpoint);
  if (front < 0 || back < 0) {
    logger().error("router: cannot listen on its endpoints: {}", std::strerror(errno));
    return 1;
  }
  // Clients may connect now and succeed at once.
  spawning::signal_ready(boot.ready_fd);
  const long uid = static_cast<long>(getuid());
  // A frame over the limit disconnects its sender instead of being buffered whole.
  const std::size_t frame_limit = config.max_message_bytes;

  ProcessIo io(config.back_endpoint, boot.driver);
  RouterCore core(config, io);
  core.start(Clock::now());
  logger().debug("router: serving {} workers", config.workers);

  bool busy = false;  // this loop turn handled a message
  transport::Spin spin;
  // Reads what c has and hands every complete message to the core.
  auto service = [&](Conn& c) -> transport::Reader::Fill {
    if (c.dead) return transport::Reader::Fill::kClosed;
    const auto fill = c.reader.fill(c.fd);
    std::string why;
    bool bad = false;
    if (c.id.empty()) {
      std::string id;
      if (c.reader.identity(&id, &bad, &why)) {
        if (!io.identify(c, std::move(id))) {
          logger().warn("router: refused a second connection claiming an identity in use");
          c.dead = true;
          return fill;
        }
      } else if (bad) {
        logger().warn("router: dropped a connection: {}", why);
        c.dead = true;
        return fill;
      }
    }
    if (!c.id.empty()) {
      transport::Incoming in;
      for (;;) {
        const auto got = c.reader.next(in, &why);
        if (got == transport::Reader::Next::kNone) break;
        if (got == transport::Reader::Next::kBadFrame) {
          logger().warn("router: dropped a malformed {} message: {}", c.front ? "client" : "worker", why);
          continue;
        }
        if (got == transport::Reader::Next::kBroken) {
          logger().warn("router: dropped the connection of {}: {}", c.front ? "a client" : "a worker", why);
          c.dead = true;
          return fill;
        }
        in.from = c.id;
        busy = true;
        if (c.front) {
          core.on_client(in, Clock::now());
        } else {
          core.on_worker(in, Clock::now());
        }
        if (c.dead) return fill;
      }
    }
    if (fill == transport::Reader::Fill::kClosed) c.dead = true;
    return fill;
  };
  // At most this many connections: below the descriptor limit, with room for the
  // workers' pidfds and the router's own.
  std::size_t max_conns = kMaxConns;
  if (rlimit nofile{}; ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
    const std::size_t reserve = 2 * static_cast<std::size_t>(config.workers) + 64;
    max_conns = std::min<std::size_t>(max_conns, nofile.rlim_cur > reserve ? nofile.rlim_cur - reserve : 16);
  }
  Clock::time_point listen_again{};  // after EMFILE: the listeners rest until then
  auto accept_all = [&](int listener, bool is_front) {
    for (;;) {
      const int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // The listener stays readable: polling it now would spin.
          logger().warn("router: cannot accept a connection: {}; pausing accepts for 100 ms",
                        std::strerror(errno));
          listen_again = Clock::now() + std::chrono::milliseconds(100);
        }
        return;  // EAGAIN: none left
      }
      const long peer = transport::peer_uid(fd);
      if (peer != uid) {
        logger().warn("router: refused a connection from uid {}: only uid {} may use this pool",
                      peer, uid);
        ::close(fd);
        continue;
      }
      if (io.conns().size() >= max_conns) {
        logger().warn("router: refused a connection: {} are open already", max_conns);
        ::close(fd);
        continue;
      }
      io.add(std::make_unique<Conn>(fd, is_front, frame_limit, Clock::now()));
    }
  };

  std::vector<pollfd> fds;
  std::vector<Conn*> fd_conns;
  std::vector<pid_t> fd_pids;
  bool driver_gone = false;
  while (!core.finished()) {
    fds.clear();
    fd_conns.clear();
    fd_pids.clear();
    const bool listening = Clock::now() >= listen_again;
    fds.push_back({listening ? front : -1, POLLIN, 0});
    fds.push_back({listening ? back : -1, POLLIN, 0});
    // Once the driver is gone its pidfd stays readable: stop watching it.
    fds.push_back({driver_gone ? -1 : driver_fd, POLLIN, 0});
    for (auto& [fd, c] : io.conns()) {
      fds.push_back({fd, static_cast<short>(POLLIN | (c->writer.pending() ? POLLOUT : 0)), 0});
      fd_conns.push_back(c.get());
    }
    const std::size_t first_child = fds.size();
    for (auto& [pid, child] : io.children()) {
      fds.push_back({child.pidfd, POLLIN, 0});
      fd_pids.push_back(pid);
    }
    const auto now = Clock::now();
    auto wake = core.next_tick();
    if (!listening) wake = std::min(wake, listen_again);
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now);
    // Right after forwarding, the answer is usually microseconds away: wait awake for
    // a moment first (see poll_spinning).
    const std::chrono::milliseconds timeout(std::max<long>(0, wait.count()) + 1);
    // Spinning pays while callers wait on a few answers; with bulk work queued the CPU
    // is the workers'.
    if (busy && core.outstanding() <= static_cast<std::size_t>(config.workers)) {
      transport::poll_spinning(fds.data(), fds.size(), timeout, spin);
    } else {
      transport::poll(fds.data(), fds.size(), timeout);
    }
    busy = false;

    if (fds[0].revents & POLLIN) accept_all(front, true);
    if (fds[1].revents & POLLIN) accept_all(back, false);
    for (std::size_t k = 0; k < fd_conns.size(); ++k) {
      Conn& c = *fd_conns[k];
      const short ev = fds[3 + k].revents;
      if (ev & (POLLIN | POLLHUP | POLLERR)) service(c);
      if (ev & POLLOUT) ProcessIo::flush(c);
    }
    for (std::size_t k = 0; k < fd_pids.size(); ++k) {
      if (!(fds[first_child + k].revents & POLLIN)) continue;
      const pid_t pid = fd_pids[k];
      auto it = io.children().find(pid);
      if (it == io.children().end()) continue;
      auto status = spawning::reap(it->second, false);
      if (!status) continue;
      // Everything the worker wrote before it died is in its connection's buffer now:
      // read it all before its death is handled, so no result it sent is lost.
      if (Conn* c = io.worker_conn(pid)) {
        while (!c->dead && service(*c) == transport::Reader::Fill::kData) {
        }
        c->dead = true;
      }
      io.forget_worker(pid);
      core.on_worker_exit(pid, *status, Clock::now());
    }
    if (!driver_gone && (fds[2].revents & POLLIN)) {
      logger().debug("router: driver {} is gone; stopping", boot.driver);
      driver_gone = true;
      core.terminate();
    }
    const auto after = Clock::now();
    for (auto& [fd, c] : io.conns()) {
      if (c->id.empty() && after - c->opened > kIdentityTimeout) {
        logger().warn("router: closed a connection that announced no identity in {} s",
                      std::chrono::duration_cast<std::chrono::seconds>(kIdentityTimeout).count());
        c->dead = true;
      }
    }
    if (after >= core.next_tick()) core.on_tick(after);
    io.flush_all();
    io.reap_conns();
  }
  // What is still queued for the driver (the last results, POOL_ERRORs) goes out.
  io.flush_all();
  for (auto& [fd, c] : io.conns()) {
    if (!c->dead && c->front && c->writer.pending()) {
      const auto until = Clock::now() + std::chrono::seconds(1);
      while (c->writer.flush(c->fd) == transport::Writer::Status::kPending && Clock::now() < until) {
        pollfd p{c->fd, POLLOUT, 0};
        ::poll(&p, 1, 10);
      }
    }
  }
  for (auto& [pid, child] : io.children()) {
    ::kill(pid, SIGKILL);
    spawning::reap(child, true);
  }
  ::close(front);
  ::close(back);
  return 0;
}

}  // namespace router
}  // namespace mpx
