// Physical floors of tools/bench: the p50 round trip of a tiny message between two
// processes of this machine over each kind of hop the frameworks use, with nothing of
// mpx (or of CAF, or of Python) on the path. One JSON line per hop on stdout,
//   {"scenario": ..., "unit": "us", "floor": true, "values": [...]},
// one value (the p50 of that repetition's round trips) per repetition.
//
// Each floor forks a child that echoes 8-byte messages back; the parent times each
// send-then-receive. Neither process is pinned to a CPU and both block in the kernel
// while waiting (as the mpx router and ZeroMQ do), except in the busy-poll row, where
// both spin on non-blocking receives (as mpx's actor streams do, for a bounded time,
// before they block): on a 2-core machine that row shows what spinning can buy. The
// shared-memory row is the floor below every socket: both processes spin on a word in
// a shared mapping, no system call at all.
//
//   pipe pair              two pipe(2)s, read/write
//   unix stream socketpair socketpair(AF_UNIX, SOCK_STREAM), blocking
//   unix stream, busy-poll same, both ends spin on recv(MSG_DONTWAIT)
//   TCP loopback           a connected 127.0.0.1 TCP pair, TCP_NODELAY (CAF's remoting)
//   ZeroMQ ipc DEALER/ROUTER  abstract ipc:// endpoint, the parent is the ROUTER
//                          (mpx's pool hops until they moved to unix streams)
//   shared memory, busy-poll  a MAP_SHARED page: the parent stores a sequence number,
//                          the child spins until it sees it and stores it back
//   TCP, ZeroMQ tcp DEALER/ROUTER to a namespace host
//                          the child in a network namespace of its own
//                          (framework/testing NetnsHosts), the parent listening on the
//                          bridge: the hop between mpx's router and a node agent on
//                          another "host" of the multi-host tests (no CURVE). Needs
//                          root; skipped with the reason otherwise.
//
// Usage: floors [--quick] [--only=<text>]. 5 repetitions; --quick: 3, each shorter.
#include <arpa/inet.h>
#include <fcntl.h>
#include <sched.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <zmq.h>

#include "framework/testing/hosts.h"
#include "tools/bench/bench.h"

namespace {

constexpr std::size_t kMessage = 8;
constexpr int kWarmup = 500;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "floors: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

// Reads or writes exactly n bytes (blocking fds).
void read_all(int fd, char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) die("read");
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}
void write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t r = write(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) die("write");
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}
// Spins on a non-blocking receive until n bytes have arrived.
void spin_read_all(int fd, char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (r <= 0) die("recv");
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}

// Forks; the child runs `echo` and exits. Returns the child's pid.
pid_t fork_child(const std::function<void()>& echo) {
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    echo();
    _exit(0);
  }
  return pid;
}

void reap(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "floors: echo child failed\n");
    std::exit(1);
  }
}

// Ping-pong over two fds to the child (to_child, from_child) and the child's two ends.
double fd_floor(int rounds, int parent_out, int parent_in, int child_in, int child_out,
                const std::vector<int>& parent_only, const std::vector<int>& child_only,
                bool spin) {
  const int total = kWarmup + rounds;
  const pid_t pid = fork_child([&] {
    for (int fd : parent_only) close(fd);
    char buf[kMessage];
    for (int i = 0; i < total; ++i) {
      if (spin) spin_read_all(child_in, buf, kMessage);
      else read_all(child_in, buf, kMessage);
      write_all(child_out, buf, kMessage);
    }
  });
  for (int fd : child_only) close(fd);
  char buf[kMessage] = "ping";
  const double p50 = bench::p50_us(kWarmup, rounds, [&](int) {
    write_all(parent_out, buf, kMessage);
    if (spin) spin_read_all(parent_in, buf, kMessage);
    else read_all(parent_in, buf, kMessage);
  });
  for (int fd : parent_only) close(fd);
  reap(pid);
  return p50;
}

double pipe_floor(int rounds) {
  int down[2], up[2];
  if (pipe(down) != 0 || pipe(up) != 0) die("pipe");
  return fd_floor(rounds, down[1], up[0], down[0], up[1], {down[1], up[0]}, {down[0], up[1]},
                  false);
}

double socketpair_floor(int rounds, bool spin) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
  return fd_floor(rounds, sv[0], sv[0], sv[1], sv[1], {sv[0]}, {sv[1]}, spin);
}

// Moves this (forked, single-threaded) process into the network namespace at path;
// nothing to do for an empty path.
void enter_netns(const std::string& path) {
  if (path.empty()) return;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) die("setns");
  close(fd);
}

// TCP: the parent listens on address, the child (in the network namespace at netns,
// if given) connects and echoes.
double tcp_floor(int rounds, const char* address, const std::string& netns) {
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) die("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (inet_pton(AF_INET, address, &addr.sin_addr) != 1) die("inet_pton");
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("bind");
  if (listen(listener, 1) != 0) die("listen");
  if (getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) die("getsockname");
  const int one = 1;
  const int total = kWarmup + rounds;
  const pid_t pid = fork_child([&] {
    close(listener);
    enter_netns(netns);
    const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (client < 0) die("socket");
    if (connect(client, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) die("connect");
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[kMessage];
    for (int i = 0; i < total; ++i) {
      read_all(client, buf, kMessage);
      write_all(client, buf, kMessage);
    }
  });
  const int server = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (server < 0) die("accept");
  close(listener);
  setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char buf[kMessage] = "ping";
  const double p50 = bench::p50_us(kWarmup, rounds, [&](int) {
    write_all(server, buf, kMessage);
    read_all(server, buf, kMessage);
  });
  close(server);
  reap(pid);
  return p50;
}

// ZeroMQ: the parent binds a ROUTER to bind_endpoint, the child (in the network
// namespace at netns, if given) connects a DEALER, says hello, then echoes every
// message. Each process makes its own context after the fork (and the child after it
// entered its namespace, so its I/O thread is there too).
double zmq_floor(int rounds, const std::string& bind_endpoint, const std::string& netns) {
  const int total = kWarmup + rounds;
  void* ctx = zmq_ctx_new();
  void* router = zmq_socket(ctx, ZMQ_ROUTER);
  if (zmq_bind(router, bind_endpoint.c_str()) != 0) die("zmq_bind");
  char endpoint[256];  // with the port the kernel chose, for tcp://address:*
  std::size_t endpoint_size = sizeof endpoint;
  if (zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, endpoint, &endpoint_size) != 0) die("ZMQ_LAST_ENDPOINT");
  const pid_t pid = fork_child([&] {
    enter_netns(netns);
    // The parent's context must not be touched (or closed) in the child.
    void* cctx = zmq_ctx_new();
    void* dealer = zmq_socket(cctx, ZMQ_DEALER);
    if (zmq_connect(dealer, endpoint) != 0) die("zmq_connect");
    char buf[kMessage] = "hello";
    zmq_send(dealer, buf, kMessage, 0);
    for (int i = 0; i < total; ++i) {
      if (zmq_recv(dealer, buf, kMessage, 0) < 0) die("zmq_recv");
      if (zmq_send(dealer, buf, kMessage, 0) < 0) die("zmq_send");
    }
    int linger = 1000;
    zmq_setsockopt(dealer, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(dealer);
    zmq_ctx_term(cctx);
  });
  char id[256];
  char buf[kMessage];
  const int id_size = zmq_recv(router, id, sizeof id, 0);
  if (id_size < 0) die("zmq_recv identity");
  if (zmq_recv(router, buf, kMessage, 0) < 0) die("zmq_recv hello");
  const double p50 = bench::p50_us(kWarmup, rounds, [&](int) {
    char rid[256];
    if (zmq_send(router, id, static_cast<std::size_t>(id_size), ZMQ_SNDMORE) < 0) die("zmq_send");
    if (zmq_send(router, buf, kMessage, 0) < 0) die("zmq_send");
    if (zmq_recv(router, rid, sizeof rid, 0) < 0) die("zmq_recv");
    if (zmq_recv(router, buf, kMessage, 0) < 0) die("zmq_recv");
  });
  reap(pid);
  zmq_close(router);
  zmq_ctx_term(ctx);
  return p50;
}

// Shared memory: both sides spin on a sequence number in a shared page.
double shm_floor(int rounds) {
  void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) die("mmap");
  auto* words = static_cast<std::atomic<std::uint64_t>*>(page);  // [0] ping, [1] pong
  new (&words[0]) std::atomic<std::uint64_t>(0);
  new (&words[1]) std::atomic<std::uint64_t>(0);
  const std::uint64_t total = kWarmup + static_cast<std::uint64_t>(rounds);
  const pid_t pid = fork_child([&] {
    for (std::uint64_t i = 1; i <= total; ++i) {
      while (words[0].load(std::memory_order_acquire) != i) {
      }
      words[1].store(i, std::memory_order_release);
    }
  });
  const double p50 = bench::p50_us(kWarmup, rounds, [&](int i) {
    const auto seq = static_cast<std::uint64_t>(i) + 1;
    words[0].store(seq, std::memory_order_release);
    while (words[1].load(std::memory_order_acquire) != seq) {
    }
  });
  reap(pid);
  munmap(page, 4096);
  return p50;
}

}  // namespace

int main(int argc, char** argv) {
  const bench::Args args(argc, argv);
  const int rounds = args.quick ? 2000 : 10000;
  struct Floor {
    const char* scenario;
    std::function<double(int)> run;
  };
  const std::vector<Floor> floors = {
      {"floor: pipe pair ping-pong p50, 2 processes", [&](int) { return pipe_floor(rounds); }},
      {"floor: unix stream socketpair ping-pong p50, 2 processes",
       [&](int) { return socketpair_floor(rounds, false); }},
      {"floor: unix stream socketpair ping-pong p50, 2 processes, both busy-polling",
       [&](int) { return socketpair_floor(rounds, true); }},
      {"floor: TCP loopback ping-pong p50, 2 processes",
       [&](int) { return tcp_floor(rounds, "127.0.0.1", ""); }},
      {"floor: ZeroMQ ipc DEALER/ROUTER ping-pong p50, 2 processes",
       [&](int r) {
         return zmq_floor(rounds, "ipc://@mpx-floor-" + std::to_string(getpid()) + "-" + std::to_string(r), "");
       }},
      {"floor: shared memory ping-pong p50, 2 processes, both busy-polling",
       [&](int) { return shm_floor(rounds); }},
  };
  auto run = [&args](const std::vector<Floor>& list) {
    for (const auto& f : list) {
      if (!args.want(f.scenario)) continue;
      std::vector<double> values;
      for (int r = 0; r < args.reps; ++r) values.push_back(f.run(r));
      bench::emit(f.scenario, "us", values, {{"floor", "true"}});
    }
  };
  run(floors);
  if (const auto reason = mpx::testing::NetnsHosts::unavailable()) {
    std::fprintf(stderr, "floors: no rows across a namespace host: %s\n", reason->c_str());
    return 0;
  }
  mpx::testing::NetnsHosts hosts(1);
  const std::string host = "/run/netns/" + hosts.netns(1);
  const std::string head = hosts.bridge_address();
  const std::vector<Floor> across = {
      {"floor: TCP to a namespace host (veth + bridge) ping-pong p50, 2 processes",
       [&](int) { return tcp_floor(rounds, head.c_str(), host); }},
      {"floor: ZeroMQ tcp DEALER/ROUTER to a namespace host ping-pong p50, 2 processes",
       [&](int) { return zmq_floor(rounds, "tcp://" + head + ":*", host); }},
  };
  run(across);
  return 0;
}
