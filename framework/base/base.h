// Process identity and logging shared by every role (internal side of mpx/runtime.h).
#ifndef MPX_FRAMEWORK_BASE_BASE_H_
#define MPX_FRAMEWORK_BASE_BASE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include <sys/types.h>

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

// mpx::init marks the driver initialised, and the spawned roles that run user code
// (pool workers, Process children, actors: they may start processes of their own).
// Spawning before that would re-run the user's main in every child (each of which
// would spawn again): require_init throws mpx::Error naming `what` instead. In a
// daemonic Process it throws ProcessError: daemonic processes cannot have children,
// as in Python.
void mark_initialized();
void require_init(const char* what);

// The one source of unguessable ids (routing identities, pool tokens, endpoint names,
// shared-memory segment ids): 64 bits from the kernel's random pool (getrandom).
std::uint64_t random_u64();
// n random letters and digits.
std::string random_token(std::size_t n);

// The state letter of pid in /proc/<pid>/stat (R, S, D, T, t, Z, X, ...), or 0 when
// no such process is visible.
char process_state(pid_t pid);
// Whether pid has ended: no such process, or a zombie its parent has not reaped yet.
// kill(pid, 0) succeeds for a zombie, which runs no code any more: a liveness test on
// shared state (who waits, who owns) must not take it for a live process, since its
// parent is often the very process asking.
bool process_ended(pid_t pid);

}  // namespace base
}  // namespace mpx

#endif  // MPX_FRAMEWORK_BASE_BASE_H_
