#include "framework/base/heap.h"

#include <malloc.h>

namespace mpx {
namespace base {

// These roles allocate and free a buffer per large frame, chunk or result, and on this
// VM a fresh page costs ~11 us. glibc's malloc returns such buffers to the kernel until
// a large free has raised its thresholds, then keeps them, in a pattern that depends on
// the order of frees: a map of 1M ints in 1 MiB chunks ran at 62-92 M items/s, the
// router and workers faulting in fresh pages for every chunk. Fixed thresholds where
// glibc's own heuristic ends (mmap above 32 MiB, trim beyond 64 MiB of free heap top)
// keep buffers reusable from the first chunk on: 111-125 M items/s (BENCHMARKS.md).
// IdleTrim gives the memory back once the role idles: after twelve 20 MiB arguments by
// value a worker kept 44 MiB without it, and 5 MiB with glibc's defaults or with it.
void keep_large_buffers_for_reuse() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

bool IdleTrim::after_wait(bool worked) {
  const Clock::time_point now = Clock::now();
  if (worked) {
    pending_ = true;
    last_work_ = now;
    return false;
  }
  if (!pending_ || now < last_work_ + kAfter) return false;
  malloc_trim(0);
  pending_ = false;
  return true;
}

}  // namespace base
}  // namespace mpx
