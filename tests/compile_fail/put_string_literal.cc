// expect: pass a std::string, std::vector, std::array or mpx::Span
#include "mpx/mpx.h"

void store() { auto ref = mpx::put("hello"); }
