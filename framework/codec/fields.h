// Structs as msgpack maps of named fields: how configurations travel (a pool's router
// Config, a worker's CONFIG), so that a field can be added, or a default changed,
// without every reader breaking on a positional tuple.
//
//   struct Settings {
//     int workers = 1;
//     std::chrono::milliseconds grace{2000};
//     template <class Self, class F>
//     static void fields(Self& self, F&& field) {
//       field("workers", self.workers);
//       field("grace_ms", self.grace);   // durations travel as their count
//     }
//   };
//   std::string bytes = detail::encode_fields(settings);
//   Settings back;                        // absent names keep these defaults
//   detail::decode_fields(bytes, back, "settings");
#ifndef MPX_FRAMEWORK_CODEC_FIELDS_H_
#define MPX_FRAMEWORK_CODEC_FIELDS_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <msgpack.hpp>

#include "mpx/detail/codec.h"
#include "mpx/errors.h"

namespace mpx {
namespace detail {
namespace fields_internal {

template <class T>
struct is_duration : std::false_type {};
template <class Rep, class Period>
struct is_duration<std::chrono::duration<Rep, Period>> : std::true_type {};

}  // namespace fields_internal

template <class T>
std::string encode_fields(const T& value) {
  std::uint32_t n = 0;
  T::fields(value, [&](const char*, const auto&) { ++n; });
  Buffer buf(256);
  msgpack::packer<Buffer> pk(buf);
  pk.pack_map(n);
  T::fields(value, [&](const char* name, const auto& v) {
    pk.pack(std::string_view(name));
    using V = std::decay_t<decltype(v)>;
    if constexpr (fields_internal::is_duration<V>::value) {
      pk.pack(static_cast<std::int64_t>(v.count()));
    } else {
      pk.pack(v);
    }
  });
  return std::string(buf.data(), buf.size());
}

// Fills value from a map written by encode_fields: names it lacks keep value's
// defaults, names value lacks are ignored (a newer peer's). Throws DecodeError, naming
// `what` and the field, for anything that is not such a map.
template <class T>
void decode_fields(std::string_view bytes, T& value, const char* what) {
  msgpack::zone zone;
  std::size_t off = 0;
  const msgpack::object obj = read_object(zone, bytes.data(), bytes.size(), off);
  if (obj.type != msgpack::type::MAP || off != bytes.size()) {
    throw DecodeError(std::string(what) + ": not a map of named fields");
  }
  std::vector<std::pair<std::string_view, const msgpack::object*>> found;
  for (std::uint32_t i = 0; i < obj.via.map.size; ++i) {
    const msgpack::object_kv& kv = obj.via.map.ptr[i];
    if (kv.key.type != msgpack::type::STR) throw DecodeError(std::string(what) + ": a field name is not a string");
    found.emplace_back(std::string_view(kv.key.via.str.ptr, kv.key.via.str.size), &kv.val);
  }
  T::fields(value, [&](const char* name, auto& v) {
    for (const auto& [key, val] : found) {
      if (key != name) continue;
      using V = std::decay_t<decltype(v)>;
      try {
        if constexpr (fields_internal::is_duration<V>::value) {
          v = V(val->template as<std::int64_t>());
        } else {
          val->convert(v);
        }
      } catch (const std::exception& e) {
        throw DecodeError(std::string(what) + ": field '" + name + "' has the wrong type (" + e.what() + ")");
      }
      return;
    }
  });
}

}  // namespace detail
}  // namespace mpx

#endif  // MPX_FRAMEWORK_CODEC_FIELDS_H_
