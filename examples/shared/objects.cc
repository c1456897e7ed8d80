// Read-only objects: a large array put() once into shared memory, then read by pool
// workers, in windows, without being copied to them (Ray's ray.put / ray.get).
//
// Teaches: mpx::put(value) returns an ObjectRef<T>, a handle of a few dozen bytes that
// travels in place of the value; a task parameter mpx::Span<const T> maps the object's
// pages read-only; a window of it (subspan) travels as a handle too; a struct or map is
// stored msgpack-encoded and decoded on get(). The object lives while this process
// holds it (or a call carrying it runs), and cannot leak, not even into /dev/shm.
// Large plain arguments and results (a vector, array, string or Span of 1 MiB or more,
// see PoolOptions::object_threshold) become objects by themselves, without put(); a
// result's object then belongs to this process.
//
//   bazel run //examples/shared:objects
#include <cstdio>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "mpx/mpx.h"

// Runs in a worker, on the object's own pages: no copy, nothing decoded.
double sum(mpx::Span<const double> xs) { return std::accumulate(xs.begin(), xs.end(), 0.0); }
MPX_TASK(sum);

// Any msgpack type works too; this one is decoded from the mapping at each get().
std::string describe(mpx::ObjectRef<std::map<std::string, int>> sizes) {
  std::string out;
  for (const auto& [name, size] : sizes.get()) out += name + "=" + std::to_string(size) + " ";
  return out;
}
MPX_TASK(describe);

// Given a plain std::string of 2 MiB: its characters are an object's pages here.
bool arrived_as_object(mpx::Span<const char> text) { return text.in_object() && text.size() == (2u << 20); }
MPX_TASK(arrived_as_object);

// A view of a table the worker built: 2 MiB or more, so it comes back as an object.
mpx::Span<const double> squares(std::size_t n) {
  static std::vector<double> table;
  for (std::size_t i = table.size(); i < n; ++i) table.push_back(static_cast<double>(i) * i);
  return mpx::Span<const double>(table.data(), n);
}
MPX_TASK(squares);

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Pool pool(2);

  std::vector<double> samples(8 << 20);  // 64 MiB
  std::iota(samples.begin(), samples.end(), 0.0);
  mpx::ObjectRef<std::vector<double>> data = mpx::put(samples);  // copied once, sealed

  // Four tasks on the whole array: each receives a handle and maps the same pages.
  std::vector<double> totals = pool.map(sum, std::vector<mpx::ObjectRef<std::vector<double>>>(4, data));
  // Eight windows of it: each travels as [handle, first, count].
  mpx::Span<const double> all = data.get();  // here too: the object's pages
  std::vector<mpx::Span<const double>> windows;
  for (std::size_t i = 0; i < 8; ++i) windows.push_back(all.subspan(i * all.size() / 8, all.size() / 8));
  const std::vector<double> parts = pool.map(sum, windows);

  std::printf("4 tasks on one %zu MiB object: each sum %.0f\n", data.nbytes() >> 20, totals[0]);
  std::printf("8 windows, sums adding up to the whole: %s\n",
              std::accumulate(parts.begin(), parts.end(), 0.0) == totals[0] ? "yes" : "NO");

  auto sizes = mpx::put(std::map<std::string, int>{{"samples", 8 << 20}, {"windows", 8}});
  std::printf("decoded in a worker: %s\n", pool.apply(describe, sizes).c_str());

  const std::vector<std::string> books(3, std::string(std::size_t{2} << 20, 'x'));
  const std::vector<bool> as_objects = pool.map(arrived_as_object, books, 1);
  std::printf("3 plain strings of 2 MiB: %s\n",
              as_objects == std::vector<bool>(3, true) ? "each arrived as an object" : "COPIED");

  const mpx::Span<const double> table = pool.apply(squares, std::size_t{1} << 18);
  std::printf("a 2 MiB result: %s, last square %.0f\n",
              table.in_object() ? "came back as an object this process owns" : "COPIED", table.back());
}
