// mpx side of the actor scenarios of tools/bench: one JSON line per scenario on stdout,
// {"scenario": ..., "unit": ..., "values": [...]}, one value per repetition. The
// anchors are Python's multiprocessing Manager proxies (python_anchor.py) and CAF
// (caf_anchor.cc), run by tools/bench/run in the same session.
#include <string>
#include <vector>

#include "mpx/mpx.h"
#include "tools/bench/bench.h"

namespace bench_actors {

class Counter {
 public:
  explicit Counter(long start) : n_(start) {}
  long add(long k) { return n_ += k; }

 private:
  long n_;
};
MPX_ACTOR(Counter, add);

}  // namespace bench_actors

using bench_actors::Counter;

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  const bench::Args args(argc, argv);
  const bool quick = args.quick;
  const int reps = 5;
  const int calls = quick ? 2000 : 10000;

  std::vector<double> round_trip, pipelined, spawn_ms, memory;
  for (int r = 0; r < reps; ++r) {
    auto c = mpx::spawn<Counter>(0L);
    round_trip.push_back(
        bench::p50_us(200, calls, [&](int) { c.call(&Counter::add, 1L).get(); }));

    // 1,000 calls in flight at a time, as the CAF anchor does (Manager proxies have no
    // asynchronous call: python_anchor.py overlaps what a thread pool can).
    const int window = 1000, total = calls * 5;
    const auto t0 = bench::Clock::now();
    std::vector<mpx::Future<long>> inflight;
    inflight.reserve(window);
    for (int sent = 0; sent < total; sent += window) {
      inflight.clear();
      for (int i = 0; i < window; ++i) inflight.push_back(c.call(&Counter::add, 1L));
      for (auto& f : inflight) f.get();
    }
    pipelined.push_back(total / bench::seconds_since(t0));
  }
  bench::emit("actor call round trip p50", "us", round_trip);
  bench::emit("actor calls, 1000 in flight", "calls/s", pipelined);

  for (int r = 0; r < reps; ++r) {
    const auto t0 = bench::Clock::now();
    auto c = mpx::spawn<Counter>(0L);
    c.call(&Counter::add, 1L).get();
    c.stop();
    spawn_ms.push_back(bench::seconds_since(t0) * 1e3);
  }
  bench::emit("actor spawn + first call + stop", "ms", spawn_ms);

  const int idle = quick ? 20 : 100;
  for (int r = 0; r < (quick ? 1 : 5); ++r) {
    std::vector<mpx::Actor<Counter>> actors;
    for (int i = 0; i < idle; ++i) actors.push_back(mpx::spawn<Counter>(0L));
    for (auto& a : actors) a.call(&Counter::add, 1L).get();
    long total = 0;
    for (auto& a : actors) total += bench::pss_kib(a.pid());
    memory.push_back(static_cast<double>(total) / idle / 1024.0);
  }
  bench::emit("idle actor memory (PSS per actor process)", "MiB", memory);
  return 0;
}
