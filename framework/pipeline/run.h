// The pipeline engine's state, shared by its parts: run.cc (start, the caller's side,
// failure and teardown), movers.cc (the source thread and one mover thread per stage)
// and answers.cc (what each stage's pool answers).
//
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
#ifndef MPX_FRAMEWORK_PIPELINE_RUN_H_
#define MPX_FRAMEWORK_PIPELINE_RUN_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "framework/pool/pool_core.h"
#include "mpx/pipeline.h"

namespace mpx {
namespace detail {

// An error's message, for the messages that wrap it.
std::string what_of(const std::exception_ptr& error);
// Skips the msgpack object at data[off] without building it. False when it is
// malformed or truncated.
bool skip_object(const char* data, std::size_t size, std::size_t& off);
// Names the calling thread (seen in ps, top and debuggers).
void name_thread(const std::string& name);

// A stage's call accepts chunks for as long as the run lasts: its total is kOpenEnded
// (mpx/detail/call.h).
constexpr std::size_t kMaxAutoBatch = 512;
// Dropped items (skip_errors) logged at warning level per stage; the rest at debug.
constexpr std::uint64_t kSkipWarnings = 10;

// Thrown inside a mover when the run already failed or was cancelled: it just ends.
struct Stopped {};

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


}  // namespace detail
}  // namespace mpx

#endif  // MPX_FRAMEWORK_PIPELINE_RUN_H_
