// mpx/object.h — read-only objects in shared memory (an object store, as Ray's):
// mpx::put(value) writes a value once into a sealed memfd and returns an ObjectRef<T>,
// a small handle. Pool tasks, Process targets and actor methods take the handle, or an
// mpx::Span<const E> view of an array, and map the same pages read-only: what travels
// between processes is the handle (~40 bytes), not the value.
//
//   double mean(mpx::Span<const double> xs) {             // maps the object: no copy
//     return std::accumulate(xs.begin(), xs.end(), 0.0) / static_cast<double>(xs.size());
//   }
//   MPX_TASK(mean);
//
//   std::vector<double> samples = load();                 // 800 MB, say
//   mpx::ObjectRef<std::vector<double>> ref = mpx::put(samples);  // copied once, sealed
//   pool.map(mean, std::vector<mpx::ObjectRef<std::vector<double>>>(8, ref));
//   mpx::Span<const double> all = ref.get();              // here too: the same pages
//   pool.map(mean, std::vector<mpx::Span<const double>>{all.first(n / 2), all.last(n / 2)});
//   std::vector<double> copy = ref.value();               // an owned copy, when wanted
//
// What is stored how:
//   zero-copy: the elements are stored raw and mapped as they are, nothing is decoded
//     std::vector<E>, std::array<E, N>, mpx::Span<const E>, std::string (E = char), for
//     trivially copyable E (not bool)     get() -> mpx::Span<const E>
//     any other trivially copyable T (a struct of numbers)     get() -> const T&
//   decoded on access: everything else msgpack can pack (std::map, std::vector of
//     strings or of vectors, structs with MSGPACK_DEFINE) is stored msgpack-encoded;
//     get() -> T, decoded from the mapping at each call (the bytes are not copied
//     first; the decoded T is a copy).
// A parameter of type mpx::Span<const E> also accepts a std::vector<E> (or a Span of
// ordinary memory): those bytes are then copied into the message, as any argument is,
// up to the sender's object threshold (PoolOptions::object_threshold, 1 MiB by
// default): from there a vector, array, string or Span argument is put() into an
// object by itself and travels as its handle (see ArgumentCodec below); a Pool puts a
// vector, array or string argument, which the task copies out, into a reused argument
// buffer instead (Segment::lend_buffer).
//
// Lifetime (that of every mpx shared object, see mpx/shared.h): the object is owned by
// the process that put() it and lives while a handle to it lives there, or a Pool call,
// Process or actor call carrying it is not done. A process that mapped it keeps its
// mapping while its ObjectRefs and Spans live there. The kernel frees the memory once
// no process holds it, however they end (SIGKILL included); nothing is ever in
// /dev/shm. A ref is usable while its owner holds the object: decoding it afterwards
// throws mpx::SharedMemoryError naming the owner ("has exited", "no longer holds it"),
// also in a process that had mapped it (whose live Spans stay valid).
//
// Returning objects: a pool task may return an ObjectRef or Span of an object another
// process owns (its caller, an actor), or of one it put() itself: that one's memfd goes
// back with the result (SCM_RIGHTS) and the caller adopts it, owning it from then on.
// So do large results (a vector, array, string or Span of object_threshold bytes or
// more, see PoolOptions::object_threshold): they come back as objects by themselves.
// Where a pool sends results by value (object_threshold 0, pipeline stages, listening
// pools) an object the task put() fails its item with mpx::Error: the worker may be
// replaced at any moment and its objects die with it. An actor method may return an
// object the actor keeps (a member): the caller maps it while the actor holds it.
//
// Immutability: the memfd is sealed (F_SEAL_WRITE, F_SEAL_SHRINK, F_SEAL_GROW,
// F_SEAL_SEAL) before the handle exists, and every process, the owner included, maps
// it PROT_READ: nobody can change an object under a reader.
//
// Thread safety: ObjectRef and Span are immutable values, usable from any thread.
#ifndef MPX_OBJECT_H_
#define MPX_OBJECT_H_

#include <sys/types.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <msgpack.hpp>

#include "mpx/detail/codec.h"
#include "mpx/detail/handle.h"
#include "mpx/detail/pins.h"
#include "mpx/detail/segment.h"
#include "mpx/errors.h"

namespace mpx {

template <class T>
class Span;
template <class T>
class ObjectRef;

namespace detail {

// Element types stored raw: their bytes mean the same in every process of the program.
template <class E>
constexpr bool raw_element() {
  return std::is_trivially_copyable_v<E> && !std::is_pointer_v<E> &&
         !std::is_member_pointer_v<E> && alignof(E) <= 64 && !std::is_array_v<E>;
}

template <class T>
struct is_std_array : std::false_type {};
template <class E, std::size_t N>
struct is_std_array<std::array<E, N>> : std::true_type {};

// How ObjectRef<T> stores T. Contiguous: raw elements (Element), any number of them
// (kFixed 0) or exactly kFixed. Scalar: one raw T. Otherwise msgpack-encoded.
template <class T, class = void>
struct ObjectLayout {
  static constexpr bool kContiguous = false;
  static constexpr bool kScalar = false;
  static constexpr SegmentKind kKind = SegmentKind::kEncodedObject;
  using Element = void;
  static const TypeTag& tag() { return type_tag<T>(); }
};
template <class E>
struct RawLayout {
  static constexpr SegmentKind kKind = SegmentKind::kObject;
  using Element = E;
  static const TypeTag& tag() { return type_tag<E>(); }
};
template <class E, class A>
struct ObjectLayout<std::vector<E, A>,
                    std::enable_if_t<raw_element<E>() && !std::is_same_v<E, bool>>>
    : RawLayout<E> {
  static constexpr bool kContiguous = true;
  static constexpr bool kScalar = false;
  static constexpr std::uint64_t kFixed = 0;
};
template <class E, std::size_t N>
struct ObjectLayout<std::array<E, N>, std::enable_if_t<raw_element<E>()>> : RawLayout<E> {
  static constexpr bool kContiguous = true;
  static constexpr bool kScalar = false;
  static constexpr std::uint64_t kFixed = N;
};
template <>
struct ObjectLayout<std::string> : RawLayout<char> {
  static constexpr bool kContiguous = true;
  static constexpr bool kScalar = false;
  static constexpr std::uint64_t kFixed = 0;
};
template <class T>
struct ObjectLayout<T, std::enable_if_t<raw_element<T>() && !is_std_array<T>::value>>
    : RawLayout<T> {
  static constexpr bool kContiguous = false;
  static constexpr bool kScalar = true;
  static constexpr std::uint64_t kFixed = 1;
};

// ObjectRef's and Span's private parts, for the codecs and put().
struct ObjectAccess {
  template <class T>
  static const std::shared_ptr<Segment>& segment(const ObjectRef<T>& ref) {
    return ref.segment_;
  }
  template <class T>
  static ObjectRef<T> adopt(std::shared_ptr<Segment> segment) {
    return ObjectRef<T>(std::move(segment));
  }
  template <class T>
  static const std::shared_ptr<Segment>& segment(const Span<T>& span) {
    return span.segment_;
  }
  template <class T>
  static Span<T> view(T* data, std::size_t size, std::shared_ptr<Segment> segment,
                      std::shared_ptr<const void> storage) {
    Span<T> s(data, size);
    s.segment_ = std::move(segment);
    s.storage_ = std::move(storage);
    return s;
  }
};

// A pool worker packing a task's result (ResultScope, pins.h) may return an object it
// owns (one it put(), or a result of a pool of its own, which it adopted) when its pool
// takes results as objects: the object's memfd then goes with the RESULT frame, as a
// large result's does, and the caller adopts it. Where results go by value (a pool with
// object_threshold 0, a pipeline stage, a listening pool) the object would be gone with
// the worker, which the pool may replace at any moment: mpx::Error.
inline void check_returnable(const std::shared_ptr<Segment>& segment) {
  if (!packing_result() || !segment->owned()) return;
  ObjectSink* sink = packing_sink();
  const SegmentKind kind = segment->ref().kind;
  if (sink != nullptr && sink->threshold > 0 &&
      (kind == SegmentKind::kObject || kind == SegmentKind::kEncodedObject)) {
    const int fd = segment->ref().fd;
    if (std::find(sink->fds.begin(), sink->fds.end(), fd) != sink->fds.end()) return;  // already going
    if (sink->keep->size() < sink->max_objects) {
      sink->keep->push_back(segment);
      sink->fds.push_back(fd);
      return;
    }
    throw Error("mpx: the chunk's results already hand over " + std::to_string(sink->max_objects) +
                " objects, the most one chunk's answer carries: pass a chunksize of at most " +
                std::to_string(sink->max_objects) + " to the call, or return the value itself");
  }
  throw Error(
      "mpx: a pool task cannot return an object it created with mpx::put() here: this pool "
      "sends results by value (object_threshold 0, a pipeline stage or a listening pool), and "
      "the object belongs to the worker, which the pool may replace at any time, so it could "
      "be gone before the caller maps it. Return the value itself, or put() the object in the "
      "caller (or an actor) and pass it in");
}

// An array of count elements, each element_bytes, written raw into a new object.
inline std::shared_ptr<Segment> put_raw(const TypeTag& tag, const void* data,
                                        std::size_t element_bytes, std::uint64_t count) {
  const std::size_t bytes = element_bytes * count;
  return Segment::create_sealed(SegmentKind::kObject, tag, count, bytes, [&](SegmentWriter& w) {
    w.write(static_cast<const char*>(data), bytes);
  });
}

// An argument ArgCodec writes into an object instead of the message (see ObjectSink in
// mpx/detail/pins.h), or a pool worker's result (ResultObjectScope): the new object,
// kept by the sink; or null when the value goes by value (no sink, below its
// threshold, or the sink holds as many objects as a message can carry). copied: the
// receiver copies the value out as it decodes it (not a Span), so where the sink
// lends buffers the argument goes into one.
inline std::shared_ptr<Segment> argument_object(const TypeTag& tag, const void* data,
                                                std::size_t element_bytes, std::uint64_t count,
                                                bool copied = false) {
  ObjectSink* sink = packing_sink();
  const std::size_t bytes = element_bytes * count;
  if (sink == nullptr || sink->threshold == 0 || bytes < sink->threshold ||
      sink->keep->size() + (sink->lent ? sink->lent->size() : 0) >= sink->max_objects) {
    return nullptr;
  }
  if (copied && sink->lent != nullptr && !packing_result()) {
    std::shared_ptr<Segment> segment = Segment::lend_buffer(tag, data, element_bytes, count);
    sink->lent->push_back(segment);
    sink->bytes += bytes;
    return segment;
  }
  std::shared_ptr<Segment> segment = put_raw(tag, data, element_bytes, count);
  sink->keep->push_back(segment);
  sink->fds.push_back(segment->ref().fd);
  sink->bytes += bytes;
  return segment;
}

// The msgpack ext type of an argument that travels as an object: its body is the
// object's handle (pack_segment_ref). An ext, so that no value of the parameter's own
// type (a vector of six integers) can be mistaken for a handle.
constexpr std::int8_t kObjectArgumentExt = 79;

// How ArgCodec (mpx/detail/args.h) packs and unpacks an argument of parameter type P.
// Arrays, vectors and strings of raw elements go as objects when argument_object says
// so; the receiver builds its P from the mapping (one copy, out of shared pages
// rather than through the router). Everything else goes by value.
template <class P, class = void>
struct ArgumentCodec {
  template <class Stream>
  static void pack(msgpack::packer<Stream>& pk, const P& value) {
    pk.pack(value);
  }
  static P unpack(const msgpack::object& o) { return o.as<P>(); }
};
// Opens the object an argument's handle names; an object this process has no address
// space left to map is out of memory (std::bad_alloc), as the value itself would be,
// so a pool's worker_memory_limit fails the item the same way either way.
inline std::shared_ptr<Segment> open_argument(const msgpack::object& ref, const TypeTag& tag) {
  try {
    const SegmentRef r = unpack_segment_ref(ref);
    if (r.kind == SegmentKind::kArgumentBuffer) return Segment::open_buffer(r, tag);
    return Segment::open(r, SegmentKind::kObject, tag);
  } catch (const MapOutOfMemory&) {
    throw std::bad_alloc();
  }
}

// An argument read from a buffer its sender rewrote meanwhile (Segment::current).
[[noreturn]] inline void throw_reused(const SegmentRef& ref) {
  throw SharedMemoryError("mpx: the argument buffer process " + std::to_string(ref.owner) +
                          " lent for this argument was reused for another one while this "
                          "process read it (its call was given up while the chunk ran)");
}

// Elements that are views (std::string_view) are not sent raw: their pointers would
// name the sender's memory. Such vectors go by value, as put() refuses them.
template <class P>
struct ArgumentCodec<P, std::enable_if_t<ObjectLayout<P>::kContiguous && !holds_views<P>::value>> {
  using Layout = ObjectLayout<P>;
  using E = typename Layout::Element;
  template <class Stream>
  static void pack(msgpack::packer<Stream>& pk, const P& value) {
    std::shared_ptr<Segment> segment =
        argument_object(Layout::tag(), value.data(), sizeof(E), value.size(), /*copied=*/true);
    if (!segment) {
      pk.pack(value);
      return;
    }
    Buffer ref(64);
    msgpack::packer<Buffer> ref_packer(ref);
    pack_segment_ref(ref_packer, segment->ref());
    pk.pack_ext(ref.size(), kObjectArgumentExt);
    pk.pack_ext_body(ref.data(), static_cast<std::uint32_t>(ref.size()));
  }
  // Throws msgpack::type_error for a value of another type, SharedMemoryError when the
  // object is gone (its sender exited).
  static P unpack(const msgpack::object& o) {
    if (o.type != msgpack::type::EXT || o.via.ext.type() != kObjectArgumentExt) return o.as<P>();
    msgpack::zone zone;
    std::size_t off = 0;
    const msgpack::object ref = read_object(zone, o.via.ext.data(), o.via.ext.size, off);
    const std::shared_ptr<Segment> segment = open_argument(ref, Layout::tag());
    const auto* first = reinterpret_cast<const E*>(segment->body());
    const auto n = static_cast<std::size_t>(segment->ref().count);
    P out;
    if constexpr (is_std_array<P>::value) {
      if (n != Layout::kFixed) throw msgpack::type_error();
      std::memcpy(static_cast<void*>(out.data()), first, sizeof(out));
    } else {
      out = P(first, first + n);
    }
    if (!segment->current()) throw_reused(segment->ref());
    return out;
  }
};

// value msgpack-encoded straight into a new object. Shared objects packed inside it
// (a Value, an actor, another object) are kept while the object lives.
template <class T>
std::shared_ptr<Segment> put_encoded(const T& value) {
  Pins pins;
  auto segment = Segment::create_sealed(SegmentKind::kEncodedObject, type_tag<T>(), std::nullopt,
                                        0, [&](SegmentWriter& w) {
                                          PinScope scope(pins);
                                          msgpack::packer<SegmentWriter> pk(w);
                                          pk.pack(value);
                                        });
  for (auto& p : pins) segment->keep(std::move(p));
  return segment;
}

[[noreturn]] inline void throw_empty_ref(const char* what) {
  throw Error(std::string("mpx::ObjectRef::") + what +
              ": this ObjectRef is empty (default-constructed); mpx::put() makes one");
}

}  // namespace detail

// A contiguous sequence of T, like C++20's std::span: data(), size(), iteration,
// operator[]. Either a view of memory someone else keeps alive (a vector, an array), or
// of a read-only object (ObjectRef::get(), or a task parameter), whose mapping it keeps
// while it lives, or of elements decoded from a message, which it owns. Copies share.
// Passed to another process, a Span of an object travels as a handle to it (plus the
// range it views); any other Span travels by value (its bytes are copied).
template <class T>
class Span {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using size_type = std::size_t;
  using pointer = T*;
  using reference = T&;
  using iterator = T*;
  using const_iterator = const T*;

  Span() noexcept = default;
  // size elements at data, which must outlive the Span and its copies.
  Span(T* data, std::size_t size) noexcept : data_(data), size_(size) {}
  // Views of a container's elements, implicit as std::span's; the container must
  // outlive the Span and its copies.
  template <class A, class U = T, std::enable_if_t<std::is_const_v<U>, int> = 0>
  Span(const std::vector<value_type, A>& v) noexcept : Span(v.data(), v.size()) {}  // NOLINT
  template <class A>
  Span(std::vector<value_type, A>& v) noexcept : Span(v.data(), v.size()) {}  // NOLINT
  template <std::size_t N, class U = T, std::enable_if_t<std::is_const_v<U>, int> = 0>
  Span(const std::array<value_type, N>& a) noexcept : Span(a.data(), N) {}  // NOLINT
  template <std::size_t N>
  Span(std::array<value_type, N>& a) noexcept : Span(a.data(), N) {}  // NOLINT
  template <class U = T, std::enable_if_t<std::is_same_v<U, const char>, int> = 0>
  Span(const std::string& s) noexcept : Span(s.data(), s.size()) {}  // NOLINT
  // The whole of an object of value_type elements (no copy; keeps it mapped).
  template <class U, class L = detail::ObjectLayout<U>,
            std::enable_if_t<L::kContiguous && std::is_same_v<typename L::Element, value_type> &&
                                 std::is_const_v<T>,
                             int> = 0>
  Span(const ObjectRef<U>& ref) : Span(ref.span()) {}  // NOLINT
  // Span<E> to Span<const E>.
  template <class U, std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>, int> = 0>
  Span(const Span<U>& other) noexcept  // NOLINT
      : data_(other.data_), size_(other.size_), segment_(other.segment_), storage_(other.storage_) {}

  T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t size_bytes() const noexcept { return size_ * sizeof(T); }
  bool empty() const noexcept { return size_ == 0; }
  T* begin() const noexcept { return data_; }
  T* end() const noexcept { return data_ + size_; }
  // Unchecked, as std::span's.
  T& operator[](std::size_t i) const noexcept { return data_[i]; }
  // Throws std::out_of_range naming the index and the size.
  T& at(std::size_t i) const {
    if (i >= size_) {
      throw std::out_of_range("mpx::Span::at: index " + std::to_string(i) +
                              " is out of range for a span of " + std::to_string(size_));
    }
    return data_[i];
  }
  T& front() const noexcept { return data_[0]; }
  T& back() const noexcept { return data_[size_ - 1]; }
  // Sub-views; they keep what this one keeps. Throw std::out_of_range past the end.
  Span first(std::size_t n) const { return subspan(0, n); }
  Span last(std::size_t n) const {
    if (n > size_) out_of_range(0, n);
    return subspan(size_ - n, n);
  }
  static constexpr std::size_t npos = std::numeric_limits<std::size_t>::max();
  Span subspan(std::size_t offset, std::size_t n = npos) const {
    if (offset > size_) out_of_range(offset, n);
    if (n == npos) n = size_ - offset;
    if (n > size_ - offset) out_of_range(offset, n);
    Span s = *this;
    s.data_ = data_ + offset;
    s.size_ = n;
    return s;
  }
  std::vector<value_type> to_vector() const { return std::vector<value_type>(begin(), end()); }
  // Whether the elements are those of a shared object (mapped read-only): passed to
  // another process, this Span then travels as a handle, not as its bytes.
  bool in_object() const noexcept { return segment_ != nullptr; }

 private:
  template <class U>
  friend class Span;
  friend struct detail::ObjectAccess;
  [[noreturn]] void out_of_range(std::size_t offset, std::size_t n) const {
    throw std::out_of_range("mpx::Span: elements [" + std::to_string(offset) + ", +" +
                            std::to_string(n) + ") are out of range for a span of " +
                            std::to_string(size_));
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
  std::shared_ptr<detail::Segment> segment_;  // the object viewed, kept mapped; or null
  std::shared_ptr<const void> storage_;       // elements decoded from a message; or null
};

// A handle to a read-only object holding a T, made by mpx::put (see the top of this
// file). Copies refer to the same object; an empty ObjectRef (default-constructed)
// refers to none.
template <class T>
class ObjectRef {
  using Layout = detail::ObjectLayout<T>;
  static_assert(std::is_same_v<T, std::remove_cv_t<std::remove_reference_t<T>>>,
                "mpx::ObjectRef<T>: T is a plain type (no const, no reference)");
  static_assert(!std::is_pointer_v<T> && !detail::holds_views<T>::value,
                "mpx::ObjectRef<T>: T cannot be, or hold, a pointer or a view "
                "(std::string_view, ...): another process cannot follow it. Store the data "
                "itself (std::string, std::vector)");

 public:
  ObjectRef() = default;
  bool valid() const noexcept { return segment_ != nullptr; }

  // The value, without copying where the layout allows (see the top of this file):
  // Span<const E> for arrays, vectors and strings, const T& for other trivially
  // copyable T (both valid while this ObjectRef, or the Span, lives), a decoded T
  // otherwise. Throws mpx::Error for an empty ref, mpx::DecodeError when an encoded
  // value does not decode.
  decltype(auto) get() const {
    if constexpr (Layout::kContiguous) {
      return span();
    } else if constexpr (Layout::kScalar) {
      return static_cast<const T&>(*reinterpret_cast<const T*>(segment("get").body()));
    } else {
      return value();
    }
  }
  // An owned copy of the value.
  T value() const {
    const detail::Segment& s = segment("value");
    if constexpr (Layout::kContiguous) {
      const auto* first = reinterpret_cast<const typename Layout::Element*>(s.body());
      const auto n = static_cast<std::size_t>(s.ref().count);
      if constexpr (detail::is_std_array<T>::value) {
        T out;
        std::memcpy(static_cast<void*>(out.data()), first, sizeof(out));
        return out;
      } else {
        return T(first, first + n);
      }
    } else if constexpr (Layout::kScalar) {
      T out;
      std::memcpy(static_cast<void*>(&out), s.body(), sizeof(T));
      return out;
    } else {
      msgpack::zone zone;
      std::size_t off = 0;
      try {
        return detail::read_object(zone, s.body(), s.body_bytes(), off).template as<T>();
      } catch (const SharedMemoryError&) {
        throw;  // a handle inside the value names something that is gone
      } catch (const std::exception& e) {
        throw DecodeError(std::string("mpx::ObjectRef::value: the object does not decode as ") +
                          std::string(detail::pretty_type_name<T>()) + ": " + e.what());
      }
    }
  }
  // Arrays, vectors and strings: a view of the elements in the mapping.
  auto span() const {
    static_assert(Layout::kContiguous,
                  "mpx::ObjectRef<T>::span(): T is not stored as raw elements (only "
                  "std::vector, std::array and std::string of trivially copyable elements are)");
    using E = typename Layout::Element;
    const detail::Segment& s = segment("span");
    return detail::ObjectAccess::view<const E>(reinterpret_cast<const E*>(s.body()),
                                               static_cast<std::size_t>(s.ref().count),
                                               segment_, nullptr);
  }
  // Elements of an array, vector or string.
  std::size_t size() const {
    static_assert(Layout::kContiguous, "mpx::ObjectRef<T>::size(): T has no elements; see nbytes()");
    return static_cast<std::size_t>(segment("size").ref().count);
  }
  // Bytes the object holds (raw elements, or the encoded value).
  std::size_t nbytes() const { return segment("nbytes").body_bytes(); }
  // The process that created the object and holds it.
  pid_t owner() const { return segment("owner").ref().owner; }

 private:
  friend struct detail::ObjectAccess;
  explicit ObjectRef(std::shared_ptr<detail::Segment> segment) : segment_(std::move(segment)) {}
  const detail::Segment& segment(const char* what) const {
    if (!segment_) detail::throw_empty_ref(what);
    return *segment_;
  }
  std::shared_ptr<detail::Segment> segment_;
};

// Writes value into a new read-only object owned by this process and returns a handle
// to it. Arrays, vectors and strings of trivially copyable elements, and trivially
// copyable values, are copied once, as they are; anything else is msgpack-encoded
// straight into the object. Throws SharedMemoryError naming the size and the reason
// when the object does not fit in memory (checked before writing when the size is
// known in advance), exceeds RLIMIT_FSIZE, or the memfd cannot be created.
template <class T>
ObjectRef<std::remove_cv_t<T>> put(const T& value) {
  using U = std::remove_cv_t<T>;
  static_assert(!std::is_array_v<U>,
                "mpx::put: pass a std::string, std::vector, std::array or mpx::Span rather "
                "than a C array or string literal");
  using Layout = detail::ObjectLayout<U>;
  if constexpr (Layout::kContiguous) {
    return detail::ObjectAccess::adopt<U>(detail::put_raw(
        Layout::tag(), value.data(), sizeof(typename Layout::Element), value.size()));
  } else if constexpr (Layout::kScalar) {
    return detail::ObjectAccess::adopt<U>(detail::put_raw(Layout::tag(), &value, sizeof(U), 1));
  } else {
    return detail::ObjectAccess::adopt<U>(detail::put_encoded(value));
  }
}
// The elements a Span views (a raw buffer: Span<const E>(pointer, count)), as a vector.
template <class E>
ObjectRef<std::vector<std::remove_cv_t<E>>> put(Span<E> elements) {
  using V = std::remove_cv_t<E>;
  static_assert(detail::raw_element<V>(),
                "mpx::put(Span<E>): E must be trivially copyable (not a pointer)");
  return detail::ObjectAccess::adopt<std::vector<V>>(
      detail::put_raw(detail::type_tag<V>(), elements.data(), sizeof(V), elements.size()));
}

namespace detail {

// An ObjectRef travels as the segment's ref, or nil when empty.
template <class T>
struct HandleCodec<ObjectRef<T>> {
  using Layout = ObjectLayout<T>;
  template <class Stream>
  static void pack(msgpack::packer<Stream>& pk, const ObjectRef<T>& ref) {
    const std::shared_ptr<Segment>& segment = ObjectAccess::segment(ref);
    if (!segment) {
      pk.pack_nil();
      return;
    }
    check_returnable(segment);
    pack_segment(pk, segment);
  }
  // Throws msgpack::type_error for something else, SharedMemoryError when the object
  // is gone or holds another type (or another number of elements than a std::array).
  static ObjectRef<T> unpack(const msgpack::object& o) {
    if (o.type == msgpack::type::NIL) return ObjectRef<T>();
    std::shared_ptr<Segment> segment = unpack_segment(o, Layout::kKind, Layout::tag());
    if constexpr (Layout::kContiguous || Layout::kScalar) {
      if (Layout::kFixed != 0 && segment->ref().count != Layout::kFixed) {
        throw SharedMemoryError("mpx: an object of " + std::to_string(segment->ref().count) + " " +
                                std::string(pretty_type_name<typename Layout::Element>()) +
                                " elements cannot be read as " +
                                std::string(pretty_type_name<T>()));
      }
    }
    return ObjectAccess::adopt<T>(std::move(segment));
  }
};

// A Span of an object travels as [object ref, first element, count]; any other Span as
// a bin of its bytes, which the receiver copies into storage the Span owns (aligned for
// T, and valid for as long as the Span is kept).
template <class T>
struct HandleCodec<Span<T>> {
  using E = std::remove_cv_t<T>;
  template <class Stream>
  static void pack(msgpack::packer<Stream>& pk, const Span<T>& s) {
    static_assert(raw_element<E>(),
                  "mpx::Span<T> passes between processes only for trivially copyable T "
                  "(not pointers)");
    if (const std::shared_ptr<Segment>& segment = ObjectAccess::segment(s)) {
      check_returnable(segment);
      pk.pack_array(3);
      pack_segment(pk, segment);
      pk.pack(static_cast<std::uint64_t>(s.data() - reinterpret_cast<const E*>(segment->body())));
      pk.pack(static_cast<std::uint64_t>(s.size()));
      return;
    }
    if (s.size_bytes() > std::numeric_limits<std::uint32_t>::max()) {
      throw std::length_error("mpx::Span: " + std::to_string(s.size_bytes()) +
                              " bytes are too many to send by value (4 GiB at most); "
                              "mpx::put() them into an object and pass that");
    }
    pk.pack_bin(static_cast<std::uint32_t>(s.size_bytes()));
    pk.pack_bin_body(reinterpret_cast<const char*>(s.data()),
                     static_cast<std::uint32_t>(s.size_bytes()));
  }
  // Throws msgpack::type_error for something else, SharedMemoryError when the object
  // is gone or holds elements of another type.
  static Span<T> unpack(const msgpack::object& o) {
    static_assert(std::is_const_v<T>,
                  "a task, Process or actor parameter must be mpx::Span<const T>: objects are "
                  "read-only, and a Span sent by value arrives as a copy");
    static_assert(raw_element<E>(),
                  "mpx::Span<T> passes between processes only for trivially copyable T "
                  "(not pointers)");
    if (o.type == msgpack::type::BIN) {
      const std::size_t bytes = o.via.bin.size;
      if (bytes % sizeof(E) != 0) throw msgpack::type_error();
      if (bytes == 0) return Span<T>();
      const std::size_t align = alignof(E) < alignof(std::max_align_t) ? alignof(std::max_align_t)
                                                                       : alignof(E);
      void* storage = std::aligned_alloc(align, (bytes + align - 1) / align * align);
      if (storage == nullptr) throw std::bad_alloc();
      std::shared_ptr<const void> owned(storage, [](const void* p) { std::free(const_cast<void*>(p)); });
      std::memcpy(storage, o.via.bin.ptr, bytes);
      return ObjectAccess::view<T>(static_cast<T*>(storage), bytes / sizeof(E), nullptr,
                                   std::move(owned));
    }
    if (o.type != msgpack::type::ARRAY || o.via.array.size != 3) throw msgpack::type_error();
    std::shared_ptr<Segment> segment =
        unpack_segment(o.via.array.ptr[0], SegmentKind::kObject, type_tag<E>());
    const auto first = o.via.array.ptr[1].as<std::uint64_t>();
    const auto count = o.via.array.ptr[2].as<std::uint64_t>();
    const std::uint64_t total = segment->ref().count;
    if (first > total || count > total - first) throw msgpack::type_error();
    T* data = reinterpret_cast<T*>(segment->body()) + first;
    return ObjectAccess::view<T>(data, static_cast<std::size_t>(count), std::move(segment), nullptr);
  }
};

// A Span argument (a parameter itself, not a Span inside another value): a large one of
// ordinary memory becomes an object (see argument_object), which the receiver views
// without copying; a Span of an object travels as its handle anyway.
template <class T>
struct ArgumentCodec<Span<T>> {
  using E = std::remove_cv_t<T>;
  template <class Stream>
  static void pack(msgpack::packer<Stream>& pk, const Span<T>& s) {
    if (!s.in_object()) {
      if (std::shared_ptr<Segment> segment =
              argument_object(type_tag<E>(), s.data(), sizeof(E), s.size())) {
        pk.pack_array(3);
        pack_segment_ref(pk, segment->ref());
        pk.pack(std::uint64_t{0});
        pk.pack(static_cast<std::uint64_t>(s.size()));
        return;
      }
    }
    pk.pack(s);
  }
  static Span<T> unpack(const msgpack::object& o) {
    try {
      return o.as<Span<T>>();
    } catch (const MapOutOfMemory&) {
      throw std::bad_alloc();
    }
  }
};

}  // namespace detail
}  // namespace mpx

#endif  // MPX_OBJECT_H_
