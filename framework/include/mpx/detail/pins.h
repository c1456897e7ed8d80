// mpx/detail/pins.h — keeps shared objects alive while a message naming them travels.
// Internal: not part of the public API.
//
// A handle to a Value or Lock packed into a Process's arguments or a Pool task names a
// segment its owner must keep until the receiver has mapped it. While a PinScope is
// active on a thread, every handle packed on that thread adds its segment to the
// scope's list; the Process or the Pool call keeps that list as long as it lives.
#ifndef MPX_DETAIL_PINS_H_
#define MPX_DETAIL_PINS_H_

#include <memory>
#include <vector>

namespace mpx {
namespace detail {

using Pins = std::vector<std::shared_ptr<const void>>;

class PinScope {
 public:
  explicit PinScope(Pins& out);
  ~PinScope();
  PinScope(const PinScope&) = delete;
  PinScope& operator=(const PinScope&) = delete;

 private:
  Pins* previous_;
};

// Adds object to the innermost active PinScope of this thread; no-op without one.
void pin(std::shared_ptr<const void> object);
// Whether a PinScope is active on this thread.
bool pinning();

// A descriptor a message hands over (an end of an mpx::Pipe), and what keeps it open.
struct FdTransfer {
  int fd;
  std::shared_ptr<const void> keep;
};
using FdTransfers = std::vector<FdTransfer>;

// While an FdScope is active on a thread (a Process being built), handles packed there
// that carry a descriptor add it to the scope's list instead of pinning it: the Process
// hands those descriptors to its child when it spawns it (the child inherits them, as
// with fork), and drops its own copies then.
class FdScope {
 public:
  explicit FdScope(FdTransfers& out);
  ~FdScope();
  FdScope(const FdScope&) = delete;
  FdScope& operator=(const FdScope&) = delete;

 private:
  FdTransfers* previous_;
};

// The innermost active FdScope's list on this thread, or null.
FdTransfers* fd_scope();

// Active on a thread while a pool worker packs a task's result. An object the worker
// created itself (mpx::put) must not be packed there: the pool may replace the worker
// at any moment, and the object would be gone before the caller could map it (see
// mpx/object.h). Only the packing is in scope, not the task: a task may hand its own
// objects to a Queue, a Process or an actor.
class ResultScope {
 public:
  ResultScope();
  ~ResultScope();
  ResultScope(const ResultScope&) = delete;
  ResultScope& operator=(const ResultScope&) = delete;

 private:
  bool previous_;
};
bool packing_result();

}  // namespace detail
}  // namespace mpx

#endif  // MPX_DETAIL_PINS_H_
