// Guide section 7.2, "Uso de depuración y logging": follow each process in the log.
//
// Teaches: mpx::logger() is Python's logging module set up for processes — every line
// carries the name and pid of the process that wrote it ("[ワーカー1/4242] info: ..."),
// so interleaved lines from many processes stay readable. Name a Process with
// set_name() before start(), as Python's Process(..., name='ワーカー1'); pool workers
// are "PoolWorker-N", the parent is "MainProcess". Log lines go to stderr; set the
// level with MPX_LOG=debug|info|warn|...
//
//   bazel run //examples/logging:process_logging
#include <cstdio>
#include <vector>

#include "mpx/mpx.h"

void worker_function() {
  mpx::logger().info("process {} started", mpx::current_process().name);
}
MPX_TASK(worker_function);

int square(int x) {
  mpx::logger().info("{} squaring {}", mpx::current_process().name, x);
  return x * x;
}
MPX_TASK(square);

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::logger().info("main started");

  mpx::Process process(worker_function);
  process.set_name("ワーカー1");
  process.start();
  process.join();
  std::printf("process %s pid %d exitcode %d\n", process.name().c_str(), process.pid(),
              *process.exitcode());

  mpx::Pool pool(2);
  const std::vector<int> squares = pool.map(square, std::vector<int>{1, 2, 3, 4});
  std::printf("squares %d %d %d %d\n", squares[0], squares[1], squares[2], squares[3]);
  mpx::logger().info("main done");
  return 0;
}
