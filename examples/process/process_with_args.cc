// Guide section 3.2 ("Cómo pasar argumentos a un proceso"): pass arguments to a process.
//
// Teaches: the arguments after the function are Python's args=(5,). They are encoded
// (msgpack) and decoded in the child, which is a fresh process, not a fork: anything
// the child needs must travel as an argument.
//
//   bazel run //examples/process:process_with_args
#include <cstdio>
#include <string>

#include "mpx/mpx.h"

void worker(int number, std::string greeting) {
  std::printf("worker %d ran: %s\n", number, greeting.c_str());
}
MPX_TASK(worker);

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  mpx::Process process(worker, 5, std::string("hello from the parent"));
  std::fflush(stdout);
  process.start();
  process.join();
  std::printf("worker exitcode %d\n", *process.exitcode());
  return 0;
}
