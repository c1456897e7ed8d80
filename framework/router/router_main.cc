// The router process: real sockets and real children around RouterCore.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <map>
#include <random>
#include <vector>

#include "framework/router/router.h"
#include "mpx/errors.h"
#include "mpx/runtime.h"

namespace mpx {
namespace router {
namespace {

// 16 random letters and digits: a worker's routing identity.
std::string random_id() {
  static const char kAlphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::random_device rd;
  std::string id(16, '0');
  for (char& c : id) c = kAlphabet[rd() % 36];
  return id;
}

class ProcessIo final : public RouterIo {
 public:
  ProcessIo(zmq::socket_t& front, zmq::socket_t& back, std::string back_endpoint, pid_t driver)
      : front_(front), back_(back), back_endpoint_(std::move(back_endpoint)), driver_(driver) {}

  void send_client(std::string_view client, const wire::Header& h, zmq::message_t&& payload) override {
    transport::send_to(front_, client, h, std::move(payload));
  }
  void forward_client(std::string_view client, zmq::message_t&& header_frame,
                      zmq::message_t&& payload) override {
    transport::forward_to(front_, client, std::move(header_frame), std::move(payload));
  }
  void send_worker(std::string_view worker, const wire::Header& h, zmq::message_t&& payload) override {
    transport::send_to(back_, worker, h, std::move(payload));
  }
  void forward_worker(std::string_view worker, zmq::message_t&& header_frame,
                      zmq::message_t&& payload) override {
    transport::forward_to(back_, worker, std::move(header_frame), std::move(payload));
  }
  pid_t spawn_worker(const std::string& name, std::string* routing_id) override {
    *routing_id = "W" + random_id();
    spawning::Spec spec;
    spec.role = Role::kWorker;
    spec.name = name;
    spec.bootstrap = back_endpoint_ + '\n' + *routing_id;
    spec.driver = driver_;
    // One shared word per worker: the chunk it is running (wire::chunk_mark). Memory
    // writes survive the worker's death, unlike a message still in its ZeroMQ queue.
    const int memfd = ::memfd_create("mpx-worker-mark", MFD_CLOEXEC);
    void* map = MAP_FAILED;
    if (memfd >= 0 && ::ftruncate(memfd, kMarkBytes) == 0) {
      map = ::mmap(nullptr, kMarkBytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    }
    if (map != MAP_FAILED) spec.share_fd = memfd;
    spawning::Child child;
    try {
      child = spawning::spawn_self(spec);
    } catch (...) {
      if (memfd >= 0) ::close(memfd);
      if (map != MAP_FAILED) ::munmap(map, kMarkBytes);
      throw;
    }
    if (memfd >= 0) ::close(memfd);
    if (map != MAP_FAILED) marks_[child.pid] = static_cast<std::atomic<std::uint64_t>*>(map);
    children_[child.pid] = child;
    return child.pid;
  }
  std::optional<std::uint64_t> take_running_mark(pid_t pid) override {
    auto it = marks_.find(pid);
    if (it == marks_.end()) return std::nullopt;
    const std::uint64_t mark = it->second->load(std::memory_order_acquire);
    ::munmap(it->second, kMarkBytes);
    marks_.erase(it);
    return mark;
  }
  void kill_worker(pid_t pid) override {
    if (children_.count(pid)) ::kill(pid, SIGKILL);
  }
  bool is_stopped(pid_t pid) override {
    if (children_.count(pid) == 0) return false;
    // /proc/<pid>/stat: "pid (comm) S ..."; comm may hold spaces or parentheses, the
    // state follows the last ')'. T: stopped by a signal, t: stopped by a tracer.
    char buf[512];
    const int fd = ::open(("/proc/" + std::to_string(pid) + "/stat").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return false;
    const std::string_view stat(buf, static_cast<std::size_t>(n));
    const auto paren = stat.rfind(')');
    return paren != std::string_view::npos && paren + 2 < stat.size() &&
           (stat[paren + 2] == 'T' || stat[paren + 2] == 't');
  }

  std::map<pid_t, spawning::Child>& children() { return children_; }
  static constexpr std::size_t kMarkBytes = 4096;

 private:
  zmq::socket_t& front_;
  zmq::socket_t& back_;
  std::string back_endpoint_;
  pid_t driver_;
  std::map<pid_t, spawning::Child> children_;
  std::map<pid_t, std::atomic<std::uint64_t>*> marks_;
};

// Handles at most this many messages per socket per loop turn, so neither side starves.
constexpr int kBatch = 256;
// How long results of a dead worker are still awaited before its chunks are lost.
constexpr auto kExitDrain = std::chrono::milliseconds(20);

}  // namespace

int run_router(const spawning::Bootstrap& boot) {
  const Config config = Config::decode(boot.payload);
  const int driver_fd = spawning::open_parent_or_exit(boot.parent);
  signal(SIGPIPE, SIG_IGN);

  zmq::socket_t front = transport::make_socket(zmq::socket_type::router);
  zmq::socket_t back = transport::make_socket(zmq::socket_type::router);
  // A frame over the limit disconnects its sender instead of being buffered whole.
  const auto frame_limit = static_cast<std::int64_t>(
      std::min<std::uint64_t>(config.max_message_bytes + wire::kMaxHeaderSize, INT64_MAX));
  front.set(zmq::sockopt::maxmsgsize, frame_limit);
  back.set(zmq::sockopt::maxmsgsize, frame_limit);
  front.bind(config.front_endpoint);
  back.bind(config.back_endpoint);
  // Clients may connect now and succeed at once (no reconnect back-off to wait out).
  spawning::signal_ready(boot.ready_fd);

  ProcessIo io(front, back, config.back_endpoint, boot.driver);
  RouterCore core(config, io);
  core.start(Clock::now());
  logger().debug("router: serving {} workers", config.workers);

  std::vector<zmq::pollitem_t> items;
  std::vector<pid_t> item_pids;
  struct Exit {
    pid_t pid;
    int status;
    Clock::time_point report_at;
  };
  std::deque<Exit> exits;  // reaped workers whose lost chunks are not reported yet
  bool driver_gone = false;
  transport::Incoming in;
  std::string why;
  while (!core.finished()) {
    items.clear();
    item_pids.clear();
    items.push_back({front.handle(), 0, ZMQ_POLLIN, 0});
    items.push_back({back.handle(), 0, ZMQ_POLLIN, 0});
    // Once the driver is gone its pidfd stays readable: stop watching it.
    items.push_back({nullptr, driver_gone ? -1 : driver_fd, ZMQ_POLLIN, 0});
    for (auto& [pid, child] : io.children()) {
      items.push_back({nullptr, child.pidfd, ZMQ_POLLIN, 0});
      item_pids.push_back(pid);
    }
    const auto now = Clock::now();
    auto wake = core.next_tick();
    if (!exits.empty()) wake = std::min(wake, exits.front().report_at);
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now);
    transport::poll(items.data(), items.size(), std::chrono::milliseconds(std::max<long>(0, wait.count()) + 1));

    for (int i = 0; i < kBatch; ++i) {
      const auto st = transport::receive(front, true, in, &why);
      if (st == transport::RecvStatus::kNothing) break;
      if (st == transport::RecvStatus::kMalformed) {
        logger().warn("router: dropped a malformed client message: {}", why);
        continue;
      }
      core.on_client(in, Clock::now());
    }
    for (int i = 0; i < kBatch; ++i) {
      const auto st = transport::receive(back, true, in, &why);
      if (st == transport::RecvStatus::kNothing) break;
      if (st == transport::RecvStatus::kMalformed) {
        logger().warn("router: dropped a malformed worker message: {}", why);
        continue;
      }
      core.on_worker(in, Clock::now());
    }
    for (std::size_t k = 0; k < item_pids.size(); ++k) {
      if (!(items[3 + k].revents & ZMQ_POLLIN)) continue;
      auto it = io.children().find(item_pids[k]);
      if (it == io.children().end()) continue;
      auto status = spawning::reap(it->second, false);
      if (!status) continue;
      io.children().erase(it);
      core.on_worker_died(item_pids[k]);
      if (core.worth_draining(item_pids[k])) {
        exits.push_back({item_pids[k], *status, Clock::now() + kExitDrain});
      } else {
        core.on_worker_exit(item_pids[k], *status, Clock::now());
      }
    }
    // Results a dead worker sent just before it died may still be on their way; they
    // were read above. What it still holds after the drain is reported lost.
    // A stop makes every pending drain moot.
    while (!exits.empty() && (Clock::now() >= exits.front().report_at || !core.worth_draining(exits.front().pid))) {
      core.on_worker_exit(exits.front().pid, exits.front().status, Clock::now());
      exits.pop_front();
    }
    if (!driver_gone && (items[2].revents & ZMQ_POLLIN)) {
      logger().debug("router: driver {} is gone; stopping", boot.driver);
      driver_gone = true;
      core.terminate();
    }
    if (Clock::now() >= core.next_tick()) core.on_tick(Clock::now());
  }
  for (auto& [pid, child] : io.children()) {
    ::kill(pid, SIGKILL);
    spawning::reap(child, true);
  }
  return 0;
}

}  // namespace router
}  // namespace mpx
