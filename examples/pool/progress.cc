// Progress bars on long maps: Python's `for v in tqdm(pool.imap(f, xs))`.
//
// Teaches: mpx::progress() wraps an imap iterator (or a pipeline run) and draws a bar
// on stderr while you iterate it; MapOptions().progress(label) does the same for map.
// On a terminal the bar redraws in place; in a log (stderr not a terminal) a plain
// line every 10 s and one at the end; MPX_PROGRESS=0 turns it off.
//
//   bazel run -c opt //examples/pool:progress
//   squares 100% [########################################] 300/300 [00:01<00:00, 231/s]
#include <chrono>
#include <cstdio>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <vector>

#include "mpx/mpx.h"

int slow_square(int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(10));  // stands for real work
  return x * x;
}
MPX_TASK(slow_square);

int checked_root(int x) {
  if (x % 100 == 7) throw std::domain_error("no root for " + std::to_string(x));
  return x;
}
MPX_TASK(checked_root);

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  std::vector<int> xs(300);
  std::iota(xs.begin(), xs.end(), 0);
  mpx::Pool pool(4);

  long sum = 0;
  for (int v : mpx::progress(pool.imap(slow_square, xs, 1), "squares")) sum += v;
  std::printf("sum of squares: %ld\n", sum);

  std::vector<int> again = pool.map(slow_square, xs, mpx::MapOptions().progress("map squares"));
  std::printf("map: %zu results, last %d\n", again.size(), again.back());

  // Failed items are counted on the bar; each still throws where it stands.
  auto roots = mpx::progress(pool.imap(checked_root, xs), "roots");
  int failed = 0;
  for (;;) {
    try {
      if (!roots.next()) break;
    } catch (const mpx::RemoteInfo&) {
      ++failed;
    }
  }
  std::printf("roots: %d failed\n", failed);
  return 0;
}
