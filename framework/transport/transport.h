// Transport: messages over unix stream sockets, the one layer that touches them.
//
// Every message is a frame: u32 header length, u32 payload length (little-endian), the
// wire header (framework/wire), the payload. A connection starts with an identity
// preamble (connect_as), the peer's name for the listener: a pool's router routes on
// those names (a worker's is unguessable, handed to it at spawn). Listening sockets live
// in Linux's abstract namespace (nothing on disk) and the listener accepts only peers of
// its own uid (SO_PEERCRED, see peer_uid).
//
// Why not ZeroMQ (which mpx used first): every ZeroMQ hop passes through an I/O thread
// on both sides, so a message costs three thread hand-offs and its receiver can never be
// found awake; on the 2-core machine a two-process ping-pong measured 105-115 us over
// ZeroMQ ipc and 44-58 us over a unix stream, and a pool task's four hops 216-305 us
// against 33 us for the same relay over streams (BENCHMARKS.md). A write to a unix
// stream also lands in the receiver's kernel buffer before it returns, so what a worker
// sent before dying is still read after its death: nothing is lost in an I/O thread.
//
// "Would block", "nothing yet" and "peer gone" are ordinary outcomes (statuses), never
// exceptions.
#ifndef MPX_FRAMEWORK_TRANSPORT_TRANSPORT_H_
#define MPX_FRAMEWORK_TRANSPORT_TRANSPORT_H_

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "framework/wire/wire.h"
#include "mpx/detail/codec.h"

namespace mpx {
namespace transport {

// Bytes of a frame's length prefix.
constexpr std::size_t kFramePrefix = 8;
// Largest payload a Reader accepts unless told otherwise.
constexpr std::size_t kMaxPayload = std::size_t{1} << 30;
// Longest identity a connection may announce.
constexpr std::size_t kMaxIdentity = 255;

// The bytes of a message frame: immutable in size, reference-counted, so copies share
// them (the router keeps a retry copy of each chunk without copying its bytes). The
// bytes themselves may be changed in place (set_type).
class Message {
 public:
  Message() = default;
  Message(const Message& other) noexcept : block_(other.block_), data_(other.data_), size_(other.size_) {
    if (block_) block_->refs.fetch_add(1, std::memory_order_relaxed);
  }
  Message(Message&& other) noexcept
      : block_(std::exchange(other.block_, nullptr)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  Message& operator=(Message other) noexcept {
    std::swap(block_, other.block_);
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  ~Message() { release(); }
  // Copies size bytes from data.
  Message(const void* data, std::size_t size);
  // Takes a finished msgpack buffer's storage without copying.
  static Message adopt(detail::Buffer&& buffer);
  // Uninitialised bytes, to be filled through data().
  static Message allocate(std::size_t size);

  template <class T = void>
  T* data() {
    return reinterpret_cast<T*>(data_);
  }
  template <class T = void>
  const T* data() const {
    return reinterpret_cast<const T*>(data_);
  }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::string_view view() const { return {data_, size_}; }

 private:
  // One allocation per message: the count, then the bytes (or, for an adopted buffer,
  // the count and a pointer to the buffer it frees).
  struct Block {
    std::atomic<long> refs{1};
    void* adopted = nullptr;
  };
  void release() noexcept;
  Block* block_ = nullptr;
  char* data_ = nullptr;
  std::size_t size_ = 0;
};

// The encoded header, as a frame.
Message header_message(const wire::Header& header);

// A fresh endpoint name ("ipc://@mpx-<pid>-<n>-<random>-<tag>") in Linux's abstract
// socket namespace: nothing on disk to leak, unique per process, call and chance.
std::string make_endpoint(std::string_view tag);

// A non-blocking listening socket bound to endpoint, or -1 with errno set.
int listen_on(const std::string& endpoint);
// A blocking socket connected to endpoint, or -1 with errno set (ECONNREFUSED: nobody
// listens). connect_as sends identity first: what the listener knows this peer by.
int connect_to(const std::string& endpoint);
int connect_as(const std::string& endpoint, std::string_view identity);
// The uid of the peer process (SO_PEERCRED), or -1.
long peer_uid(int fd);

// One received message. header views into header_frame.
struct Incoming {
  std::string from;  // the sending connection's identity (the router's side)
  Message header_frame;
  Message payload;
  wire::Header header;
  std::string_view sender() const { return from; }
};

// Cuts the bytes read from a socket into frames.
class Reader {
 public:
  enum class Fill { kData, kNothing, kClosed };
  explicit Reader(std::size_t max_payload = kMaxPayload) : max_payload_(max_payload) {}
  ~Reader();
  Reader(Reader&& other) noexcept;
  Reader& operator=(Reader&&) = delete;
  Reader(const Reader&) = delete;
  // Reads what the socket has without blocking: kClosed once the peer closed (or the
  // socket failed) and nothing more was read.
  Fill fill(int fd);
  // The identity preamble a connect_as peer sends before any frame. false while it is
  // incomplete; on a malformed one sets *bad and *why.
  bool identity(std::string* id, bool* bad, std::string* why);
  // What next() found.
  enum class Next {
    kFrame,     // a frame, decoded
    kNone,      // no complete frame yet
    kBadFrame,  // a whole frame whose header did not decode: skipped, *why says why;
                // the stream is still in step
    kBroken,    // lengths out of range: the stream cannot be resynchronised, *why says
                // why; the caller must drop the connection
  };
  // The next complete frame, as views valid until the next fill() or next().
  Next next(wire::Header& header, std::string_view& header_bytes, std::string_view& payload,
            std::string* why);
  // The same, copied into in (from is left as it is).
  Next next(Incoming& in, std::string* why);
  // After fill() threw std::bad_alloc (a frame larger than this process can hold, as
  // under a memory limit): reads the rest of that frame from fd and drops it, waiting
  // for its bytes as they come, so that the stream stays in step. Returns its header
  // and the size of the payload that was dropped; nullopt (the stream is then unusable)
  // when the peer closed first or the header does not decode (*why says why).
  std::optional<std::pair<std::string, std::size_t>> discard_frame(int fd, std::string* why);
  bool empty() const { return start_ == end_; }
  // Bytes of buffer held now (for tests and diagnostics).
  std::size_t capacity() const { return cap_; }
  void reset() { start_ = end_ = 0; }

 private:
  // The buffer grows only when full, by doubling, never beyond the frame being read
  // (as far as its prefix says), so memory follows the bytes that really arrived, not
  // a length a peer announced; it shrinks back once a large frame is gone.
  void grow();
  std::size_t max_payload_;
  char* buf_ = nullptr;  // malloc'd: no zero-filling of large frames
  std::size_t cap_ = 0;
  std::size_t start_ = 0, end_ = 0;
  std::size_t need_ = 0;  // bytes the frame being read needs in total
};

// Writes one whole frame on a blocking or non-blocking socket, waiting while it is
// full. false when the peer is gone (EPIPE, ECONNRESET) or the socket failed.
bool write_frame(int fd, const wire::Header& header, std::string_view payload);
bool write_frame(int fd, std::string_view header_bytes, std::string_view payload);
// Encodes a frame into out (for a later write).
void append_frame(std::string& out, const wire::Header& header, std::string_view payload);
// Writes bytes that hold whole frames (append_frame), waiting while the socket is full
// (until deadline, if given: then false, possibly after a part was written).
bool write_frame_bytes(int fd, std::string_view frames,
                       std::chrono::steady_clock::time_point deadline =
                           std::chrono::steady_clock::time_point::max());

// Frames queued for a non-blocking socket, written as far as it takes them: a router
// never waits for a slow peer.
class Writer {
 public:
  enum class Status { kDone, kPending, kGone };
  void push(const wire::Header& header, Message payload);
  void push(Message header_frame, Message payload);
  // Writes what the socket takes now.
  Status flush(int fd);
  bool pending() const { return !queue_.empty(); }
  std::size_t pending_bytes() const { return bytes_; }
  // Drops what is queued (for a peer that is gone).
  void discard() {
    queue_.clear();
    bytes_ = 0;
  }

 private:
  struct Entry {
    char prefix[kFramePrefix];
    Message header;
    Message payload;
    std::size_t done = 0;  // bytes of this frame already written
    std::size_t size() const { return kFramePrefix + header.size() + payload.size(); }
  };
  std::deque<Entry> queue_;
  std::size_t bytes_ = 0;
};

// Rewrites the type byte of an encoded header in place (fixed layout, see wire.cc).
void set_type(Message& header_frame, wire::Type type);

// poll that resumes after signal handlers (EINTR) with the time that is left, as
// Python does since PEP 475; a negative timeout waits forever. Returns the number of
// ready descriptors (0 on timeout); throws mpx::Error on a real failure.
int poll(pollfd* fds, std::size_t count, std::chrono::milliseconds timeout);
// How long a waiter checks for its message awake before it sleeps. Spinning pays when
// messages follow each other within microseconds (a call's reply, a map's next chunk):
// on a virtual machine a cross-CPU wake-up costs ~20 us, several times the message. It
// costs when they do not: the CPU it takes is the workers'. So the budget follows what
// spinning achieved lately: doubled (up to 100 us) when the message came while
// spinning, halved when it did not, and tried again now and then once it reached 0.
//
// MPX_SPIN=0 in the environment turns spinning off (for a machine whose CPUs are all
// busy with other work, where every spin is stolen from it).
class Spin {
 public:
  Spin() : budget_(enabled() ? std::chrono::microseconds(50) : std::chrono::microseconds(0)) {}
  std::chrono::microseconds budget() const { return budget_; }
  void update(bool caught) {
    if (!enabled()) return;
    if (caught) {
      budget_ = std::min(std::max(budget_ * 2, std::chrono::microseconds(10)), kMax);
    } else if (budget_.count() > 0) {
      budget_ /= 2;
      if (budget_ < std::chrono::microseconds(4)) budget_ = std::chrono::microseconds(0);
    } else if (++idle_ % 64 == 0) {
      budget_ = std::chrono::microseconds(20);
    }
  }

 private:
  static bool enabled();
  static constexpr std::chrono::microseconds kMax{100};
  std::chrono::microseconds budget_;
  unsigned idle_ = 0;
};

// poll that first checks for up to spin.budget() without sleeping (yielding the CPU
// between checks to whatever else is runnable), then sleeps for the rest of timeout;
// tells spin whether spinning caught what came.
int poll_spinning(pollfd* fds, std::size_t count, std::chrono::milliseconds timeout, Spin& spin);

}  // namespace transport
}  // namespace mpx

#endif  // MPX_FRAMEWORK_TRANSPORT_TRANSPORT_H_
