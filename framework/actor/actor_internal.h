// Internals shared by the two sides of an actor: the spawning process (actor.cc) and
// the actor process itself (actor_main.cc).
#ifndef MPX_FRAMEWORK_ACTOR_ACTOR_INTERNAL_H_
#define MPX_FRAMEWORK_ACTOR_ACTOR_INTERNAL_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "framework/spawn/spawn.h"
#include "framework/transport/endpoint.h"

namespace mpx {
namespace actor {

enum class State : std::uint32_t {
  kStarting = 0,
  kAlive,
  kRestarting,  // the previous incarnation died; a new one is being constructed
  kStopped,     // stopped on request (terminal)
  kDead,        // died and may not restart (terminal)
};

inline bool terminal(State s) { return s == State::kStopped || s == State::kDead; }

// The actor's control block: a shared-memory segment created by the spawning process
// (the owner), which alone writes it; every process holding a handle maps it to learn
// where the actor currently listens and whether it lives.
//
// Invariants: endpoint and name are written before the segment is first shared and
// never change. The other fields change only in the owner's supervisor thread, which
// bumps seq (the futex word) after each change; reason is written before the state
// that it explains, so a reader that saw a terminal state reads a complete reason.
struct Control {
  std::atomic<std::uint32_t> seq;
  std::atomic<std::uint32_t> state;
  std::atomic<std::uint32_t> incarnation;  // 1 for the first process, +1 per restart
  std::atomic<std::int32_t> pid;
  std::atomic<std::uint32_t> restarts;
  std::atomic<std::uint32_t> stop_requested;  // set by whoever sends STOP, any process
  char endpoint[160];                          // base; "-<incarnation>" is appended
  char name[128];
  // How the last incarnation ended ("killed by signal 9 (Killed)"), NUL-terminated
  // text in atomic words: the owner's supervisor rewrites it while handles anywhere may
  // read it. seq is odd while publish() writes; read_reason() retries until it read the
  // words between two equal, even seq values (a seqlock).
  std::atomic<std::uint64_t> reason[32];
};

// The reason text of c, never torn by a concurrent publish.
std::string read_reason(const Control& c);

// Where incarnation `incarnation` listens: the base endpoint with "-<incarnation>".
transport::Endpoint incarnation_endpoint(const Control& control, std::uint32_t incarnation);

// What the actor process gets on fd 3.
struct Bootstrap {
  std::string factory_key;
  std::string args;  // msgpack array of constructor arguments
  std::string endpoint;
  std::uint32_t incarnation = 1;
};
std::string encode_bootstrap(const Bootstrap& b);
Bootstrap decode_bootstrap(const std::string& bytes);  // throws mpx::DecodeError

// The ready pipe: the actor writes 'R' once constructed and listening, or 'E' followed
// by an ErrorInfo (mpx/detail/codec.h) when the constructor threw, then closes it.
constexpr char kReadyByte = 'R';
constexpr char kFailedByte = 'E';

// Entry point of the actor role (mpx::init).
int run_actor(const spawning::Bootstrap& boot);

}  // namespace actor
}  // namespace mpx

#endif  // MPX_FRAMEWORK_ACTOR_ACTOR_INTERNAL_H_
