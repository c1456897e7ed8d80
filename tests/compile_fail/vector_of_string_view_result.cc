// expect: is, or holds, a non-owning type
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "mpx/mpx.h"

std::map<int, std::vector<std::string_view>> words(std::string) { return {}; }
MPX_TASK(words);
