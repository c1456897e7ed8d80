// CAF anchor for the actor scenarios of tools/bench (actor_bench.cc is the mpx side).
// One JSON line per scenario and anchor on stdout,
//   {"scenario": ..., "unit": ..., "anchor": ..., "values": [...]},
// one value per repetition, with the scenario names actor_bench emits so that
// tools/bench/run can join them.
//
// What is compared. An mpx actor is an object living in a process of its own, called
// from another process. CAF's way of reaching an actor in another OS process is its
// I/O module: the actor's process publishes it on a TCP port (io::middleman::publish)
// and the caller gets a proxy for it with io::middleman::remote_actor; every message
// is serialized by CAF and crosses loopback TCP through each side's multiplexer thread.
// That is the anchor "CAF remote (TCP)": the counter actor lives in a fresh process of
// this program (started with posix_spawn, as mpx starts its actors), the caller is a
// scoped_actor in this process, and both sides use CAF's default configuration
// (scheduler threads = max(4, cores), work-stealing policy). CAF 0.17 has no unix-socket
// transport, so its floor is the TCP loopback row of floors.cc, not the unix-stream one.
//
// "CAF in-process" rows are the same calls to an actor in the caller's own actor
// system: no process boundary, no serialization. They are not a like-for-like anchor
// for a process-per-actor framework; they show what CAF costs when it can skip the
// boundary, and are labelled as such in the table.
//
// Scenarios (same shapes as actor_bench.cc):
//   actor call round trip p50                  request(add, 1) then wait, one at a time
//   actor calls, 1000 in flight                1,000 requests sent, then all replies
//                                              awaited, repeated
//   actor spawn + first call + stop            start the actor (remote: its process,
//                                              publish, connect), one call, stop it and
//                                              wait for it to be gone
//   idle actor memory (PSS per actor process)  N actor processes, each called once;
//                                              the sum of their PSS over N (remote only)
//
// Usage: caf_anchor [--quick]            (the caller; starts its own servers)
//        caf_anchor --serve              (internal: one published counter, port on stdout)
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "caf/all.hpp"
#include "caf/io/all.hpp"
#include "tools/bench/bench.h"

extern char** environ;

namespace {

using add_atom = caf::atom_constant<caf::atom("add")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;

struct CounterState {
  std::int64_t n = 0;
};

// The counter of actor_bench: add(k) returns the new total; stop ends the actor.
caf::behavior counter(caf::stateful_actor<CounterState>* self) {
  return {
      [=](add_atom, std::int64_t k) -> std::int64_t { return self->state.n += k; },
      [=](stop_atom) { self->quit(); },
  };
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "caf_anchor: %s\n", what.c_str());
  std::exit(1);
}

void emit(const char* scenario, const char* unit, const char* anchor,
          const std::vector<double>& values) {
  bench::emit(scenario, unit, values, {{"anchor", bench::quoted(anchor)}});
}

// --- the server process -------------------------------------------------------------

int serve() {
  // Never outlive the caller, whatever happens to it.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  caf::actor_system_config cfg;
  cfg.load<caf::io::middleman>();
  caf::actor_system sys{cfg};
  auto a = sys.spawn(counter);
  auto port = sys.middleman().publish(a, 0, "127.0.0.1");
  if (!port) die("publish failed: " + sys.render(port.error()));
  std::printf("%u\n", static_cast<unsigned>(*port));
  std::fflush(stdout);
  // The actor system's destructor waits for the counter to quit (stop_atom).
  return 0;
}

// --- the caller ---------------------------------------------------------------------

struct Server {
  pid_t pid = -1;
  caf::actor actor;
};

// Starts `this program --serve`, reads the port it published on, connects to it.
Server start_server(caf::actor_system& sys) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) die("pipe2 failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  char exe[] = "/proc/self/exe";
  char serve_flag[] = "--serve";
  char* argv[] = {exe, serve_flag, nullptr};
  Server s;
  if (posix_spawn(&s.pid, exe, &actions, nullptr, argv, environ) != 0) die("posix_spawn failed");
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  char buf[16] = {};
  std::size_t got = 0;
  while (got < sizeof buf - 1) {
    const ssize_t n = read(fds[0], buf + got, 1);
    if (n <= 0) die("server exited before publishing");
    if (buf[got] == '\n') break;
    ++got;
  }
  close(fds[0]);
  const auto port = static_cast<std::uint16_t>(std::atoi(buf));
  auto remote = sys.middleman().remote_actor("127.0.0.1", port);
  if (!remote) die("remote_actor failed: " + sys.render(remote.error()));
  s.actor = *remote;
  return s;
}

void stop_server(caf::scoped_actor& self, Server& s) {
  self->send(s.actor, stop_atom::value);
  s.actor = caf::actor{};
  int status = 0;
  if (waitpid(s.pid, &status, 0) != s.pid) die("waitpid failed");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("server did not exit cleanly");
}

std::int64_t call_add(caf::scoped_actor& self, const caf::actor& a) {
  std::int64_t out = 0;
  self->request(a, caf::infinite, add_atom::value, std::int64_t{1})
      .receive([&](std::int64_t n) { out = n; },
               [&](caf::error& e) { die("call failed: " + self->system().render(e)); });
  return out;
}

// p50 of `calls` sequential round trips (after a warm-up, as actor_bench does).
double round_trip_p50(caf::scoped_actor& self, const caf::actor& a, int calls) {
  return bench::p50_us(200, calls, [&](int) { call_add(self, a); });
}

// Calls per second with `window` requests in flight: all sent, then every reply
// awaited in order (replies on one connection arrive in order, so each receive finds
// its reply first in the mailbox), as actor_bench does with mpx futures.
double pipelined_rate(caf::scoped_actor& self, const caf::actor& a, int total, int window) {
  using Handle = decltype(self->request(a, caf::infinite, add_atom::value, std::int64_t{1}));
  std::vector<Handle> inflight;
  inflight.reserve(window);
  const auto t0 = bench::Clock::now();
  for (int sent = 0; sent < total; sent += window) {
    inflight.clear();
    for (int i = 0; i < window; ++i) {
      inflight.push_back(self->request(a, caf::infinite, add_atom::value, std::int64_t{1}));
    }
    for (auto& h : inflight) {
      h.receive([](std::int64_t) {},
                [&](caf::error& e) { die("call failed: " + self->system().render(e)); });
    }
  }
  return total / bench::seconds_since(t0);
}

int run(bool quick) {
  caf::actor_system_config cfg;
  cfg.load<caf::io::middleman>();
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  const int reps = 5;
  const int calls = quick ? 2000 : 10000;
  const int window = 1000, total = calls * 5;

  // Remote: the counter in its own process, over CAF's TCP remoting.
  const char* remote = "CAF remote (TCP)";
  std::vector<double> round_trip, pipelined, spawn_ms, memory;
  for (int r = 0; r < reps; ++r) {
    Server s = start_server(sys);
    round_trip.push_back(round_trip_p50(self, s.actor, calls));
    pipelined.push_back(pipelined_rate(self, s.actor, total, window));
    stop_server(self, s);
  }
  emit("actor call round trip p50", "us", remote, round_trip);
  emit("actor calls, 1000 in flight", "calls/s", remote, pipelined);

  for (int r = 0; r < reps; ++r) {
    const auto t0 = bench::Clock::now();
    Server s = start_server(sys);
    call_add(self, s.actor);
    stop_server(self, s);
    spawn_ms.push_back(bench::seconds_since(t0) * 1e3);
  }
  emit("actor spawn + first call + stop", "ms", remote, spawn_ms);

  const int idle = quick ? 20 : 100;
  for (int r = 0; r < (quick ? 1 : 5); ++r) {
    std::vector<Server> servers;
    for (int i = 0; i < idle; ++i) servers.push_back(start_server(sys));
    for (auto& s : servers) call_add(self, s.actor);
    long total_kib = 0;
    for (auto& s : servers) total_kib += bench::pss_kib(s.pid);
    memory.push_back(static_cast<double>(total_kib) / idle / 1024.0);
    for (auto& s : servers) stop_server(self, s);
  }
  emit("idle actor memory (PSS per actor process)", "MiB", remote, memory);

  // In-process: the same calls without a process boundary (not like-for-like).
  const char* local = "CAF in-process";
  round_trip.clear();
  pipelined.clear();
  spawn_ms.clear();
  for (int r = 0; r < reps; ++r) {
    auto a = sys.spawn(counter);
    round_trip.push_back(round_trip_p50(self, a, calls));
    pipelined.push_back(pipelined_rate(self, a, total, window));
    self->send(a, stop_atom::value);
    self->wait_for(a);
  }
  emit("actor call round trip p50", "us", local, round_trip);
  emit("actor calls, 1000 in flight", "calls/s", local, pipelined);
  for (int r = 0; r < reps; ++r) {
    const int n = 100;  // one spawn is a few microseconds: average over many
    const auto t0 = bench::Clock::now();
    for (int i = 0; i < n; ++i) {
      auto a = sys.spawn(counter);
      call_add(self, a);
      self->send(a, stop_atom::value);
      self->wait_for(a);
    }
    spawn_ms.push_back(bench::seconds_since(t0) * 1e3 / n);
  }
  emit("actor spawn + first call + stop", "ms", local, spawn_ms);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--serve") == 0) return serve();
  }
  return run(bench::Args(argc, argv).quick);
}
