// mpx side of the actor scenarios of tools/bench: one JSON line per scenario on stdout,
// {"scenario": ..., "unit": ..., "values": [...]}, one value per repetition. The
// anchors are Python's multiprocessing Manager proxies (python_anchor.py) and CAF
// (caf_anchor.cc), run by tools/bench/run in the same session.
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
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

// Appends n ints to the list once go is set (one of the Manager scenario's clients).
void append_ints(mpx::ListProxy<long> out, mpx::Event go, int n) {
  go.wait();
  for (int i = 0; i < n; ++i) out.append(i);
}
MPX_TASK(append_ints);

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

  // Manager: the same scenarios as python_anchor.py's manager_scenarios.
  std::vector<double> set_us, get_us, appends;
  const int ops = quick ? 2000 : 10000;
  for (int r = 0; r < reps; ++r) {
    mpx::Manager manager;
    auto d = manager.dict<std::string, long>();
    set_us.push_back(bench::p50_us(200, ops, [&](int i) {
      d.set(i < 200 ? std::string("warm") : "key-" + std::to_string(i % 100), i);
    }));
    long sum = 0;
    get_us.push_back(bench::p50_us(0, ops, [&](int i) { sum += *d.get("key-" + std::to_string(i % 100)); }));
    if (sum <= 0) std::abort();

    auto list = manager.list<long>();
    mpx::Event go;
    const int per_client = quick ? 1000 : 5000;
    std::vector<mpx::Process> clients;
    for (int c = 0; c < 2; ++c) clients.emplace_back(bench_actors::append_ints, list, go, per_client);
    for (auto& p : clients) p.start();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // both started, waiting
    const auto t0 = bench::Clock::now();
    go.set();
    for (auto& p : clients) p.join();
    appends.push_back(2.0 * per_client / bench::seconds_since(t0));
    if (list.size() != static_cast<std::size_t>(2 * per_client)) std::abort();
  }
  bench::emit("Manager dict d[k] = v round trip p50", "us", set_us);
  bench::emit("Manager dict d[k] round trip p50", "us", get_us);
  bench::emit("Manager list append, 2 client processes", "appends/s", appends);
  return 0;
}
