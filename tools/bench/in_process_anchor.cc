// In-process ceilings for pool_bench's scenarios: what the same work costs with no
// process boundary at all. One JSON line per scenario on stdout, with pool_bench's
// scenario names and an "anchor" field:
//
//   "std::thread pool (1 process)"  the map scenarios, the round trip and the 1 MiB
//       payloads over a plain thread pool of 2 threads (one queue of jobs under a mutex,
//       threads sleeping on a condition variable: what a C++ programmer writes first).
//       map submits one job per chunk (Python's default chunks, or chunksize=1), each
//       job writes its results in place; apply_async is a job fulfilling a
//       std::promise; a 1 MiB payload is moved into its job (no copy), 2 jobs in flight
//       per thread, as the MPI farm keeps 2 chunks per worker.
//   "memcpy, one core"  copying 1 MiB blocks from a 256 MiB array into another (both
//       far larger than the caches, as 2,000 distinct payloads are): the bandwidth one
//       core has for moving payload bytes, the ceiling of any pool moving them.
//
// --sweep: the same thread pool's map(echo) over strings of 8 B ... 64 MiB with 1, 2, 4
// and 8 threads (the echo copies each string once), and memcpy over the same items.
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "tools/bench/bench.h"

namespace {

constexpr const char* kThreads = "std::thread pool (1 process)";
constexpr const char* kMemcpy = "memcpy, one core";
constexpr int kInFlightPerThread = 2;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "in_process_anchor: %s\n", what);
  std::exit(1);
}

// Counts finished jobs; waits for a count.
class Progress {
 public:
  void add() {
    std::lock_guard<std::mutex> lock(mu_);
    ++done_;
    cv_.notify_all();
  }
  void wait_for(std::size_t count) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_ >= count; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::size_t done_ = 0;  // guarded by mu_
};

class ThreadPool {
 public:
  explicit ThreadPool(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int size() const { return static_cast<int>(threads_.size()); }

  void submit(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

  // out[i] = fn(xs[i]), one job per chunk of `chunksize` items; returns when all ran.
  template <class R, class T, class Fn>
  void map(Fn fn, const std::vector<T>& xs, std::vector<R>& out, std::size_t chunksize) {
    Progress progress;
    const std::size_t chunks = (xs.size() + chunksize - 1) / chunksize;
    for (std::size_t first = 0; first < xs.size(); first += chunksize) {
      const std::size_t last = std::min(xs.size(), first + chunksize);
      submit([&, first, last] {
        for (std::size_t i = first; i < last; ++i) out[i] = fn(xs[i]);
        progress.add();
      });
    }
    progress.wait_for(chunks);
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;  // guarded by mu_
  bool stop_ = false;                       // guarded by mu_
  std::vector<std::thread> threads_;
};

std::int64_t square(std::int64_t x) { return x * x; }
std::string echo(const std::string& s) { return s; }

// items/s of map(square, xs): a new result vector each time, as map returns one.
double map_square_rate(ThreadPool& pool, const std::vector<std::int64_t>& xs,
                       std::size_t chunksize) {
  const auto t0 = bench::Clock::now();
  std::vector<std::int64_t> out(xs.size());
  pool.map(square, xs, out, chunksize);
  const double rate = static_cast<double>(xs.size()) / bench::seconds_since(t0);
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (out[i] != xs[i] * xs[i]) die("wrong square");
  }
  return rate;
}

// MiB/s of copying `count` blocks of `block` bytes from one array to another, cycling
// through arrays of `region` bytes (rounded down to whole blocks).
double memcpy_rate(std::size_t block, std::size_t region, std::size_t count) {
  const std::size_t blocks = std::max<std::size_t>(1, region / block);
  std::vector<char> from(blocks * block, 'p'), to(blocks * block, 0);  // pages touched
  const auto t0 = bench::Clock::now();
  for (std::size_t i = 0; i < count; ++i) {
    std::memcpy(to.data() + (i % blocks) * block, from.data() + (i % blocks) * block, block);
  }
  const double rate = static_cast<double>(count * block) / (1 << 20) / bench::seconds_since(t0);
  if (to[to.size() - 1] != 'p') die("memcpy copied nothing");
  return rate;
}

void table(const bench::Args& args) {
  const bench::Field threads{"anchor", bench::quoted(kThreads)};
  ThreadPool pool(2);
  const auto n_map = static_cast<std::size_t>(1000000 * args.scale);
  const auto n_small = static_cast<std::size_t>(100000 * args.scale);
  std::vector<std::int64_t> xs(n_map);
  std::iota(xs.begin(), xs.end(), 0);
  const std::vector<std::int64_t> small(xs.begin(), xs.begin() + static_cast<std::ptrdiff_t>(n_small));
  map_square_rate(pool, small, 1);  // warm up

  bench::measure(args, "map(square, 1M ints), default chunks", "items/s",
                 [&] { return map_square_rate(pool, xs, bench::python_chunksize(n_map, 2)); },
                 {threads});
  bench::measure(args, "map(square, 100k ints, chunksize=1)", "items/s",
                 [&] { return map_square_rate(pool, small, 1); }, {threads});
  bench::measure(args, "apply_async(square).get() round trip p50", "us", [&] {
    return bench::p50_us(0, static_cast<int>(2000 * args.scale + 200), [&](int i) {
      std::promise<std::int64_t> promise;
      std::future<std::int64_t> result = promise.get_future();
      pool.submit([&promise, i] { promise.set_value(square(i)); });
      if (result.get() != static_cast<std::int64_t>(i) * i) die("wrong square");
    });
  }, {threads});

  const std::string payloads = "imap_unordered(len, 2,000 x 1 MiB strings, chunksize=1)";
  const auto megabytes = static_cast<std::size_t>(2000 * args.scale);
  const auto window = static_cast<std::size_t>(kInFlightPerThread * pool.size());
  bench::measure(args, payloads, "MiB/s", [&] {
    Progress progress;
    std::vector<std::size_t> lengths(megabytes);
    const auto t0 = bench::Clock::now();
    for (std::size_t i = 0; i < megabytes; ++i) {
      if (i >= window) progress.wait_for(i - window + 1);
      pool.submit([&, i, s = std::string(std::size_t{1} << 20, 'p')] {
        lengths[i] = s.size();
        progress.add();
      });
    }
    progress.wait_for(megabytes);
    const std::size_t total = std::accumulate(lengths.begin(), lengths.end(), std::size_t{0});
    const double rate = static_cast<double>(total >> 20) / bench::seconds_since(t0);
    if (total != megabytes << 20) die("lost payloads");
    return rate;
  }, {threads});
  bench::measure(args, payloads, "MiB/s",
                 [] { return memcpy_rate(std::size_t{1} << 20, std::size_t{256} << 20, 2048); },
                 {{"anchor", bench::quoted(kMemcpy)}});
}

void sweep(const bench::Args& args) {
  for (int workers : bench::sweep_workers()) {
    ThreadPool pool(workers);
    for (std::size_t item_bytes : bench::sweep_item_bytes()) {
      if (!args.want(bench::sweep_scenario(item_bytes, workers))) continue;
      const std::size_t n = bench::sweep_items(item_bytes, args.scale);
      const std::vector<std::string> items(n, std::string(item_bytes, 'x'));
      const auto v = bench::sweep_values(args, [&] {
        const auto t0 = bench::Clock::now();
        std::vector<std::string> out(n);
        pool.map(echo, items, out, bench::python_chunksize(n, static_cast<std::size_t>(workers)));
        const double rate = static_cast<double>(n * item_bytes) / (1 << 20) / bench::seconds_since(t0);
        if (out != items) die("echo differs");
        return rate;
      });
      bench::emit_sweep_point(kThreads, item_bytes, workers, n, v);
    }
  }
  for (std::size_t item_bytes : bench::sweep_item_bytes()) {
    if (!args.want(bench::sweep_scenario(item_bytes, 1))) continue;
    const std::size_t n = bench::sweep_items(item_bytes, args.scale);
    const auto v = bench::sweep_values(args, [&] { return memcpy_rate(item_bytes, n * item_bytes, n); });
    bench::emit_sweep_point(kMemcpy, item_bytes, 1, n, v);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Args args(argc, argv);
  if (args.sweep) {
    sweep(args);
  } else {
    table(args);
  }
  return 0;
}
