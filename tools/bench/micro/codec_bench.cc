// Micro-benchmarks of the payload codec (mpx/detail/codec.h, mpx/detail/call.h): a
// chunk of arguments packed the way Pool::map packs it, unpacked the way a worker's
// run_chunk does, a chunk of results read the way the driver reads it, and a map's
// one-item result chunks gathered into its result vector. Items/s counts items of the
// chunk.
#include <cstdint>
#include <cstring>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

#include "mpx/mpx.h"
#include "tools/bench/micro/micro.h"

namespace mpx_micro_tasks {
std::int64_t micro_square(std::int64_t x) { return x * x; }
MPX_TASK(micro_square);
}  // namespace mpx_micro_tasks

namespace {

using mpx::detail::ArgCodec;
using mpx::detail::Buffer;

constexpr std::size_t kInts = 1000;
constexpr std::size_t kStrings = 100;

std::vector<std::int64_t> ints() {
  std::vector<std::int64_t> xs(kInts);
  // A spread of msgpack widths, as a real map's indices and values have.
  std::iota(xs.begin(), xs.end(), std::int64_t{1} << 20);
  return xs;
}

std::vector<std::string> strings() {
  std::vector<std::string> xs;
  for (std::size_t i = 0; i < kStrings; ++i) {
    xs.push_back("line " + std::to_string(i) + ": the quick brown fox jumps over the lazy dog");
  }
  return xs;
}

template <class T>
void pack_chunk(const std::vector<T>& xs, Buffer& buf) {
  buf.clear();
  msgpack::packer<Buffer> pk(buf);
  pk.pack_array(static_cast<std::uint32_t>(xs.size()));
  for (const auto& x : xs) ArgCodec<T>::pack_item(pk, x);
}

// What run_chunk does before calling the task: header, then each item decoded and
// converted to the parameter type.
template <class T>
std::size_t unpack_chunk(const Buffer& buf) {
  std::size_t off = 0, sum = 0;
  const std::uint32_t count = mpx::detail::read_array_header(buf.data(), buf.size(), off);
  msgpack::zone zone;
  for (std::uint32_t i = 0; i < count; ++i) {
    zone.clear();
    const msgpack::object obj = mpx::detail::read_object(zone, buf.data(), buf.size(), off);
    auto args = ArgCodec<T>::unpack_item(obj);
    if constexpr (std::is_same_v<T, std::string>) {
      sum += std::get<0>(args).size();
    } else {
      sum += static_cast<std::size_t>(std::get<0>(args));
    }
  }
  return sum;
}

void BM_PackIntChunk(benchmark::State& state) {
  const auto xs = ints();
  Buffer buf(kInts * 9 + 16);
  for (auto _ : state) {
    pack_chunk(xs, buf);
    benchmark::DoNotOptimize(buf.data());
  }
  state.SetItemsProcessed(state.iterations() * kInts);
  state.SetBytesProcessed(state.iterations() * buf.size());
}
MPX_MICRO(BM_PackIntChunk);

void BM_UnpackIntChunk(benchmark::State& state) {
  Buffer buf;
  pack_chunk(ints(), buf);
  for (auto _ : state) benchmark::DoNotOptimize(unpack_chunk<std::int64_t>(buf));
  state.SetItemsProcessed(state.iterations() * kInts);
  state.SetBytesProcessed(state.iterations() * buf.size());
}
MPX_MICRO(BM_UnpackIntChunk);

void BM_PackStringChunk(benchmark::State& state) {
  const auto xs = strings();
  Buffer buf;
  for (auto _ : state) {
    pack_chunk(xs, buf);
    benchmark::DoNotOptimize(buf.data());
  }
  state.SetItemsProcessed(state.iterations() * kStrings);
  state.SetBytesProcessed(state.iterations() * buf.size());
}
MPX_MICRO(BM_PackStringChunk);

void BM_UnpackStringChunk(benchmark::State& state) {
  Buffer buf;
  pack_chunk(strings(), buf);
  for (auto _ : state) benchmark::DoNotOptimize(unpack_chunk<std::string>(buf));
  state.SetItemsProcessed(state.iterations() * kStrings);
  state.SetBytesProcessed(state.iterations() * buf.size());
}
MPX_MICRO(BM_UnpackStringChunk);

// The driver's side: a chunk of 1000 int64 results read into their slots.
void BM_ReadIntResults(benchmark::State& state) {
  Buffer buf;
  pack_chunk(ints(), buf);  // a results chunk without errors has the same layout
  std::vector<std::int64_t> out(kInts);
  for (auto _ : state) {
    auto errors = mpx::detail::read_results(buf.data(), buf.size(), kInts, false,
                                            [&](std::uint32_t i, const msgpack::object& obj) {
                                              obj.convert(out[i]);
                                            });
    benchmark::DoNotOptimize(errors);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * kInts);
}
MPX_MICRO(BM_ReadIntResults);

// The driver's side of map(fn, items, chunksize=1): 10,000 one-item raw result chunks
// gathered into one call's result vector, in the order two workers holding 64 chunks
// each answer them (0, 64, 1, 65, ...): half of them arrive ahead of their place.
void BM_GatherOneItemChunksFromTwoWorkers(benchmark::State& state) {
  constexpr int kChunks = 10000, kHeld = 64;
  std::vector<Buffer> chunks(kChunks);
  for (int i = 0; i < kChunks; ++i) {
    const std::int64_t v = i;
    const std::size_t at =
        mpx::detail::begin_raw_block(chunks[i], mpx::detail::raw_code<std::int64_t>(), 1);
    std::memcpy(chunks[i].data() + at, &v, sizeof v);
  }
  std::vector<int> order;
  for (int base = 0; base < kChunks; base += 2 * kHeld) {
    for (int k = 0; k < kHeld; ++k) {
      if (base + k < kChunks) order.push_back(base + k);
      if (base + kHeld + k < kChunks) order.push_back(base + kHeld + k);
    }
  }
  const mpx::detail::TaskEntry& task = *mpx::detail::find_task(std::string("micro_square"));
  std::mutex mu;
  for (auto _ : state) {
    mpx::detail::GatherCall<std::int64_t, std::vector<std::int64_t>> call(task, kChunks);
    call.set_id(1, &mu, nullptr);
    for (int i : order) {
      const Buffer& c = chunks[static_cast<std::size_t>(i)];
      call.accept_results(static_cast<std::uint64_t>(i), 1, c.data(), c.size(), false, 0);
    }
    benchmark::DoNotOptimize(call.take().data());
  }
  state.SetItemsProcessed(state.iterations() * kChunks);
}
MPX_MICRO(BM_GatherOneItemChunksFromTwoWorkers);

}  // namespace
