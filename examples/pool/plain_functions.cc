// Tasks without MPX_TASK: plain functions, one of an overload set, lambdas.
//
// Teaches: any function of the program can be a task as it stands, as in Python,
// where Pool.map takes any module-level function. Workers run the same program and
// find a plain function again by its place in it, checked against the program's
// symbol table; MPX_TASK stays for names that must outlive a build.
//
//   bazel run //examples/pool:plain_functions
//   # cube: 0 1 8 27 64
//   # scale(double): 0.5 1.5 / scale(int): 10 30
//   # lambda: 42
//   # process exited with 0
#include <cstdio>
#include <string>
#include <vector>

#include "mpx/mpx.h"

int cube(int x) { return x * x * x; }
double scale(double x) { return x / 2; }
int scale(int x) { return x * 10; }
void greet(std::string who) {
  std::printf("hello from the child, %s\n", who.c_str());
  std::fflush(stdout);
}

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  try {
    mpx::Pool pool(2);
    std::printf("cube:");
    for (int v : pool.map(cube, std::vector<int>{0, 1, 2, 3, 4})) std::printf(" %d", v);
    const auto halves = pool.map(static_cast<double (*)(double)>(scale), std::vector<double>{1, 3});
    const auto tens = pool.map(static_cast<int (*)(int)>(scale), std::vector<int>{1, 3});
    std::printf("\nscale(double): %g %g / scale(int): %d %d\n", halves[0], halves[1], tens[0], tens[1]);
    std::printf("lambda: %d\n", pool.apply([](int a, int b) { return a * b; }, 6, 7));
    std::fflush(stdout);
    mpx::Process p(greet, std::string("world"));
    p.start();
    p.join();
    std::printf("process exited with %d\n", p.exitcode().value_or(-1));
  } catch (const mpx::NotRegistered& e) {
    // A program whose symbol table was stripped: its plain functions cannot be
    // checked by the workers, so they need MPX_TASK.
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
