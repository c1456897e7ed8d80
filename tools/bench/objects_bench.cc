// Read-only objects (mpx::put) against passing the same data by value, in one process,
// interleaved repetition by repetition. One JSON line per scenario on stdout for the
// objects (mpx's figures); the by-value figures go to --by-value-out=FILE as the
// anchor "mpx by value" (tools/bench/run prints the two side by side, with the ratio).
//
// Scenarios:
//   - the training example's data set (grown to 32 MiB: 80,000 samples of 50
//     features, and their labels) to 8 workers, each running one epoch of gradient
//     descent on it: the time, put() included, and the payload bytes that cross the
//     router (as packed by the pool for these arguments, in and out); and the same
//     plain-vector calls through a pool with the default object_threshold, whose large
//     argument becomes an object by itself;
//   - a map over 16 arrays of 8 MiB, summing each (put() included);
//   - 1 MiB payloads through a pool (the reliability issue's scenario), and the copy
//     floor they are held to: memcpy of 1 MiB blocks on this machine;
//   - large arguments as objects (PoolOptions::object_threshold): imap_unordered(len)
//     over strings of 16 KiB ... 4 MiB passed as plain std::string arguments, with every
//     one sent as an object against every one by value: where the default threshold
//     comes from;
//   - large results as objects: imap_unordered(make_text) returning strings of the same
//     sizes, as objects against by value.
// The by-value runs use pools with object_threshold(0): without it their large
// arguments would travel as objects too.
// --quick: 3 repetitions and smaller counts; --only=<text>: the scenarios whose name
// contains it; --objects-only: skip the by-value runs (both for perf record).
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "mpx/mpx.h"
#include "tools/bench/bench.h"

namespace {

using bench::Clock;
using bench::seconds_since;

constexpr std::size_t kFeatures = 50;

// One epoch of full-batch logistic-regression gradient descent from zero weights, as
// examples/actor/training.cc runs 150 of; returns the training log-loss after it.
double one_epoch(mpx::Span<const double> x, mpx::Span<const int> y, double learning_rate) {
  const std::size_t n = y.size();
  std::vector<double> grad(kFeatures, 0.0);
  for (std::size_t i = 0; i < n; ++i) {
    const double err = 0.5 - y[i];  // sigmoid(0) - label
    for (std::size_t j = 0; j < kFeatures; ++j) grad[j] += err * x[i * kFeatures + j];
  }
  double loss = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    double z = 0.0;
    for (std::size_t j = 0; j < kFeatures; ++j) z -= learning_rate * grad[j] / n * x[i * kFeatures + j];
    const double p = 1.0 / (1.0 + std::exp(-z));
    loss -= y[i] ? std::log(p + 1e-12) : std::log(1 - p + 1e-12);
  }
  return loss / static_cast<double>(n);
}
// The same, given copies: how the data set travels without objects.
double one_epoch_by_value(std::vector<double> x, std::vector<int> y, double learning_rate) {
  return one_epoch(x, y, learning_rate);
}
double sum_view(mpx::Span<const double> xs) { return std::accumulate(xs.begin(), xs.end(), 0.0); }
double sum_by_value(std::vector<double> xs) { return sum_view(xs); }
std::size_t length_of_view(mpx::Span<const char> s) { return s.size(); }
std::size_t length_of(std::string s) { return s.size(); }
std::string make_text(std::size_t bytes) { return std::string(bytes, 'r'); }
MPX_TASK(make_text);
MPX_TASK(one_epoch);
MPX_TASK(one_epoch_by_value);
MPX_TASK(sum_view);
MPX_TASK(sum_by_value);
MPX_TASK(length_of_view);
MPX_TASK(length_of);

struct Options {
  int reps = 5;
  double scale = 1.0;
  std::string only;
  FILE* by_value = nullptr;
  bool objects_only = false;
  bool want(const char* scenario) const {
    return only.empty() || std::string(scenario).find(only) != std::string::npos;
  }
};

// The bytes a pool sends for one call of a task with parameters Params... on args:
// packed exactly as the pool packs them (objects and windows of objects as handles).
template <class... Params, class... Args>
double packed_bytes(const Args&... args) {
  mpx::detail::Buffer buf;
  msgpack::packer<mpx::detail::Buffer> pk(buf);
  mpx::detail::ArgCodec<Params...>::pack_call(pk, args...);
  return static_cast<double>(buf.size());
}

// The by-value figures of a scenario, as the anchor "mpx by value".
void emit_by_value(const Options& o, const char* scenario, const char* unit,
                   const std::vector<double>& values) {
  if (!o.objects_only) bench::emit(o.by_value, scenario, unit, values, {{"anchor", bench::quoted("mpx by value")}});
}

void fail(const char* what) {
  std::fprintf(stderr, "objects_bench: %s\n", what);
  std::exit(1);
}

void training_data_set(const Options& o) {
  const char* kScenario = "training data set (32 MiB) to 8 workers, one epoch each, put() included";
  if (!o.want(kScenario)) return;
  const std::size_t samples = static_cast<std::size_t>(80000 * o.scale);
  std::vector<double> x(samples * kFeatures);
  std::vector<int> y(samples);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<double>((i * 2654435761u) % 1000) / 500 - 1;
  for (std::size_t i = 0; i < samples; ++i) y[i] = static_cast<int>(i % 3 == 0);
  std::vector<double> rates(8);
  for (int i = 0; i < 8; ++i) rates[static_cast<std::size_t>(i)] = 0.05 * (i + 1);

  mpx::Pool pool(mpx::PoolOptions().processes(8).object_threshold(0));
  pool.map(sum_view, std::vector<std::vector<double>>(16, {1.0}), 1);  // all 8 started
  // The same plain-vector calls with the default object_threshold: x (32 MiB) becomes
  // an object by itself, once per call; y (320 KB) still goes by value.
  mpx::Pool automatic(8);
  automatic.map(sum_view, std::vector<std::vector<double>>(16, {1.0}), 1);
  std::vector<double> by_ref, by_value, automatic_ms;
  double expected = 0;
  for (int r = 0; r < o.reps; ++r) {
    auto t0 = Clock::now();
    std::vector<mpx::AsyncResult<double>> calls;
    std::vector<double> a;
    if (!o.objects_only) {
      for (double rate : rates) calls.push_back(pool.apply_async(one_epoch_by_value, x, y, rate));
      for (auto& c : calls) a.push_back(c.get());
      by_value.push_back(seconds_since(t0) * 1e3);
    }

    t0 = Clock::now();
    const auto xr = mpx::put(x);
    const auto yr = mpx::put(y);
    calls.clear();
    for (double rate : rates) calls.push_back(pool.apply_async(one_epoch, xr, yr, rate));
    std::vector<double> b;
    for (auto& c : calls) b.push_back(c.get());
    by_ref.push_back(seconds_since(t0) * 1e3);
    if ((!o.objects_only && a != b) || (r > 0 && b[0] != expected)) fail("the two ways disagree");
    expected = b[0];

    t0 = Clock::now();
    calls.clear();
    for (double rate : rates) calls.push_back(automatic.apply_async(one_epoch_by_value, x, y, rate));
    std::vector<double> c;
    for (auto& call : calls) c.push_back(call.get());
    automatic_ms.push_back(seconds_since(t0) * 1e3);
    if (c != b) fail("automatic objects disagree");
  }
  bench::emit(stdout, kScenario, "ms", by_ref);
  emit_by_value(o, kScenario, "ms", by_value);
  const char* kAutomatic =
      "training data set (32 MiB) to 8 workers, one epoch each, plain vectors: objects made by themselves";
  bench::emit(stdout, kAutomatic, "ms", automatic_ms);
  emit_by_value(o, kAutomatic, "ms", by_value);

  // What crosses the router: 8 calls' payloads, read and written once each.
  const auto xr = mpx::put(x);
  const auto yr = mpx::put(y);
  const double mib = 8.0 * 2 / (1 << 20);
  const char* kBytes = "training data set to 8 workers: payload bytes through the router";
  bench::emit(stdout, kBytes, "MiB",
              {mib * packed_bytes<mpx::Span<const double>, mpx::Span<const int>, double>(xr, yr, 0.1)});
  if (!o.objects_only) {
    emit_by_value(o, kBytes, "MiB",
                  {mib * packed_bytes<std::vector<double>, std::vector<int>, double>(x, y, 0.1)});
  }
  const char* kAutomaticBytes =
      "training data set to 8 workers, plain vectors: payload bytes through the router";
  mpx::detail::Pins objects;
  mpx::detail::ObjectSink sink{mpx::detail::default_object_threshold(), &objects};
  mpx::detail::ObjectScope scope(sink);
  bench::emit(stdout, kAutomaticBytes, "MiB",
              {mib * packed_bytes<std::vector<double>, std::vector<int>, double>(x, y, 0.1)});
}

void map_over_arrays(const Options& o) {
  const char* kScenario = "map(sum) over 16 arrays of 8 MiB, 2 workers, put() included";
  const char* kPut = "map(sum) over 16 arrays of 8 MiB already put(), 2 workers";
  if (!o.want(kScenario) && !o.want(kPut)) return;
  const std::size_t n = static_cast<std::size_t>((1 << 20) * o.scale);  // doubles per array
  std::vector<std::vector<double>> arrays(16, std::vector<double>(n));
  for (std::size_t k = 0; k < arrays.size(); ++k) std::iota(arrays[k].begin(), arrays[k].end(), double(k));
  const double mib = static_cast<double>(arrays.size() * n * sizeof(double)) / (1 << 20);
  mpx::Pool pool(mpx::PoolOptions().processes(2).object_threshold(0));
  pool.map(sum_view, std::vector<std::vector<double>>(4, {1.0}), 1);
  std::vector<double> by_ref, by_value, already;
  for (int r = 0; r < o.reps; ++r) {
    auto t0 = Clock::now();
    const auto a = o.objects_only ? std::vector<double>() : pool.map(sum_by_value, arrays, 1);
    if (!o.objects_only) by_value.push_back(mib / seconds_since(t0));

    t0 = Clock::now();
    std::vector<mpx::ObjectRef<std::vector<double>>> refs;
    for (const auto& array : arrays) refs.push_back(mpx::put(array));
    const auto b = pool.map(sum_view, refs, 1);
    by_ref.push_back(mib / seconds_since(t0));

    t0 = Clock::now();
    const auto c = pool.map(sum_view, refs, 1);
    already.push_back(mib / seconds_since(t0));
    if ((!o.objects_only && a != b) || b != c) fail("the map results disagree");
  }
  bench::emit(stdout, kScenario, "MiB/s", by_ref);
  emit_by_value(o, kScenario, "MiB/s", by_value);
  bench::emit(stdout, kPut, "MiB/s", already, {{"mpx_only", "true"}});
}

// n payloads of 1 MiB, made as the pool reads them: by value (std::string arguments) or
// each put() into an object as it is made (the call keeps its objects until it is done,
// so they go in calls of at most 256).
void megabyte_payloads(const Options& o) {
  const char* kScenario = "imap_unordered(len, 2,000 x 1 MiB payloads, chunksize=1)";
  const char* kFloor = "floor: memcpy of 1 MiB blocks (a 256 MiB region, out of cache)";
  const char* kFresh = "floor: memcpy of 1 MiB blocks into fresh pages (mmap, faults, munmap)";
  const char* kPut = "mpx::put of a 64 MiB vector<double>";
  const std::size_t n = static_cast<std::size_t>(2000 * o.scale);
  if (o.want(kScenario)) {
    mpx::Pool pool(mpx::PoolOptions().processes(2).object_threshold(0));
    pool.map(length_of, std::vector<std::string>(4, "x"), 1);
    std::vector<double> by_ref, by_value;
    for (int r = 0; r < o.reps; ++r) {
      auto t0 = Clock::now();
      std::size_t total = 0;
      for (std::size_t done = 0; done < n && !o.objects_only; done += 256) {
        std::vector<std::string> batch;
        for (std::size_t i = done; i < std::min(n, done + 256); ++i) batch.emplace_back(std::size_t{1} << 20, 'p');
        for (std::size_t len : pool.imap_unordered(length_of, batch, 1)) total += len;
      }
      if (!o.objects_only) {
        by_value.push_back(static_cast<double>(total >> 20) / seconds_since(t0));
        if (total != n << 20) fail("lost payloads by value");
      }

      t0 = Clock::now();
      total = 0;
      for (std::size_t done = 0; done < n; done += 256) {
        std::vector<mpx::ObjectRef<std::string>> batch;
        for (std::size_t i = done; i < std::min(n, done + 256); ++i) {
          batch.push_back(mpx::put(std::string(std::size_t{1} << 20, 'p')));
        }
        for (std::size_t len : pool.imap_unordered(length_of_view, batch, 1)) total += len;
      }
      by_ref.push_back(static_cast<double>(total >> 20) / seconds_since(t0));
      if (total != n << 20) fail("lost payloads as objects");
    }
    bench::emit(stdout, kScenario, "MiB/s", by_ref);
    emit_by_value(o, kScenario, "MiB/s", by_value);
  }
  if (o.want(kFloor)) {
    const std::size_t region = std::size_t{256} << 20, block = std::size_t{1} << 20;
    std::unique_ptr<char[]> from(new char[region]), to(new char[region]);
    std::memset(from.get(), 1, region);
    std::memset(to.get(), 2, region);
    std::vector<double> v;
    for (int r = 0; r < o.reps; ++r) {
      const auto t0 = Clock::now();
      for (int pass = 0; pass < 4; ++pass) {
        for (std::size_t off = 0; off < region; off += block) std::memcpy(to.get() + off, from.get() + off, block);
      }
      v.push_back(4.0 * static_cast<double>(region >> 20) / seconds_since(t0));
    }
    if (to[region - 1] != 1) fail("memcpy");
    bench::emit(stdout, kFloor, "MiB/s", v, {{"mpx_only", "true"}});
  }
  if (o.want(kFresh)) {
    // What a put() of each payload has to do at least: new pages for every copy.
    const std::size_t block = std::size_t{1} << 20;
    const std::string payload(block, 'p');
    std::vector<double> v;
    for (int r = 0; r < o.reps; ++r) {
      const auto t0 = Clock::now();
      for (int i = 0; i < 1024; ++i) {
        void* page = mmap(nullptr, block, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED) fail("mmap");
        std::memcpy(page, payload.data(), block);
        munmap(page, block);
      }
      v.push_back(1024.0 / seconds_since(t0));
    }
    bench::emit(stdout, kFresh, "MiB/s", v, {{"mpx_only", "true"}});
  }
  if (o.want(kPut)) {
    const std::vector<double> data(std::size_t{8} << 20, 1.5);
    std::vector<double> v;
    for (int r = 0; r < o.reps; ++r) {
      const auto t0 = Clock::now();
      const auto ref = mpx::put(data);
      v.push_back(64.0 / seconds_since(t0));
      if (ref.size() != data.size()) fail("put");
    }
    bench::emit(stdout, kPut, "MiB/s", v, {{"mpx_only", "true"}});
  }
}

// Plain std::string arguments of each size, 32 MiB of them per repetition, through
// two pools alternated: one sending every argument as an object (threshold 1 byte),
// one sending every argument by value (threshold 0). Then the same for results: the
// task makes a string of the size asked, and it comes back as an object or by value.
void large_arguments_and_results(const Options& o) {
  mpx::Pool as_objects(mpx::PoolOptions().processes(2).object_threshold(1));
  mpx::Pool by_value(mpx::PoolOptions().processes(2).object_threshold(0));
  for (mpx::Pool* pool : {&as_objects, &by_value}) pool->map(length_of, std::vector<std::string>(4, "x"), 1);
  for (const bool results : {false, true}) {
    for (std::size_t bytes : {std::size_t{16} << 10, std::size_t{64} << 10, std::size_t{128} << 10,
                              std::size_t{256} << 10, std::size_t{1} << 20, std::size_t{4} << 20,
                              std::size_t{16} << 20}) {
      const std::string scenario =
          results ? "large results: imap_unordered(make_text, " + std::to_string(bytes >> 10) +
                        " KiB strings, chunksize=1), as objects"
                  : "large arguments: imap_unordered(len, " + std::to_string(bytes >> 10) +
                        " KiB strings, chunksize=1), as objects";
      if (!o.want(scenario.c_str())) continue;
      // At least 2 items: with --quick, 32 MiB / 16 MiB * 0.25 rounded down to none, whose
      // 0 MiB/s stopped tools/bench/run's report (a division by zero).
      const std::size_t n =
          std::max<std::size_t>(2, static_cast<std::size_t>((std::size_t{32} << 20) / bytes * o.scale));
      const std::vector<std::string> batch(results ? 0 : n, std::string(bytes, 'p'));
      const std::vector<std::size_t> sizes(results ? n : 0, bytes);
      std::vector<double> objects, values;
      auto run = [&](mpx::Pool& pool) {
        const auto t0 = Clock::now();
        std::size_t total = 0;
        if (results) {
          for (const std::string& text : pool.imap_unordered(make_text, sizes, 1)) total += text.size();
        } else {
          for (std::size_t len : pool.imap_unordered(length_of, batch, 1)) total += len;
        }
        if (total != n * bytes) fail(results ? "lost large results" : "lost large arguments");
        return static_cast<double>(total) / (1 << 20) / seconds_since(t0);
      };
      run(as_objects);  // each size's first map pays for first-touched pages: unmeasured
      if (!o.objects_only) run(by_value);
      for (int r = 0; r < o.reps; ++r) {
        objects.push_back(run(as_objects));
        if (!o.objects_only) values.push_back(run(by_value));
      }
      bench::emit(stdout, scenario.c_str(), "MiB/s", objects);
      emit_by_value(o, scenario.c_str(), "MiB/s", values);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  Options o;
  const char* by_value_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) o.reps = 3, o.scale = 0.25;
    if (std::strncmp(argv[i], "--only=", 7) == 0) o.only = argv[i] + 7;
    if (std::strncmp(argv[i], "--by-value-out=", 15) == 0) by_value_path = argv[i] + 15;
    if (std::strcmp(argv[i], "--objects-only") == 0) o.objects_only = true;
  }
  o.by_value = by_value_path ? std::fopen(by_value_path, "w") : stderr;
  if (o.by_value == nullptr) fail("cannot write the --by-value-out file");
  training_data_set(o);
  map_over_arrays(o);
  megabyte_payloads(o);
  large_arguments_and_results(o);
  if (by_value_path) std::fclose(o.by_value);
  return 0;
}
