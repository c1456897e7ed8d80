// A user program in its own Bazel workspace, depending on @mpx//framework:mpx.
// Squares 1..4 in a pool of two worker processes; prints "consumer sum 30".
#include "mpx/mpx.h"

#include <cstdio>
#include <vector>

int square(int x) { return x * x; }
MPX_TASK(square);

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Pool pool(2);
  std::vector<int> out = pool.map(square, std::vector<int>{1, 2, 3, 4});
  int sum = 0;
  for (int v : out) sum += v;
  std::printf("consumer sum %d\n", sum);  // 30
  return sum == 30 ? 0 : 1;
}
