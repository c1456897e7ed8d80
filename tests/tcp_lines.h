// Lines over TCP for the multi-host harness tests: what a process in another "host"
// (a network namespace, a Slurm node) does to prove it can reach the test, and the
// test's side of it. Descriptors are close-on-exec: the cluster's daemons, started
// while a test runs, must not inherit a test's socket.
#ifndef MPX_TESTS_TCP_LINES_H_
#define MPX_TESTS_TCP_LINES_H_

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace mpx_test {

using std::chrono::milliseconds;

// A listening socket on address, port chosen by the kernel; -1 and *error on failure.
int listen_tcp(const std::string& address, int* port, std::string* error);

// Accepts one connection within timeout; -1 if none. *peer: the peer's address.
int accept_tcp(int listener, milliseconds timeout, std::string* peer);

// Connects to "address:port" within timeout; -1 and *error (errno text, or
// "timed out") on failure.
int connect_tcp(const std::string& endpoint, milliseconds timeout, std::string* error);

// The next line (without its '\n') within timeout; nullopt on timeout, EOF or error.
std::optional<std::string> read_line(int fd, milliseconds timeout);

bool write_all(int fd, const std::string& bytes);

// Listens on address and, on a thread of its own, answers the first line of every
// connection with the same line, recording who said what.
class EchoListener {
 public:
  struct Heard {
    std::string peer;  // the sender's address
    std::string line;
  };

  explicit EchoListener(const std::string& address);  // throws std::runtime_error
  EchoListener(const EchoListener&) = delete;
  EchoListener& operator=(const EchoListener&) = delete;
  ~EchoListener();

  std::string endpoint() const { return endpoint_; }  // "address:port"
  std::vector<Heard> heard() const;

 private:
  void serve();

  int listener_ = -1;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::vector<Heard> heard_;  // guarded by mutex_
  std::thread thread_;
};

// Helper side: connects to endpoint, says line, expects it back. Prints what
// happened and returns the exit code for the helper: 0 echoed, 3 could not connect,
// 4 no echo.
int say_and_expect_echo(const std::string& endpoint, const std::string& line);

constexpr int kCannotConnect = 3;

}  // namespace mpx_test

#endif  // MPX_TESTS_TCP_LINES_H_
