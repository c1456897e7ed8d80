// Faults a hostile user finds from outside the team's own suites (issue "Reliability
// II"), each injected for real: a terminate while another thread's send is stuck on a
// stopped router, a driver started with stdout and stderr closed, a crash among other
// calls' chunks, a result encoder that throws half-way, and the errors that used to
// mislead (a Pool started in a worker, a descriptor limit, an argument too large for
// the workers' memory limit).
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "framework/testing/testing.h"
#include "mpx/mpx.h"

// A result type whose encoding throws after it has written part of itself: the bytes
// already written must not poison the rest of the chunk.
struct HalfEncoded {
  int n = 0;
};
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <>
  struct pack<HalfEncoded> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& o, const HalfEncoded& v) const {
      o.pack_array(2);
      o.pack(v.n);
      if (v.n == 13) throw std::runtime_error("cannot encode 13 half-way");
      o.pack(v.n * 2);
      return o;
    }
  };
  template <>
  struct convert<HalfEncoded> {
    const msgpack::object& operator()(const msgpack::object& o, HalfEncoded& v) const {
      if (o.type != msgpack::type::ARRAY || o.via.array.size != 2) throw msgpack::type_error();
      v.n = o.via.array.ptr[0].as<int>();
      if (o.via.array.ptr[1].as<int>() != v.n * 2) throw msgpack::type_error();
      return o;
    }
  };
  }  // namespace adaptor
}
}  // namespace msgpack

// A result type this side refuses to decode when it holds 13 (its encoding is fine).
struct Fussy {
  int n = 0;
  MSGPACK_DEFINE(n);
};
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <>
  struct convert<Fussy> {
    const msgpack::object& operator()(const msgpack::object& o, Fussy& v) const {
      if (o.type != msgpack::type::ARRAY || o.via.array.size != 1) throw msgpack::type_error();
      v.n = o.via.array.ptr[0].as<int>();
      if (v.n == 13) throw msgpack::type_error();
      return o;
    }
  };
  }  // namespace adaptor
}
}  // namespace msgpack

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MPX_UNDER_SANITIZER 1
#endif

std::size_t length_of(std::string s) { return s.size(); }
int square(int x) { return x * x; }
void spin_us(int us) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  while (std::chrono::steady_clock::now() < until) {
  }
}
// Not pure: a crashing item must cost only itself, never another call's items.
int crash_on(int x, int bad) {
  if (x == bad) raise(SIGKILL);
  spin_us(200);
  return x;
}
int slow_square(int x) {
  spin_us(100);
  return x * x;
}
HalfEncoded half_encoded(int n) { return HalfEncoded{n}; }
Fussy fussy(int n) { return Fussy{n}; }
// Named as a type of hostile_user_anon.cc's anonymous namespace, whose fields are in
// the other order.
struct Item {
  int width = 0;
  int height = 0;
  MSGPACK_DEFINE(width, height);
};
int area_code_a(Item i) { return i.width * 1000 + i.height; }
// Named as an exception type of hostile_user_anon.cc's anonymous namespace.
struct AppError : std::runtime_error {
  explicit AppError(const std::string& what) : std::runtime_error(what) {}
};
const bool app_error_registered = mpx::register_exception<AppError>();
// A registered exception type whose one-string constructor refuses some messages.
struct Picky : std::runtime_error {
  explicit Picky(const std::string& what) : std::runtime_error(what) {
    if (what == "boom") throw std::logic_error("Picky refuses 'boom'");
  }
  Picky(const std::string& what, bool) : std::runtime_error(what) {}
};
const bool picky_registered = mpx::register_exception<Picky>();
void throw_picky() { throw Picky("boom", true); }
std::optional<std::string> name_of(std::optional<std::string> fallback, int id) {
  if (id == 1) return std::string("one");
  return fallback;
}
std::map<int, std::optional<std::vector<std::string>>> tags_of(int n) {
  std::map<int, std::optional<std::vector<std::string>>> out;
  for (int i = 0; i < n; ++i) {
    out[i] = i % 2 ? std::nullopt : std::optional<std::vector<std::string>>(std::vector<std::string>(i, "t"));
  }
  return out;
}
int pool_in_a_worker(int x) {
  mpx::Pool inner(1);
  return inner.apply(square, x);
}
MPX_TASK(length_of);
MPX_TASK(square);
MPX_TASK(crash_on);
MPX_TASK(slow_square);
MPX_TASK(half_encoded);
MPX_TASK(fussy);
MPX_TASK(name_of);
MPX_TASK(tags_of);
MPX_TASK(pool_in_a_worker);

class HostileUserTest : public ::testing::Test {
 protected:
  void TearDown() override {
    auto left = mpx::testing::wait_no_descendants(seconds(10));
    for (const auto& d : left) ADD_FAILURE() << "left running: pid " << d.pid << " " << d.cmdline;
  }
};

// The system call thread tid of this process is in (from /proc), or -1.
long syscall_of(pid_t tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/syscall");
  long number = -1;
  in >> number;
  return number;
}

// Starts a thread that sends a 64 MiB argument to pool's router, which is stopped, and
// returns once that thread is blocked waiting for the router to read (the socket is
// full): it holds the pool's connection for as long as the router stays stopped.
struct StuckSender {
  std::thread thread;
  std::atomic<int> outcome{0};  // 1: PoolBroken, 2: returned, 3: another exception
  std::string what;

  void start(mpx::Pool& pool) {
    std::atomic<pid_t> tid{0};
    thread = std::thread([&] {
      tid = static_cast<pid_t>(syscall(SYS_gettid));
      try {
        pool.apply_async(length_of, std::string(std::size_t{64} << 20, 'x'));
        outcome = 2;
      } catch (const mpx::PoolBroken& e) {
        what = e.what();
        outcome = 1;
      } catch (const std::exception& e) {
        what = e.what();
        outcome = 3;
      }
    });
    // Blocked in poll (7) waiting for room, or in sendmsg (46), with the router stopped.
    ASSERT_TRUE(mpx::testing::wait_until(
        [&] {
          const long call = tid ? syscall_of(tid) : -1;
          return call == SYS_poll || call == SYS_sendmsg;
        },
        seconds(60)))
        << "the sending thread never blocked";
  }
};

// The senders below pass 64 MiB by value (object_threshold 0): as an object it would be
// a handle, which never fills the socket.
TEST_F(HostileUserTest, TerminateDoesNotWaitForASendStuckOnAStoppedRouter) {
  mpx::Pool pool(mpx::PoolOptions().processes(1).object_threshold(0));
  ASSERT_EQ(pool.apply(length_of, std::string("ab")), 2u);
  const pid_t router = pool.router_pid();
  ASSERT_EQ(kill(router, SIGSTOP), 0);
  StuckSender sender;
  sender.start(pool);
  // Before the fix this waited for the sender's lock until the router was resumed: the
  // test would hang here (and time out).
  pool.terminate();
  sender.thread.join();
  EXPECT_EQ(sender.outcome, 1) << sender.what;
  EXPECT_NE(sender.what.find("terminated"), std::string::npos) << sender.what;
  kill(router, SIGCONT);  // if it were still there
  EXPECT_THROW(pool.apply(square, 2), mpx::PoolBroken);
}

TEST_F(HostileUserTest, DestroyingAPoolDoesNotWaitForASendStuckOnAStoppedRouter) {
  auto pool = std::make_unique<mpx::Pool>(mpx::PoolOptions().processes(1).object_threshold(0));
  ASSERT_EQ(pool->apply(square, 3), 9);
  const pid_t router = pool->router_pid();
  ASSERT_EQ(kill(router, SIGSTOP), 0);
  StuckSender sender;
  sender.start(*pool);
  // ~Pool waits for no lock and no grace when its router cannot be asked to stop. The
  // sender then fails with PoolBroken before the object goes (it is joined first).
  std::thread destroy([&] { pool.reset(); });
  sender.thread.join();
  destroy.join();
  EXPECT_EQ(sender.outcome, 1) << sender.what;
  kill(router, SIGCONT);
}

// Daemons and services start with stdout and stderr closed: mpx's sockets must never
// land on fds 1 and 2 (the logger would write its lines into them), in the driver or
// in any process it starts.
TEST(HostileUserHelper, DISABLED_MapsWithStdoutAndStderrClosed) {
  const char* verdict = std::getenv("MPX_TEST_VERDICT");
  ASSERT_NE(verdict, nullptr);
  mpx::logger().info("a log line of the driver, with stderr closed");
  mpx::Pool pool(2);
  std::vector<int> xs(2000);
  for (int i = 0; i < 2000; ++i) xs[i] = i;
  const auto squares = pool.map(square, xs, 1);
  mpx::Process child(square, 4);
  child.start();
  child.join();
  long long sum = 0;
  for (int v : squares) sum += v;
  std::ofstream(verdict) << "sum " << sum << " exitcode " << child.exitcode().value_or(-1000);
}

TEST_F(HostileUserTest, ADriverStartedWithStdoutAndStderrClosedWorks) {
  const std::string verdict =
      std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") +
      "/closed-stdio-verdict-" + std::to_string(getpid());
  std::remove(verdict.c_str());
  // MPX_LOG=debug: router and workers log lines of their own, which used to go into
  // the socket that took fd 2.
  const auto run = mpx::testing::run_helper("HostileUserHelper.DISABLED_MapsWithStdoutAndStderrClosed",
                                            {"MPX_LOG=debug", "MPX_TEST_VERDICT=" + verdict},
                                            seconds(120), /*stdio_closed=*/true);
  ASSERT_FALSE(run.timed_out);
  EXPECT_TRUE(WIFEXITED(run.wait_status) && WEXITSTATUS(run.wait_status) == 0)
      << "helper ended with status " << run.wait_status;
  std::ifstream in(verdict);
  std::stringstream text;
  text << in.rdbuf();
  long long expected = 0;
  for (long long i = 0; i < 2000; ++i) expected += i * i;
  EXPECT_EQ(text.str(), "sum " + std::to_string(expected) + " exitcode 0");
  std::remove(verdict.c_str());
}

// A worker that crashes holds other calls' chunks queued behind the one that killed it
// (credit): those never started, so they run again, free, whatever the retries (0 for
// a task that is not pure). Only the crashing call fails, naming its own item.
TEST_F(HostileUserTest, ACrashCostsNoOtherCallItsResults) {
  mpx::Pool pool(2);
  std::vector<int> xs(300);
  for (int i = 0; i < 300; ++i) xs[i] = i;
  std::vector<std::tuple<int, int>> items;
  for (int i = 0; i < 60; ++i) items.emplace_back(i, 30);
  for (int round = 0; round < 5; ++round) {
    std::atomic<int> failures{0};
    std::string failure;
    std::vector<std::thread> others;
    for (int t = 0; t < 3; ++t) {
      others.emplace_back([&] {
        try {
          const auto got = pool.map(slow_square, xs, 1);
          for (int i = 0; i < 300; ++i) {
            if (got[i] != i * i) ++failures;
          }
        } catch (const std::exception& e) {
          failure = e.what();
          ++failures;
        }
      });
    }
    try {
      pool.starmap(crash_on, items, 1);
      ADD_FAILURE() << "item 30 killed its worker: the call must fail";
    } catch (const mpx::WorkerLost& e) {
      EXPECT_EQ(e.lost_tasks(), (std::vector<std::uint64_t>{30})) << e.what();
      EXPECT_NE(std::string(e.what()).find("crash_on"), std::string::npos) << e.what();
    }
    for (auto& t : others) t.join();
    EXPECT_EQ(failures, 0) << "round " << round << ": " << failure;
    // A follow-up map right after the crash, on the replacement worker.
    EXPECT_EQ(pool.map(square, std::vector<int>{1, 2, 3}), (std::vector<int>{1, 4, 9}));
  }
}

TEST_F(HostileUserTest, AResultWhoseEncodingThrowsHalfWayFailsOnlyItsItem) {
  mpx::Pool pool(1);
  std::vector<int> ns(20);
  for (int i = 0; i < 20; ++i) ns[i] = i;
  int arrived = 0;
  int failed = 0;
  auto it = pool.imap(half_encoded, ns, /*chunksize=*/20);  // one chunk: neighbours share it
  for (int i = 0; i < 20; ++i) {
    try {
      auto v = it.next();
      ASSERT_TRUE(v.has_value());
      EXPECT_EQ(v->n, i);
      ++arrived;
    } catch (const mpx::RemoteInfo& e) {
      EXPECT_EQ(i, 13);
      EXPECT_EQ(e.type_name(), "std::runtime_error");
      EXPECT_EQ(e.message(), "cannot encode 13 half-way");
      EXPECT_EQ(e.task_index(), 13u);
      ++failed;
    }
  }
  EXPECT_EQ(arrived, 19);
  EXPECT_EQ(failed, 1);
  try {
    pool.map(half_encoded, ns, 20);
    FAIL() << "item 13 cannot be encoded";
  } catch (const mpx::RemoteInfo& e) {
    EXPECT_EQ(e.type_name(), "std::runtime_error") << e.description();
  }
}

// Once refused ("not supported yet"); tests/nested_test.cc covers nesting in depth.
}  // namespace
int hostile_user_area_b(mpx::Pool& pool, int width, int height);  // hostile_user_anon.cc
void hostile_user_throw_b(mpx::Pool& pool);                          // hostile_user_anon.cc
namespace {

// Plain functions whose parameter types share a name in anonymous namespaces of two
// files: a worker cannot tell which type to decode (GCC names both namespaces alike),
// so it refuses them, saying why, instead of calling one with the other's decoding.
TEST_F(HostileUserTest, LookAlikeTypesOfAnonymousNamespacesAreRefusedNotMixedUp) {
  mpx::Pool pool(1);
  for (int file = 0; file < 2; ++file) {
    SCOPED_TRACE(file == 0 ? "this file's Item" : "hostile_user_anon.cc's Item");
    try {
      const int area = file == 0 ? pool.apply(area_code_a, Item{3, 4}) : hostile_user_area_b(pool, 3, 4);
      ADD_FAILURE() << "ran, giving " << area;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("named alike by types in anonymous namespaces"), std::string::npos)
          << e.what();
    }
  }
}

// Exception types named alike in anonymous namespaces of two files: the error comes
// back as a RemoteError naming the type, not as the other file's type.
TEST_F(HostileUserTest, LookAlikeExceptionTypesOfAnonymousNamespacesArriveAsRemoteError) {
  ASSERT_TRUE(app_error_registered);
  mpx::Pool pool(1);
  try {
    hostile_user_throw_b(pool);
    FAIL() << "expected an exception";
  } catch (const AppError&) {
    FAIL() << "hostile_user_anon.cc's AppError came back as this file's";
  } catch (const mpx::RemoteError& e) {
    EXPECT_EQ(e.type_name(), "(anonymous namespace)::AppError");
    EXPECT_EQ(e.message(), "from b");
  }
}

// A registered exception whose constructor throws on the message: the error still
// arrives, as a RemoteError with the task's name and message, not as the constructor's.
TEST_F(HostileUserTest, ARegisteredExceptionThatCannotBeRebuiltArrivesAsRemoteError) {
  ASSERT_TRUE(picky_registered);
  mpx::Pool pool(1);
  try {
    pool.apply(throw_picky);
    FAIL() << "expected an exception";
  } catch (const mpx::RemoteError& e) {
    EXPECT_EQ(e.message(), "boom");
    EXPECT_NE(std::string(e.what()).find("throw_picky"), std::string::npos) << e.what();
  }
}

TEST(HostileUserHelper, DISABLED_LogsAtEachLevel) {
  mpx::logger().debug("a debug line");
  mpx::logger().error("an error line");
}

// MPX_LOG in any case; a value that is not a level is ignored with a warning (spdlog
// took it for "off", which hid errors too).
TEST_F(HostileUserTest, MpxLogTakesAnyCaseAndRefusesWhatIsNotALevel) {
  const auto debug = mpx::testing::run_helper("HostileUserHelper.DISABLED_LogsAtEachLevel", {"MPX_LOG=DEBUG"},
                                              seconds(60));
  ASSERT_TRUE(debug.exited_with(0)) << debug.output;
  EXPECT_NE(debug.output.find("a debug line"), std::string::npos) << debug.output;
  const auto bogus = mpx::testing::run_helper("HostileUserHelper.DISABLED_LogsAtEachLevel", {"MPX_LOG=bogus"},
                                              seconds(60));
  ASSERT_TRUE(bogus.exited_with(0)) << bogus.output;
  EXPECT_NE(bogus.output.find("an error line"), std::string::npos) << bogus.output;
  EXPECT_EQ(bogus.output.find("a debug line"), std::string::npos) << bogus.output;
  EXPECT_NE(bogus.output.find("ignored MPX_LOG=bogus"), std::string::npos) << bogus.output;
}

// A result that does not decode here fails its own item in an imap: the others of its
// chunk arrive (they all failed with its error).
TEST_F(HostileUserTest, AResultThatDoesNotDecodeFailsOnlyItsItemInImap) {
  mpx::Pool pool(1);
  for (const bool ordered : {true, false}) {
    SCOPED_TRACE(ordered ? "imap" : "imap_unordered");
    const std::vector<int> xs{1, 13, 2, 3, 4};
    auto it = ordered ? pool.imap(fussy, xs, 3) : pool.imap_unordered(fussy, xs, 3);
    std::vector<int> got;
    int errors = 0;
    for (;;) {
      try {
        auto r = it.next();
        if (!r) break;
        got.push_back(r->n);
      } catch (const mpx::DecodeError&) {
        ++errors;
      }
    }
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, (std::vector<int>{1, 2, 3, 4}));
    EXPECT_EQ(errors, 1);
  }
}

// std::optional of class types, alone or inside containers, as parameters and results
// (an ambiguous specialisation refused to compile them).
TEST_F(HostileUserTest, OptionalsOfClassTypesCrossTheBoundary) {
  mpx::Pool pool(1);
  EXPECT_EQ(pool.apply(name_of, std::optional<std::string>("none"), 1), std::optional<std::string>("one"));
  EXPECT_EQ(pool.apply(name_of, std::optional<std::string>(), 2), std::nullopt);
  EXPECT_EQ(pool.apply(tags_of, 4), tags_of(4));
}

TEST_F(HostileUserTest, APoolStartedInAWorkerRuns) {
  mpx::Pool pool(1);
  EXPECT_EQ(pool.apply(pool_in_a_worker, 3), 9);
}

// Runs Pool(MPX_TEST_PROCESSES).map under RLIMIT_NOFILE 16; prints "RESULT: ran" or
// the error.
TEST(HostileUserHelper, DISABLED_PoolUnderATinyDescriptorLimit) {
  const rlimit limit{16, 16};
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0);
  const int processes = std::atoi(std::getenv("MPX_TEST_PROCESSES"));
  try {
    mpx::Pool pool(processes);
    pool.map(square, std::vector<int>(100, 3), 1);
    std::printf("RESULT: ran\n");
  } catch (const mpx::Error& e) {
    std::printf("RESULT: %s\n", e.what());
  }
}

// *runtime_ran_out: UBSan's own runtime failed for lack of descriptors (its vptr check
// opens a pipe to probe the object's memory, and at the limit it reports "invalid vptr"
// and exits the process it runs in, before mpx can say anything).
std::string pool_under_sixteen_descriptors(int processes, bool* runtime_ran_out = nullptr) {
  const auto run = mpx::testing::run_helper("HostileUserHelper.DISABLED_PoolUnderATinyDescriptorLimit",
                                            {"MPX_TEST_PROCESSES=" + std::to_string(processes)},
                                            seconds(120));
  EXPECT_FALSE(run.timed_out) << run.output;
  if (runtime_ran_out != nullptr) *runtime_ran_out = run.output.find("object has invalid vptr") != std::string::npos;
  const auto at = run.output.find("RESULT: ");
  EXPECT_NE(at, std::string::npos) << run.output;
  if (at == std::string::npos) return run.output;
  return run.output.substr(at, run.output.find('\n', at) - at);
}

TEST_F(HostileUserTest, APoolFitsUnderATinyDescriptorLimitOrNamesTheWayOut) {
  // 8 workers fit in 16 descriptors (the spawner used to move descriptors to 16 and up,
  // which a limit of 16 refuses with "Invalid argument"). Under a sanitizer 4: its
  // runtime needs descriptors of its own (UBSan's vptr check probes memory through a
  // pipe of its own, two descriptors, and at the limit it reports the virtual call as
  // invalid and exits). 7 fit on a quiet machine; 6 once ran out in CI, so the
  // sanitizer run keeps a margin of three.
#ifdef MPX_SANITIZER_BUILD
  EXPECT_EQ(pool_under_sixteen_descriptors(4), "RESULT: ran");
#else
  EXPECT_EQ(pool_under_sixteen_descriptors(8), "RESULT: ran");
#endif
  // 40 cannot: the error says which limit and how to raise it.
  bool runtime_ran_out = false;
  const std::string result = pool_under_sixteen_descriptors(40, &runtime_ran_out);
#ifdef MPX_SANITIZER_BUILD
  // The router takes its last descriptor for the driver's connection, and UBSan's next
  // check in it needs one more (2 runs out of 3 under a loaded machine): the sanitizer
  // ended the router, not mpx. The plain build checks the message.
  if (runtime_ran_out) GTEST_SKIP() << "the sanitizer's runtime ran out of descriptors first: " << result;
#endif
  EXPECT_EQ(result.find("Invalid argument"), std::string::npos) << result;
  EXPECT_NE(result.find("Too many open files"), std::string::npos) << result;
  EXPECT_NE(result.find("ulimit -n"), std::string::npos) << result;
}

class Echo {
 public:
  int twice(int x) { return 2 * x; }
};
MPX_ACTOR(Echo, twice);

// Spawns an actor under RLIMIT_NOFILE 32 and calls it; prints "RESULT: <answer>", then
// "STATUS SOCKETS: <n>" (the actor's listening status sockets).
TEST(HostileUserHelper, DISABLED_ActorUnderATightDescriptorLimit) {
  const rlimit limit{32, 32};
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0);
  auto echo = mpx::spawn<Echo>();
  std::printf("RESULT: %d\n", echo.call(&Echo::twice, 21).get());
  int sockets = 0;
  for (const std::string& e : mpx::testing::listening_endpoints(echo.pid())) {
    sockets += e.size() > 7 && e.compare(e.size() - 7, 7, "-status") == 0;
  }
  std::printf("STATUS SOCKETS: %d\n", sockets);
}

// Its callers come first: the actor serves, without the status socket `mpx status`
// would read, and says so.
TEST_F(HostileUserTest, AnActorUnderATightDescriptorLimitServesWithoutAStatusSocket) {
  const auto run = mpx::testing::run_helper("HostileUserHelper.DISABLED_ActorUnderATightDescriptorLimit", {},
                                            seconds(60));
  ASSERT_FALSE(run.timed_out) << run.output;
  EXPECT_NE(run.output.find("RESULT: 42\n"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("STATUS SOCKETS: 0\n"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("no status socket (mpx status will not list it): the descriptor limit of 32"),
            std::string::npos)
      << run.output;
}

TEST_F(HostileUserTest, AnArgumentLargerThanTheWorkersMemoryLimitFailsItsItemSayingSo) {
#ifdef MPX_UNDER_SANITIZER
  GTEST_SKIP() << "sanitizers reserve terabytes of address space: RLIMIT_AS cannot apply";
#else
  const std::size_t limit = std::size_t{256} << 20;
  // By value (object_threshold 0) and as objects (the default): the same failure.
  for (std::size_t threshold : {std::size_t{0}, std::size_t{256} << 10}) {
    SCOPED_TRACE("object_threshold " + std::to_string(threshold));
    mpx::Pool pool(mpx::PoolOptions().processes(1).worker_memory_limit(limit).object_threshold(threshold));
    try {
      pool.apply(length_of, std::string(std::size_t{200} << 20, 'x'));
      FAIL() << "a 200 MiB argument fitted under a 256 MiB limit with its decoded copy";
    } catch (const mpx::RemoteInfo& e) {
      EXPECT_EQ(e.type_name(), "std::bad_alloc") << e.description();
      EXPECT_NE(e.message().find("worker_memory_limit"), std::string::npos) << e.message();
    }
    // Larger than the limit itself: the worker cannot even read it.
    try {
      pool.apply(length_of, std::string(std::size_t{300} << 20, 'x'));
      FAIL() << "a 300 MiB argument was read under a 256 MiB limit";
    } catch (const mpx::RemoteInfo& e) {
      EXPECT_EQ(e.type_name(), "std::bad_alloc") << e.description();
      // Read whole but not decoded, or not even read: either way the message says so.
      EXPECT_NE(e.message().find("worker_memory_limit"), std::string::npos) << e.message();
      EXPECT_EQ(e.task_index(), 0u);
    }
    EXPECT_EQ(pool.apply(length_of, std::string(1000, 'y')), 1000u) << "the same worker goes on";
  }
#endif
}

}  // namespace
