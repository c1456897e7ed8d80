// mpx/detail/handle.h — what every shared-object handle has in common: it owns a
// reference to its Segment and travels through msgpack as the segment's ref.
// Internal: not part of the public API.
#ifndef MPX_DETAIL_HANDLE_H_
#define MPX_DETAIL_HANDLE_H_

#include <memory>
#include <type_traits>
#include <utility>
#include <utility>

#include <msgpack.hpp>

#include "mpx/detail/segment.h"

namespace mpx {
namespace detail {

// Specialized by each handle type: static constexpr SegmentKind kKind, and
// static const TypeTag& tag().
template <class H>
struct HandleTraits;

template <class H, class = void>
struct is_handle : std::false_type {};
template <class H>
struct is_handle<H, std::void_t<decltype(HandleTraits<H>::kKind)>> : std::true_type {};

struct AdoptTag {};

// Handles grant this access to their segment and to their adopting constructor.
struct HandleAccess {
  template <class H>
  static const std::shared_ptr<Segment>& segment(const H& h) {
    return h.segment_;
  }
  template <class H>
  static H adopt(std::shared_ptr<Segment> segment) {
    return H(AdoptTag{}, std::move(segment));
  }
};

template <class H>
H open_handle(const msgpack::object& o) {
  return HandleAccess::adopt<H>(unpack_segment(o, HandleTraits<H>::kKind, HandleTraits<H>::tag()));
}

// Handles that are not one segment (a Condition is two, a Connection a descriptor)
// say how they travel by specialising HandleCodec<H> with
//   template <class Stream> static void pack(msgpack::packer<Stream>& pk, const H& h);
//   static H unpack(const msgpack::object& o);  // throws msgpack::type_error, ...
template <class H>
struct HandleCodec;
template <class H, class = void>
struct has_codec : std::false_type {};
template <class H>
struct has_codec<H, std::void_t<decltype(HandleCodec<H>::unpack(std::declval<const msgpack::object&>()))>>
    : std::true_type {};

}  // namespace detail
}  // namespace mpx

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {

  template <class H>
  struct pack<H, std::enable_if_t<mpx::detail::is_handle<H>::value>> {
    template <class Stream>
    msgpack::packer<Stream>& operator()(msgpack::packer<Stream>& pk, const H& h) const {
      mpx::detail::pack_segment(pk, mpx::detail::HandleAccess::segment(h));
      return pk;
    }
  };

  // as<> lets msgpack build a handle without default-constructing one first (which
  // would create a segment only to drop it).
  template <class H>
  struct as<H, std::enable_if_t<mpx::detail::is_handle<H>::value>> {
    H operator()(const msgpack::object& o) const { return mpx::detail::open_handle<H>(o); }
  };

  template <class H>
  struct convert<H, std::enable_if_t<mpx::detail::is_handle<H>::value>> {
    const msgpack::object& operator()(const msgpack::object& o, H& h) const {
      h = mpx::detail::open_handle<H>(o);
      return o;
    }
  };

  template <class H>
  struct pack<H, std::enable_if_t<mpx::detail::has_codec<H>::value>> {
    template <class Stream>
    msgpack::packer<Stream>& operator()(msgpack::packer<Stream>& pk, const H& h) const {
      mpx::detail::HandleCodec<H>::pack(pk, h);
      return pk;
    }
  };
  template <class H>
  struct as<H, std::enable_if_t<mpx::detail::has_codec<H>::value>> {
    H operator()(const msgpack::object& o) const { return mpx::detail::HandleCodec<H>::unpack(o); }
  };
  template <class H>
  struct convert<H, std::enable_if_t<mpx::detail::has_codec<H>::value>> {
    const msgpack::object& operator()(const msgpack::object& o, H& h) const {
      h = mpx::detail::HandleCodec<H>::unpack(o);
      return o;
    }
  };

  }  // namespace adaptor
}  // MSGPACK_API_VERSION_NAMESPACE
}  // namespace msgpack

#endif  // MPX_DETAIL_HANDLE_H_
