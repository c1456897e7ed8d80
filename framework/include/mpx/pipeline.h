// mpx/pipeline.h — stages of work chained across processes, with bounded buffers
// between them.
//
//   std::string read_file(std::string path);                MPX_TASK(read_file);
//   std::vector<std::string> split_words(std::string text); MPX_TASK(split_words);
//   std::string normalise(std::string word);                MPX_TASK(normalise);
//
//   std::map<std::string, int> counts =
//       mpx::Pipeline::from(paths)                 // a range, or Pipeline::generate(fn)
//           .map(read_file, /*workers=*/2)         // each stage: its own worker processes
//           .flat_map(split_words)                 // one item in, any number out
//           .map(normalise)
//           .reduce([](std::map<std::string, int>& acc, const std::string& w) { ++acc[w]; },
//                   std::map<std::string, int>{});
//   // or .collect() into a std::vector, .sink(fn) per item, .start() to iterate and to
//   // watch progress() while it runs.
//
// Semantics:
// - Every map / flat_map stage is a pool of its own worker processes (StageOptions::
//   workers, default cpu_count()) with its own router, running a registered task
//   (MPX_TASK / MPX_PURE_TASK). The stages run at the same time: while stage 2 works on
//   the first items, stage 1 already works on the next ones.
// - Between stages the driver forwards each item's encoded bytes without decoding it;
//   only the final items are decoded, in the calling thread.
// - Backpressure: a stage holds at most StageOptions::buffer items (those its workers
//   are running plus those finished and not yet taken by the next stage); when it is
//   full, the stage before it waits, and so on up to the source. A slow stage slows its
//   producers instead of filling memory. The source is read only as fast as the first
//   stage takes items.
// - Order: a stage with Order::ordered (the default) passes its items on in the order
//   it received them, like Pool::imap; Order::as_completed passes them on as they
//   finish, like imap_unordered. With every stage ordered, the output follows the
//   source's order (flat_map's elements in the order the function returned them).
// - Failure: a task that throws, a worker process that dies (a plain MPX_TASK is not
//   retried; an MPX_PURE_TASK is retried first, see PoolOptions::max_retries), a stage
//   whose pool breaks, or a source that throws, ends the run. Everything still running
//   is stopped, and the run throws mpx::PipelineError naming the stage, the item, the
//   source item it came from, and the original error. Nothing downstream waits forever.
//   StageOptions::skip_errors drops failed items instead (counted in progress()).
// - Items travel as msgpack: the same types a Pool task takes. The source's items are
//   converted to the first stage's parameter type in C++; after that, a stage's
//   parameter type must be the previous stage's result type, or both must be numbers
//   that msgpack converts (integers to any number, floating point to floating point):
//   the bytes go on undecoded. Anything else throws mpx::Error while building.
//
// Threads: a run uses one thread per stage in the calling process, and one that reads
// the source (a range or a generator must not need the calling thread, and must not
// wait for the pipeline's own results: use a Feed for that). A
// Flow is an immutable description: copy it, extend it, run it several times (a range
// source is iterated again each time; a generator source continues where it was).
// A PipelineRun is used from one thread; progress() may be called from any.
#ifndef MPX_PIPELINE_H_
#define MPX_PIPELINE_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpx/detail/codec.h"
#include "mpx/detail/next_iterator.h"
#include "mpx/detail/pins.h"
#include "mpx/errors.h"
#include "mpx/pool.h"
#include "mpx/task.h"

namespace mpx {

// How a stage passes its items on (see the top of this file).
enum class Order {
  ordered,       // in the order the stage received them (Pool::imap)
  as_completed,  // as soon as each is done (Pool::imap_unordered)
};

// Settings of one stage, builder style: mpx::StageOptions().workers(2).buffer(64).
class StageOptions {
 public:
  // Worker processes of this stage; 0 (default) means cpu_count().
  StageOptions& workers(int n) {
    workers_ = n;
    return *this;
  }
  StageOptions& order(Order o) {
    order_ = o;
    return *this;
  }
  // Most items the stage holds at once: running in its workers plus finished and not
  // yet taken by the next stage. Default 1024.
  StageOptions& buffer(std::size_t items) {
    buffer_ = items;
    return *this;
  }
  // Most bytes of finished items the stage keeps for the next one; a stage holding more
  // takes no new items (a single larger item still passes). Default 256 MiB.
  StageOptions& buffer_bytes(std::size_t bytes) {
    buffer_bytes_ = bytes;
    return *this;
  }
  // Most items sent to a worker in one message; 0 (default) chooses: up to a quarter of
  // the buffer per worker, fewer when fewer are waiting, and for the first stage of a
  // sized source at most Python's chunksize for that many items.
  StageOptions& batch(std::size_t items) {
    batch_ = items;
    return *this;
  }
  // Items whose task throws or whose worker dies are dropped (logged, and counted in
  // StageProgress::failed) instead of ending the run. Default false.
  StageOptions& skip_errors(bool skip = true) {
    skip_errors_ = skip;
    return *this;
  }
  // Name used in progress() and errors; default "map(<task>)" / "flat_map(<task>)".
  StageOptions& name(std::string n) {
    name_ = std::move(n);
    return *this;
  }
  // The stage's pool settings: retries, task_timeout, heartbeat, initializer, limits.
  // Its processes() counts unless workers() is set.
  StageOptions& pool(const PoolOptions& options) {
    pool_ = options;
    return *this;
  }

  int workers() const { return workers_ != 0 ? workers_ : pool_.processes(); }
  Order order() const { return order_; }
  std::size_t buffer() const { return buffer_; }
  std::size_t buffer_bytes() const { return buffer_bytes_; }
  std::size_t batch() const { return batch_; }
  bool skip_errors() const { return skip_errors_; }
  const std::string& name() const { return name_; }
  const PoolOptions& pool() const { return pool_; }

 private:
  int workers_ = 0;
  Order order_ = Order::ordered;
  std::size_t buffer_ = 1024;
  std::size_t buffer_bytes_ = std::size_t{256} << 20;
  std::size_t batch_ = 0;
  bool skip_errors_ = false;
  std::string name_;
  PoolOptions pool_;
};

// A snapshot of one stage (PipelineRun::progress()).
struct StageProgress {
  std::string name;           // "map(read_file)"
  int workers = 0;
  std::uint64_t in = 0;       // items handed to the stage's workers
  std::uint64_t done = 0;     // of those, items whose results came back (or failed)
  std::uint64_t in_flight = 0;  // in - done
  std::uint64_t out = 0;      // items passed on (flat_map: the elements)
  std::uint64_t buffered = 0;  // finished items waiting for the next stage
  std::uint64_t failed = 0;   // items dropped by skip_errors
  bool finished = false;      // its input ended and every item is through
};

// A pipeline run ended because of the error cause() (see the top of this file).
class PipelineError : public Error {
 public:
  PipelineError(const std::string& what, std::size_t stage, std::string stage_name,
                std::optional<std::uint64_t> item, std::optional<std::uint64_t> source_item,
                std::exception_ptr cause)
      : Error(what),
        stage_(stage),
        stage_name_(std::move(stage_name)),
        item_(item),
        source_item_(source_item),
        cause_(std::move(cause)) {}
  // 1 for the first map/flat_map stage, 2 for the next...; 0 for the source.
  std::size_t stage() const noexcept { return stage_; }
  const std::string& stage_name() const noexcept { return stage_name_; }
  // Position of the failing item among the items that entered that stage; none when
  // the failure was not one item's (the stage's pool broke).
  std::optional<std::uint64_t> item() const noexcept { return item_; }
  // Position in the source of the item the failing one came from.
  std::optional<std::uint64_t> source_item() const noexcept { return source_item_; }
  // The original error: RemoteError, WorkerLost, TimeoutError, PoolBroken, or what the
  // source threw. rethrow_cause() throws it.
  std::exception_ptr cause() const noexcept { return cause_; }
  [[noreturn]] void rethrow_cause() const { std::rethrow_exception(cause_); }

 private:
  std::size_t stage_;
  std::string stage_name_;
  std::optional<std::uint64_t> item_, source_item_;
  std::exception_ptr cause_;
};

namespace detail {

enum class StageKind { kMap, kFlatMap };

struct StageSpec {
  const TaskEntry* task;
  StageKind kind;
  StageOptions options;
};

// One run's reading of the source. pack packs the next item into pk and returns
// false at the end; it throws what the source throws. interrupt (may be empty) makes a
// pack blocked in the source return false soon: called when the run ends early.
struct SourceCursor {
  std::function<bool(msgpack::packer<Buffer>& pk)> pack;
  std::function<void()> interrupt;
};

// What a Flow describes, without its types: how to read the source and the stages.
struct PipelinePlan {
  std::function<SourceCursor()> open_source;  // a fresh cursor for each run
  std::optional<std::size_t> source_size;     // when the source is a sized range
  std::vector<StageSpec> stages;
};

// A typed source, before any stage knows what it must be packed as.
template <class T>
struct TypedCursor {
  std::function<std::optional<T>()> next;
  std::function<void()> interrupt;
};
template <class T>
struct TypedSource {
  std::function<TypedCursor<T>()> open;
  std::optional<std::size_t> size;
};

// Finished items of the last stage, encoded: item i is bytes[spans[i].first, +second).
struct OutputBatch {
  std::string bytes;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> spans;
  std::vector<std::uint64_t> origins;  // source positions
  std::uint64_t first_index = 0;       // position of spans[0] in the last stage's output
};

class PipelineRunCore;  // framework/pipeline/pipeline.cc

// Starts the stages' pools and threads. Throws PipelineError when a pool cannot start.
std::shared_ptr<PipelineRunCore> pipeline_start(std::shared_ptr<const PipelinePlan> plan);
// Waits for the next finished items of the last stage; false once every item is
// through. Throws PipelineError when the run failed (after stopping everything).
bool pipeline_next_batch(PipelineRunCore& run, OutputBatch& out);
std::vector<StageProgress> pipeline_progress(const PipelineRunCore& run);
// Stops every stage at once (pending work is dropped); idempotent. Waits for the
// stage threads and processes to end.
void pipeline_cancel(PipelineRunCore& run);
// The PipelineError of a source that threw cause at its item position.
std::exception_ptr pipeline_source_error(std::uint64_t position, std::exception_ptr cause);
// A final item did not decode as the last stage's type: ends the run, throws.
[[noreturn]] void pipeline_fail_output(PipelineRunCore& run, std::uint64_t index,
                                       std::uint64_t origin, const std::exception& e);

// Whether msgpack decodes a packed From as a To by itself: the same type, or numbers
// (integers to any number, floating point to floating point).
template <class From, class To>
constexpr bool kSameOnTheWire =
    std::is_same_v<From, To> ||
    (std::is_arithmetic_v<From> && std::is_arithmetic_v<To> && !std::is_same_v<From, bool> &&
     !std::is_same_v<To, bool> && (std::is_integral_v<From> || std::is_floating_point_v<To>));

// Sequences msgpack packs as bytes (BIN), not as an array of elements.
template <class C>
constexpr bool kPacksAsBytes =
    std::is_same_v<typename C::value_type, char> || std::is_same_v<typename C::value_type, unsigned char>;

template <class C, class = void>
struct IsMapLike : std::false_type {};
template <class C>
struct IsMapLike<C, std::void_t<typename C::mapped_type>> : std::true_type {};

template <class Range>
using RangeValue = Bare<decltype(*std::begin(std::declval<Range&>()))>;

}  // namespace detail

template <class T>
class Flow;

// A source the calling process fills while a pipeline reads it: put() items from any
// thread (typically the one consuming the pipeline's results), close() once there will
// be no more; Pipeline::from(feed) ends when the feed is closed and every item was
// read. This is how a pipeline feeds back into itself, as a crawler does with the links
// it finds:
//
//   mpx::Feed<std::string> urls;
//   urls.put(start);
//   auto run = mpx::Pipeline::from(urls).map(fetch, 4).map(parse_links).start();
//   while (auto page = run.next()) {
//     for (auto& link : page->links) if (seen.insert(link).second) urls.put(link), ++pending;
//     if (--pending == 0) urls.close();
//   }
//
// Copies share one feed. A run that ends early (failure, cancel) stops reading it
// without waiting for close(). Thread-safe.
template <class T>
class Feed {
 public:
  Feed() : state_(std::make_shared<State>()) {}
  // Throws mpx::Error after close().
  void put(T item) {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      if (state_->closed) throw Error("Feed::put: the feed is closed");
      state_->items.push_back(std::move(item));
    }
    state_->cv.notify_all();
  }
  // No more items: a pipeline reading the feed ends once it has read the rest.
  void close() {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->closed = true;
    }
    state_->cv.notify_all();
  }
  // Items put and not yet read.
  std::size_t size() const {
    std::lock_guard<std::mutex> lock(state_->mu);
    return state_->items.size();
  }

 private:
  friend class Pipeline;
  struct State {
    mutable std::mutex mu;
    std::condition_variable cv;
    std::deque<T> items;  // guarded by mu
    bool closed = false;  // guarded by mu
  };
  std::shared_ptr<State> state_;
};

// The results of one run, in the order the last stage passes them on. Move-only;
// destroying it before the end cancels the run (its processes are stopped).
template <class T>
class PipelineRun {
 public:
  PipelineRun(PipelineRun&&) noexcept = default;
  PipelineRun& operator=(PipelineRun&&) noexcept = default;
  ~PipelineRun() {
    if (core_) detail::pipeline_cancel(*core_);
  }

  // The next result, or nullopt after the last one. Throws PipelineError (once: the
  // run is over then, and later calls return nullopt).
  std::optional<T> next() {
    if (!core_) {
      if (!direct_) return std::nullopt;
      std::optional<T> v;
      try {
        v = direct_();
      } catch (...) {
        direct_ = nullptr;  // the run is over, as one with stages is after its error
        std::rethrow_exception(detail::pipeline_source_error(direct_read_, std::current_exception()));
      }
      if (v) {
        ++direct_read_;
      } else {
        direct_ = nullptr;
      }
      return v;
    }
    while (at_ >= batch_.spans.size()) {
      if (ended_) return std::nullopt;
      batch_.spans.clear();
      at_ = 0;
      bool more;
      try {
        more = detail::pipeline_next_batch(*core_, batch_);
      } catch (...) {
        ended_ = true;  // the run is over: later calls return nullopt
        throw;
      }
      if (!more) {
        ended_ = true;
        return std::nullopt;
      }
    }
    const auto [begin, size] = batch_.spans[at_];
    const std::uint64_t index = batch_.first_index + at_;
    const std::uint64_t origin = batch_.origins[at_];
    ++at_;
    try {
      if (!zone_) zone_ = std::make_unique<msgpack::zone>();
      zone_->clear();
      std::size_t off = 0;
      return detail::read_object(*zone_, batch_.bytes.data() + begin, size, off).template as<T>();
    } catch (const std::exception& e) {
      ended_ = true;
      at_ = batch_.spans.size();
      detail::pipeline_fail_output(*core_, index, origin, e);
    }
  }
  // Per stage, in order: items in, done, out, buffered (see StageProgress).
  std::vector<StageProgress> progress() const {
    return core_ ? detail::pipeline_progress(*core_) : std::vector<StageProgress>{};
  }
  // Stops the run now; next() then returns nullopt.
  void cancel() {
    if (core_) detail::pipeline_cancel(*core_);
    ended_ = true;
    at_ = batch_.spans.size();
    direct_ = nullptr;
  }

  using iterator = detail::NextIterator<PipelineRun, T>;
  iterator begin() { return iterator(this); }
  iterator end() { return iterator(); }

 private:
  friend class Flow<T>;
  explicit PipelineRun(std::shared_ptr<detail::PipelineRunCore> core) : core_(std::move(core)) {}
  explicit PipelineRun(std::function<std::optional<T>()> direct) : direct_(std::move(direct)) {}

  std::shared_ptr<detail::PipelineRunCore> core_;
  std::function<std::optional<T>()> direct_;  // a pipeline without stages: the source
  std::uint64_t direct_read_ = 0;             // items it gave
  detail::OutputBatch batch_;
  std::unique_ptr<msgpack::zone> zone_;  // reused for every item
  std::size_t at_ = 0;
  bool ended_ = false;
};

// A pipeline whose items, at its end, are T: a source and the stages after it. Build
// one with Pipeline::from or Pipeline::generate; each map/flat_map returns a longer one.
template <class T>
class Flow {
 public:
  using value_type = T;

  // A stage running fn on every item in its own worker processes.
  template <class R, class P>
  Flow<detail::Bare<R>> map(R (*fn)(P), StageOptions options = {}) const {
    static_assert(!std::is_void_v<R>,
                  "Flow::map: a stage's task must return a value for the next stage; end the "
                  "pipeline with sink(...) for side effects in the calling process");
    return add_stage<detail::Bare<R>, P>(fn, detail::StageKind::kMap, std::move(options), "map");
  }
  template <class R, class P>
  Flow<detail::Bare<R>> map(R (*fn)(P), int workers) const {
    return map(fn, StageOptions().workers(workers));
  }
  // A stage whose task returns a sequence (std::vector, std::list, ...); each element
  // goes on as an item of its own.
  template <class C, class P>
  Flow<typename detail::Bare<C>::value_type> flat_map(C (*fn)(P), StageOptions options = {}) const {
    static_assert(!detail::IsMapLike<detail::Bare<C>>::value &&
                      !std::is_same_v<detail::Bare<C>, std::string>,
                  "Flow::flat_map: the task must return a sequence (std::vector, std::list, "
                  "...), not a map or a string");
    static_assert(!detail::kPacksAsBytes<detail::Bare<C>>,
                  "Flow::flat_map: a sequence of char or unsigned char travels as bytes, not "
                  "as items: return std::vector<std::string> or std::vector<int> instead");
    return add_stage<typename detail::Bare<C>::value_type, P>(fn, detail::StageKind::kFlatMap,
                                                              std::move(options), "flat_map");
  }
  template <class C, class P>
  Flow<typename detail::Bare<C>::value_type> flat_map(C (*fn)(P), int workers) const {
    return flat_map(fn, StageOptions().workers(workers));
  }

  // Starts the run: the stages' processes start and the source is read.
  PipelineRun<T> start() const {
    if (plan_->stages.empty()) return PipelineRun<T>(source_->open().next);
    return PipelineRun<T>(detail::pipeline_start(plan_));
  }
  // Runs the pipeline to the end; returns every result (in source order when every
  // stage is ordered).
  std::vector<T> collect() const {
    std::vector<T> out;
    auto run = start();
    while (auto v = run.next()) out.push_back(std::move(*v));
    return out;
  }
  // Runs the pipeline, calling fn(item) in this thread for every result. An exception
  // from fn cancels the run and propagates.
  template <class F>
  void sink(F&& fn) const {
    auto run = start();
    while (auto v = run.next()) fn(std::move(*v));
  }
  // Folds the results in this thread, in the order they come: fn(acc, item) either
  // updates acc in place (fn takes Acc& and returns void) or returns the new acc.
  template <class F, class Acc>
  Acc reduce(F&& fn, Acc init) const {
    auto run = start();
    while (auto v = run.next()) {
      if constexpr (std::is_void_v<std::invoke_result_t<F&, Acc&, T&&>>) {
        fn(init, std::move(*v));
      } else {
        init = fn(std::move(init), std::move(*v));
      }
    }
    return init;
  }
  // Folds with the first result as the initial value, like functools.reduce; throws
  // mpx::Error when there is no result at all.
  template <class F>
  T reduce(F&& fn) const {
    auto run = start();
    std::optional<T> acc = run.next();
    if (!acc) throw Error("Flow::reduce: the pipeline produced no items and no initial value was given");
    while (auto v = run.next()) {
      if constexpr (std::is_void_v<std::invoke_result_t<F&, T&, T&&>>) {
        fn(*acc, std::move(*v));
      } else {
        acc = fn(std::move(*acc), std::move(*v));
      }
    }
    return std::move(*acc);
  }

  // Number of map/flat_map stages.
  std::size_t stages() const { return plan_->stages.size(); }

 private:
  friend class Pipeline;
  template <class U>
  friend class Flow;

  Flow(std::shared_ptr<const detail::PipelinePlan> plan,
       std::shared_ptr<const detail::TypedSource<T>> source)
      : plan_(std::move(plan)), source_(std::move(source)) {}

  template <class Out, class P, class Fn>
  Flow<Out> add_stage(Fn fn, detail::StageKind kind, StageOptions options, const char* what) const {
    static_assert(std::is_convertible_v<T, detail::Bare<P>>,
                  "Flow: this stage's task takes a parameter that the items of the stage "
                  "before it (or of the source) do not convert to");
    const detail::TaskEntry& task = detail::require_task(fn, what);
    // Source items are converted in C++ before they are packed; a stage's results go on
    // to the next stage as the bytes its worker packed, so only what msgpack converts
    // by itself can differ there (else every item would fail in the worker).
    if (!plan_->stages.empty() && !detail::kSameOnTheWire<T, detail::Bare<P>>) {
      throw Error(std::string("Flow::") + what + "(" + task.name +
                  "): its parameter type is not the result type of the stage before it; "
                  "results reach the next stage as msgpack, so the types must be the same "
                  "(or both numbers, not bool)");
    }
    auto plan = std::make_shared<detail::PipelinePlan>(*plan_);
    if (plan->stages.empty()) {
      // The first stage fixes how source items are packed: as its parameter type.
      auto source = source_;
      plan->open_source = [source]() -> detail::SourceCursor {
        detail::TypedCursor<T> cursor = source->open();
        detail::SourceCursor packer;
        packer.interrupt = std::move(cursor.interrupt);
        packer.pack = [next = std::move(cursor.next)](msgpack::packer<detail::Buffer>& pk) {
          std::optional<T> v = next();
          if (!v) return false;
          detail::ArgCodec<P>::pack_item(pk, *v);
          return true;
        };
        return packer;
      };
      plan->source_size = source_->size;
    }
    if (options.name().empty()) options.name(std::string(what) + "(" + task.name + ")");
    plan->stages.push_back(detail::StageSpec{&task, kind, std::move(options)});
    return Flow<Out>(std::move(plan), nullptr);
  }

  std::shared_ptr<const detail::PipelinePlan> plan_;
  std::shared_ptr<const detail::TypedSource<T>> source_;  // only while there is no stage
};

// Where pipelines begin.
class Pipeline {
 public:
  // A pipeline over the items of a range (a container, or anything with begin/end). The
  // range is copied (std::move it in to avoid the copy) and iterated in a pipeline
  // thread, once per run.
  template <class Range>
  static Flow<detail::RangeValue<std::decay_t<Range>>> from(Range&& items) {
    using R = std::decay_t<Range>;
    using T = detail::RangeValue<R>;
    auto range = std::make_shared<const R>(std::forward<Range>(items));
    auto source = std::make_shared<detail::TypedSource<T>>();
    source->open = [range]() -> detail::TypedCursor<T> {
      auto it = std::make_shared<decltype(std::begin(*range))>(std::begin(*range));
      return {[range, it]() -> std::optional<T> {
                if (*it == std::end(*range)) return std::nullopt;
                std::optional<T> v(**it);
                ++*it;
                return v;
              },
              nullptr};
    };
    if constexpr (std::is_base_of_v<std::forward_iterator_tag,
                                    typename std::iterator_traits<decltype(std::begin(
                                        std::declval<const R&>()))>::iterator_category>) {
      source->size = static_cast<std::size_t>(std::distance(std::begin(*range), std::end(*range)));
    }
    return Flow<T>(std::make_shared<detail::PipelinePlan>(), std::move(source));
  }
  // A pipeline over what next() returns, until it returns std::nullopt. next is called
  // in a pipeline thread, one call at a time, also when runs of the Flow overlap (they
  // then share what it generates: each item goes to one of them).
  template <class Gen>
  static Flow<typename std::invoke_result_t<Gen&>::value_type> generate(Gen next) {
    using T = typename std::invoke_result_t<Gen&>::value_type;
    struct Shared {
      explicit Shared(Gen g) : next(std::move(g)) {}
      std::mutex mu;
      Gen next;
    };
    auto gen = std::make_shared<Shared>(std::move(next));
    auto source = std::make_shared<detail::TypedSource<T>>();
    source->open = [gen]() -> detail::TypedCursor<T> {
      return {[gen]() -> std::optional<T> {
                std::lock_guard<std::mutex> lock(gen->mu);
                return gen->next();
              },
              nullptr};
    };
    return Flow<T>(std::make_shared<detail::PipelinePlan>(), std::move(source));
  }
  // A pipeline over what is put() into feed while it runs, until feed is closed and
  // drained (see Feed). One run at a time may read a feed.
  template <class T>
  static Flow<T> from(const Feed<T>& feed) {
    auto state = feed.state_;
    auto source = std::make_shared<detail::TypedSource<T>>();
    source->open = [state]() -> detail::TypedCursor<T> {
      auto stop = std::make_shared<bool>(false);  // guarded by state->mu
      detail::TypedCursor<T> cursor;
      cursor.next = [state, stop]() -> std::optional<T> {
        std::unique_lock<std::mutex> lock(state->mu);
        state->cv.wait(lock, [&] { return *stop || state->closed || !state->items.empty(); });
        if (*stop || state->items.empty()) return std::nullopt;
        std::optional<T> v(std::move(state->items.front()));
        state->items.pop_front();
        return v;
      };
      cursor.interrupt = [state, stop] {
        {
          std::lock_guard<std::mutex> lock(state->mu);
          *stop = true;
        }
        state->cv.notify_all();
      };
      return cursor;
    };
    return Flow<T>(std::make_shared<detail::PipelinePlan>(), std::move(source));
  }
};

}  // namespace mpx

#endif  // MPX_PIPELINE_H_
