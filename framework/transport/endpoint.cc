#include "framework/transport/endpoint.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>

#include "framework/base/base.h"
#include "mpx/errors.h"

namespace mpx {
namespace transport {
namespace {

bool fail(std::string* why, std::string reason) {
  if (why) *why = std::move(reason);
  return false;
}

constexpr std::string_view kUnix = "unix://@";
constexpr std::string_view kIpc = "ipc://";
constexpr std::string_view kTcp = "tcp://";

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

}  // namespace

std::optional<Endpoint> Endpoint::parse(std::string_view text, std::string* why) {
  Endpoint e;
  e.text_ = std::string(text);
  if (starts_with(text, kUnix)) {
    e.scheme_ = Scheme::kUnixAbstract;
    e.name_at_ = kUnix.size();
    e.name_size_ = text.size() - kUnix.size();
    if (e.name_size_ == 0) return fail(why, "an abstract unix endpoint needs a name after '@'"), std::nullopt;
    if (e.name_size_ > kMaxAbstractName) {
      return fail(why, "its name is " + std::to_string(e.name_size_) + " bytes, more than the " +
                           std::to_string(kMaxAbstractName) + " an abstract unix socket holds"),
             std::nullopt;
    }
    if (text.find('\0') != std::string_view::npos) {
      return fail(why, "a name may not hold a NUL byte"), std::nullopt;
    }
    return e;
  }
  if (starts_with(text, kIpc)) {
    e.scheme_ = Scheme::kIpc;
    e.name_at_ = kIpc.size();
    e.name_size_ = text.size() - kIpc.size();
    if (e.name_size_ == 0) return fail(why, "an ipc endpoint needs a path"), std::nullopt;
    return e;
  }
  if (starts_with(text, kTcp)) {
    e.scheme_ = Scheme::kTcp;
    const std::string_view rest = text.substr(kTcp.size());
    const auto colon = rest.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
      return fail(why, "a tcp endpoint is tcp://<host>:<port>"), std::nullopt;
    }
    const std::string port(rest.substr(colon + 1));
    char* end = nullptr;
    const long n = port.empty() ? -1 : std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || n < 0 || n > 65535) {
      return fail(why, "'" + port + "' is not a port number (0 to 65535)"), std::nullopt;
    }
    e.name_at_ = kTcp.size();
    e.name_size_ = colon;
    e.port_ = static_cast<std::uint16_t>(n);
    return e;
  }
  return fail(why, "unknown scheme: use unix://@<name>, ipc://<path> or tcp://<host>:<port>"),
         std::nullopt;
}

Endpoint Endpoint::from(std::string_view text) {
  std::string why;
  auto e = parse(text, &why);
  if (!e) throw Error("endpoint '" + std::string(text) + "': " + why);
  return *e;
}

Endpoint Endpoint::unique(std::string_view tag) {
  static std::atomic<unsigned> counter{0};
  return from(std::string(kUnix) + "mpx-" + std::to_string(getpid()) + "-" +
              std::to_string(counter++) + "-" + base::random_token(8) + "-" + std::string(tag));
}

Endpoint Endpoint::with_suffix(std::string_view suffix) const { return from(text_ + std::string(suffix)); }

}  // namespace transport
}  // namespace mpx
