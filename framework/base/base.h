// Process identity and logging shared by every role (internal side of mpx/runtime.h).
#ifndef MPX_FRAMEWORK_BASE_BASE_H_
#define MPX_FRAMEWORK_BASE_BASE_H_

#include <string>

#include "mpx/runtime.h"

namespace mpx {
namespace base {

// Called once by mpx::init before any other thread exists; renames the logger.
void set_identity(std::string name, Role role);
// Also by mpx::init (and the Process role, for daemon), before other threads exist.
void set_parent(pid_t pid, std::string name);
void set_daemon(bool daemon);
// The user's process at the root of this program's process tree (this process in the
// driver): names scoped to one program (named actors) are scoped by it.
void set_driver(pid_t pid);
pid_t driver_pid();

// mpx::init marks the driver initialised. Spawning before that would re-run the
// user's main in every child (each of which would spawn again): require_init throws
// mpx::Error naming `what` instead. In a daemonic Process it throws ProcessError:
// daemonic processes cannot have children, as in Python.
void mark_initialized();
void require_init(const char* what);

}  // namespace base
}  // namespace mpx

#endif  // MPX_FRAMEWORK_BASE_BASE_H_
