// Futures: one mpx::Future type for pool calls and actor calls, with Python's
// concurrent.futures habits: callbacks, then, wait, as_completed, cancel.
//
//   bazel run //examples/pool:futures
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "mpx/mpx.h"

int square(int x) { return x * x; }
int slow(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
MPX_TASK(square);
MPX_TASK(slow);

class Counter {
 public:
  int add(int k) { return n_ += k; }

 private:
  int n_ = 0;
};
MPX_ACTOR(Counter, add);

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Pool pool(mpx::PoolOptions().processes(2).prefetch(1));
  auto counter = mpx::spawn<Counter>();

  mpx::Future<int> f = pool.apply_async(square, 7);  // mpx::AsyncResult<int> is the same type
  f.then([](int v) { std::printf("then: %d\n", v); },
         [](std::exception_ptr) { std::printf("then: failed\n"); });
  std::printf("get: %d\n", f.get());  // callbacks run in a thread waiting on the pool

  // Pool and actor futures in one vector, waited for together.
  std::vector<mpx::Future<int>> fs = {pool.apply_async(slow, 200), counter.call(&Counter::add, 1)};
  mpx::WaitResult<int> w = mpx::wait(fs, mpx::FIRST_COMPLETED, std::chrono::seconds(10));
  std::printf("first done: %d, not done: %zu\n", w.done.front().get(), w.not_done.size());
  for (mpx::Future<int>& g : mpx::as_completed(fs)) std::printf("completed: %d\n", g.get());

  // A task that runs is stopped by killing its worker (a new one replaces it).
  mpx::Future<int> endless = pool.apply_async(slow, 3600 * 1000);
  std::printf("cancelled: %s\n", endless.cancel() ? "yes" : "no");
  try {
    endless.get();
  } catch (const mpx::CancelledError& e) {
    std::printf("get: CancelledError: %s\n", e.what());
  }
  std::printf("pool still works: %d\n", pool.apply(square, 9));
  pool.shutdown(/*cancel_futures=*/true);  // Python's Executor.shutdown(cancel_futures=True)
  return 0;
}
