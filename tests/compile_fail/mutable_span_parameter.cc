// expect: parameter must be mpx::Span<const T>
#include "mpx/mpx.h"

double scale(mpx::Span<double> xs) { return xs.empty() ? 0 : xs[0] *= 2; }
MPX_TASK(scale);
