// End to end with Debian's Prometheus server (tools/install-deps installs it): it scrapes
// a live pool's PoolOptions::metrics endpoint, and its query API returns the series.
// Tagged "cluster" (a real outside server, slow to start): tools/test --quick skips it.
#include <gtest/gtest.h>
#include <httplib.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "framework/testing/testing.h"
#include "mpx/mpx.h"

extern char** environ;

namespace {

using std::chrono::seconds;

int triple(int x) { return 3 * x; }
MPX_TASK(triple);

TEST(MetricsPrometheus, ServerScrapesALivePoolAndAnswersAQuery) {
  if (access("/usr/bin/prometheus", X_OK) != 0) GTEST_SKIP() << "no /usr/bin/prometheus (tools/install-deps)";
  const char* tmp_env = std::getenv("TEST_TMPDIR");
  const std::string tmp = tmp_env ? tmp_env : "/tmp";
  const int pool_port = mpx::testing::free_tcp_port();
  mpx::Pool pool(mpx::PoolOptions().processes(2).metrics("127.0.0.1:" + std::to_string(pool_port)));
  std::vector<int> xs(100);
  std::iota(xs.begin(), xs.end(), 0);
  ASSERT_EQ(pool.map(triple, xs).back(), 297);

  const std::string config = tmp + "/prometheus.yml";
  if (FILE* f = std::fopen(config.c_str(), "w")) {
    std::fprintf(f,
                 "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mpx\n"
                 "    static_configs:\n      - targets: ['127.0.0.1:%d']\n",
                 pool_port);
    std::fclose(f);
  }
  const int web_port = mpx::testing::free_tcp_port();
  const std::string log_path = tmp + "/prometheus.log";
  std::vector<std::string> args{"/usr/bin/prometheus", "--config.file=" + config,
                                "--storage.tsdb.path=" + tmp + "/prometheus-data",
                                "--web.listen-address=127.0.0.1:" + std::to_string(web_port)};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t server = -1;
  ASSERT_EQ(posix_spawn(&server, argv[0], &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);

  std::string body;
  const bool found = mpx::testing::wait_until(
      [&] {
        httplib::Client client("127.0.0.1", web_port);
        auto res = client.Get("/api/v1/query?query=mpx_tasks_completed_total");
        body = res ? res->body : "";
        return body.find("\"__name__\":\"mpx_tasks_completed_total\"") != std::string::npos &&
               body.find(",\"100\"]") != std::string::npos;
      },
      seconds(90));
  kill(server, SIGTERM);
  waitpid(server, nullptr, 0);
  EXPECT_TRUE(found) << "last answer: " << body;
}

}  // namespace
