// mpx side of tools/bench: the foundation scenarios, each repeated, one JSON line per
// scenario on stdout: {"scenario": ..., "unit": ..., "values": [...]}.
// Run through tools/bench/run, which runs the Python anchor in the same session.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "mpx/mpx.h"

namespace {

// 64-bit like Python's ints: the 1M scenario squares values up to 10^12.
std::int64_t square(std::int64_t x) { return x * x; }
std::int64_t multiply(std::int64_t x, std::int64_t y) { return x * y; }
void nothing() {}
std::int64_t add_one(std::int64_t x) { return x + 1; }
std::int64_t negate(std::int64_t x) { return -x; }
std::size_t length_of(std::string s) { return s.size(); }
MPX_TASK(square);
MPX_TASK(multiply);
MPX_TASK(nothing);
MPX_TASK(add_one);
MPX_TASK(negate);
MPX_TASK(length_of);

// n strings of 1 MiB, each made only when the pool reads it.
struct MegabyteStrings {
  std::size_t n;
  struct iterator {
    using iterator_category = std::random_access_iterator_tag;
    using value_type = std::string;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = std::string;
    std::size_t i;
    std::string operator*() const { return std::string(std::size_t{1} << 20, 'p'); }
    iterator& operator++() { return ++i, *this; }
    difference_type operator-(const iterator& o) const {
      return static_cast<difference_type>(i) - static_cast<difference_type>(o.i);
    }
    bool operator==(const iterator& o) const { return i == o.i; }
    bool operator!=(const iterator& o) const { return i != o.i; }
  };
  iterator begin() const { return {0}; }
  iterator end() const { return {n}; }
};

// Peak resident memory of a process (VmHWM), in MiB.
double peak_rss_mib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  }
  return -1;
}

// Shared-state workloads: each child meets the driver at a barrier, so the timing
// starts when both children are running and excludes process start-up.
void locked_increments(mpx::Value<int> v, mpx::Barrier start, int n) {
  start.wait();
  for (int i = 0; i < n; ++i) {
    std::lock_guard<mpx::Lock> guard(v.get_lock());
    v.value() += 1;
  }
}
void atomic_increments(mpx::Value<int> v, mpx::Barrier start, int n) {
  start.wait();
  for (int i = 0; i < n; ++i) v.fetch_add(1);
}
void put_ints(mpx::Queue<int> q, mpx::Barrier start, int n) {
  start.wait();
  for (int i = 0; i < n; ++i) q.put(i);
}
MPX_TASK(locked_increments);
MPX_TASK(atomic_increments);
MPX_TASK(put_ints);

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// mpx_only: a figure without an anchor (Python has no router), shown for the record.
void emit(const char* scenario, const char* unit, const std::vector<double>& values,
          bool mpx_only = false) {
  std::printf("{\"scenario\": \"%s\", \"unit\": \"%s\", %s\"values\": [", scenario, unit,
              mpx_only ? "\"mpx_only\": true, " : "");
  for (std::size_t i = 0; i < values.size(); ++i) std::printf("%s%.6g", i ? ", " : "", values[i]);
  std::printf("]}\n");
  std::fflush(stdout);
}

// Two processes run task(value, barrier, n); returns increments per second.
template <class Task>
double two_process_increments(Task task, int n) {
  mpx::Value<int> v(0);
  mpx::Barrier start(3);
  mpx::Process a(task, v, start, n), b(task, v, start, n);
  a.start();
  b.start();
  start.wait();
  const auto t0 = Clock::now();
  a.join();
  b.join();
  const double rate = 2.0 * n / seconds_since(t0);
  if (v.load() != 2 * n) {
    std::fprintf(stderr, "pool_bench: lost increments: %d of %d\n", v.load(), 2 * n);
    std::exit(1);
  }
  return rate;
}

void shared_state_scenarios(int reps, double scale) {
  const int n = static_cast<int>(500000 * scale);
  std::vector<double> v;
  for (int r = 0; r < reps; ++r) v.push_back(two_process_increments(locked_increments, n));
  emit("Value += 1 under get_lock(), 2 processes", "increments/s", v);
  v.clear();
  for (int r = 0; r < reps; ++r) v.push_back(two_process_increments(atomic_increments, n));
  emit("Value += 1, 2 processes: mpx fetch_add vs Python get_lock()", "increments/s", v);

  const int items = static_cast<int>(1000000 * scale);
  v.clear();
  for (int r = 0; r < reps; ++r) {
    mpx::Queue<int> q;
    mpx::Barrier start(2);
    mpx::Process producer(put_ints, q, start, items);
    producer.start();
    start.wait();
    const auto t0 = Clock::now();
    long long sum = 0;
    for (int i = 0; i < items; ++i) sum += q.get();
    v.push_back(items / seconds_since(t0));
    producer.join();
    if (sum != static_cast<long long>(items) * (items - 1) / 2) {
      std::fprintf(stderr, "pool_bench: queue lost items\n");
      std::exit(1);
    }
  }
  emit("Queue of small ints, producer process -> consumer", "items/s", v);
}

}  // namespace

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  int reps = 5;
  double scale = 1.0;
  std::string only;  // --only=<text>: just the scenarios whose name contains it (profiling)
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) reps = 3, scale = 0.1;
    if (std::strncmp(argv[i], "--only=", 7) == 0) only = argv[i] + 7;
  }
  auto want = [&only](const char* scenario) {
    return only.empty() || std::string(scenario).find(only) != std::string::npos;
  };
  // Start-up scenarios first, in a small process, as the Python side does.
  std::vector<double> v;
  for (int r = 0; r < reps && want("Process start + join"); ++r) {
    const int n = 20;
    auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      mpx::Process p(nothing);
      p.start();
      p.join();
    }
    v.push_back(seconds_since(t0) * 1e3 / n);
  }
  if (want("Process start + join")) emit("Process start + join", "ms", v);

  v.clear();
  for (int r = 0; r < reps && want("Pool(2) create"); ++r) {
    const int n = 5;
    auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      mpx::Pool p(2);
      p.apply(square, 1);
    }
    v.push_back(seconds_since(t0) * 1e3 / n);
  }
  if (want("Pool(2) create")) emit("Pool(2) create + first task + teardown", "ms", v);

  if (want("Value") || want("Queue")) shared_state_scenarios(reps, scale);

  const int n_map = static_cast<int>(1000000 * scale);
  const int n_small = static_cast<int>(100000 * scale);
  std::vector<std::int64_t> xs(n_map);
  std::iota(xs.begin(), xs.end(), 0);
  std::vector<std::tuple<std::int64_t, std::int64_t>> pairs;
  for (int i = 0; i < n_map; ++i) pairs.emplace_back(i, i + 1);
  std::vector<std::int64_t> small(xs.begin(), xs.begin() + n_small);

  mpx::Pool pool(2);
  pool.map(square, small);  // warm up: workers started and connected

  v.clear();
  for (int r = 0; r < reps && want("map(square, 1M"); ++r) {
    auto t0 = Clock::now();
    auto out = pool.map(square, xs);
    v.push_back(out.size() / seconds_since(t0));
  }
  if (want("map(square, 1M")) emit("map(square, 1M ints), default chunks", "items/s", v);

  v.clear();
  for (int r = 0; r < reps && want("chunksize=1)"); ++r) {
    auto t0 = Clock::now();
    auto out = pool.map(square, small, 1);
    v.push_back(out.size() / seconds_since(t0));
  }
  if (want("chunksize=1)")) emit("map(square, 100k ints, chunksize=1)", "items/s", v);

  v.clear();
  for (int r = 0; r < reps && want("starmap"); ++r) {
    auto t0 = Clock::now();
    auto out = pool.starmap(multiply, pairs);
    v.push_back(out.size() / seconds_since(t0));
  }
  if (want("starmap")) emit("starmap(multiply, 1M pairs)", "items/s", v);

  v.clear();
  for (int r = 0; r < reps && want("round trip"); ++r) {
    std::vector<double> lat;
    for (int i = 0; i < 2000 * scale + 200; ++i) {
      auto t0 = Clock::now();
      pool.apply_async(square, i).get();
      lat.push_back(seconds_since(t0) * 1e6);
    }
    std::nth_element(lat.begin(), lat.begin() + lat.size() / 2, lat.end());
    v.push_back(lat[lat.size() / 2]);
  }
  if (want("round trip")) emit("apply_async(square).get() round trip p50", "us", v);

  // Large payloads through the pool, generated as it reads them: throughput, and how
  // much memory the router needed for it (backpressure keeps it bounded).
  const std::size_t megabytes = static_cast<std::size_t>(2000 * scale);
  v.clear();
  for (int r = 0; r < reps && want("1 MiB"); ++r) {
    auto t0 = Clock::now();
    std::size_t total = 0;
    for (std::size_t n : pool.imap_unordered(length_of, MegabyteStrings{megabytes}, 1)) total += n;
    v.push_back(static_cast<double>(total >> 20) / seconds_since(t0));
    if (total != megabytes << 20) {
      std::fprintf(stderr, "pool_bench: lost payloads\n");
      std::exit(1);
    }
  }
  if (want("1 MiB")) {
    emit("imap_unordered(len, 2,000 x 1 MiB strings, chunksize=1)", "MiB/s", v);
    emit("peak RSS of the pool's router after the 1 MiB payloads", "MiB",
         {peak_rss_mib(pool.router_pid())}, /*mpx_only=*/true);
  }

  // Three stages, each a pool of 2 workers, from start to end: pools included, as a
  // pipeline starts its own.
  const std::vector<std::int64_t> piped(xs.begin(), xs.begin() + static_cast<std::ptrdiff_t>(200000 * scale));
  v.clear();
  for (int r = 0; r < reps && want("pipeline"); ++r) {
    auto t0 = Clock::now();
    const auto out =
        mpx::Pipeline::from(piped).map(square, 2).map(add_one, 2).map(negate, 2).collect();
    v.push_back(out.size() / seconds_since(t0));
    if (out.size() != piped.size() || out.back() != -(piped.back() * piped.back() + 1)) {
      std::fprintf(stderr, "pool_bench: pipeline lost items\n");
      std::exit(1);
    }
  }
  if (want("pipeline")) emit("pipeline of 3 map stages (2 workers each), 200k ints, start to end", "items/s", v);

  return 0;
}
