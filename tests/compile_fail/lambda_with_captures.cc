// expect: a lambda with captures cannot be a task
#include "mpx/mpx.h"

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Pool pool(1);
  int k = 3;
  pool.map([k](int x) { return x * k; }, std::vector<int>{1, 2});
}
