// PoolOptions().metrics(address): Prometheus text at http://address/metrics, read over
// HTTP from a live pool: counters after a map, a failed task, a killed worker, worker
// RSS, the latency histogram; an address that cannot be served is a clear error.
#include <gtest/gtest.h>
#include <httplib.h>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "framework/testing/testing.h"
#include "mpx/mpx.h"

namespace {

using std::chrono::seconds;

int cube(int x) { return x * x * x; }
MPX_TASK(cube);
int refuse_seven(int x) {
  if (x == 7) throw std::invalid_argument("seven");
  return x;
}
MPX_TASK(refuse_seven);

std::string scrape(int port) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(10, 0);
  auto res = client.Get("/metrics");
  if (!res || res->status != 200) return "";
  return res->body;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

class MetricsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (const auto& d : mpx::testing::wait_no_descendants(seconds(10))) {
      ADD_FAILURE() << "left behind: " << d.pid << " " << d.cmdline;
    }
  }
};

// The value of the sample line that starts with name (labels included), or -1.
double sample(const std::string& body, const std::string& name) {
  const auto at = body.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::atof(body.c_str() + at + name.size() + 2);
}

// Chunks of numbers of 64 KiB and more travel in argument buffers, their results too:
// what the router carries for them is a handle each way, not the items.
TEST_F(MetricsTest, LargeChunksOfNumbersPassTheRouterAsHandles) {
  const int port = mpx::testing::free_tcp_port();
  mpx::Pool pool(mpx::PoolOptions().processes(2).metrics("127.0.0.1:" + std::to_string(port)));
  std::vector<int> xs(std::size_t{1} << 20);  // 8 chunks of 512 KiB
  for (std::size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<int>(i % 1000);
  const std::vector<int> ys = pool.map(cube, xs);
  ASSERT_EQ(ys.size(), xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) ASSERT_EQ(ys[i], xs[i] * xs[i] * xs[i]) << i;
  std::string body = scrape(port);
  const double in = sample(body, "mpx_bytes_total{direction=\"in\"}");
  const double out = sample(body, "mpx_bytes_total{direction=\"out\"}");
  EXPECT_GE(in, 0) << body;
  EXPECT_LT(in, 4096) << "4 MiB of items, 8 chunks";
  EXPECT_LT(out, 4096) << "4 MiB of results, 8 chunks";

  // A small chunk's items are in the message.
  EXPECT_EQ(pool.map(cube, std::vector<int>(1000, 2), 1000).back(), 8);
  body = scrape(port);
  EXPECT_GE(sample(body, "mpx_bytes_total{direction=\"in\"}") - in, 4000) << body;
  EXPECT_GE(sample(body, "mpx_bytes_total{direction=\"out\"}") - out, 4000) << body;
}

TEST_F(MetricsTest, ServesCountersGaugesAndHistogramOverHttp) {
  const int port = mpx::testing::free_tcp_port();
  {
    mpx::Pool pool(mpx::PoolOptions().processes(2).metrics("127.0.0.1:" + std::to_string(port)));
    std::vector<int> xs(100);
    std::iota(xs.begin(), xs.end(), 0);
    EXPECT_EQ(pool.map(cube, xs, 10).back(), 99 * 99 * 99);
    EXPECT_THROW(pool.map(refuse_seven, std::vector<int>{1, 7}, 1), std::invalid_argument);

    std::string body = scrape(port);
    EXPECT_TRUE(contains(body, "\nmpx_pool_up 1\n")) << body;
    EXPECT_TRUE(contains(body, "\nmpx_tasks_submitted_total 102\n")) << body;
    EXPECT_TRUE(contains(body, "\nmpx_tasks_completed_total 102\n")) << body;
    EXPECT_TRUE(contains(body, "\nmpx_chunks_failed_total 1\n")) << body;
    EXPECT_TRUE(contains(body, "\nmpx_tasks_lost_total 0\n")) << body;
    EXPECT_TRUE(contains(body, "\nmpx_chunks_taken_back_total ")) << body;
    EXPECT_TRUE(contains(body, "\nmpx_workers 2\n")) << body;
    EXPECT_TRUE(contains(body, "\nmpx_queued_chunks 0\n")) << body;
    EXPECT_TRUE(contains(body, "# TYPE mpx_chunk_seconds histogram\n")) << body;
    EXPECT_TRUE(contains(body, "mpx_chunk_seconds_bucket{le=\"+Inf\"} ")) << body;
    EXPECT_TRUE(contains(body, "mpx_bytes_total{direction=\"in\"} ")) << body;
    EXPECT_TRUE(contains(body, "mpx_worker_resident_bytes{worker=\"PoolWorker-")) << body;

    // A worker killed from outside: a death by signal, and a restart.
    const auto workers = mpx::testing::worker_pids();
    ASSERT_FALSE(workers.empty());
    ASSERT_EQ(kill(workers.front(), SIGKILL), 0);
    EXPECT_TRUE(mpx::testing::wait_until(
        [&] {
          body = scrape(port);
          return contains(body, "mpx_worker_deaths_total{cause=\"signal\"} 1\n");
        },
        seconds(20)))
        << body;
    EXPECT_TRUE(contains(body, "\nmpx_worker_restarts_total 1\n")) << body;
  }
  // The server went with the pool.
  EXPECT_EQ(scrape(port), "");
}

TEST_F(MetricsTest, AnAddressThatCannotBeServedIsAClearError) {
  try {
    mpx::Pool pool(mpx::PoolOptions().processes(1).metrics("no-such-host.invalid:notaport"));
    FAIL() << "the pool started";
  } catch (const mpx::Error& e) {
    EXPECT_TRUE(contains(e.what(), "cannot serve metrics at 'no-such-host.invalid:notaport'")) << e.what();
  }
  const int port = mpx::testing::free_tcp_port();
  mpx::Pool first(mpx::PoolOptions().processes(1).metrics("127.0.0.1:" + std::to_string(port)));
  try {
    mpx::Pool second(mpx::PoolOptions().processes(1).metrics("127.0.0.1:" + std::to_string(port)));
    FAIL() << "two pools served one port";
  } catch (const mpx::Error& e) {
    EXPECT_TRUE(contains(e.what(), "give a free host:port")) << e.what();
  }
}

}  // namespace
