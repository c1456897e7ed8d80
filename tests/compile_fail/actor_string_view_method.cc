// expect: is, or holds, a non-owning type
#include <string>
#include <string_view>

#include "mpx/mpx.h"

class Names {
 public:
  std::string_view first() const { return names_; }
 private:
  std::string names_ = "ada";
};
MPX_ACTOR(Names, first);

void use() { auto names = mpx::spawn<Names>(); }
