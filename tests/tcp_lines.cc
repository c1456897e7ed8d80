#include "tests/tcp_lines.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace mpx_test {
namespace {

// Milliseconds left until deadline, at least 0, for poll().
int left_ms(std::chrono::steady_clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

bool parse_endpoint(const std::string& endpoint, sockaddr_in* addr) {
  const auto colon = endpoint.rfind(':');
  if (colon == std::string::npos) return false;
  *addr = {};
  addr->sin_family = AF_INET;
  addr->sin_port = htons(static_cast<uint16_t>(std::atoi(endpoint.c_str() + colon + 1)));
  return inet_pton(AF_INET, endpoint.substr(0, colon).c_str(), &addr->sin_addr) == 1;
}

}  // namespace

int listen_tcp(const std::string& address, int* port, std::string* error) {
  sockaddr_in addr{};
  if (!parse_endpoint(address + ":0", &addr)) {
    *error = "not an IPv4 address: " + address;
    return -1;
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  socklen_t len = sizeof addr;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, 16) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    *error = "listen on " + address + ": " + std::strerror(errno);
    if (fd >= 0) close(fd);
    return -1;
  }
  *port = ntohs(addr.sin_port);
  return fd;
}

int accept_tcp(int listener, milliseconds timeout, std::string* peer) {
  pollfd p{listener, POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(timeout.count())) != 1) return -1;
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  const int fd = accept4(listener, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_CLOEXEC);
  if (fd < 0) return -1;
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &addr.sin_addr, text, sizeof text);
  *peer = text;
  return fd;
}

int connect_tcp(const std::string& endpoint, milliseconds timeout, std::string* error) {
  sockaddr_in addr{};
  if (!parse_endpoint(endpoint, &addr)) {
    *error = "not address:port: " + endpoint;
    return -1;
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *error = std::strerror(errno);
    return -1;
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS) {
    *error = std::strerror(errno);
    close(fd);
    return -1;
  }
  pollfd p{fd, POLLOUT, 0};
  if (poll(&p, 1, static_cast<int>(timeout.count())) != 1) {
    *error = "timed out";
    close(fd);
    return -1;
  }
  int so_error = 0;
  socklen_t len = sizeof so_error;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
  if (so_error != 0) {
    *error = std::strerror(so_error);
    close(fd);
    return -1;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

std::optional<std::string> read_line(int fd, milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string line;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, left_ms(deadline)) != 1) return std::nullopt;
    char c;
    const ssize_t n = read(fd, &c, 1);  // one byte at a time: nothing read past the line
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    if (c == '\n') return line;
    line += c;
  }
}

bool write_all(int fd, const std::string& bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

EchoListener::EchoListener(const std::string& address) {
  int port = 0;
  std::string error;
  listener_ = listen_tcp(address, &port, &error);
  if (listener_ < 0) throw std::runtime_error(error);
  endpoint_ = address + ":" + std::to_string(port);
  thread_ = std::thread([this] { serve(); });
}

EchoListener::~EchoListener() {
  stop_ = true;
  thread_.join();
  close(listener_);
}

std::vector<EchoListener::Heard> EchoListener::heard() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return heard_;
}

void EchoListener::serve() {
  while (!stop_) {
    std::string peer;
    const int fd = accept_tcp(listener_, milliseconds(50), &peer);
    if (fd < 0) continue;
    if (const auto line = read_line(fd, std::chrono::seconds(10))) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        heard_.push_back({peer, *line});
      }
      write_all(fd, *line + "\n");
    }
    close(fd);
  }
}

int say_and_expect_echo(const std::string& endpoint, const std::string& line) {
  std::string error;
  const int fd = connect_tcp(endpoint, std::chrono::seconds(3), &error);
  if (fd < 0) {
    std::printf("cannot connect to %s: %s\n", endpoint.c_str(), error.c_str());
    std::fflush(stdout);
    return kCannotConnect;
  }
  const bool sent = write_all(fd, line + "\n");
  const auto back = read_line(fd, std::chrono::seconds(30));
  close(fd);
  if (!sent || back != line) {
    std::printf("no echo of '%s' from %s\n", line.c_str(), endpoint.c_str());
    std::fflush(stdout);
    return 4;
  }
  std::printf("echoed: %s\n", line.c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace mpx_test
