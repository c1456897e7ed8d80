// A stateful actor: one Counter object owned by its own OS process, called by message
// from the main process and from pool tasks that receive its handle.
//
//   bazel run //examples/actor:counter
#include <chrono>
#include <cstdio>
#include <vector>

#include "mpx/mpx.h"

class Counter {
 public:
  explicit Counter(int start) : n_(start) {}
  int add(int k) { return n_ += k; }
  int get() const { return n_; }

 private:
  int n_;
};
MPX_ACTOR(Counter, add, get);

// A pool task that receives the actor's handle: its calls reach the same Counter.
int add_from_task(mpx::Actor<Counter> counter, int k) { return counter.call(&Counter::add, k).get(); }
MPX_TASK(add_from_task);

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  auto counter = mpx::spawn<Counter>(10);  // Counter(10) is constructed in a new process
  mpx::Future<int> f = counter.call(&Counter::add, 5);
  std::printf("add(5) -> %d\n", f.get());  // 15
  counter.tell(&Counter::add, 1);           // fire and forget; still ordered before get()
  std::printf("get() -> %d\n", counter.call(&Counter::get).get());  // 16

  mpx::Pool pool(2);
  std::vector<std::tuple<mpx::Actor<Counter>, int>> work;
  for (int k = 1; k <= 10; ++k) work.emplace_back(counter, k);
  pool.starmap(add_from_task, work);
  std::printf("after 10 pool tasks added 1..10: %d\n", counter.call(&Counter::get).get());  // 71

  // A call can carry its own timeout: the Future fails with mpx::TimeoutError if late.
  std::printf("get() with a 1 s timeout -> %d\n",
              counter.call(&Counter::get, std::chrono::seconds(1)).get());
  counter.stop();  // runs the messages already sent, then the destructor; the process exits
  std::printf("stopped: alive=%s\n", counter.is_alive() ? "yes" : "no");
}
