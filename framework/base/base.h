// Process identity and logging shared by every role (internal side of mpx/runtime.h).
#ifndef MPX_FRAMEWORK_BASE_BASE_H_
#define MPX_FRAMEWORK_BASE_BASE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "mpx/runtime.h"

namespace mpx {
namespace base {

// Called once by mpx::init before any other thread exists; renames the logger.
void set_identity(std::string name, Role role);

// mpx::init marks the driver initialised. Spawning before that would re-run the
// user's main in every child (each of which would spawn again): require_init throws
// mpx::Error naming `what` instead.
void mark_initialized();
void require_init(const char* what);

// The one source of unguessable ids (routing identities, pool tokens, endpoint names,
// shared-memory segment ids): 64 bits from the kernel's random pool (getrandom).
std::uint64_t random_u64();
// n random letters and digits.
std::string random_token(std::size_t n);

}  // namespace base
}  // namespace mpx

#endif  // MPX_FRAMEWORK_BASE_BASE_H_
