#include "framework/actor/stream.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mpx {
namespace actor {
namespace {

socklen_t make_address(const std::string& endpoint, sockaddr_un& addr) {
  std::string_view name = endpoint;
  if (name.rfind("ipc://", 0) == 0) name.remove_prefix(6);
  if (!name.empty() && name[0] == '@') name.remove_prefix(1);
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  // Abstract namespace: a leading NUL, nothing on disk to clean up.
  const std::size_t n = std::min(name.size(), sizeof addr.sun_path - 1);
  std::memcpy(addr.sun_path + 1, name.data(), n);
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
}

void put_u32(char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
std::uint32_t get_u32(const char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

}  // namespace

int listen_on(const std::string& endpoint) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr;
  const socklen_t len = make_address(endpoint, addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd, 512) != 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

int connect_to(const std::string& endpoint) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr;
  const socklen_t len = make_address(endpoint, addr);
  int r;
  do {
    r = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), len);
  } while (r != 0 && errno == EINTR);
  if (r != 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

long peer_uid(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
  return static_cast<long>(cred.uid);
}

void append_frame(std::string& out, const wire::Header& header, std::string_view payload) {
  char head[kFramePrefix + wire::kMaxHeaderSize];
  const std::size_t hl = wire::encode(header, head + kFramePrefix);
  put_u32(head, static_cast<std::uint32_t>(hl));
  put_u32(head + 4, static_cast<std::uint32_t>(payload.size()));
  out.append(head, kFramePrefix + hl);
  out.append(payload.data(), payload.size());
}

bool write_frame(int fd, const wire::Header& header, std::string_view payload) {
  char head[kFramePrefix + wire::kMaxHeaderSize];
  const std::size_t hl = wire::encode(header, head + kFramePrefix);
  put_u32(head, static_cast<std::uint32_t>(hl));
  put_u32(head + 4, static_cast<std::uint32_t>(payload.size()));
  iovec iov[2] = {{head, kFramePrefix + hl}, {const_cast<char*>(payload.data()), payload.size()}};
  int first = 0;
  while (first < 2) {
    msghdr msg{};
    msg.msg_iov = iov + first;
    msg.msg_iovlen = static_cast<std::size_t>(2 - first);
    const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        pollfd p{fd, POLLOUT, 0};
        ::poll(&p, 1, 100);
        continue;
      }
      return false;
    }
    std::size_t left = static_cast<std::size_t>(n);
    while (first < 2 && left >= iov[first].iov_len) {
      left -= iov[first].iov_len;
      ++first;
    }
    if (first < 2) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return true;
}

FrameReader::Fill FrameReader::fill(int fd) {
  bool any = false;
  for (;;) {
    if (start_ == end_) start_ = end_ = 0;
    // Room for the frame being read (need_) or a good read, whichever is larger.
    const std::size_t want = std::max<std::size_t>(need_, 64 * 1024);
    if (buf_.size() - start_ < want) {
      std::memmove(buf_.data(), buf_.data() + start_, end_ - start_);
      end_ -= start_;
      start_ = 0;
      if (buf_.size() < want) buf_.resize(want);
    }
    if (end_ == buf_.size()) buf_.resize(buf_.size() * 2);
    const ssize_t n = ::recv(fd, buf_.data() + end_, buf_.size() - end_, MSG_DONTWAIT);
    if (n > 0) {
      end_ += static_cast<std::size_t>(n);
      any = true;
      if (end_ < buf_.size()) return Fill::kData;  // drained what was there
      continue;
    }
    if (n == 0) return any ? Fill::kData : Fill::kClosed;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return any ? Fill::kData : Fill::kNothing;
    return any ? Fill::kData : Fill::kClosed;
  }
}

bool FrameReader::next(wire::Header& header, std::string_view& payload, bool* bad, std::string* why) {
  *bad = false;
  const std::size_t have = end_ - start_;
  if (have < kFramePrefix) return false;
  const char* p = buf_.data() + start_;
  const std::uint32_t hl = get_u32(p), pl = get_u32(p + 4);
  if (hl == 0 || hl > wire::kMaxHeaderSize) {
    *bad = true;
    *why = "header length " + std::to_string(hl) + " out of range";
    return false;
  }
  if (pl > kMaxPayload) {
    *bad = true;
    *why = "payload of " + std::to_string(pl) + " bytes is over the limit";
    return false;
  }
  const std::size_t total = kFramePrefix + hl + pl;
  if (have < total) {
    need_ = total;
    return false;
  }
  need_ = 0;
  auto h = wire::decode(p + kFramePrefix, hl, why);
  if (!h) {
    *bad = true;
    return false;
  }
  header = *h;
  payload = std::string_view(p + kFramePrefix + hl, pl);
  start_ += total;
  return true;
}

}  // namespace actor
}  // namespace mpx
