// The actor role: the process that owns one actor object and serves its callers.
#ifndef MPX_FRAMEWORK_ACTOR_SERVER_H_
#define MPX_FRAMEWORK_ACTOR_SERVER_H_

#include "framework/spawn/spawn.h"

namespace mpx {
namespace actor {

// Entry point of the actor role (mpx::init): constructs the object its bootstrap names,
// reports on the ready pipe, then serves calls until STOP. Returns the exit code.
int run_actor(const spawning::Bootstrap& boot);

}  // namespace actor
}  // namespace mpx

#endif  // MPX_FRAMEWORK_ACTOR_SERVER_H_
