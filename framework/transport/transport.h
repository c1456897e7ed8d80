// Transport: messages over unix stream sockets, the one layer that touches them.
//
// Every message is a frame: u32 header length, u32 payload length (little-endian), the
// wire header (framework/wire), the payload. A Connection owns one stream: its socket,
// the bytes read and not yet handled (Reader), the frames queued and not yet written
// (Writer), and the identity the peer announced in its preamble (a pool's router routes
// on those names; a worker's is unguessable, handed to it at spawn). A Listener accepts
// only peers of its own uid (SO_PEERCRED). Endpoints are typed (endpoint.h); the Loop
// that waits on connections, and the leader/follower result Pump, are in loop.h.
//
// Why not ZeroMQ (which mpx used first) within a host: every ZeroMQ hop passes through
// an I/O thread on both sides, so a message costs three thread hand-offs and its
// receiver can never be found awake; on the 2-core machine a two-process ping-pong
// measured 105-115 us over ZeroMQ ipc and 44-58 us over a unix stream, and a pool task's
// four hops 216-305 us against 33 us for the same relay over streams (BENCHMARKS.md). A
// write to a unix stream also lands in the receiver's kernel buffer before it returns,
// so what a worker sent before dying is still read after its death: nothing is lost in
// an I/O thread. (Between hosts ZeroMQ is the plan: DESIGN.md.)
//
// "Would block", "nothing yet" and "peer gone" are ordinary outcomes (statuses), never
// exceptions.
#ifndef MPX_FRAMEWORK_TRANSPORT_TRANSPORT_H_
#define MPX_FRAMEWORK_TRANSPORT_TRANSPORT_H_

#include <sys/socket.h>

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

#include "framework/transport/endpoint.h"
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
  // A Reader hands out large frames as slices of its own buffer (Reader::share_).
  friend class Reader;
  // A block with one reference that frees `adopted` with itself.
  static Block* new_block(void* adopted);
  // The last holder of block frees it (and what it adopted).
  static void drop(Block* block) noexcept;
  void release() noexcept;
  Block* block_ = nullptr;
  char* data_ = nullptr;
  std::size_t size_ = 0;
};

// The encoded header, as a frame.
Message header_message(const wire::Header& header);

// Descriptors that travel with a frame (SCM_RIGHTS): a worker's result objects, which
// must outlive the worker that made them (mpx/object.h). The sender attaches them to
// the frame's first sendmsg and counts them in the header (wire::Header::fds), up to
// wire::kMaxFds; more go ahead in DESCRIPTORS frames (wire::kMaxFrameFds). The kernel
// holds them in flight, so they survive the sender's death like the bytes do, and the
// receiver takes as many as the headers count, in order. Owns them: closes what was
// not released.
class Fds {
 public:
  Fds() = default;
  ~Fds() { reset(); }
  Fds(Fds&& other) noexcept : fds_(std::move(other.fds_)) { other.fds_.clear(); }
  Fds& operator=(Fds&& other) noexcept {
    if (this != &other) {
      reset();
      fds_ = std::move(other.fds_);
      other.fds_.clear();
    }
    return *this;
  }
  Fds(const Fds&) = delete;
  Fds& operator=(const Fds&) = delete;
  // Takes ownership of fd.
  void push(int fd) { fds_.push_back(fd); }
  const std::vector<int>& get() const { return fds_; }
  // A taker may set an entry to -1 (AttachedObjects adopts what it maps).
  std::vector<int>& get() { return fds_; }
  std::size_t size() const { return fds_.size(); }
  bool empty() const { return fds_.empty(); }
  // Closes them all.
  void reset() noexcept;

 private:
  std::vector<int> fds_;
};

// One received message. header views into header_frame.
struct Incoming {
  std::string from;  // the sending connection's identity (the router's side)
  Message header_frame;
  Message payload;
  wire::Header header;
  // What came with it, and ahead of it in DESCRIPTORS frames: fds_expected of them,
  // fewer if the kernel dropped some.
  Fds fds;
  std::size_t fds_expected = 0;
  std::string_view sender() const { return from; }
};

// Cuts the bytes read from a socket into frames.
class Reader {
 public:
  enum class Fill { kData, kNothing, kClosed };
  explicit Reader(std::size_t max_payload = kMaxPayload) : max_payload_(max_payload) {}
  ~Reader();
  Reader(Reader&& other) noexcept;
  Reader& operator=(Reader&& other) noexcept;
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
  // The next complete frame, as views valid until the next fill() or next(). The
  // descriptors it came with are in frame_fds() until the next next().
  Next next(wire::Header& header, std::string_view& header_bytes, std::string_view& payload,
            std::string* why);
  // The descriptors of the frame next() returned last, in the order sent: those that
  // came ahead of it in DESCRIPTORS frames, then its own (header.fds); fewer than
  // frame_fds_expected() when the kernel dropped some, as at this process's
  // RLIMIT_NOFILE.
  Fds& frame_fds() { return frame_fds_; }
  std::size_t frame_fds_expected() const { return frame_fds_expected_; }
  // Descriptors received that no frame has claimed yet (tests and diagnostics).
  std::size_t unclaimed_fds() const;
  // Descriptors the kernel dropped because this process could not take them (at its
  // RLIMIT_NOFILE, MSG_CTRUNC), since the reader was made.
  std::size_t dropped_fds() const { return dropped_fds_; }
  // The same, into in, which owns its bytes: a large payload (kSliceFrom bytes or
  // more, and a quarter of the buffer or more) and its header are slices of this
  // reader's buffer (no copy), which then stays theirs; other frames are copied.
  Next next(Incoming& in, std::string* why);
  static constexpr std::size_t kSliceFrom = 16 * 1024;
  // After fill() threw std::bad_alloc (a frame larger than this process can hold, as
  // under a memory limit): reads the rest of that frame from fd and drops it, waiting
  // for its bytes as they come, so that the stream stays in step. Returns its header
  // and the size of the payload that was dropped; nullopt (the stream is then unusable)
  // when the peer closed first or the header does not decode (*why says why).
  std::optional<std::pair<std::string, std::size_t>> discard_frame(int fd, std::string* why);
  bool empty() const { return start_ == end_; }
  // Whether a whole frame is buffered (next() would not answer kNone).
  bool frame_ready() const;
  // Takes bytes as if read from the socket (frames kept elsewhere, such as a dead
  // worker's unsent results).
  void put(std::string_view bytes);
  // Bytes of buffer held now (for tests and diagnostics).
  std::size_t capacity() const { return cap_; }
  void reset() {
    if (!own_buffer()) forget_buffer();
    start_ = end_ = 0;
    drop_fds();
  }

 private:
  // Whether buf_ is this reader's alone (no slice of it lives): only then may bytes
  // before end_ be moved, overwritten or freed. A shared buffer that no slice holds any
  // more becomes the reader's alone again.
  bool own_buffer() noexcept;
  // Leaves a shared buffer to its slices (the last one frees it); no buffer after.
  void forget_buffer() noexcept;
  // Frees the buffer, or leaves it to its slices if any lives; no buffer after.
  void release_buffer() noexcept;
  void drop_fds() noexcept;
  void take_fds(msghdr& msg);
  // next() without taking DESCRIPTORS frames in.
  Next next_frame(wire::Header& header, std::string_view& header_bytes, std::string_view& payload,
                  std::string* why);
  // The buffer grows only when full, by doubling, never beyond the frame being read
  // (as far as its prefix says), so memory follows the bytes that really arrived, not
  // a length a peer announced; it shrinks back once a large frame is gone.
  void grow();
  std::size_t max_payload_;
  char* buf_ = nullptr;  // malloc'd: no zero-filling of large frames
  std::size_t cap_ = 0;
  std::size_t start_ = 0, end_ = 0;
  std::size_t need_ = 0;  // bytes the frame being read needs in total
  // Set while slices of buf_ may live (next(Incoming&)): the block that frees buf_
  // once the reader and every slice let go of it.
  Message::Block* share_ = nullptr;
  static constexpr std::size_t kMaxUnclaimedGroups = 64;
  // Descriptors received and not yet handed to their frame, one group per recvmsg. A
  // sender puts one frame's descriptors on one sendmsg, the kernel attaches them to
  // its first bytes and a recvmsg returns at most one such group (it stops reading
  // after it): so a frame, once whole, finds its own group first in this queue, even
  // when the kernel dropped some of them.
  std::deque<Fds> unclaimed_;
  Fds frame_fds_;
  std::size_t frame_fds_expected_ = 0;
  // What DESCRIPTORS frames brought for the frame after them, and what they announced.
  Fds carried_;
  std::size_t carried_expected_ = 0;
  std::size_t dropped_fds_ = 0;
};

// Writes one whole frame on fd, waiting while the socket is full; false when the peer
// is gone (EPIPE, ECONNRESET) or the socket failed. What Connection::send does, for
// code that keeps its own descriptor (mpx::Connection's ends). fds (up to
// wire::kMaxFrameFds) go with the frame: header.fds of them when they are kMaxFds or
// fewer, else the last wire::own_fds() of them, counted in the header here, and the
// others ahead in DESCRIPTORS frames. The caller may close its own once this returned.
bool write_frame(int fd, const wire::Header& header, std::string_view payload,
                 const std::vector<int>& fds = {});
// Encodes a frame into out (for a later write).
void append_frame(std::string& out, const wire::Header& header, std::string_view payload);
// The same with header bytes as they are (tests and tools that send foreign headers).
void append_frame(std::string& out, std::string_view header_bytes, std::string_view payload);
// Frames queued for a non-blocking socket, written as far as it takes them: a router
// never waits for a slow peer.
class Writer {
 public:
  // kBlocked: the kernel refused a frame's descriptors for now (ETOOMANYREFS: this
  // user's descriptors in flight, sent and not yet received by anyone, passed the
  // sender's RLIMIT_NOFILE); the socket may well be writable, so try again a little
  // later rather than when it polls writable.
  enum class Status { kDone, kPending, kBlocked, kGone };
  void push(const wire::Header& header, Message payload);
  // fds: sent with the frame and closed once sent; the header counts the last
  // wire::own_fds() of them, the others go ahead in DESCRIPTORS frames.
  void push(Message header_frame, Message payload, Fds fds = {});
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
    Fds fds;               // still to send: emptied by the sendmsg that carried them
    std::size_t size() const { return kFramePrefix + header.size() + payload.size(); }
  };
  std::deque<Entry> queue_;
  std::size_t bytes_ = 0;
};

// Rewrites the type byte of an encoded header in place (fixed layout, see wire.cc).
void set_type(Message& header_frame, wire::Type type);

// One stream to one peer. Not thread-safe: its owner serialises use (a router's loop,
// a pool's send lock and pump, a worker's only thread). Movable; closes its socket.
class Connection {
 public:
  Connection() = default;
  // Adopts fd, a connected stream socket.
  explicit Connection(int fd, std::size_t max_payload = kMaxPayload) : fd_(fd), reader_(max_payload) {}
  ~Connection() { close(); }
  Connection(Connection&& other) noexcept;
  Connection& operator=(Connection&& other) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Connects to a unix-abstract endpoint, announcing identity first unless it is empty.
  // On failure the Connection is invalid (!conn) and errno says why: ECONNREFUSED
  // (nobody listens), ENAMETOOLONG (identity over kMaxIdentity), EPROTONOSUPPORT (ipc://
  // and tcp:// endpoints are not served yet), or the socket call's own error.
  static Connection dial(const Endpoint& to, std::string_view identity = {});

  explicit operator bool() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  // The identity the peer announced (read_identity) or this side announced (dial).
  const std::string& identity() const { return identity_; }
  // The uid of the peer process (SO_PEERCRED), or -1.
  long peer_uid() const;
  void close();

  // ---- Reading (see Reader)
  Reader::Fill fill() { return reader_.fill(fd_); }
  // The peer's identity preamble: true once it is read (identity() has it), false while
  // it is incomplete; on a malformed one sets *bad and *why.
  bool read_identity(bool* bad, std::string* why);
  Reader::Next next(wire::Header& header, std::string_view& header_bytes, std::string_view& payload,
                    std::string* why) {
    return reader_.next(header, header_bytes, payload, why);
  }
  Reader::Next next(Incoming& in, std::string* why) { return reader_.next(in, why); }
  std::optional<std::pair<std::string, std::size_t>> discard_frame(std::string* why) {
    return reader_.discard_frame(fd_, why);
  }
  Reader& reader() { return reader_; }

  // ---- Writing now: whole frames, waiting while the socket is full (until deadline,
  // for send_bytes: then false, possibly after a part was written). false when the peer
  // is gone (EPIPE, ECONNRESET) or the socket failed.
  bool send(const wire::Header& header, std::string_view payload,
            const std::vector<int>& fds = {});
  bool send_bytes(std::string_view frames, std::chrono::steady_clock::time_point deadline =
                                               std::chrono::steady_clock::time_point::max());

  // What the socket takes of bytes (whole frames, append_frame) now, without waiting:
  // how many it took; *gone once the peer is gone (EPIPE) or the socket failed.
  std::size_t send_some(std::string_view bytes, bool* gone);

  // ---- Writing when the socket takes it: frames queued, written by flush() as far as
  // the socket takes them without waiting (a router never waits for a slow peer).
  void queue(Message header_frame, Message payload, Fds fds = {}) {
    writer_.push(std::move(header_frame), std::move(payload), std::move(fds));
  }
  void queue(const wire::Header& header, Message payload) { writer_.push(header, std::move(payload)); }
  Writer::Status flush() { return writer_.flush(fd_); }
  bool pending() const { return writer_.pending(); }
  std::size_t pending_bytes() const { return writer_.pending_bytes(); }
  void discard_pending() { writer_.discard(); }

 private:
  int fd_ = -1;
  std::string identity_;
  Reader reader_;
  Writer writer_;
};

// A listening unix-abstract socket, non-blocking.
class Listener {
 public:
  Listener() = default;
  ~Listener();
  Listener(Listener&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Listener& operator=(Listener&& other) noexcept;
  // Binds and listens; invalid (!listener) with errno set on failure (EADDRINUSE,
  // EPROTONOSUPPORT for the schemes not served yet, ...).
  static Listener bind(const Endpoint& at);
  explicit operator bool() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  enum class Accept {
    kAccepted,  // *out is the new connection
    kNone,      // nobody is waiting
    kForeign,   // a peer of another uid (*peer_uid): its connection was closed
    kFailed,    // accept failed; errno says why (EMFILE, ENFILE, ENOBUFS, ENOMEM, ...)
  };
  // Accepts one waiting peer without blocking: only peers of this process's uid.
  Accept accept(Connection* out, long* peer_uid, std::size_t max_payload = kMaxPayload);

 private:
  int fd_ = -1;
};

}  // namespace transport
}  // namespace mpx

#endif  // MPX_FRAMEWORK_TRANSPORT_TRANSPORT_H_
