// Actor messages over a unix stream socket: the wire header and payload of every
// message, length-prefixed, so one socket per (caller process, actor) carries calls one
// way and answers the other with no broker thread in between: a call costs one wake-up
// each way (none when the other side is still spinning), where ZeroMQ would add its
// I/O thread on both ends.
//
// Frame: u32 header length, u32 payload length (little-endian), header, payload.
#ifndef MPX_FRAMEWORK_ACTOR_STREAM_H_
#define MPX_FRAMEWORK_ACTOR_STREAM_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "framework/wire/wire.h"

namespace mpx {
namespace actor {

constexpr std::size_t kFramePrefix = 8;
// Larger payloads are refused on both ends (the reader drops the connection).
constexpr std::size_t kMaxPayload = std::size_t{1} << 30;

// An abstract unix socket address ("@name" or "ipc://@name" as transport names them).
// listen_on returns a non-blocking listening socket, or -1 with errno set.
int listen_on(const std::string& endpoint);
// A blocking connected socket, or -1 with errno set (ECONNREFUSED: nobody listens).
int connect_to(const std::string& endpoint);
// The uid of the peer process (SO_PEERCRED), or -1.
long peer_uid(int fd);

// Writes one whole frame, waiting (poll) when the socket is full. false when the peer
// is gone (EPIPE, ECONNRESET) or the socket failed.
bool write_frame(int fd, const wire::Header& header, std::string_view payload);
// Encodes a frame for a later, non-blocking write.
void append_frame(std::string& out, const wire::Header& header, std::string_view payload);

// Accumulates bytes read from a socket and cuts them into frames. The header and
// payload views returned by next() stay valid until the next fill().
class FrameReader {
 public:
  enum class Fill { kData, kNothing, kClosed };
  // Reads what the socket has without blocking.
  Fill fill(int fd);
  // The next complete frame, if any. On a malformed frame returns false and sets *bad
  // with *why: the stream cannot be resynchronised, the caller must drop it.
  bool next(wire::Header& header, std::string_view& payload, bool* bad, std::string* why);
  bool empty() const { return start_ == end_; }
  void reset() { start_ = end_ = 0; }

 private:
  std::vector<char> buf_ = std::vector<char>(64 * 1024);
  std::size_t start_ = 0, end_ = 0;
  std::size_t need_ = 0;  // bytes the frame being read needs in total
};

}  // namespace actor
}  // namespace mpx

#endif  // MPX_FRAMEWORK_ACTOR_STREAM_H_
