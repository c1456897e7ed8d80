#include "mpx/detail/pins.h"

#include <utility>

namespace mpx {
namespace detail {
namespace {
thread_local Pins* t_pins = nullptr;  // the innermost active PinScope's list
}

PinScope::PinScope(Pins& out) : previous_(t_pins) { t_pins = &out; }
PinScope::~PinScope() { t_pins = previous_; }

void pin(std::shared_ptr<const void> object) {
  if (t_pins != nullptr) t_pins->push_back(std::move(object));
}

}  // namespace detail
}  // namespace mpx
