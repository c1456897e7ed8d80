// mpx/detail/raw_chunk.h — a pool chunk of raw items (codec.h's raw block) held in an
// argument buffer (Segment::lend_buffer) instead of in the message. Internal: not part
// of the public API.
//
// A chunk of numbers of at least kRawChunkBufferBytes goes into a buffer of the driver
// together with room for its results, when they are numbers too; the message carries an
// ext naming the buffer. The worker reads the items where they are and writes the
// results into that room; its RESULT carries the same kind of ext, naming the results.
// So neither the items nor the results cross the router's sockets (two sockets each
// way, each a copy in and a copy out). The driver copies the results out, then gives
// the buffer back (PoolCore::dispatch), as for any argument buffer: once the chunk is
// answered, never while a worker may still use it.
#ifndef MPX_DETAIL_RAW_CHUNK_H_
#define MPX_DETAIL_RAW_CHUNK_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

#include <msgpack.hpp>

#include "mpx/detail/codec.h"
#include "mpx/detail/segment.h"
#include "mpx/errors.h"

namespace mpx {
namespace detail {

// From this many bytes of items on, a pool's raw chunk goes into a buffer (messages are
// as fast below: see BENCHMARKS.md, "Argument buffers").
constexpr std::size_t kRawChunkBufferBytes = std::size_t{64} << 10;

// The msgpack ext type of a raw chunk in a buffer. Its body: [buffer ref (pack_segment_ref),
// item code, offset of the items, offset of the room for results, its bytes].
constexpr std::int8_t kRawChunkExt = 81;

// The bytes of one R when a chunk's results of type R travel raw (numbers), else 0.
template <class R>
constexpr std::size_t raw_width() {
  if constexpr (std::is_void_v<R>) {
    return 0;
  } else if constexpr (kRawItem<std::remove_cv_t<std::remove_reference_t<R>>>) {
    return sizeof(std::remove_cv_t<std::remove_reference_t<R>>);
  } else {
    return 0;
  }
}

// Whether data[off] holds a raw chunk, in the message (a bin) or in a buffer (the ext).
inline bool at_raw_chunk(const char* data, std::size_t size, std::size_t off) {
  return at_raw_block(data, size, off) ||
         (off + 3 <= size && static_cast<unsigned char>(data[off]) == 0xc7 &&
          static_cast<std::int8_t>(data[off + 2]) == kRawChunkExt);
}

// Appends the ext naming a raw chunk in buffer `use`.
inline void pack_raw_chunk_ref(Buffer& out, const SegmentRef& use, std::uint8_t code,
                               std::uint64_t items_at, std::uint64_t results_at,
                               std::uint64_t results_bytes) {
  Buffer body(96);
  msgpack::packer<Buffer> pk(body);
  pk.pack_array(5);
  pack_segment_ref(pk, use);
  pk.pack(code);
  pk.pack(items_at);
  pk.pack(results_at);
  pk.pack(results_bytes);
  msgpack::packer<Buffer> outer(out);
  outer.pack_ext(body.size(), kRawChunkExt);
  outer.pack_ext_body(body.data(), static_cast<std::uint32_t>(body.size()));
}

// A raw chunk as read: its items (block), and for one in a buffer, the mapping they are
// in (kept while this lives) and the room for results there (null when none).
struct RawChunk {
  RawBlock block;
  std::shared_ptr<Segment> buffer;
  char* results = nullptr;
  std::size_t results_at = 0;
  std::size_t results_bytes = 0;
};

// Reads the raw chunk at data[off] holding `expected` items, in either form; advances
// off past it. One in a buffer is mapped writable when the results go there. Throws
// DecodeError naming what is wrong (an unknown item code, sizes that do not fit, a
// buffer that cannot be mapped or holds another use).
inline RawChunk read_raw_chunk(const char* data, std::size_t size, std::size_t& off,
                               std::size_t expected, bool writable) {
  RawChunk chunk;
  if (at_raw_block(data, size, off)) {
    chunk.block = read_raw_block(data, size, off, expected);
    return chunk;
  }
  msgpack::zone zone;
  const msgpack::object ext = read_object(zone, data, size, off);
  if (ext.type != msgpack::type::EXT || ext.via.ext.type() != kRawChunkExt) {
    throw DecodeError("raw chunk: not a chunk held in a buffer");
  }
  std::size_t at = 0;
  const msgpack::object f = read_object(zone, ext.via.ext.data(), ext.via.ext.size, at);
  if (f.type != msgpack::type::ARRAY || f.via.array.size != 5) {
    throw DecodeError("raw chunk: malformed buffer reference");
  }
  const msgpack::object* v = f.via.array.ptr;
  SegmentRef ref;
  std::uint64_t items_at = 0, results_at = 0, results_bytes = 0;
  try {
    ref = unpack_segment_ref(v[0]);
    chunk.block.code = v[1].as<std::uint8_t>();
    items_at = v[2].as<std::uint64_t>();
    results_at = v[3].as<std::uint64_t>();
    results_bytes = v[4].as<std::uint64_t>();
  } catch (const std::exception& e) {
    throw DecodeError(std::string("raw chunk: malformed buffer reference: ") + e.what());
  }
  chunk.block.width = chunk.block.code & 0x0f;
  const int kind = chunk.block.code >> 4;
  const std::size_t w = chunk.block.width;
  const bool known = (kind == 1 || kind == 2) ? (w == 1 || w == 2 || w == 4 || w == 8)
                     : kind == 3              ? (w == 4 || w == 8)
                                              : false;
  if (!known) throw DecodeError("raw chunk of an unknown item type");
  try {
    chunk.buffer = Segment::open_buffer(ref, untyped_tag(), writable);
  } catch (const std::exception& e) {
    throw DecodeError(std::string("raw chunk: ") + e.what());
  }
  const std::size_t body = chunk.buffer->body_bytes();
  const std::size_t items = expected * w;
  if (items / w != expected || items_at > body || items > body - items_at ||
      results_at > body || results_bytes > body - results_at) {
    throw DecodeError("raw chunk: " + std::to_string(expected) + " items of " +
                      std::to_string(w) + " bytes do not fit the buffer of " +
                      std::to_string(body) + " bytes that holds them");
  }
  chunk.block.count = expected;
  chunk.block.bytes = chunk.buffer->body() + items_at;
  if (results_bytes > 0 && writable) {
    chunk.results = chunk.buffer->body() + results_at;
    chunk.results_at = static_cast<std::size_t>(results_at);
    chunk.results_bytes = static_cast<std::size_t>(results_bytes);
  }
  return chunk;
}

}  // namespace detail
}  // namespace mpx

#endif  // MPX_DETAIL_RAW_CHUNK_H_
