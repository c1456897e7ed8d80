// mpx/detail/codec.h — msgpack helpers shared by the task templates and the runtime.
// Internal: not part of the public API, may change without notice. The functions
// declared here are defined in framework/codec/codec.cc.
//
// Payload layouts (both ends are the same program, so both use these templates):
//   chunk of arguments : msgpack array of N items; an item is the bare argument for
//                        one-parameter tasks, else an array of the arguments.
//   single call        : array of all the arguments (apply_async, Process, initializer).
//   chunk of results   : msgpack array of N results (nil for void tasks and for items
//                        that failed), followed — only when the header says so — by a
//                        second object: array of ErrorInfo (item = index in the chunk).
//   raw chunk          : in place of either array, when a one-parameter task's argument
//                        (or a raw chunk's result) is a number other than bool: one
//                        msgpack bin holding a code byte (raw_code) and the N items'
//                        bytes back to back (a failed item's are zero). A worker answers a
//                        raw chunk of arguments with raw results when it can; every
//                        reader accepts both forms (read_raw_block, raw_element), so the
//                        router and the pipelines never need to know.
#ifndef MPX_DETAIL_CODEC_H_
#define MPX_DETAIL_CODEC_H_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <msgpack.hpp>

#include "mpx/detail/pins.h"
#include "mpx/errors.h"

namespace mpx {
namespace detail {

// Growable output buffer for msgpack::packer, with msgpack::sbuffer's interface: its
// malloc'd storage can be adopted by the transport without copying (release()), and,
// unlike sbuffer, it can be cut back (truncate), so that an item whose encoding throws
// half-way (bad_alloc, a throwing adaptor) leaves no partial bytes behind it.
class Buffer {
 public:
  explicit Buffer(std::size_t reserve = 8192) {
    if (reserve > 0) {
      data_ = static_cast<char*>(std::malloc(reserve));
      if (data_ == nullptr) throw std::bad_alloc();
      cap_ = reserve;
    }
  }
  ~Buffer() { std::free(data_); }
  Buffer(Buffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        cap_(std::exchange(other.cap_, 0)) {}
  Buffer& operator=(Buffer&& other) noexcept {
    if (this != &other) {
      std::free(data_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      cap_ = std::exchange(other.cap_, 0);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void write(const char* bytes, std::size_t len) {
    if (len == 0) return;
    if (cap_ - size_ < len) grow(len);
    std::memcpy(data_ + size_, bytes, len);
    size_ += len;
  }
  char* data() { return data_; }
  const char* data() const { return data_; }
  std::size_t size() const { return size_; }
  // Hands the storage (malloc'd, free() it) to the caller; the buffer is empty after.
  char* release() {
    cap_ = size_ = 0;
    return std::exchange(data_, nullptr);
  }
  void clear() { size_ = 0; }
  // Appends n bytes left for the caller to write; returns their offset (data() may
  // move when the buffer grows later).
  std::size_t extend(std::size_t n) {
    if (cap_ - size_ < n) grow(n);
    const std::size_t at = size_;
    size_ += n;
    return at;
  }
  // Drops the bytes from n on (n > size() is a no-op).
  void truncate(std::size_t n) {
    if (n < size_) size_ = n;
  }

 private:
  void grow(std::size_t len) {
    std::size_t cap = cap_ < 64 ? 64 : cap_;
    while (cap - size_ < len) {
      if (cap > SIZE_MAX / 2) throw std::bad_alloc();
      cap *= 2;
    }
    char* grown = static_cast<char*>(std::realloc(data_, cap));
    if (grown == nullptr) throw std::bad_alloc();
    data_ = grown;
    cap_ = cap;
  }
  char* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t cap_ = 0;
};

// msgpack-c packs a whole-number double or float as an integer, the smaller form, which
// turns -0.0 into 0; Python's pickle keeps the sign, and so must a value that crosses a
// process boundary. mpx's own streams (Buffer here, SegmentWriter in segment.h) pack
// floating-point numbers with packs_float_as_integer and write_float instead: the same
// integer form for every other whole number, the float form for -0.0.
template <class F, class Stream>
bool packs_float_as_integer(msgpack::packer<Stream>& pk, F d) {
  static_assert(std::is_floating_point_v<F>);
  if (d != d || (d == 0 && std::signbit(d))) return false;  // NaN, -0.0
  // 2^64 and -2^63 are exact in every floating type; uint64_t(2^64) would not be.
  if (d >= 0 && d < F(18446744073709551616.0) && d == F(static_cast<std::uint64_t>(d))) {
    pk.pack_uint64(static_cast<std::uint64_t>(d));
    return true;
  }
  if (d < 0 && d >= F(-9223372036854775808.0) && d == F(static_cast<std::int64_t>(d))) {
    pk.pack_int64(static_cast<std::int64_t>(d));
    return true;
  }
  return false;
}
// d as a msgpack float 32 or float 64: the type code, then its bits big-endian.
template <class F, class Stream>
void write_float(Stream& stream, F d) {
  using Bits = std::conditional_t<sizeof(F) == 4, std::uint32_t, std::uint64_t>;
  Bits bits;
  std::memcpy(&bits, &d, sizeof bits);
  char out[1 + sizeof bits];
  out[0] = static_cast<char>(sizeof(F) == 4 ? 0xca : 0xcb);
  for (std::size_t i = 0; i < sizeof bits; ++i) {
    out[1 + i] = static_cast<char>(bits >> (8 * (sizeof bits - 1 - i)));
  }
  stream.write(out, sizeof out);
}

}  // namespace detail
}  // namespace mpx

// Specialises msgpack::packer<Stream>'s pack_double and pack_float as above; at global
// scope, right after Stream is defined (before any use of the packer on it).
#define MPX_DETAIL_PACK_FLOATS_KEEPING_SIGN(Stream)                                      \
  namespace msgpack {                                                                  \
  MSGPACK_API_VERSION_NAMESPACE(v1) {                                                  \
    template <>                                                                        \
    inline packer<Stream>& packer<Stream>::pack_double(double d) {                     \
      if (!mpx::detail::packs_float_as_integer(*this, d)) mpx::detail::write_float(m_stream, d); \
      return *this;                                                                    \
    }                                                                                  \
    template <>                                                                        \
    inline packer<Stream>& packer<Stream>::pack_float(float d) {                       \
      if (!mpx::detail::packs_float_as_integer(*this, d)) mpx::detail::write_float(m_stream, d); \
      return *this;                                                                    \
    }                                                                                  \
  }                                                                                    \
  }

MPX_DETAIL_PACK_FLOATS_KEEPING_SIGN(mpx::detail::Buffer)

namespace mpx {
namespace detail {

// Reads the header of the msgpack array at data[off]; advances off past it. Throws
// DecodeError if the bytes there are not an array header.
std::uint32_t read_array_header(const char* data, std::size_t size, std::size_t& off);

// Decodes one object at data[off] into zone; advances off. Throws DecodeError on
// truncated or malformed input. A string or binary may point into data (scalars are
// decoded without msgpack-c's parser, which allocates per call): use the object while
// data lives.
msgpack::object read_object(msgpack::zone& zone, const char* data, std::size_t size,
                            std::size_t& off);

// Items that travel as raw bytes: numbers of up to 8 bytes (not bool, whose vector
// packs bits; not long double). Both ends are the same program on the same machine.
template <class T, class = void>
inline constexpr bool kRawItem = false;
template <class T>
inline constexpr bool kRawItem<T, std::enable_if_t<std::is_arithmetic_v<T>>> =
    !std::is_same_v<T, bool> && sizeof(T) <= 8;
// A raw item type's code: kind (1 signed, 2 unsigned, 3 floating) << 4 | its size.
template <class T>
constexpr std::uint8_t raw_code() {
  static_assert(kRawItem<T>);
  const int kind = std::is_floating_point_v<T> ? 3 : std::is_signed_v<T> ? 1 : 2;
  return static_cast<std::uint8_t>(kind << 4 | sizeof(T));
}
// Whether std::data(range) is an array of T (a vector, std::array, C array, span).
template <class Range, class T, class = void>
inline constexpr bool kContiguousOf = false;
template <class Range, class T>
inline constexpr bool kContiguousOf<Range, T, std::void_t<decltype(std::data(std::declval<const Range&>()))>> =
    std::is_same_v<decltype(std::data(std::declval<const Range&>())), const T*>;
// A raw chunk as read from a payload: count items of width bytes at bytes (unaligned).
struct RawBlock {
  std::uint8_t code = 0;
  std::size_t width = 0;
  std::size_t count = 0;
  const char* bytes = nullptr;
};
// Starts a raw block of count items of type code at the end of out; returns the offset
// of the first item's bytes (left for the caller to fill).
std::size_t begin_raw_block(Buffer& out, std::uint8_t code, std::size_t count);
// Whether data[off] holds a raw block (a msgpack bin) rather than an array.
inline bool at_raw_block(const char* data, std::size_t size, std::size_t off) {
  return off < size && (static_cast<unsigned char>(data[off]) & 0xfc) == 0xc4 &&
         static_cast<unsigned char>(data[off]) != 0xc7;
}
// Reads the raw block at data[off] holding `expected` items; advances off past it.
// Throws DecodeError for an unknown code or a size that is not expected items.
RawBlock read_raw_block(const char* data, std::size_t size, std::size_t& off,
                        std::size_t expected);
// Iterates a raw block's items of type T by value (its bytes need not be aligned for
// T), so that a container can be built straight from them: vector::insert(end, it,
// it + n) constructs each element once, without value-initialising it first.
template <class T>
class RawIterator {
 public:
  using iterator_category = std::random_access_iterator_tag;
  using value_type = T;
  using difference_type = std::ptrdiff_t;
  using pointer = const T*;
  using reference = T;
  explicit RawIterator(const char* p) : p_(p) {}
  T operator*() const {
    T v;
    std::memcpy(&v, p_, sizeof v);
    return v;
  }
  T operator[](difference_type n) const { return *(*this + n); }
  RawIterator& operator++() { return p_ += sizeof(T), *this; }
  RawIterator operator++(int) { RawIterator old = *this; ++*this; return old; }
  RawIterator& operator--() { return p_ -= sizeof(T), *this; }
  RawIterator& operator+=(difference_type n) { return p_ += n * static_cast<difference_type>(sizeof(T)), *this; }
  RawIterator& operator-=(difference_type n) { return *this += -n; }
  friend RawIterator operator+(RawIterator a, difference_type n) { return a += n; }
  friend RawIterator operator-(RawIterator a, difference_type n) { return a -= n; }
  friend difference_type operator-(const RawIterator& a, const RawIterator& b) {
    return (a.p_ - b.p_) / static_cast<difference_type>(sizeof(T));
  }
  friend bool operator==(const RawIterator& a, const RawIterator& b) { return a.p_ == b.p_; }
  friend bool operator!=(const RawIterator& a, const RawIterator& b) { return a.p_ != b.p_; }
  friend bool operator<(const RawIterator& a, const RawIterator& b) { return a.p_ < b.p_; }

 private:
  const char* p_;
};

// Item i of a raw block as a msgpack object (an integer or a float), for readers that
// take any payload.
msgpack::object raw_element(const RawBlock& block, std::size_t i);

// Human-readable name of the exception currently being handled (demangled type).
std::string current_exception_type();
// what() of the exception currently being handled, or a fixed text for non-std ones.
std::string current_exception_message();
// Demangled name of a type_info.
std::string demangle(const char* mangled);

// One error as it travels between processes. Every error payload mpx sends is one:
// an item that failed in a result chunk (item: its position in the chunk), an actor
// method's or an initializer's exception, a chunk lost with its worker (mpx::WorkerLost,
// mpx::TimeoutError), a broken pool (mpx::PoolBroken). On the wire: a msgpack array
// [type, message, item, pid, cause, code], cause an array of at most one ErrorInfo,
// code optional (a payload of five elements has none).
struct ErrorInfo {
  std::string type;              // demangled exception type ("std::invalid_argument")
  std::string message;           // its what()
  std::uint64_t item = 0;        // position of the failed item in its chunk; else 0
  std::int32_t pid = 0;          // the process it happened in; 0 if unknown
  std::vector<ErrorInfo> cause;  // the error it wraps: none, or one
  // A std::system_error's code, "<category name>:<value>" ("generic:22"); else empty.
  std::string code;
  MSGPACK_DEFINE(type, message, item, pid, cause, code);
};
// Causes nest at most this deep; a decoder refuses deeper ones (DecodeError).
constexpr int kMaxErrorDepth = 8;

// getpid(), without <unistd.h> in public headers.
std::int32_t process_id();
// The exception being handled, as an ErrorInfo of this process (item as given).
ErrorInfo current_error(std::uint64_t item = 0);
// An ErrorInfo from a decoded msgpack object, checked (shape, cause depth); throws
// DecodeError. error_list_from: an array of them.
ErrorInfo error_from(const msgpack::object& obj);
std::vector<ErrorInfo> error_list_from(const msgpack::object& obj);
// The exception a caller throws for a failure reported by another process: the
// original type when this process can recreate it (see mpx::register_exception), else
// RemoteError; task_name, index and pid as RemoteInfo reports them.
std::exception_ptr remote_exception(std::string task_name, const ErrorInfo& error,
                                    std::uint64_t index, pid_t pid);
// One ErrorInfo as a whole payload, and back (throws DecodeError).
std::string encode_error(const ErrorInfo& error);
ErrorInfo decode_error(const char* data, std::size_t size);

template <class T>
using Bare = std::remove_cv_t<std::remove_reference_t<T>>;

// Whether T is, or holds, a type that views memory it does not own (std::string_view,
// a pointer, msgpack::object): decoded in the receiving process, such a value would
// point into a buffer that is freed once decoding is done. Looks inside standard
// containers, pairs, tuples and optionals.
template <class T, class = void>
struct holds_views : std::false_type {};
template <class T>
struct holds_views<T*> : std::true_type {};
template <class C, class Tr>
struct holds_views<std::basic_string_view<C, Tr>> : std::true_type {};
template <>
struct holds_views<msgpack::object> : std::true_type {};
template <class A, class B>
struct holds_views<std::pair<A, B>>
    : std::bool_constant<holds_views<Bare<A>>::value || holds_views<Bare<B>>::value> {};
template <class... Ts>
struct holds_views<std::tuple<Ts...>> : std::bool_constant<(holds_views<Bare<Ts>>::value || ...)> {};
template <class T>
struct holds_views<std::optional<T>> : holds_views<Bare<T>> {};
template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};
// Containers (not std::string: its value_type is a char; not std::optional, which has a
// value_type too and its own case above): their elements decide.
template <class T>
struct holds_views<T, std::enable_if_t<!std::is_same_v<T, std::string> && !is_optional<T>::value &&
                                       std::is_class_v<typename T::value_type>>>
    : holds_views<Bare<typename T::value_type>> {};
template <class T>
struct holds_views<T, std::enable_if_t<!std::is_same_v<T, std::string> && !is_optional<T>::value &&
                                       std::is_pointer_v<typename T::value_type>>> : std::true_type {};

// A callee's arguments are decoded into a tuple on the stack of the process that runs
// it, and its result is built there too (8 MiB by default, shared with the callee's own
// frames, which hold yet another copy of a by-value parameter). A type larger than this
// would overflow that stack at the first call, whatever its value: refused when the
// program is compiled (args.h, check_result_type).
constexpr std::size_t kMaxStackValueBytes = std::size_t{1} << 20;

// Compile-time check of a result type that another process decodes (a task's result,
// an actor method's).
template <class R>
constexpr void check_result_type() {
  if constexpr (!std::is_void_v<R>) {
    static_assert(sizeof(Bare<R>) <= kMaxStackValueBytes,
                  "mpx: this result type is larger than 1 MiB (a large std::array or struct): "
                  "built on the stack of the process that runs the call, it would overflow it. "
                  "Return a std::vector (or an mpx::ObjectRef) instead");
  }
  static_assert(!holds_views<Bare<R>>::value,
                "mpx: this result type is, or holds, a non-owning type (std::string_view, a "
                "pointer, msgpack::object): the caller decodes it from a buffer that is freed "
                "right after, so it would read freed memory. Return an owning type instead "
                "(std::string for std::string_view, a value or std::vector for a pointer)");
}

}  // namespace detail
}  // namespace mpx

#endif  // MPX_DETAIL_CODEC_H_
