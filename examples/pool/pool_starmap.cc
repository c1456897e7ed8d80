// Guide section 5.2 ("uso de starmap con múltiples argumentos").
//
// Teaches: starmap calls a multi-argument function with each tuple unpacked, as
// Python's pool.starmap(multiply, [(1, 2), (3, 4), (5, 6), (7, 8)]).
//
//   bazel run //examples/pool:pool_starmap  # prints: 2 12 30 56
#include <cstdio>
#include <tuple>
#include <vector>

#include "mpx/mpx.h"

int multiply(int x, int y) { return x * y; }
MPX_TASK(multiply);

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  const std::vector<std::tuple<int, int>> pairs = {{1, 2}, {3, 4}, {5, 6}, {7, 8}};
  std::vector<int> results;
  {
    mpx::Pool pool(4);
    results = pool.starmap(multiply, pairs);
  }
  for (std::size_t i = 0; i < results.size(); ++i) {
    std::printf(i == 0 ? "%d" : " %d", results[i]);
  }
  std::printf("\n");
  return 0;
}
