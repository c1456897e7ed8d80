#include "framework/router/status.h"

#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <tuple>

#include "framework/transport/endpoint.h"
#include "framework/transport/transport.h"
#include "mpx/errors.h"
#include "mpx/runtime.h"

namespace mpx {
namespace router {

namespace {

// "@mpx-<pid namespace inode>-": what every status socket of this pid namespace's
// processes starts with. Pids repeat across pid namespaces that share a network
// namespace (containers, Bazel's sandboxes), and abstract names are per network
// namespace: the pid namespace's inode makes the name unique. The driver, its router
// and its actors share it.
const std::string& status_prefix() {
  static const std::string prefix = [] {
    char link[64] = {0};
    const ssize_t n = ::readlink("/proc/self/ns/pid", link, sizeof link - 1);
    std::string text(link, n > 0 ? static_cast<std::size_t>(n) : 0);  // "pid:[4026531836]"
    const auto open = text.find('['), close = text.find(']');
    return "@mpx-" + (open != std::string::npos && close != std::string::npos
                          ? text.substr(open + 1, close - open - 1)
                          : std::string("0")) +
           "-";
  }();
  return prefix;
}

}  // namespace

std::string status_endpoint_name(pid_t pid) {
  return "unix://" + status_prefix() + std::to_string(pid) + "-status";
}

namespace {

template <class Status>
std::string encode(const Status& s) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, s);
  return std::string(buf.data(), buf.size());
}

// What a status map says it is: its "kind" ("pool" when absent: routers before actors
// served status said nothing).
std::string kind_of(const msgpack::object& o) {
  if (o.type != msgpack::type::MAP) throw msgpack::type_error();
  for (std::uint32_t i = 0; i < o.via.map.size; ++i) {
    const auto& kv = o.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR && kv.key.as<std::string>() == "kind") return kv.val.as<std::string>();
  }
  return "pool";
}

template <class Status>
Status decode(const std::string& bytes, const char* kind) {
  try {
    msgpack::object_handle oh = msgpack::unpack(bytes.data(), bytes.size());
    const std::string got = kind_of(oh.get());
    if (got != kind) throw DecodeError(std::string(kind) + " status: the answer is of kind '" + got + "'");
    return oh.get().as<Status>();
  } catch (const DecodeError&) {
    throw;
  } catch (const std::exception& e) {
    throw DecodeError(std::string(kind) + " status: " + e.what());
  }
}

}  // namespace

std::string encode_status(const PoolStatus& s) { return encode(s); }
std::string encode_status(const ActorStatus& s) { return encode(s); }
PoolStatus decode_status(const std::string& bytes) { return decode<PoolStatus>(bytes, "pool"); }
ActorStatus decode_actor_status(const std::string& bytes) { return decode<ActorStatus>(bytes, "actor"); }

std::uint64_t rss_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/statm");
  std::uint64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

std::string command_line(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string line;
  std::getline(in, line, '\0');
  for (std::string arg; std::getline(in, arg, '\0');) line += " " + arg;
  return line;
}

StatusListener StatusListener::open(const std::string& what, std::size_t descriptors_needed) {
  if (rlimit nofile{}; ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY &&
      nofile.rlim_cur < descriptors_needed) {
    logger().warn("{}: no status socket (mpx status will not list it): the descriptor limit of {} leaves "
                  "no room for it (it needs {})",
                  what, static_cast<unsigned long long>(nofile.rlim_cur), descriptors_needed);
    return {};
  }
  auto listener = transport::Listener::bind(transport::Endpoint::from(status_endpoint_name(::getpid())));
  if (!listener) {
    logger().warn("{}: no status socket (mpx status will not list it): {}", what, std::strerror(errno));
    return {};
  }
  return StatusListener(std::move(listener));
}

bool StatusListener::answer_waiting(const std::function<std::string()>& snapshot) {
  for (;;) {
    transport::Connection conn;
    long peer = -1;
    const auto got = listener_.accept(&conn, &peer);
    if (got == transport::Listener::Accept::kNone) return true;
    if (got == transport::Listener::Accept::kFailed) {
      return errno != EMFILE && errno != ENFILE && errno != ENOBUFS && errno != ENOMEM;
    }
    if (got != transport::Listener::Accept::kAccepted) continue;
    bool gone = false;
    conn.send_some(snapshot(), &gone);
  }
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
    // Flags 00010000: listening. Only this pid namespace's: another's pids mean
    // nothing here.
    if (flags != "00010000" || path.rfind(status_prefix(), 0) != 0 || path.size() < suffix.size() ||
        path.compare(path.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    out.push_back("unix://" + path);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

namespace {

// The bytes the process at endpoint answers, or nullopt and *why.
std::optional<std::string> query_bytes(const std::string& endpoint, std::chrono::milliseconds timeout,
                                       std::string* why) {
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
    *why = "closed without an answer (another user's, or it is stopping)";
    return std::nullopt;
  }
  return bytes;
}

}  // namespace

std::optional<PoolStatus> query_status(const std::string& endpoint, std::chrono::milliseconds timeout,
                                       std::string* why) {
  std::string ignored;
  if (why == nullptr) why = &ignored;
  auto bytes = query_bytes(endpoint, timeout, why);
  if (!bytes) return std::nullopt;
  try {
    return decode_status(*bytes);
  } catch (const DecodeError& e) {
    *why = e.what();
    return std::nullopt;
  }
}

LiveStatus live_status(std::chrono::milliseconds timeout) {
  LiveStatus live;
  for (const std::string& endpoint : status_endpoints()) {
    std::string why;
    auto bytes = query_bytes(endpoint, timeout, &why);
    if (!bytes) continue;
    try {
      msgpack::object_handle oh = msgpack::unpack(bytes->data(), bytes->size());
      const std::string kind = kind_of(oh.get());
      if (kind == "pool") {
        live.pools.push_back(oh.get().as<PoolStatus>());
      } else if (kind == "actor") {
        live.actors.push_back(oh.get().as<ActorStatus>());
      }
      // Another kind: a later mpx's; this one cannot show it.
    } catch (const std::exception&) {
      // Garbage: not an mpx status (the name is predictable, the listener is another's).
    }
  }
  std::sort(live.pools.begin(), live.pools.end(),
            [](const PoolStatus& a, const PoolStatus& b) { return a.router_pid < b.router_pid; });
  std::sort(live.actors.begin(), live.actors.end(), [](const ActorStatus& a, const ActorStatus& b) {
    return std::tie(a.driver_pid, a.pid) < std::tie(b.driver_pid, b.pid);
  });
  return live;
}

}  // namespace router
}  // namespace mpx
