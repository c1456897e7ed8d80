// Guide sections 6.1 and 6.2 ("Optimización del número de procesos con cpu_count()").
//
// Teaches: size a pool from mpx::cpu_count() — the CPUs this process may run on — and
// leave one core for the rest of the system, never going below one worker.
//
//   bazel run //examples/pool:cpu_count_pool
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <vector>

#include "mpx/mpx.h"

long square(long x) { return x * x; }
MPX_TASK(square);

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  const int size = std::max(1, mpx::cpu_count() - 1);
  std::printf("cpu_count %d, pool size %d\n", mpx::cpu_count(), size);

  std::vector<long> xs(100);
  std::iota(xs.begin(), xs.end(), 0L);  // range(100)

  mpx::Pool pool(size);
  std::printf("pool has %d workers\n", pool.processes());
  const std::vector<long> results = pool.map(square, xs);

  std::printf("count %zu\n", results.size());
  std::printf("sum %ld\n", std::accumulate(results.begin(), results.end(), 0L));
  std::printf("last %ld\n", results.back());
  return 0;
}
