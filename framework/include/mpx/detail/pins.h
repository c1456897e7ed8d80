// mpx/detail/pins.h — keeps shared objects alive while a message naming them travels.
// Internal: not part of the public API.
//
// A handle to a Value or Lock packed into a Process's arguments or a Pool task names a
// segment its owner must keep until the receiver has mapped it. While a PinScope is
// active on a thread, every handle packed on that thread adds its segment to the
// scope's list; the Process or the Pool call keeps that list as long as it lives.
#ifndef MPX_DETAIL_PINS_H_
#define MPX_DETAIL_PINS_H_

#include <cstddef>
#include <cstdint>
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

// Large arguments as objects (ArgCodec, mpx/detail/args.h): while an ObjectScope is
// active on a thread, an argument of at least threshold bytes whose type objects store
// raw (a std::vector or std::array of numbers or trivially copyable structs, a
// std::string, an mpx::Span of ordinary memory) is written into a read-only object and
// travels as its handle: the router forwards ~40 bytes instead of the value. Those
// objects go to *keep, not to the PinScope, and their bytes are counted, so that a Pool
// keeps them with their chunk until it is answered and counts them in its
// max_inflight_bytes window. Only the sender of a call opens a scope (a Pool that does
// not listen, a Process, an actor call). A pool worker's results have a sink of their
// own (ResultObjectScope below).
class Segment;
struct ObjectSink {
  std::size_t threshold = 0;  // 0: every argument travels by value
  Pins* keep = nullptr;
  std::size_t bytes = 0;      // of the objects added to *keep (and *lent)
  std::size_t max_objects = SIZE_MAX;  // from there, by value again
  std::vector<int> fds;       // of the objects added to *keep, in order
  // Set by a Pool for its chunks' arguments: a large argument that the task decodes
  // into a value of its own (a std::vector, std::array or std::string parameter, which
  // copies it) goes into an argument buffer (Segment::lend_buffer) added here, which
  // the pool gives back for reuse once the chunk is answered; a Span parameter, which
  // keeps viewing its argument, still gets an object of its own. Null: objects only.
  std::vector<std::shared_ptr<Segment>>* lent = nullptr;
};
class ObjectScope {
 public:
  explicit ObjectScope(ObjectSink& sink);
  ~ObjectScope();
  ObjectScope(const ObjectScope&) = delete;
  ObjectScope& operator=(const ObjectScope&) = delete;

 private:
  ObjectSink* previous_;
};
// The innermost active ObjectScope's sink on this thread, or null.
ObjectSink* object_sink();
// Arguments from this many bytes on travel as objects unless the caller says otherwise
// (PoolOptions::object_threshold; MPX_OBJECT_THRESHOLD in the environment, read once).
std::size_t default_object_threshold();
// MPX_OBJECT_THRESHOLD's value: bytes, or with K, M or G (KiB, MiB, GiB). Throws
// mpx::Error naming the text and what is expected.
std::size_t parse_object_threshold(const char* text);

// Active on a thread while a pool worker packs a task's result. An object the worker
// owns (mpx::put) packed there goes back with the RESULT frame when a ResultObjectScope
// can take it, and is refused otherwise: the pool may replace the worker at any moment,
// and the object would be gone before the caller could map it (check_returnable in
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

// Active on a pool worker's thread while it runs a chunk for a pool that takes results
// as objects (PoolOptions::object_threshold, told in the worker's CONFIG): a result
// packed under a ResultScope that is large enough goes into a new object in sink, whose
// memfds the worker then sends with the RESULT frame (SCM_RIGHTS), so the object
// outlives the worker. Without this scope results go by value.
class ResultObjectScope {
 public:
  explicit ResultObjectScope(ObjectSink& sink);
  ~ResultObjectScope();
  ResultObjectScope(const ResultObjectScope&) = delete;
  ResultObjectScope& operator=(const ResultObjectScope&) = delete;

 private:
  ObjectSink* previous_;
};
// The sink an argument or result being packed now goes to: the result sink under a
// ResultScope, else the innermost ObjectScope's; null for by value.
ObjectSink* packing_sink();

}  // namespace detail
}  // namespace mpx

#endif  // MPX_DETAIL_PINS_H_
