#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>

#include <gtest/gtest.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

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

// Every mpx process is a fresh exec of the program: a shared library costs each one the
// pages its symbol tables take while the loader relocates it. spdlog and {fmt} are
// compiled in (//third_party:spdlog), about 130 KiB of PSS per idle worker less.
// (Debian's libraries, in /usr/lib; a fastbuild test links //third_party:spdlog as a
// shared object of its own, which a user's cc_binary does not.)
TEST(Logging, SpdlogAndFmtAreCompiledInNotLoaded) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/usr/lib") == std::string::npos) continue;
    EXPECT_EQ(line.find("libspdlog"), std::string::npos) << line;
    EXPECT_EQ(line.find("libfmt"), std::string::npos) << line;
  }
}

// A user's own spdlog calls link against the compiled-in copy: the sinks and factories
// Debian's libspdlog exports are instantiated there (without them this does not link).
TEST(Logging, AUsersOwnSpdlogLoggersWork) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(dir != nullptr ? dir : "/tmp") + "/mine.log";
  std::remove(path.c_str());
  auto mine = spdlog::rotating_logger_mt("mine", path, 1 << 20, 2);
  mine->set_pattern("%v");
  mine->info("pi {:.2f}, {:>4}|", 3.14159, "ok");
  mine->flush();
  auto colored = spdlog::stderr_color_mt("mine-colored");
  colored->info("to stderr {}", 42);
  spdlog::drop("mine");
  spdlog::drop("mine-colored");
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "pi 3.14,   ok|");
}

}  // namespace
