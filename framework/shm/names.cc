// See names.h.
#include "framework/shm/names.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "mpx/detail/segment.h"
#include "mpx/errors.h"

namespace mpx {
namespace names {
namespace {

struct Sockets {
  int claim = -1, locator = -1;
  ~Sockets() {
    if (claim >= 0) ::close(claim);
    if (locator >= 0) ::close(locator);
  }
};

// "mpx-<space>-<uid>-<96-bit hash of name>": fixed length whatever the name, so that
// the locator's address fits in sun_path.
std::string key(std::string_view space, std::string_view name) {
  const std::uint64_t a = detail::fnv1a(name);
  const std::uint64_t b = detail::fnv1a(std::string(name) + '\x01' + std::string(space));
  char hash[32];
  std::snprintf(hash, sizeof hash, "%016" PRIx64 "%08" PRIx32, a, static_cast<std::uint32_t>(b));
  return "mpx-" + std::string(space) + "-" + std::to_string(getuid()) + "-" + hash;
}

// Binds a datagram socket to the abstract address text; -1 with errno set.
int bind_abstract(const std::string& text) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (text.size() + 1 > sizeof addr.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  std::memcpy(addr.sun_path + 1, text.data(), text.size());
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + text.size());
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    const int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

}  // namespace

std::shared_ptr<const void> claim(std::string_view space, std::string_view name, const Location& where) {
  const std::string k = key(space, name);
  auto sockets = std::make_shared<Sockets>();
  sockets->claim = bind_abstract(k);
  if (sockets->claim < 0) {
    if (errno == EADDRINUSE) return nullptr;
    throw Error("mpx: cannot claim the name '" + std::string(name) + "': " + std::strerror(errno));
  }
  char place[64];
  std::snprintf(place, sizeof place, ":%x:%x:%" PRIx64 ":%" PRIx64, static_cast<unsigned>(where.pid),
                static_cast<unsigned>(where.fd), where.id, where.extra);
  sockets->locator = bind_abstract(k + place);
  if (sockets->locator < 0) {
    throw Error("mpx: cannot publish the name '" + std::string(name) + "': " + std::strerror(errno));
  }
  return sockets;
}

std::optional<Location> find(std::string_view space, std::string_view name) {
  // Lines end with the path; abstract ones start with '@'.
  const std::string prefix = "@" + key(space, name) + ":";
  std::ifstream in("/proc/net/unix");
  std::string line;
  while (std::getline(in, line)) {
    const auto at = line.find(prefix);
    if (at == std::string::npos) continue;
    unsigned pid = 0, fd = 0;
    std::uint64_t id = 0, extra = 0;
    if (std::sscanf(line.c_str() + at + prefix.size(), "%x:%x:%" SCNx64 ":%" SCNx64, &pid, &fd, &id,
                    &extra) == 4) {
      return Location{static_cast<pid_t>(pid), static_cast<int>(fd), id, extra};
    }
  }
  return std::nullopt;
}

}  // namespace names
}  // namespace mpx
