// Shared memory with a pool: workers fill one mpx::Array in parallel.
//
// Teaches: a task can take an Array (or Value) argument like any other; every worker
// writes into the same memory, so results need not travel back as messages. Each task
// writes its own slice, so no lock is needed; the sum is read back in the parent.
//
//   bazel run //examples/shared:pool_array
#include <cmath>
#include <cstdio>
#include <tuple>
#include <vector>

#include "mpx/mpx.h"

// Fills a[begin, end) with sqrt(i).
void fill_slice(mpx::Array<double> a, std::size_t begin, std::size_t end) {
  for (std::size_t i = begin; i < end; ++i) a[i] = std::sqrt(static_cast<double>(i));
}
MPX_TASK(fill_slice);

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  const std::size_t n = 1000000, slice = 50000;
  mpx::Array<double> a(n);
  std::vector<std::tuple<mpx::Array<double>, std::size_t, std::size_t>> slices;
  for (std::size_t begin = 0; begin < n; begin += slice) slices.emplace_back(a, begin, begin + slice);

  mpx::Pool pool(mpx::cpu_count());
  pool.starmap(fill_slice, slices);

  double sum = 0;
  for (double x : a) sum += x;
  std::printf("filled %zu elements in %zu tasks\n", a.size(), slices.size());
  std::printf("a[144] = %.1f, sum = %.0f\n", a[144], sum);
  return 0;
}
