// Named actors: the spawning side's claim on a name (see named.cc).
#ifndef MPX_FRAMEWORK_ACTOR_NAMED_H_
#define MPX_FRAMEWORK_ACTOR_NAMED_H_

#include <memory>
#include <string>
#include <string_view>

#include "mpx/detail/segment.h"

namespace mpx {
namespace actor {

// Claims name for the actor whose control block is control (nullptr for an empty
// name); the name is the actor's while the returned object lives. Throws mpx::Error
// when another live actor of this program has it.
std::shared_ptr<const void> claim_name(const std::string& name, const detail::Segment& control,
                                       std::string_view factory_key);

}  // namespace actor
}  // namespace mpx

#endif  // MPX_FRAMEWORK_ACTOR_NAMED_H_
