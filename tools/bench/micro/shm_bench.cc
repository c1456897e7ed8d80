// Micro-benchmarks of the shared-memory primitives in one process, uncontended
// (mpx/shared.h, mpx/sync.h, mpx/queue.h): the cost of the operation itself, with no
// other process on the memory. The two-process figures are in tools/bench/run.
#include <cstdint>
#include <mutex>

#include "mpx/mpx.h"
#include "tools/bench/micro/micro.h"

namespace {

void BM_ValueFetchAdd(benchmark::State& state) {
  mpx::Value<std::int64_t> v(0);
  for (auto _ : state) benchmark::DoNotOptimize(v.fetch_add(1));
}
MPX_MICRO(BM_ValueFetchAdd);

void BM_ValueLoad(benchmark::State& state) {
  mpx::Value<std::int64_t> v(42);
  for (auto _ : state) benchmark::DoNotOptimize(v.load());
}
MPX_MICRO(BM_ValueLoad);

void BM_LockAcquireRelease(benchmark::State& state) {
  mpx::Lock lock;
  for (auto _ : state) {
    lock.acquire();
    lock.release();
  }
}
MPX_MICRO(BM_LockAcquireRelease);

// The recursive lock every Value carries, with the increment it guards.
void BM_ValueIncrementUnderGetLock(benchmark::State& state) {
  mpx::Value<int> v(0);
  for (auto _ : state) {
    std::lock_guard<mpx::Lock> guard(v.get_lock());
    v.value() += 1;
  }
  benchmark::DoNotOptimize(v.load());
}
MPX_MICRO(BM_ValueIncrementUnderGetLock);

void BM_SemaphoreAcquireRelease(benchmark::State& state) {
  mpx::Semaphore s(1);
  for (auto _ : state) {
    s.acquire();
    s.release();
  }
}
MPX_MICRO(BM_SemaphoreAcquireRelease);

// One put and one get of a small int (encoded with msgpack into the ring).
void BM_QueuePutGetInt(benchmark::State& state) {
  mpx::Queue<int> q;
  int i = 0;
  for (auto _ : state) {
    q.put(i++);
    benchmark::DoNotOptimize(q.get());
  }
  state.SetItemsProcessed(state.iterations());
}
MPX_MICRO(BM_QueuePutGetInt);

// A batch of 1,000 puts, then 1,000 gets: the ring partly full, as in a pipeline.
void BM_QueuePutThenGet1000(benchmark::State& state) {
  mpx::Queue<int> q;
  for (auto _ : state) {
    for (int i = 0; i < 1000; ++i) q.put(i);
    for (int i = 0; i < 1000; ++i) benchmark::DoNotOptimize(q.get());
  }
  state.SetItemsProcessed(state.iterations() * 1000);
}
MPX_MICRO(BM_QueuePutThenGet1000);

}  // namespace
