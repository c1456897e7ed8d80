// expect: this result type is larger than 1 MiB
#include <array>

#include "mpx/mpx.h"

std::array<double, 200000> zeros(int) { return {}; }
MPX_TASK(zeros);
