// Shared pieces of the Google Benchmark micro-benchmarks in tools/bench/micro.
//
// MPX_MICRO(fn) registers fn like BENCHMARK(fn) and adds "min" and "max" to the
// statistics Google Benchmark reports over repetitions (it gives mean, median, stddev
// and cv by default), so `--benchmark_repetitions=5` prints the median with min/max,
// as tools/bench/run does for the cross-process scenarios.
//
// Every binary's main (micro_main.cc) calls mpx::init first: shared objects need it.
#ifndef MPX_TOOLS_BENCH_MICRO_MICRO_H_
#define MPX_TOOLS_BENCH_MICRO_MICRO_H_

#include <algorithm>
#include <vector>

#include <benchmark/benchmark.h>

namespace mpx_micro {

inline double min_of(const std::vector<double>& v) {
  return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end());
}
inline double max_of(const std::vector<double>& v) {
  return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end());
}

}  // namespace mpx_micro

#define MPX_MICRO(fn)                                    \
  BENCHMARK(fn)                                          \
      ->ComputeStatistics("min", &::mpx_micro::min_of)   \
      ->ComputeStatistics("max", &::mpx_micro::max_of)

#endif  // MPX_TOOLS_BENCH_MICRO_MICRO_H_
