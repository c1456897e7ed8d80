// expect: compiles
// The control case: the same kind of task with an owning result compiles, so a failure
// of the others is their result type's doing, not the harness's.
#include <string>
#include <vector>

#include "mpx/mpx.h"

std::vector<std::string> words(std::string text) { return {text}; }
MPX_TASK(words);
