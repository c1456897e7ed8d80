// mpx::Process with real children: exit codes, names, arguments, signals, errors.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "framework/testing/testing.h"
#include "mpx/mpx.h"

namespace {

std::string tmp_path(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  return std::string(base ? base : "/tmp") + "/" + name + "-" + std::to_string(getpid());
}
std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_identity(std::string path) {
  std::ofstream(path) << mpx::current_process().name << " " << mpx::current_process().pid << " "
                      << getppid();
}
struct Job {
  std::string title;
  std::vector<int> values;
  std::map<std::string, double> weights;
  MSGPACK_DEFINE(title, values, weights);
};
void write_job(std::string path, Job job, long scale) {
  long sum = 0;
  for (int v : job.values) sum += v;
  std::ofstream(path) << job.title << " " << sum * scale << " " << job.weights.at("w");
}
void throws() { throw std::runtime_error("boom"); }
void exits_with(int code) { std::exit(code); }
void sleeps(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }
void not_registered() {}
bool maps_libzmq() { return slurp("/proc/self/maps").find("/libzmq.so") != std::string::npos; }
// Exit code 3 when this process has libzmq mapped.
void exit_3_if_libzmq() { std::exit(maps_libzmq() ? 3 : 0); }
MPX_TASK(maps_libzmq);
MPX_TASK(exit_3_if_libzmq);
MPX_TASK(write_identity);
MPX_TASK(write_job);
MPX_TASK(throws);
MPX_TASK(exits_with);
MPX_TASK(sleeps);

class ProcessTest : public ::testing::Test {
 protected:
  void TearDown() override {
    auto left = mpx::testing::wait_no_descendants(std::chrono::seconds(10));
    for (const auto& d : left) ADD_FAILURE() << "left running: pid " << d.pid << " " << d.cmdline;
  }
};

TEST_F(ProcessTest, RunsInAFreshChildWithItsOwnIdentity) {
  const std::string path = tmp_path("identity");
  mpx::Process p(write_identity, path);
  EXPECT_EQ(p.pid(), 0);
  EXPECT_FALSE(p.exitcode().has_value());
  EXPECT_EQ(p.name().rfind("Process-", 0), 0u) << p.name();
  p.set_name("worker-1");
  p.start();
  EXPECT_GT(p.pid(), 0);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_FALSE(p.is_alive());
  EXPECT_EQ(slurp(path), "worker-1 " + std::to_string(p.pid()) + " " + std::to_string(getpid()));
}

TEST_F(ProcessTest, ArgumentsOfManyTypesArrive) {
  const std::string path = tmp_path("job");
  Job job{"sums", {1, 2, 3, 4}, {{"w", 0.5}}};
  mpx::Process p(write_job, path, job, 10L);
  p.start();
  p.join();
  ASSERT_EQ(p.exitcode(), 0);
  EXPECT_EQ(slurp(path), "sums 100 0.5");
}

TEST_F(ProcessTest, ExitCodesFollowPython) {
  mpx::Process threw(throws);
  mpx::Process exited(exits_with, 3);
  threw.start();
  exited.start();
  threw.join();
  exited.join();
  EXPECT_EQ(threw.exitcode(), 1) << "an exception ends the child with 1";
  EXPECT_EQ(exited.exitcode(), 3);

  mpx::Process killed(sleeps, 60000);
  mpx::Process terminated(sleeps, 60000);
  killed.start();
  terminated.start();
  EXPECT_TRUE(killed.is_alive());
  EXPECT_FALSE(killed.join(std::chrono::milliseconds(10)));
  killed.kill();
  terminated.terminate();
  killed.join();
  terminated.join();
  EXPECT_EQ(killed.exitcode(), -SIGKILL);
  EXPECT_EQ(terminated.exitcode(), -SIGTERM);
}

TEST_F(ProcessTest, ManyAtOnceInAVector) {
  std::vector<mpx::Process> ps;
  for (int i = 0; i < 5; ++i) ps.emplace_back(exits_with, i);
  for (auto& p : ps) p.start();
  for (auto& p : ps) p.join();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(ps[i].exitcode(), i);
}

TEST_F(ProcessTest, MisuseIsReported) {
  EXPECT_THROW(mpx::Process{not_registered}, mpx::NotRegistered);
  mpx::Process p(sleeps, 1);
  EXPECT_THROW(p.join(), mpx::ProcessError);
  p.start();
  EXPECT_THROW(p.start(), mpx::ProcessError);
  EXPECT_THROW(p.set_name("late"), mpx::ProcessError);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_F(ProcessTest, DestructorJoins) {
  pid_t pid;
  {
    mpx::Process p(sleeps, 50);
    p.start();
    pid = p.pid();
  }
  EXPECT_NE(kill(pid, 0), 0) << "the child was reaped by the destructor";
}

// mpx's processes talk over plain unix streams: none maps libzmq, whose dependency tree
// (13 shared libraries) once cost each Process start ~2.5 ms of dynamic loading.
TEST_F(ProcessTest, NoProcessLoadsZeroMQ) {
  mpx::Process p(exit_3_if_libzmq);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0) << "a Process child mapped libzmq";
  mpx::Pool pool(1);
  EXPECT_FALSE(pool.apply(maps_libzmq)) << "a pool worker mapped libzmq";
}

}  // namespace
