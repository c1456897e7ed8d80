#include <sched.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "mpx/errors.h"
#include "mpx/runtime.h"

namespace {

TEST(CpuCount, HonoursTheAffinityMask) {
  cpu_set_t saved;
  ASSERT_EQ(sched_getaffinity(0, sizeof saved, &saved), 0);
  EXPECT_EQ(mpx::cpu_count(), CPU_COUNT(&saved));
  cpu_set_t one;
  CPU_ZERO(&one);
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &saved)) {
      CPU_SET(c, &one);
      break;
    }
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  EXPECT_EQ(mpx::cpu_count(), 1);
  ASSERT_EQ(sched_setaffinity(0, sizeof saved, &saved), 0);
}

TEST(CurrentProcess, DriverIdentity) {
  EXPECT_EQ(mpx::current_process().name, "MainProcess");
  EXPECT_EQ(mpx::current_process().pid, getpid());
  EXPECT_EQ(mpx::current_process().role, mpx::Role::kDriver);
  EXPECT_EQ(mpx::logger().name(), "MainProcess");
}

TEST(Errors, AllDeriveFromOneBaseAndDescribeThemselves) {
  mpx::RemoteError remote("square", "std::runtime_error", "boom", 7, 4242);
  EXPECT_EQ(std::string(remote.what()),
            "task 'square' item 7 raised std::runtime_error in worker pid 4242: boom");
  mpx::WorkerLost lost("square", {3, 4, 5, 9}, 11, "killed by signal 9 (Killed)");
  EXPECT_EQ(std::string(lost.what()),
            "task 'square': worker pid 11 killed by signal 9 (Killed) while running tasks 3-5, 9; "
            "their results are lost");
  const mpx::Error* base = &lost;
  EXPECT_NE(dynamic_cast<const std::exception*>(base), nullptr);
  EXPECT_THROW(throw mpx::TimeoutError("t"), mpx::Error);
  EXPECT_THROW(throw mpx::PoolBroken("p"), mpx::Error);
  EXPECT_THROW(throw mpx::NotRegistered("n"), mpx::Error);
  EXPECT_THROW(throw mpx::DecodeError("d"), mpx::Error);
  EXPECT_THROW(throw mpx::ProcessError("x"), mpx::Error);
}

}  // namespace
