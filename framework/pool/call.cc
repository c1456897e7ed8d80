// What mpx/detail/call.h declares for every pool call: the errors a call raises from
// what its pool reported.
#include "mpx/detail/call.h"

#include <string>
#include <utility>
#include <vector>

namespace mpx {
namespace detail {

std::exception_ptr CallBase::make_remote_error(std::uint64_t start, const ErrorInfo& e,
                                               pid_t worker_pid) const {
  return remote_exception(task_.name, e, start + e.item, worker_pid);
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
}  // namespace mpx
