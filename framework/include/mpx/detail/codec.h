// mpx/detail/codec.h — msgpack helpers shared by the task templates and the runtime.
// Internal: not part of the public API, may change without notice.
//
// Payload layouts (both ends are the same program, so both use these templates):
//   chunk of arguments : msgpack array of N items; an item is the bare argument for
//                        one-parameter tasks, else an array of the arguments.
//   single call        : array of all the arguments (apply_async, Process, initializer).
//   chunk of results   : msgpack array of N results (nil for void tasks and for items
//                        that failed), followed — only when the header says so — by a
//                        second object: array of [index_in_chunk, type, message].
#ifndef MPX_DETAIL_CODEC_H_
#define MPX_DETAIL_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <msgpack.hpp>

#include "mpx/detail/pins.h"
#include "mpx/errors.h"

namespace mpx {
namespace detail {

// Growable output buffer; msgpack::sbuffer, whose malloc'd storage the transport can
// adopt without copying (release()).
using Buffer = msgpack::sbuffer;

// Reads the header of the msgpack array at data[off]; advances off past it. Throws
// DecodeError if the bytes there are not an array header.
std::uint32_t read_array_header(const char* data, std::size_t size, std::size_t& off);

// Decodes one object at data[off] into zone; advances off. Throws DecodeError on
// truncated or malformed input. A string or binary may point into data (scalars are
// decoded without msgpack-c's parser, which allocates per call): use the object while
// data lives.
msgpack::object read_object(msgpack::zone& zone, const char* data, std::size_t size,
                            std::size_t& off);

// Human-readable name of the exception currently being handled (demangled type).
std::string current_exception_type();
// what() of the exception currently being handled, or a fixed text for non-std ones.
std::string current_exception_message();
// Demangled name of a type_info.
std::string demangle(const char* mangled);

// One failed item of a chunk, as it travels back to the caller.
struct ItemError {
  std::uint32_t index;  // position inside the chunk
  std::string type;
  std::string message;
  MSGPACK_DEFINE(index, type, message);
};

template <class T>
using Bare = std::remove_cv_t<std::remove_reference_t<T>>;

// Encodes arguments the way the task with parameters Params... decodes them: each
// argument is first converted to the declared parameter type, so the wire always
// carries what the function expects.
template <class... Params>
struct ArgCodec {
  using Tuple = std::tuple<Bare<Params>...>;
  static constexpr std::size_t kArity = sizeof...(Params);

  template <class Packer, class Item>
  static void pack_item(Packer& pk, const Item& item) {
    if constexpr (kArity == 1) {
      pk.pack(static_cast<const std::tuple_element_t<0, Tuple>&>(item));
    } else {
      pk.pack(Tuple(item));
    }
  }
  // starmap: the item is a tuple of the arguments.
  template <class Packer, class TupleLike>
  static void pack_star_item(Packer& pk, const TupleLike& item) {
    if constexpr (kArity == 1) {
      pk.pack(static_cast<const std::tuple_element_t<0, Tuple>&>(std::get<0>(item)));
    } else {
      pk.pack(Tuple(item));
    }
  }
  template <class Packer, class... Args>
  static void pack_call(Packer& pk, Args&&... args) {
    pk.pack(Tuple(std::forward<Args>(args)...));
  }
  // as<> rather than convert: arguments are built from the message, never
  // default-constructed first.
  static Tuple unpack_item(const msgpack::object& obj) {
    if constexpr (kArity == 1) {
      return Tuple(obj.as<std::tuple_element_t<0, Tuple>>());
    } else {
      return unpack_call(obj);
    }
  }
  // msgpack-c fills a std::tuple from a shorter or longer array without complaint, so
  // the argument count is checked here: multiply([6]) must not run as multiply(6, 0).
  static Tuple unpack_call(const msgpack::object& obj) {
    if (obj.type != msgpack::type::ARRAY) {
      throw std::runtime_error("expected an array of " + std::to_string(kArity) + " arguments");
    }
    if (obj.via.array.size != kArity) {
      throw std::runtime_error("expected " + std::to_string(kArity) + " arguments, got " +
                               std::to_string(obj.via.array.size));
    }
    return obj.as<Tuple>();
  }
};

}  // namespace detail
}  // namespace mpx

#endif  // MPX_DETAIL_CODEC_H_
