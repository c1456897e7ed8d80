#include "mpx/pool.h"

#include "framework/pool/pool_core.h"

namespace mpx {
namespace detail {

void pool_begin_call(PoolCore& core, const std::shared_ptr<CallBase>& call) { core.begin_call(call); }

void pool_send_chunk(PoolCore& core, CallBase& call, std::uint64_t start, std::uint32_t count,
                     Buffer&& payload) {
  core.send_chunk(call, start, count, std::move(payload));
}

bool pool_wait(PoolCore& core, const std::function<bool()>& ready, Clock::time_point deadline) {
  return core.wait(ready, deadline);
}

int pool_processes(const PoolCore& core) { return core.processes(); }

void pool_abandon_call(PoolCore& core, CallBase& call) { core.abandon_call(call); }

std::exception_ptr CallBase::make_remote_error(std::uint64_t start, const ErrorInfo& e,
                                               pid_t worker_pid) const {
  return std::make_exception_ptr(
      RemoteError(task_.name, e.type, e.message, start + e.item, worker_pid));
}

std::exception_ptr CallBase::make_lost_error(std::vector<std::uint64_t> indices, pid_t worker_pid,
                                             const std::string& reason, bool timed_out) const {
  if (timed_out) {
    std::string items;
    for (std::size_t i = 0; i < indices.size() && i < 10; ++i) {
      items += (i ? ", " : "") + std::to_string(indices[i]);
    }
    if (indices.size() > 10) items += ", ... (" + std::to_string(indices.size()) + " in all)";
    return std::make_exception_ptr(TimeoutError(
        "task '" + std::string(task_.name) + "' timed out at item(s) " + items + ": worker pid " +
        std::to_string(worker_pid) + " was killed: " + reason));
  }
  return std::make_exception_ptr(WorkerLost(task_.name, std::move(indices), worker_pid, reason));
}

}  // namespace detail

Pool::Pool() : Pool(PoolOptions()) {}
namespace {
int at_least_one(int processes) {
  if (processes < 1) {
    throw Error("Pool: processes must be at least 1, got " + std::to_string(processes));
  }
  return processes;
}
}  // namespace

Pool::Pool(int processes) : Pool(PoolOptions().processes(at_least_one(processes))) {}
Pool::Pool(const PoolOptions& options) : core_(std::make_shared<detail::PoolCore>(options)) {}
Pool::~Pool() {
  if (core_) core_->shutdown();
}
Pool::Pool(Pool&&) noexcept = default;
Pool& Pool::operator=(Pool&& other) noexcept {
  if (this != &other) {
    if (core_) core_->shutdown();
    core_ = std::move(other.core_);
  }
  return *this;
}

detail::PoolCore& Pool::core(const char* what) const {
  if (!core_) throw PoolBroken(std::string("Pool::") + what + ": this Pool was moved from");
  return *core_;
}

void Pool::close() { core("close").close(); }
void Pool::join() { core("join").join(); }
void Pool::terminate() { core("terminate").terminate(); }
int Pool::processes() const { return core("processes").processes(); }
pid_t Pool::router_pid() const { return core("router_pid").router_pid(); }

const detail::TaskEntry& Pool::lookup(const void* fn, const char* what) const {
  core(what);
  return detail::require_task(fn, (std::string("Pool::") + what).c_str());
}

}  // namespace mpx
