// The pipeline engine: one pool per stage, one thread per stage that feeds it (the
// "mover"), and each stage's finished items kept as encoded bytes until the next stage,
// or the caller, takes them.
//
// Flow of an item: the first mover packs source items into a chunk and submits it to
// stage 1's pool; the pool's result pump hands the answer to the stage's StageCall,
// which slices it into items (a flat_map answer into its elements) without decoding
// them; stage 2's mover takes up to a batch of those items, copies their bytes into a
// new chunk and submits it; and so on. The caller decodes the last stage's items.
//
// Backpressure: a stage's held items (submitted and not answered, plus finished and
// not taken) never exceed its buffer before its mover submits more: the mover waits on
// the stage's cap_cv, which takers notify.
//
// Locks: a stage's state is guarded by its pool's mutex (CallBase::mu(), the one the
// pool publishes under and evaluates pool_wait predicates under). A thread holds at
// most one pool mutex at a time and calls no pool or fail() while holding one. The
// capacity counters are atomics so that cap_cv's predicate needs only cap_mu.
//
// Failure: the first error is kept and every wait in the run also wakes on failed_:
// pool waits through PoolCore::interrupt, capacity waits through cap_cv. The caller's
// thread then terminates the pools, joins the movers and throws.
#include "mpx/pipeline.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <thread>

#include "framework/pool/pool_core.h"
#include "mpx/runtime.h"

namespace mpx {
namespace detail {
namespace {

// An error's message, for the messages that wrap it.
std::string what_of(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

// A stage's call accepts chunks for as long as the run lasts.
constexpr std::uint64_t kOpenEnded = std::numeric_limits<std::uint64_t>::max();
constexpr std::size_t kMaxAutoBatch = 512;
// Dropped items (skip_errors) logged at warning level per stage; the rest at debug.
constexpr std::uint64_t kSkipWarnings = 10;

// Thrown inside a mover when the run already failed or was cancelled: it just ends.
struct Stopped {};

// Skips the msgpack object at data[off] without building it. False when it is
// malformed or truncated.
bool skip_object(const char* data, std::size_t size, std::size_t& off) {
  msgpack::null_visitor visitor;
  try {
    return msgpack::parse(data, size, off, visitor);
  } catch (const std::exception&) {
    return false;
  }
}

// Finished items of one answered chunk: item i is bytes[spans[i]].
struct Piece {
  std::string bytes;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> spans;  // offset, length
  std::vector<std::uint64_t> origins;                          // source positions
  std::uint64_t input_count = 0;  // items of the chunk it answers
  std::uint64_t first_index = 0;  // position of spans[0] in the stage's output
  std::size_t taken = 0;          // spans already taken by the next stage
  std::size_t left() const { return spans.size() - taken; }
};

// A chunk sent and not yet answered.
struct SentChunk {
  std::uint32_t count = 0;
  std::vector<std::uint64_t> origins;
  std::size_t bytes = 0;
  Pins pins;  // shared objects named by source items live until the answer
};

// A chunk being built by a mover: a 5-byte array32 header, patched once the count is
// known, then the items' bytes.
struct Chunk {
  Chunk() { buf.write("\xdd\0\0\0\0", 5); }
  Buffer buf;
  std::uint32_t count = 0;
  std::vector<std::uint64_t> origins;
  Pins pins;
  void seal() {
    auto* p = reinterpret_cast<unsigned char*>(buf.data());
    p[1] = static_cast<unsigned char>(count >> 24);
    p[2] = static_cast<unsigned char>(count >> 16);
    p[3] = static_cast<unsigned char>(count >> 8);
    p[4] = static_cast<unsigned char>(count);
  }
};

void name_thread(const std::string& name) { pthread_setname_np(pthread_self(), name.c_str()); }

}  // namespace

class StageCall;

struct Stage {
  // Set before the movers start; immutable afterwards.
  PipelineRunCore* run = nullptr;
  std::size_t number = 0;  // 1-based, as in PipelineError::stage()
  std::string name;
  StageKind kind = StageKind::kMap;
  int workers = 1;
  bool ordered = true;
  bool skip_errors = false;
  std::size_t buffer_items = 1;
  std::size_t buffer_bytes = 0;
  std::size_t batch = 0;  // 0: automatic
  std::shared_ptr<PoolCore> pool;
  std::shared_ptr<StageCall> call;

  // Guarded by the pool's mutex (mu()).
  std::map<std::uint64_t, SentChunk> sent;  // by start
  std::map<std::uint64_t, Piece> finished;  // ordered: answered, waiting for earlier ones
  std::uint64_t release_next = 0;           // ordered: start of the next chunk to pass on
  std::deque<Piece> ready;                  // passed on, not yet taken
  std::uint64_t submitted = 0;              // items sent (the next chunk's start)
  std::uint64_t done = 0;                   // items answered or lost
  std::uint64_t failed = 0;                 // items dropped by skip_errors
  std::uint64_t out = 0;                    // items passed on
  std::uint64_t buffered = 0;               // items in finished and ready
  bool input_closed = false;

  // Items and bytes held (in flight plus finished and not taken): written under mu(),
  // read by the capacity wait under cap_mu.
  std::atomic<std::uint64_t> held_items{0};
  std::atomic<std::uint64_t> held_bytes{0};
  std::mutex cap_mu;
  std::condition_variable cap_cv;

  std::uint64_t chunks_sent = 0;  // the mover's own

  std::mutex& mu();
  bool finished_locked() const { return input_closed && done == submitted && finished.empty(); }
  void notify_capacity() {
    { std::lock_guard<std::mutex> lock(cap_mu); }
    cap_cv.notify_all();
  }
};

// Source items packed by the source thread, one at a time, for the first mover. Every
// item is published as soon as the source returns it, so a source that then blocks
// (a Feed waiting for the pipeline's own results) never holds back items already read.
struct SourceBuffer {
  std::mutex mu;
  std::condition_variable items_cv;  // the first mover waits for items
  std::condition_variable room_cv;   // the source thread waits for room
  // All guarded by mu. Items [head, ends.size()) are waiting; item i's bytes end at
  // ends[i] and begin where item i-1's end (0 for the first).
  std::string bytes;
  std::vector<std::size_t> ends;
  std::vector<Pins> pins;  // per item: shared objects it names
  std::size_t head = 0;
  std::uint64_t next_origin = 0;  // source position of item head
  bool ended = false;
  std::size_t capacity = 1;
  std::size_t waiting() const { return ends.size() - head; }
};

class PipelineRunCore {
 public:
  explicit PipelineRunCore(std::shared_ptr<const PipelinePlan> plan) : plan_(std::move(plan)) {}
  ~PipelineRunCore() { cancel(); }

  void start();
  bool next_batch(OutputBatch& out);
  std::vector<StageProgress> progress() const;
  void cancel();
  [[noreturn]] void fail_output(std::uint64_t index, std::uint64_t origin, const std::exception& e);

  // From the stages' StageCalls, on a pool's pumping thread with no pool mutex held.
  void on_results(Stage& s, std::uint64_t start, std::uint32_t count, const char* data,
                  std::size_t size, bool has_errors, pid_t worker_pid);
  void on_lost(Stage& s, const std::vector<std::uint64_t>& indices, pid_t worker_pid,
               const std::string& reason, bool timed_out);
  void on_pool_failure(Stage& s, std::exception_ptr error);

 private:
  void read_source();
  void mover(std::size_t k);
  std::size_t wait_capacity(Stage& s);
  bool take_from_source(Stage& s, std::size_t room, Chunk& c);
  bool take_from_stage(Stage& up, std::size_t limit, Chunk& c);
  void submit(Stage& s, Chunk&& c);
  void close_input(Stage& s);
  // Passes piece on (ordered: once every earlier chunk has been). mu() held.
  void publish_locked(Stage& s, std::uint64_t start, Piece&& piece);
  void note_skipped(Stage& s, std::uint64_t item, std::uint64_t origin, const std::string& why);

  bool failed() const { return failed_.load(std::memory_order_acquire); }
  // Keeps the first error, wakes every wait of the run. No pool mutex may be held.
  void fail(std::exception_ptr error);
  void wake_all();
  // Stops the pools (at once when abort) and joins the movers; runs once.
  void teardown(bool abort);
  [[noreturn]] void throw_failure();
  std::exception_ptr stage_error(const Stage& s, std::optional<std::uint64_t> item,
                                 std::optional<std::uint64_t> origin, std::exception_ptr cause) const;
  // Most items per chunk: StageOptions::batch, or about a quarter of the buffer per
  // worker, so that every worker has chunks queued while the next stage drains.
  std::size_t batch_cap(const Stage& s) const;
  std::size_t source_batch(const Stage& s) const;

  std::shared_ptr<const PipelinePlan> plan_;
  std::vector<std::unique_ptr<Stage>> stages_;
  std::vector<std::thread> movers_;  // and the source thread, last
  SourceCursor source_;
  SourceBuffer source_buffer_;

  std::atomic<bool> failed_{false};  // a failure or a cancel: every wait ends
  std::atomic<bool> closing_{false};  // teardown began: pool failures are ours
  mutable std::mutex failure_mu_;
  std::exception_ptr failure_;  // guarded by failure_mu_
  bool cancelled_ = false;      // guarded by failure_mu_
  std::mutex teardown_mu_;
  bool torn_down_ = false;  // guarded by teardown_mu_
  // progress() reads the stages under their pools' mutexes, which die with the pools:
  // teardown takes the final figures first. Taken before any pool mutex.
  mutable std::mutex progress_mu_;
  std::optional<std::vector<StageProgress>> final_progress_;  // guarded by progress_mu_
  std::vector<StageProgress> live_progress() const;  // pools alive, progress_mu_ held
};

// The one open-ended call each stage has on its pool: answers go to the run.
class StageCall final : public CallBase {
 public:
  StageCall(const TaskEntry& task, Stage& stage) : CallBase(task, kOpenEnded), stage_(stage) {}
  bool accept_results(std::uint64_t start, std::uint32_t count, const char* data,
                      std::size_t size, bool has_errors, pid_t worker_pid) override {
    stage_.run->on_results(stage_, start, count, data, size, has_errors, worker_pid);
    return false;
  }
  bool accept_lost(const std::vector<std::uint64_t>& indices, pid_t worker_pid,
                   const std::string& reason, bool timed_out) override {
    stage_.run->on_lost(stage_, indices, worker_pid, reason, timed_out);
    return false;
  }
  void accept_failure(std::exception_ptr error) override { stage_.run->on_pool_failure(stage_, error); }

 private:
  Stage& stage_;
};

std::mutex& Stage::mu() { return call->mu(); }

// ---- Start ----------------------------------------------------------------------------

void PipelineRunCore::start() {
  const auto& specs = plan_->stages;
  for (std::size_t k = 0; k < specs.size(); ++k) {
    auto s = std::make_unique<Stage>();
    const StageOptions& o = specs[k].options;
    s->run = this;
    s->number = k + 1;
    s->name = o.name();
    s->kind = specs[k].kind;
    if (o.workers() < 0) {
      throw Error("pipeline stage " + s->name + ": workers must be at least 1 (or 0 for cpu_count())");
    }
    s->workers = o.workers() > 0 ? o.workers() : cpu_count();
    s->ordered = o.order() == Order::ordered;
    s->skip_errors = o.skip_errors();
    s->buffer_items = o.buffer();
    s->buffer_bytes = o.buffer_bytes();
    s->batch = o.batch();
    if (s->buffer_items == 0) throw Error("pipeline stage " + s->name + ": buffer must be at least 1 item");
    stages_.push_back(std::move(s));
  }
  // The pools start in parallel: each costs a router and its workers' start-up.
  std::vector<std::exception_ptr> errors(stages_.size());
  {
    std::vector<std::thread> starters;
    for (std::size_t k = 0; k < stages_.size(); ++k) {
      starters.emplace_back([this, k, &errors, &specs] {
        try {
          PoolOptions options = specs[k].options.pool();
          options.processes(stages_[k]->workers);
          stages_[k]->pool = std::make_shared<PoolCore>(options);
        } catch (...) {
          errors[k] = std::current_exception();
        }
      });
    }
    for (auto& t : starters) t.join();
  }
  for (std::size_t k = 0; k < stages_.size(); ++k) {
    if (errors[k]) {
      closing_ = true;
      for (auto& s : stages_) s->pool.reset();
      std::rethrow_exception(stage_error(*stages_[k], std::nullopt, std::nullopt, errors[k]));
    }
  }
  for (auto& s : stages_) {
    s->call = std::make_shared<StageCall>(*plan_->stages[s->number - 1].task, *s);
    pool_begin_call(*s->pool, s->call);
  }
  source_ = plan_->open_source();
  // Two of the largest chunks the first stage takes (not the first, slow-start one: an
  // unsized source's chunks grow from 1).
  source_buffer_.capacity = 2 * batch_cap(*stages_.front());
  for (std::size_t k = 0; k < stages_.size(); ++k) {
    movers_.emplace_back([this, k] {
      name_thread("mpx-stage-" + std::to_string(k + 1));
      mover(k);
    });
  }
  movers_.emplace_back([this] {
    name_thread("mpx-source");
    read_source();
  });
}

// ---- The source thread ----------------------------------------------------------------

void PipelineRunCore::read_source() {
  SourceBuffer& b = source_buffer_;
  Buffer item;
  msgpack::packer<Buffer> pk(item);
  for (std::uint64_t position = 0;; ++position) {
    {
      std::unique_lock<std::mutex> lock(b.mu);
      b.room_cv.wait(lock, [&] { return failed() || b.waiting() < b.capacity; });
      if (failed()) return;
    }
    item.clear();
    Pins pins;
    bool got = false;
    try {
      PinScope scope(pins);
      got = source_.pack(pk);
    } catch (...) {
      fail(pipeline_source_error(position, std::current_exception()));
      return;
    }
    {
      std::lock_guard<std::mutex> lock(b.mu);
      if (!got) {
        b.ended = true;
      } else {
        b.bytes.append(item.data(), item.size());
        b.ends.push_back(b.bytes.size());
        b.pins.push_back(std::move(pins));
      }
    }
    b.items_cv.notify_one();
    if (!got) return;
  }
}

// ---- The movers -----------------------------------------------------------------------

void PipelineRunCore::mover(std::size_t k) {
  Stage& s = *stages_[k];
  try {
    for (;;) {
      const std::size_t room = wait_capacity(s);
      Chunk c;
      const std::size_t limit = std::min(room, batch_cap(s));
      const bool more = k == 0 ? take_from_source(s, room, c) : take_from_stage(*stages_[k - 1], limit, c);
      if (c.count > 0) submit(s, std::move(c));
      if (!more) {
        close_input(s);
        return;
      }
    }
  } catch (const Stopped&) {
  } catch (...) {
    // Submitting failed: the pool broke, or a chunk is over max_message_bytes.
    fail(stage_error(s, std::nullopt, std::nullopt, std::current_exception()));
  }
}

std::size_t PipelineRunCore::wait_capacity(Stage& s) {
  std::unique_lock<std::mutex> lock(s.cap_mu);
  // The count the predicate saw: read again, it could be over the buffer already (a
  // flat_map's answers add items while this returns) and the room would wrap around.
  std::uint64_t items = 0;
  s.cap_cv.wait(lock, [&] {
    if (failed()) return true;
    items = s.held_items.load(std::memory_order_acquire);
    return items < s.buffer_items &&
           (items == 0 || s.held_bytes.load(std::memory_order_acquire) < s.buffer_bytes);
  });
  if (failed()) throw Stopped{};
  return s.buffer_items - items;
}

std::size_t PipelineRunCore::batch_cap(const Stage& s) const {
  if (s.batch) return s.batch;
  return std::clamp<std::size_t>(s.buffer_items / (4 * static_cast<std::size_t>(s.workers)), 1,
                                 kMaxAutoBatch);
}

std::size_t PipelineRunCore::source_batch(const Stage& s) const {
  const std::size_t cap = batch_cap(s);
  if (s.batch) return cap;
  if (plan_->source_size) return std::min(cap, auto_chunksize(*plan_->source_size, s.workers));
  // Unknown length: start small so that a short source still spreads over the workers.
  const std::uint64_t doubled = std::uint64_t{1} << std::min<std::uint64_t>(s.chunks_sent, 20);
  return static_cast<std::size_t>(std::min<std::uint64_t>(cap, doubled));
}

bool PipelineRunCore::take_from_source(Stage& s, std::size_t room, Chunk& c) {
  SourceBuffer& b = source_buffer_;
  const std::size_t limit = std::min(room, source_batch(s));
  {
    std::unique_lock<std::mutex> lock(b.mu);
    b.items_cv.wait(lock, [&] { return failed() || b.waiting() > 0 || b.ended; });
    if (failed()) throw Stopped{};
    const std::size_t n = std::min(limit, b.waiting());
    if (n == 0) return false;  // ended, and everything was taken
    const std::size_t begin = b.head == 0 ? 0 : b.ends[b.head - 1];
    const std::size_t end = b.ends[b.head + n - 1];
    c.buf.write(b.bytes.data() + begin, end - begin);
    for (std::size_t i = 0; i < n; ++i) {
      c.origins.push_back(b.next_origin + i);
      for (auto& pin : b.pins[b.head + i]) c.pins.push_back(std::move(pin));
    }
    c.count = static_cast<std::uint32_t>(n);
    b.head += n;
    b.next_origin += n;
    if (b.head == b.ends.size()) {
      b.bytes.clear();
      b.ends.clear();
      b.pins.clear();
      b.head = 0;
    } else if (b.head >= 1024 && b.head * 2 >= b.ends.size()) {
      // Compact: drop what was taken.
      const std::size_t cut = b.ends[b.head - 1];
      b.bytes.erase(0, cut);
      b.ends.erase(b.ends.begin(), b.ends.begin() + static_cast<std::ptrdiff_t>(b.head));
      for (auto& e : b.ends) e -= cut;
      b.pins.erase(b.pins.begin(), b.pins.begin() + static_cast<std::ptrdiff_t>(b.head));
      b.head = 0;
    }
  }
  b.room_cv.notify_one();
  return true;
}

bool PipelineRunCore::take_from_stage(Stage& up, std::size_t limit, Chunk& c) {
  pool_wait(
      *up.pool, [&] { return failed() || !up.ready.empty() || up.finished_locked(); },
      Clock::time_point::max());
  std::uint64_t bytes = 0;
  {
    std::lock_guard<std::mutex> lock(up.mu());
    if (failed()) throw Stopped{};
    if (up.ready.empty()) return false;  // every item of the stage before is through
    while (c.count < limit && !up.ready.empty()) {
      Piece& p = up.ready.front();
      const std::size_t n = std::min<std::size_t>(limit - c.count, p.left());
      // Adjacent spans (a map stage's answer without failures) go in one copy.
      std::size_t i = p.taken;
      const std::size_t end = p.taken + n;
      while (i < end) {
        const std::uint32_t run_begin = p.spans[i].first;
        std::uint32_t run_end = run_begin + p.spans[i].second;
        std::size_t j = i + 1;
        while (j < end && p.spans[j].first == run_end) run_end += p.spans[j++].second;
        c.buf.write(p.bytes.data() + run_begin, run_end - run_begin);
        bytes += run_end - run_begin;
        i = j;
      }
      c.origins.insert(c.origins.end(), p.origins.begin() + static_cast<std::ptrdiff_t>(p.taken),
                       p.origins.begin() + static_cast<std::ptrdiff_t>(end));
      c.count += static_cast<std::uint32_t>(n);
      p.taken = end;
      if (p.left() == 0) up.ready.pop_front();
    }
    up.buffered -= c.count;
    up.held_items.fetch_sub(c.count, std::memory_order_acq_rel);
    up.held_bytes.fetch_sub(bytes, std::memory_order_acq_rel);
  }
  up.notify_capacity();
  return true;
}

void PipelineRunCore::submit(Stage& s, Chunk&& c) {
  c.seal();
  const std::uint32_t count = c.count;
  const std::size_t bytes = c.buf.size();
  std::uint64_t start;
  {
    std::lock_guard<std::mutex> lock(s.mu());
    start = s.submitted;
    s.submitted += count;
    SentChunk sent;
    sent.count = count;
    sent.origins = std::move(c.origins);
    sent.bytes = bytes;
    sent.pins = std::move(c.pins);
    s.sent.emplace(start, std::move(sent));
    s.held_items.fetch_add(count, std::memory_order_acq_rel);
    s.held_bytes.fetch_add(bytes, std::memory_order_acq_rel);
  }
  ++s.chunks_sent;
  pool_send_chunk(*s.pool, *s.call, start, count, std::move(c.buf));
  pool_flush(*s.pool);
}

void PipelineRunCore::close_input(Stage& s) {
  {
    std::lock_guard<std::mutex> lock(s.mu());
    s.input_closed = true;
  }
  s.pool->interrupt();  // the taker may be waiting for exactly this
}

// ---- Answers from the pools -----------------------------------------------------------

void PipelineRunCore::publish_locked(Stage& s, std::uint64_t start, Piece&& piece) {
  s.buffered += piece.spans.size();
  if (!s.ordered) {
    piece.first_index = s.out;
    s.out += piece.spans.size();
    if (!piece.spans.empty()) s.ready.push_back(std::move(piece));
    return;
  }
  s.finished.emplace(start, std::move(piece));
  while (!s.finished.empty() && s.finished.begin()->first == s.release_next) {
    auto node = s.finished.extract(s.finished.begin());
    Piece& p = node.mapped();
    s.release_next += p.input_count;
    p.first_index = s.out;
    s.out += p.spans.size();
    if (!p.spans.empty()) s.ready.push_back(std::move(p));
  }
}

void PipelineRunCore::note_skipped(Stage& s, std::uint64_t item, std::uint64_t origin,
                                   const std::string& why) {
  std::uint64_t n;
  {
    std::lock_guard<std::mutex> lock(s.mu());
    n = ++s.failed;
  }
  auto level = n <= kSkipWarnings ? spdlog::level::warn : spdlog::level::debug;
  logger().log(level, "pipeline stage {} {}: dropped item {} (source item {}): {}{}", s.number,
               s.name, item, origin, why,
               n == kSkipWarnings ? " (further drops of this stage are logged at debug level)" : "");
}

void PipelineRunCore::on_results(Stage& s, std::uint64_t start, std::uint32_t count,
                                 const char* data, std::size_t size, bool has_errors,
                                 pid_t worker_pid) {
  SentChunk sent;
  {
    std::lock_guard<std::mutex> lock(s.mu());
    auto it = s.sent.find(start);
    // Not ours (any more): an answer to a chunk already reported lost, or one that does
    // not match what was sent. Its items were accounted for once already.
    if (it == s.sent.end() || it->second.count != count) return;
    sent = std::move(it->second);
    s.sent.erase(it);
  }
  // Slice the answer: each value's bytes, and the failed items.
  std::vector<std::pair<std::size_t, std::size_t>> values;
  std::vector<ErrorInfo> errors;
  std::exception_ptr unreadable;
  try {
    std::size_t off = 0;
    if (read_array_header(data, size, off) != count) {
      throw DecodeError("a result chunk holds another number of items than its header says");
    }
    values.reserve(count);
    for (std::uint32_t i = 0; i < count; ++i) {
      const std::size_t begin = off;
      if (!skip_object(data, size, off)) throw DecodeError("a result chunk is truncated or malformed");
      values.emplace_back(begin, off - begin);
    }
    if (has_errors) errors = read_error_list(data, size, off, count);
  } catch (...) {
    unreadable = std::current_exception();
  }

  Piece piece;
  piece.input_count = count;
  std::exception_ptr first_error;
  std::vector<std::pair<std::uint64_t, std::string>> dropped;  // (index in chunk, why)
  if (unreadable) {
    if (s.skip_errors) {
      for (std::uint32_t i = 0; i < count; ++i) dropped.emplace_back(i, "unreadable answer");
    } else {
      first_error = stage_error(s, start, sent.origins.at(0), unreadable);
    }
  } else {
    const std::size_t region_begin = values.empty() ? 0 : values.front().first;
    const std::size_t region_end = values.empty() ? 0 : values.back().first + values.back().second;
    piece.bytes.assign(data + region_begin, region_end - region_begin);
    std::size_t next_error = 0;
    for (std::uint32_t i = 0; i < count; ++i) {
      if (next_error < errors.size() && errors[next_error].item == i) {
        const ErrorInfo& e = errors[next_error++];
        if (s.skip_errors) {
          dropped.emplace_back(i, e.type + ": " + e.message);
        } else if (!first_error) {
          first_error = stage_error(s, start + i, sent.origins[i], s.call->make_remote_error(start, e, worker_pid));
        }
        continue;
      }
      const auto rel = static_cast<std::uint32_t>(values[i].first - region_begin);
      const auto len = static_cast<std::uint32_t>(values[i].second);
      if (s.kind == StageKind::kMap) {
        piece.spans.emplace_back(rel, len);
        piece.origins.push_back(sent.origins[i]);
        continue;
      }
      // flat_map: the value is a sequence; its elements go on one by one.
      std::size_t off = 0;
      const char* v = piece.bytes.data() + rel;
      try {
        const std::uint32_t n = read_array_header(v, len, off);
        for (std::uint32_t j = 0; j < n; ++j) {
          const std::size_t begin = off;
          if (!skip_object(v, len, off)) throw DecodeError("a flat_map result is truncated");
          piece.spans.emplace_back(static_cast<std::uint32_t>(rel + begin),
                                   static_cast<std::uint32_t>(off - begin));
          piece.origins.push_back(sent.origins[i]);
        }
      } catch (const std::exception& e) {
        auto cause = std::make_exception_ptr(DecodeError(
            "task '" + std::string(s.call->task().name) +
            "': a flat_map stage's result must be a sequence: " + e.what()));
        if (s.skip_errors) {
          dropped.emplace_back(i, e.what());
        } else if (!first_error) {
          first_error = stage_error(s, start + i, sent.origins[i], cause);
        }
      }
    }
  }
  std::uint64_t out_bytes = 0;
  for (const auto& span : piece.spans) out_bytes += span.second;
  const std::uint64_t outputs = piece.spans.size();
  {
    std::lock_guard<std::mutex> lock(s.mu());
    s.done += count;
    s.held_items.fetch_add(outputs, std::memory_order_acq_rel);
    s.held_items.fetch_sub(count, std::memory_order_acq_rel);
    s.held_bytes.fetch_add(out_bytes, std::memory_order_acq_rel);
    s.held_bytes.fetch_sub(sent.bytes, std::memory_order_acq_rel);
    publish_locked(s, start, std::move(piece));
  }
  for (const auto& [i, why] : dropped) note_skipped(s, start + i, sent.origins[i], why);
  s.notify_capacity();
  if (first_error) fail(first_error);
}

void PipelineRunCore::on_lost(Stage& s, const std::vector<std::uint64_t>& indices, pid_t worker_pid,
                              const std::string& reason, bool timed_out) {
  std::exception_ptr cause = s.call->make_lost_error(indices, worker_pid, reason, timed_out);
  std::vector<std::pair<std::uint64_t, SentChunk>> lost;
  {
    std::lock_guard<std::mutex> lock(s.mu());
    // Lost items come as whole chunks, by ascending index.
    std::size_t i = 0;
    while (i < indices.size()) {
      auto it = s.sent.find(indices[i]);
      if (it == s.sent.end()) {
        ++i;
        continue;
      }
      const std::uint64_t start = it->first;
      const std::uint64_t end = start + it->second.count;
      while (i < indices.size() && indices[i] < end) ++i;
      s.done += it->second.count;
      s.held_items.fetch_sub(it->second.count, std::memory_order_acq_rel);
      s.held_bytes.fetch_sub(it->second.bytes, std::memory_order_acq_rel);
      Piece empty;
      empty.input_count = it->second.count;
      publish_locked(s, start, std::move(empty));
      lost.emplace_back(start, std::move(it->second));
      s.sent.erase(it);
    }
  }
  s.notify_capacity();
  if (lost.empty()) return;
  if (!s.skip_errors) {
    fail(stage_error(s, lost.front().first, lost.front().second.origins.at(0), cause));
    return;
  }
  const std::string why = what_of(cause);
  for (const auto& [start, chunk] : lost) {
    for (std::uint32_t i = 0; i < chunk.count; ++i) note_skipped(s, start + i, chunk.origins[i], why);
  }
}

void PipelineRunCore::on_pool_failure(Stage& s, std::exception_ptr error) {
  if (closing_.load(std::memory_order_acquire)) return;  // our own teardown stops the pools
  fail(stage_error(s, std::nullopt, std::nullopt, error));
}

// ---- The caller's side ----------------------------------------------------------------

bool PipelineRunCore::next_batch(OutputBatch& out) {
  {
    // Over already (a failure thrown once, the end reached, a cancel): the pools are
    // gone; say so again rather than touch them.
    std::lock_guard<std::mutex> lock(teardown_mu_);
    if (torn_down_) {
      std::lock_guard<std::mutex> failure(failure_mu_);
      if (failure_) std::rethrow_exception(failure_);
      return false;
    }
  }
  Stage& last = *stages_.back();
  pool_wait(
      *last.pool, [&] { return failed() || !last.ready.empty() || last.finished_locked(); },
      Clock::time_point::max());
  bool got = false;
  {
    std::lock_guard<std::mutex> lock(last.mu());
    if (!failed() && !last.ready.empty()) {
      Piece p = std::move(last.ready.front());
      last.ready.pop_front();
      // Nothing takes part of the last stage's pieces: they are handed over whole.
      out.spans = std::move(p.spans);
      out.origins = std::move(p.origins);
      out.first_index = p.first_index;
      out.bytes = std::move(p.bytes);
      std::uint64_t bytes = 0;
      for (const auto& span : out.spans) bytes += span.second;
      const std::uint64_t n = out.spans.size();
      last.buffered -= n;
      last.held_items.fetch_sub(n, std::memory_order_acq_rel);
      last.held_bytes.fetch_sub(bytes, std::memory_order_acq_rel);
      got = true;
    }
  }
  if (got) {
    last.notify_capacity();
    return true;
  }
  if (failed()) {
    teardown(true);
    throw_failure();
  }
  teardown(false);
  return false;
}

std::vector<StageProgress> PipelineRunCore::progress() const {
  std::lock_guard<std::mutex> lock(progress_mu_);
  return final_progress_ ? *final_progress_ : live_progress();
}

std::vector<StageProgress> PipelineRunCore::live_progress() const {
  std::vector<StageProgress> out;
  for (const auto& s : stages_) {
    StageProgress p;
    p.name = s->name;
    p.workers = s->workers;
    if (s->call && s->pool) {
      std::lock_guard<std::mutex> lock(s->mu());
      p.in = s->submitted;
      p.done = s->done;
      p.in_flight = s->submitted - s->done;
      p.out = s->out;
      p.buffered = s->buffered;
      p.failed = s->failed;
      p.finished = s->finished_locked() && s->ready.empty();
    }
    out.push_back(std::move(p));
  }
  return out;
}

void PipelineRunCore::cancel() {
  {
    std::lock_guard<std::mutex> lock(failure_mu_);
    if (!failure_) cancelled_ = true;
  }
  failed_.store(true, std::memory_order_release);
  wake_all();
  teardown(true);
}

void PipelineRunCore::fail_output(std::uint64_t index, std::uint64_t origin, const std::exception& e) {
  const Stage& last = *stages_.back();
  fail(stage_error(last, index, origin,
                   std::make_exception_ptr(DecodeError(
                       std::string("a result did not decode as the pipeline's item type: ") + e.what()))));
  teardown(true);
  throw_failure();
}

void PipelineRunCore::fail(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(failure_mu_);
    if (failure_ || cancelled_) return;
    failure_ = std::move(error);
  }
  failed_.store(true, std::memory_order_release);
  wake_all();
}

void PipelineRunCore::wake_all() {
  {
    std::lock_guard<std::mutex> lock(source_buffer_.mu);
  }
  source_buffer_.items_cv.notify_all();
  source_buffer_.room_cv.notify_all();
  for (auto& s : stages_) {
    s->notify_capacity();
    if (s->pool) s->pool->interrupt();
  }
}

void PipelineRunCore::teardown(bool abort) {
  std::lock_guard<std::mutex> lock(teardown_mu_);
  if (torn_down_) return;
  torn_down_ = true;
  closing_.store(true, std::memory_order_release);
  // Killing the workers first ends what they run and wakes any mover blocked on a pool.
  if (abort) {
    // A source waiting in a Feed stops waiting; any other source returns on its own.
    if (source_.interrupt) source_.interrupt();
    for (auto& s : stages_) {
      if (s->pool) s->pool->terminate();
    }
  }
  for (auto& t : movers_) {
    if (t.joinable()) t.join();
  }
  {
    std::lock_guard<std::mutex> lock(progress_mu_);
    final_progress_ = live_progress();
  }
  // The routers stop their workers and exit; in parallel, each takes a few ms.
  std::vector<std::thread> stoppers;
  for (auto& s : stages_) {
    if (!s->pool) continue;
    if (!abort && s->call) pool_abandon_call(*s->pool, *s->call);
    stoppers.emplace_back([pool = std::move(s->pool)]() mutable { pool.reset(); });
  }
  for (auto& t : stoppers) t.join();
}

void PipelineRunCore::throw_failure() {
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(failure_mu_);
    error = failure_;
  }
  if (error) std::rethrow_exception(error);
  throw PipelineError("pipeline run was cancelled", 0, "", std::nullopt, std::nullopt, nullptr);
}

std::exception_ptr PipelineRunCore::stage_error(const Stage& s, std::optional<std::uint64_t> item,
                                                std::optional<std::uint64_t> origin,
                                                std::exception_ptr cause) const {
  std::string what = "pipeline stage " + std::to_string(s.number) + " " + s.name + " failed";
  if (item) what += " at item " + std::to_string(*item);
  if (origin) what += " (source item " + std::to_string(*origin) + ")";
  what += ": " + what_of(cause);
  return std::make_exception_ptr(PipelineError(what, s.number, s.name, item, origin, cause));
}

// ---- The functions the templates call -------------------------------------------------

std::exception_ptr pipeline_source_error(std::uint64_t position, std::exception_ptr cause) {
  return std::make_exception_ptr(
      PipelineError("pipeline source failed at item " + std::to_string(position) + ": " + what_of(cause),
                    0, "source", position, position, cause));
}

std::shared_ptr<PipelineRunCore> pipeline_start(std::shared_ptr<const PipelinePlan> plan) {
  auto run = std::make_shared<PipelineRunCore>(std::move(plan));
  run->start();
  return run;
}

bool pipeline_next_batch(PipelineRunCore& run, OutputBatch& out) { return run.next_batch(out); }

std::vector<StageProgress> pipeline_progress(const PipelineRunCore& run) { return run.progress(); }

void pipeline_cancel(PipelineRunCore& run) { run.cancel(); }

void pipeline_fail_output(PipelineRunCore& run, std::uint64_t index, std::uint64_t origin,
                          const std::exception& e) {
  run.fail_output(index, origin, e);
}

}  // namespace detail
}  // namespace mpx
