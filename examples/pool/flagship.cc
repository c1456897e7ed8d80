// The flagship example: Python's multiprocessing guide in one C++ program.
// Teaches: registering tasks, Pool.map / starmap / apply_async / imap / imap_unordered,
// and a Process with arguments — every worker a fresh OS process.
#include <cstdio>
#include <tuple>
#include <vector>

#include "mpx/mpx.h"

int square(int x) { return x * x; }
int multiply(int x, int y) { return x * y; }
void worker(int number) { mpx::logger().info("worker {} ran", number); }
MPX_TASK(square);
MPX_TASK(multiply);
MPX_TASK(worker);

int main(int argc, char** argv) {
  mpx::init(argc, argv);  // spawned processes enter their role here and never return
  mpx::Pool pool(4);

  std::vector<int> squares = pool.map(square, std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  std::printf("map:");
  for (int v : squares) std::printf(" %d", v);
  std::printf("\n");

  std::vector<int> products =
      pool.starmap(multiply, std::vector<std::tuple<int, int>>{{1, 2}, {3, 4}, {5, 6}, {7, 8}});
  std::printf("starmap:");
  for (int v : products) std::printf(" %d", v);
  std::printf("\n");

  mpx::AsyncResult<int> r = pool.apply_async(square, 7);
  std::printf("apply_async: %d\n", r.get());

  std::vector<int> xs = {1, 2, 3, 4, 5};
  int ordered = 0, unordered = 0;
  for (int v : pool.imap(square, xs)) ordered += v;
  for (int v : pool.imap_unordered(square, xs)) unordered += v;
  std::printf("imap sum: %d, imap_unordered sum: %d\n", ordered, unordered);

  mpx::Process p(worker, 5);
  p.start();
  p.join();
  std::printf("process %s (pid %d) exited with %d\n", p.name().c_str(), p.pid(), *p.exitcode());
  return 0;
}
