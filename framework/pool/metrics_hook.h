// How PoolOptions::metrics reaches the Prometheus server without every program linking
// libprometheus-cpp: //framework:metrics (framework/metrics) sets the starter at static
// initialisation; a program that did not link it has none, and a pool asking for
// metrics then fails with an error that says which target to add.
#ifndef MPX_FRAMEWORK_POOL_METRICS_HOOK_H_
#define MPX_FRAMEWORK_POOL_METRICS_HOOK_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>

namespace mpx {
namespace detail {

// Serves /metrics at address ("127.0.0.1:9464") for the pool whose current router pid
// router_pid() returns (0 once the pool is gone); the server stops when the returned
// handle is destroyed. Throws mpx::Error when it cannot listen there.
using MetricsStarter = std::shared_ptr<void> (*)(const std::string& address,
                                                 std::function<pid_t()> router_pid);
MetricsStarter& metrics_starter();

}  // namespace detail
}  // namespace mpx

#endif  // MPX_FRAMEWORK_POOL_METRICS_HOOK_H_
