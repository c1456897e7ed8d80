// The heap of a role that runs mpx's own loop (router, pool worker, actor): freed large
// buffers are kept for reuse while the role works and given back once it is idle.
#ifndef MPX_FRAMEWORK_BASE_HEAP_H_
#define MPX_FRAMEWORK_BASE_HEAP_H_

#include <chrono>

namespace mpx {
namespace base {

// Called once by mpx::init in those roles, before their loop starts. A user's driver
// and Process children keep glibc's defaults: their allocator is theirs to tune.
void keep_large_buffers_for_reuse();

// Follows a role's loop. After work, the loop's next wait ends kAfter later at the
// latest; if nothing came meanwhile, the free memory its heap kept goes back to the
// kernel (malloc_trim), once, so an idle pool does not hold what its last large
// payloads needed. A loop that works at least once per kAfter never trims.
class IdleTrim {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kAfter{1000};

  // The deadline for the loop's next wait.
  Clock::time_point deadline() const { return pending_ ? last_work_ + kAfter : Clock::time_point::max(); }
  // After each wait: whether it handled any work. True when this wait ended an idle
  // kAfter and the heap was trimmed: the caller lets its own caches go too.
  bool after_wait(bool worked);

 private:
  bool pending_ = false;  // worked since the last trim
  Clock::time_point last_work_;
};

}  // namespace base
}  // namespace mpx

#endif  // MPX_FRAMEWORK_BASE_HEAP_H_
