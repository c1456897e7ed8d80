// mpx/detail/segment.h — shared memory segments behind Value, Array, Lock, Queue and
// the other shared objects. Internal: not part of the public API.
//
// A segment is a sealed memfd mapped MAP_SHARED. Its creator (the owner) keeps the fd
// for as long as a handle to it lives in the owner; other processes open it through
// /proc/<owner>/fd/<fd>, validate its header, map it and close their fd at once. The
// kernel frees the memory when the last fd and the last mapping are gone, so a segment
// can never outlive the processes that use it and nothing is ever left in /dev/shm, no
// matter which processes are killed and how.
//
// Handles travel as [kind, owner pid, fd, id, type hash, count]. The 64-bit random id is
// written in the segment's header and checked on open, so a recycled fd number never
// maps the wrong segment.
#ifndef MPX_DETAIL_SEGMENT_H_
#define MPX_DETAIL_SEGMENT_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <msgpack.hpp>

#include "mpx/detail/codec.h"
#include "mpx/detail/pins.h"
#include "mpx/errors.h"

namespace mpx {
namespace detail {

enum class SegmentKind : std::uint32_t {
  kValue = 1,
  kArray,
  kLock,
  kRLock,
  kSemaphore,
  kEvent,
  kBarrier,
  kQueue,
  kActor,  // an actor's control block (framework/actor)
  kCondition,
  kRawValue,
  kRawArray,
  kSharedMemory,
  // Read-only objects (mpx::put): sealed against writes once written, mapped PROT_READ.
  kObject,         // raw elements of a trivially copyable type (the tag's), count of them
  kEncodedObject,  // one value of the tag's type, msgpack-encoded; count: its bytes
  // A pool argument's raw elements, or a chunk of numbers with room for its results
  // (mpx/detail/raw_chunk.h), in a buffer its sender reuses once the chunk is answered
  // (Segment::lend_buffer): mapped by receivers read-only (read-write by a worker that
  // writes results there), valid only while the chunk that names it runs. Not sealed
  // against writes: the sender rewrites it.
  kArgumentBuffer,
  kLastKind = kArgumentBuffer,
};
const char* segment_kind_name(SegmentKind kind);

// What a segment holds, so a handle of another type is refused with a readable message.
// hash identifies the type within one program (all mpx processes run the same binary).
struct TypeTag {
  std::uint64_t hash;
  std::uint32_t size;
  std::uint32_t align;
  std::string_view name;
};

template <class T>
constexpr std::string_view pretty_type_name() {
  // "... pretty_type_name() [with T = int; std::string_view = ...]" (GCC) or
  // "... pretty_type_name() [T = int]" (Clang).
  std::string_view p = __PRETTY_FUNCTION__;
  const std::size_t start = p.find("T = ") + 4;
  std::size_t end = p.find_first_of(";]", start);
  return p.substr(start, end - start);
}

constexpr std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

template <class T>
const TypeTag& type_tag() {
  static constexpr TypeTag tag{fnv1a(pretty_type_name<T>()) ^ (sizeof(T) << 48),
                               static_cast<std::uint32_t>(sizeof(T)),
                               static_cast<std::uint32_t>(alignof(T)), pretty_type_name<T>()};
  return tag;
}

// Objects without an element type (Lock, Event, ...) use this tag.
const TypeTag& untyped_tag();

struct SegmentRef {
  SegmentKind kind = SegmentKind::kValue;
  pid_t owner = 0;
  int fd = -1;
  std::uint64_t id = 0;
  std::uint64_t type_hash = 0;
  std::uint64_t count = 0;
};

// Segment::open's mmap failed for lack of memory or address space (ENOMEM).
class MapOutOfMemory : public SharedMemoryError {
 public:
  using SharedMemoryError::SharedMemoryError;
};

// Writes the body of a read-only segment (Segment::create_sealed) into its memfd with
// pwrite(2): every byte is copied once, into the memfd's pages, and no writable mapping
// ever exists (F_SEAL_WRITE could not be added while one did). Small writes (msgpack
// packs scalars a few bytes at a time) are gathered first. Has msgpack::packer's
// stream interface. Not thread-safe; lives only inside create_sealed.
class SegmentWriter {
 public:
  // Throws SharedMemoryError when the bytes cannot be stored (out of memory, the
  // process's file size limit), naming how many were written.
  void write(const char* data, std::size_t size);
  // Bytes written so far.
  std::size_t size() const { return written_ + staged_; }
  SegmentWriter(const SegmentWriter&) = delete;
  SegmentWriter& operator=(const SegmentWriter&) = delete;

 private:
  friend class Segment;
  SegmentWriter(int fd, std::size_t offset, std::string what);
  void flush();
  void store(const char* data, std::size_t size);

  static constexpr std::size_t kStagingBytes = 64 << 10;
  const int fd_;
  const std::size_t offset_;  // of the body in the file
  const std::string what_;    // "an object of double elements", for errors
  std::uint64_t limit_;       // RLIMIT_FSIZE (a write past it would raise SIGXFSZ)
  std::size_t written_ = 0;   // bytes stored in the file
  std::size_t staged_ = 0;    // bytes waiting in staging_
  std::unique_ptr<char[]> staging_;
};

}  // namespace detail
}  // namespace mpx

// Objects keep the sign of -0.0 as messages do (see packs_float_as_integer in codec.h).
MPX_DETAIL_PACK_FLOATS_KEEPING_SIGN(mpx::detail::SegmentWriter)

namespace mpx {
namespace detail {

// Objects that came with a message rather than by their owner's /proc (a pool worker's
// results, whose memfds travel with the RESULT frame: transport::Fds). While a scope is
// active on a thread, Segment::open looks for a ref's object among these descriptors
// first (by the id in its header) and adopts it: this process becomes its owner, so
// the object lives on here after its sender has exited, and handles to it work as
// those of an object put() here. An adopted descriptor is taken (its slot set to -1);
// the others stay the caller's.
class AttachedObjects {
 public:
  explicit AttachedObjects(std::vector<int>& fds);
  ~AttachedObjects();
  AttachedObjects(const AttachedObjects&) = delete;
  AttachedObjects& operator=(const AttachedObjects&) = delete;

 private:
  std::vector<int>* previous_;
};

// One mapping of a segment in this process. Immutable after construction; shared by
// every handle to the segment in this process. Thread-safe.
class Segment {
 public:
  // Creates a zero-filled segment owned by this process with body_bytes usable bytes
  // (64-byte aligned). count is stored for the handle (Array length, Barrier parties).
  // Throws SharedMemoryError when the memfd cannot be created or mapped (errno named).
  static std::shared_ptr<Segment> create(SegmentKind kind, const TypeTag& tag,
                                         std::uint64_t count, std::size_t body_bytes);
  // Creates a read-only segment (kObject, kEncodedObject): fill writes the body, then
  // the memfd is sealed against writes, resizes and further seals and mapped PROT_READ,
  // so no process, the owner included, can change it under a reader. count: stored for
  // the handle; nullopt stores the body's size. size_hint: the body's size when known
  // in advance (0 otherwise), checked against the memory available before anything is
  // written. Throws SharedMemoryError naming the size and the reason when the object
  // does not fit (memory, RLIMIT_FSIZE) or the memfd cannot be created; what fill
  // throws passes through. Nothing is left behind either way.
  static std::shared_ptr<Segment> create_sealed(SegmentKind kind, const TypeTag& tag,
                                                std::optional<std::uint64_t> count,
                                                std::size_t size_hint,
                                                const std::function<void(SegmentWriter&)>& fill);
  // Argument buffers (kArgumentBuffer): a pool's large by-value arguments (a vector,
  // array or string of raw elements that the task copies out when it decodes it) go
  // through memfds that stay mapped in the sender and in the workers and are reused,
  // instead of a fresh sealed object each: no memfd to create, no pages to allocate,
  // zero and fault in on either side, no mapping to make per argument.
  //
  // lend_buffer copies bytes into a buffer of this process (a free one, or a new one)
  // under a new id and returns a segment naming it, owned here; recycle_buffers gives
  // buffers back for reuse. Invariant: a buffer is given back only once no process can
  // still read it for the use it was lent for — the pool does so when the chunk naming
  // it is answered (its worker decoded every argument), never on a cancel or after a
  // router death; dropping the segment instead frees the buffer. At most
  // kFreeBufferBytes of buffers wait for reuse; a buffer is never smaller than 64 KiB.
  // Throws SharedMemoryError as create does.
  static std::shared_ptr<Segment> lend_buffer(const TypeTag& tag, const void* data,
                                              std::size_t element_bytes, std::uint64_t count);
  // The same for bytes bytes that fill writes into the buffer's body itself (count: the
  // handle's, as for create).
  static std::shared_ptr<Segment> lend_buffer(const TypeTag& tag, std::size_t bytes,
                                              std::uint64_t count,
                                              const std::function<void(char*)>& fill);
  // Copies n bytes into an argument buffer's body for another process to read. A copy
  // whose source and destination together exceed this core's L2 cache (and of at least
  // 512 KiB) cannot stay in it, so it goes with non-temporal stores straight to
  // memory: a plain copy would first read each destination line for ownership, and the
  // buffer's lines sit in the cache of the worker that read its last use, on another
  // core (measured: the driver's 1 MiB copy ran 3x slower than into memory no one else
  // read). Below that size, a plain memcpy, which leaves the bytes in cache.
  static void copy_to_buffer(char* to, const void* from, std::size_t n);
  // Gives the buffers of lent (segments lend_buffer returned, held nowhere else) back
  // for reuse, and clears lent. Segments still held elsewhere are dropped instead.
  static void recycle_buffers(std::vector<std::shared_ptr<Segment>>& lent);
  // The bytes of buffers waiting for reuse in this process, and how many (tests).
  static std::size_t free_buffer_bytes();
  static std::size_t free_buffers();
  static constexpr std::size_t kFreeBufferBytes = std::size_t{64} << 20;
  // Maps an argument buffer another process lent (ref: kArgumentBuffer, as packed), as
  // long as ref's use of it is current: a receiver maps each buffer once and reads its
  // later uses through the same mapping. writable: mapped read-write, for a worker that
  // writes a chunk's results there (raw_chunk.h); read-only otherwise. Throws
  // SharedMemoryError when the buffer holds another use (its id changed: the ref is
  // stale), another type, or is gone.
  static std::shared_ptr<Segment> open_buffer(const SegmentRef& ref, const TypeTag& tag,
                                              bool writable = false);
  // Whether the bytes read from this segment so far are those of its use: false once
  // the sender of an argument buffer started writing another use into it (a seqlock's
  // second read: the sender clears the id before it writes). Always true for others.
  bool current() const;

  // Maps the segment ref names, checking it is a kind/tag segment. Repeated opens of the
  // same segment share one mapping. Throws SharedMemoryError naming what is wrong: the
  // owner exited or dropped it, it holds another kind or type, permission was denied.
  // A read-only object is checked to be still held by its owner even when this process
  // has it mapped already: a ref works exactly while its owner holds the object.
  static std::shared_ptr<Segment> open(const SegmentRef& ref, SegmentKind kind,
                                       const TypeTag& tag);
  ~Segment();
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  char* body() const { return body_; }
  std::size_t body_bytes() const { return body_bytes_; }
  const SegmentRef& ref() const { return ref_; }
  // The memfd's name, "mpx-<owner pid>-<kind>-<n>", as /proc/<pid>/maps shows it.
  const std::string& name() const { return name_; }
  bool owned() const { return owned_fd_ >= 0; }
  // Whether the owner still holds this segment: its fd there still names this memfd
  // (a stat of /proc/<owner>/fd/<fd>, ~2 us). Always true in the owner.
  bool held_by_owner() const;
  // Owner only, before the segment is first shared: keeps object alive as long as this
  // mapping lives (another shared object a Value uses as its lock, the arguments of a
  // Barrier's action, the name a SharedMemory holds), so pinning the segment pins it.
  void keep(std::shared_ptr<const void> object) { kept_.push_back(std::move(object)); }

 private:
  Segment() = default;
  // The object ref names among the active AttachedObjects, adopted; null when it is not
  // there.
  static std::shared_ptr<Segment> adopt_attached(const SegmentRef& ref, SegmentKind kind,
                                                 const TypeTag& tag);
  // The owner's Segment for a memfd it created (fd: ref.fd) and mapped at map.
  static std::shared_ptr<Segment> owned_mapping(const SegmentRef& ref, const std::string& name,
                                                void* map, std::size_t map_bytes,
                                                std::size_t body_bytes, dev_t dev, ino_t ino);
  SegmentRef ref_;
  std::string name_;
  void* map_ = nullptr;
  std::size_t map_bytes_ = 0;
  char* body_ = nullptr;
  std::size_t body_bytes_ = 0;
  int owned_fd_ = -1;  // the memfd, kept open by the owner only
  dev_t dev_ = 0;      // the memfd's identity, to recognise it at /proc/<owner>/fd/<fd>
  ino_t ino_ = 0;
  std::vector<std::shared_ptr<const void>> kept_;  // see keep()
  // An argument buffer's use (lend_buffer, open_buffer): the buffer's own segment,
  // whose mapping this one views (and does not unmap).
  std::shared_ptr<Segment> base_;
  bool writable_ = false;  // a receiver's mapping of an argument buffer: read-write
};

// Packs a handle's ref; the caller keeps the segment alive until it has been mapped.
template <class Stream>
void pack_segment_ref(msgpack::packer<Stream>& pk, const SegmentRef& r) {
  pk.pack_array(6);
  pk.pack(static_cast<std::uint32_t>(r.kind));
  pk.pack(static_cast<std::int64_t>(r.owner));
  pk.pack(r.fd);
  pk.pack(r.id);
  pk.pack(r.type_hash);
  pk.pack(r.count);
}
// Reads a ref packed by pack_segment_ref. Throws msgpack::type_error for something else.
SegmentRef unpack_segment_ref(const msgpack::object& o);
// Packs a handle's ref and records the segment in the current PinScope, if any.
template <class Stream>
void pack_segment(msgpack::packer<Stream>& pk, const std::shared_ptr<Segment>& segment) {
  pin(segment);
  pack_segment_ref(pk, segment->ref());
}
// Reads a ref packed by pack_segment and opens it. Throws msgpack::type_error for
// something that is not a handle and SharedMemoryError as Segment::open does.
std::shared_ptr<Segment> unpack_segment(const msgpack::object& o, SegmentKind kind,
                                        const TypeTag& tag);
// Unmaps the segments this process keeps mapped only because it opened them lately
// (handles that hold one keep it): an idle worker or actor lets the objects of its last
// tasks go.
void forget_recently_opened_segments();

}  // namespace detail
}  // namespace mpx

#endif  // MPX_DETAIL_SEGMENT_H_
