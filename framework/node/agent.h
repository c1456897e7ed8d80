// The node agent: a role of the user's own program on another host.
//
//   ./app --mpx-node=tcp://head:5555 --mpx-key=cluster.key --mpx-slots=8
//
// mpx::init runs it instead of main when argv has --mpx-node. It dials the pool's router
// over one ZeroMQ DEALER with CURVE (it only ever dials out), says hello (build-id, task
// names' hash, slots), starts its workers on this host over the usual unix streams
// (LocalWorkers: pidfd, running marks; workers set their memory limit from CONFIG) and
// relays their frames. A worker that ends is reported after everything it wrote (the
// link keeps order), with its wait status and running mark, so the router treats it as
// it treats a local one. Heartbeats both ways: when the router is silent for the host
// timeout it announced, or says the host was lost (L), the agent kills its workers and
// dials again on a new socket (a new agent to the router: a healed partition rejoins);
// when that finds no router within --mpx-connect-timeout seconds (default 30), or the
// router says the pool ended (Q), it exits. The same timeout bounds the first dial
// (not listening there, or refusing this key) and the wait for the key file.
//
// Exit codes: 0 the pool ended; 1 bad arguments, key file, or no answer; 2 refused
// (another build, other tasks); 3 the router went silent and did not come back.
#ifndef MPX_FRAMEWORK_NODE_AGENT_H_
#define MPX_FRAMEWORK_NODE_AGENT_H_

#include <optional>

namespace mpx {
namespace node {

// nullopt when argv asks for no agent; otherwise runs it and returns its exit code.
std::optional<int> run_agent_if_asked(int argc, char** argv);

}  // namespace node
}  // namespace mpx

#endif  // MPX_FRAMEWORK_NODE_AGENT_H_
