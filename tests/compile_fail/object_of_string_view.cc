// expect: T cannot be, or hold, a pointer or a view
#include <string_view>

#include "mpx/mpx.h"

void store() { auto ref = mpx::put(std::string_view("points into this process")); }
