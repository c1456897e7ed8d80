#include "framework/node/agent.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>
#include <zmq.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "framework/node/keys.h"
#include "framework/node/protocol.h"
#include "framework/node/zmq.h"
#include "framework/router/local_workers.h"
#include "framework/transport/loop.h"
#include "framework/transport/transport.h"
#include "mpx/errors.h"
#include "mpx/runtime.h"

namespace mpx {
namespace node {
namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string node;
  std::string key;
  int slots = 0;
  std::chrono::seconds connect_timeout{30};
};

int parse_int(std::string_view flag, std::string_view value) {
  try {
    std::size_t used = 0;
    const int n = std::stoi(std::string(value), &used);
    if (used == value.size()) return n;
  } catch (const std::exception&) {
  }
  throw Error("mpx: " + std::string(flag) + " needs a number, got '" + std::string(value) + "'");
}

// One of this agent's workers, connected back over its unix stream.
struct WorkerLink {
  transport::Connection conn;
  transport::Loop::Id watch = 0;
  std::string router_id;  // "" until its identity preamble arrived
  bool writing = false;   // waits for POLLOUT
};

class Agent {
 public:
  explicit Agent(const Args& args)
      : args_(args),
        key_(ClusterKey::load(args.key, /*create=*/false)),
        endpoint_(transport::Endpoint::unique("node")),
        listener_(transport::Listener::bind(endpoint_)),
        workers_(endpoint_.str(), ::getpid(), loop_,
                 // Workers on other hosts get no lanes: their report has nothing to say.
                 [this](const std::string& id, int status, std::optional<std::uint64_t> mark,
                        std::string unsent, const router::LaneReport&) {
                   exited(id, status, mark, std::move(unsent));
                 }) {
    if (!listener_) throw Error("mpx: node agent: cannot listen for its workers");
    loop_.watch(listener_.fd(), POLLIN, [this](short) { accept(); });
  }

  int run() {
    dial();
    while (!code_) {
      if (rejoin_) {
        rejoin_ = false;
        dial();
      }
      const auto now = Clock::now();
      auto wake = welcomed_ ? std::min(next_beat_, last_heard_ + welcome_.host_timeout) : give_up_;
      loop_.run_once(std::max(wake, now + std::chrono::milliseconds(1)));
      const auto after = Clock::now();
      link_->service();
      if (code_) break;
      if (!welcomed_ && after >= give_up_) {
        std::fprintf(stderr,
                     "mpx: node agent: no answer from %s within %lld s: is the pool listening there, "
                     "and does its cluster key file authorise this agent's key?\n",
                     args_.node.c_str(), static_cast<long long>(args_.connect_timeout.count()));
        code_ = joined_before_ ? 3 : 1;
        break;
      }
      if (welcomed_ && after - last_heard_ > welcome_.host_timeout) {
        std::fprintf(stderr, "mpx: node agent: the router at %s was silent for more than %lld ms (or "
                     "this agent could not run as long: stopped, starved); killing this host's "
                     "workers, dialing again for %lld s\n",
                     args_.node.c_str(), static_cast<long long>(welcome_.host_timeout.count()),
                     static_cast<long long>(args_.connect_timeout.count()));
        drop_workers();
        rejoin_ = true;
        continue;
      }
      if (welcomed_ && after >= next_beat_) beat(after);
    }
    workers_.kill_all();
    link_->service();
    return *code_;
  }

 private:
  // A new DEALER (so a new routing id: the router forgets a lost agent's for good) and
  // a hello on it.
  void dial() {
    link_.reset();
    dealer_ = std::make_unique<Socket>(context_, Socket::kDealer);
    dealer_->set(ZMQ_CURVE_SERVERKEY, z85_decode(key_.router.public_key, "router-public"));
    dealer_->set(ZMQ_CURVE_PUBLICKEY, z85_decode(key_.agent.public_key, "agent-public"));
    dealer_->set(ZMQ_CURVE_SECRETKEY, z85_decode(key_.agent.secret_key, "agent-secret"));
    dealer_->set(ZMQ_RECONNECT_IVL, 100);
    dealer_->connect(args_.node);
    link_ = std::make_unique<Link>(*dealer_, loop_, [this](auto& parts) { on_router(parts); });
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    Hello hello;
    hello.host = host;
    hello.pid = ::getpid();
    hello.slots = args_.slots;
    hello.build_id = build_id();
    hello.tasks = tasks_hash();
    send(Kind::kHello, encode(hello));
    welcomed_ = false;
    give_up_ = Clock::now() + args_.connect_timeout;
    logger().info("node agent: dialing {} with {} slots", args_.node, args_.slots);
  }

  // The pool counts this host's workers lost: they are ended, and so is what they
  // were connected with.
  void drop_workers() {
    workers_.kill_all();
    for (auto& [id, w] : conns_) loop_.unwatch(w->watch);
    for (auto& w : unnamed_) loop_.unwatch(w->watch);
    conns_.clear();
    unnamed_.clear();
    local_of_.clear();
    router_of_.clear();
    last_stopped_.clear();
  }

  void send(Kind kind, std::string_view a = {}, std::string_view b = {}) {
    std::vector<transport::Message> parts;
    const char k = static_cast<char>(kind);
    parts.push_back(part(std::string_view(&k, 1)));
    if (!a.empty() || !b.empty()) parts.push_back(part(a));
    if (!b.empty()) parts.push_back(part(b));
    link_->send(std::move(parts));
  }

  void beat(Clock::time_point now) {
    send(Kind::kBeat);
    std::string stopped;
    for (const auto& [rid, local] : local_of_) {
      if (workers_.is_stopped(local)) stopped += (stopped.empty() ? "" : "\n") + rid;
    }
    if (stopped != last_stopped_) {
      const char k = static_cast<char>(Kind::kStopped);
      std::vector<transport::Message> parts{part(std::string_view(&k, 1)), part(stopped)};
      link_->send(std::move(parts));
      last_stopped_ = stopped;
    }
    next_beat_ = now + welcome_.heartbeat_interval;
  }

  void on_router(std::vector<transport::Message>& parts) {
    if (parts.empty() || parts[0].size() != 1) return;
    last_heard_ = Clock::now();
    const auto kind = static_cast<Kind>(*parts[0].data<char>());
    const auto arg = [&](std::size_t i) { return i < parts.size() ? std::string(parts[i].view()) : std::string(); };
    switch (kind) {
      case Kind::kWelcome:
        try {
          welcome_ = decode_welcome(arg(1));
        } catch (const std::exception& e) {
          std::fprintf(stderr, "mpx: node agent: %s\n", e.what());
          code_ = 1;
          return;
        }
        welcomed_ = true;
        joined_before_ = true;
        next_beat_ = last_heard_;
        logger().info("node agent: joined the pool at {}", args_.node);
        return;
      case Kind::kRefused:
        std::fprintf(stderr, "mpx: node agent: the pool at %s refused this agent: %s\n", args_.node.c_str(),
                     arg(1).c_str());
        code_ = 2;
        return;
      case Kind::kQuit:
        logger().info("node agent: the pool is gone ({}); exiting", arg(1));
        code_ = 0;
        return;
      case Kind::kLost:
        // Cut off or stopped for longer than the host timeout: the pool ran this host's
        // work elsewhere. Join again as a new agent with fresh workers.
        logger().warn("node agent: the pool declared this host lost ({}); joining again", arg(1));
        drop_workers();
        rejoin_ = true;
        return;
      case Kind::kBeat:
      case Kind::kPiece:  // heard; the Link keeps it for its message
        return;
      case Kind::kSpawn: {
        const std::string rid = arg(1);
        try {
          const std::string local = workers_.spawn(arg(2)).id;
          local_of_[rid] = local;
          router_of_[local] = rid;
        } catch (const std::exception& e) {
          logger().error("node agent: cannot start a worker: {}", e.what());
          Exit exit;
          exit.id = rid;
          send(Kind::kExit, encode(exit));
        }
        return;
      }
      case Kind::kKill: {
        auto it = local_of_.find(arg(1));
        if (it != local_of_.end()) workers_.kill(it->second);
        return;
      }
      case Kind::kMessage: {
        if (parts.size() != 4) return;
        auto it = local_of_.find(arg(1));
        if (it == local_of_.end()) return;
        auto c = conns_.find(it->second);
        if (c == conns_.end()) return;
        WorkerLink& w = *c->second;
        w.conn.queue(std::move(parts[2]), std::move(parts[3]));
        flush(w);
        return;
      }
      default:
        logger().warn("node agent: dropped an unexpected '{}' from the router", static_cast<char>(kind));
    }
  }

  void flush(WorkerLink& w) {
    if (w.conn.flush() == transport::Writer::Status::kGone) w.conn.discard_pending();
    const bool want = w.conn.pending();
    if (want != w.writing) {
      w.writing = want;
      loop_.set_events(w.watch, static_cast<short>(POLLIN | (want ? POLLOUT : 0)));
    }
  }

  void accept() {
    for (;;) {
      transport::Connection conn;
      long uid = -1;
      const auto got = listener_.accept(&conn, &uid);
      if (got == transport::Listener::Accept::kNone || got == transport::Listener::Accept::kFailed) return;
      if (got != transport::Listener::Accept::kAccepted) continue;
      auto w = std::make_unique<WorkerLink>();
      w->conn = std::move(conn);
      WorkerLink* raw = w.get();
      raw->watch = loop_.watch(raw->conn.fd(), POLLIN, [this, raw](short ev) {
        if (ev & POLLOUT) flush(*raw);
        if (ev & (POLLIN | POLLHUP | POLLERR)) read(*raw);
      });
      unnamed_.push_back(std::move(w));
    }
  }

  // Relays what w has; returns what the read found (kClosed: the stream ended).
  transport::Reader::Fill read(WorkerLink& w) {
    const auto fill = w.conn.fill();
    if (w.router_id.empty()) {
      bool bad = false;
      std::string why;
      if (!w.conn.read_identity(&bad, &why)) {
        if (bad || fill == transport::Reader::Fill::kClosed) close_unnamed(&w);
        return transport::Reader::Fill::kClosed;
      }
      auto r = router_of_.find(w.conn.identity());
      if (r == router_of_.end()) {
        close_unnamed(&w);
        return transport::Reader::Fill::kClosed;
      }
      w.router_id = r->second;
      name(&w);
    }
    transport::Incoming in;
    std::string why;
    for (;;) {
      const auto got = w.conn.next(in, &why);
      if (got == transport::Reader::Next::kNone) break;
      if (got != transport::Reader::Next::kFrame) {
        logger().warn("node agent: dropped a malformed message from a worker: {}", why);
        if (got == transport::Reader::Next::kBroken) {
          loop_.set_events(w.watch, 0);
          return transport::Reader::Fill::kClosed;
        }
        continue;
      }
      const char k = static_cast<char>(Kind::kMessage);
      std::vector<transport::Message> parts;
      parts.reserve(4);
      parts.push_back(part(std::string_view(&k, 1)));
      parts.push_back(part(w.router_id));
      parts.push_back(std::move(in.header_frame));
      parts.push_back(std::move(in.payload));
      link_->send(std::move(parts));
    }
    // Its end is reported by its pidfd (exited), which reads the rest.
    if (fill == transport::Reader::Fill::kClosed) loop_.set_events(w.watch, 0);
    return fill;
  }

  void close_unnamed(WorkerLink* w) {
    for (auto it = unnamed_.begin(); it != unnamed_.end(); ++it) {
      if (it->get() == w) {
        loop_.unwatch(w->watch);
        unnamed_.erase(it);
        return;
      }
    }
  }

  void name(WorkerLink* w) {
    for (auto it = unnamed_.begin(); it != unnamed_.end(); ++it) {
      if (it->get() == w) {
        conns_[w->conn.identity()] = std::move(*it);
        unnamed_.erase(it);
        return;
      }
    }
  }

  void exited(const std::string& local, int status, std::optional<std::uint64_t> mark, std::string unsent) {
    auto c = conns_.find(local);
    if (c != conns_.end()) {
      // Everything it wrote before it died goes first.
      while (read(*c->second) == transport::Reader::Fill::kData) {
      }
      loop_.unwatch(c->second->watch);
      conns_.erase(c);
    }
    auto r = router_of_.find(local);
    if (r == router_of_.end()) return;
    Exit exit;
    exit.id = r->second;
    exit.wait_status = status;
    exit.has_mark = mark.has_value();
    exit.mark = mark.value_or(0);
    exit.unsent = std::move(unsent);
    local_of_.erase(r->second);
    router_of_.erase(r);
    send(Kind::kExit, encode(exit));
  }

  const Args args_;
  transport::Loop loop_;
  ClusterKey key_;
  Context context_;
  std::unique_ptr<Socket> dealer_;
  transport::Endpoint endpoint_;
  transport::Listener listener_;
  router::LocalWorkers workers_;
  std::unique_ptr<Link> link_;
  std::vector<std::unique_ptr<WorkerLink>> unnamed_;                 // no identity yet
  std::map<std::string, std::unique_ptr<WorkerLink>, std::less<>> conns_;  // by local id
  std::map<std::string, std::string> local_of_;                      // router id -> local id
  std::map<std::string, std::string> router_of_;                     // local id -> router id
  Welcome welcome_;
  bool welcomed_ = false;
  bool joined_before_ = false;  // a pool welcomed it once: silence later is exit 3
  bool rejoin_ = false;         // dial again at the next turn (not from a Link handler)
  Clock::time_point give_up_;
  Clock::time_point last_heard_;
  Clock::time_point next_beat_;
  std::string last_stopped_;
  std::optional<int> code_;
};

}  // namespace

std::optional<int> run_agent_if_asked(int argc, char** argv) {
  Args args;
  bool asked = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a(argv[i]);
    const auto eq = a.find('=');
    const std::string_view flag = a.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? "" : a.substr(eq + 1);
    if (flag == "--mpx-node") {
      asked = true;
      args.node = value;
    } else if (flag == "--mpx-key") {
      args.key = value;
    } else if (flag == "--mpx-slots") {
      args.slots = parse_int(flag, value);
    } else if (flag == "--mpx-connect-timeout") {
      args.connect_timeout = std::chrono::seconds(parse_int(flag, value));
    }
  }
  if (!asked) return std::nullopt;
  ::signal(SIGPIPE, SIG_IGN);
  try {
    if (args.key.empty()) throw Error("mpx: --mpx-node needs --mpx-key=<the pool's cluster key file>");
    std::string why;
    if (!transport::Endpoint::parse(args.node, &why) || args.node.rfind("unix://", 0) == 0) {
      throw Error("mpx: --mpx-node=" + args.node +
                  " is not an endpoint an agent can dial: give the pool's endpoint(), "
                  "tcp://host:port (or ipc://path on the pool's own host)");
    }
    if (args.slots == 0) args.slots = cpu_count();
    if (args.slots < 1) throw Error("mpx: --mpx-slots must be at least 1");
    // Its workers inherit it: shared-memory handles refuse to open there (shm/segment.cc).
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    ::setenv("MPX_NODE_HOST", host, 1);
    // The pool creates the key file when it starts: agents started with it (srun) wait
    // for it to appear.
    const auto key_deadline = Clock::now() + args.connect_timeout;
    while (::access(args.key.c_str(), F_OK) != 0 && Clock::now() < key_deadline) ::usleep(100 * 1000);
    Agent agent(args);
    return agent.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}

}  // namespace node
}  // namespace mpx
