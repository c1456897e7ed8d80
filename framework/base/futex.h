// The one futex wrapper: every process-shared wait in mpx (locks, semaphores, events,
// barriers, queues, actor control blocks) sleeps and wakes through these two calls, and
// spins, before it sleeps, with cpu_relax.
#ifndef MPX_FRAMEWORK_BASE_FUTEX_H_
#define MPX_FRAMEWORK_BASE_FUTEX_H_

#include <atomic>
#include <chrono>
#include <cstdint>

namespace mpx {
namespace base {

// Blocks while *word == expected, at most until deadline (time_point::max(): forever).
// Returns false only when the deadline passed. The word may live in memory that other
// processes map (the wait is not FUTEX_PRIVATE).
bool futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                std::chrono::steady_clock::time_point deadline);
// Wakes up to count sleepers on word; returns how many it woke.
int futex_wake(std::atomic<std::uint32_t>* word, int count);

// One pause of a spinning waiter: tells the CPU that this is a spin loop (it saves
// power and lets a sibling hyperthread run), without giving the CPU away.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace base
}  // namespace mpx

#endif  // MPX_FRAMEWORK_BASE_FUTEX_H_
