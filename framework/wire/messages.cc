#include "framework/wire/messages.h"

#include "framework/codec/fields.h"
#include "mpx/errors.h"

namespace mpx {
namespace wire {

std::string encode(const LostChunks& lost) {
  detail::Buffer buf(128);
  msgpack::pack(buf, lost);
  return std::string(buf.data(), buf.size());
}

LostChunks decode_lost(std::string_view payload) {
  msgpack::zone zone;
  std::size_t off = 0;
  const msgpack::object obj = detail::read_object(zone, payload.data(), payload.size(), off);
  if (obj.type != msgpack::type::ARRAY || obj.via.array.size != 2 || off != payload.size()) {
    throw DecodeError("a LOST payload is not [error, ranges]");
  }
  LostChunks lost;
  lost.error = detail::error_from(obj.via.array.ptr[0]);
  try {
    obj.via.array.ptr[1].convert(lost.ranges);
  } catch (const std::exception& e) {
    throw DecodeError(std::string("a LOST payload's ranges could not be decoded: ") + e.what());
  }
  return lost;
}

std::string encode(const WorkerConfig& config) { return detail::encode_fields(config); }

WorkerConfig decode_worker_config(std::string_view payload) {
  WorkerConfig config;
  detail::decode_fields(payload, config, "worker config");
  return config;
}

}  // namespace wire
}  // namespace mpx
