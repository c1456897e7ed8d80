// mpx/detail/deadline.h — timeouts as steady-clock deadlines. Internal.
#ifndef MPX_DETAIL_DEADLINE_H_
#define MPX_DETAIL_DEADLINE_H_

#include <chrono>
#include <type_traits>

namespace mpx {
namespace detail {

using Clock = std::chrono::steady_clock;

// now + timeout, saturating at time_point::max() (seconds::max() means "forever").
template <class Rep, class Period>
Clock::time_point deadline_after(std::chrono::duration<Rep, Period> timeout) {
  const auto now = Clock::now();
  if (timeout <= timeout.zero()) return now;
  using Wide = std::chrono::duration<long double, std::nano>;
  if (Wide(timeout) >= Wide(Clock::time_point::max() - now)) return Clock::time_point::max();
  return now + std::chrono::duration_cast<Clock::duration>(timeout);
}

// A deadline on any clock, as a steady-clock deadline.
template <class C, class D>
Clock::time_point to_steady(const std::chrono::time_point<C, D>& t) {
  if constexpr (std::is_same_v<C, Clock>) {
    return std::chrono::time_point_cast<Clock::duration>(t);
  } else {
    return deadline_after(t - C::now());
  }
}

}  // namespace detail
}  // namespace mpx

#endif  // MPX_DETAIL_DEADLINE_H_
