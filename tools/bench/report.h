// What the tools/bench programs share: the JSON line each scenario prints for
// tools/bench/run, and the process figures they read from /proc.
#ifndef MPX_TOOLS_BENCH_REPORT_H_
#define MPX_TOOLS_BENCH_REPORT_H_

#include <sys/types.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace bench {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One scenario's figures as a JSON line {"scenario", "unit", ["anchor"], ["mpx_only"],
// "values"} on out. anchor: whose figures these are when not mpx's (tools/bench/run
// pairs them with mpx's row of the same scenario); mpx_only: a figure without an anchor.
inline void emit(FILE* out, const std::string& scenario, const char* unit,
                 const std::vector<double>& values, const char* anchor = nullptr,
                 bool mpx_only = false) {
  std::fprintf(out, "{\"scenario\": \"%s\", \"unit\": \"%s\", ", scenario.c_str(), unit);
  if (anchor != nullptr) std::fprintf(out, "\"anchor\": \"%s\", ", anchor);
  if (mpx_only) std::fprintf(out, "\"mpx_only\": true, ");
  std::fprintf(out, "\"values\": [");
  for (std::size_t i = 0; i < values.size(); ++i) std::fprintf(out, "%s%.6g", i ? ", " : "", values[i]);
  std::fprintf(out, "]}\n");
  std::fflush(out);
}

// A field of /proc/<pid>/status in KiB ("VmHWM", "RssAnon"), -1 if absent.
inline double status_kib(pid_t pid, const std::string& field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::atof(line.c_str() + field.size() + 1);
  }
  return -1;
}

}  // namespace bench

#endif  // MPX_TOOLS_BENCH_REPORT_H_
