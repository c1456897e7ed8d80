// expect: is, or holds, a non-owning type
// A task returning std::string_view would hand the caller a view into a buffer that
// is freed once the result is decoded.
#include <string>
#include <string_view>

#include "mpx/mpx.h"

std::string_view first_word(std::string text) { return std::string_view(text).substr(0, 3); }
MPX_TASK(first_word);
