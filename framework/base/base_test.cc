#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "framework/base/base.h"
#include "framework/base/futex.h"
#include "mpx/detail/pins.h"
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

namespace {

TEST(ObjectThreshold, ReadsSizesAndNamesWhatIsWrong) {
  using mpx::detail::parse_object_threshold;
  EXPECT_EQ(parse_object_threshold("0"), 0u);
  EXPECT_EQ(parse_object_threshold("1048576"), std::size_t{1} << 20);
  EXPECT_EQ(parse_object_threshold("256K"), std::size_t{256} << 10);
  EXPECT_EQ(parse_object_threshold("2MiB"), std::size_t{2} << 20);
  EXPECT_EQ(parse_object_threshold("1G"), std::size_t{1} << 30);
  for (const char* bad : {"", "-1", "big", "1T", "1 M", "99999999999999999999", "17179869184G"}) {
    try {
      parse_object_threshold(bad);
      ADD_FAILURE() << "'" << bad << "' was accepted";
    } catch (const mpx::Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("MPX_OBJECT_THRESHOLD='") + bad + "' is not a size"),
                std::string::npos)
          << e.what();
    }
  }
}

TEST(RandomIds, TokensUseTheAlphabetAndDoNotRepeat) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string t = mpx::base::random_token(16);
    ASSERT_EQ(t.size(), 16u);
    for (char c : t) EXPECT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')) << t;
    EXPECT_TRUE(seen.insert(t).second) << "repeated: " << t;
  }
  EXPECT_NE(mpx::base::random_u64(), mpx::base::random_u64());
  EXPECT_EQ(mpx::base::random_token(0), "");
}

TEST(Futex, WaitReturnsAtOnceWhenTheWordChangedAndTimesOutOtherwise) {
  std::atomic<std::uint32_t> word{1};
  const auto soon = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
  EXPECT_TRUE(mpx::base::futex_wait(&word, 0, soon)) << "word is not 0: no sleep";
  EXPECT_FALSE(mpx::base::futex_wait(&word, 1, soon)) << "nobody wakes it: the deadline passes";
  EXPECT_FALSE(mpx::base::futex_wait(&word, 1, std::chrono::steady_clock::time_point{}));
  EXPECT_EQ(mpx::base::futex_wake(&word, 1), 0) << "nobody sleeps";
}

}  // namespace
