// Pipelines with real processes: every stage is a pool of its own; items flow through
// the driver between them. Results, order, flat_map, folds, backpressure, progress, and
// every way a run can fail (a throwing task, a killed worker, a killed router, a
// throwing source, a cancelled run) without a hang or a process left behind.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "framework/testing/testing.h"
#include "mpx/mpx.h"

// A C function: its symbol does not say what it takes, so a worker could not check it.
extern "C" int pipeline_test_c_function(int x) { return x; }

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::int64_t square(std::int64_t x) { return x * x; }
std::int64_t add_one(std::int64_t x) { return x + 1; }
std::vector<std::string> split_words(std::string text) {
  std::vector<std::string> words;
  std::istringstream in(text);
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}
std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::vector<int> repeat_n(int n) { return std::vector<int>(static_cast<std::size_t>(n), n); }
// Later items finish first: as_completed must pass them on as they come.
int sleep_inverse(int x) {
  std::this_thread::sleep_for(milliseconds(2 * (20 - x % 20)));
  return x;
}
int sleep_for_ms(int ms) {
  std::this_thread::sleep_for(milliseconds(ms));
  return ms;
}
int slow_identity(int x) {
  std::this_thread::sleep_for(milliseconds(2));
  return x;
}
int slow_pure_identity(int x) { return slow_identity(x); }
int fail_on_13(int x) {
  if (x == 13) throw std::runtime_error("thirteen is unlucky");
  return x;
}
int fail_on_multiples_of_10(int x) {
  if (x % 10 == 0) throw std::invalid_argument("multiple of ten: " + std::to_string(x));
  return x;
}
int kill_on_7(int x) {
  if (x == 7) raise(SIGKILL);
  return x;
}
// Kills its worker the first time it sees x % 50 == 0 (a marker file remembers), then
// succeeds: a pure task, so the pool runs it again.
int crash_once(int x) {
  if (x % 50 == 0) {
    const char* dir = std::getenv("TEST_TMPDIR");
    const std::string marker = std::string(dir ? dir : "/tmp") + "/pipeline-crash-" +
                               std::to_string(getppid()) + "-" + std::to_string(x);
    const int fd = ::open(marker.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
    if (fd >= 0) {
      ::close(fd);
      raise(SIGKILL);
    }
  }
  return x;
}
int unregistered(int x) { return x; }
double halve(double x) { return x / 2; }
std::string slow_echo(std::string s) {
  std::this_thread::sleep_for(milliseconds(2));
  return s;
}

MPX_TASK(square);
MPX_TASK(halve);
MPX_TASK(slow_echo);
MPX_TASK(add_one);
MPX_TASK(split_words);
MPX_TASK(upper);
MPX_TASK(repeat_n);
MPX_TASK(sleep_inverse);
MPX_TASK(slow_identity);
MPX_PURE_TASK(slow_pure_identity);
MPX_TASK(sleep_for_ms);
MPX_TASK(fail_on_13);
MPX_TASK(fail_on_multiples_of_10);
MPX_TASK(kill_on_7);
MPX_PURE_TASK(crash_once);

std::vector<std::int64_t> iota64(std::int64_t n) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

class PipelineTest : public ::testing::Test {
 protected:
  void TearDown() override {
    auto left = mpx::testing::wait_no_descendants(seconds(10));
    for (const auto& d : left) ADD_FAILURE() << "left running: pid " << d.pid << " " << d.cmdline;
  }
};

class PipelineWorkers : public PipelineTest, public ::testing::WithParamInterface<int> {};

TEST_P(PipelineWorkers, ChainedMapsKeepTheSourceOrder) {
  const int workers = GetParam();
  const auto out = mpx::Pipeline::from(iota64(2000))
                       .map(square, workers)
                       .map(add_one, workers)
                       .collect();
  ASSERT_EQ(out.size(), 2000u);
  for (std::int64_t i = 0; i < 2000; ++i) ASSERT_EQ(out[static_cast<std::size_t>(i)], i * i + 1) << i;
}

TEST_P(PipelineWorkers, AsCompletedPassesEveryItemOnOnce) {
  const int workers = GetParam();
  std::vector<int> xs(60);
  std::iota(xs.begin(), xs.end(), 0);
  auto out = mpx::Pipeline::from(xs)
                 .map(sleep_inverse, mpx::StageOptions().workers(workers).order(mpx::Order::as_completed).batch(1))
                 .collect();
  std::sort(out.begin(), out.end());
  EXPECT_EQ(out, xs);
}

INSTANTIATE_TEST_SUITE_P(Workers, PipelineWorkers, ::testing::Values(1, 2, 5));

TEST_F(PipelineTest, AsCompletedReallyReorders) {
  // Two workers holding one message each: the 300 ms item is overtaken by the 1 ms one.
  const std::vector<int> ms{300, 1};
  const auto options = mpx::StageOptions().workers(2).batch(1).pool(mpx::PoolOptions().prefetch(1));
  auto out = mpx::Pipeline::from(ms)
                 .map(sleep_for_ms, mpx::StageOptions(options).order(mpx::Order::as_completed))
                 .collect();
  EXPECT_EQ(out, (std::vector<int>{1, 300}));
  // Ordered, the same pair comes back in source order.
  out = mpx::Pipeline::from(ms).map(sleep_for_ms, options).collect();
  EXPECT_EQ(out, ms);
}

TEST_F(PipelineTest, FlatMapPassesElementsOnInOrder) {
  std::vector<std::string> texts{"the quick brown", "", "fox jumps", "over the lazy dog"};
  const auto words = mpx::Pipeline::from(texts).flat_map(split_words, 2).map(upper, 2).collect();
  EXPECT_EQ(words, (std::vector<std::string>{"THE", "QUICK", "BROWN", "FOX", "JUMPS", "OVER",
                                             "THE", "LAZY", "DOG"}));
}

TEST_F(PipelineTest, FlatMapCanMultiplyItems) {
  std::vector<int> ns{3, 0, 1, 200};
  const auto out = mpx::Pipeline::from(ns).flat_map(repeat_n, 2).collect();
  ASSERT_EQ(out.size(), 204u);
  EXPECT_EQ(std::count(out.begin(), out.end(), 200), 200);
  EXPECT_EQ(std::vector<int>(out.begin(), out.begin() + 4), (std::vector<int>{3, 3, 3, 1}));
}

TEST_F(PipelineTest, ReduceFoldsInPlaceOrByValue) {
  std::vector<std::string> texts{"a b a", "c a b"};
  auto counts = mpx::Pipeline::from(texts).flat_map(split_words, 1).reduce(
      [](std::map<std::string, int>& acc, const std::string& w) { ++acc[w]; },
      std::map<std::string, int>{});
  EXPECT_EQ(counts, (std::map<std::string, int>{{"a", 3}, {"b", 2}, {"c", 1}}));
  const std::int64_t sum = mpx::Pipeline::from(iota64(100)).map(square, 2).reduce(
      [](std::int64_t acc, std::int64_t x) { return acc + x; }, std::int64_t{0});
  EXPECT_EQ(sum, 328350);
  // Without an initial value, as functools.reduce.
  EXPECT_EQ(mpx::Pipeline::from(iota64(5)).map(add_one, 1).reduce([](std::int64_t a, std::int64_t b) {
    return a * b;
  }),
            120);
  EXPECT_THROW(mpx::Pipeline::from(std::vector<std::int64_t>{}).map(add_one, 1).reduce(
                   [](std::int64_t a, std::int64_t b) { return a + b; }),
               mpx::Error);
}

TEST_F(PipelineTest, GeneratorSourcesAndEmptySources) {
  int next = 0;
  auto flow = mpx::Pipeline::generate([&next]() -> std::optional<std::int64_t> {
    if (next == 300) return std::nullopt;
    return next++;
  });
  const auto out = flow.map(square, 2).collect();
  ASSERT_EQ(out.size(), 300u);
  EXPECT_EQ(out[299], 299 * 299);
  EXPECT_TRUE(mpx::Pipeline::from(std::vector<std::int64_t>{}).map(square, 2).map(add_one, 1).collect().empty());
  // A pipeline without a stage is its source.
  EXPECT_EQ(mpx::Pipeline::from(std::vector<int>{4, 5}).collect(), (std::vector<int>{4, 5}));
}

// Overlapping runs of one generate() Flow share its generator, one call at a time:
// together they see each item once (concurrent calls handed some out twice).
TEST_F(PipelineTest, OverlappingRunsOfAGeneratorFlowShareItsItems) {
  std::int64_t next = 0;
  const std::int64_t n = 100000;
  const auto flow = mpx::Pipeline::generate([&next, n]() -> std::optional<std::int64_t> {
                      if (next >= n) return std::nullopt;
                      return next++;
                    }).map(add_one, 1);
  std::vector<std::int64_t> a, b;
  std::thread first([&] { a = flow.collect(); });
  std::thread second([&] { b = flow.collect(); });
  first.join();
  second.join();
  a.insert(a.end(), b.begin(), b.end());
  std::sort(a.begin(), a.end());
  ASSERT_EQ(a.size(), static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) ASSERT_EQ(a[static_cast<std::size_t>(i)], i + 1);
}

TEST_F(PipelineTest, AFlowCanRunAgain) {
  const auto flow = mpx::Pipeline::from(iota64(50)).map(square, 1);
  EXPECT_EQ(flow.collect(), flow.collect());
  EXPECT_EQ(flow.stages(), 1u);
  // Extending a flow leaves the shorter one as it was.
  const auto longer = flow.map(add_one, 1);
  EXPECT_EQ(longer.stages(), 2u);
  EXPECT_EQ(flow.collect().back(), 49 * 49);
  EXPECT_EQ(longer.collect().back(), 49 * 49 + 1);
}

TEST_F(PipelineTest, SinkSeesEveryItemInTheCallingThread) {
  const auto caller = std::this_thread::get_id();
  std::vector<std::int64_t> seen;
  mpx::Pipeline::from(iota64(10)).map(add_one, 2).sink([&](std::int64_t x) {
    EXPECT_EQ(std::this_thread::get_id(), caller);
    seen.push_back(x);
  });
  EXPECT_EQ(seen, (std::vector<std::int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
}

TEST_F(PipelineTest, AThrowingTaskEndsTheRunNamingStageAndItem) {
  std::vector<int> xs(40);
  std::iota(xs.begin(), xs.end(), 0);
  try {
    mpx::Pipeline::from(xs).map(slow_identity, 2).map(fail_on_13, 2).map(slow_identity, 2).collect();
    FAIL() << "expected PipelineError";
  } catch (const mpx::PipelineError& e) {
    EXPECT_EQ(e.stage(), 2u);
    EXPECT_EQ(e.stage_name(), "map(fail_on_13)");
    ASSERT_TRUE(e.item().has_value());
    EXPECT_EQ(*e.item(), 13u) << "stage 1 is ordered: item 13 of stage 2 is source item 13";
    EXPECT_EQ(e.source_item(), std::optional<std::uint64_t>(13));
    const std::string what = e.what();
    EXPECT_NE(what.find("pipeline stage 2 map(fail_on_13) failed at item 13 (source item 13)"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("thirteen is unlucky"), std::string::npos) << what;
    try {
      e.rethrow_cause();
    } catch (const mpx::RemoteInfo& cause) {
      EXPECT_EQ(cause.type_name(), "std::runtime_error");
      EXPECT_EQ(cause.task_index(), 13u);
    }
  }
}

TEST_F(PipelineTest, ARunThatThrewIsOver) {
  std::vector<int> xs(30);
  std::iota(xs.begin(), xs.end(), 0);
  auto run = mpx::Pipeline::from(xs).map(fail_on_13, 1).start();
  bool threw = false;
  try {
    while (run.next()) {
    }
  } catch (const mpx::PipelineError&) {
    threw = true;
  }
  EXPECT_TRUE(threw);
  EXPECT_FALSE(run.next().has_value()) << "asking again is safe, and says the run is over";
  EXPECT_FALSE(run.progress().empty()) << "progress() still answers";
}

TEST_F(PipelineTest, SkipErrorsDropsFailedItemsAndCountsThem) {
  std::vector<int> xs(100);
  std::iota(xs.begin(), xs.end(), 0);
  auto run = mpx::Pipeline::from(xs)
                 .map(fail_on_multiples_of_10, mpx::StageOptions().workers(2).skip_errors())
                 .start();
  std::vector<int> out;
  while (auto x = run.next()) out.push_back(*x);
  EXPECT_EQ(out.size(), 90u);
  EXPECT_TRUE(std::none_of(out.begin(), out.end(), [](int x) { return x % 10 == 0; }));
  EXPECT_TRUE(std::is_sorted(out.begin(), out.end()));
  const auto p = run.progress();
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].in, 100u);
  EXPECT_EQ(p[0].done, 100u);
  EXPECT_EQ(p[0].failed, 10u);
  EXPECT_EQ(p[0].out, 90u);
  EXPECT_TRUE(p[0].finished);
}

TEST_F(PipelineTest, AKilledWorkerEndsTheRunWithWorkerLost) {
  std::vector<int> xs(30);
  std::iota(xs.begin(), xs.end(), 0);
  try {
    mpx::Pipeline::from(xs).map(slow_identity, 2).map(kill_on_7, mpx::StageOptions().workers(2).batch(1)).collect();
    FAIL() << "expected PipelineError";
  } catch (const mpx::PipelineError& e) {
    EXPECT_EQ(e.stage(), 2u);
    EXPECT_EQ(e.item(), std::optional<std::uint64_t>(7));
    EXPECT_EQ(e.source_item(), std::optional<std::uint64_t>(7));
    try {
      e.rethrow_cause();
    } catch (const mpx::WorkerLost& cause) {
      // Only the item that killed the worker: the router reports it first, on its own.
      EXPECT_EQ(cause.lost_tasks(), std::vector<std::uint64_t>{7});
      EXPECT_NE(cause.reason().find("signal 9"), std::string::npos) << cause.reason();
    }
  }
}

TEST_F(PipelineTest, APureTaskWhoseWorkerDiesRunsAgain) {
  std::vector<int> xs(400);
  std::iota(xs.begin(), xs.end(), 0);
  const auto out = mpx::Pipeline::from(xs).map(crash_once, 2).map(slow_identity, 1).collect();
  EXPECT_EQ(out, xs);
}

TEST_F(PipelineTest, AThrowingSourceEndsTheRun) {
  int n = 0;
  try {
    mpx::Pipeline::generate([&n]() -> std::optional<std::int64_t> {
      if (n == 25) throw std::out_of_range("source ran dry badly");
      return n++;
    })
        .map(square, 2)
        .collect();
    FAIL() << "expected PipelineError";
  } catch (const mpx::PipelineError& e) {
    EXPECT_EQ(e.stage(), 0u);
    EXPECT_EQ(e.stage_name(), "source");
    EXPECT_EQ(e.item(), std::optional<std::uint64_t>(25));
    EXPECT_THROW(e.rethrow_cause(), std::out_of_range);
  }
}

TEST_F(PipelineTest, AThrowingSourceWithoutStagesEndsTheRunTheSameWay) {
  int n = 0;
  auto run = mpx::Pipeline::generate([&n]() -> std::optional<std::int64_t> {
               if (n == 3) throw std::out_of_range("source ran dry badly");
               return n++;
             }).start();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(run.next().has_value());
  try {
    run.next();
    FAIL() << "expected PipelineError";
  } catch (const mpx::PipelineError& e) {
    EXPECT_EQ(e.stage(), 0u);
    EXPECT_EQ(e.stage_name(), "source");
    EXPECT_EQ(e.item(), std::optional<std::uint64_t>(3));
    EXPECT_NE(std::string(e.what()).find("source ran dry badly"), std::string::npos) << e.what();
    EXPECT_THROW(e.rethrow_cause(), std::out_of_range);
  }
  EXPECT_FALSE(run.next().has_value()) << "the run is over";
}

TEST_F(PipelineTest, SkipErrorsAlsoDropsTheItemsOfAKilledWorker) {
  std::vector<int> xs(30);
  std::iota(xs.begin(), xs.end(), 0);
  auto run = mpx::Pipeline::from(xs)
                 .map(kill_on_7, mpx::StageOptions().workers(2).batch(1).skip_errors())
                 .start();
  std::vector<int> out;
  while (auto x = run.next()) out.push_back(*x);
  EXPECT_TRUE(std::find(out.begin(), out.end(), 7) == out.end());
  EXPECT_TRUE(std::is_sorted(out.begin(), out.end()));
  const auto p = run.progress();
  ASSERT_EQ(p.size(), 1u);
  // 7 and, this task not being pure, what its worker held besides (never half-run).
  EXPECT_GE(p[0].failed, 1u);
  EXPECT_EQ(out.size() + p[0].failed, 30u);
  EXPECT_TRUE(p[0].finished);
}

TEST_F(PipelineTest, AChunkOverThePoolsMessageLimitEndsTheRunNamingTheStage) {
  std::vector<std::string> texts(4, std::string(4096, 't'));
  try {
    mpx::Pipeline::from(texts)
        .map(upper, mpx::StageOptions().workers(1).pool(mpx::PoolOptions().max_message_bytes(1024)))
        .collect();
    FAIL() << "expected PipelineError";
  } catch (const mpx::PipelineError& e) {
    EXPECT_EQ(e.stage(), 1u);
    EXPECT_NE(std::string(e.what()).find("max_message_bytes"), std::string::npos) << e.what();
  }
}

TEST_F(PipelineTest, StagesMustAgreeOnTheirTypesAsMsgpackDoes) {
  // int64 results read as double by the next stage: msgpack converts them.
  EXPECT_EQ(mpx::Pipeline::from(iota64(4)).map(square, 1).map(halve, 1).collect(),
            (std::vector<double>{0, 0.5, 2, 4.5}));
  // double results read as int64: every item would fail in the worker; refused at once.
  try {
    mpx::Pipeline::from(std::vector<double>{1.0}).map(halve, 1).map(square, 1);
    FAIL() << "expected mpx::Error";
  } catch (const mpx::PipelineError&) {
    FAIL() << "refused while building, not while running";
  } catch (const mpx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Flow::map(square)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not the result type of the stage before it"),
              std::string::npos)
        << e.what();
  }
  // The source's items are converted in C++: ints feed a double stage.
  EXPECT_EQ(mpx::Pipeline::from(std::vector<int>{3}).map(halve, 1).collect(), std::vector<double>{1.5});
}

TEST_F(PipelineTest, BufferBytesBoundsAStageOfLargeItems) {
  constexpr std::size_t kItem = 16 << 10, kBytes = 4 * kItem;
  std::atomic<int> produced{0}, consumed{0}, max_lead{0};
  auto run = mpx::Pipeline::generate([&]() -> std::optional<std::string> {
               if (produced.load() == 100) return std::nullopt;
               const int lead = ++produced - consumed.load();
               int seen = max_lead.load();
               while (lead > seen && !max_lead.compare_exchange_weak(seen, lead)) {
               }
               return std::string(kItem, 'b');
             })
                 .map(slow_echo, mpx::StageOptions().workers(2).buffer(1000).buffer_bytes(kBytes).batch(1))
                 .start();
  int got = 0;
  for (;;) {
    // Let the stage fill up to its byte bound before taking each item.
    mpx::testing::wait_until(
        [&] {
          const auto p = run.progress();
          return produced.load() == 100 || (p[0].in_flight + p[0].buffered) * kItem >= kBytes;
        },
        seconds(2));
    for (const auto& stage : run.progress()) {
      // Admitted while under kBytes: at most one item of kItem beyond it.
      EXPECT_LE((stage.in_flight + stage.buffered) * kItem, kBytes + kItem) << stage.name;
    }
    auto x = run.next();
    if (!x) break;
    ASSERT_EQ(x->size(), kItem);
    ++got;
    ++consumed;
  }
  EXPECT_EQ(got, 100);
  EXPECT_LT(max_lead.load(), 20) << "the byte bound, not the 1000-item buffer, held the source back";
}

pid_t the_stage_router() {
  std::vector<pid_t> routers;
  for (const auto& d : mpx::testing::descendants()) {
    if (d.cmdline.find("--mpx-role=router") != std::string::npos) routers.push_back(d.pid);
  }
  return routers.size() == 1 ? routers[0] : -1;
}

// A stage's router killed: its pool starts another. A task that may not run twice
// fails the items it held with RouterLost, which ends the run naming the stage.
TEST_F(PipelineTest, AKilledRouterEndsARunOfTasksThatMayNotRunTwice) {
  std::atomic<int> produced{0};
  auto run = mpx::Pipeline::generate([&produced]() -> std::optional<int> {
               int n = produced++;
               if (n == 100000) return std::nullopt;
               return n;
             })
                 .map(slow_identity, 1)
                 .start();
  ASSERT_TRUE(run.next().has_value());
  const pid_t router = the_stage_router();
  ASSERT_GT(router, 0);
  ::kill(router, SIGKILL);
  try {
    while (run.next()) {
    }
    FAIL() << "expected PipelineError";
  } catch (const mpx::PipelineError& e) {
    EXPECT_EQ(e.stage(), 1u);
    EXPECT_THROW(e.rethrow_cause(), mpx::RouterLost);
  }
}

// The same with a pure task: the run goes on and every item comes out once, in order.
TEST_F(PipelineTest, AKilledRouterLosesNothingOfAPureStage) {
  std::vector<int> xs(3000);
  for (int i = 0; i < 3000; ++i) xs[i] = i;
  auto run = mpx::Pipeline::from(xs).map(slow_pure_identity, 1).start();
  std::vector<int> out;
  while (auto x = run.next()) {
    out.push_back(*x);
    if (out.size() == 100) {
      const pid_t router = the_stage_router();
      ASSERT_GT(router, 0);
      ::kill(router, SIGKILL);
    }
  }
  EXPECT_EQ(out, xs);
}

TEST_F(PipelineTest, AStageNameAndAFeedsSizeAreWhatTheUserSees) {
  mpx::Feed<int> feed;
  for (int x : {1, 13, 2}) feed.put(x);
  EXPECT_EQ(feed.size(), 3u);
  feed.close();
  EXPECT_THROW(feed.put(4), mpx::Error);
  try {
    mpx::Pipeline::from(feed).map(fail_on_13, mpx::StageOptions().workers(1).name("lucky numbers")).collect();
    FAIL() << "expected PipelineError";
  } catch (const mpx::PipelineError& e) {
    EXPECT_EQ(e.stage_name(), "lucky numbers");
    EXPECT_NE(std::string(e.what()).find("lucky numbers"), std::string::npos) << e.what();
  }
  auto run = mpx::Pipeline::from(std::vector<int>{1}).map(slow_identity, mpx::StageOptions().workers(1).name("slow")).start();
  ASSERT_EQ(run.progress().size(), 1u);
  EXPECT_EQ(run.progress()[0].name, "slow");
  EXPECT_EQ(run.next(), std::optional<int>(1));
}

TEST_F(PipelineTest, ASlowConsumerHoldsTheSourceBack) {
  constexpr std::size_t kBuffer = 8, kBatch = 4;
  // Items can only be: read by the source thread ahead of stage 1 (two batches), held
  // by stage 1 or 2 (a buffer each), or taken by this thread and not yet returned by
  // next() (one answer of stage 2, at most a batch).
  constexpr int kBound = 2 * kBatch + 2 * kBuffer + kBatch;
  std::atomic<int> produced{0}, consumed{0}, max_lead{0};
  auto flow = mpx::Pipeline::generate([&]() -> std::optional<int> {
                if (produced.load() == 400) return std::nullopt;
                const int lead = ++produced - consumed.load();
                int seen = max_lead.load();
                while (lead > seen && !max_lead.compare_exchange_weak(seen, lead)) {
                }
                return produced.load();
              })
                  .map(slow_identity, mpx::StageOptions().workers(2).buffer(kBuffer).batch(kBatch))
                  .map(slow_identity, mpx::StageOptions().workers(2).buffer(kBuffer).batch(kBatch));
  auto run = flow.start();
  int got = 0;
  for (;;) {
    // Let the pipeline fill up before taking each item: the source must stop.
    mpx::testing::wait_until([&] { return produced.load() >= consumed.load() + 2 * static_cast<int>(kBuffer) || produced.load() == 400; },
                             seconds(10));
    const auto p = run.progress();
    for (const auto& stage : p) EXPECT_LE(stage.in_flight + stage.buffered, kBuffer) << stage.name;
    auto x = run.next();
    if (!x) break;
    ++got;
    ++consumed;
  }
  EXPECT_EQ(got, 400);
  EXPECT_LE(max_lead.load(), kBound);
  EXPECT_GE(max_lead.load(), static_cast<int>(2 * kBuffer)) << "the buffers did fill";
}

// A pipeline that feeds its own results back into its source, as a crawler does: each
// number n leads to 2n+1 and 2n+2 below 200; from 0, every number is reached once.
std::vector<int> children(int n) {
  std::vector<int> out;
  for (int c : {2 * n + 1, 2 * n + 2}) {
    if (c < 200) out.push_back(c);
  }
  return out;
}
MPX_TASK(children);

TEST_F(PipelineTest, AFeedLetsAPipelineFeedItself) {
  mpx::Feed<int> feed;
  feed.put(0);
  auto run = mpx::Pipeline::from(feed).map(slow_identity, 2).map(children, 2).start();
  std::set<int> seen{0};
  int pending = 1;  // numbers put and not yet answered
  while (auto kids = run.next()) {
    for (int c : *kids) {
      EXPECT_TRUE(seen.insert(c).second) << c << " reached twice";
      feed.put(c);
      ++pending;
    }
    if (--pending == 0) feed.close();
  }
  EXPECT_EQ(seen.size(), 200u);
  EXPECT_THROW(feed.put(1), mpx::Error) << "a closed feed takes nothing";
}

TEST_F(PipelineTest, ARunFailingWhileItsFeedWaitsDoesNotHang) {
  mpx::Feed<int> feed;  // never closed: the source waits in it when the run fails
  for (int x : {1, 2, 13}) feed.put(x);
  try {
    mpx::Pipeline::from(feed).map(fail_on_13, 1).collect();
    FAIL() << "expected PipelineError";
  } catch (const mpx::PipelineError& e) {
    EXPECT_EQ(e.source_item(), std::optional<std::uint64_t>(2));
  }
  // Dropped while waiting for the feed, too.
  auto run = mpx::Pipeline::from(feed).map(fail_on_13, 1).start();
}

TEST_F(PipelineTest, ProgressCountsEveryStage) {
  std::vector<int> ns{1, 2, 3, 4};
  auto run = mpx::Pipeline::from(ns).flat_map(repeat_n, 2).map(slow_identity, 2).start();
  std::atomic<bool> done{false};
  std::thread watcher([&] {  // progress() from another thread while the run goes on
    while (!done.load()) {
      for (const auto& p : run.progress()) EXPECT_LE(p.done, p.in);
    }
  });
  int n = 0;
  while (run.next()) ++n;
  done = true;
  watcher.join();
  EXPECT_EQ(n, 10);
  const auto p = run.progress();
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].name, "flat_map(repeat_n)");
  EXPECT_EQ(p[0].workers, 2);
  EXPECT_EQ(p[0].in, 4u);
  EXPECT_EQ(p[0].out, 10u);
  EXPECT_EQ(p[1].in, 10u);
  EXPECT_EQ(p[1].out, 10u);
  EXPECT_EQ(p[1].in_flight, 0u);
  EXPECT_EQ(p[1].buffered, 0u);
  EXPECT_TRUE(p[0].finished && p[1].finished);
}

TEST_F(PipelineTest, ARunDroppedEarlyStopsEverything) {
  {
    auto run = mpx::Pipeline::from(std::vector<int>(100000, 1)).map(slow_identity, 2).map(slow_identity, 2).start();
    ASSERT_TRUE(run.next().has_value());
  }  // destroyed: cancelled; TearDown checks that no process is left
  auto run = mpx::Pipeline::from(iota64(10)).map(square, 1).start();
  ASSERT_TRUE(run.next().has_value());
  run.cancel();
  EXPECT_FALSE(run.next().has_value());
}

TEST_F(PipelineTest, MisuseIsReportedClearly) {
  EXPECT_THROW(mpx::Pipeline::from(std::vector<int>{1}).map(pipeline_test_c_function, 1), mpx::NotRegistered);
  EXPECT_EQ(mpx::Pipeline::from(std::vector<int>{1, 2}).map(unregistered, 1).collect(), (std::vector<int>{1, 2}));
  EXPECT_THROW(mpx::Pipeline::from(std::vector<int>{1}).map(square, mpx::StageOptions().buffer(0)).collect(),
               mpx::Error);
  EXPECT_THROW(mpx::Pipeline::from(std::vector<int>{1}).map(square, -1).collect(), mpx::Error);
  // A stage whose pool cannot start names the stage.
  try {
    mpx::Pipeline::from(std::vector<int>{1})
        .map(square, 1)
        .map(add_one, mpx::StageOptions().pool(mpx::PoolOptions().prefetch(0)))
        .collect();
    FAIL() << "expected PipelineError";
  } catch (const mpx::PipelineError& e) {
    EXPECT_EQ(e.stage(), 2u);
    EXPECT_NE(std::string(e.what()).find("prefetch must be at least 1"), std::string::npos) << e.what();
  }
}

}  // namespace
