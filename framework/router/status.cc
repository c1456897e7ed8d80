#include "framework/router/status.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "framework/transport/endpoint.h"
#include "framework/transport/transport.h"
#include "mpx/errors.h"

namespace mpx {
namespace router {

std::string status_endpoint_name(pid_t router_pid) {
  // Pids repeat across pid namespaces that share a network namespace (containers,
  // Bazel's sandboxes), and abstract names are per network namespace: the pid
  // namespace's inode makes the name unique. The driver and its router share it.
  static const std::string pid_namespace = [] {
    char link[64] = {0};
    const ssize_t n = ::readlink("/proc/self/ns/pid", link, sizeof link - 1);
    std::string text(link, n > 0 ? static_cast<std::size_t>(n) : 0);  // "pid:[4026531836]"
    const auto open = text.find('['), close = text.find(']');
    return open != std::string::npos && close != std::string::npos ? text.substr(open + 1, close - open - 1)
                                                                    : std::string("0");
  }();
  return "unix://@mpx-" + pid_namespace + "-" + std::to_string(router_pid) + "-status";
}

std::string encode_status(const PoolStatus& s) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, s);
  return std::string(buf.data(), buf.size());
}

PoolStatus decode_status(const std::string& bytes) {
  try {
    msgpack::object_handle oh = msgpack::unpack(bytes.data(), bytes.size());
    return oh.get().as<PoolStatus>();
  } catch (const std::exception& e) {
    throw DecodeError(std::string("pool status: ") + e.what());
  }
}

std::uint64_t rss_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/statm");
  std::uint64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

std::vector<std::string> status_endpoints() {
  std::vector<std::string> out;
  std::ifstream table("/proc/net/unix");
  std::string line;
  std::getline(table, line);  // "Num RefCount Protocol Flags Type St Inode Path"
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string num, refs, protocol, flags, type, st, inode, path;
    if (!(fields >> num >> refs >> protocol >> flags >> type >> st >> inode >> path)) continue;
    const std::string suffix = "-status";
    // Flags 00010000: listening.
    if (flags != "00010000" || path.rfind("@mpx-", 0) != 0 || path.size() < suffix.size() ||
        path.compare(path.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    out.push_back("unix://" + path);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::optional<PoolStatus> query_status(const std::string& endpoint, std::chrono::milliseconds timeout,
                                       std::string* why) {
  std::string ignored;
  if (why == nullptr) why = &ignored;
  std::string error;
  auto parsed = transport::Endpoint::parse(endpoint, &error);
  if (!parsed) {
    *why = error;
    return std::nullopt;
  }
  transport::Connection conn = transport::Connection::dial(*parsed);
  if (!conn) {
    *why = std::strerror(errno);
    return std::nullopt;
  }
  if (conn.peer_uid() != static_cast<long>(::getuid())) {
    *why = "served by uid " + std::to_string(conn.peer_uid()) + ", not this user";
    return std::nullopt;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string bytes;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      *why = "no answer in time";
      return std::nullopt;
    }
    pollfd p{conn.fd(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) {
      *why = std::strerror(errno);
      return std::nullopt;
    }
    char buf[16384];
    const ssize_t n = ::read(conn.fd(), buf, sizeof buf);
    if (n > 0) {
      bytes.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EAGAIN && errno != EINTR) {
      *why = std::strerror(errno);
      return std::nullopt;
    }
  }
  if (bytes.empty()) {
    *why = "closed without an answer (another user's pool, or it is stopping)";
    return std::nullopt;
  }
  try {
    return decode_status(bytes);
  } catch (const DecodeError& e) {
    *why = e.what();
    return std::nullopt;
  }
}

std::vector<PoolStatus> live_pools(std::chrono::milliseconds timeout) {
  std::vector<PoolStatus> pools;
  for (const std::string& endpoint : status_endpoints()) {
    if (auto s = query_status(endpoint, timeout, nullptr)) pools.push_back(std::move(*s));
  }
  std::sort(pools.begin(), pools.end(),
            [](const PoolStatus& a, const PoolStatus& b) { return a.router_pid < b.router_pid; });
  return pools;
}

}  // namespace router
}  // namespace mpx
