// Spawning fresh processes of this same program in an mpx role, and the child's side
// of that hand-over.
//
// A child is started with posix_spawn of /proc/self/exe (never a bare fork of a running
// program) and finds its role on its command line:
//   <argv0> --mpx-role=worker --mpx-name=PoolWorker-1 --mpx-driver=<pid>
//           --mpx-parent=<pid> --mpx-parent-name=<name> --mpx-bootstrap-fd=3
//           [--mpx-ready-fd=4] [--mpx-share-fd=5] [--mpx-inherit=<n>]
// Anything bigger than a flag (a pool's configuration, a Process's arguments) travels
// in a sealed memfd inherited as fd 3, so it never hits argv limits. Descriptors the
// spawner hands over (Spec::inherit_fds: the ends of a Pipe given to a Process) are
// fds 6, 7, ... in the child. All other file descriptors are closed in the child; stdin
// is /dev/null; stdout and stderr are shared.
#ifndef MPX_FRAMEWORK_SPAWN_SPAWN_H_
#define MPX_FRAMEWORK_SPAWN_SPAWN_H_

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "mpx/runtime.h"

namespace mpx {
namespace spawning {

struct Spec {
  Role role = Role::kWorker;
  std::string name;
  std::string bootstrap;  // opaque bytes handed to the child
  pid_t driver = 0;       // the user's process; 0 = base::driver_pid()
  // Optional: the write end of a pipe the child signals on (fd 4 in the child, named
  // by --mpx-ready-fd); the spawner keeps the read end.
  int ready_fd = -1;
  // Optional: a descriptor the child inherits as fd 5 (--mpx-share-fd), e.g. a memfd
  // both sides map. The spawner keeps (and closes) its own.
  int share_fd = -1;
  // Optional: descriptors the child inherits as fds 6, 7, ... (--mpx-inherit=<count>),
  // at most kMaxInherited. The spawner keeps (and closes) its own.
  std::vector<int> inherit_fds;
};
constexpr std::size_t kMaxInherited = 64;

// A spawned child, owned by the process that spawned it (only it can reap it).
struct Child {
  pid_t pid = -1;
  int pidfd = -1;  // readable once the child has ended
};

// Throws mpx::ProcessError with the errno text when the spawn fails.
Child spawn_self(const Spec& spec);

// Reaps child if it has ended (blocking when block). Returns the wait status, or
// nullopt if still running. Closes the pidfd once reaped.
std::optional<int> reap(Child& child, bool block);
// Waits up to timeout for the child to end; reaps it. nullopt on timeout.
std::optional<int> reap_for(Child& child, std::chrono::milliseconds timeout);

// Python's exitcode convention: exit status, or -signal.
int exitcode(int wait_status);
// "exited with code 3", "killed by signal 9 (Killed)".
std::string describe(int wait_status);

int pidfd_open(pid_t pid);

// For a failure with errno err: when it is EMFILE or ENFILE, what the descriptor limit
// is and how to raise it (" (...)"); "" otherwise.
// Raises this process's soft RLIMIT_NOFILE to its hard limit (the router and pool
// workers, never a user's process): a pool's results travel as descriptors (large ones,
// as objects), and the kernel refuses to send more while this user's descriptors in
// flight exceed the sender's soft limit (ETOOMANYREFS), as it refuses to open more.
void raise_descriptor_limit();
std::string descriptor_advice(int err);

// Opens /dev/null on whichever of fds 0, 1, 2 is closed. A program started with
// stdout or stderr closed (daemons, services) would otherwise get its next descriptors
// there: a socket on fd 2 would receive the logger's lines. mpx::init calls it first,
// in every role.
void ensure_standard_fds();

// Whether the process is stopped (SIGSTOP, SIGTSTP, a tracer): it can neither run nor
// answer. false when it is gone or unreadable.
bool is_stopped(pid_t pid);

// What a spawned child learns from its command line and bootstrap fd.
struct Bootstrap {
  Role role = Role::kDriver;
  std::string name;
  pid_t driver = 0;
  pid_t parent = 0;
  std::string payload;
  int ready_fd = -1;  // see Spec::ready_fd
  int share_fd = -1;  // see Spec::share_fd
  std::string parent_name;  // the spawner's current_process().name
};

// Child side: writes one byte to the ready pipe (ready_fd < 0: none) and closes it.
void signal_ready(int ready_fd);
// Child side, instead: why it cannot start ('!' and the reason, one write of at most
// kMaxStartFailure bytes), for the parent's error; closes the pipe.
void signal_failure(int ready_fd, const std::string& reason);
constexpr std::size_t kMaxStartFailure = 4000;  // under PIPE_BUF: one atomic write
// Parent side: what the ready pipe said once readable: nullopt for ready, else the
// child's reason ("" when it closed the pipe without a word).
std::optional<std::string> read_ready(int ready_read_fd);

// nullopt when argv carries no mpx role (the driver). Throws mpx::Error when the flags
// are present but malformed or the bootstrap fd cannot be read.
std::optional<Bootstrap> parse_child_args(int argc, char** argv);

// Returns a pidfd for the parent named in the bootstrap, or -1 after _exit(1) when the
// parent is already gone (the child must not outlive it).
int open_parent_or_exit(pid_t parent);

// Starts a detached thread that SIGKILLs this process when the process behind pidfd
// ends. For children that run user code and cannot poll.
void kill_self_when_gone(int pidfd);

// Child side: takes the inherited descriptor (Spec::inherit_fds) that refers to the
// file with inode ino, once; -1 when none does. Thread-safe.
int claim_inherited_fd(ino_t ino);

}  // namespace spawning
}  // namespace mpx

#endif  // MPX_FRAMEWORK_SPAWN_SPAWN_H_
