// mpx — what the pools and actors of this user on this machine are doing.
//
//   mpx status          every live pool (its program, router, workers, queue, counters,
//                       node agents) and every live actor (class, name, state, calls)
//   mpx status --json   the same as one JSON document: {"pools": [...], "actors": [...]}
//   mpx top             the same, refreshed every second in the terminal (q quits)
//
// Found without a daemon: each router and each actor listens on an abstract unix socket
// named "@mpx-<pid namespace>-<pid>-status" (framework/router/status.h), which dies with
// it. Those of other users refuse the connection, so they are never shown.
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

using mpx::router::ActorStatus;
using mpx::router::LiveStatus;
using mpx::router::NodeStatus;
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

// Appends JSON object members to o; the caller closes the object (members end with ",").
struct JsonMembers {
  std::string& o;
  template <class T>
  void num(const char* k, T v) {
    o += json_string(k) + ":" + std::to_string(v) + ",";
  }
  void str(const char* k, const std::string& v) { o += json_string(k) + ":" + json_string(v) + ","; }
  void boolean(const char* k, bool v) { o += json_string(k) + ":" + (v ? "true," : "false,"); }
  // Replaces the last member's "," with close.
  void close(char close) {
    if (!o.empty() && o.back() == ',') o.pop_back();
    o += close;
  }
};

// items as a JSON array, each as one(item).
template <class T, class F>
std::string json_array(const std::vector<T>& items, F one) {
  std::string o = "[";
  for (std::size_t i = 0; i < items.size(); ++i) o += (i ? "," : "") + one(items[i]);
  return o + "]";
}

std::string json(const WorkerStatus& w) {
  std::string o = "{";
  JsonMembers m{o};
  m.num("pid", w.pid);
  m.str("host", w.host);
  m.str("name", w.name);
  m.str("state", w.state);
  m.str("task", w.task);
  m.num("call_id", w.call_id);
  m.num("start", w.start);
  m.num("count", w.count);
  m.num("held", w.held);
  m.num("chunks_done", w.chunks_done);
  m.num("items_done", w.items_done);
  m.num("rss_bytes", w.rss_bytes);
  m.close('}');
  return o;
}

std::string json(const NodeStatus& n) {
  std::string o = "{";
  JsonMembers m{o};
  m.str("place", n.place);
  m.str("host", n.host);
  m.num("agent_pid", n.agent_pid);
  m.num("slots", n.slots);
  m.num("workers", n.workers);
  m.boolean("connected", n.connected);
  m.num("joined_s_ago", n.joined_s_ago);
  m.num("heard_s_ago", n.heard_s_ago);
  m.str("lost", n.lost);
  m.close('}');
  return o;
}

std::string json(const PoolStatus& p) {
  std::string o = "{";
  JsonMembers m{o};
  m.num("router_pid", p.router_pid);
  m.num("driver_pid", p.driver_pid);
  m.str("program", p.program);
  m.num("workers_wanted", p.workers_wanted);
  m.num("worker_memory_limit", p.worker_memory_limit);
  m.str("endpoint", p.front_endpoint);
  m.str("listen_endpoint", p.listen_endpoint);
  m.str("broken", p.broken);
  m.num("uptime_s", p.uptime_s);
  m.num("queued_chunks", p.queued_chunks);
  m.num("in_flight_chunks", p.in_flight_chunks);
  m.num("submitted_items", p.submitted_items);
  m.num("completed_items", p.completed_items);
  m.num("lost_items", p.lost_items);
  m.num("error_chunks", p.error_chunks);
  m.num("retried_chunks", p.retried_chunks);
  m.num("taken_back_chunks", p.taken_back_chunks);
  m.num("worker_restarts", p.worker_restarts);
  m.num("bytes_in", p.bytes_in);
  m.num("bytes_out", p.bytes_out);
  m.num("items_per_s", p.uptime_s > 0 ? static_cast<double>(p.completed_items) / p.uptime_s : 0.0);
  o += "\"worker_deaths\":{";
  bool first = true;
  for (const auto& [cause, n] : p.worker_deaths) {
    o += (first ? "" : ",") + json_string(cause) + ":" + std::to_string(n);
    first = false;
  }
  o += "},\"workers\":" + json_array(p.workers, [](const WorkerStatus& w) { return json(w); });
  o += ",\"nodes\":" + json_array(p.nodes, [](const NodeStatus& n) { return json(n); });
  return o + "}";
}

std::string json(const ActorStatus& a) {
  std::string o = "{";
  JsonMembers m{o};
  m.num("pid", a.pid);
  m.num("driver_pid", a.driver_pid);
  m.num("owner_pid", a.owner_pid);
  m.str("program", a.program);
  m.str("class", a.class_name);
  m.str("name", a.name);
  m.str("state", a.state);
  m.str("method", a.method);
  m.num("calls_done", a.calls_done);
  m.num("calls_failed", a.calls_failed);
  m.num("callers", a.callers);
  m.num("incarnation", a.incarnation);
  m.num("restarts", a.restarts);
  m.num("uptime_s", a.uptime_s);
  m.num("rss_bytes", a.rss_bytes);
  m.str("endpoint", a.endpoint);
  m.close('}');
  return o;
}

std::string json(const LiveStatus& live) {
  return "{\"pools\":" + json_array(live.pools, [](const PoolStatus& p) { return json(p); }) +
         ",\"actors\":" + json_array(live.actors, [](const ActorStatus& a) { return json(a); }) + "}";
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
  // Wanted: this host's, and the slots of every connected node agent.
  int wanted = p.workers_wanted;
  for (const NodeStatus& n : p.nodes) wanted += n.connected ? n.slots : 0;
  std::snprintf(buf, sizeof buf,
                "  up %.1f s  workers %zu/%d  memory limit %s  queued %" PRIu64 " chunks  in flight %" PRIu64
                " chunks\n",
                p.uptime_s, p.workers.size(), wanted,
                p.worker_memory_limit ? bytes_text(p.worker_memory_limit).c_str() : "none", p.queued_chunks,
                p.in_flight_chunks);
  o += buf;
  std::snprintf(buf, sizeof buf,
                "  items %" PRIu64 " submitted  %" PRIu64 " done  %.1f/s  %" PRIu64 " lost  %" PRIu64
                " chunks with errors  %" PRIu64 " retried  %" PRIu64 " taken back  restarts %" PRIu64 "\n",
                p.submitted_items, p.completed_items, per_s, p.lost_items, p.error_chunks,
                p.retried_chunks, p.taken_back_chunks, p.worker_restarts);
  o += buf;
  if (!p.worker_deaths.empty()) {
    o += "  worker deaths:";
    for (const auto& [cause, n] : p.worker_deaths) o += " " + cause + " " + std::to_string(n);
    o += "\n";
  }
  if (!p.listen_endpoint.empty()) {
    o += "  node agents dial " + p.listen_endpoint + "\n";
    std::snprintf(buf, sizeof buf, "  %-32s %7s %5s %7s  %s\n", "NODE", "AGENT", "SLOTS", "WORKERS", "STATE");
    o += buf;
    for (const NodeStatus& n : p.nodes) {
      char state[256];
      if (n.connected) {
        std::snprintf(state, sizeof state, "connected %.0f s, heard %.1f s ago", n.joined_s_ago, n.heard_s_ago);
      } else {
        std::snprintf(state, sizeof state, "lost: %s", n.lost.c_str());
      }
      std::snprintf(buf, sizeof buf, "  %-32s %7lld %5d %7u  %s\n", n.host.c_str(),
                    static_cast<long long>(n.agent_pid), n.slots, n.workers, state);
      o += buf;
    }
    if (p.nodes.empty()) o += "  (no node agent has joined)\n";
  }
  bool remote = false;
  for (const WorkerStatus& w : p.workers) remote = remote || !w.host.empty();
  std::snprintf(buf, sizeof buf, "  %-14s %7s %-12s %-16s %6s %-13s %4s %7s %9s %10s%s\n", "WORKER", "PID",
                "STATE", "TASK", "CALL", "ITEMS", "HELD", "CHUNKS", "DONE", "RSS", remote ? "  HOST" : "");
  o += buf;
  for (const WorkerStatus& w : p.workers) {
    std::string items = "-", call = "-";
    if (w.count > 0) {
      call = std::to_string(w.call_id);
      items = w.count == 1 ? std::to_string(w.start)
                           : std::to_string(w.start) + "-" + std::to_string(w.start + w.count - 1);
    }
    std::snprintf(buf, sizeof buf, "  %-14s %7d %-12s %-16s %6s %-13s %4u %7" PRIu64 " %9" PRIu64 " %10s%s%s\n",
                  w.name.c_str(), w.pid, w.state.c_str(), w.task.empty() ? "-" : w.task.c_str(), call.c_str(),
                  items.c_str(), w.held, w.chunks_done, w.items_done,
                  w.rss_bytes ? bytes_text(w.rss_bytes).c_str() : "-", remote ? "  " : "",
                  remote ? (w.host.empty() ? "this host" : w.host.c_str()) : "");
    o += buf;
  }
  return o;
}

// The actors as text, one table per driver.
std::string text(const std::vector<ActorStatus>& actors) {
  std::string o;
  char buf[512];
  for (std::size_t i = 0; i < actors.size(); ++i) {
    const ActorStatus& a = actors[i];
    if (i == 0 || actors[i - 1].driver_pid != a.driver_pid) {
      std::snprintf(buf, sizeof buf, "%sactors  driver %d  %s\n", i ? "\n" : "", a.driver_pid, a.program.c_str());
      o += buf;
      std::snprintf(buf, sizeof buf, "  %-16s %-14s %7s %-20s %8s %7s %7s %8s %9s %10s\n", "ACTOR", "CLASS", "PID",
                    "STATE", "CALLS", "FAILED", "CALLERS", "RESTARTS", "UP", "RSS");
      o += buf;
    }
    const std::string state = a.method.empty() ? a.state : a.state + " " + a.method;
    char up[32];
    std::snprintf(up, sizeof up, "%.1f s", a.uptime_s);
    std::snprintf(buf, sizeof buf, "  %-16s %-14s %7d %-20s %8" PRIu64 " %7" PRIu64 " %7u %8u %9s %10s\n",
                  a.name.c_str(), a.class_name.c_str(), a.pid, state.c_str(), a.calls_done, a.calls_failed,
                  a.callers, a.restarts, up, a.rss_bytes ? bytes_text(a.rss_bytes).c_str() : "-");
    o += buf;
  }
  return o;
}

constexpr const char* kNothingLive = "no live mpx pools or actors of this user\n";

int status(bool as_json) {
  const LiveStatus live = mpx::router::live_status();
  if (as_json) {
    std::printf("%s\n", json(live).c_str());
    return 0;
  }
  if (live.pools.empty() && live.actors.empty()) {
    std::printf("%s", kNothingLive);
    return 0;
  }
  for (std::size_t i = 0; i < live.pools.size(); ++i) {
    std::printf("%s%s", i ? "\n" : "", text(live.pools[i], -1).c_str());
  }
  if (!live.actors.empty()) std::printf("%s%s", live.pools.empty() ? "" : "\n", text(live.actors).c_str());
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
    const LiveStatus live = mpx::router::live_status();
    const std::vector<PoolStatus>& pools = live.pools;
    std::string o = screen ? "\x1b[H\x1b[2J" : "";
    char head[128];
    const std::time_t t = std::time(nullptr);
    char clock[16];
    std::strftime(clock, sizeof clock, "%H:%M:%S", std::localtime(&t));
    std::snprintf(head, sizeof head, "mpx top - %s - %zu pool%s, %zu actor%s%s\n\n", clock, pools.size(),
                  pools.size() == 1 ? "" : "s", live.actors.size(), live.actors.size() == 1 ? "" : "s",
                  raw_mode ? " - q quits" : "");
    o += head;
    if (pools.empty() && live.actors.empty()) o += kNothingLive;
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
    if (!live.actors.empty()) o += text(live.actors);
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
    usage("what the pools and actors of this user are doing");
    return 0;
  }
  return usage(("unknown command '" + command + "'").c_str());
}
