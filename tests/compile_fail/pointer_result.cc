// expect: is, or holds, a non-owning type
#include "mpx/mpx.h"

const char* greeting(int) { return "hello"; }
MPX_TASK(greeting);
