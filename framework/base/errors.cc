#include "mpx/errors.h"

#include <utility>

namespace mpx {
namespace {

std::string describe_tasks(const std::vector<std::uint64_t>& tasks) {
  if (tasks.empty()) return "no tasks";
  std::string out;
  std::size_t i = 0, runs = 0;
  while (i < tasks.size()) {
    std::size_t j = i;
    while (j + 1 < tasks.size() && tasks[j + 1] == tasks[j] + 1) ++j;
    if (runs++ == 8) {
      out += ", ...";
      break;
    }
    if (!out.empty()) out += ", ";
    out += std::to_string(tasks[i]);
    if (j > i) out += "-" + std::to_string(tasks[j]);
    i = j + 1;
  }
  return (tasks.size() == 1 ? "task " : "tasks ") + out;
}

}  // namespace

RemoteError::RemoteError(std::string task_name, std::string type_name, std::string message,
                         std::uint64_t task_index, pid_t worker_pid)
    : Error("task '" + task_name + "' item " + std::to_string(task_index) + " raised " +
            type_name + " in worker pid " + std::to_string(worker_pid) + ": " + message),
      task_name_(std::move(task_name)),
      type_name_(std::move(type_name)),
      message_(std::move(message)),
      task_index_(task_index),
      worker_pid_(worker_pid) {}

WorkerLost::WorkerLost(std::string task_name, std::vector<std::uint64_t> lost_tasks,
                       pid_t worker_pid, std::string reason)
    : WorkerLost("task '" + task_name + "': worker pid " + std::to_string(worker_pid) + " " +
                     reason + " while running " + describe_tasks(lost_tasks) +
                     "; their results are lost",
                 task_name, lost_tasks, worker_pid, reason) {}

WorkerLost::WorkerLost(std::string what, std::string task_name,
                       std::vector<std::uint64_t> lost_tasks, pid_t pid, std::string reason)
    : Error(what),
      task_name_(std::move(task_name)),
      lost_tasks_(std::move(lost_tasks)),
      worker_pid_(pid),
      reason_(std::move(reason)) {}

RouterLost::RouterLost(std::string task_name, std::vector<std::uint64_t> lost_tasks,
                       pid_t router_pid, std::string reason)
    : WorkerLost("task '" + task_name + "': the pool's router (pid " + std::to_string(router_pid) +
                     ") " + reason + " before " + describe_tasks(lost_tasks) +
                     " had a result; they were not sent to the new router because the task "
                     "may not run twice (mark it MPX_PURE_TASK or set "
                     "PoolOptions().max_retries(n) to have them sent again)",
                 task_name, lost_tasks, router_pid, reason) {}

ActorDied::ActorDied(std::string actor_name, std::string reason, bool restarted)
    : Error("actor " + actor_name + ": " + reason +
            (restarted ? "; it was restarted from its constructor arguments and its state was lost"
                       : "")),
      actor_name_(std::move(actor_name)),
      reason_(std::move(reason)),
      restarted_(restarted) {}

}  // namespace mpx
