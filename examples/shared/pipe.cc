// Pipe() and Connection between two processes (Python's multiprocessing.Pipe), and what
// the parent sees when the child is killed.
//
// Teaches: the child gets one end as an argument (it inherits it, as with fork), so the
// parent closes its own copy right after start(), as in Python. Typed messages go both
// ways. connection::wait watches the connection and the child's sentinel together.
// When the child is killed with SIGKILL, recv() throws EOFError instead of hanging.
//
//   bazel run //examples/shared:pipe
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "mpx/mpx.h"

// Squares the numbers it receives; after a negative one it stops answering.
void squarer(mpx::Connection conn) {
  for (;;) {
    const int x = conn.recv<int>();
    if (x < 0) break;
    conn.send(x * x);
  }
  for (;;) pause();  // hangs until killed
}
MPX_TASK(squarer);

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  auto [parent_end, child_end] = mpx::Pipe();
  mpx::Process child(squarer, child_end);
  child.start();
  child_end.close();  // the child holds it now

  std::string squares;
  for (int x = 1; x <= 5; ++x) {
    parent_end.send(x);
    squares += (x > 1 ? " " : "") + std::to_string(parent_end.recv<int>());
  }
  std::printf("squares: %s\n", squares.c_str());

  parent_end.send(-1);
  auto ready = mpx::connection::wait({parent_end, child.sentinel()}, std::chrono::milliseconds(100));
  std::printf("ready while the child hangs: %zu\n", ready.size());

  child.kill();
  child.join();
  ready = mpx::connection::wait({parent_end, child.sentinel()}, std::chrono::seconds(5));
  std::printf("ready once it was killed: %zu (the connection and the sentinel)\n", ready.size());
  try {
    parent_end.recv<int>();
  } catch (const mpx::EOFError&) {
    std::printf("recv: EOFError, the other end is gone\n");
  }
  return 0;
}
