// A Condition shared by processes (Python's multiprocessing.Condition), and a waiter
// killed while waiting.
//
// Teaches: consumers wait under the condition's lock until there is stock
// (wait_for with a predicate); the producer adds one unit at a time and notify()
// wakes one consumer per unit. A waiter killed with SIGKILL while waiting is skipped:
// the notifications reach the live consumers. (Python's notify() would block for ever
// waiting for the dead sleeper to acknowledge.)
//
//   bazel run //examples/shared:condition
#include <signal.h>

#include <cstdio>
#include <mutex>
#include <vector>

#include "mpx/mpx.h"

void consumer(mpx::Condition cond, mpx::Value<int> stock, mpx::Value<int> served) {
  std::lock_guard<mpx::Condition> hold(cond);
  cond.wait_for([&] { return stock.value() > 0; });
  stock.value() -= 1;
  served.value() += 1;
}
MPX_TASK(consumer);

void waits_forever(mpx::Condition cond, mpx::Event waiting) {
  std::lock_guard<mpx::Condition> hold(cond);
  waiting.set();
  for (;;) cond.wait();
}
MPX_TASK(waits_forever);

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  mpx::Condition cond;  // with an RLock of its own; Condition(lock) shares one
  mpx::Value<int> stock(0), served(0);

  mpx::Event waiting;
  mpx::Process doomed(waits_forever, cond, waiting);
  doomed.start();
  waiting.wait();  // the first in line...
  doomed.kill();   // ...is killed while it waits
  doomed.join();
  std::printf("a waiter was killed while waiting (exitcode %d)\n", *doomed.exitcode());

  std::vector<mpx::Process> consumers;
  for (int i = 0; i < 3; ++i) consumers.emplace_back(consumer, cond, stock, served);
  for (auto& p : consumers) p.start();
  for (int unit = 0; unit < 3; ++unit) {
    std::lock_guard<mpx::Condition> hold(cond);
    stock.value() += 1;
    cond.notify();  // one consumer per unit
  }
  for (auto& p : consumers) p.join();
  std::printf("consumers served: %d, stock left: %d\n", served.load(), stock.load());
  return 0;
}
