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

// Runs the call; returns the exit code: 0, or 1 when it threw (logged here).
int run_process(const spawning::Bootstrap& boot);

}  // namespace process_child
}  // namespace mpx

#endif  // MPX_FRAMEWORK_PROCESS_PROCESS_CHILD_H_
