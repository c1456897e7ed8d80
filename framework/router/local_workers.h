// LocalWorkers: a pool's workers as children of its router, on this host.
//
// Each worker is a posix_spawn of this program (framework/spawn) connecting back with
// an unguessable identity, watched through its pidfd in the router's Loop, and sharing
// a page of memory with the router (wire::WorkerShared): the wire::chunk_mark of the
// chunk it runs (0 between chunks), written by the worker, read here after its death, so
// the router knows which chunk killed it even though the worker is gone; the results it
// finished and had not written yet (worker::ResultBatch), read here after its death so
// that none is lost with it; the calls cancelled while it held their chunks, which
// it then skips; and the lane chunk it runs and what its lane carried (wire::Lane). The
// memory limit is not
// the supervisor's business: a worker sets it on itself from CONFIG, wherever it runs.
#ifndef MPX_FRAMEWORK_ROUTER_LOCAL_WORKERS_H_
#define MPX_FRAMEWORK_ROUTER_LOCAL_WORKERS_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "framework/router/router.h"
#include "framework/spawn/spawn.h"
#include "framework/transport/loop.h"
#include "framework/wire/wire.h"

namespace mpx {
namespace router {

class LocalWorkers final : public WorkerSupervisor {
 public:
  // Called from the Loop once a worker ended: its id, wait status, running mark, and
  // the frames of the results it had not written (whole frames, possibly some that
  // its socket holds too).
  using OnExit = std::function<void(const std::string& id, int wait_status,
                                    std::optional<std::uint64_t> running_mark, std::string unsent,
                                    const LaneReport& lane)>;
  // Workers connect to endpoint; they belong to the pool of driver (killed with it).
  LocalWorkers(std::string endpoint, pid_t driver, transport::Loop& loop, OnExit on_exit);
  ~LocalWorkers() override;  // kills and reaps every worker left

  Started spawn(const std::string& name) override;
  void kill(std::string_view id) override;
  bool is_stopped(std::string_view id) override;
  std::optional<std::uint64_t> cancel_call(std::string_view id, std::uint64_t call_id) override;
  std::optional<std::uint64_t> take_back(std::string_view id, std::uint64_t sent) override;
  bool runs_chunk(std::string_view id) override;
  std::optional<LaneChunk> running_lane_chunk(std::string_view id) override;
  wire::LaneCounts lane_counts(std::string_view id) override;
  void kill_all();

 private:
  struct Child {
    spawning::Child process;
    transport::Loop::Id watch = 0;
    wire::WorkerShared* shared = nullptr;  // the shared page; null if it could not be made
  };
  void exited(const std::string& id);
  void release(Child& child);

  const std::string endpoint_;
  const pid_t driver_;
  transport::Loop& loop_;
  OnExit on_exit_;
  std::map<std::string, Child, std::less<>> children_;  // by worker id
};

}  // namespace router
}  // namespace mpx

#endif  // MPX_FRAMEWORK_ROUTER_LOCAL_WORKERS_H_
