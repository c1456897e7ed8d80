// Guide section 5.1 ("Uso de la clase Pool"): Pool(4).map(square, range(10)).
//
// Teaches: a pool of 4 worker processes applies a registered function to every item
// and returns the results in input order, whatever order the workers finish in.
//
//   bazel run //examples/pool:pool_map      # prints: 0 1 4 9 16 25 36 49 64 81
#include <cstdio>
#include <numeric>
#include <vector>

#include "mpx/mpx.h"

int square(int x) { return x * x; }
MPX_TASK(square);

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  std::vector<int> xs(10);
  std::iota(xs.begin(), xs.end(), 0);  // range(10)

  std::vector<int> results;
  {
    mpx::Pool pool(4);  // `with Pool(4) as pool:` — the destructor stops the workers
    results = pool.map(square, xs);
  }
  for (std::size_t i = 0; i < results.size(); ++i) {
    std::printf(i == 0 ? "%d" : " %d", results[i]);
  }
  std::printf("\n");
  return 0;
}
