// Guide section 4.1 ("Compartir datos con memoria compartida"): five processes
// increment one integer in shared memory, each under the value's own lock.
//
// Teaches: mpx::Value<int> is Python's multiprocessing.Value('i', 0). Pass it to a
// Process like any argument; every process sees the same memory. get_lock() is the
// lock that comes with the value (Python's `with shared_value.get_lock():`), and for
// integers fetch_add does the same without a lock, as one atomic instruction.
//
//   bazel run //examples/shared:shared_value
#include <cstdio>
#include <mutex>
#include <vector>

#include "mpx/mpx.h"

void increment_value(mpx::Value<int> shared_value) {
  std::lock_guard<mpx::Lock> guard(shared_value.get_lock());
  shared_value.value() += 1;
}
MPX_TASK(increment_value);

void add_many(mpx::Value<long> total, int n) {
  for (int i = 0; i < n; ++i) total.fetch_add(1);
}
MPX_TASK(add_many);

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  mpx::Value<int> shared_value(0);
  std::vector<mpx::Process> processes;
  for (int i = 0; i < 5; ++i) processes.emplace_back(increment_value, shared_value);
  for (auto& process : processes) process.start();
  for (auto& process : processes) process.join();
  std::printf("final value: %d\n", shared_value.load());

  mpx::Value<long> total(0);
  mpx::Process a(add_many, total, 100000), b(add_many, total, 100000);
  a.start();
  b.start();
  a.join();
  b.join();
  std::printf("two processes, 100000 fetch_add each: %ld\n", total.load());
  return 0;
}
