// A user program in its own Bazel workspace, depending on @mpx//framework:mpx.
// Squares 1..4 in a pool of two worker processes, then adds them up in an actor that
// the pool tasks reach through its handle, then runs a two-stage pipeline (square,
// then negate) over 1..4 and sums it; prints "consumer sum 30", "consumer actor total
// 30" and "consumer pipeline sum -30". Logs a line through a logger of its own, as a
// program that already uses spdlog does ("consumer logs 2.50 through spdlog").
#include "mpx/mpx.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdio>
#include <vector>

int square(int x) { return x * x; }
MPX_TASK(square);

namespace consumer {
class Tally {
 public:
  explicit Tally(int start) : total_(start) {}
  int add(int k) { return total_ += k; }
  int total() const { return total_; }

 private:
  int total_;
};
MPX_ACTOR(Tally, add, total);
}  // namespace consumer

int negate(int x) { return -x; }
MPX_TASK(negate);

int add_square(mpx::Actor<consumer::Tally> tally, int x) {
  return tally.call(&consumer::Tally::add, x * x).get();
}
MPX_TASK(add_square);

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Pool pool(2);
  std::vector<int> out = pool.map(square, std::vector<int>{1, 2, 3, 4});
  int sum = 0;
  for (int v : out) sum += v;
  std::printf("consumer sum %d\n", sum);  // 30

  auto tally = mpx::spawn<consumer::Tally>(0);
  std::vector<std::tuple<mpx::Actor<consumer::Tally>, int>> work;
  for (int x = 1; x <= 4; ++x) work.emplace_back(tally, x);
  pool.starmap(add_square, work);
  const int total = tally.call(&consumer::Tally::total).get();
  std::printf("consumer actor total %d\n", total);  // 30

  const int piped = mpx::Pipeline::from(std::vector<int>{1, 2, 3, 4})
                        .map(square, 2)
                        .map(negate, 1)
                        .reduce([](int acc, int x) { return acc + x; }, 0);
  std::printf("consumer pipeline sum %d\n", piped);  // -30
  std::fflush(stdout);

  auto own = spdlog::stdout_logger_mt("consumer");
  own->set_pattern("%v");
  own->info("consumer logs {:.2f} through spdlog", 2.5);
  return sum == 30 && total == 30 && piped == -30 ? 0 : 1;
}
