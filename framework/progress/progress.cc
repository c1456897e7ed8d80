#include "mpx/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "mpx/runtime.h"

namespace mpx {
namespace detail {
namespace {

constexpr auto kTerminalEvery = std::chrono::milliseconds(100);
constexpr auto kLogEvery = std::chrono::seconds(10);

// "01:05", or "1:02:03" past an hour.
std::string clock_text(double seconds) {
  const auto s = static_cast<long>(std::max(0.0, seconds));
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
  }
  return buf;
}

std::string rate_text(double per_s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, per_s >= 100 ? "%.0f/s" : "%.1f/s", per_s);
  return buf;
}

int terminal_width() {
  winsize ws{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

}  // namespace

std::string format_progress(const ProgressLine& line, double elapsed_s, bool terminal, int width) {
  const double rate = elapsed_s > 0 ? static_cast<double>(line.done) / elapsed_s : 0.0;
  const bool known = line.total > 0;
  const std::uint64_t done = known ? std::min(line.done, line.total) : line.done;
  const int percent = known ? static_cast<int>(100 * done / line.total) : 0;
  std::string counts = std::to_string(done) + (known ? "/" + std::to_string(line.total) : "");
  std::string tail;
  if (line.failed) tail += ", " + std::to_string(line.failed) + " failed";
  if (!line.extra.empty()) tail += ", " + line.extra;
  if (!terminal) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f s", elapsed_s);
    std::string out = line.label + ": " + counts;
    if (known) out += " (" + std::to_string(percent) + "%)";
    out += " in " + std::string(buf) + ", " + rate_text(rate);
    if (known && done < line.total && rate > 0) {
      std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(line.total - done) / rate);
      out += ", ETA " + std::string(buf);
    }
    return out + tail;
  }
  std::string times = clock_text(elapsed_s);
  if (known) {
    times += "<" + (rate > 0 ? clock_text(static_cast<double>(line.total - done) / rate) : std::string("?"));
  }
  const std::string right = " " + counts + " [" + times + ", " + rate_text(rate) + tail + "]";
  if (!known) return line.label + right;
  char pct[8];
  std::snprintf(pct, sizeof pct, "%3d%%", percent);
  const std::string left = line.label + " " + pct + " [";
  // The bar takes what the text leaves of the width, within 10..40 columns.
  const int room = width - static_cast<int>(left.size() + right.size()) - 1;
  const int bar = std::clamp(room, 10, 40);
  const int full = static_cast<int>(static_cast<std::uint64_t>(bar) * done / line.total);
  return left + std::string(full, '#') + std::string(bar - full, '.') + "]" + right;
}

ProgressDisplay::ProgressDisplay() : start_(std::chrono::steady_clock::now()) {
  const char* env = std::getenv("MPX_PROGRESS");
  if (env != nullptr && std::strcmp(env, "0") == 0) {
    mode_ = Mode::kOff;
  } else {
    mode_ = ::isatty(STDERR_FILENO) ? Mode::kTerminal : Mode::kLog;
  }
  // The first periodic log line comes one interval in, not at once.
  last_draw_ = start_;
}

ProgressDisplay::~ProgressDisplay() {
  if (mode_ == Mode::kTerminal && drawn_lines_ > 0 && !finished_) std::fputs("\n", stderr);
}

std::chrono::milliseconds ProgressDisplay::slice() const {
  return mode_ == Mode::kTerminal ? kTerminalEvery : std::chrono::milliseconds(1000);
}

void ProgressDisplay::draw(const std::vector<ProgressLine>& lines, bool final) {
  if (mode_ == Mode::kOff || finished_) return;
  const auto now = std::chrono::steady_clock::now();
  const auto every = mode_ == Mode::kTerminal ? std::chrono::steady_clock::duration(kTerminalEvery)
                                              : std::chrono::steady_clock::duration(kLogEvery);
  if (!final && now - last_draw_ < every) return;
  last_draw_ = now;
  finished_ = final;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  if (mode_ == Mode::kLog) {
    for (const ProgressLine& line : lines) logger().info("{}", format_progress(line, elapsed, false, 0));
    return;
  }
  // Back to the first line drawn last time, then each line over its old self.
  std::string out;
  if (drawn_lines_ > 1) out += "\x1b[" + std::to_string(drawn_lines_ - 1) + "A";
  out += "\r";
  const int width = terminal_width();
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (i) out += "\n";
    out += format_progress(lines[i], elapsed, true, width);
    out += "\x1b[K";  // clears what a longer old line left
  }
  if (final) out += "\n";
  drawn_lines_ = lines.size();
  std::fwrite(out.data(), 1, out.size(), stderr);
  std::fflush(stderr);
}

}  // namespace detail
}  // namespace mpx
