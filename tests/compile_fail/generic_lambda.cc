// expect: not a generic lambda with auto parameters
#include "mpx/mpx.h"

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Pool pool(1);
  pool.map([](auto x) { return x * 2; }, std::vector<int>{1, 2});
}
