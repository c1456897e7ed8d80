// Lanes, for real: a pool's call of one chunk goes straight to a worker and back
// (wire::Lane), and the router still answers for it when that worker dies.
//
// Which calls took the lane is seen by stopping the router (SIGSTOP): a call on the
// lane is answered all the same; one through the router waits until it runs again.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "framework/router/status.h"
#include "framework/testing/testing.h"
#include "mpx/mpx.h"

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

int pid_of(int) { return static_cast<int>(getpid()); }
int square(int x) { return x * x; }
// SIGKILL: sanitizers turn other fatal signals into exit codes.
int crash(int) {
  raise(SIGKILL);
  return 0;
}
// Dies the first time it runs, answers the second.
int die_once(mpx::Value<int> runs) {
  if (runs.fetch_add(1) == 0) std::_Exit(9);
  return static_cast<int>(getpid());
}
int sleep_ms(int ms) {
  std::this_thread::sleep_for(milliseconds(ms));
  return ms;
}
// Sets started, then sleeps ms: lets a test act while the call runs.
int started_then_sleep(mpx::Event started, int ms) {
  started.set();
  std::this_thread::sleep_for(milliseconds(ms));
  return ms;
}
int pure_started_then_sleep(mpx::Event started, int ms) { return started_then_sleep(started, ms); }
// The descriptors of this process's lane ends: the stream sockets whose peer has no
// name (a socketpair's; the router's connections are to named, abstract addresses).
std::vector<int> lane_fds() {
  std::vector<int> fds;
  for (int fd = 3; fd < 1024; ++fd) {
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) continue;
    sockaddr_un peer{};
    socklen_t peer_len = sizeof peer;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0 &&
        peer_len <= sizeof(sa_family_t)) {
      fds.push_back(fd);
    }
  }
  return fds;
}
// A frame no mpx process would write: its header claims more bytes than a header may have.
void write_garbage(int fd) {
  const char junk[] = "\xff\xff\xff\x7f\x00\x00\x00\x00garbage";
  [[maybe_unused]] ssize_t n = ::write(fd, junk, sizeof junk - 1);
}
// Run on the lane: writes garbage into the lane ahead of its own answer.
int garble_my_lane(int) {
  for (int fd : lane_fds()) write_garbage(fd);
  return 1;
}
MPX_TASK(pid_of);
MPX_TASK(garble_my_lane);
MPX_TASK(square);
MPX_TASK(crash);
MPX_PURE_TASK(die_once);
MPX_TASK(sleep_ms);
MPX_TASK(started_then_sleep);
MPX_PURE_TASK(pure_started_then_sleep);

// The router stopped (SIGSTOP) while it lives.
class RouterStopped {
 public:
  explicit RouterStopped(pid_t router) : router_(router) { ::kill(router_, SIGSTOP); }
  ~RouterStopped() { ::kill(router_, SIGCONT); }

 private:
  pid_t router_;
};

// The pid of the worker at the other end of pool's lane, asked with the router stopped
// (0: the call did not come back within 30 s, so it did not take a lane).
int lane_worker(mpx::Pool& pool) {
  pool.apply(square, 2);  // the lane opens as the workers start: its LANE comes before this result
  RouterStopped stopped(pool.router_pid());
  mpx::Future<int> f = pool.apply_async(pid_of, 0);
  if (!f.wait_for(seconds(30))) return 0;
  return f.get();
}

class LaneTest : public ::testing::Test {
 protected:
  void TearDown() override {
    ::unsetenv("MPX_LANES");
    auto left = mpx::testing::wait_no_descendants(seconds(10));
    for (const auto& d : left) ADD_FAILURE() << "left running: pid " << d.pid << " " << d.cmdline;
  }
};

TEST_F(LaneTest, ACallOfOneChunkIsAnsweredWithoutTheRouter) {
  mpx::Pool pool(2);
  const int worker = lane_worker(pool);
  ASSERT_NE(worker, 0) << "the call waited for the stopped router";
  const auto workers = mpx::testing::worker_pids();
  EXPECT_NE(std::find(workers.begin(), workers.end(), worker), workers.end());
  // A map of several chunks goes through the router, whatever the lane.
  EXPECT_EQ(pool.map(square, std::vector<int>{1, 2, 3}, 1), (std::vector<int>{1, 4, 9}));
}

TEST_F(LaneTest, WithLanesOffEveryCallWaitsForTheRouter) {
  ::setenv("MPX_LANES", "0", 1);
  mpx::Pool pool(2);
  pool.apply(square, 2);
  mpx::Future<int> f;
  {
    RouterStopped stopped(pool.router_pid());
    f = pool.apply_async(pid_of, 0);
    EXPECT_FALSE(f.wait_for(milliseconds(300))) << "answered while the router was stopped";
  }
  EXPECT_GT(f.get(), 0);
}

TEST_F(LaneTest, ALaneCallWhoseWorkerDiesFailsWithWorkerLostAndTheNextTakesANewLane) {
  mpx::Pool pool(2);
  const int first = lane_worker(pool);
  ASSERT_NE(first, 0);
  try {
    pool.apply(crash, 0);
    ADD_FAILURE() << "a crashed task returned";
  } catch (const mpx::WorkerLost& e) {
    EXPECT_NE(std::string(e.what()).find("signal 9"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::to_string(first)), std::string::npos)
        << "names the worker that died: " << e.what();
  }
  EXPECT_EQ(pool.apply(square, 7), 49) << "the pool goes on";
  const int second = lane_worker(pool);
  EXPECT_NE(second, 0) << "a new lane opened";
  EXPECT_NE(second, first);
}

TEST_F(LaneTest, APureLaneCallWhoseWorkerDiedRunsAgain) {
  mpx::Pool pool(2);
  ASSERT_NE(lane_worker(pool), 0);
  mpx::Value<int> runs(0);
  EXPECT_GT(pool.apply(die_once, runs), 0);
  EXPECT_EQ(runs.load(), 2) << "it ran, died, and ran again (MPX_PURE_TASK)";
}

TEST_F(LaneTest, ALaneCallItsWorkerNeverReadGoesToAnotherWorkerOnce) {
  mpx::Pool pool(2);
  const int stuck = lane_worker(pool);
  ASSERT_NE(stuck, 0);
  ::kill(stuck, SIGSTOP);
  // Into the lane's socket (written whole before apply_async returns); its worker cannot
  // read it, and dies without having read it.
  mpx::Future<int> f = pool.apply_async(pid_of, 0);
  ::kill(stuck, SIGKILL);
  int ran_on = 0;
  ASSERT_NO_THROW(ran_on = f.get()) << "a call that never started is not lost";
  EXPECT_NE(ran_on, stuck);
  EXPECT_GT(ran_on, 0);
}

// While a lane call is out, the router counts it against its worker's credit, even
// before that worker has read it: work through the router goes to the other worker
// instead of waiting behind it. The lane's worker is stopped so that it cannot read
// its call (and say so in its mark), and the heartbeat timeout is long enough that
// the router does not replace it meanwhile; six pools, as which worker the router
// would otherwise pick depends on their random ids.
TEST_F(LaneTest, WorkThroughTheRouterDoesNotWaitBehindALaneCall) {
  for (int round = 0; round < 6; ++round) {
    mpx::Pool pool(mpx::PoolOptions().processes(2).prefetch(1).heartbeat_timeout(seconds(120)));
    const int lane = lane_worker(pool);
    ASSERT_NE(lane, 0);
    ASSERT_EQ(::kill(lane, SIGSTOP), 0);
    mpx::Future<int> held = pool.apply_async(sleep_ms, 60000);  // on the lane, not read
    mpx::Future<int> other = pool.apply_async(pid_of, 0);        // through the router
    const bool answered = other.wait_for(seconds(20));
    if (!answered) ::kill(lane, SIGCONT);
    ASSERT_TRUE(answered) << "round " << round << ": it waited behind the lane's call";
    EXPECT_NE(other.get(), lane);
    pool.terminate();
    ::kill(lane, SIGCONT);
  }
}

TEST_F(LaneTest, ALongLaneCallOutlivesTheHeartbeatTimeout) {
  // A worker the router sees idle and silent for 300 ms is replaced, unless it runs a
  // chunk: one from its lane, which the router never handed out, counts.
  mpx::Pool pool(mpx::PoolOptions().processes(1).heartbeat_timeout(milliseconds(300)));
  const int worker = lane_worker(pool);
  ASSERT_NE(worker, 0);
  EXPECT_EQ(pool.apply(sleep_ms, 2500), 2500);
  EXPECT_EQ(pool.apply(pid_of, 0), worker) << "the worker was replaced while it ran";
}

// The lane's worker dies with its router: a lane call then goes as the router's own
// chunks go. Run again by the new router if it may run twice; RouterLost otherwise.
TEST_F(LaneTest, ALaneCallWhoseRouterDiedIsSentAgainOnlyIfItMayRunTwice) {
  mpx::Pool pool(2);
  for (const bool pure : {false, true}) {
    SCOPED_TRACE(pure ? "MPX_PURE_TASK" : "MPX_TASK");
    ASSERT_NE(lane_worker(pool), 0);
    mpx::Event started;
    mpx::Future<int> f = pure ? pool.apply_async(pure_started_then_sleep, started, 1000)
                              : pool.apply_async(started_then_sleep, started, 60000);
    ASSERT_TRUE(started.wait(seconds(30)));
    const pid_t router = pool.router_pid();
    ASSERT_EQ(::kill(router, SIGKILL), 0);
    if (pure) {
      EXPECT_EQ(f.get(), 1000);
    } else {
      EXPECT_THROW(f.get(), mpx::RouterLost);
    }
    EXPECT_NE(pool.router_pid(), router);
    EXPECT_EQ(pool.apply(square, 5), 25);
  }
}

// Threads calling at once: one call at a time takes the lane, the others the router,
// and every caller gets its own answer.
TEST_F(LaneTest, ThreadsCallingAtOnceEachGetTheirOwnAnswers) {
  mpx::Pool pool(2);
  ASSERT_NE(lane_worker(pool), 0);
  constexpr int kThreads = 4, kCalls = 300;
  std::vector<std::thread> callers;
  std::vector<int> wrong(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    callers.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        const int x = t * kCalls + i;
        if (pool.apply(square, x) != x * x) ++wrong[static_cast<std::size_t>(t)];
      }
    });
  }
  for (auto& c : callers) c.join();
  EXPECT_EQ(wrong, std::vector<int>(kThreads, 0));
}

// Only a pool's own processes write to its lane, and only whole frames: garbage there
// is a bug. Nothing waits on it: the driver fails the lane's call, naming why; a
// worker ends, so that its router reports the lane gone.
TEST_F(LaneTest, GarbageOnALaneFailsItsCallOrEndsItsWorkerAndNothingWaits) {
  mpx::Pool pool(2);
  ASSERT_NE(lane_worker(pool), 0);
  try {
    pool.apply(garble_my_lane, 0);
    ADD_FAILURE() << "a call whose lane brought garbage returned";
  } catch (const mpx::DecodeError& e) {
    EXPECT_NE(std::string(e.what()).find("the lane to its worker broke"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("garble_my_lane"), std::string::npos) << e.what();
  }
  EXPECT_EQ(pool.apply(square, 3), 9) << "through the router: that lane is gone";

  mpx::Pool other(2);
  const int worker = lane_worker(other);
  ASSERT_NE(worker, 0);
  const std::vector<int> mine = lane_fds();
  ASSERT_EQ(mine.size(), 1u) << "the second pool's lane (the first one's was let go)";
  write_garbage(mine[0]);
  EXPECT_TRUE(mpx::testing::wait_until([&] { return ::kill(worker, 0) != 0; }, seconds(30)))
      << "the worker whose lane broke ended";
  EXPECT_EQ(other.apply(square, 4), 16);
  EXPECT_EQ(pool.apply(square, 5), 25);
}

TEST_F(LaneTest, LaneCallsAreCountedInThePoolsStatus) {
  mpx::Pool pool(2);
  ASSERT_NE(lane_worker(pool), 0);  // 2 items so far
  for (int i = 0; i < 20; ++i) EXPECT_EQ(pool.apply(square, i), i * i);
  EXPECT_EQ(pool.map(square, std::vector<int>(10, 3), 5).size(), 10u);  // 2 chunks, by the router
  std::string why;
  const auto status =
      mpx::router::query_status(mpx::router::status_endpoint_name(pool.router_pid()), seconds(10), &why);
  ASSERT_TRUE(status.has_value()) << why;
  EXPECT_EQ(status->submitted_items, 32u);
  EXPECT_EQ(status->completed_items, 32u);
  EXPECT_EQ(status->submitted_chunks, 24u);
  EXPECT_EQ(status->in_flight_chunks, 0u);
}

}  // namespace
