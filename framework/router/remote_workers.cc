#include "framework/router/remote_workers.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include <string>
#include <vector>

#include "framework/base/base.h"
#include "framework/node/keys.h"
#include "framework/node/protocol.h"
#include "mpx/errors.h"
#include "mpx/runtime.h"

namespace mpx {
namespace router {
namespace {

// libzmq asks the handler bound here about every CURVE handshake of the context.
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";

// The IPv4 address of each interface that is up and not loopback, in the kernel's order.
std::vector<std::string> interface_addresses() {
  std::vector<std::string> found;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return found;
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET) continue;
    if ((a->ifa_flags & IFF_UP) == 0 || (a->ifa_flags & IFF_LOOPBACK) != 0) continue;
    char text[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, text, sizeof text);
    found.emplace_back(text);
  }
  ::freeifaddrs(list);
  return found;
}

// The source address of this host's default route, or "" without one. Connecting a UDP
// socket only picks the route: no packet is sent, no name is looked up (a resolver
// that does not answer cannot hold up the pool's start).
std::string default_route_address() {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_in far{};
  far.sin_family = AF_INET;
  far.sin_port = htons(9);
  ::inet_pton(AF_INET, "198.51.100.1", &far.sin_addr);  // TEST-NET-2: no host has it
  sockaddr_in mine{};
  socklen_t len = sizeof mine;
  std::string found;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&far), sizeof far) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&mine), &len) == 0 &&
      mine.sin_addr.s_addr != htonl(INADDR_ANY) && (ntohl(mine.sin_addr.s_addr) >> 24) != 127) {
    char text[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, &mine.sin_addr, text, sizeof text);
    found = text;
  }
  ::close(fd);
  return found;
}

// The address to tell agents on other hosts, for a wildcard bind: the default route's
// (what Ray and Dask report; on a host with several networks the first interface may
// be one the agents cannot reach), else the first interface that is up and not
// loopback, else loopback. how: which of the three, for the log.
std::string host_address(std::string& how) {
  std::string routed = default_route_address();
  if (!routed.empty()) {
    how = "the default route's address";
    return routed;
  }
  const std::vector<std::string> all = interface_addresses();
  how = all.empty() ? "loopback: no interface is up" : "the first interface's address: no default route";
  return all.empty() ? "127.0.0.1" : all.front();
}

std::string text(const transport::Message& m) { return std::string(m.view()); }

}  // namespace

RemoteWorkers::RemoteWorkers(const std::string& listen, const std::string& key_file,
                             std::chrono::milliseconds host_timeout, transport::Loop& loop, Events events)
    : host_timeout_(host_timeout),
      beat_interval_(std::max(std::chrono::milliseconds(10), host_timeout / 4)),
      events_(std::move(events)),
      zap_(context_, node::Socket::kRep),
      router_(context_, node::Socket::kRouter) {
  const transport::Endpoint at = transport::Endpoint::from(listen);
  if (at.scheme() == transport::Endpoint::Scheme::kUnixAbstract) {
    throw Error("Pool: listen(\"" + listen + "\"): agents dial tcp://host:port or ipc://path");
  }
  const node::ClusterKey key = node::ClusterKey::load(key_file, /*create=*/true);
  if (key.router.secret_key.empty()) {
    throw Error("Pool: cluster key file '" + key_file + "' has no router-secret (is it an agent's copy?)");
  }
  for (const std::string& k : key.authorized) authorized_.insert(node::z85_decode(k, "an authorized key"));
  // The ZAP handler first: a CURVE server bound without one admits every key.
  zap_.bind(kZapEndpoint);
  zap_link_ = std::make_unique<node::Link>(zap_, loop, [this](auto& parts) { on_zap(parts); });
  router_.set(ZMQ_ROUTER_MANDATORY, 1);
  router_.set(ZMQ_ROUTER_HANDOVER, 0);
  router_.set(ZMQ_CURVE_SERVER, 1);
  router_.set(ZMQ_CURVE_SECRETKEY, node::z85_decode(key.router.secret_key, "router-secret"));
  router_.set(ZMQ_ZAP_DOMAIN, std::string_view("mpx"));
  router_.bind(at.str());
  endpoint_ = router_.get_string(ZMQ_LAST_ENDPOINT);
  const std::string wildcard = "tcp://0.0.0.0:";
  const bool wildcard_bound = endpoint_.compare(0, wildcard.size(), wildcard) == 0;
  std::string how;
  if (wildcard_bound) {
    endpoint_ = "tcp://" + host_address(how) + ":" + endpoint_.substr(wildcard.size());
  }
  link_ = std::make_unique<node::Link>(router_, loop, [this](auto& parts) { on_message(parts); });
  next_beat_ = Clock::now() + beat_interval_;
  if (wildcard_bound) {
    std::string others;
    for (const std::string& a : interface_addresses()) {
      if (endpoint_.find("//" + a + ":") == std::string::npos) others += (others.empty() ? "" : ", ") + a;
    }
    logger().info("router: agents may dial {}{}", endpoint_,
                  others.empty() ? std::string()
                                 : " (" + how + "; this host also has " + others +
                                       ": if agents reach it by one of those, give listen() that address)");
  } else {
    logger().info("router: agents may dial {}", endpoint_);
  }
}

RemoteWorkers::~RemoteWorkers() {
  link_.reset();
  zap_link_.reset();
}

void RemoteWorkers::on_zap(std::vector<transport::Message>& parts) {
  // Request: version, request id, domain, address, identity, mechanism, credentials.
  // Reply: version, request id, status code, status text, user id, metadata.
  if (parts.size() < 6) return;
  const std::string mechanism = text(parts[5]);
  const bool ok = mechanism == "CURVE" && parts.size() >= 7 && authorized_.count(text(parts[6])) != 0;
  if (!ok) {
    const std::string key = parts.size() >= 7 && parts[6].size() == 32 ? node::z85_encode(parts[6].view())
                                                                         : std::string("(none)");
    logger().warn("router: refused an agent at {} with key {}: not in the cluster key file",
                  text(parts[3]), key);
  }
  std::vector<transport::Message> reply;
  reply.push_back(node::part("1.0"));
  reply.push_back(parts[1]);
  reply.push_back(node::part(ok ? "200" : "400"));
  reply.push_back(node::part(ok ? "OK" : "key not authorised"));
  reply.push_back(node::part(""));
  reply.push_back(node::part(""));
  zap_link_->send(std::move(reply));
}

void RemoteWorkers::say(const std::string& rid, char kind, std::string_view a, std::string_view b) {
  std::vector<transport::Message> parts;
  parts.push_back(node::part(rid));
  parts.push_back(node::part(std::string_view(&kind, 1)));
  if (!a.empty() || !b.empty()) parts.push_back(node::part(a));
  if (!b.empty()) parts.push_back(node::part(b));
  link_->send(std::move(parts));
}

void RemoteWorkers::admit(const std::string& rid, const std::string& bytes) {
  node::Hello hello;
  try {
    hello = node::decode_hello(bytes);
  } catch (const std::exception& e) {
    say(rid, static_cast<char>(node::Kind::kRefused), std::string("malformed hello: ") + e.what());
    return;
  }
  std::string refusal;
  if (hello.build_id != node::build_id()) {
    refusal = "the agent runs another build of the program (build-id " + hello.build_id +
              ", the pool's is " + node::build_id() + "): run the same binary on every host";
  } else if (hello.tasks != node::tasks_hash()) {
    refusal = "the agent's program registers other tasks than the pool's: run the same binary on every host";
  } else if (hello.slots < 1) {
    refusal = "the agent offers no slots (--mpx-slots must be at least 1)";
  }
  if (!refusal.empty()) {
    logger().warn("router: refused agent {} (pid {}): {}", hello.host, hello.pid, refusal);
    say(rid, static_cast<char>(node::Kind::kRefused), refusal);
    return;
  }
  Agent& agent = agents_[rid];
  agent.rid = rid;
  agent.place = hello.host + " (agent " + std::to_string(hello.pid) + ", #" + std::to_string(next_agent_++) + ")";
  agent.host = hello.host;
  agent.pid = hello.pid;
  agent.slots = hello.slots;
  agent.joined = agent.last_heard = Clock::now();
  place_rid_[agent.place] = rid;
  node::Welcome welcome;
  welcome.heartbeat_interval = beat_interval_;
  welcome.host_timeout = host_timeout_;
  say(rid, static_cast<char>(node::Kind::kWelcome), node::encode(welcome));
  logger().info("router: host {} joined with {} workers", agent.place, hello.slots);
  events_.joined(agent.place, hello.slots);
}

void RemoteWorkers::on_message(std::vector<transport::Message>& parts) {
  if (parts.size() < 2 || parts[1].size() != 1) return;
  const std::string rid = text(parts[0]);
  const auto kind = static_cast<node::Kind>(*parts[1].data<char>());
  auto it = agents_.find(rid);
  if (it == agents_.end()) {
    // Pieces of a message from an agent not (or no longer) admitted are not kept, nor
    // answered one by one: its next whole message is.
    link_->forget(rid);
    if (kind == node::Kind::kPiece) return;
    if (kind == node::Kind::kHello && parts.size() >= 3 && !lost_rids_.count(rid)) {
      admit(rid, text(parts[2]));
    } else if (lost_rids_.count(rid) || kind != node::Kind::kHello) {
      // A lost agent woke up (SIGCONT, a healed network): what it says is late.
      say(rid, static_cast<char>(node::Kind::kLost), "this agent was declared lost; its work ran elsewhere");
    }
    return;
  }
  Agent& agent = it->second;
  agent.last_heard = Clock::now();
  switch (kind) {
    case node::Kind::kMessage: {
      if (parts.size() != 5) return;
      const std::string id = text(parts[2]);
      if (!agent.workers.count(id)) return;  // not one of its workers (any more)
      transport::Incoming in;
      in.from = id;
      in.header_frame = std::move(parts[3]);
      in.payload = std::move(parts[4]);
      std::string why;
      auto h = wire::decode(in.header_frame.data<char>(), in.header_frame.size(), &why);
      if (!h) {
        logger().warn("router: dropped a malformed message from {}: {}", agent.place, why);
        return;
      }
      in.header = *h;
      events_.message(in);
      return;
    }
    case node::Kind::kExit: {
      if (parts.size() != 3) return;
      node::Exit exit;
      try {
        exit = node::decode_exit(text(parts[2]));
      } catch (const std::exception& e) {
        logger().warn("router: dropped a malformed exit from {}: {}", agent.place, e.what());
        return;
      }
      if (!agent.workers.erase(exit.id)) return;
      agent.stopped.erase(exit.id);
      worker_rid_.erase(exit.id);
      std::optional<std::uint64_t> mark;
      if (exit.has_mark) mark = exit.mark;
      events_.exited(exit.id, exit.wait_status, mark, exit.unsent);
      return;
    }
    case node::Kind::kStopped: {
      agent.stopped.clear();
      if (parts.size() < 3) return;
      const std::string ids = text(parts[2]);
      for (std::size_t at = 0; at < ids.size();) {
        const auto nl = ids.find('\n', at);
        const std::string id = ids.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
        if (agent.workers.count(id)) agent.stopped.insert(id);
        if (nl == std::string::npos) break;
        at = nl + 1;
      }
      return;
    }
    case node::Kind::kBeat:
      return;
    case node::Kind::kPiece:
      return;  // heard; the Link keeps it for its message
    default:
      logger().warn("router: dropped an unexpected '{}' from {}", static_cast<char>(kind), agent.place);
  }
}

WorkerSupervisor::Started RemoteWorkers::spawn(const std::string& name) {
  throw Error("router: a remote worker needs a host (" + name + ")");
}

WorkerSupervisor::Started RemoteWorkers::spawn_at(const std::string& name, const std::string& place) {
  auto p = place_rid_.find(place);
  if (p == place_rid_.end()) throw Error("router: host " + place + " is gone");
  Agent& agent = agents_.at(p->second);
  const std::string id = "W" + base::random_token(16);
  agent.workers.insert(id);
  worker_rid_[id] = agent.rid;
  say(agent.rid, static_cast<char>(node::Kind::kSpawn), id, name);
  return {id, 0};
}

void RemoteWorkers::kill(std::string_view id) {
  auto w = worker_rid_.find(id);
  if (w != worker_rid_.end()) say(w->second, static_cast<char>(node::Kind::kKill), id);
}

bool RemoteWorkers::is_stopped(std::string_view id) {
  auto w = worker_rid_.find(id);
  if (w == worker_rid_.end()) return false;
  auto a = agents_.find(w->second);
  return a != agents_.end() && a->second.stopped.count(id) != 0;
}

bool RemoteWorkers::forward(std::string_view id, transport::Message&& header_frame, transport::Message&& payload) {
  auto w = worker_rid_.find(id);
  if (w == worker_rid_.end()) return false;
  std::vector<transport::Message> parts;
  parts.reserve(5);
  parts.push_back(node::part(w->second));
  const char kind = static_cast<char>(node::Kind::kMessage);
  parts.push_back(node::part(std::string_view(&kind, 1)));
  parts.push_back(node::part(id));
  parts.push_back(std::move(header_frame));
  parts.push_back(std::move(payload));
  link_->send(std::move(parts));
  return true;
}

void RemoteWorkers::lose(const std::string& rid, const std::string& why) {
  auto it = agents_.find(rid);
  if (it == agents_.end()) return;
  Agent agent = std::move(it->second);
  agents_.erase(it);
  lost_rids_.insert(rid);
  link_->forget(rid);
  place_rid_.erase(agent.place);
  for (const auto& id : agent.workers) worker_rid_.erase(id);
  say(rid, static_cast<char>(node::Kind::kLost), why);
  logger().warn("router: host {} lost: {}", agent.place, why);
  const std::string place = agent.place;
  lost_.push_back(Lost{std::move(agent), why});
  if (lost_.size() > kShownLost) lost_.pop_front();
  events_.lost(place, "host " + place + " lost: " + why);
}

std::vector<NodeStatus> RemoteWorkers::nodes(Clock::time_point now) const {
  auto status = [&](const Agent& a, bool connected) {
    NodeStatus n;
    n.place = a.place;
    n.host = a.host;
    n.agent_pid = a.pid;
    n.slots = a.slots;
    n.workers = connected ? static_cast<std::uint32_t>(a.workers.size()) : 0;
    n.connected = connected;
    n.joined_s_ago = std::chrono::duration<double>(now - a.joined).count();
    n.heard_s_ago = std::chrono::duration<double>(now - a.last_heard).count();
    return n;
  };
  std::vector<NodeStatus> out;
  for (const auto& [rid, agent] : agents_) out.push_back(status(agent, true));
  for (auto it = lost_.rbegin(); it != lost_.rend(); ++it) {
    out.push_back(status(it->agent, false));
    out.back().lost = it->why;
  }
  return out;
}

void RemoteWorkers::tick(Clock::time_point now) {
  link_->service();
  zap_link_->service();
  std::vector<std::string> silent;
  for (const auto& [rid, agent] : agents_) {
    if (now - agent.last_heard > host_timeout_) silent.push_back(rid);
  }
  for (const auto& rid : silent) {
    lose(rid, "its agent was silent for more than " + std::to_string(host_timeout_.count()) +
                  " ms (killed, stopped, or cut off)");
  }
  if (now >= next_beat_) {
    for (const auto& [rid, agent] : agents_) say(rid, static_cast<char>(node::Kind::kBeat));
    next_beat_ = now + beat_interval_;
  }
}

void RemoteWorkers::quit_all(const std::string& why) {
  for (const auto& [rid, agent] : agents_) say(rid, static_cast<char>(node::Kind::kQuit), why);
  link_->service();
  // Closing waits this long for the I/O thread to deliver them (an agent that misses
  // it exits after the host timeout anyway).
  router_.set(ZMQ_LINGER, 500);
}

}  // namespace router
}  // namespace mpx
