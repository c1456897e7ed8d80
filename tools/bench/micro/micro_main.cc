// main() of every micro-benchmark binary: mpx::init (shared objects require it; no
// process is spawned), then Google Benchmark with its usual flags.
#include <benchmark/benchmark.h>

#include "mpx/mpx.h"

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
