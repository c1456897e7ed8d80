#include "framework/testing/testing.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include <cstdlib>
#include <thread>

namespace mpx {
namespace testing {
namespace {

// Processes come and go while /proc is scanned: a read that fails (ESRCH from a
// process that just exited) yields what was read so far, never an exception.
std::string read_file(const std::string& path) {
  std::string out;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  return out;
}

bool is_zombie(pid_t pid) {
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() || stat[close + 2] == 'Z' ||
         stat[close + 2] == 'X';
}

}  // namespace

std::vector<Descendant> descendants(pid_t driver) {
  if (driver == 0) driver = getpid();
  const std::string marker = "--mpx-driver=" + std::to_string(driver);
  std::vector<Descendant> out;
  DIR* dir = opendir("/proc");
  if (dir == nullptr) return out;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::string cmd = read_file("/proc/" + std::string(e->d_name) + "/cmdline");
    for (char& c : cmd) {
      if (c == '\0') c = ' ';
    }
    // Match the whole flag, not a prefix of a longer pid.
    if ((cmd + " ").find(marker + " ") == std::string::npos) continue;
    if (is_zombie(static_cast<pid_t>(pid))) continue;
    out.push_back({static_cast<pid_t>(pid), cmd});
  }
  closedir(dir);
  return out;
}

std::vector<Descendant> wait_no_descendants(std::chrono::milliseconds timeout, pid_t driver) {
  std::vector<Descendant> left;
  wait_until([&] { return (left = descendants(driver)).empty(); }, timeout);
  return left;
}

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline) return cond();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::string mutate(std::string bytes, std::mt19937& rng, int max_edits) {
  const int edits = 1 + static_cast<int>(rng() % static_cast<unsigned>(max_edits));
  for (int e = 0; e < edits && !bytes.empty(); ++e) {
    const std::size_t at = rng() % bytes.size();
    switch (rng() % 3) {
      case 0: bytes[at] = static_cast<char>(rng()); break;
      case 1: bytes.insert(at, 1, static_cast<char>(rng())); break;
      case 2: bytes.erase(at, 1); break;
    }
  }
  return bytes;
}

std::vector<pid_t> worker_pids(pid_t driver) {
  std::vector<pid_t> out;
  for (const auto& d : descendants(driver)) {
    if (d.cmdline.find("--mpx-role=worker") != std::string::npos) out.push_back(d.pid);
  }
  return out;
}

}  // namespace testing
}  // namespace mpx
