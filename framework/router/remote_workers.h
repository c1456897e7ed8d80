// RemoteWorkers: a pool's workers on other hosts, run by node agents
// (framework/node/agent.h) that dial the router's ZeroMQ ROUTER socket.
//
// The router binds one ROUTER (ROUTER_MANDATORY: a message for a peer that is gone is
// refused, not dropped unseen; ROUTER_HANDOVER=0: a second connection cannot take over
// an agent's routing id) with CURVE, and before it a ZAP handler that admits only the
// agent keys of the cluster key file (libzmq admits any key when no handler is bound
// when the ROUTER binds). Both sockets wait in the router's Loop (ZMQ_FD); messages
// ZeroMQ cannot take yet wait in Link's queue.
//
// An agent's hello carries its binary's build-id and the hash of its task names; a
// mismatch is refused with a message saying which. An admitted agent is a place: its
// workers are started there (spawn_at), killed by message, and reported ended by the
// agent after their last frames (the link keeps order). An agent silent for
// host_timeout is lost: every worker it ran at once (Events::lost), and whatever it
// sends afterwards is dropped and answered with Q (it then kills its workers and exits).
#ifndef MPX_FRAMEWORK_ROUTER_REMOTE_WORKERS_H_
#define MPX_FRAMEWORK_ROUTER_REMOTE_WORKERS_H_

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "framework/node/zmq.h"
#include "framework/router/router.h"
#include "framework/transport/loop.h"

namespace mpx {
namespace router {

class RemoteWorkers final : public WorkerSupervisor {
 public:
  struct Events {
    std::function<void(const std::string& place, int slots)> joined;
    std::function<void(const std::string& place, const std::string& why)> lost;
    std::function<void(transport::Incoming& in)> message;  // from a remote worker
    // unsent: the worker's results it had not written (node::Exit::unsent).
    std::function<void(const std::string& id, int wait_status, std::optional<std::uint64_t> mark,
                       const std::string& unsent)>
        exited;
  };
  // Loads (or creates) the key file, binds the ZAP handler and the ROUTER on listen.
  // Throws mpx::Error naming what failed.
  RemoteWorkers(const std::string& listen, const std::string& key_file,
                std::chrono::milliseconds host_timeout, transport::Loop& loop, Events events);
  ~RemoteWorkers() override;

  // Where agents dial: the bound endpoint, a wildcard address replaced by this host's.
  const std::string& endpoint() const { return endpoint_; }

  Started spawn(const std::string& name) override;  // throws: remote workers need a place
  Started spawn_at(const std::string& name, const std::string& place) override;
  void kill(std::string_view id) override;
  bool is_stopped(std::string_view id) override;
  // A remote worker shares no page with the router: nullopt (its chunks still run).
  std::optional<std::uint64_t> cancel_call(std::string_view, std::uint64_t) override { return std::nullopt; }
  std::optional<std::uint64_t> take_back(std::string_view, std::uint64_t) override { return std::nullopt; }
  bool owns(std::string_view id) const { return worker_rid_.count(id) != 0; }
  // Sends a frame to remote worker id; false when id is not one.
  bool forward(std::string_view id, transport::Message&& header_frame, transport::Message&& payload);
  // Heartbeats, lost agents, the send queue. Call at least every next_tick().
  void tick(Clock::time_point now);
  Clock::time_point next_tick() const { return next_beat_; }
  // Tells every agent the pool is gone.
  void quit_all(const std::string& why);
  // For `mpx status`: the connected agents, then the last few lost ones.
  std::vector<NodeStatus> nodes(Clock::time_point now) const;

 private:
  struct Agent {
    std::string rid;
    std::string place;
    std::string host;
    std::int64_t pid = 0;
    int slots = 0;
    Clock::time_point joined;
    Clock::time_point last_heard;
    std::set<std::string, std::less<>> workers;
    std::set<std::string, std::less<>> stopped;
  };
  void on_message(std::vector<transport::Message>& parts);
  void on_zap(std::vector<transport::Message>& parts);
  void admit(const std::string& rid, const std::string& hello);
  void lose(const std::string& rid, const std::string& why);
  void say(const std::string& rid, char kind, std::string_view a = {}, std::string_view b = {});

  const std::chrono::milliseconds host_timeout_;
  const std::chrono::milliseconds beat_interval_;
  Events events_;
  std::set<std::string> authorized_;  // raw 32-byte public keys
  node::Context context_;
  node::Socket zap_;
  node::Socket router_;
  std::unique_ptr<node::Link> zap_link_;
  std::unique_ptr<node::Link> link_;
  std::string endpoint_;
  std::map<std::string, Agent> agents_;                         // by routing id
  std::map<std::string, std::string, std::less<>> worker_rid_;  // worker id -> routing id
  std::map<std::string, std::string> place_rid_;                // place -> routing id
  std::set<std::string> lost_rids_;                             // their frames are dropped
  // The last kShownLost agents lost, for status: what they were, and why.
  struct Lost {
    Agent agent;
    std::string why;
  };
  std::deque<Lost> lost_;
  static constexpr std::size_t kShownLost = 8;
  int next_agent_ = 1;
  Clock::time_point next_beat_;
};

}  // namespace router
}  // namespace mpx

#endif  // MPX_FRAMEWORK_ROUTER_REMOTE_WORKERS_H_
