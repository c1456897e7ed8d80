// mpx/detail/args.h — how a call's arguments are packed and unpacked (ArgCodec): the
// same template at both ends, since both run the same program. Internal: not part of
// the public API.
//
// Each argument goes through ArgumentCodec<P> (mpx/object.h): by value, or, while the
// sender has an ObjectScope open and the argument is a large array, vector, string or
// Span of raw elements, as a read-only object whose handle is all the message carries.
#ifndef MPX_DETAIL_ARGS_H_
#define MPX_DETAIL_ARGS_H_

#include <cstddef>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include <msgpack.hpp>

#include "mpx/detail/codec.h"
#include "mpx/object.h"

namespace mpx {
namespace detail {

// Encodes arguments the way the task with parameters Params... decodes them: each
// argument is first converted to the declared parameter type, so the wire always
// carries what the function expects.
template <class... Params>
struct ArgCodec {
  using Tuple = std::tuple<Bare<Params>...>;
  static_assert(sizeof(Tuple) <= kMaxStackValueBytes,
                "mpx: these parameters take more than 1 MiB by value (a large std::array or "
                "struct): decoded on the stack of the process that runs the call, they would "
                "overflow it. Take a std::vector or an mpx::Span instead");
  static constexpr std::size_t kArity = sizeof...(Params);
  // The one parameter, when there is exactly one (else void).
  using Single = typename std::conditional_t<kArity == 1, std::tuple_element<0, std::tuple<Bare<Params>..., void>>,
                                             std::enable_if<true, void>>::type;
  // Whether a chunk's items travel as a raw block (see the layouts in codec.h).
  static constexpr bool kRawItems = kRawItem<Single>;

  template <class Packer, class Item>
  static void pack_item(Packer& pk, const Item& item) {
    if constexpr (kArity == 1) {
      pack_argument<0>(pk, item);
    } else if constexpr (std::is_same_v<Item, Tuple>) {
      pack_tuple(pk, item, std::make_index_sequence<kArity>());
    } else {
      pack_tuple(pk, Tuple(item), std::make_index_sequence<kArity>());
    }
  }
  // starmap: the item is a tuple of the arguments.
  template <class Packer, class TupleLike>
  static void pack_star_item(Packer& pk, const TupleLike& item) {
    if constexpr (kArity == 1) {
      pack_argument<0>(pk, std::get<0>(item));
    } else {
      pack_item(pk, item);
    }
  }
  template <class Packer, class... Args>
  static void pack_call(Packer& pk, Args&&... args) {
    pack_tuple(pk, Tuple(std::forward<Args>(args)...), std::make_index_sequence<kArity>());
  }
  // as<> rather than convert: arguments are built from the message, never
  // default-constructed first.
  static Tuple unpack_item(const msgpack::object& obj) {
    if constexpr (kArity == 1) {
      return Tuple(ArgumentCodec<std::tuple_element_t<0, Tuple>>::unpack(obj));
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
    return unpack_tuple(obj.via.array.ptr, std::make_index_sequence<kArity>());
  }

 private:
  // The argument converted to parameter I's type: a reference to it when it already
  // has that type (no copy), else a temporary.
  template <std::size_t I, class Packer, class A>
  static void pack_argument(Packer& pk, const A& arg) {
    using P = std::tuple_element_t<I, Tuple>;
    ArgumentCodec<P>::pack(pk, static_cast<const P&>(arg));
  }
  template <class Packer, std::size_t... I>
  static void pack_tuple(Packer& pk, const Tuple& args, std::index_sequence<I...>) {
    (void)args;
    pk.pack_array(static_cast<std::uint32_t>(kArity));
    (pack_argument<I>(pk, std::get<I>(args)), ...);
  }
  template <std::size_t... I>
  static Tuple unpack_tuple(const msgpack::object* items, std::index_sequence<I...>) {
    (void)items;
    return Tuple(ArgumentCodec<std::tuple_element_t<I, Tuple>>::unpack(items[I])...);
  }
};

}  // namespace detail
}  // namespace mpx

#endif  // MPX_DETAIL_ARGS_H_
