// expect: compiles
#include <array>

#include "mpx/mpx.h"

// 800 KB by value each way: under the limit.
std::array<double, 100000> doubled(std::array<double, 100000> xs) {
  for (double& x : xs) x *= 2;
  return xs;
}
MPX_TASK(doubled);
