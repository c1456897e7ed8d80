// mpx::init: the fork in the road between the driver and the spawned roles.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "framework/actor/server.h"
#include "framework/base/base.h"
#include "framework/base/heap.h"
#include "framework/node/agent.h"
#include "framework/process/process_child.h"
#include "framework/registry/registry.h"
#include "framework/router/router.h"
#include "framework/spawn/spawn.h"
#include "framework/worker/worker.h"
#include "mpx/errors.h"
#include "mpx/runtime.h"

namespace mpx {
namespace {

[[noreturn]] void finish(int code) {
  logger().flush();
  std::fflush(nullptr);
  // _exit: a spawned role owns nothing of the user's static state worth destroying,
  // and running user destructors in a worker would surprise more than it helps.
  _exit(code);
}

}  // namespace

void init(int argc, char** argv) {
  spawning::ensure_standard_fds();
  // A node agent (--mpx-node=...): started by a user, srun or ssh, not spawned by mpx.
  if (auto code = node::run_agent_if_asked(argc, argv)) finish(*code);
  std::optional<spawning::Bootstrap> boot;
  try {
    boot = spawning::parse_child_args(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpx: %s\n", e.what());
    throw;
  }
  std::string message;
  for (const auto& n : detail::duplicate_task_names()) {
    message += "mpx::init: task name '" + n + "' is registered by two different functions; "
               "rename one. ";
  }
  for (const auto& n : detail::overlong_task_names()) {
    message += "mpx::init: task name '" + n.substr(0, 40) + "...' is longer than 255 bytes. ";
  }
  if (!message.empty()) {
    if (boot) {
      std::fprintf(stderr, "%s\n", message.c_str());
      _exit(70);
    }
    throw Error(message);
  }
  if (!boot) {
    base::mark_initialized();
    return;
  }
  base::set_identity(boot->name, boot->role);
  base::set_parent(boot->parent, boot->parent_name);
  base::set_driver(boot->driver);
  // Roles that run user code may start processes, pools and actors of their own (a
  // daemonic Process is refused in require_init, as in Python). Each nested process
  // watches its parent and ends with it, so none outlives the role that started it.
  // The router runs no user code.
  if (boot->role != Role::kRouter) base::mark_initialized();
  if (boot->role != Role::kProcess) base::keep_large_buffers_for_reuse();
  int code = 70;
  try {
    switch (boot->role) {
      case Role::kRouter: code = router::run_router(*boot); break;
      case Role::kWorker: code = worker::run_worker(*boot); break;
      case Role::kProcess: code = process_child::run_process(*boot); break;
      case Role::kActor: code = actor::run_actor(*boot); break;
      case Role::kDriver: break;
    }
  } catch (const std::exception& e) {
    logger().critical("{} failed: {}", boot->name, e.what());
  }
  finish(code);
}

}  // namespace mpx
