#include "framework/router/local_workers.h"

#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <new>

#include "framework/base/base.h"
#include "mpx/runtime.h"

namespace mpx {
namespace router {
namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kMarkBytes = (sizeof(wire::WorkerShared) + kPage - 1) / kPage * kPage;

}  // namespace

LocalWorkers::LocalWorkers(std::string endpoint, pid_t driver, transport::Loop& loop, OnExit on_exit)
    : endpoint_(std::move(endpoint)), driver_(driver), loop_(loop), on_exit_(std::move(on_exit)) {}

LocalWorkers::~LocalWorkers() { kill_all(); }

WorkerSupervisor::Started LocalWorkers::spawn(const std::string& name) {
  const std::string id = "W" + base::random_token(16);
  spawning::Spec spec;
  spec.role = Role::kWorker;
  spec.name = name;
  spec.bootstrap = endpoint_ + '\n' + id;
  spec.driver = driver_;
  // The chunk it is running (wire::chunk_mark) tells the chunk that killed a worker
  // from the ones it had finished or not started; its unsent results are those it had
  // finished. Pages are touched only as far as they are used.
  const int memfd = ::memfd_create("mpx-worker-mark", MFD_CLOEXEC);
  void* map = MAP_FAILED;
  if (memfd >= 0 && ::ftruncate(memfd, kMarkBytes) == 0) {
    map = ::mmap(nullptr, kMarkBytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  }
  if (map != MAP_FAILED) spec.share_fd = memfd;
  Child child;
  try {
    child.process = spawning::spawn_self(spec);
  } catch (...) {
    if (memfd >= 0) ::close(memfd);
    if (map != MAP_FAILED) ::munmap(map, kMarkBytes);
    throw;
  }
  if (memfd >= 0) ::close(memfd);
  if (map != MAP_FAILED) child.shared = new (map) wire::WorkerShared{};
  const pid_t pid = child.process.pid;
  child.watch = loop_.watch(child.process.pidfd, POLLIN, [this, id](short) { exited(id); });
  loop_.set_cold(child.watch);  // a death may wait for the end of a spin
  children_.emplace(id, child);
  return {id, pid};
}

void LocalWorkers::kill(std::string_view id) {
  auto it = children_.find(id);
  if (it != children_.end()) ::kill(it->second.process.pid, SIGKILL);
}

std::optional<std::uint64_t> LocalWorkers::cancel_call(std::string_view id, std::uint64_t call_id) {
  auto it = children_.find(id);
  if (it == children_.end() || it->second.shared == nullptr) return std::nullopt;
  return it->second.shared->cancel(call_id);
}

std::optional<std::uint64_t> LocalWorkers::take_back(std::string_view id, std::uint64_t sent) {
  auto it = children_.find(id);
  if (it == children_.end() || it->second.shared == nullptr) return std::nullopt;
  return it->second.shared->take_back(sent);
}

namespace {

// The lane chunk shared names, if the chunk marked running is that one.
std::optional<LaneChunk> lane_chunk_of(const wire::WorkerShared& shared, std::uint64_t mark) {
  if (mark == 0) return std::nullopt;
  LaneChunk c;
  c.call_id = shared.lane_call.load();
  c.start = shared.lane_start.load();
  if (wire::chunk_mark(c.call_id, c.start) != mark) return std::nullopt;
  c.count = shared.lane_count.load();
  c.pure = (shared.lane_flags.load() & wire::kFlagPure) != 0;
  return c;
}

}  // namespace

bool LocalWorkers::runs_chunk(std::string_view id) {
  auto it = children_.find(id);
  return it != children_.end() && it->second.shared != nullptr &&
         it->second.shared->running.load(std::memory_order_acquire) != 0;
}

std::optional<LaneChunk> LocalWorkers::running_lane_chunk(std::string_view id) {
  auto it = children_.find(id);
  if (it == children_.end() || it->second.shared == nullptr) return std::nullopt;
  return lane_chunk_of(*it->second.shared, it->second.shared->running.load());
}

wire::LaneCounts LocalWorkers::lane_counts(std::string_view id) {
  auto it = children_.find(id);
  if (it == children_.end() || it->second.shared == nullptr) return {};
  return it->second.shared->lane_counts();
}

bool LocalWorkers::is_stopped(std::string_view id) {
  auto it = children_.find(id);
  return it != children_.end() && spawning::is_stopped(it->second.process.pid);
}

void LocalWorkers::release(Child& child) {
  loop_.unwatch(child.watch);
  if (child.shared) ::munmap(child.shared, kMarkBytes);
  child.shared = nullptr;
}

void LocalWorkers::exited(const std::string& id) {
  auto it = children_.find(id);
  if (it == children_.end()) return;
  auto status = spawning::reap(it->second.process, false);
  if (!status) return;
  std::optional<std::uint64_t> mark;
  std::string unsent;
  LaneReport lane;
  if (const wire::WorkerShared* shared = it->second.shared) {
    mark = shared->running.load(std::memory_order_acquire);
    const std::size_t n = std::min<std::size_t>(shared->unsent_bytes.load(std::memory_order_acquire),
                                                wire::WorkerShared::kUnsentCapacity);
    unsent.assign(shared->unsent, n);
    lane.running = lane_chunk_of(*shared, *mark);
    lane.counts = shared->lane_counts();
  }
  release(it->second);
  children_.erase(it);
  on_exit_(id, *status, mark, std::move(unsent), lane);
}

void LocalWorkers::kill_all() {
  for (auto& [id, child] : children_) {
    ::kill(child.process.pid, SIGKILL);
    release(child);
    spawning::reap(child.process, true);
  }
  children_.clear();
}

}  // namespace router
}  // namespace mpx
