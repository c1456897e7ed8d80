// Micro-benchmarks of registry dispatch (mpx/task.h): finding a task by the name a
// chunk's header carries, and running a chunk through the registered entry's
// run_chunk, as a pool worker does (decode every item, call the function, pack every
// result). Items/s counts items of the chunk.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "mpx/mpx.h"
#include "tools/bench/micro/micro.h"

namespace mpx_micro_registry {

std::int64_t square(std::int64_t x) { return x * x; }
MPX_TASK(square);

std::size_t length(std::string s) { return s.size(); }
MPX_TASK(length);

// The same function without MPX_TASK: found by its place in the program.
std::int64_t plain_square(std::int64_t x) { return x * x; }
std::int64_t plain_cube(std::int64_t x) { return x * x * x; }

}  // namespace mpx_micro_registry

namespace {

using mpx::detail::Buffer;

template <class T>
Buffer chunk_of(const std::vector<T>& xs) {
  Buffer buf;
  msgpack::packer<Buffer> pk(buf);
  pk.pack_array(static_cast<std::uint32_t>(xs.size()));
  for (const auto& x : xs) mpx::detail::ArgCodec<T>::pack_item(pk, x);
  return buf;
}

const mpx::detail::TaskEntry& entry(const std::string& name) {
  const mpx::detail::TaskEntry* e = mpx::detail::find_task(name);
  if (e == nullptr) {
    std::fprintf(stderr, "registry_bench: task %s not registered\n", name.c_str());
    std::abort();
  }
  return *e;
}

void BM_FindTaskByName(benchmark::State& state) {
  const std::string name = "square";
  entry(name);
  for (auto _ : state) benchmark::DoNotOptimize(mpx::detail::find_task(name));
}
MPX_MICRO(BM_FindTaskByName);

// run_chunk of task on a chunk of state.range(0) int64s.
void run_int64_chunks(benchmark::State& state, const mpx::detail::TaskEntry& task) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<std::int64_t> xs(n);
  std::iota(xs.begin(), xs.end(), 0);
  const Buffer in = chunk_of(xs);
  Buffer out(n * 9 + 16);
  for (auto _ : state) {
    out.clear();
    bool had_errors = false;
    task.run_chunk(task, in.data(), in.size(), static_cast<std::uint32_t>(n), out, had_errors);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

void BM_RunChunkSquare(benchmark::State& state) { run_int64_chunks(state, entry("square")); }
MPX_MICRO(BM_RunChunkSquare)->Arg(1)->Arg(1000);

// The first plain function of a process: reads the program's symbol table (once per
// process, in the driver and in each worker), then checks the function. One iteration.
void BM_FirstPlainFunctionResolution(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(&mpx::detail::require_task(&mpx_micro_registry::plain_cube, "bench"));
  }
}
MPX_MICRO(BM_FirstPlainFunctionResolution)->Iterations(1);

// A worker's lookup of a plain function's name once it has been checked.
void BM_FindPlainFunctionByName(benchmark::State& state) {
  const std::string name = mpx::detail::require_task(&mpx_micro_registry::plain_square, "bench").name;
  for (auto _ : state) benchmark::DoNotOptimize(mpx::detail::find_task(name));
}
MPX_MICRO(BM_FindPlainFunctionByName);

// run_chunk of the plain function: an indirect call per item where MPX_TASK's is inlined.
void BM_RunChunkPlainSquare(benchmark::State& state) {
  run_int64_chunks(state, mpx::detail::require_task(&mpx_micro_registry::plain_square, "bench"));
}
MPX_MICRO(BM_RunChunkPlainSquare)->Arg(1)->Arg(1000);

// Lookup by name plus run_chunk of a one-item chunk: the registry's share of one
// apply_async round trip.
void BM_FindAndRunOneItem(benchmark::State& state) {
  const std::string name = "square";
  const Buffer in = chunk_of(std::vector<std::int64_t>{7});
  Buffer out(32);
  for (auto _ : state) {
    const auto* task = mpx::detail::find_task(name);
    out.clear();
    bool had_errors = false;
    task->run_chunk(*task, in.data(), in.size(), 1, out, had_errors);
    benchmark::DoNotOptimize(out.data());
  }
}
MPX_MICRO(BM_FindAndRunOneItem);

void BM_RunChunkStrings(benchmark::State& state) {
  std::vector<std::string> xs;
  for (int i = 0; i < 100; ++i) xs.push_back("line " + std::to_string(i) + ": some text here");
  const Buffer in = chunk_of(xs);
  const auto& task = entry("length");
  Buffer out;
  for (auto _ : state) {
    out.clear();
    bool had_errors = false;
    task.run_chunk(task, in.data(), in.size(), 100, out, had_errors);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * 100);
}
MPX_MICRO(BM_RunChunkStrings);

}  // namespace
