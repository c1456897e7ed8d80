#include "framework/transport/pump.h"

namespace mpx {
namespace transport {

bool Pump::wait(std::unique_lock<std::mutex>& lk, const std::function<bool()>& ready,
                Clock::time_point deadline) {
  for (;;) {
    if (ready()) return true;
    const bool expired = Clock::now() >= deadline;
    if (!pumping_ && holders_waiting_ == 0) {
      pumping_ = true;
      lk.unlock();
      try {
        turn_(deadline);
      } catch (...) {
        lk.lock();
        pumping_ = false;
        cv_.notify_all();
        throw;
      }
      lk.lock();
      pumping_ = false;
      cv_.notify_all();
      if (expired) return ready();
    } else {
      if (expired) return false;
      cv_.wait_until(lk, deadline);
    }
  }
}

void Pump::hold(std::unique_lock<std::mutex>& lk) {
  ++holders_waiting_;
  cv_.wait(lk, [this] { return !pumping_; });
  --holders_waiting_;
  pumping_ = true;
}

void Pump::release() {
  pumping_ = false;
  cv_.notify_all();
}

}  // namespace transport
}  // namespace mpx
