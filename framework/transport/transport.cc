#include "framework/transport/transport.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "mpx/errors.h"

namespace mpx {
namespace transport {
namespace {

// Identity preamble: this magic, one length byte, the identity.
constexpr char kIdentityMagic[4] = {'m', 'p', 'x', '1'};
constexpr std::size_t kIdentityPrefix = sizeof kIdentityMagic + 1;

// Only unix-abstract endpoints are served; EPROTONOSUPPORT for the others.
bool make_address(const Endpoint& endpoint, sockaddr_un& addr, socklen_t* len) {
  if (endpoint.scheme() != Endpoint::Scheme::kUnixAbstract) {
    errno = EPROTONOSUPPORT;
    return false;
  }
  const std::string_view name = endpoint.name();  // Endpoint checked its length
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  // Abstract namespace: a leading NUL, nothing on disk to clean up.
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return true;
}

void put_u32(char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
std::uint32_t get_u32(const char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

// Writes iov fully, waiting while the socket is full, until deadline.
// Puts fds into msg's control buffer (control: CMSG_SPACE(kMaxFds ints)).
void attach_fds(msghdr& msg, char* control, const std::vector<int>& fds) {
  if (fds.empty()) return;
  if (fds.size() > wire::kMaxFds) {  // a caller bug: the control buffer holds kMaxFds
    std::fprintf(stderr, "mpx: transport: %zu descriptors for one frame, more than %u\n", fds.size(),
                 static_cast<unsigned>(wire::kMaxFds));
    std::abort();
  }
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
}

// Writes iov fully, waiting while the socket is full, until deadline. fds go with the
// first bytes written.
bool write_all(int fd, iovec* iov, int count,
               std::chrono::steady_clock::time_point deadline =
                   std::chrono::steady_clock::time_point::max(),
               const std::vector<int>& fds = {}) {
  int first = 0;
  bool fds_sent = fds.empty();
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * wire::kMaxFds)];
  while (first < count) {
    msghdr msg{};
    msg.msg_iov = iov + first;
    msg.msg_iovlen = static_cast<std::size_t>(count - first);
    if (!fds_sent) attach_fds(msg, control, fds);
    const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) fds_sent = true;
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ETOOMANYREFS && !fds_sent) {
        // Too many of this user's descriptors in flight (see Writer::Status::kBlocked):
        // they leave flight as receivers read, as a full socket empties.
        if (std::chrono::steady_clock::now() >= deadline) return false;
        ::poll(nullptr, 0, 1);
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= deadline) return false;
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
        pollfd p{fd, POLLOUT, 0};
        ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 100)));
        continue;
      }
      return false;
    }
    std::size_t left = static_cast<std::size_t>(n);
    while (first < count && left >= iov[first].iov_len) {
      left -= iov[first].iov_len;
      ++first;
    }
    if (first < count) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return true;
}

// The header of a DESCRIPTORS frame: kMaxFds for the frame that follows.
wire::Header descriptors_header() {
  wire::Header h;
  h.type = wire::Type::kDescriptors;
  h.fds = wire::kMaxFds;
  return h;
}

// Our own encoding of a header (the layout set_type relies on): [0x98 or 0x99][0xcc v][0xcc t]...
bool has_our_layout(const char* b, std::size_t n) {
  const auto* u = reinterpret_cast<const unsigned char*>(b);
  return n >= 5 && (u[0] == 0x98 || u[0] == 0x99) && u[1] == 0xcc && u[3] == 0xcc;
}

}  // namespace

// ---- Message --------------------------------------------------------------------------

Message::Message(const void* data, std::size_t size) {
  if (size == 0) return;
  *this = allocate(size);
  std::memcpy(data_, data, size);
}

Message Message::allocate(std::size_t size) {
  Message m;
  if (size == 0) return m;
  void* raw = std::malloc(sizeof(Block) + size);
  if (raw == nullptr) throw std::bad_alloc();
  m.block_ = new (raw) Block();
  m.data_ = reinterpret_cast<char*>(m.block_ + 1);
  m.size_ = size;
  return m;
}

Message Message::adopt(detail::Buffer&& buffer) {
  Message m;
  const std::size_t size = buffer.size();
  char* data = buffer.release();
  if (data == nullptr) return m;
  try {
    m.block_ = new_block(data);
  } catch (const std::bad_alloc&) {
    std::free(data);
    throw;
  }
  m.data_ = data;
  m.size_ = size;
  return m;
}

Message::Block* Message::new_block(void* adopted) {
  void* raw = std::malloc(sizeof(Block));
  if (raw == nullptr) throw std::bad_alloc();
  Block* block = new (raw) Block();
  block->adopted = adopted;
  return block;
}

void Message::drop(Block* block) noexcept {
  if (block->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::free(block->adopted);
    block->~Block();
    std::free(block);
  }
}

void Message::release() noexcept {
  if (block_ == nullptr) return;
  drop(block_);
  block_ = nullptr;
}


Message header_message(const wire::Header& header) {
  char buf[wire::kMaxHeaderSize];
  const std::size_t n = wire::encode(header, buf);
  return Message(buf, n);
}

void set_type(Message& header_frame, wire::Type type) {
  // Layout: [0x98][0xcc version][0xcc type]...: the type byte is at offset 4.
  header_frame.data<std::uint8_t>()[4] = static_cast<std::uint8_t>(type);
}

// ---- Reading --------------------------------------------------------------------------

constexpr std::size_t kReadChunk = 64 * 1024;

Reader::~Reader() {
  release_buffer();
  drop_fds();
}

bool Reader::own_buffer() noexcept {
  if (share_ == nullptr) return true;
  // 1: the reader's own reference, and no slice left to copy it from.
  if (share_->refs.load(std::memory_order_acquire) != 1) return false;
  share_->~Block();
  std::free(share_);
  share_ = nullptr;
  return true;
}

void Reader::forget_buffer() noexcept {
  Message::drop(share_);
  share_ = nullptr;
  buf_ = nullptr;
  cap_ = 0;
}

void Reader::release_buffer() noexcept {
  if (own_buffer()) {
    std::free(buf_);
    buf_ = nullptr;
    cap_ = 0;
  } else {
    forget_buffer();
  }
}

Reader::Reader(Reader&& other) noexcept
    : max_payload_(other.max_payload_),
      buf_(std::exchange(other.buf_, nullptr)),
      cap_(std::exchange(other.cap_, 0)),
      start_(std::exchange(other.start_, 0)),
      end_(std::exchange(other.end_, 0)),
      need_(std::exchange(other.need_, 0)),
      share_(std::exchange(other.share_, nullptr)),
      unclaimed_(std::move(other.unclaimed_)),
      frame_fds_(std::move(other.frame_fds_)),
      frame_fds_expected_(std::exchange(other.frame_fds_expected_, 0)),
      carried_(std::move(other.carried_)),
      carried_expected_(std::exchange(other.carried_expected_, 0)),
      dropped_fds_(other.dropped_fds_) {
  other.unclaimed_.clear();
}

Reader& Reader::operator=(Reader&& other) noexcept {
  if (this != &other) {
    release_buffer();
    drop_fds();
    max_payload_ = other.max_payload_;
    buf_ = std::exchange(other.buf_, nullptr);
    cap_ = std::exchange(other.cap_, 0);
    start_ = std::exchange(other.start_, 0);
    end_ = std::exchange(other.end_, 0);
    need_ = std::exchange(other.need_, 0);
    share_ = std::exchange(other.share_, nullptr);
    unclaimed_ = std::move(other.unclaimed_);
    other.unclaimed_.clear();
    frame_fds_ = std::move(other.frame_fds_);
    frame_fds_expected_ = std::exchange(other.frame_fds_expected_, 0);
    carried_ = std::move(other.carried_);
    carried_expected_ = std::exchange(other.carried_expected_, 0);
    dropped_fds_ = other.dropped_fds_;
  }
  return *this;
}

void Reader::take_fds(msghdr& msg) {
  Fds group;
  bool rights = (msg.msg_flags & MSG_CTRUNC) != 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    rights = true;
    const std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      group.push(fd);
    }
  }
  if (!rights) return;
  if (msg.msg_flags & MSG_CTRUNC) ++dropped_fds_;  // how many is unknown: at least one
  // A group is queued even when the kernel dropped all of it, so that later frames
  // still find their own. A peer that sends descriptors no frame claims cannot make
  // this process hold them without bound.
  if (unclaimed_.size() < kMaxUnclaimedGroups) unclaimed_.push_back(std::move(group));
}

std::size_t Reader::unclaimed_fds() const {
  std::size_t n = 0;
  for (const Fds& group : unclaimed_) n += group.size();
  return n;
}

void Reader::drop_fds() noexcept {
  unclaimed_.clear();
  frame_fds_.reset();
  carried_.reset();
  carried_expected_ = 0;
}

void Fds::reset() noexcept {
  for (int fd : fds_) {
    if (fd >= 0) ::close(fd);
  }
  fds_.clear();
}

void Reader::grow() {
  if (!own_buffer()) {
    // Slices hold the bytes before start_: what is left (the start of a frame) moves
    // to a buffer of its own, sized as this one would have grown.
    const std::size_t left = end_ - start_;
    std::size_t cap = std::max(kReadChunk, left * 2);
    if (need_ > left) cap = std::min(cap, std::max(need_, kReadChunk));
    char* fresh = static_cast<char*>(std::malloc(cap));
    if (fresh == nullptr) throw std::bad_alloc();
    std::memcpy(fresh, buf_ + start_, left);
    forget_buffer();
    buf_ = fresh;
    cap_ = cap;
    start_ = 0;
    end_ = left;
    if (end_ < cap_) return;
  }
  if (start_ > 0) {  // room at the front first (a move of bytes onto themselves still copies)
    std::memmove(buf_, buf_ + start_, end_ - start_);
    end_ -= start_;
    start_ = 0;
    if (end_ < cap_) return;
  }
  std::size_t cap = cap_ == 0 ? kReadChunk : cap_ * 2;
  if (need_ > cap_) cap = std::min(cap, need_);
  char* grown = static_cast<char*>(std::realloc(buf_, cap));
  if (grown == nullptr) throw std::bad_alloc();
  buf_ = grown;
  cap_ = cap;
}

Reader::Fill Reader::fill(int fd) {
  bool any = false;
  // Bounded per call (a frame larger than that is read whole): a reader that handles
  // what it read before reading on passes work on while more arrives.
  const std::size_t budget = std::max<std::size_t>(need_, std::size_t{1} << 20);
  std::size_t taken = 0;
  for (;;) {
    // A shared buffer is read on past end_ until it is full (grow() then leaves it).
    if (start_ == end_ && own_buffer()) {
      start_ = end_ = 0;
      if (cap_ > (std::size_t{1} << 20)) {  // a large frame is gone: give its memory back
        std::free(buf_);
        buf_ = nullptr;
        cap_ = 0;
      }
    }
    if (taken >= budget || (need_ > 0 && end_ - start_ >= need_)) return Fill::kData;
    if (end_ == cap_) grow();
    // recvmsg, never recv: descriptors sent with a frame would be closed by a read
    // that has no room for them.
    iovec iov{buf_ + end_, cap_ - end_};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * wire::kMaxFds)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n >= 0 && (msg.msg_controllen > 0 || (msg.msg_flags & MSG_CTRUNC))) take_fds(msg);
    if (n > 0) {
      end_ += static_cast<std::size_t>(n);
      taken += static_cast<std::size_t>(n);
      any = true;
      if (end_ < cap_) return Fill::kData;  // drained what was there
      continue;
    }
    if (n == 0) return any ? Fill::kData : Fill::kClosed;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return any ? Fill::kData : Fill::kNothing;
    return any ? Fill::kData : Fill::kClosed;
  }
}

std::optional<std::pair<std::string, std::size_t>> Reader::discard_frame(int fd,
                                                                       std::string* why) {
  // Only a frame whose prefix was seen can be too large: fill() grows up to need_.
  const std::size_t have = end_ - start_;
  if (need_ == 0 || have < kFramePrefix) {
    *why = "no frame is being read";
    return std::nullopt;
  }
  const std::uint32_t hl = get_u32(buf_ + start_);
  // The buffer holds at least kReadChunk bytes when it failed to grow, and a header is
  // at most kMaxHeaderSize (next() checked it): the header is there.
  if (have < kFramePrefix + hl) {
    *why = "the frame's header is incomplete";
    return std::nullopt;
  }
  std::pair<std::string, std::size_t> out{std::string(buf_ + start_ + kFramePrefix, hl),
                                          need_ - kFramePrefix - hl};
  std::size_t left = need_ - have;
  if (!own_buffer()) forget_buffer();
  start_ = end_ = 0;
  need_ = 0;
  char sink[64 * 1024];
  while (left > 0) {
    const ssize_t n = ::recv(fd, sink, std::min(left, sizeof sink), 0);
    if (n > 0) {
      left -= static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, 1000);
    } else {
      *why = "the peer closed the connection in the middle of the frame";
      return std::nullopt;
    }
  }
  return out;
}

bool Reader::identity(std::string* id, bool* bad, std::string* why) {
  *bad = false;
  const std::size_t have = end_ - start_;
  if (have == 0) return false;
  const char* p = buf_ + start_;
  if (std::memcmp(p, kIdentityMagic, std::min(have, sizeof kIdentityMagic)) != 0) {
    *bad = true;
    *why = "the connection did not start with an identity";
    return false;
  }
  if (have < kIdentityPrefix) return false;
  const std::size_t n = static_cast<unsigned char>(p[sizeof kIdentityMagic]);
  if (n == 0) {
    *bad = true;
    *why = "empty identity";
    return false;
  }
  if (have < kIdentityPrefix + n) return false;
  id->assign(p + kIdentityPrefix, n);
  start_ += kIdentityPrefix + n;
  return true;
}

bool Reader::frame_ready() const {
  const std::size_t have = end_ - start_;
  if (have < kFramePrefix) return false;
  const char* p = buf_ + start_;
  return have >= kFramePrefix + std::size_t{get_u32(p)} + std::size_t{get_u32(p + 4)};
}

void Reader::put(std::string_view bytes) {
  while (cap_ - end_ < bytes.size()) grow();
  std::memcpy(buf_ + end_, bytes.data(), bytes.size());
  end_ += bytes.size();
}

Reader::Next Reader::next(wire::Header& header, std::string_view& header_bytes,
                          std::string_view& payload, std::string* why) {
  for (;;) {
    const Next got = next_frame(header, header_bytes, payload, why);
    if (got == Next::kNone) return got;
    if (got != Next::kFrame) {
      // Whatever they were for, that frame is not returned: neither are they.
      carried_.reset();
      carried_expected_ = 0;
      return got;
    }
    if (header.type != wire::Type::kDescriptors) {
      if (carried_expected_ + header.fds > wire::kMaxFrameFds) {
        *why = "a frame brought more than " + std::to_string(wire::kMaxFrameFds) + " descriptors";
        carried_.reset();
        carried_expected_ = 0;
        frame_fds_.reset();
        return Next::kBroken;
      }
      frame_fds_expected_ = header.fds;
      if (carried_expected_ > 0) {
        for (int& fd : frame_fds_.get()) carried_.push(std::exchange(fd, -1));
        frame_fds_ = std::move(carried_);
        frame_fds_expected_ += carried_expected_;
        carried_expected_ = 0;
      }
      return Next::kFrame;
    }
    // Descriptors for the next frame, kept for it (in the order sent).
    carried_expected_ += header.fds;
    for (int& fd : frame_fds_.get()) carried_.push(std::exchange(fd, -1));
    frame_fds_.reset();
    if (carried_expected_ > wire::kMaxFrameFds) {
      *why = "DESCRIPTORS frames brought more than " + std::to_string(wire::kMaxFrameFds) +
             " descriptors for one frame";
      carried_.reset();
      carried_expected_ = 0;
      return Next::kBroken;
    }
  }
}

Reader::Next Reader::next_frame(wire::Header& header, std::string_view& header_bytes,
                                std::string_view& payload, std::string* why) {
  const std::size_t have = end_ - start_;
  if (have < kFramePrefix) return Next::kNone;
  const char* p = buf_ + start_;
  const std::uint32_t hl = get_u32(p), pl = get_u32(p + 4);
  if (hl == 0 || hl > wire::kMaxHeaderSize) {
    *why = "header length " + std::to_string(hl) + " out of range";
    return Next::kBroken;
  }
  if (pl > max_payload_) {
    *why = "payload of " + std::to_string(pl) + " bytes is over the limit of " +
           std::to_string(max_payload_);
    return Next::kBroken;
  }
  const std::size_t total = kFramePrefix + hl + pl;
  if (have < total) {
    need_ = total;
    return Next::kNone;
  }
  need_ = 0;
  start_ += total;
  auto h = wire::decode(p + kFramePrefix, hl, why);
  if (!h) return Next::kBadFrame;
  if (!frame_fds_.empty()) frame_fds_.reset();  // the last frame's, not taken
  if (h->fds > 0 && !unclaimed_.empty()) {
    frame_fds_ = std::move(unclaimed_.front());
    unclaimed_.pop_front();
  }
  header = *h;
  header_bytes = std::string_view(p + kFramePrefix, hl);
  payload = std::string_view(p + kFramePrefix + hl, pl);
  return Next::kFrame;
}

Reader::Next Reader::next(Incoming& in, std::string* why) {
  wire::Header h;
  std::string_view header_bytes, payload;
  const Next got = next(h, header_bytes, payload, why);
  if (got != Next::kFrame) return got;
  in.fds = std::move(frame_fds_);
  in.fds_expected = frame_fds_expected_;
  // A slice keeps the whole buffer alive (a straggling chunk for as long as it runs):
  // only a frame that fills a quarter of it or more is sliced, so what slices pin is at
  // most four times their own bytes. A large frame grows the buffer to its own size.
  const bool slice = payload.size() >= kSliceFrom && payload.size() * 4 >= cap_;
  // Otherwise the frame is copied into one block of its own (one allocation, not one
  // per part), which its header and payload share as slices do the reader's buffer.
  Message own;
  if (slice && share_ == nullptr) {
    // The reader's reference; the buffer is freed with the block once all let go.
    share_ = Message::new_block(buf_);
  } else if (!slice) {
    own = Message::allocate(header_bytes.size() + payload.size());
    std::memcpy(own.data_, header_bytes.data(), header_bytes.size());
    if (!payload.empty()) std::memcpy(own.data_ + header_bytes.size(), payload.data(), payload.size());
  }
  auto bytes = [&](std::string_view part) {
    Message m;
    if (part.empty()) return m;
    m.block_ = slice ? share_ : own.block_;
    m.block_->refs.fetch_add(1, std::memory_order_relaxed);
    m.data_ = slice ? const_cast<char*>(part.data()) : own.data_ + (part.data() - header_bytes.data());
    m.size_ = part.size();
    return m;
  };
  in.payload = bytes(payload);
  if (has_our_layout(header_bytes.data(), header_bytes.size())) {
    in.header_frame = bytes(header_bytes);
    // The header views into the frame kept, not into the read buffer: same offset.
    in.header = h;
    if (!h.name.empty()) {
      in.header.name = std::string_view(
          in.header_frame.data<char>() + (h.name.data() - header_bytes.data()), h.name.size());
    }
  } else {
    // A foreign but valid encoding: re-encoded, so that set_type stays correct.
    in.header_frame = header_message(h);
    in.header = *wire::decode(in.header_frame.data<char>(), in.header_frame.size(), why);
  }
  return Next::kFrame;
}

// ---- Writing --------------------------------------------------------------------------

void append_frame(std::string& out, std::string_view header_bytes, std::string_view payload) {
  char prefix[kFramePrefix];
  put_u32(prefix, static_cast<std::uint32_t>(header_bytes.size()));
  put_u32(prefix + 4, static_cast<std::uint32_t>(payload.size()));
  out.append(prefix, kFramePrefix);
  out.append(header_bytes.data(), header_bytes.size());
  out.append(payload.data(), payload.size());
}

void append_frame(std::string& out, const wire::Header& header, std::string_view payload) {
  char head[kFramePrefix + wire::kMaxHeaderSize];
  const std::size_t hl = wire::encode(header, head + kFramePrefix);
  put_u32(head, static_cast<std::uint32_t>(hl));
  put_u32(head + 4, static_cast<std::uint32_t>(payload.size()));
  out.append(head, kFramePrefix + hl);
  out.append(payload.data(), payload.size());
}

void Writer::push(const wire::Header& header, Message payload) {
  push(header_message(header), std::move(payload));
}

void Writer::push(Message header_frame, Message payload, Fds fds) {
  // More than one frame's descriptors: all but the last own_fds() go ahead.
  const std::size_t own = wire::own_fds(fds.size());
  if (own < fds.size()) {
    std::vector<int>& all = fds.get();
    for (std::size_t at = 0; at < all.size() - own; at += wire::kMaxFds) {
      Fds group;
      for (std::size_t i = at; i < at + wire::kMaxFds; ++i) group.push(std::exchange(all[i], -1));
      push(header_message(descriptors_header()), Message(), std::move(group));
    }
    all.erase(all.begin(), all.end() - static_cast<std::ptrdiff_t>(own));
  }
  Entry e;
  e.fds = std::move(fds);
  put_u32(e.prefix, static_cast<std::uint32_t>(header_frame.size()));
  put_u32(e.prefix + 4, static_cast<std::uint32_t>(payload.size()));
  e.header = std::move(header_frame);
  e.payload = std::move(payload);
  bytes_ += e.size();
  queue_.push_back(std::move(e));
}

Writer::Status Writer::flush(int fd) {
  constexpr int kMaxFrames = 64;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * wire::kMaxFds)];
  while (!queue_.empty()) {
    iovec iov[3 * kMaxFrames];
    int n = 0;
    Entry* carrier = nullptr;  // the one frame whose descriptors this sendmsg carries
    for (std::size_t k = 0; k < queue_.size() && k < kMaxFrames; ++k) {
      Entry& e = queue_[k];
      // One frame's descriptors per sendmsg; those of a later frame wait for the next.
      if (!e.fds.empty()) {
        if (carrier != nullptr) break;
        carrier = &e;
      }
      const std::pair<const char*, std::size_t> parts[3] = {
          {e.prefix, kFramePrefix}, {e.header.data<char>(), e.header.size()},
          {e.payload.data<char>(), e.payload.size()}};
      std::size_t skip = k == 0 ? e.done : 0;
      for (const auto& [data, size] : parts) {
        if (skip >= size) {
          skip -= size;
          continue;
        }
        iov[n++] = {const_cast<char*>(data) + skip, size - skip};
        skip = 0;
      }
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<std::size_t>(n);
    if (carrier != nullptr) attach_fds(msg, control, carrier->fds.get());
    const ssize_t sent = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::kPending;
      if (errno == ETOOMANYREFS && carrier != nullptr) return Status::kBlocked;
      return Status::kGone;
    }
    // In flight now, with the first bytes, however few of the frame's own went.
    if (carrier != nullptr) carrier->fds.reset();
    std::size_t left = static_cast<std::size_t>(sent);
    bytes_ -= left;
    while (left > 0) {
      Entry& e = queue_.front();
      const std::size_t rest = e.size() - e.done;
      if (left >= rest) {
        left -= rest;
        queue_.pop_front();
      } else {
        e.done += left;
        left = 0;
      }
    }
  }
  return Status::kDone;
}

// ---- Connections ------------------------------------------------------------------------

Connection::Connection(Connection&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      identity_(std::move(other.identity_)),
      reader_(std::move(other.reader_)),
      writer_(std::move(other.writer_)) {}

Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    identity_ = std::move(other.identity_);
    reader_ = std::move(other.reader_);
    writer_ = std::move(other.writer_);
  }
  return *this;
}

void Connection::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  reader_.reset();
  writer_.discard();
}

Connection Connection::dial(const Endpoint& to, std::string_view identity) {
  if (identity.size() > kMaxIdentity) {
    errno = ENAMETOOLONG;
    return Connection();
  }
  sockaddr_un addr;
  socklen_t len;
  if (!make_address(to, addr, &len)) return Connection();
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Connection();
  int r;
  do {
    r = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), len);
  } while (r != 0 && errno == EINTR);
  if (r != 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    return Connection();
  }
  Connection c(fd);
  if (!identity.empty()) {
    char prefix[kIdentityPrefix];
    std::memcpy(prefix, kIdentityMagic, sizeof kIdentityMagic);
    prefix[sizeof kIdentityMagic] = static_cast<char>(identity.size());
    iovec iov[2] = {{prefix, sizeof prefix}, {const_cast<char*>(identity.data()), identity.size()}};
    if (!write_all(fd, iov, 2)) {
      const int e = errno;
      c.close();
      errno = e;
      return Connection();
    }
    c.identity_ = std::string(identity);
  }
  return c;
}

long Connection::peer_uid() const {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd_, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
  return static_cast<long>(cred.uid);
}

bool Connection::read_identity(bool* bad, std::string* why) {
  std::string id;
  if (!reader_.identity(&id, bad, why)) return false;
  identity_ = std::move(id);
  return true;
}

bool Connection::send(const wire::Header& header, std::string_view payload,
                      const std::vector<int>& fds) {
  return fd_ >= 0 && write_frame(fd_, header, payload, fds);
}

bool write_frame(int fd, const wire::Header& header, std::string_view payload,
                 const std::vector<int>& fds) {
  const std::size_t own = wire::own_fds(fds.size());
  for (std::size_t at = 0; at < fds.size() - own; at += wire::kMaxFds) {
    const std::vector<int> group(fds.begin() + static_cast<std::ptrdiff_t>(at),
                                 fds.begin() + static_cast<std::ptrdiff_t>(at + wire::kMaxFds));
    if (!write_frame(fd, descriptors_header(), {}, group)) return false;
  }
  wire::Header h = header;
  if (own < fds.size()) h.fds = static_cast<std::uint8_t>(own);
  char head[kFramePrefix + wire::kMaxHeaderSize];
  const std::size_t hl = wire::encode(h, head + kFramePrefix);
  put_u32(head, static_cast<std::uint32_t>(hl));
  put_u32(head + 4, static_cast<std::uint32_t>(payload.size()));
  iovec iov[2] = {{head, kFramePrefix + hl}, {const_cast<char*>(payload.data()), payload.size()}};
  if (own == fds.size()) return write_all(fd, iov, 2, std::chrono::steady_clock::time_point::max(), fds);
  const std::vector<int> last(fds.end() - static_cast<std::ptrdiff_t>(own), fds.end());
  return write_all(fd, iov, 2, std::chrono::steady_clock::time_point::max(), last);
}

bool Connection::send_bytes(std::string_view frames, std::chrono::steady_clock::time_point deadline) {
  iovec iov{const_cast<char*>(frames.data()), frames.size()};
  return fd_ >= 0 && write_all(fd_, &iov, 1, deadline);
}

std::size_t Connection::send_some(std::string_view bytes, bool* gone) {
  std::size_t done = 0;
  *gone = false;
  while (done < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    *gone = true;
    break;
  }
  return done;
}

// ---- Listeners --------------------------------------------------------------------------

Listener::~Listener() {
  if (fd_ >= 0) ::close(fd_);
}

Listener& Listener::operator=(Listener&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

Listener Listener::bind(const Endpoint& at) {
  Listener l;
  sockaddr_un addr;
  socklen_t len;
  if (!make_address(at, addr, &len)) return l;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return l;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd, 512) != 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    return l;
  }
  l.fd_ = fd;
  return l;
}

Listener::Accept Listener::accept(Connection* out, long* peer_uid, std::size_t max_payload) {
  for (;;) {
    const int fd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? Accept::kNone : Accept::kFailed;
    }
    Connection c(fd, max_payload);
    *peer_uid = c.peer_uid();
    // Same trust boundary everywhere: only this user's processes may talk to us.
    if (*peer_uid != static_cast<long>(getuid())) return Accept::kForeign;
    *out = std::move(c);
    return Accept::kAccepted;
  }
}

}  // namespace transport
}  // namespace mpx
