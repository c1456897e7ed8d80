// Process identity and logging shared by every role (internal side of mpx/runtime.h).
#ifndef MPX_FRAMEWORK_BASE_BASE_H_
#define MPX_FRAMEWORK_BASE_BASE_H_

#include <string>

#include "mpx/runtime.h"

namespace mpx {
namespace base {

// Called once by mpx::init before any other thread exists; renames the logger.
void set_identity(std::string name, Role role);

}  // namespace base
}  // namespace mpx

#endif  // MPX_FRAMEWORK_BASE_BASE_H_
