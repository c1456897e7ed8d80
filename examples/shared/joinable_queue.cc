// A JoinableQueue of jobs (Python's JoinableQueue), ended with shutdown() (Python 3.13).
//
// Teaches: workers call task_done() after each job; join() returns once every job put
// so far is done. shutdown() then ends the workers: their blocked get() throws
// mpx::ShutDown, so no "stop" item per worker is needed.
//
//   bazel run //examples/shared:joinable_queue
#include <cstdio>
#include <vector>

#include "mpx/mpx.h"

void worker(mpx::JoinableQueue<int> jobs, mpx::Value<long> total) {
  try {
    for (;;) {
      const int job = jobs.get();
      total.fetch_add(job);
      jobs.task_done();
    }
  } catch (const mpx::ShutDown&) {
    // the queue was shut down and is empty: this worker is done
  }
}
MPX_TASK(worker);

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  mpx::JoinableQueue<int> jobs;
  mpx::Value<long> total(0);
  std::vector<mpx::Process> workers;
  for (int i = 0; i < 3; ++i) workers.emplace_back(worker, jobs, total);
  for (auto& w : workers) w.start();

  for (int job = 1; job <= 100; ++job) jobs.put(job);
  jobs.join();  // every job was got and task_done()
  std::printf("after join: total %ld\n", total.load());

  jobs.shutdown();
  for (auto& w : workers) w.join();
  int clean = 0;
  for (auto& w : workers) clean += w.exitcode() == 0;
  std::printf("after shutdown: %d of 3 workers ended cleanly\n", clean);
  return 0;
}
