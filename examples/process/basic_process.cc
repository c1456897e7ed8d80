// Guide section 3.1 ("Uso de la clase Process"): run one function in a new OS process.
//
// Teaches: register the function with MPX_TASK, build an mpx::Process around it,
// start() it and join() it — Python's Process(target=worker_function).start()/.join().
// The child is a fresh process of this same program; mpx::init sends it straight to
// worker_function and it exits 0 when the function returns.
//
//   bazel run //examples/process:basic_process
#include <cstdio>

#include "mpx/mpx.h"

void worker_function() {
  std::printf("a new process ran (%s)\n", mpx::current_process().name.c_str());
}
MPX_TASK(worker_function);

int main(int argc, char** argv) {
  mpx::init(argc, argv);  // a spawned child runs its task here and never returns

  mpx::Process process(worker_function);
  std::fflush(stdout);  // keep our buffered output ahead of the child's in a pipe
  process.start();
  process.join();
  std::printf("joined %s, exitcode %d\n", process.name().c_str(), *process.exitcode());
  return 0;
}
