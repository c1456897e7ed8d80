#include "framework/worker/result_batch.h"

#include <poll.h>
#include <sys/socket.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace mpx {
namespace worker {
namespace {

using Frame = std::pair<std::uint64_t, std::string>;  // (start, payload)

wire::Header result_header(std::uint64_t start) {
  wire::Header h;
  h.type = wire::Type::kResult;
  h.call_id = 7;
  h.start = start;
  h.count = 1;
  return h;
}

std::vector<Frame> frames_of(transport::Reader& reader) {
  std::vector<Frame> out;
  for (;;) {
    transport::Incoming in;
    std::string why;
    const auto got = reader.next(in, &why);
    if (got == transport::Reader::Next::kNone) break;
    EXPECT_EQ(got, transport::Reader::Next::kFrame) << why;
    if (got != transport::Reader::Next::kFrame) break;
    out.emplace_back(in.header.start, std::string(in.payload.data<char>(), in.payload.size()));
  }
  return out;
}

class ResultBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    worker_ = transport::Connection(sv[0]);
    router_ = transport::Connection(sv[1]);
  }

  // The frames the router's side can read, waiting up to `wait_ms` for the first.
  std::vector<Frame> read(int wait_ms = 0) {
    pollfd p{router_.fd(), POLLIN, 0};
    if (::poll(&p, 1, wait_ms) <= 0) return {};
    router_.fill();
    return frames_of(router_.reader());
  }
  // What the shared page holds, as the router reads it once the worker is dead.
  std::vector<Frame> unsent() {
    transport::Reader reader;
    reader.put(std::string_view(shared_->unsent, shared_->unsent_bytes.load()));
    return frames_of(reader);
  }

  // For tests that look at what waits: no flusher deadline falls within the test.
  static constexpr std::chrono::microseconds kForever = std::chrono::hours(1);

  transport::Connection worker_, router_;
  std::unique_ptr<wire::WorkerShared> shared_ = std::make_unique<wire::WorkerShared>();
};

TEST_F(ResultBatchTest, HeldResultsWaitInTheSharedPageAsWholeFramesUntilFlushed) {
  ResultBatch batch(worker_, shared_.get(), kForever);
  batch.hold(result_header(0), "zero");
  batch.hold(result_header(1), "one");
  EXPECT_EQ(unsent(), (std::vector<Frame>{{0, "zero"}, {1, "one"}}));
  EXPECT_EQ(batch.waiting(), shared_->unsent_bytes.load());
  batch.flush();
  EXPECT_EQ(batch.waiting(), 0u);
  EXPECT_EQ(shared_->unsent_bytes.load(), 0u) << "written: nothing left for the router to take";
  EXPECT_EQ(read(60000), (std::vector<Frame>{{0, "zero"}, {1, "one"}}));
}

TEST_F(ResultBatchTest, AMessageSentAfterHeldResultsFollowsThemInOneWrite) {
  ResultBatch batch(worker_, shared_.get());
  batch.hold(result_header(0), "zero");
  batch.hold(result_header(1), "one");
  batch.send(result_header(2), "two");
  EXPECT_EQ(batch.waiting(), 0u);
  EXPECT_EQ(read(60000), (std::vector<Frame>{{0, "zero"}, {1, "one"}, {2, "two"}}));
}

// The worker's next chunk runs long: what waits is written by the flusher meanwhile,
// without flush(). Without it this read would wait for ever.
TEST_F(ResultBatchTest, AChunkThatRunsLongDoesNotHoldBackTheResultsBeforeIt) {
  ResultBatch batch(worker_, shared_.get());
  batch.hold(result_header(0), "zero");
  EXPECT_EQ(read(60000), (std::vector<Frame>{{0, "zero"}}));
  EXPECT_EQ(batch.waiting(), 0u);
  batch.hold(result_header(1), "one");  // again, once the flusher slept
  EXPECT_EQ(read(60000), (std::vector<Frame>{{1, "one"}}));
}

TEST_F(ResultBatchTest, WithoutASharedPageNothingWaits) {
  ResultBatch batch(worker_, nullptr);
  batch.hold(result_header(0), "zero");
  EXPECT_EQ(batch.waiting(), 0u);
  EXPECT_EQ(read(), (std::vector<Frame>{{0, "zero"}}));
}

TEST_F(ResultBatchTest, AResultLargerThanThePageIsWrittenAtOnceAfterWhatWaits) {
  ResultBatch batch(worker_, shared_.get());
  batch.hold(result_header(0), "zero");
  const std::string large(wire::WorkerShared::kUnsentCapacity, 'x');
  batch.hold(result_header(1), large);
  EXPECT_EQ(batch.waiting(), 0u);
  std::vector<Frame> got;
  while (got.size() < 2) {
    auto more = read(60000);
    ASSERT_FALSE(more.empty());
    got.insert(got.end(), more.begin(), more.end());
  }
  EXPECT_EQ(got, (std::vector<Frame>{{0, "zero"}, {1, large}}));
}

TEST_F(ResultBatchTest, AFullPageIsWrittenToMakeRoom) {
  ResultBatch batch(worker_, shared_.get(), kForever);
  const std::string payload(wire::WorkerShared::kUnsentCapacity / 3, 'y');
  for (std::uint64_t at = 0; at < 4; ++at) batch.hold(result_header(at), payload);
  EXPECT_EQ(unsent(), (std::vector<Frame>{{2, payload}, {3, payload}}));
  batch.flush();
  std::vector<Frame> got;
  while (got.size() < 4) {
    auto more = read(60000);
    ASSERT_FALSE(more.empty());
    got.insert(got.end(), more.begin(), more.end());
  }
  for (std::uint64_t at = 0; at < 4; ++at) EXPECT_EQ(got[at].first, at);
}

TEST_F(ResultBatchTest, DestroyingTheBatchWritesWhatWaits) {
  {
    ResultBatch batch(worker_, shared_.get());
    batch.hold(result_header(0), "zero");
  }
  EXPECT_EQ(read(60000), (std::vector<Frame>{{0, "zero"}}));
}

TEST(ReaderFrameReady, SaysWhetherAWholeFrameIsBuffered) {
  std::string bytes;
  transport::append_frame(bytes, result_header(0), "payload");
  transport::Reader reader;
  EXPECT_FALSE(reader.frame_ready());
  reader.put(std::string_view(bytes).substr(0, 5));
  EXPECT_FALSE(reader.frame_ready()) << "not even the length prefix";
  reader.put(std::string_view(bytes).substr(5, bytes.size() - 6));
  EXPECT_FALSE(reader.frame_ready()) << "one byte short";
  reader.put(std::string_view(bytes).substr(bytes.size() - 1));
  EXPECT_TRUE(reader.frame_ready());
  EXPECT_EQ(frames_of(reader), (std::vector<Frame>{{0, "payload"}}));
  EXPECT_FALSE(reader.frame_ready());
}

}  // namespace
}  // namespace worker
}  // namespace mpx
