// The owner side of actor processes: starting one incarnation, and the one supervisor
// thread per process that spawned actors, which watches their pidfds in a Loop, reaps
// them, restarts them (Restart::on_failure) and publishes each outcome in the control
// block.
#ifndef MPX_FRAMEWORK_ACTOR_SUPERVISOR_H_
#define MPX_FRAMEWORK_ACTOR_SUPERVISOR_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "framework/actor/control.h"
#include "framework/spawn/spawn.h"
#include "mpx/actor.h"
#include "mpx/detail/pins.h"
#include "mpx/detail/segment.h"

namespace mpx {
namespace actor {

// What the owner keeps to restart an actor.
struct Supervised {
  std::shared_ptr<detail::Segment> control_segment;
  Control* control = nullptr;
  const detail::ActorFactoryEntry* factory = nullptr;
  std::string args;
  ActorOptions options;
  detail::Pins pins;  // shared objects among the constructor arguments (restarts reuse them)
  spawning::Child child;
  std::shared_ptr<const void> name;  // its claim on ActorOptions::name (named.cc); supervisor thread
};

struct StartFailure {
  bool constructor_threw = false;
  detail::ErrorInfo error;     // constructor_threw
  std::string reason;         // otherwise: how the process ended
  pid_t pid = 0;              // the incarnation's process (reaped since)
};

// Starts incarnation `incarnation` and waits until it is constructed and listening;
// the failure, if it was not.
std::optional<StartFailure> start_incarnation(Supervised& s, std::uint32_t incarnation);

// From any thread: the supervisor watches s's process from now on.
void supervise(std::shared_ptr<Supervised> s);

// Whether the calling thread is the supervisor's: what runs there must never wait for
// the supervisor.
bool on_supervisor_thread();

}  // namespace actor
}  // namespace mpx

#endif  // MPX_FRAMEWORK_ACTOR_SUPERVISOR_H_
