// expect: these parameters take more than 1 MiB by value
#include <array>

#include "mpx/mpx.h"

double first(const std::array<double, 200000>& xs) { return xs[0]; }
MPX_TASK(first);
