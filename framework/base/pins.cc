#include "mpx/detail/pins.h"

#include <cstdlib>
#include <string>
#include <utility>

#include "mpx/errors.h"

namespace mpx {
namespace detail {
namespace {
thread_local Pins* t_pins = nullptr;  // the innermost active PinScope's list
thread_local FdTransfers* t_fds = nullptr;  // the innermost active FdScope's list
thread_local bool t_result = false;         // a ResultScope is active
thread_local ObjectSink* t_objects = nullptr;  // the innermost active ObjectScope's sink
thread_local ObjectSink* t_result_objects = nullptr;  // the active ResultObjectScope's
}

ResultObjectScope::ResultObjectScope(ObjectSink& sink) : previous_(t_result_objects) {
  t_result_objects = &sink;
}
ResultObjectScope::~ResultObjectScope() { t_result_objects = previous_; }
ObjectSink* packing_sink() { return t_result ? t_result_objects : t_objects; }

ObjectScope::ObjectScope(ObjectSink& sink) : previous_(t_objects) { t_objects = &sink; }
ObjectScope::~ObjectScope() { t_objects = previous_; }
ObjectSink* object_sink() { return t_objects; }

namespace {
// From here an object is 4.7x faster than a by-value message when the processes'
// allocators hand out fresh pages (every message of more than glibc's mmap threshold),
// and 2x slower when they reuse warm ones; at 256 KiB, 1.7x faster and 3x slower
// (BENCHMARKS.md "Large arguments as objects").
constexpr std::size_t kObjectThreshold = std::size_t{1} << 20;
}  // namespace

std::size_t parse_object_threshold(const char* text) {
  const std::string s(text);
  std::size_t used = 0;
  unsigned long long n = 0;
  bool ok = !s.empty() && s[0] >= '0' && s[0] <= '9';
  if (ok) {
    try {
      n = std::stoull(s, &used);
    } catch (const std::exception&) {
      ok = false;
    }
  }
  if (ok && used < s.size()) {
    const std::string unit = s.substr(used);
    const int shift = unit == "K" || unit == "KiB" ? 10 : unit == "M" || unit == "MiB" ? 20
                      : unit == "G" || unit == "GiB" ? 30 : -1;
    ok = shift > 0 && n <= (~0ull >> shift);
    if (ok) n <<= shift;
  }
  if (!ok) {
    throw Error("MPX_OBJECT_THRESHOLD='" + s +
                "' is not a size: give bytes (1048576), or with K, M or G (1M), from which "
                "arguments travel as read-only objects; 0 sends every argument by value");
  }
  return static_cast<std::size_t>(n);
}

std::size_t default_object_threshold() {
  // A process on a node agent's host (its workers and their children) cannot open
  // shared-memory handles at all (see Segment::open): everything it sends goes by value.
  static const bool on_node_host = std::getenv("MPX_NODE_HOST") != nullptr;
  if (on_node_host) return 0;
  static const char* const env = std::getenv("MPX_OBJECT_THRESHOLD");
  if (env == nullptr) return kObjectThreshold;
  static const std::size_t parsed = parse_object_threshold(env);
  return parsed;
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
