// The router process: real sockets and real children around RouterCore. Clients and
// workers connect over unix streams (framework/transport); each connection names
// itself first, and RouterCore routes on those names. One Loop waits on the listeners,
// every connection, every worker's pidfd and the driver's.
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "framework/base/heap.h"
#include "framework/router/local_workers.h"
#include "framework/router/remote_workers.h"
#include "framework/router/router.h"
#include "framework/transport/loop.h"
#include "mpx/errors.h"
#include "mpx/runtime.h"

namespace mpx {
namespace router {
namespace {

// A peer's queued frames are written at once from this size on (see deliver).
constexpr std::size_t kWriteNowBytes = 64 << 10;

// A stream connection to a client (a Pool's driver) or a worker.
struct Conn {
  transport::Connection conn;
  bool front = false;  // accepted on the clients' endpoint
  Clock::time_point opened;
  transport::Loop::Id watch = 0;
  bool dead = false;   // closed at the end of the loop turn
  // Writing failed (EPIPE: the peer closed). Not dead: what the peer wrote before it
  // closed is still read, to the end of the stream, so no result it sent is lost.
  bool write_gone = false;
  bool dirty = false;  // has frames queued this turn (ProcessIo::flush_all)
  bool watching_out = false;  // the loop waits for it to take more bytes
  bool blocked = false;  // its descriptors were refused for now (ProcessIo::retry_blocked)
  Conn(transport::Connection c, bool is_front, Clock::time_point now)
      : conn(std::move(c)), front(is_front), opened(now) {}
};

// Messages to peers by identity: what RouterCore sends is queued on the peer's
// connection and written at the end of the loop turn (or at once when large).
class ProcessIo final : public RouterIo {
 public:
  explicit ProcessIo(transport::Loop& loop) : loop_(loop) {}

  void send_client(std::string_view client, const wire::Header& h, transport::Message&& payload) override {
    deliver(client, transport::header_message(h), std::move(payload));
  }
  void forward_client(std::string_view client, transport::Message&& header_frame,
                      transport::Message&& payload, transport::Fds&& fds) override {
    deliver(client, std::move(header_frame), std::move(payload), std::move(fds));
  }
  void send_worker(std::string_view worker, const wire::Header& h, transport::Message&& payload) override {
    deliver(worker, transport::header_message(h), std::move(payload));
  }
  void forward_worker(std::string_view worker, transport::Message&& header_frame,
                      transport::Message&& payload) override {
    deliver(worker, std::move(header_frame), std::move(payload));
  }
  bool open_lane(std::string_view worker, std::string_view client, pid_t worker_pid) override {
    if (!connected(worker) || !connected(client)) return false;
    int ends[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0) {
      logger().debug("router: no lane for {}: socketpair: {}", client, std::strerror(errno));
      return false;
    }
    const wire::Header h = wire::Lane{static_cast<std::int32_t>(worker_pid)}.header();
    transport::Fds to_worker, to_client;
    to_worker.push(ends[0]);
    to_client.push(ends[1]);
    deliver(worker, transport::header_message(h), transport::Message(), std::move(to_worker));
    deliver(client, transport::header_message(h), transport::Message(), std::move(to_client));
    return true;
  }
  // Reads what c has and hands every complete message to the core (set by run_router).
  std::function<transport::Reader::Fill(Conn&)> service;
  // Workers on other hosts, when the pool listens.
  void set_remote(RemoteWorkers* remote) { remote_ = remote; }

  // Worker id has ended: everything it wrote before it died is in its connection's
  // buffer now; it is all read (and handed to the core) before its death is, so no
  // result it sent is lost.
  void drain(std::string_view id) {
    auto c = by_id_.find(id);
    if (c == by_id_.end()) return;
    Conn& conn = *c->second;
    while (!conn.dead && service(conn) == transport::Reader::Fill::kData) {
    }
    conn.dead = true;
  }

  // ---- Connections ----
  std::map<int, std::unique_ptr<Conn>>& conns() { return conns_; }
  void add(std::unique_ptr<Conn> c) {
    Conn* raw = c.get();
    raw->watch = loop_.watch(raw->conn.fd(), POLLIN, [this, raw](short ev) {
      if (ev & (POLLIN | POLLHUP | POLLERR)) service(*raw);
      if (ev & POLLOUT) flush(*raw);
    });
    conns_[raw->conn.fd()] = std::move(c);
  }
  // Registers c under id once its preamble arrived; false (and c is to be dropped)
  // when that identity is taken already.
  bool identify(Conn& c) {
    if (by_id_.count(c.conn.identity())) return false;
    by_id_[c.conn.identity()] = &c;
    return true;
  }
  // Writes what c's connection holds; a peer that is gone for writing gets nothing more.
  void flush(Conn& c) {
    if (c.dead || c.write_gone) return;
    const auto status = c.conn.flush();
    if (status == transport::Writer::Status::kGone) {
      c.write_gone = true;
      c.conn.discard_pending();
    }
    if (status == transport::Writer::Status::kBlocked) {
      // Results' descriptors waiting for the driver to read earlier ones: retried on a
      // timer, since the socket itself polls writable.
      if (!c.blocked) {
        logger().debug("router: {} has not yet read enough of the descriptors sent to it "
                       "(ETOOMANYREFS): its results wait",
                       c.conn.identity());
        c.blocked = true;
        blocked_.push_back(&c);
      }
      if (retry_at_ == Clock::time_point::max()) retry_at_ = Clock::now() + kBlockedRetry;
    }
    const bool want = c.conn.pending() && status != transport::Writer::Status::kBlocked;
    if (want != c.watching_out) {
      c.watching_out = want;
      loop_.set_events(c.watch, static_cast<short>(POLLIN | (want ? POLLOUT : 0)));
    }
  }
  // When the connections whose descriptors were refused are to be tried again.
  Clock::time_point retry_at() const { return retry_at_; }
  void retry_blocked(Clock::time_point now) {
    if (now < retry_at_) return;
    retry_at_ = Clock::time_point::max();
    std::vector<Conn*> blocked = std::move(blocked_);
    blocked_.clear();
    for (Conn* c : blocked) {
      c->blocked = false;
      flush(*c);
    }
  }
  // Closes the connections marked dead.
  void reap_conns() {
    for (auto it = conns_.begin(); it != conns_.end();) {
      Conn& c = *it->second;
      if (!c.dead) {
        ++it;
        continue;
      }
      if (c.blocked) blocked_.erase(std::find(blocked_.begin(), blocked_.end(), &c));
      auto named = by_id_.find(c.conn.identity());
      if (named != by_id_.end() && named->second == &c) by_id_.erase(named);
      loop_.unwatch(c.watch);
      it = conns_.erase(it);
    }
  }
  // Writes what this turn queued for each peer.
  void flush_all() {
    for (Conn* c : dirty_) {
      c->dirty = false;
      flush(*c);
    }
    dirty_.clear();
  }

 private:
  // Whether peer id is connected here and may be written to.
  bool connected(std::string_view id) const {
    auto it = by_id_.find(id);
    return it != by_id_.end() && !it->second->dead && !it->second->write_gone;
  }

  // fds reach only local peers: a frame forwarded to another host drops them, and its
  // header still counts them, so that host's reader finds them missing, never another
  // frame's (only results carry any, and results go to local clients).
  void deliver(std::string_view to, transport::Message&& header_frame, transport::Message&& payload,
               transport::Fds&& fds = {}) {
    auto it = by_id_.find(to);
    if (it == by_id_.end() && remote_ && remote_->forward(to, std::move(header_frame), std::move(payload))) {
      return;
    }
    if (it == by_id_.end() || it->second->dead || it->second->write_gone) {
      // Its peer is gone (a driver that exited, a dead worker): the message has nobody
      // to go to and is dropped.
      logger().debug("router: dropped a message for {}, which is not connected", to);
      return;
    }
    Conn& c = *it->second;
    c.conn.queue(std::move(header_frame), std::move(payload), std::move(fds));
    // Small frames are written at the end of the loop turn (flush_all): what one turn
    // forwards to a peer leaves in one system call, and nothing waits longer than that
    // turn. Large ones leave at once, so the peer works while the rest is read.
    if (c.conn.pending_bytes() >= kWriteNowBytes) {
      flush(c);
      return;
    }
    if (!c.dirty) {
      c.dirty = true;
      dirty_.push_back(&c);
    }
  }

  static constexpr auto kBlockedRetry = std::chrono::milliseconds(2);
  std::vector<Conn*> dirty_;  // connections with frames queued this turn
  std::vector<Conn*> blocked_;  // connections whose descriptors were refused for now
  Clock::time_point retry_at_ = Clock::time_point::max();
  RemoteWorkers* remote_ = nullptr;
  transport::Loop& loop_;
  std::map<int, std::unique_ptr<Conn>> conns_;  // by fd
  std::map<std::string, Conn*, std::less<>> by_id_;
};

// This host's workers and, when the pool listens, those of node agents: each worker id
// belongs to one of them.
class Placement final : public WorkerSupervisor {
 public:
  explicit Placement(LocalWorkers& local) : local_(local) {}
  RemoteWorkers* remote = nullptr;
  Started spawn(const std::string& name) override { return local_.spawn(name); }
  Started spawn_at(const std::string& name, const std::string& place) override {
    if (place.empty() || remote == nullptr) return local_.spawn(name);
    return remote->spawn_at(name, place);
  }
  void kill(std::string_view id) override {
    if (remote && remote->owns(id)) {
      remote->kill(id);
    } else {
      local_.kill(id);
    }
  }
  bool is_stopped(std::string_view id) override {
    return remote && remote->owns(id) ? remote->is_stopped(id) : local_.is_stopped(id);
  }
  // A remote worker shares no page with the router: its queued chunks of a cancelled
  // call still run (their answers are dropped).
  std::optional<std::uint64_t> cancel_call(std::string_view id, std::uint64_t call_id) override {
    if (remote && remote->owns(id)) return std::nullopt;
    return local_.cancel_call(id, call_id);
  }
  // Nor can its chunks be taken back: they wait for it.
  std::optional<std::uint64_t> take_back(std::string_view id, std::uint64_t sent) override {
    if (remote && remote->owns(id)) return std::nullopt;
    return local_.take_back(id, sent);
  }
  bool runs_chunk(std::string_view id) override {
    return !(remote && remote->owns(id)) && local_.runs_chunk(id);
  }
  std::optional<LaneChunk> running_lane_chunk(std::string_view id) override {
    if (remote && remote->owns(id)) return std::nullopt;
    return local_.running_lane_chunk(id);
  }
  wire::LaneCounts lane_counts(std::string_view id) override {
    if (remote && remote->owns(id)) return {};
    return local_.lane_counts(id);
  }

 private:
  LocalWorkers& local_;
};

// Connections that announce no identity within this long are closed.
constexpr auto kIdentityTimeout = std::chrono::seconds(10);
// More connections than this at once are refused.
constexpr std::size_t kMaxConns = 4096;

}  // namespace

int run_router(const spawning::Bootstrap& boot) {
  Config decoded;
  try {
    decoded = Config::decode(boot.payload);
  } catch (const std::exception& e) {
    logger().error("router: {}", e.what());
    spawning::signal_failure(boot.ready_fd, std::string("its configuration did not decode: ") + e.what());
    return 1;
  }
  const Config config = std::move(decoded);
  const int driver_fd = spawning::open_parent_or_exit(boot.parent);
  signal(SIGPIPE, SIG_IGN);

  transport::Listener front = transport::Listener::bind(transport::Endpoint::from(config.front_endpoint));
  const int front_error = errno;
  transport::Listener back = transport::Listener::bind(transport::Endpoint::from(config.back_endpoint));
  if (!front || !back) {
    const std::string why = std::string("cannot listen on its endpoints: ") +
                            std::strerror(!front ? front_error : errno);
    logger().error("router: {}", why);
    spawning::signal_failure(boot.ready_fd, why);
    return 1;
  }
  // A frame over the limit disconnects its sender instead of being buffered whole.
  const std::size_t frame_limit = config.max_message_bytes;

  transport::Loop loop;
  ProcessIo io(loop);
  RouterCore* core_ptr = nullptr;
  bool busy = false;  // this loop turn handled a message
  base::IdleTrim idle;  // the heap's kept buffers go back once the router idles
  LocalWorkers workers(config.back_endpoint, boot.driver, loop,
                       [&](const std::string& id, int status, std::optional<std::uint64_t> mark,
                           std::string unsent, const LaneReport& lane) {
                         io.drain(id);
                         core_ptr->on_unsent_results(id, unsent, Clock::now());
                         core_ptr->on_worker_exit(id, status, mark, Clock::now(), lane);
                       });
  Placement placement(workers);
  // Only a pool that listens loads libzmq (RemoteWorkers opens it).
  std::unique_ptr<RemoteWorkers> remote;
  if (!config.listen.empty()) {
    RemoteWorkers::Events events;
    events.joined = [&](const std::string& place, int slots) { core_ptr->add_host(place, slots, Clock::now()); };
    events.lost = [&](const std::string& place, const std::string& why) {
      core_ptr->lose_host(place, why, Clock::now());
    };
    events.message = [&](transport::Incoming& in) {
      if (!wire::is_heartbeat(in.header.type)) busy = true;
      core_ptr->on_worker(in, Clock::now());
    };
    events.exited = [&](const std::string& id, int status, std::optional<std::uint64_t> mark,
                        const std::string& unsent) {
      core_ptr->on_unsent_results(id, unsent, Clock::now());
      core_ptr->on_worker_exit(id, status, mark, Clock::now());
    };
    try {
      remote = std::make_unique<RemoteWorkers>(config.listen, config.cluster_key, config.host_timeout, loop,
                                               std::move(events));
    } catch (const std::exception& e) {
      logger().error("router: {}", e.what());
      spawning::signal_failure(boot.ready_fd, e.what());
      return 1;
    }
    placement.remote = remote.get();
    io.set_remote(remote.get());
  }
  RouterCore core(config, io, placement);
  core_ptr = &core;
  if (remote) core.set_endpoint(remote->endpoint());
  // Clients may connect now and succeed at once.
  spawning::signal_ready(boot.ready_fd);

  io.service = [&](Conn& c) -> transport::Reader::Fill {
    if (c.dead) return transport::Reader::Fill::kClosed;
    const auto fill = c.conn.fill();
    std::string why;
    bool bad = false;
    if (c.conn.identity().empty()) {
      if (c.conn.read_identity(&bad, &why)) {
        if (!io.identify(c)) {
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
    if (!c.conn.identity().empty()) {
      transport::Incoming in;
      for (;;) {
        const auto got = c.conn.next(in, &why);
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
        in.from = c.conn.identity();
        if (!wire::is_heartbeat(in.header.type)) busy = true;
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
  spawning::raise_descriptor_limit();
  if (rlimit nofile{}; ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
    const std::size_t reserve = 2 * static_cast<std::size_t>(config.workers) + 64;
    max_conns = std::min<std::size_t>(max_conns, nofile.rlim_cur > reserve ? nofile.rlim_cur - reserve : 16);
  }
  Clock::time_point listen_again{};  // after EMFILE: the listeners rest until then
  transport::Loop::Id front_watch = 0, back_watch = 0, status_watch = 0;
  auto rest_listeners = [&] {
    // A listener stays readable: polling it now would spin.
    listen_again = Clock::now() + std::chrono::milliseconds(100);
    loop.set_events(front_watch, 0);
    loop.set_events(back_watch, 0);
    if (status_watch != 0) loop.set_events(status_watch, 0);
  };
  auto accept_all = [&](transport::Listener& listener, bool is_front) {
    for (;;) {
      transport::Connection conn;
      long peer = -1;
      switch (listener.accept(&conn, &peer, frame_limit)) {
        case transport::Listener::Accept::kNone:
          return;
        case transport::Listener::Accept::kFailed:
          if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            logger().warn("router: cannot accept a connection: {}; pausing accepts for 100 ms",
                          std::strerror(errno));
            rest_listeners();
          }
          return;
        case transport::Listener::Accept::kForeign:
          logger().warn("router: refused a connection from uid {}: only uid {} may use this pool",
                        peer, static_cast<long>(getuid()));
          continue;
        case transport::Listener::Accept::kAccepted:
          break;
      }
      if (io.conns().size() >= max_conns) {
        logger().warn("router: refused a connection: {} are open already", max_conns);
        continue;
      }
      io.add(std::make_unique<Conn>(std::move(conn), is_front, Clock::now()));
    }
  };
  // `mpx status`: one snapshot per connection of the same user. Under a descriptor
  // limit with little room (each worker needs a pidfd and a connection, each respawn a
  // few more for a moment) the workers come first: no status.
  StatusListener status_listener =
      StatusListener::open("router", 4 * static_cast<std::size_t>(config.workers) + 32);
  const std::string program = command_line(boot.driver);
  if (status_listener) {
    status_watch = loop.watch(status_listener.fd(), POLLIN, [&](short) {
      const bool accepted = status_listener.answer_waiting([&] {
        PoolStatus s = core.status(Clock::now());
        s.router_pid = static_cast<std::int32_t>(getpid());
        s.driver_pid = static_cast<std::int32_t>(boot.driver);
        s.program = program;
        s.front_endpoint = config.front_endpoint;
        if (remote) {
          s.listen_endpoint = remote->endpoint();
          s.nodes = remote->nodes(Clock::now());
        }
        return encode_status(s);
      });
      if (!accepted) {
        logger().warn("router: cannot accept a status reader: {}; pausing accepts for 100 ms", std::strerror(errno));
        rest_listeners();
      }
    });
  }
  front_watch = loop.watch(front.fd(), POLLIN, [&](short) { accept_all(front, true); });
  back_watch = loop.watch(back.fd(), POLLIN, [&](short) { accept_all(back, false); });
  // New peers, status readers and the driver's death may wait for the end of a spin.
  loop.set_cold(front_watch);
  loop.set_cold(back_watch);
  if (status_watch != 0) loop.set_cold(status_watch);
  // Once the driver is gone its pidfd stays readable: it is watched no more.
  transport::Loop::Id driver_watch = 0;
  driver_watch = loop.watch(driver_fd, POLLIN, [&](short) {
    logger().debug("router: driver {} is gone; stopping", boot.driver);
    loop.unwatch(driver_watch);
    core.terminate();
  });
  loop.set_cold(driver_watch);

  core.start(Clock::now());
  logger().debug("router: serving {} workers", config.workers);
  while (!core.finished()) {
    const bool resting = listen_again != Clock::time_point{};
    if (resting && Clock::now() >= listen_again) {
      listen_again = Clock::time_point{};
      loop.set_events(front_watch, POLLIN);
      loop.set_events(back_watch, POLLIN);
      if (status_watch != 0) loop.set_events(status_watch, POLLIN);
    }
    auto wake = core.next_tick();
    if (remote) wake = std::min(wake, remote->next_tick());
    if (listen_again != Clock::time_point{}) wake = std::min(wake, listen_again);
    wake = std::min(wake, io.retry_at());
    wake = std::min(wake, idle.deadline());
    // Right after forwarding, the answer is usually microseconds away: wait awake for
    // a moment first, while callers wait on a few answers; with bulk work queued the
    // CPU is the workers'.
    const bool spin = busy && core.outstanding() <= static_cast<std::size_t>(config.workers);
    busy = false;
    loop.run_once(wake, spin);
    idle.after_wait(busy);
    const auto after = Clock::now();
    for (auto& [fd, c] : io.conns()) {
      if (c->conn.identity().empty() && after - c->opened > kIdentityTimeout) {
        logger().warn("router: closed a connection that announced no identity in {} s",
                      std::chrono::duration_cast<std::chrono::seconds>(kIdentityTimeout).count());
        c->dead = true;
      }
    }
    if (after >= core.next_tick()) core.on_tick(after);
    if (remote) remote->tick(after);
    io.retry_blocked(after);
    io.flush_all();
    io.reap_conns();
  }
  // What is still queued for the driver (the last results, POOL_ERRORs) goes out.
  io.flush_all();
  for (auto& [fd, c] : io.conns()) {
    if (!c->dead && c->front && c->conn.pending()) {
      const auto until = Clock::now() + std::chrono::seconds(1);
      for (auto status = c->conn.flush();
           (status == transport::Writer::Status::kPending || status == transport::Writer::Status::kBlocked) &&
           Clock::now() < until;
           status = c->conn.flush()) {
        pollfd p{c->conn.fd(), POLLOUT, 0};
        ::poll(&p, 1, 10);
      }
    }
  }
  if (remote) remote->quit_all("the pool's router is stopping");
  workers.kill_all();
  return 0;
}

}  // namespace router
}  // namespace mpx
