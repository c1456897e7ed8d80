// mpx/progress.h — progress bars for long maps and pipelines, like Python's tqdm.
//
//   for (int v : mpx::progress(pool.imap(square, xs), "squares")) use(v);
//   std::vector<int> sq = pool.map(square, xs, mpx::MapOptions().progress("squares"));
//   for (auto& w : mpx::progress(flow.start())) use(w);     // one line per stage
//
// On stderr. When stderr is a terminal: a bar redrawn in place at most every 100 ms
//   squares  42% [###########...............] 420/1000 [00:03<00:04, 120.5/s, 2 failed]
// Otherwise (a log file, a pipe): a plain log line every 10 s and one at the end
//   squares: 1000/1000 (100%) in 8.3 s, 120.5/s, 2 failed
// Nothing at all with MPX_PROGRESS=0 in the environment.
//
// Cost: the wrapper counts the items it hands out; the pool's hot path is untouched.
// Drawing happens in the consuming thread, while it waits for the next item.
//
// Thread safety: a Progress is used from the one thread that iterates it, like the
// iterator it wraps. Failures are items whose next() threw: they are counted, and the
// exception propagates to the caller unchanged.
#ifndef MPX_PROGRESS_H_
#define MPX_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpx/detail/next_iterator.h"

namespace mpx {
namespace detail {

// One line of a display: a map's, or one pipeline stage's.
struct ProgressLine {
  std::string label;
  std::uint64_t done = 0;
  std::uint64_t total = 0;  // 0: unknown (a pipeline stage): no bar, no ETA
  std::uint64_t failed = 0;
  std::string extra;  // appended as is ("3 in flight, 12 buffered")
};

// The line as shown: a bar `width` columns wide at most (terminal), or a log line.
std::string format_progress(const ProgressLine& line, double elapsed_s, bool terminal, int width);

// Where progress is drawn (stderr), and how often. Defined in framework/progress.
class ProgressDisplay {
 public:
  ProgressDisplay();
  ~ProgressDisplay();  // leaves the cursor on a fresh line
  ProgressDisplay(const ProgressDisplay&) = delete;
  ProgressDisplay& operator=(const ProgressDisplay&) = delete;

  // False with MPX_PROGRESS=0: draw() does nothing.
  bool enabled() const { return mode_ != Mode::kOff; }
  // How long a consumer may wait for its next item before it should redraw.
  std::chrono::milliseconds slice() const;
  // Draws lines if the last draw is old enough (always when final). The final draw of
  // a terminal display ends the line; a log display then writes its last line.
  void draw(const std::vector<ProgressLine>& lines, bool final);

 private:
  enum class Mode { kOff, kTerminal, kLog };
  Mode mode_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_{};
  std::size_t drawn_lines_ = 0;  // terminal: lines to move up before redrawing
  bool finished_ = false;
};

template <class S, class = void>
struct HasStages : std::false_type {};
template <class S>
struct HasStages<S, std::void_t<decltype(std::declval<const S&>().progress())>> : std::true_type {};
template <class S, class = void>
struct HasWaitFor : std::false_type {};
template <class S>
struct HasWaitFor<S, std::void_t<decltype(std::declval<S&>().wait_for(std::chrono::milliseconds(1)))>>
    : std::true_type {};

}  // namespace detail

// An iterable over what source yields (ImapIterator, PipelineRun), drawing progress as
// it goes. Made by mpx::progress(). Owns the source.
template <class Source>
class Progress {
 public:
  using value_type = typename decltype(std::declval<Source&>().next())::value_type;

  Progress(Source&& source, std::string label) : source_(std::move(source)), label_(std::move(label)) {}
  ~Progress() {
    if (!ended_) redraw(true);
  }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // The next item, or nullopt after the last one; throws the item's error (counted as
  // failed).
  std::optional<value_type> next() {
    if constexpr (detail::HasWaitFor<Source>::value) {
      if (display_.enabled()) {
        while (!source_.wait_for(display_.slice())) redraw(false);
      }
    }
    std::optional<value_type> v;
    try {
      v = source_.next();
    } catch (...) {
      ++done_;
      ++failed_;
      redraw(false);
      throw;
    }
    if (!v) {
      ended_ = true;
      redraw(true);
      return v;
    }
    ++done_;
    redraw(false);
    return v;
  }
  std::uint64_t done() const { return done_; }
  std::uint64_t failed() const { return failed_; }
  Source& source() { return source_; }

  using iterator = detail::NextIterator<Progress, value_type>;
  iterator begin() { return iterator(this); }
  iterator end() { return iterator(); }

 private:
  void redraw(bool final) {
    if (!display_.enabled()) return;
    std::vector<detail::ProgressLine> lines;
    if constexpr (detail::HasStages<Source>::value) {
      for (const auto& s : source_.progress()) {
        detail::ProgressLine line;
        line.label = s.name;
        line.done = s.done;
        line.failed = s.failed;
        line.extra = std::to_string(s.in_flight) + " in flight, " + std::to_string(s.buffered) +
                     " buffered, " + std::to_string(s.workers) + " workers";
        lines.push_back(std::move(line));
      }
      detail::ProgressLine out;
      out.label = label_.empty() ? "output" : label_;
      out.done = done_;
      out.failed = failed_;
      lines.push_back(std::move(out));
    } else {
      detail::ProgressLine line;
      line.label = label_.empty() ? "imap" : label_;
      line.done = done_;
      line.total = source_.size();
      line.failed = failed_;
      lines.push_back(std::move(line));
    }
    display_.draw(lines, final);
  }

  Source source_;
  std::string label_;
  detail::ProgressDisplay display_;
  std::uint64_t done_ = 0;
  std::uint64_t failed_ = 0;
  bool ended_ = false;
};

// Wraps an imap / imap_unordered iterator or a pipeline run (moved in) so that
// iterating it draws progress on stderr (see the top of this file). label names the
// line: the default is "imap", or "output" for a pipeline's last line. Returned as a
// prvalue: iterate it in place (range-for) or bind it with auto&&.
template <class Source>
Progress<std::decay_t<Source>> progress(Source&& source, std::string label = "") {
  static_assert(!std::is_lvalue_reference_v<Source>,
                "mpx::progress takes the iterator by value: progress(pool.imap(...)) or "
                "progress(std::move(it))");
  return Progress<std::decay_t<Source>>(std::move(source), std::move(label));
}

// Per-call options of Pool::map / starmap: mpx::MapOptions().chunksize(8).progress("squares").
class MapOptions {
 public:
  // Items per chunk; 0 (default) picks one as Python does.
  MapOptions& chunksize(std::size_t n) {
    chunksize_ = n;
    return *this;
  }
  // Draws a progress bar labelled label on stderr while the map runs (see mpx::progress).
  MapOptions& progress(std::string label) {
    progress_ = std::move(label);
    return *this;
  }
  std::size_t chunksize() const { return chunksize_; }
  const std::optional<std::string>& progress() const { return progress_; }

 private:
  std::size_t chunksize_ = 0;
  std::optional<std::string> progress_;
};

}  // namespace mpx

#endif  // MPX_PROGRESS_H_
