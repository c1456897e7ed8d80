// mpx side of the actor scenarios of tools/bench: one JSON line per scenario on stdout,
// {"scenario": ..., "unit": ..., "values": [...]}, one value per repetition. The
// anchors are Python's multiprocessing Manager proxies (python_anchor.py) and CAF
// (caf_anchor.cc), run by tools/bench/run in the same session.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "mpx/mpx.h"

namespace bench {

class Counter {
 public:
  explicit Counter(long start) : n_(start) {}
  long add(long k) { return n_ += k; }

 private:
  long n_;
};
MPX_ACTOR(Counter, add);

}  // namespace bench

namespace {

using bench::Counter;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void emit(const char* scenario, const char* unit, const std::vector<double>& values) {
  std::printf("{\"scenario\": \"%s\", \"unit\": \"%s\", \"values\": [", scenario, unit);
  for (std::size_t i = 0; i < values.size(); ++i) std::printf("%s%.6g", i ? ", " : "", values[i]);
  std::printf("]}\n");
  std::fflush(stdout);
}

// Proportional set size: shared library pages are split among the processes mapping
// them, so summing it over actors gives what they really cost together.
long pss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Pss:", 0) == 0) return std::atol(line.c_str() + 4);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  bool quick = false;
  for (int i = 1; i < argc; ++i) quick |= std::strcmp(argv[i], "--quick") == 0;
  const int reps = 5;
  const int calls = quick ? 2000 : 10000;

  std::vector<double> round_trip, pipelined, spawn_ms, memory;
  for (int r = 0; r < reps; ++r) {
    auto c = mpx::spawn<Counter>(0L);
    for (int i = 0; i < 200; ++i) c.call(&Counter::add, 1L).get();  // warm up
    std::vector<double> us;
    us.reserve(calls);
    for (int i = 0; i < calls; ++i) {
      const auto t0 = Clock::now();
      c.call(&Counter::add, 1L).get();
      us.push_back(seconds_since(t0) * 1e6);
    }
    std::nth_element(us.begin(), us.begin() + us.size() / 2, us.end());
    round_trip.push_back(us[us.size() / 2]);

    // 1,000 calls in flight at a time, as the CAF anchor does (Manager proxies have no
    // asynchronous call: python_anchor.py overlaps what a thread pool can).
    const int window = 1000, total = calls * 5;
    const auto t0 = Clock::now();
    std::vector<mpx::Future<long>> inflight;
    inflight.reserve(window);
    for (int sent = 0; sent < total; sent += window) {
      inflight.clear();
      for (int i = 0; i < window; ++i) inflight.push_back(c.call(&Counter::add, 1L));
      for (auto& f : inflight) f.get();
    }
    pipelined.push_back(total / seconds_since(t0));
  }
  emit("actor call round trip p50", "us", round_trip);
  emit("actor calls, 1000 in flight", "calls/s", pipelined);

  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    auto c = mpx::spawn<Counter>(0L);
    c.call(&Counter::add, 1L).get();
    c.stop();
    spawn_ms.push_back(seconds_since(t0) * 1e3);
  }
  emit("actor spawn + first call + stop", "ms", spawn_ms);

  const int idle = quick ? 20 : 100;
  for (int r = 0; r < (quick ? 1 : 5); ++r) {
    std::vector<mpx::Actor<Counter>> actors;
    for (int i = 0; i < idle; ++i) actors.push_back(mpx::spawn<Counter>(0L));
    for (auto& a : actors) a.call(&Counter::add, 1L).get();
    long total = 0;
    for (auto& a : actors) total += pss_kib(a.pid());
    memory.push_back(static_cast<double>(total) / idle / 1024.0);
  }
  emit("idle actor memory (PSS per actor process)", "MiB", memory);
  return 0;
}
