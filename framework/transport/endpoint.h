// Endpoint: where a process listens, typed, parsed and checked in one place.
//
//   unix://@<name>        a unix stream socket in Linux's abstract namespace (nothing on
//                         disk to leak): every endpoint mpx uses today
//   ipc://<path>          ZeroMQ ipc (node agents on the same host): parsed, not served yet
//   tcp://<host>:<port>   ZeroMQ tcp (node agents on other hosts): parsed, not served yet
//
// Anything else is refused with a reason, and so is a name too long for its socket
// address: a name is never silently cut (two long names that differ only past the cut
// would otherwise meet on one socket).
#ifndef MPX_FRAMEWORK_TRANSPORT_ENDPOINT_H_
#define MPX_FRAMEWORK_TRANSPORT_ENDPOINT_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mpx {
namespace transport {

class Endpoint {
 public:
  enum class Scheme { kUnixAbstract, kIpc, kTcp };
  // Longest abstract name: sun_path holds 108 bytes, the first is the NUL that makes it
  // abstract.
  static constexpr std::size_t kMaxAbstractName = 107;

  // nullopt (and *why says what is wrong and what would be right) for an unknown
  // scheme, an empty or overlong name, a tcp address without a valid port.
  static std::optional<Endpoint> parse(std::string_view text, std::string* why);
  // The same; throws mpx::Error naming the text and the reason.
  static Endpoint from(std::string_view text);
  // A fresh unix-abstract endpoint, unique per process, call and chance:
  // "unix://@mpx-<pid>-<n>-<random>-<tag>".
  static Endpoint unique(std::string_view tag);

  Scheme scheme() const { return scheme_; }
  // The endpoint as text, as parse accepts it.
  const std::string& str() const { return text_; }
  // unix-abstract: the name after '@'; ipc: the path; tcp: the host.
  std::string_view name() const { return std::string_view(text_).substr(name_at_, name_size_); }
  std::uint16_t port() const { return port_; }  // tcp only
  // The same kind of endpoint with suffix appended to its name (an actor's incarnation
  // "-2"); throws mpx::Error if the name gets too long.
  Endpoint with_suffix(std::string_view suffix) const;

  bool operator==(const Endpoint& other) const { return text_ == other.text_; }

 private:
  Endpoint() = default;
  Scheme scheme_ = Scheme::kUnixAbstract;
  std::string text_;
  std::size_t name_at_ = 0, name_size_ = 0;
  std::uint16_t port_ = 0;
};

}  // namespace transport
}  // namespace mpx

#endif  // MPX_FRAMEWORK_TRANSPORT_ENDPOINT_H_
