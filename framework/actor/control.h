// What the two sides of an actor share: the control block (written by the spawning
// process, read by every process holding a handle) and the bootstrap an actor process
// starts from (server.cc).
#ifndef MPX_FRAMEWORK_ACTOR_CONTROL_H_
#define MPX_FRAMEWORK_ACTOR_CONTROL_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

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

inline State state_of(const Control& c) { return static_cast<State>(c.state.load(std::memory_order_acquire)); }

// The reason text of c, never torn by a concurrent publish.
std::string read_reason(const Control& c);
// Only the owner's supervisor thread (and spawn, before anybody else sees the block)
// writes the control block: seq goes odd, the reason and state are written, seq goes
// even again (see Control::reason), and every waiter on seq is woken.
void publish(Control& c, State state, const std::string& reason);
// Sleeps while word (a control block's seq) holds expected, at most for slice.
void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected, std::chrono::milliseconds slice);
// text, cut to fit, NUL-terminated, into dst of cap bytes.
void copy_text(char* dst, std::size_t cap, const std::string& text);
// Whether a process with this pid exists and has not ended (it may be another user's;
// a zombie has ended: base::process_ended).
bool process_exists(pid_t pid);

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

}  // namespace actor
}  // namespace mpx

#endif  // MPX_FRAMEWORK_ACTOR_CONTROL_H_
