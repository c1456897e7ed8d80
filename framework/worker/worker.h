// The pool worker role: an actor loop that runs registered tasks chunk by chunk.
//
// announce (READY) -> CONFIG (run the initializer) -> { TASK -> RESULT | PING -> PONG }*
// -> STOP. A task's exception is data in its result, never the worker's death; the
// worker dies only when the router (its parent) does, or when told to stop.
#ifndef MPX_FRAMEWORK_WORKER_WORKER_H_
#define MPX_FRAMEWORK_WORKER_WORKER_H_

#include <cstdint>
#include <string>

#include "framework/spawn/spawn.h"
#include "framework/wire/messages.h"
#include "mpx/detail/codec.h"

namespace mpx {
namespace worker {

// Runs one TASK message: returns the result payload and sets *has_errors. Never throws:
// an unknown task name or an unreadable payload fails every item of the chunk.
detail::Buffer run_task(const wire::Task& task, const char* payload, std::size_t size,
                        bool* has_errors);

// The worker role's main; returns the process exit code.
int run_worker(const spawning::Bootstrap& boot);

}  // namespace worker
}  // namespace mpx

#endif  // MPX_FRAMEWORK_WORKER_WORKER_H_
