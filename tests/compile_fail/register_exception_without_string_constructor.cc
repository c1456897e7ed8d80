// expect: must be constructible from a std::string
#include "mpx/mpx.h"

struct Coded : std::exception {
  explicit Coded(int code) : code(code) {}
  int code;
};
static const bool registered = mpx::register_exception<Coded>();
