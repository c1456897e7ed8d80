// Registry internals beyond what mpx/task.h declares for the templates.
#ifndef MPX_FRAMEWORK_REGISTRY_REGISTRY_H_
#define MPX_FRAMEWORK_REGISTRY_REGISTRY_H_

#include <string>
#include <vector>

namespace mpx {
namespace detail {

// Names registered by two different functions; mpx::init refuses to start with any.
std::vector<std::string> duplicate_task_names();
// Names longer than the wire's 255-byte name field; mpx::init refuses those too.
std::vector<std::string> overlong_task_names();
// Every registered task name, sorted (a node agent's hello hashes them).
std::vector<std::string> task_names();

}  // namespace detail
}  // namespace mpx

#endif  // MPX_FRAMEWORK_REGISTRY_REGISTRY_H_
