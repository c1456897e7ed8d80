#include "mpx/detail/pins.h"

#include <utility>

namespace mpx {
namespace detail {
namespace {
thread_local Pins* t_pins = nullptr;  // the innermost active PinScope's list
thread_local FdTransfers* t_fds = nullptr;  // the innermost active FdScope's list
thread_local bool t_result = false;         // a ResultScope is active
}

ResultScope::ResultScope() : previous_(t_result) { t_result = true; }
ResultScope::~ResultScope() { t_result = previous_; }
bool packing_result() { return t_result; }

FdScope::FdScope(FdTransfers& out) : previous_(t_fds) { t_fds = &out; }
FdScope::~FdScope() { t_fds = previous_; }
FdTransfers* fd_scope() { return t_fds; }

PinScope::PinScope(Pins& out) : previous_(t_pins) { t_pins = &out; }
PinScope::~PinScope() { t_pins = previous_; }

bool pinning() { return t_pins != nullptr; }

void pin(std::shared_ptr<const void> object) {
  // A map over N items naming one Value pins it once, not N times.
  if (t_pins == nullptr || (!t_pins->empty() && t_pins->back() == object)) return;
  t_pins->push_back(std::move(object));
}

}  // namespace detail
}  // namespace mpx
