#include "mpx/pool.h"

#include "framework/pool/metrics_hook.h"
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
detail::MetricsStarter& detail::metrics_starter() {
  static MetricsStarter starter = nullptr;
  return starter;
}

Pool::Pool(const PoolOptions& options) : core_(std::make_shared<detail::PoolCore>(options)) {
  if (options.metrics().empty()) return;
  if (detail::metrics_starter() == nullptr) {
    throw Error("PoolOptions::metrics(\"" + options.metrics() +
                "\"): this program has no metrics support; add \"//framework:metrics\" (or "
                "\"@mpx//framework:metrics\") to the deps of its cc_binary");
  }
  // Asked per scrape: a pool gone (or moved from) reports nothing.
  std::weak_ptr<detail::PoolCore> core = core_;
  metrics_ = detail::metrics_starter()(options.metrics(), [core]() -> pid_t {
    auto c = core.lock();
    return c ? c->router_pid() : 0;
  });
}
Pool::~Pool() {
  if (core_) core_->shutdown();
}
Pool::Pool(Pool&&) noexcept = default;
Pool& Pool::operator=(Pool&& other) noexcept {
  if (this != &other) {
    metrics_.reset();
    if (core_) core_->shutdown();
    core_ = std::move(other.core_);
    metrics_ = std::move(other.metrics_);
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
std::string Pool::endpoint() const { return core("endpoint").endpoint(); }
void Pool::wait_for_workers(int n, std::chrono::milliseconds timeout) {
  core("wait_for_workers").wait_for_workers(n, timeout);
}
pid_t Pool::router_pid() const { return core("router_pid").router_pid(); }


}  // namespace mpx
