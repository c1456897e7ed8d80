#include "mpx/pool.h"

#include "framework/pool/pool_core.h"

namespace mpx {

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
void Pool::shutdown(bool cancel_futures) { core("shutdown").shutdown_pool(cancel_futures); }
int Pool::processes() const { return core("processes").processes(); }
pid_t Pool::router_pid() const { return core("router_pid").router_pid(); }

const detail::TaskEntry& Pool::lookup(const void* fn, const char* what) const {
  core(what);
  return detail::require_task(fn, (std::string("Pool::") + what).c_str());
}

}  // namespace mpx
