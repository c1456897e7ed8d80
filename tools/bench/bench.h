// Shared pieces of the cross-process benchmarks in tools/bench (pool_bench, actor_bench,
// floors and the anchors written in C++): the clock, medians, the JSON line every
// program writes per scenario, the command line they share, and readings from /proc.
//
// Every program writes one JSON line per scenario on stdout,
//   {"scenario": ..., "unit": ..., <extra fields>, "values": [...]},
// one value per repetition; tools/bench/run joins the lines of mpx and of its anchors
// by scenario name and prints the table.
//
//   bench::Args args(argc, argv);              // --quick, --sweep, --only=<text>
//   std::vector<double> v;
//   for (int r = 0; r < args.reps; ++r) v.push_back(...);
//   bench::emit("map(square, 1M ints), default chunks", "items/s", v,
//               {{"anchor", bench::quoted("Open MPI")}});
#ifndef MPX_TOOLS_BENCH_BENCH_H_
#define MPX_TOOLS_BENCH_BENCH_H_

#include <dirent.h>
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

namespace bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

inline double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

// Calls once(i) for i in [0, warmup + rounds), timing each of the last `rounds` calls;
// returns the median of those times in microseconds (a round trip's p50).
template <class Once>
double p50_us(int warmup, int rounds, Once&& once) {
  for (int i = 0; i < warmup; ++i) once(i);
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(rounds));
  for (int i = 0; i < rounds; ++i) {
    const auto t0 = Clock::now();
    once(warmup + i);
    us.push_back(seconds_since(t0) * 1e6);
  }
  return median(std::move(us));
}

// A JSON string literal (the scenario and anchor names are plain ASCII; quotes and
// backslashes are escaped all the same).
inline std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// An extra member of a scenario's JSON line: its key and its value, already JSON
// ({"anchor", quoted("CAF")}, {"floor", "true"}, {"workers", "2"}).
struct Field {
  const char* key;
  std::string json;
};

inline void emit(FILE* out, const std::string& scenario, const std::string& unit,
                 const std::vector<double>& values, std::initializer_list<Field> fields = {}) {
  std::string line = "{\"scenario\": " + quoted(scenario) + ", \"unit\": " + quoted(unit);
  for (const Field& f : fields) line += std::string(", ") + quoted(f.key) + ": " + f.json;
  line += ", \"values\": [";
  char number[32];
  for (std::size_t i = 0; i < values.size(); ++i) {
    std::snprintf(number, sizeof number, "%s%.6g", i ? ", " : "", values[i]);
    line += number;
  }
  std::fprintf(out, "%s]}\n", line.c_str());
  std::fflush(out);
}
inline void emit(const std::string& scenario, const std::string& unit,
                 const std::vector<double>& values, std::initializer_list<Field> fields = {}) {
  emit(stdout, scenario, unit, values, fields);
}

// The command line every bench program understands:
//   --quick        fewer repetitions (3) and a tenth of the work: checks that things run
//   --sweep        the cost-growth sweep (item size x worker count) instead of the table
//   --only=<text>  only the scenarios whose name contains <text> (for profiling)
//   --reps=<n>     repetitions per scenario (for profiling a steady state)
struct Args {
  bool quick = false;
  bool sweep = false;
  int reps = 5;
  double scale = 1.0;
  std::string only;

  Args(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      if (std::strcmp(argv[i], "--quick") == 0) quick = true, reps = 3, scale = 0.1;
      if (std::strcmp(argv[i], "--sweep") == 0) sweep = true;
      if (std::strncmp(argv[i], "--only=", 7) == 0) only = argv[i] + 7;
      if (std::strncmp(argv[i], "--reps=", 7) == 0) reps = std::max(1, std::atoi(argv[i] + 7));
    }
  }
  bool want(const std::string& scenario) const {
    return only.empty() || scenario.find(only) != std::string::npos;
  }
};

// Runs once() args.reps times, if args wants the scenario, and emits what it returned
// (one value per repetition).
template <class Once>
void measure(const Args& args, const std::string& scenario, const std::string& unit, Once&& once,
             std::initializer_list<Field> fields = {}) {
  if (!args.want(scenario)) return;
  std::vector<double> values;
  for (int r = 0; r < args.reps; ++r) values.push_back(once());
  emit(scenario, unit, values, fields);
}

// The cost-growth sweep's grid: item sizes, worker counts, and how many items a point
// maps: 16 MiB of items, but at least 2 and at most 100,000 of them (a tenth of both
// with --quick), so that the sweep lasts a few minutes. 16 MiB, not more: the MPI
// farm's input and output arrays then stay under glibc's largest mmap threshold
// (32 MiB), so they are reused from one map to the next, as the strings mpx's map
// returns are; above it every map would pay for fresh pages, which this machine makes
// the dominant cost (~11 µs a page).
inline const std::vector<std::size_t>& sweep_item_bytes() {
  static const std::vector<std::size_t> sizes = {
      8, 64, 1024, std::size_t{64} << 10, std::size_t{1} << 20, std::size_t{16} << 20,
      std::size_t{64} << 20};
  return sizes;
}
inline const std::vector<int>& sweep_workers() {
  static const std::vector<int> workers = {1, 2, 4, 8};
  return workers;
}
inline std::size_t sweep_items(std::size_t item_bytes, double scale) {
  const double total = scale * static_cast<double>(std::size_t{16} << 20);
  const double n = std::clamp(total / static_cast<double>(item_bytes), 2.0, 1e5 * scale);
  return std::max<std::size_t>(2, static_cast<std::size_t>(n));
}

// The values of one point of the sweep: once() run twice unmeasured, then 3 times
// (--quick: once, cold). On this machine a size's first two maps are slower by up to
// 30x: first-touched memory costs ~11 µs a page, and glibc keeps a freed buffer for
// reuse only from the second free of its size on (its mmap threshold, then its trim
// threshold, adapt), in every process on the path.
template <class Once>
std::vector<double> sweep_values(const Args& args, Once&& once) {
  std::vector<double> values;
  if (args.quick) {
    values.push_back(once());
    return values;
  }
  once();
  once();
  for (int r = 0; r < 3; ++r) values.push_back(once());
  return values;
}

// One point of the sweep: MiB/s of items mapped by `anchor` ("" for mpx) with `workers`
// workers; the scenario name joins mpx's point with its anchors' in tools/bench/run
// (and --only=<text> picks points by it: "67108864-byte items, 2 workers").
inline std::string sweep_scenario(std::size_t item_bytes, int workers) {
  return "sweep: map(echo), " + std::to_string(item_bytes) + "-byte items, " +
         std::to_string(workers) + " workers";
}
inline void emit_sweep_point(const char* anchor, std::size_t item_bytes, int workers,
                             std::size_t items, const std::vector<double>& mib_per_s) {
  const std::string scenario = sweep_scenario(item_bytes, workers);
  const Field sweep{"sweep", "true"}, bytes{"item_bytes", std::to_string(item_bytes)},
      count{"workers", std::to_string(workers)}, n{"items", std::to_string(items)};
  if (*anchor) {
    emit(scenario, "MiB/s", mib_per_s, {{"anchor", quoted(anchor)}, sweep, bytes, count, n});
  } else {
    emit(scenario, "MiB/s", mib_per_s, {sweep, bytes, count, n});
  }
}

// Python's default chunksize for map: divmod(len, 4 * workers), rounded up.
inline std::size_t python_chunksize(std::size_t items, std::size_t workers) {
  const std::size_t c = items / (4 * workers);
  return std::max<std::size_t>(1, c + (items % (4 * workers) ? 1 : 0));
}

// A "Key:   123 kB" line of a /proc file, in KiB; 0 if the process or key is gone.
inline long proc_kib(pid_t pid, const char* file, const char* key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/" + file);
  const std::size_t n = std::strlen(key);
  for (std::string line; std::getline(in, line);) {
    if (line.compare(0, n, key) == 0) return std::atol(line.c_str() + n);
  }
  return 0;
}

// Proportional set size: shared pages are split among the processes mapping them, so
// summing it over processes gives what they really cost together.
inline long pss_kib(pid_t pid) { return proc_kib(pid, "smaps_rollup", "Pss:"); }

// Unique set size: the pages only this process maps, what ending it gives back. PSS also
// counts a share of every shared library page, which grows as fewer processes map it
// (an idle Pool(2) worker on a quiet machine reads ~25 % more PSS than with other
// programs of the same libraries running); USS does not move with the neighbours.
inline long uss_kib(pid_t pid) {
  return proc_kib(pid, "smaps_rollup", "Private_Clean:") + proc_kib(pid, "smaps_rollup", "Private_Dirty:");
}

// Peak resident memory (VmHWM), in MiB.
inline double peak_rss_mib(pid_t pid) { return proc_kib(pid, "status", "VmHWM:") / 1024.0; }

// The live children of pid (this kernel has no /proc/<pid>/task/<tid>/children: every
// /proc/<n>/stat is read for its parent pid).
inline std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return out;
  while (dirent* e = readdir(proc)) {
    const pid_t pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    const std::size_t close = text.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(text.c_str() + close + 1, " %c %d", &state, &ppid) == 2 && ppid == parent) {
      out.push_back(pid);
    }
  }
  closedir(proc);
  return out;
}

}  // namespace bench

#endif  // MPX_TOOLS_BENCH_BENCH_H_
