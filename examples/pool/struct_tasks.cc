// Your own types as task arguments and results.
//
// Teaches: a struct that declares its fields with MSGPACK_DEFINE travels between
// processes like a built-in type — as the argument and the result of pool.map and
// pool.apply_async. (Python pickles objects; mpx encodes the fields you list.)
//
//   bazel run //examples/pool:struct_tasks
#include <cstdio>
#include <vector>

#include "mpx/mpx.h"

struct Pair {
  int a = 0;
  int b = 0;
  MSGPACK_DEFINE(a, b);
};

// Returns {a + b, a * b}.
Pair sum_and_product(Pair p) { return Pair{p.a + p.b, p.a * p.b}; }
MPX_TASK(sum_and_product);

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  mpx::Pool pool(2);

  const std::vector<Pair> inputs = {{1, 2}, {3, 4}, {5, 6}};
  const std::vector<Pair> outputs = pool.map(sum_and_product, inputs);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    std::printf("map: (%d, %d) -> (%d, %d)\n", inputs[i].a, inputs[i].b, outputs[i].a,
                outputs[i].b);
  }

  mpx::AsyncResult<Pair> r = pool.apply_async(sum_and_product, Pair{10, 20});
  const Pair p = r.get();
  std::printf("apply_async: (10, 20) -> (%d, %d)\n", p.a, p.b);
  return 0;
}
