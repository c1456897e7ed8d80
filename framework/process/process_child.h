// The Process role: a child that runs one registered call and exits.
#ifndef MPX_FRAMEWORK_PROCESS_PROCESS_CHILD_H_
#define MPX_FRAMEWORK_PROCESS_PROCESS_CHILD_H_

#include <string>

#include "framework/spawn/spawn.h"
#include "mpx/task.h"

namespace mpx {
namespace process_child {

// [task name, argument payload, daemon] as msgpack.
std::string encode_bootstrap(const detail::TaskEntry& task, const std::string& args, bool daemon);

// Runs the call; returns the exit code: 0, or 1 when it threw (logged here). Either
// way end_children() runs first, as Python's child runs its exit function.
int run_process(const spawning::Bootstrap& boot);

// Python's exit function for this process's Process children: daemonic ones are
// terminated, the others joined. Registered with atexit by the first Process::start
// (in process.cc).
void end_children();

}  // namespace process_child
}  // namespace mpx

#endif  // MPX_FRAMEWORK_PROCESS_PROCESS_CHILD_H_
