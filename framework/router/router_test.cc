// Unit tests for RouterCore, the router's whole policy, without sockets or processes:
// messages go in through on_client / on_worker / on_worker_exit / on_tick, and a
// recording RouterIo captures every message, spawn and kill that comes out. Time is
// explicit (a fixed base plus offsets), so nothing here sleeps.
#include "framework/router/router.h"
#include "framework/testing/log_capture.h"

#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <map>
#include <set>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <msgpack.hpp>

#include "framework/wire/messages.h"
#include "mpx/errors.h"

namespace mpx {
namespace router {
namespace {

using std::chrono::milliseconds;
using wire::Header;
using wire::Type;

// One message the router sent, with its header copied out of whatever it viewed.
struct Sent {
  enum Kind { kSendClient, kForwardClient, kSendWorker, kForwardWorker };
  Kind kind;
  std::string to;
  Type type;
  std::uint64_t call_id;
  std::uint64_t start;
  std::uint32_t count;
  std::int32_t pid;
  std::uint8_t flags;
  std::string name;
  std::string header_bytes;  // forwards only: the frame exactly as it left
  std::string payload;
  const void* payload_data;  // to see that payloads are moved, not copied
};

// A recording RouterIo and WorkerSupervisor at once. Worker ids are "W<pid>".
class FakeIo final : public RouterIo, public WorkerSupervisor {
 public:
  void send_client(std::string_view client, const Header& h, transport::Message&& payload) override {
    record(Sent::kSendClient, client, h, std::string(), payload);
  }
  void forward_client(std::string_view client, transport::Message&& header_frame,
                      transport::Message&& payload, transport::Fds&& fds) override {
    forwarded_fds.push_back(fds.size());
    forward(Sent::kForwardClient, client, header_frame, payload);
  }
  void send_worker(std::string_view worker, const Header& h, transport::Message&& payload) override {
    record(Sent::kSendWorker, worker, h, std::string(), payload);
  }
  void forward_worker(std::string_view worker, transport::Message&& header_frame,
                      transport::Message&& payload) override {
    forward(Sent::kForwardWorker, worker, header_frame, payload);
  }
  // Records a LANE to each end, as ProcessIo sends them (without descriptors here).
  bool open_lane(std::string_view worker, std::string_view client, pid_t worker_pid) override {
    if (fail_lanes) return false;
    const Header h = wire::Lane{static_cast<std::int32_t>(worker_pid)}.header();
    record(Sent::kSendWorker, worker, h, std::string(), transport::Message());
    record(Sent::kSendClient, client, h, std::string(), transport::Message());
    return true;
  }
  bool runs_chunk(std::string_view id) override {
    auto it = running.find(pid_of(id));
    return it != running.end() && it->second != 0;
  }
  std::optional<LaneChunk> running_lane_chunk(std::string_view id) override {
    auto it = lane_chunks.find(pid_of(id));
    if (it == lane_chunks.end() || !runs_chunk(id) ||
        wire::chunk_mark(it->second.call_id, it->second.start) != running[pid_of(id)]) {
      return std::nullopt;
    }
    return it->second;
  }
  wire::LaneCounts lane_counts(std::string_view id) override {
    auto it = lane_counts_of.find(pid_of(id));
    return it == lane_counts_of.end() ? wire::LaneCounts{} : it->second;
  }
  Started spawn(const std::string& name) override {
    if (fail_spawns) throw ProcessError("posix_spawn: Resource temporarily unavailable");
    spawned.push_back(name);
    const pid_t pid = next_pid++;
    return {"W" + std::to_string(pid), unknown_pids ? 0 : pid};
  }
  Started spawn_at(const std::string& name, const std::string& place) override {
    places.push_back(place);
    return spawn(name);
  }
  void kill(std::string_view id) override { killed.push_back(pid_of(id)); }
  bool is_stopped(std::string_view id) override { return stopped.count(pid_of(id)) != 0; }
  // As LocalWorkers: records the cancel the worker is told of, returns its running mark.
  std::optional<std::uint64_t> cancel_call(std::string_view id, std::uint64_t call_id) override {
    cancels.emplace_back(pid_of(id), call_id);
    auto it = running.find(pid_of(id));
    return it == running.end() ? 0 : it->second;
  }
  // As LocalWorkers: the worker has taken up taken_up[pid] of the TASKs it was sent
  // (all of them when unset); the rest are taken back.
  std::optional<std::uint64_t> take_back(std::string_view id, std::uint64_t sent) override {
    auto it = taken_up.find(pid_of(id));
    const std::uint64_t from = it == taken_up.end() ? sent : std::min(it->second, sent);
    take_backs.emplace_back(pid_of(id), sent);
    return from;
  }
  // What the supervisor reports with the death of worker pid (marks, once).
  std::optional<std::uint64_t> take_running_mark(pid_t pid) {
    auto it = marks.find(pid);
    if (it == marks.end()) return std::nullopt;
    const std::uint64_t mark = it->second;
    marks.erase(it);
    return mark;
  }
  static pid_t pid_of(std::string_view id) { return static_cast<pid_t>(std::stol(std::string(id.substr(1)))); }

  // Returns and forgets everything sent so far.
  std::vector<Sent> take() { return std::exchange(sent, {}); }

  std::vector<Sent> sent;
  std::vector<std::size_t> forwarded_fds;  // descriptors passed on with each forward_client
  std::vector<std::string> spawned;
  std::vector<std::string> places;  // of spawn_at, in order
  std::vector<pid_t> killed;
  std::set<pid_t> stopped;  // pids is_stopped reports as stopped
  std::map<pid_t, std::uint64_t> marks;  // what take_running_mark reports, per worker
  std::map<pid_t, std::uint64_t> running;  // the running mark cancel_call reports
  std::vector<std::pair<pid_t, std::uint64_t>> cancels;  // (worker, call) told by cancel_call
  std::map<pid_t, std::uint64_t> taken_up;  // what take_back finds each worker has taken up
  std::vector<std::pair<pid_t, std::uint64_t>> take_backs;  // (worker, sent) of each take_back
  std::map<pid_t, LaneChunk> lane_chunks;  // the lane chunk each worker names (with its mark in running)
  std::map<pid_t, wire::LaneCounts> lane_counts_of;  // what lane_counts reports
  bool fail_lanes = false;  // open_lane cannot open any
  pid_t next_pid = 1000;
  bool fail_spawns = false;
  bool unknown_pids = false;  // spawn knows ids only, as a node agent's supervisor would

 private:
  void record(Sent::Kind kind, std::string_view to, const Header& h, std::string header_bytes,
              const transport::Message& payload) {
    sent.push_back(Sent{kind, std::string(to), h.type, h.call_id, h.start, h.count, h.pid,
                        h.flags, std::string(h.name), std::move(header_bytes),
                        std::string(payload.data<char>(), payload.size()), payload.data()});
  }
  void forward(Sent::Kind kind, std::string_view to, const transport::Message& header_frame,
               const transport::Message& payload) {
    std::string why;
    const auto h = wire::decode(header_frame.data<char>(), header_frame.size(), &why);
    ASSERT_TRUE(h.has_value()) << "router forwarded an undecodable header: " << why;
    record(kind, to, *h, std::string(header_frame.data<char>(), header_frame.size()), payload);
  }
};

// Builds an Incoming the way transport::receive leaves it. Filled in place: the header's
// name views into header_frame, so it is decoded after the frame is in its final spot.
void fill(transport::Incoming& in, const std::string& from, const Header& h,
          const std::string& payload) {
  in.from = from;
  const std::string bytes = wire::encode(h);
  in.header_frame = transport::Message(bytes.data(), bytes.size());
  in.payload = transport::Message(payload.data(), payload.size());
  std::string why;
  auto decoded = wire::decode(in.header_frame.data<char>(), in.header_frame.size(), &why);
  ASSERT_TRUE(decoded.has_value()) << why;
  in.header = *decoded;
}

Header make(Type type, std::uint64_t call_id = 0, std::uint64_t start = 0,
            std::uint32_t count = 0, std::string_view name = {}) {
  Header h;
  h.type = type;
  h.call_id = call_id;
  h.start = start;
  h.count = count;
  h.name = name;
  return h;
}

std::string wid(pid_t pid) { return "W" + std::to_string(pid); }

constexpr int kKilled = SIGKILL;  // wait status of a child killed by SIGKILL
constexpr int kExited0 = 0;       // wait status of exit(0)

using Ranges = std::vector<std::pair<std::uint64_t, std::uint32_t>>;

// A LOST payload as (reason, ranges), checking that its error says how the chunks
// were lost.
std::pair<std::string, Ranges> decode_lost(const std::string& payload) {
  const wire::LostChunks lost = wire::decode_lost(payload);
  EXPECT_TRUE(lost.error.type == "mpx::WorkerLost" || lost.error.type == "mpx::TimeoutError")
      << lost.error.type;
  return {lost.error.message, lost.ranges};
}

class RouterTest : public ::testing::Test {
 protected:
  RouterTest() {
    config_.front_endpoint = "ipc://@front";
    config_.back_endpoint = "ipc://@back";
    config_.workers = 1;
    config_.prefetch = 2;
    config_.heartbeat_interval = milliseconds(100);
    config_.heartbeat_timeout = milliseconds(1000);
    config_.stop_grace = milliseconds(500);
    config_.max_startup_failures = 3;
  }

  // Every time RouterCore sees comes from the test, starting far from the real clock so
  // that nothing can depend on Clock::now().
  void start() {
    core_ = std::make_unique<RouterCore>(config_, io_, io_);
    now_ = Clock::now() + std::chrono::hours(1);
    core_->start(now_);
  }
  void advance(milliseconds d) { now_ += d; }

  void client(const std::string& from, const Header& h, const std::string& payload = {}) {
    transport::Incoming in;
    fill(in, from, h, payload);
    core_->on_client(in, now_);
  }
  void worker(const std::string& from, const Header& h, const std::string& payload = {}) {
    transport::Incoming in;
    fill(in, from, h, payload);
    core_->on_worker(in, now_);
  }
  void hello(const std::string& token) { client("R" + token, make(Type::kHello)); }
  // The payload is padded to count bytes: the router refuses a chunk announcing more
  // items than it has bytes.
  void submit(const std::string& token, std::uint64_t call_id, std::uint64_t start,
              std::uint32_t count, std::string payload = "args") {
    if (payload.size() < count) payload.resize(count, '.');
    client("R" + token, make(Type::kSubmit, call_id, start, count, "square"), payload);
  }
  // One item of an MPX_PURE_TASK, from client S1: the chunks pure retries apply to.
  void submit_pure(std::uint64_t call_id, std::uint64_t start, const std::string& payload) {
    Header h = make(Type::kSubmit, call_id, start, 1, "square");
    h.flags = wire::kFlagPure;
    client("R1", h, payload);
  }
  void ready(pid_t pid) {
    Header h = make(Type::kReady, 0, 0, 0, "PoolWorker");
    h.pid = pid;
    worker(wid(pid), h);
  }
  void result(pid_t pid, std::uint64_t call_id, std::uint64_t start, std::uint32_t count,
              const std::string& payload = "results") {
    Header h = make(Type::kResult, call_id, start, count);
    h.pid = pid;
    worker(wid(pid), h, payload);
  }
  void exit(pid_t pid, int status = kKilled) {
    core_->on_worker_exit(wid(pid), status, io_.take_running_mark(pid), now_);
  }
  void tick() { core_->on_tick(now_); }

  void configured(pid_t pid) {
    Header h = make(Type::kConfigured);
    h.pid = pid;
    worker(wid(pid), h);
  }
  // Worker 1000 ready and holding n one-item chunks of call 7 from client R1.
  void worker_holding_chunks(int n) {
    config_.prefetch = n;
    start();
    ready_quietly(1000);
    for (int at = 0; at < n; ++at) submit("1", 7, static_cast<std::uint64_t>(at), 1);
    io_.take();
  }
  // Workers 1000 and 1001 (prefetch 3) are given items 0-4 of call 1 from client R1 in
  // turn; 1001 answers its two and idles, while 1000 holds 0 (the first, running), 2, 4.
  void one_worker_idles_while_the_other_holds_three() {
    config_.workers = 2;
    config_.prefetch = 3;
    start();
    ready_quietly(1000);
    ready_quietly(1001);
    for (std::uint64_t item = 0; item < 5; ++item) submit("1", 1, item, 1);
    io_.take();
    result(1001, 1, 1, 1);
    result(1001, 1, 3, 1);  // the long one has run no time yet
  }
  // Makes worker pid ready, checks that it was sent its CONFIG first, reports its
  // initializer done, and discards everything sent so far.
  void ready_quietly(pid_t pid) {
    const std::size_t before = io_.sent.size();
    ready(pid);
    configured(pid);
    auto sent = io_.take();
    ASSERT_GT(sent.size(), before);
    EXPECT_EQ(sent[before].type, Type::kConfig);
    EXPECT_EQ(sent[before].to, wid(pid));
  }

  Config config_;
  FakeIo io_;
  std::unique_ptr<RouterCore> core_;
  Clock::time_point now_;
};

void expect_task(const Sent& s, pid_t pid, std::uint64_t call_id, std::uint64_t start,
                 std::uint32_t count) {
  EXPECT_EQ(s.kind, Sent::kForwardWorker);
  EXPECT_EQ(s.to, wid(pid));
  EXPECT_EQ(s.type, Type::kTask);
  EXPECT_EQ(s.call_id, call_id);
  EXPECT_EQ(s.start, start);
  EXPECT_EQ(s.count, count);
}

TEST_F(RouterTest, StartSpawnsTheConfiguredWorkers) {
  config_.workers = 3;
  start();
  EXPECT_EQ(io_.spawned, (std::vector<std::string>{"PoolWorker-1", "PoolWorker-2", "PoolWorker-3"}));
  EXPECT_EQ(core_->live_workers(), 3u);
  EXPECT_TRUE(io_.sent.empty());
  EXPECT_FALSE(core_->broken());
  EXPECT_FALSE(core_->finished());
}

TEST_F(RouterTest, HelloGetsWelcome) {
  config_.workers = 4;
  start();
  hello("tok");
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].kind, Sent::kSendClient);
  EXPECT_EQ(sent[0].to, "Rtok");
  EXPECT_EQ(sent[0].type, Type::kWelcome);
  EXPECT_EQ(sent[0].count, 4u);
}

TEST_F(RouterTest, SubmitWaitsForReadyThenConfigThenTask) {
  config_.initializer = "setup";
  config_.initializer_args = "init-args";
  start();
  const std::string payload(100, 'p');  // large enough to live outside the message
  transport::Incoming in;
  fill(in, "R1", make(Type::kSubmit, 5, 40, 10, "square"), payload);
  const std::string submitted(in.header_frame.data<char>(), in.header_frame.size());
  const void* payload_data = in.payload.data();
  core_->on_client(in, now_);
  EXPECT_EQ(core_->queued(), 1u);
  EXPECT_TRUE(io_.sent.empty());

  ready(1000);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u) << "no work before the initializer has finished";
  EXPECT_EQ(sent[0].kind, Sent::kSendWorker);
  EXPECT_EQ(sent[0].to, "W1000");
  EXPECT_EQ(sent[0].type, Type::kConfig);
  const wire::WorkerConfig given = wire::decode_worker_config(sent[0].payload);
  EXPECT_EQ(given.initializer, "setup");
  EXPECT_EQ(given.initializer_args, "init-args");
  configured(1000);
  auto more = io_.take();
  ASSERT_EQ(more.size(), 1u);
  sent.push_back(more[0]);
  expect_task(sent[1], 1000, 5, 40, 10);
  EXPECT_EQ(sent[1].name, "square");
  EXPECT_EQ(sent[1].payload, payload);
  EXPECT_EQ(sent[1].payload_data, payload_data);  // moved through, never copied
  // The frame is the submitted one with only the type byte rewritten.
  std::string expected = submitted;
  expected[4] = static_cast<char>(Type::kTask);
  EXPECT_EQ(sent[1].header_bytes, expected);
  EXPECT_EQ(core_->queued(), 0u);
}

TEST_F(RouterTest, ReadyWorkerGetsEmptyConfigWithoutInitializer) {
  start();
  ready(1000);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kConfig);
  const wire::WorkerConfig given = wire::decode_worker_config(sent[0].payload);
  EXPECT_EQ(given.initializer, "");
  EXPECT_EQ(given.initializer_args, "");
  EXPECT_EQ(given.max_message_bytes, config_.max_message_bytes);
  EXPECT_EQ(given.memory_limit, 0u);
}

TEST_F(RouterTest, SubmitToAReadyWorkerIsDispatchedAtOnce) {
  start();
  ready_quietly(1000);
  submit("1", 1, 0, 3);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  expect_task(sent[0], 1000, 1, 0, 3);
}

TEST_F(RouterTest, PrefetchCreditIsRespected) {
  config_.prefetch = 2;
  start();
  ready_quietly(1000);
  submit("1", 1, 0, 5);
  submit("1", 1, 5, 5);
  submit("1", 1, 10, 5);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  expect_task(sent[0], 1000, 1, 0, 5);
  expect_task(sent[1], 1000, 1, 5, 5);
  EXPECT_EQ(core_->queued(), 1u);

  result(1000, 1, 0, 5);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].kind, Sent::kForwardClient);
  expect_task(sent[1], 1000, 1, 10, 5);
  EXPECT_EQ(core_->queued(), 0u);
}

TEST_F(RouterTest, PrefetchOfOneHoldsOneChunk) {
  config_.prefetch = 1;
  config_.workers = 2;
  start();
  ready_quietly(1000);
  ready_quietly(1001);
  for (int i = 0; i < 4; ++i) submit("1", 1, i, 1);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  expect_task(sent[0], 1000, 1, 0, 1);
  expect_task(sent[1], 1001, 1, 1, 1);
  EXPECT_EQ(core_->queued(), 2u);
  result(1001, 1, 1, 1);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  expect_task(sent[1], 1001, 1, 2, 1);
}

TEST_F(RouterTest, ResultIsForwardedUnchangedToTheResultSocket) {
  start();
  ready_quietly(1000);
  submit("abc", 7, 0, 3);
  io_.take();

  Header h = make(Type::kResult, 7, 0, 3);
  h.pid = 1000;
  h.flags = wire::kFlagHasErrors;
  const std::string payload(200, 'r');
  transport::Incoming in;
  fill(in, "W1000", h, payload);
  const std::string frame(in.header_frame.data<char>(), in.header_frame.size());
  const void* payload_data = in.payload.data();
  core_->on_worker(in, now_);

  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].kind, Sent::kForwardClient);
  EXPECT_EQ(sent[0].to, "Rabc");
  EXPECT_EQ(sent[0].header_bytes, frame);
  EXPECT_EQ(sent[0].payload, payload);
  EXPECT_EQ(sent[0].payload_data, payload_data);
}

TEST_F(RouterTest, LeastLoadedWorkerGetsTheNextChunk) {
  config_.workers = 2;
  config_.prefetch = 3;
  start();
  ready_quietly(1000);
  ready_quietly(1001);
  submit("1", 1, 0, 1);   // 1000 (both empty: the first)
  submit("1", 1, 1, 1);   // 1001 (0 < 1)
  submit("1", 1, 2, 1);   // 1000 (tie)
  submit("1", 1, 3, 1);   // 1001 (1 < 2)
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 4u);
  expect_task(sent[0], 1000, 1, 0, 1);
  expect_task(sent[1], 1001, 1, 1, 1);
  expect_task(sent[2], 1000, 1, 2, 1);
  expect_task(sent[3], 1001, 1, 3, 1);

  result(1001, 1, 1, 1);  // 1000 holds 2, 1001 holds 1
  io_.take();
  submit("1", 1, 4, 1);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  expect_task(sent[0], 1001, 1, 4, 1);
}

// A worker idles while another runs a long chunk with more held behind it: once that
// one has run kTakeBackAfter, the router takes back those its worker has not taken up,
// and the idle worker gets them. Held, not taken back, they would wait for the long one.
TEST_F(RouterTest, ChunksWaitingBehindALongOneGoToAnIdleWorker) {
  one_worker_idles_while_the_other_holds_three();
  EXPECT_TRUE(io_.take_backs.empty());
  EXPECT_LE(core_->next_tick(), now_ + kTakeBackAfter);
  io_.take();

  io_.taken_up[1000] = 1;  // it runs its first; the two behind it wait
  advance(kTakeBackAfter);
  tick();
  ASSERT_EQ(io_.take_backs.size(), 1u);
  EXPECT_EQ(io_.take_backs[0], std::make_pair(pid_t{1000}, std::uint64_t{3}));
  auto sent = io_.take();
  std::vector<Sent> tasks;
  for (const Sent& s : sent) {
    if (s.type == Type::kTask) tasks.push_back(s);
  }
  ASSERT_EQ(tasks.size(), 2u);
  expect_task(tasks[0], 1001, 1, 2, 1);
  expect_task(tasks[1], 1001, 1, 4, 1);
  EXPECT_EQ(core_->status(now_).taken_back_chunks, 2u);

  // Each is answered once, by the worker that has it; the long one by its own.
  result(1001, 1, 2, 1);
  result(1001, 1, 4, 1);
  result(1000, 1, 0, 1);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 3u);
  for (const Sent& s : sent) EXPECT_EQ(s.kind, Sent::kForwardClient);
  EXPECT_EQ(core_->outstanding(), 0u);
}

// What the worker took up before the router could take it back stays its own: the
// router takes back only from there, and a late result of a chunk taken back (which
// cannot come from a worker that skips it) would be dropped, not forwarded twice.
TEST_F(RouterTest, ChunksAWorkerTookUpAreNotTakenBack) {
  one_worker_idles_while_the_other_holds_three();
  io_.take();
  io_.taken_up[1000] = 2;  // it has started item 2 (the first finished unread)
  advance(kTakeBackAfter);
  tick();
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  expect_task(sent[0], 1001, 1, 4, 1);
  result(1000, 1, 0, 1);
  result(1000, 1, 2, 1);
  result(1000, 1, 4, 1);  // not its own any more
  result(1001, 1, 4, 1);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 3u);
  EXPECT_EQ(sent[2].start, 4u);
  EXPECT_EQ(sent[2].kind, Sent::kForwardClient);
  EXPECT_EQ(core_->outstanding(), 0u);

  // Nothing is taken back while nobody idles, nor from a worker whose first chunk has
  // not run kTakeBackAfter yet.
  io_.take_backs.clear();
  io_.taken_up[1000] = 5;  // from now on it has taken up all it is sent
  submit("1", 2, 0, 1);  // 1000
  submit("1", 2, 1, 1);  // 1001
  submit("1", 2, 2, 1);  // 1000
  advance(kTakeBackAfter * 10);
  tick();
  EXPECT_TRUE(io_.take_backs.empty());
  result(1001, 2, 1, 1);
  io_.take();
  submit("1", 2, 3, 1);  // 1001: it idles, and 1000 is held up
  submit("1", 2, 4, 1);  // 1001 again (1000 is held up)
  sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  expect_task(sent[0], 1001, 2, 3, 1);
  expect_task(sent[1], 1001, 2, 4, 1);
}

// A retiring worker (maxtasksperchild) whose chunks are all taken back holds nothing:
// it is told to stop then, since no result of its will come to tell later.
TEST_F(RouterTest, ARetiringWorkerLeftWithNothingStops) {
  config_.workers = 2;
  config_.maxtasksperchild = 2;
  start();
  ready_quietly(1000);
  ready_quietly(1001);
  submit("1", 1, 0, 1);  // 1000
  submit("1", 1, 1, 1);  // 1001
  submit("1", 1, 2, 1);  // 1000: its second, so it retires (a replacement starts)
  result(1001, 1, 1, 1);
  io_.take();
  io_.taken_up[1000] = 0;  // it has not started either (descheduled, say)
  advance(kTakeBackAfter);
  tick();
  bool stopped = false;
  std::vector<std::uint64_t> to_1001;
  for (const Sent& m : io_.take()) {
    if (m.type == Type::kStop && m.to == wid(1000)) stopped = true;
    if (m.type == Type::kTask && m.to == wid(1001)) to_1001.push_back(m.start);
  }
  EXPECT_TRUE(stopped);
  // 1001 takes item 0, its second chunk, and retires in turn: item 2 waits for a
  // replacement.
  EXPECT_EQ(to_1001, (std::vector<std::uint64_t>{0}));
  EXPECT_EQ(core_->queued(), 1u);
}

// Without retries only the chunk that was running (the first held: no mark here) is
// lost; the chunks queued behind it on the dead worker never started, so they go back
// to the queue free of charge, whichever call and client they belong to.
TEST_F(RouterTest, AWorkerDeathFailsOnlyTheRunningChunkAndRequeuesTheOthers) {
  config_.prefetch = 3;
  config_.workers = 2;
  start();
  ready_quietly(1000);
  submit("1", 1, 0, 5);   // 1000
  submit("1", 1, 5, 5);   // 1000
  submit("2", 1, 0, 4);   // 1000: same call id, other client
  submit("1", 1, 10, 5);  // queued
  EXPECT_EQ(core_->queued(), 1u);
  result(1000, 1, 0, 5);  // frees a slot: (10, 5) goes out
  ready_quietly(1001);
  submit("1", 2, 0, 8);   // 1001
  io_.take();

  exit(1000, kKilled);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 3u);
  EXPECT_EQ(sent[0].kind, Sent::kSendClient);
  EXPECT_EQ(sent[0].type, Type::kLost);
  EXPECT_EQ(sent[0].to, "R1");
  EXPECT_EQ(sent[0].call_id, 1u);
  EXPECT_EQ(sent[0].pid, 1000);
  const auto running = decode_lost(sent[0].payload);
  EXPECT_EQ(running.first, spawning::describe(kKilled));
  EXPECT_NE(running.first.find("signal 9"), std::string::npos) << running.first;
  EXPECT_EQ(running.second, (Ranges{{5, 5}}));
  // The two that never started go to the other worker, in their order.
  expect_task(sent[1], 1001, 1, 0, 4);
  expect_task(sent[2], 1001, 1, 10, 5);

  // A replacement was spawned; the other worker's chunks are untouched.
  EXPECT_EQ(io_.spawned.size(), 3u);
  EXPECT_EQ(core_->live_workers(), 2u);
  result(1001, 2, 0, 8);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].kind, Sent::kForwardClient);
}

TEST_F(RouterTest, ResultsReadBeforeTheExitAreDeliveredNotLost) {
  config_.workers = 2;
  start();
  ready_quietly(1000);
  submit("1", 1, 0, 1);
  submit("1", 1, 1, 1);
  io_.take();
  result(1000, 1, 0, 1);  // sent just before it died, read before its exit is handled
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].kind, Sent::kForwardClient);
  exit(1000, kKilled);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kLost);
  EXPECT_EQ(decode_lost(sent[0].payload).second, (Ranges{{1, 1}})) << "only what it still held";
  EXPECT_EQ(io_.spawned.size(), 3u) << "replaced";
}

// A worker that dies with results finished but unwritten (worker::ResultBatch) leaves
// them in the page it shares with its router: those of chunks it still held are
// delivered, a copy of one already read from its socket is not delivered twice, and
// only the chunk that was running is lost.
TEST_F(RouterTest, UnsentResultsOfADeadWorkerAreDeliveredOnce) {
  worker_holding_chunks(4);
  result(1000, 7, 0, 1);  // written to its socket before it died
  io_.take();
  std::string unsent;
  for (std::uint64_t at : {0, 1, 2}) {
    Header h = make(Type::kResult, 7, at, 1);
    h.pid = 1000;
    transport::append_frame(unsent, h, "r" + std::to_string(at));
  }
  Header stranger = make(Type::kResult, 9, 0, 1);  // a chunk it never held
  transport::append_frame(unsent, stranger, "x");
  core_->on_unsent_results(wid(1000), unsent, now_);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(sent[i].kind, Sent::kForwardClient);
    EXPECT_EQ(sent[i].to, "R1");
    EXPECT_EQ(sent[i].start, i + 1);
    EXPECT_EQ(sent[i].payload, "r" + std::to_string(i + 1));
  }
  io_.marks[1000] = wire::chunk_mark(7, 3);
  exit(1000, kKilled);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kLost);
  EXPECT_EQ(decode_lost(sent[0].payload).second, (Ranges{{3, 1}})) << "only the chunk that ran";
}

// Without its unsent results (what happened before they were kept in the shared page),
// the chunks whose results died with the worker are lost: the test above is not vacuous.
TEST_F(RouterTest, ResultsNeitherWrittenNorKeptAreReportedLost) {
  worker_holding_chunks(3);
  io_.marks[1000] = wire::chunk_mark(7, 2);
  core_->on_unsent_results(wid(1000), "", now_);
  exit(1000, kKilled);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(decode_lost(sent[0].payload).second, (Ranges{{2, 1}}));
  EXPECT_EQ(decode_lost(sent[1].payload).second, (Ranges{{0, 1}, {1, 1}}));
}

TEST_F(RouterTest, ACancelledCallIsNotRetried) {
  config_.max_retries = 3;
  start();
  ready_quietly(1000);
  submit("1", 7, 0, 1);
  io_.take();
  client("R1", make(Type::kCancel, 7));
  exit(1000, kKilled);
  EXPECT_EQ(core_->queued(), 0u);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kLost);
}

TEST_F(RouterTest, APidReusedByTheReplacementIsANewWorker) {
  start();
  ready_quietly(1000);
  submit("1", 1, 0, 1);
  io_.take();
  io_.next_pid = 1000;  // the kernel hands the same pid out again
  exit(1000, kKilled);  // replacement spawned as pid 1000
  EXPECT_EQ(core_->live_workers(), 1u);
  ready_quietly(1000);
  submit("1", 2, 0, 1);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  expect_task(sent[0], 1000, 2, 0, 1);
}

TEST_F(RouterTest, WorkersDyingInTheirInitializerBreakThePool) {
  config_.initializer = "crashes";
  start();
  for (pid_t pid = 1000; pid < 1003; ++pid) {
    ready(pid);  // READY, CONFIG sent, then the initializer crashes the process
    exit(pid, SIGSEGV);
  }
  EXPECT_TRUE(core_->broken()) << "not an endless respawn loop";
}

// SIGKILLs from outside (an operator, a chaos test, the OOM killer) of workers still
// starting are tolerated longer, but not forever.
TEST_F(RouterTest, OutsideKillsOfStartingWorkersAreToleratedLonger) {
  start();
  pid_t pid = 1000;
  for (int i = 0; i < 3 * 4 - 1; ++i) exit(pid++, kKilled);  // 11 in a row
  EXPECT_FALSE(core_->broken());
  ready_quietly(pid);    // one that makes it resets the count...
  exit(pid++, kKilled);  // ...and its own death is no start-up failure
  for (int i = 0; i < 3 * 4 - 1; ++i) exit(pid++, kKilled);
  EXPECT_FALSE(core_->broken());
  exit(pid++, kKilled);  // the 12th in a row
  EXPECT_TRUE(core_->broken());
}

TEST_F(RouterTest, StartupDeathsWhileAnotherWorkerServesDoNotBreakThePool) {
  config_.workers = 2;
  start();                      // 1000 and 1001
  ready_quietly(1000);          // serves
  pid_t pid = 1001;
  for (int i = 0; i < 30; ++i) exit(pid++, SIGSEGV);  // the other slot keeps dying
  EXPECT_FALSE(core_->broken());
  exit(1000, kKilled);          // nobody serves any more: the next failures count
  for (int i = 0; i < 3 && !core_->broken(); ++i) exit(pid++, SIGSEGV);
  EXPECT_TRUE(core_->broken());
}

TEST_F(RouterTest, ChunksQueuedBehindACrashingOneKeepTheirRetries) {
  config_.pure_retries = 1;
  start();
  ready_quietly(1000);
  submit_pure(7, 0, "crashes");
  submit_pure(7, 1, "fine");
  io_.take();
  exit(1000, SIGSEGV);  // attempt 1 of the first chunk; the second had not started
  ready_quietly(1001);
  exit(1001, SIGSEGV);  // the first chunk's retry dies too: it is lost, the second is not
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kLost);
  EXPECT_EQ(decode_lost(sent[0].payload).second, (Ranges{{0, 1}}));
  EXPECT_EQ(core_->queued(), 1u);
}

// A worker writes each result whole before it clears its mark and starts the next
// chunk, so the mark names the chunk that killed it: that one alone spends a retry,
// the chunks behind it never started and go back free.
TEST_F(RouterTest, TheRunningMarkNamesTheChunkThatSpendsARetry) {
  config_.pure_retries = 1;
  config_.prefetch = 3;
  start();
  ready_quietly(1000);
  for (std::uint64_t start = 0; start < 3; ++start) submit_pure(7, start, "x");
  io_.take();
  result(1000, 7, 0, 1);
  io_.take();
  io_.marks[1000] = wire::chunk_mark(7, 1);  // chunk 1 kills its worker
  exit(1000, SIGSEGV);
  EXPECT_EQ(core_->queued(), 2u) << "both go back: one retry left for chunk 1";
  ready_quietly(1001);
  io_.take();
  io_.marks[1001] = wire::chunk_mark(7, 1);  // chunk 1 kills its worker again
  exit(1001, SIGSEGV);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kLost);
  EXPECT_EQ(decode_lost(sent[0].payload).second, (Ranges{{1, 1}}))
      << "chunk 2 spent nothing: it never started";
  EXPECT_EQ(core_->queued(), 1u);
}

// A chunk held before the one the mark names had run (a worker runs its chunks in
// order); its result can only be missing if the router dropped it. It is charged like
// the running one: a task that is not pure never runs twice.
TEST_F(RouterTest, AChunkHeldBeforeTheRunningOneIsChargedNotRequeuedFree) {
  start();
  ready_quietly(1000);
  submit("1", 7, 0, 1);
  submit("1", 7, 1, 1);
  io_.take();
  io_.marks[1000] = wire::chunk_mark(7, 1);
  exit(1000, kKilled);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(decode_lost(sent[0].payload).second, (Ranges{{1, 1}}));
  EXPECT_EQ(decode_lost(sent[1].payload).second, (Ranges{{0, 1}}));
  EXPECT_EQ(core_->queued(), 0u);
}

// Mark 0: the worker died between chunks (after sending a result, before starting the
// next one): no chunk killed it, so none spends a retry.
TEST_F(RouterTest, ADeathBetweenChunksSpendsNoRetry) {
  config_.pure_retries = 1;
  start();
  ready_quietly(1000);
  submit_pure(7, 0, "x");
  io_.take();
  io_.marks[1000] = 0;
  exit(1000, kKilled);
  EXPECT_EQ(core_->queued(), 1u);
  ready_quietly(1001);
  io_.take();
  io_.marks[1001] = wire::chunk_mark(7, 0);
  exit(1001, SIGSEGV);  // spends the one retry...
  EXPECT_EQ(core_->queued(), 1u) << "the first death was free";
  ready_quietly(1002);
  io_.take();
  io_.marks[1002] = wire::chunk_mark(7, 0);
  exit(1002, SIGSEGV);  // ...and this one finds none left
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kLost);
}

// Without retries everything a dead worker held is lost; the chunk that was running is
// reported first, on its own, so the first error a caller sees names the item that
// killed the worker. The others say what was running.
TEST_F(RouterTest, TheRunningChunkIsReportedLostFirst) {
  start();
  ready_quietly(1000);
  submit("1", 7, 5, 1);
  submit("1", 7, 7, 1);
  io_.take();
  io_.marks[1000] = wire::chunk_mark(7, 7);  // chunk 5 finished; its result died in flight
  exit(1000, kKilled);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  ASSERT_EQ(sent[0].type, Type::kLost);
  ASSERT_EQ(sent[1].type, Type::kLost);
  EXPECT_EQ(decode_lost(sent[0].payload).second, (Ranges{{7, 1}}));
  EXPECT_EQ(decode_lost(sent[1].payload).second, (Ranges{{5, 1}}));
  EXPECT_EQ(decode_lost(sent[0].payload).first.find("while running"), std::string::npos);
  EXPECT_NE(decode_lost(sent[1].payload).first.find("while running item 7"), std::string::npos)
      << decode_lost(sent[1].payload).first;
}

// A worker that dies between chunks (mark 0) charges no chunk; but a chunk whose
// workers keep dying that way (its payload alone kills them) is charged from the fourth
// death on, so it is lost after its retries instead of killing workers forever.
TEST_F(RouterTest, FreeRequeuesOfOneChunkAreBounded) {
  config_.pure_retries = 1;
  start();
  pid_t pid = 1000;
  ready_quietly(pid);
  submit_pure(7, 0, "x");
  io_.take();
  bool lost = false;
  for (int death = 0; death < 10 && !lost; ++death) {
    io_.marks[pid] = 0;
    exit(pid, 70 << 8);  // exit(70): bad_alloc outside any task
    for (const Sent& s : io_.take()) lost = lost || s.type == Type::kLost;
    if (!lost) {
      ready_quietly(++pid);
      io_.take();
    }
  }
  EXPECT_TRUE(lost) << "the chunk was requeued for free forever";
  EXPECT_LE(pid - 1000, 5) << "3 free requeues, then the 1 retry, then lost";
}

// The chunk over its budget answers after all, between the kill and the worker's
// exit: it did not time out, and the chunk behind it must not be blamed for it.
TEST_F(RouterTest, AResultArrivingAfterATimeoutKillClearsTheTimeout) {
  config_.task_timeout = milliseconds(100);
  start();
  ready_quietly(1000);
  submit("1", 7, 0, 1);
  submit("1", 7, 1, 1);
  io_.take();
  advance(milliseconds(150));
  tick();
  ASSERT_EQ(io_.killed, (std::vector<pid_t>{1000}));
  result(1000, 7, 0, 1);  // chunk 0's result was on its way
  io_.take();
  exit(1000, kKilled);
  for (const Sent& s : io_.take()) {
    if (s.type != Type::kLost) continue;
    EXPECT_FALSE(s.flags & wire::kFlagTimedOut) << "chunk 1 did not time out";
    EXPECT_EQ(decode_lost(s.payload).second, (Ranges{{1, 1}}));
  }
}

// A chunk held behind chunks that kill their workers is never charged, pure or not,
// retries or none: those deaths were the other chunks' doing, however many there are.
TEST_F(RouterTest, DeathsRunningOtherChunksNeverChargeAHeldOne) {
  config_.workers = 2;
  start();
  ready_quietly(1000);
  client("R1", make(Type::kSubmit, 9, 0, 1, "square"), "k");  // the killer, first
  submit("1", 7, 0, 1);                                       // not pure, held behind it
  io_.take();
  pid_t held_by = 1000;
  pid_t next = 1001;
  for (std::uint64_t death = 0; death < 8; ++death) {
    ready_quietly(next);
    // The next killer goes to the new worker first; the held chunk follows it there.
    client("R1", make(Type::kSubmit, 9, death + 1, 1, "square"), "k");
    io_.take();
    io_.marks[held_by] = wire::chunk_mark(9, death);
    exit(held_by, SIGSEGV);
    auto sent = io_.take();
    ASSERT_EQ(sent.size(), 2u) << "at death " << death;
    EXPECT_EQ(sent[0].type, Type::kLost);
    EXPECT_EQ(sent[0].call_id, 9u);
    EXPECT_EQ(decode_lost(sent[0].payload).second, (Ranges{{death, 1}}))
        << "only the chunk that ran is lost, at death " << death;
    expect_task(sent[1], next, 7, 0, 1);
    held_by = next;
    next = static_cast<pid_t>(1002 + death);
  }
}

// Refused, with one error for its call (not one per announced item): its sender
// would otherwise wait for it forever.
TEST_F(RouterTest, ASubmitAnnouncingMoreItemsThanBytesIsRefused) {
  start();
  ready_quietly(1000);
  client("R1", make(Type::kSubmit, 7, 0, 1000, "square"), "tiny");
  EXPECT_EQ(core_->queued(), 0u);
  auto refused = io_.take();
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].kind, Sent::kSendClient);
  EXPECT_EQ(refused[0].to, "R1");
  EXPECT_EQ(refused[0].type, Type::kPoolError);
  EXPECT_EQ(refused[0].call_id, 7u);
  EXPECT_NE(refused[0].payload.find("mpx::DecodeError"), std::string::npos);
  EXPECT_NE(refused[0].payload.find("announcing 1000 items in 4 bytes"), std::string::npos);

  // Unless its items are in an argument buffer (a chunk of numbers): a small payload.
  detail::Buffer ref;
  detail::pack_raw_chunk_ref(ref, detail::SegmentRef{detail::SegmentKind::kArgumentBuffer, 1, 3, 5, 0, 64},
                             detail::raw_code<int>(), 0, 0, 0);
  client("R1", make(Type::kSubmit, 8, 0, 1000, "square"), std::string(ref.data(), ref.size()));
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  expect_task(sent[0], 1000, 8, 0, 1000);
}

TEST_F(RouterTest, ReadyIsTakenOnlyFromTheWorkersOwnRoutingId) {
  start();
  Header h = make(Type::kReady, 0, 0, 0, "PoolWorker");
  h.pid = 1000;
  worker("Wimpostor", h);
  EXPECT_TRUE(io_.take().empty()) << "no CONFIG for an impostor";
  ready(1000);  // from W1000, the id the (fake) spawn handed out
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kConfig);
}

// Workers are known by id: a supervisor that cannot tell their pids (one on another
// host) leaves them to READY; a READY naming another pid than a known one is refused.
TEST_F(RouterTest, AWorkerKnownOnlyByIdTakesItsPidFromReady) {
  io_.unknown_pids = true;
  start();
  hello("1");
  ready(1000);
  configured(1000);
  io_.take();
  submit("1", 3, 0, 2);
  ASSERT_EQ(io_.take().size(), 1u);
  io_.unknown_pids = false;  // for its replacement
  exit(1000);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kLost);
  EXPECT_EQ(sent[0].pid, 1000) << "the lost chunks name the pid READY gave";
  // Its replacement (W1001) is known by pid; a READY from its id naming another
  // process is not it.
  ASSERT_EQ(io_.spawned.size(), 2u);
  Header h = make(Type::kReady, 0, 0, 0, "PoolWorker");
  h.pid = 4242;
  worker(wid(1001), h);
  EXPECT_TRUE(io_.take().empty()) << "no CONFIG for a READY naming another pid";
}

TEST_F(RouterTest, AChunkOverItsTimeBudgetIsTimedOutAndItsWorkerReplaced) {
  config_.task_timeout = milliseconds(100);
  start();
  ready_quietly(1000);
  submit("1", 7, 0, 2);  // 2 items: a budget of 200 ms
  submit("1", 7, 2, 1);  // queued behind it on the same worker
  io_.take();
  advance(milliseconds(150));
  tick();
  EXPECT_TRUE(io_.killed.empty()) << "within its budget";
  EXPECT_LE(core_->next_tick(), now_ + milliseconds(50)) << "a tick is due when the budget ends";
  advance(milliseconds(100));
  tick();
  ASSERT_EQ(io_.killed, (std::vector<pid_t>{1000}));
  EXPECT_EQ(io_.spawned.size(), 2u) << "the replacement starts at once";
  exit(1000, kKilled);
  auto sent = io_.take();
  ASSERT_GE(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kLost);
  EXPECT_EQ(sent[0].flags, wire::kFlagTimedOut);
  EXPECT_EQ(decode_lost(sent[0].payload).second, (Ranges{{0, 2}}));
  EXPECT_NE(decode_lost(sent[0].payload).first.find("ran longer than 100 ms per task"),
            std::string::npos);
  ASSERT_EQ(sent.size(), 1u) << "the chunk behind never started: requeued, not lost";
  EXPECT_EQ(core_->queued(), 1u);
}

TEST_F(RouterTest, TheBudgetOfTheNextChunkStartsWithTheResultOfThePrevious) {
  config_.task_timeout = milliseconds(100);
  start();
  ready_quietly(1000);
  submit("1", 7, 0, 1);
  submit("1", 7, 1, 1);
  io_.take();
  advance(milliseconds(90));
  result(1000, 7, 0, 1);
  advance(milliseconds(90));  // 180 ms after dispatch, 90 ms into the second chunk
  tick();
  EXPECT_TRUE(io_.killed.empty());
}

TEST_F(RouterTest, PureChunksAreRetriedAfterATimeout) {
  config_.task_timeout = milliseconds(100);
  config_.pure_retries = 1;
  start();
  ready_quietly(1000);
  submit_pure(7, 0, "args");
  io_.take();
  advance(milliseconds(150));
  tick();
  exit(1000, kKilled);
  EXPECT_TRUE(io_.take().empty()) << "run again, not reported";
  EXPECT_EQ(core_->queued(), 1u);
}

// A chunk that timed out and may not run again fails at once; the pure chunk held
// behind it did not run, so the kill costs it nothing, with or without a mark.
class TimedOutChunkTest : public RouterTest {
 protected:
  void fail_one_then_crash_the_next(bool with_mark) {
    config_.task_timeout = milliseconds(100);
    config_.pure_retries = 1;
    start();
    ready_quietly(1000);
    submit("1", 8, 0, 1);    // not pure: no retries
    submit_pure(7, 0, "x");  // held behind it
    io_.take();
    advance(milliseconds(150));
    tick();
    ASSERT_EQ(io_.killed, (std::vector<pid_t>{1000}));
    if (with_mark) io_.marks[1000] = wire::chunk_mark(8, 0);
    exit(1000, kKilled);
    auto sent = io_.take();
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(sent[0].flags, wire::kFlagTimedOut);
    EXPECT_EQ(core_->queued(), 1u);
    // The pure chunk runs on the replacement and kills it: its one retry is still there.
    ready_quietly(1001);
    io_.take();
    io_.marks[1001] = wire::chunk_mark(7, 0);
    exit(1001, SIGSEGV);
    EXPECT_TRUE(io_.take().empty()) << "the pure chunk was charged for the timeout";
    EXPECT_EQ(core_->queued(), 1u);
  }
};
TEST_F(TimedOutChunkTest, ChargesNothingBehindItWithoutAMark) { fail_one_then_crash_the_next(false); }
TEST_F(TimedOutChunkTest, ChargesNothingBehindItWithTheWorkersMark) { fail_one_then_crash_the_next(true); }

TEST_F(RouterTest, OnlyPureChunksGetPureRetries) {
  config_.pure_retries = 3;
  start();
  ready_quietly(1000);
  submit("1", 8, 0, 1);
  io_.take();
  exit(1000, kKilled);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kLost);
  EXPECT_EQ(sent[0].call_id, 8u);
  ready_quietly(1001);
  submit_pure(7, 0, "args");
  io_.take();
  exit(1001, kKilled);
  EXPECT_TRUE(io_.take().empty()) << "the pure chunk runs again";
  EXPECT_EQ(core_->queued(), 1u);
}

TEST_F(RouterTest, ABusyWorkerStoppedLongerThanTheHeartbeatTimeoutIsReplaced) {
  start();
  ready_quietly(1000);
  submit("1", 7, 0, 1);
  io_.take();
  io_.stopped.insert(1000);
  tick();  // first seen stopped
  advance(milliseconds(900));
  tick();
  EXPECT_TRUE(io_.killed.empty());
  advance(milliseconds(200));
  tick();
  ASSERT_EQ(io_.killed, (std::vector<pid_t>{1000}));
  exit(1000, kKilled);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kLost);
  EXPECT_EQ(sent[0].flags, 0);
  EXPECT_NE(decode_lost(sent[0].payload).first.find("stopped"), std::string::npos);
}

TEST_F(RouterTest, ABusyWorkerThatResumesIsKept) {
  start();
  ready_quietly(1000);
  submit("1", 7, 0, 1);
  io_.take();
  io_.stopped.insert(1000);
  tick();
  advance(milliseconds(900));
  io_.stopped.clear();  // SIGCONT
  tick();
  io_.stopped.insert(1000);
  advance(milliseconds(900));
  tick();
  advance(milliseconds(200));
  tick();
  EXPECT_TRUE(io_.killed.empty()) << "the stop clock restarts after it ran again";
}

TEST_F(RouterTest, RetriesRunALostChunkAgainThenReportIt) {
  config_.max_retries = 1;
  start();
  ready_quietly(1000);
  submit("1", 7, 0, 3, "first");
  submit("1", 7, 3, 3, "second");
  io_.take();
  exit(1000, kKilled);
  EXPECT_TRUE(io_.take().empty()) << "nothing reported lost while retries remain";
  EXPECT_EQ(core_->queued(), 2u);
  ready_quietly(1001);  // the replacement
  // ready_quietly discarded what was sent: check the order through a second worker death.
  exit(1001, kKilled);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u) << "the second death exhausts the single retry of the first";
  EXPECT_EQ(sent[0].type, Type::kLost);
  EXPECT_EQ(sent[0].call_id, 7u);
  EXPECT_EQ(decode_lost(sent[0].payload).second, (Ranges{{0, 3}}));
  EXPECT_EQ(core_->queued(), 1u) << "the second chunk never ran: its retry is unspent";
}

TEST_F(RouterTest, RetriedChunksKeepTheirOrderAndPayload) {
  config_.max_retries = 2;
  start();
  ready_quietly(1000);
  submit("1", 7, 0, 1, "first");
  submit("1", 7, 1, 1, "second");
  io_.take();
  exit(1000, kKilled);
  ready(1001);
  configured(1001);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 3u);  // CONFIG, then both chunks again, in order
  expect_task(sent[1], 1001, 7, 0, 1);
  EXPECT_EQ(sent[1].payload, "first");
  expect_task(sent[2], 1001, 7, 1, 1);
  EXPECT_EQ(sent[2].payload, "second");
  result(1001, 7, 0, 1);
  result(1001, 7, 1, 1);
  EXPECT_EQ(io_.take().size(), 2u) << "both results forwarded, none lost";
}

TEST_F(RouterTest, QueuedChunksSurviveAWorkerDeathAndGoToTheReplacement) {
  config_.prefetch = 1;
  start();
  ready_quietly(1000);
  submit("1", 1, 0, 2);
  submit("1", 1, 2, 2);  // queued
  io_.take();
  exit(1000, kKilled);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(decode_lost(sent[0].payload).second, (Ranges{{0, 2}}));
  EXPECT_EQ(core_->queued(), 1u);
  ready(1001);
  configured(1001);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].type, Type::kConfig);
  expect_task(sent[1], 1001, 1, 2, 2);
}

TEST_F(RouterTest, IdleWorkerExitIsReplacedWithoutLostMessages) {
  start();
  ready_quietly(1000);
  exit(1000, kExited0);
  EXPECT_TRUE(io_.sent.empty());
  EXPECT_EQ(io_.spawned.size(), 2u);
  EXPECT_EQ(core_->live_workers(), 1u);
  EXPECT_FALSE(core_->broken());
}

TEST_F(RouterTest, RepeatedStartupDeathsBreakThePool) {
  config_.workers = 2;
  start();
  hello("1");
  io_.take();
  exit(1000, SIGSEGV);  // 1 -> spawns 1002
  exit(1001, SIGSEGV);  // 2 -> spawns 1003
  EXPECT_FALSE(core_->broken());
  EXPECT_TRUE(io_.sent.empty());
  submit("1", 4, 0, 2);  // queued while the pool is still starting
  exit(1002, SIGSEGV);   // 3: broken
  EXPECT_TRUE(core_->broken());
  EXPECT_EQ(io_.spawned.size(), 4u);
  EXPECT_EQ(io_.killed, (std::vector<pid_t>{1003}));
  EXPECT_EQ(core_->queued(), 0u);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].to, "R1");
  EXPECT_EQ(sent[0].type, Type::kPoolError);
  EXPECT_EQ(sent[0].call_id, 0u);
  EXPECT_NE(sent[0].payload.find("pid 1002"), std::string::npos) << sent[0].payload;

  submit("1", 9, 0, 3);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].to, "R1");
  EXPECT_EQ(sent[0].type, Type::kPoolError);
  EXPECT_EQ(sent[0].call_id, 9u);
  EXPECT_EQ(core_->queued(), 0u);

  // A late HELLO learns it too; the last worker's exit spawns nothing.
  hello("2");
  sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].type, Type::kWelcome);
  EXPECT_EQ(sent[1].type, Type::kPoolError);
  EXPECT_EQ(sent[1].to, "R2");
  exit(1003);
  EXPECT_EQ(io_.spawned.size(), 4u);
  EXPECT_TRUE(io_.sent.empty());
}

TEST_F(RouterTest, StartupDeathsMustBeConsecutive) {
  start();
  exit(1000, SIGSEGV);  // 1
  exit(1001, SIGSEGV);  // 2
  ready_quietly(1002);  // resets the count
  exit(1002);    // a ready worker's death is not a start-up failure
  exit(1003, SIGSEGV);  // 1
  exit(1004, SIGSEGV);  // 2
  EXPECT_FALSE(core_->broken());
  exit(1005, SIGSEGV);  // 3
  EXPECT_TRUE(core_->broken());
}

TEST_F(RouterTest, InitFailedBreaksThePoolWithTheInitializersError) {
  config_.initializer = "connect_db";
  config_.workers = 2;
  start();
  hello("1");
  ready_quietly(1000);
  submit("1", 3, 0, 4);  // in flight on 1000
  submit("1", 3, 4, 4);
  submit("1", 3, 8, 4);  // queued
  io_.take();

  detail::ErrorInfo error;
  error.type = "std::runtime_error";
  error.message = "no database";
  error.pid = 1000;
  Header h = make(Type::kInitFailed);
  h.pid = 1000;
  worker("W1000", h, detail::encode_error(error));

  EXPECT_TRUE(core_->broken());
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].to, "R1");
  EXPECT_EQ(sent[0].type, Type::kPoolError);
  EXPECT_EQ(sent[0].call_id, 0u);
  EXPECT_NE(sent[0].payload.find("connect_db"), std::string::npos) << sent[0].payload;
  EXPECT_NE(sent[0].payload.find("std::runtime_error: no database"), std::string::npos)
      << sent[0].payload;
  EXPECT_EQ(core_->queued(), 0u);
  std::vector<pid_t> killed = io_.killed;
  std::sort(killed.begin(), killed.end());
  EXPECT_EQ(killed, (std::vector<pid_t>{1000, 1001}));

  // The dead workers' chunks were already answered by POOL_ERROR: no LOST, no respawn.
  exit(1000);
  exit(1001);
  EXPECT_TRUE(io_.sent.empty());
  EXPECT_EQ(io_.spawned.size(), 2u);
  EXPECT_EQ(core_->live_workers(), 0u);
}

TEST_F(RouterTest, UndecodableInitFailedStillBreaksThePool) {
  config_.initializer = "setup";
  start();
  hello("1");
  ready_quietly(1000);
  io_.take();
  Header h = make(Type::kInitFailed);
  h.pid = 1000;
  worker("W1000", h, "\xc1 not msgpack");
  EXPECT_TRUE(core_->broken());
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_NE(sent[0].payload.find("undecodable"), std::string::npos) << sent[0].payload;
}

// Future::cancel: the worker running a chunk of the call (its shared mark says so) is
// killed; the chunk of another call it held goes to its replacement; the client gets
// its acknowledgement.
TEST_F(RouterTest, CancelWithKillStopsTheWorkerRunningTheCall) {
  start();
  ready_quietly(1000);
  submit("1", 7, 0, 1);
  submit("1", 8, 0, 1);  // held behind it by the same worker
  io_.take();
  io_.running[1000] = wire::chunk_mark(7, 0);
  io_.marks[1000] = wire::chunk_mark(7, 0);
  client("R1", wire::Cancel{7, /*kill_running=*/true, /*want_ack=*/true}.header());
  EXPECT_EQ(io_.cancels, (std::vector<std::pair<pid_t, std::uint64_t>>{{1000, 7}}));
  EXPECT_EQ(io_.killed, (std::vector<pid_t>{1000}));
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].kind, Sent::kSendClient);
  EXPECT_EQ(sent[0].type, Type::kCancel);
  EXPECT_EQ(sent[0].call_id, 7u);
  exit(1000);  // its mark: call 7's chunk ran; call 8's had not started
  EXPECT_EQ(core_->queued(), 1u) << "call 8's chunk was requeued, not lost";
  for (const auto& s : io_.take()) {
    if (s.type == Type::kLost) EXPECT_EQ(s.call_id, 7u) << "only the cancelled chunk is reported lost";
  }
  ready_quietly(1001);
  EXPECT_EQ(core_->queued(), 0u);
  EXPECT_EQ(core_->outstanding(), 1u) << "call 8's chunk went to the new worker";
}

// A chunk of the call held but not started: the worker is told (it skips the chunk);
// nobody is killed, and without kill_running not even a runner.
TEST_F(RouterTest, CancelOfChunksNotStartedKillsNobody) {
  start();
  ready_quietly(1000);
  submit("1", 8, 0, 1);
  submit("1", 7, 0, 1);
  io_.take();
  io_.running[1000] = wire::chunk_mark(8, 0);
  client("R1", wire::Cancel{7, true, false}.header());
  EXPECT_EQ(io_.cancels, (std::vector<std::pair<pid_t, std::uint64_t>>{{1000, 7}}));
  EXPECT_TRUE(io_.killed.empty());
  EXPECT_TRUE(io_.take().empty()) << "no acknowledgement was asked for";
  io_.running[1000] = wire::chunk_mark(8, 0);
  client("R1", wire::Cancel{8, /*kill_running=*/false, false}.header());
  EXPECT_TRUE(io_.killed.empty()) << "a running chunk finishes without kill_running";
}

TEST_F(RouterTest, CancelDropsOnlyThatCallsQueuedChunks) {
  config_.prefetch = 1;
  start();
  ready_quietly(1000);
  submit("1", 1, 0, 1);  // in flight
  submit("1", 1, 1, 1);
  submit("1", 2, 0, 1);
  submit("1", 1, 2, 1);
  submit("2", 1, 0, 1);  // same call id from another client
  io_.take();
  EXPECT_EQ(core_->queued(), 4u);

  client("R1", make(Type::kCancel, 1));
  EXPECT_EQ(core_->queued(), 2u);
  EXPECT_TRUE(io_.sent.empty());

  result(1000, 1, 0, 1);  // the in-flight chunk still completes
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].kind, Sent::kForwardClient);
  EXPECT_EQ(sent[0].to, "R1");
  expect_task(sent[1], 1000, 2, 0, 1);
  result(1000, 2, 0, 1);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  expect_task(sent[1], 1000, 1, 0, 1);
  EXPECT_EQ(core_->queued(), 0u);
}

TEST_F(RouterTest, MaxTasksPerChildRetiresTheWorker) {
  config_.maxtasksperchild = 2;
  config_.prefetch = 2;
  start();
  ready_quietly(1000);
  submit("1", 1, 0, 1);
  submit("1", 1, 1, 1);  // 1000's second chunk: it retires, a replacement starts now
  submit("1", 1, 2, 1);  // waits for the replacement
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  expect_task(sent[0], 1000, 1, 0, 1);
  expect_task(sent[1], 1000, 1, 1, 1);
  EXPECT_EQ(io_.spawned.size(), 2u);
  EXPECT_EQ(core_->queued(), 1u);

  result(1000, 1, 0, 1);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);  // forwarded; no STOP while it still holds a chunk
  EXPECT_EQ(sent[0].kind, Sent::kForwardClient);

  result(1000, 1, 1, 1);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].kind, Sent::kForwardClient);
  EXPECT_EQ(sent[1].kind, Sent::kSendWorker);
  EXPECT_EQ(sent[1].to, "W1000");
  EXPECT_EQ(sent[1].type, Type::kStop);

  ready(1001);
  configured(1001);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].type, Type::kConfig);
  expect_task(sent[1], 1001, 1, 2, 1);

  exit(1000, kExited0);  // its replacement already exists
  EXPECT_EQ(io_.spawned.size(), 2u);
  EXPECT_EQ(core_->live_workers(), 1u);
  EXPECT_TRUE(io_.sent.empty());
  EXPECT_FALSE(core_->broken());
}

TEST_F(RouterTest, RetiringWorkerThatDiesReportsItsChunksButIsNotReplacedTwice) {
  config_.maxtasksperchild = 1;
  start();
  ready_quietly(1000);
  submit("1", 1, 0, 1);
  io_.take();
  EXPECT_EQ(io_.spawned.size(), 2u);
  exit(1000, kKilled);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kLost);
  EXPECT_EQ(io_.spawned.size(), 2u);
}

TEST_F(RouterTest, ShutdownStopsReadyWorkersAndKillsStartingOnes) {
  config_.workers = 3;
  start();
  ready_quietly(1000);
  ready_quietly(1001);
  submit("1", 1, 0, 1);  // in flight on 1000
  io_.take();

  client("R1", make(Type::kShutdown));
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  for (const Sent& s : sent) {
    EXPECT_EQ(s.kind, Sent::kSendWorker);
    EXPECT_EQ(s.type, Type::kStop);
  }
  EXPECT_EQ(sent[0].to, "W1000");
  EXPECT_EQ(sent[1].to, "W1001");
  EXPECT_EQ(io_.killed, (std::vector<pid_t>{1002}));
  EXPECT_FALSE(core_->finished());

  // New work is ignored; work in flight still comes back.
  submit("1", 2, 0, 1);
  EXPECT_TRUE(io_.sent.empty());
  EXPECT_EQ(core_->queued(), 0u);
  result(1000, 1, 0, 1);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].kind, Sent::kForwardClient);

  exit(1002, kKilled);
  exit(1000, kExited0);
  EXPECT_FALSE(core_->finished());
  exit(1001, kExited0);
  EXPECT_TRUE(core_->finished());
  EXPECT_EQ(io_.spawned.size(), 3u);  // nothing replaced
  EXPECT_TRUE(io_.sent.empty());
}

TEST_F(RouterTest, ReadyDuringShutdownIsKilled) {
  start();
  client("R1", make(Type::kShutdown));
  EXPECT_EQ(io_.killed, (std::vector<pid_t>{1000}));
  ready(1000);  // raced the kill
  EXPECT_TRUE(io_.sent.empty());
  EXPECT_EQ(io_.killed, (std::vector<pid_t>{1000, 1000}));
}

// A pool shut down right after it started (a short program) kills the workers still
// starting; the READY one of them sent before it died is read after its exit. The user
// is not warned about what the shutdown did itself.
TEST_F(RouterTest, AReadyReadAfterTheShutdownKilledItsWorkerIsDroppedQuietly) {
  config_.workers = 2;
  start();
  ready_quietly(1000);
  mpx::testing::LogCapture log;
  client("R1", make(Type::kShutdown));
  EXPECT_EQ(io_.killed, (std::vector<pid_t>{1001}));
  io_.take();
  exit(1001, kKilled);
  ready(1001);
  EXPECT_TRUE(io_.take().empty());
  EXPECT_EQ(log.text().find("warning"), std::string::npos) << log.text();

  // Outside a shutdown the same READY is worth a warning.
  config_.workers = 1;
  start();  // a new RouterCore: its worker is pid 1002
  exit(1002, kKilled);
  io_.take();
  ready(1002);
  EXPECT_NE(log.text().find("dropped READY from unknown worker pid 1002"), std::string::npos)
      << log.text();
}

TEST_F(RouterTest, StopGraceThenKill) {
  config_.workers = 2;
  start();
  ready_quietly(1000);
  ready_quietly(1001);
  client("R1", make(Type::kShutdown));
  io_.take();
  EXPECT_LE(core_->next_tick(), now_ + config_.stop_grace);
  exit(1001, kExited0);

  advance(config_.stop_grace - milliseconds(1));
  tick();
  EXPECT_TRUE(io_.killed.empty());
  EXPECT_TRUE(io_.sent.empty());  // no pings while stopping
  advance(milliseconds(1));
  tick();
  EXPECT_EQ(io_.killed, (std::vector<pid_t>{1000}));
  // Still there after another grace period: killed again.
  advance(config_.stop_grace);
  tick();
  EXPECT_EQ(io_.killed, (std::vector<pid_t>{1000, 1000}));
  exit(1000, kKilled);
  EXPECT_TRUE(core_->finished());
}

TEST_F(RouterTest, TerminateKillsEveryWorker) {
  config_.workers = 3;
  start();
  ready_quietly(1000);
  ready_quietly(1001);
  submit("1", 1, 0, 1);
  submit("1", 1, 1, 1);
  submit("1", 1, 2, 1);
  submit("1", 1, 3, 1);
  submit("1", 1, 4, 1);  // queued
  io_.take();
  client("R1", make(Type::kTerminate));
  EXPECT_TRUE(io_.sent.empty());  // no STOP: kills
  std::vector<pid_t> killed = io_.killed;
  std::sort(killed.begin(), killed.end());
  EXPECT_EQ(killed, (std::vector<pid_t>{1000, 1001, 1002}));
  EXPECT_EQ(core_->queued(), 0u);
  exit(1002);
  exit(1001);
  exit(1000);
  // Chunks in flight on killed workers are reported lost, nothing is respawned.
  auto sent = io_.take();
  EXPECT_EQ(sent.size(), 2u);
  for (const Sent& s : sent) EXPECT_EQ(s.type, Type::kLost);
  EXPECT_EQ(io_.spawned.size(), 3u);
  EXPECT_TRUE(core_->finished());
}

TEST_F(RouterTest, TerminateAfterShutdownKillsToo) {
  start();
  ready_quietly(1000);
  client("R1", make(Type::kShutdown));
  io_.take();
  EXPECT_TRUE(io_.killed.empty());
  core_->terminate();
  EXPECT_EQ(io_.killed, (std::vector<pid_t>{1000}));
}

TEST_F(RouterTest, IdleWorkerIsPingedAfterTheHeartbeatInterval) {
  start();
  ready_quietly(1000);
  advance(milliseconds(50));
  tick();
  EXPECT_TRUE(io_.sent.empty());
  advance(milliseconds(50));  // 100 ms silent
  tick();
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].kind, Sent::kSendWorker);
  EXPECT_EQ(sent[0].to, "W1000");
  EXPECT_EQ(sent[0].type, Type::kPing);
  EXPECT_EQ(core_->next_tick(), now_ + config_.heartbeat_interval);

  advance(milliseconds(50));  // pinged 50 ms ago: not again yet
  tick();
  EXPECT_TRUE(io_.sent.empty());
  advance(milliseconds(50));
  tick();
  sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kPing);

  // A PONG counts as a sign of life: no ping until it is an interval old.
  Header pong = make(Type::kPong);
  pong.pid = 1000;
  worker("W1000", pong);
  advance(milliseconds(99));
  tick();
  EXPECT_TRUE(io_.sent.empty());
  EXPECT_TRUE(io_.killed.empty());
}

TEST_F(RouterTest, SilentIdleWorkerIsKilledAndReplaced) {
  start();
  ready_quietly(1000);
  advance(config_.heartbeat_timeout);
  tick();
  EXPECT_TRUE(io_.killed.empty());  // exactly the timeout: still tolerated
  io_.take();
  advance(milliseconds(1));
  tick();
  EXPECT_EQ(io_.killed, (std::vector<pid_t>{1000}));
  EXPECT_EQ(io_.spawned.size(), 2u);
  EXPECT_EQ(core_->live_workers(), 2u);

  // Its exit is neither a start-up failure nor a reason for another replacement.
  exit(1000, kKilled);
  EXPECT_EQ(io_.spawned.size(), 2u);
  EXPECT_EQ(core_->live_workers(), 1u);
  EXPECT_TRUE(io_.take().empty());
  EXPECT_FALSE(core_->broken());
}

TEST_F(RouterTest, WorkerThatNeverAnnouncesItselfIsKilledAfterTheStartupTimeout) {
  config_.startup_timeout = milliseconds(2000);
  start();
  advance(milliseconds(2000));
  tick();
  EXPECT_TRUE(io_.killed.empty());
  advance(milliseconds(1));
  tick();
  EXPECT_EQ(io_.killed, (std::vector<pid_t>{1000}));
  // Its death is a start-up failure like any other: replaced, and counted.
  exit(1000, kKilled);
  EXPECT_EQ(io_.spawned.size(), 2u);
  EXPECT_FALSE(core_->broken());
}

TEST_F(RouterTest, RetiredWorkerThatIgnoresStopIsKilledAfterTheGrace) {
  config_.maxtasksperchild = 1;
  start();
  ready_quietly(1000);
  submit("1", 1, 0, 1);
  result(1000, 1, 0, 1);
  auto sent = io_.take();
  ASSERT_FALSE(sent.empty());
  EXPECT_EQ(sent.back().type, Type::kStop);
  advance(config_.stop_grace);
  tick();
  EXPECT_TRUE(io_.killed.empty());
  advance(milliseconds(1));
  tick();
  EXPECT_EQ(io_.killed, (std::vector<pid_t>{1000}));
  exit(1000, kKilled);
  EXPECT_EQ(io_.spawned.size(), 2u) << "its replacement was started when it retired";
}

TEST_F(RouterTest, FastWorkersEarnDeeperCreditSlowOnesKeepThePrefetch) {
  config_.prefetch = 2;
  config_.max_prefetch = 8;
  config_.credit_window = std::chrono::microseconds(500);
  start();
  ready_quietly(1000);
  for (std::uint64_t i = 0; i < 40; ++i) submit("1", 1, i, 1);
  EXPECT_EQ(io_.take().size(), 2u);
  // Chunks come back 10 us apart while others are queued: credit 500/10 -> capped at 8.
  std::uint64_t next = 0;
  for (int k = 0; k < 6; ++k) {
    now_ += std::chrono::microseconds(10);
    result(1000, 1, next, 1);
    ++next;
  }
  io_.take();
  EXPECT_EQ(core_->queued(), 40u - next - 8u) << "the worker now holds 8 chunks";

  // A slow worker (100 ms per chunk) is held to the prefetch floor.
  Config slow = config_;
  FakeIo io2;
  RouterCore core2(slow, io2, io2);
  auto t = now_;
  core2.start(t);
  transport::Incoming in;
  Header r = make(Type::kReady, 0, 0, 0, "PoolWorker");
  r.pid = 1000;
  fill(in, wid(1000), r, "");
  core2.on_worker(in, t);
  Header c = make(Type::kConfigured);
  c.pid = 1000;
  fill(in, wid(1000), c, "");
  core2.on_worker(in, t);
  for (std::uint64_t i = 0; i < 10; ++i) {
    fill(in, "R1", make(Type::kSubmit, 1, i, 1, "square"), "args");
    core2.on_client(in, t);
  }
  for (std::uint64_t i = 0; i < 4; ++i) {
    t += milliseconds(100);
    Header h = make(Type::kResult, 1, i, 1);
    h.pid = 1000;
    fill(in, wid(1000), h, "r");
    core2.on_worker(in, t);
  }
  EXPECT_EQ(core2.queued(), 10u - 4u - 2u) << "still 2 chunks in flight";
}

TEST_F(RouterTest, WorkerStillInItsInitializerIsNeitherPingedNorKilled) {
  start();
  ready(1000);  // CONFIG sent; no CONFIGURED yet: the initializer is running
  io_.take();
  advance(config_.heartbeat_timeout * 5);
  tick();
  EXPECT_TRUE(io_.killed.empty());
  EXPECT_TRUE(io_.take().empty()) << "no PING to a worker that cannot answer";
  configured(1000);
  advance(config_.heartbeat_interval);
  tick();
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kPing);
}

TEST_F(RouterTest, AnsweringWorkerIsNotKilled) {
  start();
  ready_quietly(1000);
  Header pong = make(Type::kPong);
  pong.pid = 1000;
  for (int i = 0; i < 30; ++i) {
    advance(milliseconds(100));
    tick();
    worker("W1000", pong);
  }
  EXPECT_TRUE(io_.killed.empty());
  EXPECT_EQ(io_.spawned.size(), 1u);
}

TEST_F(RouterTest, BusyWorkerIsNeitherPingedNorKilled) {
  start();
  ready_quietly(1000);
  submit("1", 1, 0, 1);
  io_.take();
  advance(config_.heartbeat_timeout * 5);
  tick();
  EXPECT_TRUE(io_.sent.empty());
  EXPECT_TRUE(io_.killed.empty());
}

TEST_F(RouterTest, UnknownPeersAndUnexpectedTypesAreDropped) {
  start();
  ready_quietly(1000);
  // Clients with routing ids that are not R<token>.
  client("X1", make(Type::kSubmit, 1, 0, 1, "square"));
  client("S1", make(Type::kSubmit, 1, 0, 1, "square"));
  client("R", make(Type::kSubmit, 1, 0, 1, "square"));
  client("", make(Type::kHello));
  // Types a client never sends.
  for (Type t : {Type::kWelcome, Type::kResult, Type::kLost, Type::kPoolError, Type::kReady,
                 Type::kConfig, Type::kInitFailed, Type::kTask, Type::kStop, Type::kPing,
                 Type::kPong}) {
    client("R1", make(t, 1, 0, 1, "square"));
  }
  // Empty SUBMIT: refused, its call answered with an error (below).
  submit("1", 1, 0, 0);
  EXPECT_EQ(core_->queued(), 0u);
  auto refused = io_.take();
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].type, Type::kPoolError);
  EXPECT_EQ(refused[0].call_id, 1u);
  EXPECT_NE(refused[0].payload.find("an empty SUBMIT of call 1"), std::string::npos);
  // Workers nobody spawned, or not yet READY.
  worker("W9999", make(Type::kResult, 1, 0, 1));
  worker("W1000x", make(Type::kPong));
  Header r = make(Type::kReady);
  r.pid = 4242;
  worker("W4242", r);
  // READY twice.
  r.pid = 1000;
  worker("W1000", r);
  // Types a worker never sends.
  for (Type t : {Type::kHello, Type::kSubmit, Type::kCancel, Type::kShutdown, Type::kTerminate,
                 Type::kWelcome, Type::kLost, Type::kPoolError, Type::kConfig, Type::kTask,
                 Type::kStop, Type::kPing}) {
    worker("W1000", make(t, 1, 0, 1, "square"));
  }
  EXPECT_TRUE(io_.sent.empty());
  EXPECT_TRUE(io_.killed.empty());
  EXPECT_EQ(io_.spawned.size(), 1u);
  EXPECT_FALSE(core_->broken());
  EXPECT_FALSE(core_->finished());
  // Exits of pids that are not workers are ignored.
  exit(4242);
  EXPECT_EQ(core_->live_workers(), 1u);
  // Still serving.
  submit("1", 1, 0, 1);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  expect_task(sent[0], 1000, 1, 0, 1);
}

TEST_F(RouterTest, ResultForAChunkTheWorkerDoesNotHoldIsDropped) {
  config_.workers = 2;
  start();
  ready_quietly(1000);
  ready_quietly(1001);
  submit("1", 1, 0, 4);  // 1000
  io_.take();
  result(1000, 1, 99, 4);  // wrong start
  result(1000, 2, 0, 4);   // wrong call
  result(1000, 1, 0, 3);   // wrong count
  result(1001, 1, 0, 4);   // right chunk, wrong worker
  EXPECT_TRUE(io_.sent.empty());

  // 1000 still holds it: its death reports it lost.
  exit(1000, kKilled);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kLost);
  EXPECT_EQ(decode_lost(sent[0].payload).second, (Ranges{{0, 4}}));
}

TEST_F(RouterTest, DuplicateResultIsForwardedOnce) {
  start();
  ready_quietly(1000);
  submit("1", 1, 0, 4);
  io_.take();
  result(1000, 1, 0, 4);
  result(1000, 1, 0, 4);
  EXPECT_EQ(io_.take().size(), 1u);
}

TEST_F(RouterTest, SpawnFailureBreaksThePool) {
  io_.fail_spawns = true;
  start();
  EXPECT_TRUE(core_->broken());
  hello("1");
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].type, Type::kWelcome);
  EXPECT_EQ(sent[1].type, Type::kPoolError);
  EXPECT_NE(sent[1].payload.find("cannot start a worker"), std::string::npos) << sent[1].payload;
}

// A host (a node agent) that joins brings its workers, started there; when it is lost
// they all end at once: pure chunks run again elsewhere, others are reported lost
// naming the host, nobody is replaced there, and their late frames are dropped.
TEST_F(RouterTest, AHostsWorkersStartThereAndEndTogether) {
  config_.workers = 1;
  config_.listen = "tcp://127.0.0.1:0";
  config_.pure_retries = 1;
  start();
  hello("1");
  ready_quietly(1000);
  core_->add_host("nodeA", 2, now_);
  EXPECT_EQ(io_.places, (std::vector<std::string>{"nodeA", "nodeA"}));
  ready_quietly(1001);
  ready_quietly(1002);
  submit_pure(1, 0, "a");
  submit_pure(1, 1, "b");
  submit("1", 2, 0, 1);  // not pure: lost with its host
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 3u);
  EXPECT_EQ(sent[1].to, "W1001");
  EXPECT_EQ(sent[2].to, "W1002");
  core_->lose_host("nodeA", "host nodeA lost: silent", now_);
  EXPECT_EQ(core_->live_workers(), 1u);
  EXPECT_EQ(io_.spawned.size(), 3u) << "no replacement on a lost host";
  sent = io_.take();
  bool lost_named = false, welcomed = false, retried = false;
  for (const Sent& m : sent) {
    if (m.type == Type::kLost) {
      EXPECT_EQ(m.call_id, 2u);
      lost_named = m.payload.find("host nodeA lost: silent") != std::string::npos;
    }
    if (m.type == Type::kWelcome) welcomed = m.count == 1;
    if (m.type == Type::kTask && m.to == "W1000" && m.call_id == 1 && m.start == 1) retried = true;
  }
  EXPECT_TRUE(lost_named);
  EXPECT_TRUE(welcomed) << "clients learn how many workers serve";
  EXPECT_TRUE(retried) << "the pure chunk runs again on a live worker";
  EXPECT_EQ(core_->status(now_).worker_deaths["host"], 2u) << "counted as lost with their host";
  // A frame from a worker of the lost host is late: dropped.
  result(1001, 1, 1, 1);
  EXPECT_TRUE(io_.take().empty());
}

TEST(RouterConfigTest, EncodeDecodeRoundTrip) {
  Config c;
  c.front_endpoint = "ipc://@f";
  c.back_endpoint = "ipc://@b";
  c.workers = 7;
  c.maxtasksperchild = 11;
  c.prefetch = 3;
  c.initializer = "init";
  c.initializer_args = std::string("\x00\x01", 2);
  c.heartbeat_interval = milliseconds(12);
  c.max_retries = 4;
  c.heartbeat_timeout = milliseconds(345);
  c.stop_grace = milliseconds(67);
  c.max_startup_failures = 5;
  c.pure_retries = 6;
  c.task_timeout = milliseconds(89);
  const Config d = Config::decode(c.encode());
  EXPECT_EQ(d.front_endpoint, c.front_endpoint);
  EXPECT_EQ(d.back_endpoint, c.back_endpoint);
  EXPECT_EQ(d.workers, 7);
  EXPECT_EQ(d.maxtasksperchild, 11u);
  EXPECT_EQ(d.prefetch, 3);
  EXPECT_EQ(d.initializer, "init");
  EXPECT_EQ(d.initializer_args, c.initializer_args);
  EXPECT_EQ(d.heartbeat_interval, milliseconds(12));
  EXPECT_EQ(d.max_retries, 4);
  EXPECT_EQ(d.heartbeat_timeout, milliseconds(345));
  EXPECT_EQ(d.stop_grace, milliseconds(67));
  EXPECT_EQ(d.max_startup_failures, 5);
  EXPECT_EQ(d.pure_retries, 6);
  EXPECT_EQ(d.task_timeout, milliseconds(89));
}

// The configuration is a map of named fields: a reader meets absent fields with their
// defaults and ignores names it does not know, so either side may be newer.
TEST(RouterConfigTest, NamedFieldsWithDefaults) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, std::map<std::string, std::int64_t>{
                         {"workers", 5}, {"task_timeout_ms", 250}, {"a_field_from_a_newer_driver", 1}});
  const Config d = Config::decode(std::string(buf.data(), buf.size()));
  EXPECT_EQ(d.workers, 5);
  EXPECT_EQ(d.task_timeout, milliseconds(250));
  const Config defaults;
  EXPECT_EQ(d.prefetch, defaults.prefetch);
  EXPECT_EQ(d.heartbeat_timeout, defaults.heartbeat_timeout);
  EXPECT_EQ(d.max_message_bytes, defaults.max_message_bytes);
  // A field of the wrong type is refused, by name.
  msgpack::sbuffer bad;
  msgpack::pack(bad, std::map<std::string, std::string>{{"workers", "five"}});
  try {
    Config::decode(std::string(bad.data(), bad.size()));
    ADD_FAILURE() << "no throw";
  } catch (const DecodeError& e) {
    EXPECT_NE(std::string(e.what()).find("'workers'"), std::string::npos) << e.what();
  }
  // The old positional tuple is no map: refused, not misread.
  msgpack::sbuffer tuple;
  msgpack::pack(tuple, std::make_tuple(std::string("f"), std::string("b"), 2));
  EXPECT_THROW(Config::decode(std::string(tuple.data(), tuple.size())), DecodeError);
}

TEST(RouterConfigTest, DecodeRejectsGarbage) {
  EXPECT_THROW(Config::decode(""), DecodeError);
  EXPECT_THROW(Config::decode("\xc1\xc1"), DecodeError);
  Config c;
  c.workers = 0;
  EXPECT_THROW(Config::decode(c.encode()), DecodeError);
  c.listen = "tcp://0.0.0.0:0";  // a pool that listens may have no local workers
  EXPECT_EQ(Config::decode(c.encode()).workers, 0);
}


// ---- Lanes (wire::Lane): a stream between a client and one worker, past the router ----

class RouterLaneTest : public RouterTest {
 protected:
  RouterLaneTest() { config_.workers = 2; }
  void hello_with_lane(const std::string& token) {
    Header h = make(Type::kHello);
    h.flags = wire::kFlagWantsLane;
    client("R" + token, h);
  }
  // Worker pid runs lane chunk (call_id, 0, 1 item), as its shared page would say.
  void runs_lane_chunk(pid_t pid, std::uint64_t call_id, bool pure = false) {
    io_.lane_chunks[pid] = LaneChunk{call_id, 0, 1, pure};
    io_.running[pid] = wire::chunk_mark(call_id, 0);
    io_.marks[pid] = wire::chunk_mark(call_id, 0);
  }
  // n router ticks 100 ms apart, worker 1001 answering each: only 1000's silence counts.
  void ticks_while_1001_answers(int n) {
    for (int i = 0; i < n; ++i) {
      advance(milliseconds(100));
      tick();
      worker(wid(1001), make(Type::kPong));
    }
  }
  // As LocalWorkers reports a death: the running mark, the lane chunk it names, the counts.
  void exit_with_lane(pid_t pid, int status = kKilled) {
    LaneReport lane;
    const std::optional<std::uint64_t> mark = io_.take_running_mark(pid);
    auto it = io_.lane_chunks.find(pid);
    if (mark && it != io_.lane_chunks.end() && wire::chunk_mark(it->second.call_id, it->second.start) == *mark) {
      lane.running = it->second;
    }
    lane.counts = io_.lane_counts_of[pid];
    io_.running.erase(pid);
    core_->on_worker_exit(wid(pid), status, mark, now_, lane);
  }
  // Client R1 wants a lane; workers 1000 and 1001 serve; the lane goes to 1000.
  void lane_to_1000() {
    start();
    hello_with_lane("1");
    ready_quietly(1000);
    ready_quietly(1001);
  }
};

void expect_lane(const Sent& s, Sent::Kind kind, const std::string& to, pid_t worker) {
  EXPECT_EQ(s.kind, kind);
  EXPECT_EQ(s.to, to);
  EXPECT_EQ(s.type, Type::kLane);
  EXPECT_EQ(s.pid, worker);
}

TEST_F(RouterLaneTest, AClientThatAsksGetsALaneOnceAWorkerServes) {
  start();
  hello_with_lane("1");
  hello("2");  // asks for none
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].type, Type::kWelcome);
  EXPECT_EQ(sent[1].type, Type::kWelcome) << "no worker serves yet: no lane";
  ready(1000);
  EXPECT_EQ(io_.take().size(), 1u) << "CONFIG only: its initializer has not run";
  configured(1000);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 2u);
  expect_lane(sent[0], Sent::kSendWorker, wid(1000), 1000);
  expect_lane(sent[1], Sent::kSendClient, "R1", 1000);
  ready(1001);
  configured(1001);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 1u) << "one lane per client";
  EXPECT_EQ(sent[0].type, Type::kConfig);
}

TEST_F(RouterLaneTest, NoLanesWhenOnlyTheRouterCanCountWhatRuns) {
  for (int variant = 0; variant < 2; ++variant) {
    SCOPED_TRACE(variant == 0 ? "task_timeout" : "maxtasksperchild");
    io_ = FakeIo();
    config_ = Config();
    config_.workers = 1;
    config_.task_timeout = variant == 0 ? milliseconds(1000) : milliseconds(0);
    config_.maxtasksperchild = variant == 1 ? 10 : 0;
    start();
    hello_with_lane("1");
    ready_quietly(1000);  // would have taken the lane's two LANEs too
    submit("1", 5, 0, 1);
    auto sent = io_.take();
    ASSERT_EQ(sent.size(), 1u);
    expect_task(sent[0], 1000, 5, 0, 1);
  }
}

TEST_F(RouterLaneTest, TheLaneChunkOfAWorkerThatDiedIsReportedThenTheLaneEndsAndAnotherOpens) {
  lane_to_1000();
  runs_lane_chunk(1000, 9);
  exit_with_lane(1000);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 4u);
  EXPECT_EQ(sent[0].type, Type::kLost) << "the chunk it ran, first";
  EXPECT_EQ(sent[0].to, "R1");
  EXPECT_EQ(sent[0].call_id, 9u);
  const auto [reason, ranges] = decode_lost(sent[0].payload);
  EXPECT_EQ(ranges, (Ranges{{0, 1}}));
  EXPECT_NE(reason.find("signal 9"), std::string::npos) << reason;
  EXPECT_EQ(sent[1].type, Type::kLaneEnd);
  EXPECT_EQ(sent[1].to, "R1");
  EXPECT_EQ(sent[1].pid, 1000);
  expect_lane(sent[2], Sent::kSendWorker, wid(1001), 1001);
  expect_lane(sent[3], Sent::kSendClient, "R1", 1001);
  EXPECT_EQ(io_.spawned.size(), 3u) << "replaced";
  EXPECT_EQ(core_->status(now_).lost_items, 1u);
}

TEST_F(RouterLaneTest, APureLaneChunkIsSubmittedAgainAndItsLostRunCounts) {
  config_.pure_retries = 1;
  lane_to_1000();
  runs_lane_chunk(1000, 9, /*pure=*/true);
  exit_with_lane(1000);
  auto sent = io_.take();
  ASSERT_GE(sent.size(), 2u);
  EXPECT_EQ(sent[0].type, Type::kResubmit);
  EXPECT_EQ(sent[0].to, "R1");
  EXPECT_EQ(sent[0].call_id, 9u);
  EXPECT_EQ(sent[0].start, 0u);
  EXPECT_EQ(sent[0].count, 1u);
  EXPECT_EQ(sent[0].pid, 1) << "attempts: the run lost";
  EXPECT_EQ(sent[1].type, Type::kLaneEnd);
  EXPECT_EQ(core_->status(now_).retried_chunks, 1u);
  // The client submits it with that attempt: its second death is its last.
  Header again = make(Type::kSubmit, 9, 0, 1, "square");
  again.flags = wire::kFlagPure;
  again.pid = 1;
  client("R1", again, "x");
  sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  expect_task(sent[0], 1001, 9, 0, 1);
  io_.marks[1001] = wire::chunk_mark(9, 0);
  exit(1001);
  sent = io_.take();
  ASSERT_GE(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, Type::kLost) << "retries spent";
}

TEST_F(RouterLaneTest, ALaneWorkerThatDiedBetweenChunksOnlyEndsItsLane) {
  lane_to_1000();
  io_.marks[1000] = 0;
  exit_with_lane(1000);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 3u);
  EXPECT_EQ(sent[0].type, Type::kLaneEnd) << "nothing lost: what the lane held never started";
  expect_lane(sent[1], Sent::kSendWorker, wid(1001), 1001);
}

TEST_F(RouterLaneTest, WorkGoesFirstToWorkersThatDoNotRunALaneChunk) {
  lane_to_1000();
  runs_lane_chunk(1000, 9);
  submit("1", 5, 0, 1);
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  expect_task(sent[0], 1001, 5, 0, 1);
  // Its lane chunk done, it is as free as any.
  io_.running[1000] = 0;
  result(1001, 5, 0, 1);
  io_.take();
  submit("1", 6, 0, 1);
  sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  expect_task(sent[0], 1000, 6, 0, 1);
}

// A chunk on the lane counts against its worker's credit from the moment its client
// says so (SUBMIT's lane_busy), before the worker has even read it; LANE_FREE gives the
// credit back.
TEST_F(RouterLaneTest, AWorkerBusyWithItsLaneGetsNoMoreThanItsCredit) {
  config_.prefetch = 1;
  lane_to_1000();
  Header busy = make(Type::kSubmit, 5, 0, 1, "square");
  busy.flags = wire::kFlagLaneBusy;
  client("R1", busy, "x");
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  expect_task(sent[0], 1001, 5, 0, 1);
  busy.call_id = 6;
  client("R1", busy, "x");
  EXPECT_TRUE(io_.take().empty()) << "both workers are at their credit of 1";
  EXPECT_EQ(core_->queued(), 1u);
  client("R1", make(Type::kLaneFree));
  sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  expect_task(sent[0], 1000, 6, 0, 1);
  // A SUBMIT that does not say busy frees it as well.
  result(1000, 6, 0, 1);
  io_.take();
  busy.call_id = 7;
  client("R1", busy, "x");
  EXPECT_TRUE(io_.take().empty());
  client("R1", make(Type::kSubmit, 8, 0, 1, "square"), "x");
  sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  expect_task(sent[0], 1000, 7, 0, 1);
}

TEST_F(RouterLaneTest, AWorkerRunningALaneChunkIsNeitherPingedNorReplaced) {
  lane_to_1000();
  runs_lane_chunk(1000, 9);
  ticks_while_1001_answers(30);  // 3 s, three times the heartbeat timeout
  for (const Sent& s : io_.take()) {
    EXPECT_FALSE(s.type == Type::kPing && s.to == wid(1000)) << "pinged while it ran its lane chunk";
  }
  EXPECT_TRUE(io_.killed.empty());
  // Stopped while it runs one: replaced as a busy worker would be.
  io_.stopped.insert(1000);
  ticks_while_1001_answers(30);
  ASSERT_FALSE(io_.killed.empty());
  EXPECT_EQ(io_.killed.front(), 1000);
  EXPECT_EQ(std::count(io_.killed.begin(), io_.killed.end(), 1001), 0);
}

// Its silence counts from when it was last seen busy: a worker whose long lane chunk
// just ended (its answer went to the driver, not here) is pinged, not replaced at once
// for the pings it could not answer while it ran. Seen under ASan in lane_test, where
// the lane's next call would then have died with it.
TEST_F(RouterLaneTest, AWorkerWhoseLongLaneChunkJustEndedIsPingedNotReplaced) {
  lane_to_1000();
  runs_lane_chunk(1000, 9);
  ticks_while_1001_answers(30);  // 3 s, three times the heartbeat timeout
  io_.running.erase(1000);  // the chunk ended
  io_.take();
  advance(config_.heartbeat_interval);
  tick();
  EXPECT_TRUE(io_.killed.empty()) << "replaced as soon as its lane chunk ended";
  const auto sent = io_.take();
  EXPECT_TRUE(std::any_of(sent.begin(), sent.end(),
                          [&](const Sent& s) { return s.type == Type::kPing && s.to == wid(1000); }))
      << "not pinged once idle";
  // Silent from then on: replaced after the heartbeat timeout, as any idle worker.
  ticks_while_1001_answers(12);
  ASSERT_FALSE(io_.killed.empty());
  EXPECT_EQ(io_.killed.front(), 1000);
}

// A worker runs its lane's long chunk, which its client has not said is out (it has
// submitted nothing since), while another client's chunk waits behind it: that one is
// taken back for the idle worker, not left to wait for the lane chunk's end.
TEST_F(RouterLaneTest, AnotherClientsChunkWaitingBehindALaneChunkGoesToAnIdleWorker) {
  lane_to_1000();
  hello("2");
  runs_lane_chunk(1000, 9);
  submit("2", 5, 0, 1);  // 1001: 1000 counts its lane chunk
  submit("2", 5, 1, 1);  // 1000, as loaded as 1001 now
  auto sent = io_.take();
  ASSERT_EQ(sent.size(), 3u);  // WELCOME, then the TASKs
  expect_task(sent[1], 1001, 5, 0, 1);
  expect_task(sent[2], 1000, 5, 1, 1);
  result(1001, 5, 0, 1);
  io_.taken_up[1000] = 0;  // it reached none of them
  advance(kTakeBackAfter);
  tick();
  sent = io_.take();
  std::vector<Sent> tasks;
  for (const Sent& s : sent) {
    if (s.type == Type::kTask) tasks.push_back(s);
  }
  ASSERT_EQ(tasks.size(), 1u) << "left behind the lane chunk";
  expect_task(tasks[0], 1001, 5, 1, 1);
}

// The lane's mark can name a chunk of another client's that the worker runs (call ids
// are each client's own): the router then asks to take it back, and the worker, which
// took it up before marking it running, keeps it. It runs once, answered once.
TEST_F(RouterLaneTest, AChunkRunningUnderTheLanesMarkIsNotTakenBack) {
  lane_to_1000();
  hello("2");
  submit("2", 9, 0, 1);  // 1000
  submit("2", 5, 0, 1);  // 1001
  runs_lane_chunk(1000, 9);  // its last lane chunk was R1's (9, 0): the same mark
  io_.taken_up[1000] = 1;    // it took R2's (9, 0) up, then marked it running
  result(1001, 5, 0, 1);
  io_.take();
  advance(kTakeBackAfter);
  tick();
  EXPECT_EQ(io_.take_backs, (std::vector<std::pair<pid_t, std::uint64_t>>{{1000, 1}}));
  for (const Sent& s : io_.take()) EXPECT_NE(s.type, Type::kTask) << "sent again";
  result(1000, 9, 0, 1);
  const auto sent = io_.take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].kind, Sent::kForwardClient);
  EXPECT_EQ(sent[0].to, "R2");
  EXPECT_EQ(core_->outstanding(), 0u);
}

TEST_F(RouterLaneTest, CancellingTheCallOnTheLaneTellsItsWorkerAndStopsItIfAsked) {
  lane_to_1000();
  runs_lane_chunk(1000, 9);
  Header cancel = wire::Cancel{8, /*kill_running=*/true, /*want_ack=*/false, /*on_lane=*/true}.header();
  client("R1", cancel);
  EXPECT_EQ(io_.cancels, (std::vector<std::pair<pid_t, std::uint64_t>>{{1000, 8}})) << "told";
  EXPECT_TRUE(io_.killed.empty()) << "it runs another call's chunk";
  cancel = wire::Cancel{9, /*kill_running=*/true, /*want_ack=*/false, /*on_lane=*/false}.header();
  client("R1", cancel);
  EXPECT_TRUE(io_.killed.empty()) << "not on the lane, says the client";
  cancel = wire::Cancel{9, /*kill_running=*/true, /*want_ack=*/false, /*on_lane=*/true}.header();
  client("R1", cancel);
  EXPECT_EQ(io_.killed, std::vector<pid_t>{1000});
  io_.take();
  exit_with_lane(1000);
  for (const Sent& s : io_.take()) {
    EXPECT_NE(s.type, Type::kResubmit) << "a cancelled chunk never runs again";
  }
}

TEST_F(RouterLaneTest, StatusCountsWhatTheLanesCarried) {
  lane_to_1000();
  wire::LaneCounts c;
  c.received_chunks = 3;
  c.received_items = 5;
  c.bytes_in = 30;
  c.completed_chunks = 2;
  c.completed_items = 4;
  c.error_chunks = 1;
  c.bytes_out = 20;
  c.latency_count = 2;
  c.latency_sum_ns = 3000;
  c.latency_buckets[0] = 2;
  io_.lane_counts_of[1000] = c;
  runs_lane_chunk(1000, 9);
  PoolStatus s = core_->status(now_);
  EXPECT_EQ(s.submitted_chunks, 3u);
  EXPECT_EQ(s.submitted_items, 5u);
  EXPECT_EQ(s.completed_chunks, 2u);
  EXPECT_EQ(s.completed_items, 4u);
  EXPECT_EQ(s.error_chunks, 1u);
  EXPECT_EQ(s.bytes_in, 30u);
  EXPECT_EQ(s.bytes_out, 20u);
  EXPECT_EQ(s.in_flight_chunks, 1u);
  EXPECT_EQ(s.latency_count, 2u);
  EXPECT_EQ(s.latency_buckets[0], 2u);
  EXPECT_DOUBLE_EQ(s.latency_sum_s, 3e-6);
  ASSERT_EQ(s.workers.size(), 2u);
  EXPECT_EQ(s.workers[0].pid, 1000);
  EXPECT_EQ(s.workers[0].state, "busy");
  EXPECT_EQ(s.workers[0].chunks_done, 2u);
  // Once it is dead, its counts stay, counted once.
  exit_with_lane(1000);
  s = core_->status(now_);
  EXPECT_EQ(s.submitted_chunks, 3u);
  EXPECT_EQ(s.completed_items, 4u);
  EXPECT_EQ(s.latency_count, 2u);
}

}  // namespace
}  // namespace router
}  // namespace mpx
