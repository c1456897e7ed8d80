// mpx — what the pools of this user on this machine are doing.
//
//   mpx status          every live pool: its program, router, workers, queue, counters
//   mpx status --json   the same as one JSON document (an array of pools)
//   mpx top             the same, refreshed every second in the terminal (q quits)
//
// Pools are found without a daemon: each router listens on an abstract unix socket
// named "@mpx-<pid namespace>-<router pid>-status" (framework/router/status.h), which dies with it.
// Routers of other users refuse the connection, so they are never shown.
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#include "framework/router/status.h"

namespace {

using mpx::router::PoolStatus;
using mpx::router::WorkerStatus;

int usage(const char* why) {
  std::fprintf(stderr,
               "mpx: %s\n"
               "usage: mpx status [--json]\n"
               "       mpx top [--interval-ms N] [--iterations N]\n",
               why);
  return 2;
}

std::string bytes_text(std::uint64_t b) {
  char buf[32];
  if (b >= (std::uint64_t{1} << 30)) {
    std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(b) / (1 << 30));
  } else if (b >= (1 << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / (1 << 20));
  } else {
    std::snprintf(buf, sizeof buf, "%.0f KiB", static_cast<double>(b) / 1024);
  }
  return buf;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string json(const PoolStatus& p) {
  std::string o = "{";
  auto num = [&](const char* k, auto v, bool comma = true) {
    o += json_string(k) + ":" + std::to_string(v) + (comma ? "," : "");
  };
  auto str = [&](const char* k, const std::string& v) { o += json_string(k) + ":" + json_string(v) + ","; };
  num("router_pid", p.router_pid);
  num("driver_pid", p.driver_pid);
  str("program", p.program);
  num("workers_wanted", p.workers_wanted);
  num("worker_memory_limit", p.worker_memory_limit);
  str("endpoint", p.front_endpoint);
  str("broken", p.broken);
  num("uptime_s", p.uptime_s);
  num("queued_chunks", p.queued_chunks);
  num("in_flight_chunks", p.in_flight_chunks);
  num("submitted_items", p.submitted_items);
  num("completed_items", p.completed_items);
  num("lost_items", p.lost_items);
  num("error_chunks", p.error_chunks);
  num("retried_chunks", p.retried_chunks);
  num("worker_restarts", p.worker_restarts);
  num("bytes_in", p.bytes_in);
  num("bytes_out", p.bytes_out);
  num("items_per_s", p.uptime_s > 0 ? static_cast<double>(p.completed_items) / p.uptime_s : 0.0);
  o += "\"worker_deaths\":{";
  bool first = true;
  for (const auto& [cause, n] : p.worker_deaths) {
    o += (first ? "" : ",") + json_string(cause) + ":" + std::to_string(n);
    first = false;
  }
  o += "},\"workers\":[";
  for (std::size_t i = 0; i < p.workers.size(); ++i) {
    const WorkerStatus& w = p.workers[i];
    o += i ? ",{" : "{";
    num("pid", w.pid);
    str("name", w.name);
    str("state", w.state);
    str("task", w.task);
    num("call_id", w.call_id);
    num("start", w.start);
    num("count", w.count);
    num("held", w.held);
    num("chunks_done", w.chunks_done);
    num("items_done", w.items_done);
    num("rss_bytes", w.rss_bytes, false);
    o += "}";
  }
  return o + "]}";
}

// One pool as text. rate: items per second since the last screen (top), or < 0 for
// the average since the pool started.
std::string text(const PoolStatus& p, double rate) {
  std::string o;
  char buf[512];
  std::snprintf(buf, sizeof buf, "pool  router %d  driver %d  %s\n", p.router_pid, p.driver_pid,
                p.program.c_str());
  o += buf;
  if (!p.broken.empty()) o += "  BROKEN: " + p.broken + "\n";
  const double per_s = rate >= 0 ? rate : p.uptime_s > 0 ? static_cast<double>(p.completed_items) / p.uptime_s : 0;
  std::snprintf(buf, sizeof buf,
                "  up %.1f s  workers %zu/%d  memory limit %s  queued %" PRIu64 " chunks  in flight %" PRIu64
                " chunks\n",
                p.uptime_s, p.workers.size(), p.workers_wanted,
                p.worker_memory_limit ? bytes_text(p.worker_memory_limit).c_str() : "none", p.queued_chunks,
                p.in_flight_chunks);
  o += buf;
  std::snprintf(buf, sizeof buf,
                "  items %" PRIu64 " submitted  %" PRIu64 " done  %.1f/s  %" PRIu64 " lost  %" PRIu64
                " chunks with errors  %" PRIu64 " retried  restarts %" PRIu64 "\n",
                p.submitted_items, p.completed_items, per_s, p.lost_items, p.error_chunks,
                p.retried_chunks, p.worker_restarts);
  o += buf;
  if (!p.worker_deaths.empty()) {
    o += "  worker deaths:";
    for (const auto& [cause, n] : p.worker_deaths) o += " " + cause + " " + std::to_string(n);
    o += "\n";
  }
  std::snprintf(buf, sizeof buf, "  %-14s %7s %-12s %-16s %6s %-13s %4s %7s %9s %10s\n", "WORKER", "PID",
                "STATE", "TASK", "CALL", "ITEMS", "HELD", "CHUNKS", "DONE", "RSS");
  o += buf;
  for (const WorkerStatus& w : p.workers) {
    std::string items = "-", call = "-";
    if (w.count > 0) {
      call = std::to_string(w.call_id);
      items = w.count == 1 ? std::to_string(w.start)
                           : std::to_string(w.start) + "-" + std::to_string(w.start + w.count - 1);
    }
    std::snprintf(buf, sizeof buf, "  %-14s %7d %-12s %-16s %6s %-13s %4u %7" PRIu64 " %9" PRIu64 " %10s\n",
                  w.name.c_str(), w.pid, w.state.c_str(), w.task.empty() ? "-" : w.task.c_str(), call.c_str(),
                  items.c_str(), w.held, w.chunks_done, w.items_done,
                  w.rss_bytes ? bytes_text(w.rss_bytes).c_str() : "-");
    o += buf;
  }
  return o;
}

int status(bool as_json) {
  const std::vector<PoolStatus> pools = mpx::router::live_pools();
  if (as_json) {
    std::string o = "[";
    for (std::size_t i = 0; i < pools.size(); ++i) o += (i ? "," : "") + json(pools[i]);
    std::printf("%s]\n", o.c_str());
    return 0;
  }
  if (pools.empty()) {
    std::printf("no live mpx pools of this user\n");
    return 0;
  }
  for (std::size_t i = 0; i < pools.size(); ++i) {
    std::printf("%s%s", i ? "\n" : "", text(pools[i], -1).c_str());
  }
  return 0;
}

termios saved_termios;
bool raw_mode = false;
void restore_terminal() {
  if (raw_mode) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios);
  raw_mode = false;
  if (::isatty(STDOUT_FILENO)) std::fputs("\x1b[?25h", stdout);  // cursor back
  std::fflush(stdout);
}
void on_signal(int sig) {
  restore_terminal();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

int top(std::chrono::milliseconds interval, long iterations) {
  const bool screen = ::isatty(STDOUT_FILENO);
  if (::isatty(STDIN_FILENO) && ::tcgetattr(STDIN_FILENO, &saved_termios) == 0) {
    termios raw = saved_termios;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    raw_mode = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
  }
  std::atexit(restore_terminal);
  ::signal(SIGINT, on_signal);
  ::signal(SIGTERM, on_signal);
  if (screen) std::fputs("\x1b[?25l", stdout);  // no cursor flicker
  // Items done per pool at the last screen, for the rate over the interval.
  std::map<int, std::pair<std::uint64_t, std::chrono::steady_clock::time_point>> last;
  for (long n = 0; iterations <= 0 || n < iterations; ++n) {
    const auto now = std::chrono::steady_clock::now();
    const std::vector<PoolStatus> pools = mpx::router::live_pools();
    std::string o = screen ? "\x1b[H\x1b[2J" : "";
    char head[128];
    const std::time_t t = std::time(nullptr);
    char clock[16];
    std::strftime(clock, sizeof clock, "%H:%M:%S", std::localtime(&t));
    std::snprintf(head, sizeof head, "mpx top - %s - %zu pool%s%s\n\n", clock, pools.size(),
                  pools.size() == 1 ? "" : "s", raw_mode ? " - q quits" : "");
    o += head;
    if (pools.empty()) o += "no live mpx pools of this user\n";
    std::map<int, std::pair<std::uint64_t, std::chrono::steady_clock::time_point>> seen;
    for (const PoolStatus& p : pools) {
      double rate = -1;
      auto before = last.find(p.router_pid);
      if (before != last.end()) {
        const double dt = std::chrono::duration<double>(now - before->second.second).count();
        if (dt > 0) rate = static_cast<double>(p.completed_items - before->second.first) / dt;
      }
      seen[p.router_pid] = {p.completed_items, now};
      o += text(p, rate) + "\n";
    }
    last = std::move(seen);
    std::fwrite(o.data(), 1, o.size(), stdout);
    std::fflush(stdout);
    if (iterations > 0 && n + 1 >= iterations) break;
    // Wait for the interval, or for q.
    const auto until = now + interval;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd p{STDIN_FILENO, POLLIN, 0};
      const int ready = ::poll(&p, raw_mode ? 1 : 0, static_cast<int>(left.count()));
      if (ready > 0) {
        char c = 0;
        const ssize_t got = ::read(STDIN_FILENO, &c, 1);
        if (got == 0) {
          ::usleep(static_cast<useconds_t>(left.count()) * 1000);  // stdin closed: just wait
          break;
        }
        if (c == 'q' || c == 'Q') return 0;
      }
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage("no command given");
  const std::string command = argv[1];
  if (command == "status") {
    bool as_json = false;
    for (int i = 2; i < argc; ++i) {
      if (std::strcmp(argv[i], "--json") == 0) {
        as_json = true;
      } else {
        return usage((std::string("status: unknown option '") + argv[i] + "'").c_str());
      }
    }
    return status(as_json);
  }
  if (command == "top") {
    long interval_ms = 1000, iterations = 0;
    for (int i = 2; i < argc; ++i) {
      const std::string opt = argv[i];
      if ((opt == "--interval-ms" || opt == "--iterations") && i + 1 < argc) {
        char* end = nullptr;
        const long v = std::strtol(argv[++i], &end, 10);
        if (*end != '\0' || v < (opt == "--interval-ms" ? 10 : 1)) {
          return usage(("top: " + opt + " wants a number (at least " +
                        (opt == "--interval-ms" ? "10" : "1") + "), not '" + argv[i] + "'").c_str());
        }
        (opt == "--interval-ms" ? interval_ms : iterations) = v;
      } else {
        return usage(("top: unknown option '" + opt + "'").c_str());
      }
    }
    return top(std::chrono::milliseconds(interval_ms), iterations);
  }
  if (command == "--help" || command == "-h" || command == "help") {
    usage("what the pools of this user are doing");
    return 0;
  }
  return usage(("unknown command '" + command + "'").c_str());
}
