// mpx side of tools/bench: the pool, process and shared-state scenarios, each repeated,
// one JSON line per scenario on stdout: {"scenario": ..., "unit": ..., "values": [...]}.
// Run through tools/bench/run, which runs the anchors (Python multiprocessing, Open MPI,
// a std::thread pool, memcpy) in the same session.
//
// Usage: pool_bench [--quick] [--only=<text>]   the table's scenarios
//        pool_bench --sweep [--quick]           cost growth: map(echo) over items of
//                                               8 B ... 64 MiB with 1, 2, 4, 8 workers
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <numeric>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "mpx/mpx.h"
#include "tools/bench/bench.h"

namespace {

// 64-bit like Python's ints: the 1M scenario squares values up to 10^12.
std::int64_t square(std::int64_t x) { return x * x; }
std::int64_t multiply(std::int64_t x, std::int64_t y) { return x * y; }
void nothing() {}
std::int64_t add_one(std::int64_t x) { return x + 1; }
std::int64_t negate(std::int64_t x) { return -x; }
std::size_t length_of(std::string s) { return s.size(); }
std::string echo(std::string s) { return s; }
MPX_TASK(square);
MPX_TASK(multiply);
MPX_TASK(nothing);
MPX_TASK(add_one);
MPX_TASK(negate);
MPX_TASK(length_of);
MPX_TASK(echo);

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

using bench::Clock;
using bench::emit;
using bench::measure;
using bench::seconds_since;
const bench::Field kMpxOnly{"mpx_only", "true"};  // no anchor has this figure

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "pool_bench: %s\n", what);
    std::exit(1);
  }
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
  check(v.load() == 2 * n, "lost increments");
  return rate;
}

void shared_state_scenarios(const bench::Args& args) {
  const int n = static_cast<int>(500000 * args.scale);
  measure(args, "Value += 1 under get_lock(), 2 processes", "increments/s",
          [n] { return two_process_increments(locked_increments, n); });
  measure(args, "Value += 1, 2 processes: mpx fetch_add vs Python get_lock()", "increments/s",
          [n] { return two_process_increments(atomic_increments, n); });
  const int items = static_cast<int>(1000000 * args.scale);
  measure(args, "Queue of small ints, producer process -> consumer", "items/s", [items] {
    mpx::Queue<int> q;
    mpx::Barrier start(2);
    mpx::Process producer(put_ints, q, start, items);
    producer.start();
    start.wait();
    const auto t0 = Clock::now();
    long long sum = 0;
    for (int i = 0; i < items; ++i) sum += q.get();
    const double rate = items / seconds_since(t0);
    producer.join();
    check(sum == static_cast<long long>(items) * (items - 1) / 2, "queue lost items");
    return rate;
  });
}

// "Pool(N) create + first task + teardown" (N = 2 keeps the name of earlier runs).
std::string pool_create_scenario(int n) {
  return "Pool(" + std::to_string(n) + ") create + first task + teardown";
}

// Memory of an idle pool's workers (the router's children), per worker, in MiB, as
// `memory_kib` reads it (bench::pss_kib or bench::uss_kib).
double idle_worker_mib(int n, long (*memory_kib)(pid_t)) {
  mpx::Pool pool(n);
  std::vector<std::int64_t> xs(static_cast<std::size_t>(4 * n));
  pool.map(square, xs, 1);  // every worker started, most have run a task
  std::vector<pid_t> workers;
  for (int tries = 0; tries < 100; ++tries) {  // a replacement may still be starting
    workers = bench::children_of(pool.router_pid());
    if (static_cast<int>(workers.size()) == n) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  long kib = 0;
  for (pid_t w : workers) kib += memory_kib(w);
  return workers.empty() ? 0.0 : static_cast<double>(kib) / static_cast<double>(workers.size()) / 1024;
}

// map(echo) over items of each size with 1, 2, 4, 8 workers: MiB/s of items mapped.
void sweep(const bench::Args& args) {
  for (int workers : bench::sweep_workers()) {
    mpx::Pool pool(workers);
    for (std::size_t item_bytes : bench::sweep_item_bytes()) {
      if (!args.want(bench::sweep_scenario(item_bytes, workers))) continue;
      const std::size_t n = bench::sweep_items(item_bytes, args.scale);
      const std::vector<std::string> items(n, std::string(item_bytes, 'x'));
      const auto v = bench::sweep_values(args, [&] {
        const auto t0 = Clock::now();
        const std::vector<std::string> out = pool.map(echo, items);
        const double rate = static_cast<double>(n * item_bytes) / (1 << 20) / seconds_since(t0);
        check(out == items, "echo differs");
        return rate;
      });
      bench::emit_sweep_point("", item_bytes, workers, n, v);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  const bench::Args args(argc, argv);
  if (args.sweep) {
    sweep(args);
    return 0;
  }
  const double scale = args.scale;
  // Start-up scenarios first, in a small process, as the Python side does.
  measure(args, "Process start + join", "ms", [] {
    const int n = 20;
    const auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      mpx::Process p(nothing);
      p.start();
      p.join();
    }
    return seconds_since(t0) * 1e3 / n;
  });
  for (int workers : {1, 2, 4, 8, 16, 32}) {
    measure(args, pool_create_scenario(workers), "ms", [&args, workers] {
      const int n = args.quick ? 1 : 5;
      const auto t0 = Clock::now();
      for (int i = 0; i < n; ++i) {
        mpx::Pool p(workers);
        p.apply(square, 1);
      }
      return seconds_since(t0) * 1e3 / n;
    });
  }
  for (int workers : {2, 32}) {
    measure(args, "idle pool worker memory (PSS per worker), Pool(" + std::to_string(workers) + ")",
            "MiB", [workers] { return idle_worker_mib(workers, bench::pss_kib); });
  }
  measure(args, "idle pool worker memory (USS per worker), Pool(2)", "MiB",
          [] { return idle_worker_mib(2, bench::uss_kib); });

  shared_state_scenarios(args);

  const int n_map = static_cast<int>(1000000 * scale);
  const int n_small = static_cast<int>(100000 * scale);
  std::vector<std::int64_t> xs(n_map);
  std::iota(xs.begin(), xs.end(), 0);
  std::vector<std::tuple<std::int64_t, std::int64_t>> pairs;  // made only if wanted (profiles)
  if (args.want("starmap")) {
    for (int i = 0; i < n_map; ++i) pairs.emplace_back(i, i + 1);
  }
  std::vector<std::int64_t> small(xs.begin(), xs.begin() + n_small);

  mpx::Pool pool(2);
  pool.map(square, small);  // warm up: workers started and connected

  // items/s of pool.map(square, items, chunksize), its results checked after the clock.
  auto map_rate = [&pool](const std::vector<std::int64_t>& items, std::size_t chunksize) {
    const auto t0 = Clock::now();
    const auto out = pool.map(square, items, chunksize);
    const double rate = static_cast<double>(out.size()) / seconds_since(t0);
    check(out.size() == items.size() && out.back() == items.back() * items.back(), "wrong squares");
    return rate;
  };
  measure(args, "map(square, 1M ints), default chunks", "items/s", [&] { return map_rate(xs, 0); });
  measure(args, "map(square, 100k ints, chunksize=1)", "items/s", [&] { return map_rate(small, 1); });
  measure(args, "starmap(multiply, 1M pairs)", "items/s", [&] {
    const auto t0 = Clock::now();
    const auto out = pool.starmap(multiply, pairs);
    return static_cast<double>(out.size()) / seconds_since(t0);
  });
  measure(args, "apply_async(square).get() round trip p50", "us", [&] {
    return bench::p50_us(0, static_cast<int>(2000 * scale + 200),
                         [&](int i) { pool.apply_async(square, i).get(); });
  });

  // Large payloads through the pool, generated as it reads them: throughput, and how
  // much memory the router needed for it (backpressure keeps it bounded).
  const auto megabytes = static_cast<std::size_t>(2000 * scale);
  const std::string payloads = "imap_unordered(len, 2,000 x 1 MiB strings, chunksize=1)";
  measure(args, payloads, "MiB/s", [&] {
    const auto t0 = Clock::now();
    std::size_t total = 0;
    for (std::size_t n : pool.imap_unordered(length_of, MegabyteStrings{megabytes}, 1)) total += n;
    const double rate = static_cast<double>(total >> 20) / seconds_since(t0);
    check(total == megabytes << 20, "lost payloads");
    return rate;
  });
  if (args.want(payloads)) {
    emit("peak RSS of the pool's router after the 1 MiB payloads", "MiB",
         {bench::peak_rss_mib(pool.router_pid())}, {kMpxOnly});
  }

  // Three stages, each a pool of 2 workers, from start to end: pools included, as a
  // pipeline starts its own.
  const std::vector<std::int64_t> piped(xs.begin(), xs.begin() + static_cast<std::ptrdiff_t>(200000 * scale));
  measure(args, "pipeline of 3 map stages (2 workers each), 200k ints, start to end", "items/s", [&] {
    const auto t0 = Clock::now();
    const auto out =
        mpx::Pipeline::from(piped).map(square, 2).map(add_one, 2).map(negate, 2).collect();
    const double rate = static_cast<double>(out.size()) / seconds_since(t0);
    check(out.size() == piped.size() && out.back() == -(piped.back() * piped.back() + 1),
          "pipeline lost items");
    return rate;
  });
  return 0;
}
