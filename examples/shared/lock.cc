// Guide section 4.2 ("Evitar conflictos de datos con bloqueos"): an mpx::Lock keeps
// processes from interleaving, and survives a holder that dies.
//
// Teaches: a Lock is shared by passing it to each process. Each worker appends its
// lines to a shared Array under the lock, so its lines stay together. Then a process
// is killed while it holds the lock: Python's Lock would stay locked forever; mpx
// hands it to the next acquirer with previous_owner_died() set, so that process can
// check the data the dead holder may have left half-written.
//
//   bazel run //examples/shared:lock
#include <signal.h>

#include <cstdio>
#include <mutex>
#include <vector>

#include "mpx/mpx.h"

// Each worker writes three consecutive entries tagged with its number.
void write_block(mpx::Lock lock, mpx::Array<int> log, mpx::Value<int> next, int worker) {
  std::lock_guard<mpx::Lock> guard(lock);
  for (int line = 0; line < 3; ++line) log[static_cast<std::size_t>(next.value()++)] = worker;
}
MPX_TASK(write_block);

void die_holding(mpx::Lock lock) {
  lock.lock();
  raise(SIGKILL);  // a crash in the middle of a critical section
}
MPX_TASK(die_holding);

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  mpx::Lock lock;
  mpx::Array<int> log(12);
  mpx::Value<int> next(0);
  std::vector<mpx::Process> workers;
  for (int w = 1; w <= 4; ++w) workers.emplace_back(write_block, lock, log, next, w);
  for (auto& p : workers) p.start();
  for (auto& p : workers) p.join();
  bool grouped = true;
  for (std::size_t i = 0; i < log.size(); i += 3) {
    grouped = grouped && log[i] == log[i + 1] && log[i + 1] == log[i + 2];
  }
  std::printf("12 entries written, each worker's 3 together: %s\n", grouped ? "yes" : "no");

  mpx::Process doomed(die_holding, lock);
  doomed.start();
  doomed.join();
  std::printf("holder exitcode %d\n", *doomed.exitcode());
  if (lock.acquire(std::chrono::seconds(5))) {
    std::printf("lock acquired; previous owner died: %s\n",
                lock.previous_owner_died() ? "yes" : "no");
    lock.release();
  }
  return 0;
}
