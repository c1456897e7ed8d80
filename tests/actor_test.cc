// Actors with real processes: calls, ordering, failures, deaths, restarts, timeouts,
// handles travelling to pool tasks and other actors, stop and scope exit.
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "framework/transport/transport.h"
#include "framework/testing/testing.h"
#include "mpx/mpx.h"

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

#if defined(__SANITIZE_THREAD__)
constexpr int kSlow = 10;
#elif defined(__SANITIZE_ADDRESS__)
constexpr int kSlow = 4;
#else
constexpr int kSlow = 1;
#endif

bool process_exists(pid_t pid) { return pid > 0 && kill(pid, 0) == 0; }

}  // namespace

class Counter {
 public:
  explicit Counter(int start) : n_(start) {}
  int add(int k) { return n_ += k; }
  int get() const { return n_; }
  void reset() { n_ = 0; }
  int fail(const std::string& why) { throw std::invalid_argument(why); }
  int crash() {
    raise(SIGKILL);
    return 0;
  }
  int slow_add(int k, int ms) {
    std::this_thread::sleep_for(milliseconds(ms));
    return n_ += k;
  }
  pid_t pid() const { return getpid(); }
  std::string whoami() const { return mpx::current_process().name; }
  std::string text(int bytes) const { return std::string(static_cast<std::size_t>(bytes), 't'); }

 private:
  int n_;
};
MPX_ACTOR(Counter, add, get, reset, fail, crash, slow_add, pid, whoami, text);

namespace shop {
// Constructor overloads, strings, vectors and a destructor with an effect.
class Ledger {
 public:
  Ledger(std::string owner, mpx::Value<int> destroyed) : owner_(std::move(owner)), destroyed_(destroyed) {}
  explicit Ledger(std::vector<int> opening) : owner_("anon"), destroyed_(0), entries_(std::move(opening)) {}
  ~Ledger() { destroyed_.store(destroyed_.load() + 1); }
  void record(int amount) { entries_.push_back(amount); }
  std::vector<int> entries() const { return entries_; }
  std::string owner() const { return owner_; }

 private:
  std::string owner_;
  mpx::Value<int> destroyed_;
  std::vector<int> entries_;
};
MPX_ACTOR(Ledger, record, entries, owner);
}  // namespace shop

class Picky {
 public:
  explicit Picky(int n) {
    if (n < 0) throw std::out_of_range("Picky needs n >= 0, got " + std::to_string(n));
  }
  int ok() const { return 1; }
};
MPX_ACTOR(Picky, ok);

// Sums what it is sent: 20 MiB vectors arrive as objects.
class Summer {
 public:
  double sum(std::vector<double> v) const { return std::accumulate(v.begin(), v.end(), 0.0); }
};
MPX_ACTOR(Summer, sum);

// Its constructor takes 2 s from the second time on (a restart), telling the first by
// a file it creates.
class SlowRestart {
 public:
  explicit SlowRestart(const std::string& marker) {
    if (std::ifstream(marker).good()) {
      std::this_thread::sleep_for(std::chrono::seconds(2));
    } else {
      std::ofstream(marker) << "built";
    }
  }
  int get() const { return 1; }
};
MPX_ACTOR(SlowRestart, get);

// Keeps views of its constructor's arguments, as a class may when its caller's
// arguments outlive it: a training set as a Span of the vector it was spawned with.
class Viewer {
 public:
  Viewer(mpx::Span<const double> data, std::string_view label) : data_(data), label_(label) {}
  std::vector<double> data() const { return data_.to_vector(); }
  std::string label() const { return std::string(label_); }

 private:
  mpx::Span<const double> data_;
  std::string_view label_;
};
MPX_ACTOR(Viewer, data, label);

// Forwards to another actor: handles travel to actors too.
class Relay {
 public:
  explicit Relay(mpx::Actor<Counter> target) : target_(std::move(target)) {}
  int forward(int k) { return target_.call(&Counter::add, k).get(); }

 private:
  mpx::Actor<Counter> target_;
};
MPX_ACTOR(Relay, forward);

int add_through(mpx::Actor<Counter> c, int k) { return c.call(&Counter::add, k).get(); }
MPX_TASK(add_through);

std::string call_dead(mpx::Actor<Counter> c) {
  try {
    c.call(&Counter::get).get();
  } catch (const mpx::ActorDied& e) {
    return std::string("ActorDied: ") + e.what();
  }
  return "answered";
}
MPX_TASK(call_dead);

// Finds the actor by name in the worker and adds k.
int add_by_name(std::string name, int k) { return mpx::find_actor<Counter>(name).call(&Counter::add, k).get(); }
MPX_TASK(add_by_name);

TEST(Actor, CallTellAndOrderFromOneSender) {
  auto c = mpx::spawn<Counter>(10);
  EXPECT_EQ(c.call(&Counter::add, 5).get(), 15);
  for (int i = 0; i < 1000; ++i) c.tell(&Counter::add, 1);
  // Tells are not answered, but a later call from the same process runs after them.
  EXPECT_EQ(c.call(&Counter::get).get(), 1015);
  c.tell(&Counter::reset);
  EXPECT_EQ(c.call(&Counter::get).get(), 0);
  EXPECT_TRUE(c.is_alive());
  EXPECT_NE(c.pid(), getpid());
  EXPECT_EQ(c.call(&Counter::pid).get(), c.pid());
  EXPECT_EQ(c.call(&Counter::whoami).get(), c.name());
}

TEST(Actor, PipelinedFuturesAllAnswerInOrder) {
  auto c = mpx::spawn<Counter>(0);
  std::vector<mpx::Future<int>> fs;
  for (int i = 1; i <= 2000; ++i) fs.push_back(c.call(&Counter::add, 1));
  // Waited in reverse: the pump delivers every answer, not only the awaited one.
  for (int i = 2000; i >= 1; --i) EXPECT_EQ(fs[i - 1].get(), i);
}

TEST(Actor, ManyThreadsShareOneActor) {
  auto c = mpx::spawn<Counter>(0);
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      int last = 0;
      for (int i = 0; i < 500; ++i) {
        const int now = c.call(&Counter::add, 1).get();
        if (now <= last) ++wrong;  // one thread's calls run in its order
        last = now;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(c.call(&Counter::get).get(), 2000);
}

TEST(Actor, ConstructorsStringsVectorsAndDestructorOnStop) {
  mpx::Value<int> destroyed(0);
  auto a = mpx::spawn<shop::Ledger>("alice", destroyed);
  auto b = mpx::spawn<shop::Ledger>(std::vector<int>{1, 2});
  a.tell(&shop::Ledger::record, 7);
  a.tell(&shop::Ledger::record, 8);
  b.call(&shop::Ledger::record, 3).get();
  EXPECT_EQ(a.call(&shop::Ledger::owner).get(), "alice");
  EXPECT_EQ(b.call(&shop::Ledger::entries).get(), (std::vector<int>{1, 2, 3}));
  a.tell(&shop::Ledger::record, 9);
  a.stop();  // the tell before it runs, then the destructor
  EXPECT_FALSE(a.is_alive());
  EXPECT_EQ(a.pid(), 0);
  EXPECT_EQ(destroyed.load(), 1);
  EXPECT_THROW(a.call(&shop::Ledger::entries).get(), mpx::ActorDied);
  EXPECT_THROW(a.tell(&shop::Ledger::record, 1), mpx::ActorDied);
  a.stop();  // a second stop is a no-op
}

// The arguments an actor was spawned with live as long as it does: views its
// constructor kept of them read the values sent, not freed memory.
TEST(Actor, ViewsOfConstructorArgumentsStayValid) {
  std::vector<double> data(5000);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = 0.5 * static_cast<double>(i);
  auto viewer = mpx::spawn<Viewer>(data, std::string(300, 'x'));
  EXPECT_EQ(viewer.call(&Viewer::data).get(), data);
  EXPECT_EQ(viewer.call(&Viewer::label).get(), std::string(300, 'x'));
}

TEST(Actor, MethodThatThrowsFailsItsCallOnly) {
  auto c = mpx::spawn<Counter>(1);
  c.call(&Counter::add, 1).get();
  try {
    c.call(&Counter::fail, std::string("bad input 42")).get();
    FAIL() << "no exception";
  } catch (const mpx::RemoteInfo& e) {
    EXPECT_EQ(e.type_name(), "std::invalid_argument");
    EXPECT_EQ(e.message(), "bad input 42");
    EXPECT_EQ(e.task_name(), "Counter::fail");
    EXPECT_EQ(e.worker_pid(), c.pid());
  }
  EXPECT_EQ(c.call(&Counter::get).get(), 2);  // state kept, actor alive
  c.tell(&Counter::fail, std::string("told"));  // logged by the actor
  EXPECT_EQ(c.call(&Counter::add, 1).get(), 3);
}

TEST(Actor, ConstructorThatThrowsFailsSpawn) {
  try {
    mpx::spawn<Picky>(-3);
    FAIL() << "no exception";
  } catch (const mpx::RemoteInfo& e) {
    EXPECT_EQ(e.type_name(), "std::out_of_range");
    EXPECT_NE(e.message().find("got -3"), std::string::npos) << e.message();
    EXPECT_NE(std::string(e.description()).find("Picky::Picky"), std::string::npos) << e.description();
    EXPECT_GT(e.worker_pid(), 0) << "the pid of the process whose constructor threw";
  }
  EXPECT_EQ(mpx::spawn<Picky>(1).call(&Picky::ok).get(), 1);
}

TEST(Actor, HandlesTravelToPoolTasksAndOtherActors) {
  auto c = mpx::spawn<Counter>(0);
  mpx::Pool pool(2);
  std::vector<std::tuple<mpx::Actor<Counter>, int>> work;
  for (int k = 1; k <= 100; ++k) work.emplace_back(c, k);
  const auto got = pool.starmap(add_through, work);
  EXPECT_EQ(got.size(), 100u);
  EXPECT_EQ(c.call(&Counter::get).get(), 5050);

  auto relay = mpx::spawn<Relay>(c);
  EXPECT_EQ(relay.call(&Relay::forward, 10).get(), 5060);
  EXPECT_EQ(c.call(&Counter::get).get(), 5060);
}

// An actor whose last handle sits in another actor's constructor arguments may be
// stopped by the supervisor thread: when the other actor's handle goes first, the
// supervisor can hold its record (and so those arguments) last. That stop must not make
// the supervisor wait for itself. The window is narrow: the pattern runs many times,
// and after each the supervisor must still see an actor die.
TEST(Actor, TheLastHandleDroppedByTheSupervisorDoesNotStallIt) {
  for (int round = 0; round < 40; ++round) {
    {
      auto inner = mpx::spawn<Counter>(0);
      auto relay = mpx::spawn<Relay>(inner);
      ASSERT_EQ(relay.call(&Relay::forward, 3).get(), 3);
    }  // relay goes first (its stop waits for the supervisor), then inner's handle
    auto c = mpx::spawn<Counter>(0);
    auto crash = c.call(&Counter::crash);
    ASSERT_TRUE(crash.wait_for(seconds(10 * kSlow))) << "the supervisor stalled in round " << round;
    EXPECT_THROW(crash.get(), mpx::ActorDied);
  }
}

TEST(Actor, DeathFailsPendingAndLaterCalls) {
  auto c = mpx::spawn<Counter>(0);
  const pid_t first = c.pid();
  auto slow = c.call(&Counter::slow_add, 1, 200);
  auto crash = c.call(&Counter::crash);
  auto after = c.call(&Counter::get);  // queued behind the crash
  EXPECT_EQ(slow.get(), 1);
  try {
    crash.get();
    FAIL() << "no exception";
  } catch (const mpx::ActorDied& e) {
    EXPECT_FALSE(e.restarted());
    EXPECT_NE(e.reason().find("Counter::crash"), std::string::npos) << e.what();
    EXPECT_NE(e.reason().find("signal 9"), std::string::npos) << e.what();
  }
  EXPECT_THROW(after.get(), mpx::ActorDied);
  EXPECT_FALSE(c.is_alive());
  EXPECT_THROW(c.call(&Counter::get).get(), mpx::ActorDied);
  EXPECT_FALSE(process_exists(first));
  // A pool task holding the handle learns it too, instead of waiting.
  mpx::Pool pool(1);
  const std::string seen = pool.apply(call_dead, c);
  EXPECT_EQ(seen.rfind("ActorDied", 0), 0u) << seen;
}

TEST(Actor, KilledFromOutsideWhileBusy) {
  auto c = mpx::spawn<Counter>(0);
  auto busy = c.call(&Counter::slow_add, 1, 60000);
  std::this_thread::sleep_for(milliseconds(50));
  ASSERT_EQ(kill(c.pid(), SIGKILL), 0);
  EXPECT_TRUE(busy.wait_for(seconds(10 * kSlow)));  // no hang
  EXPECT_THROW(busy.get(), mpx::ActorDied);
}

// While an actor restarts, pid() is 0 (its dead process's pid, reaped, may be another
// process's by then: kill() must not signal it).
TEST(Actor, PidIsZeroWhileTheActorRestarts) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string marker = std::string(tmp ? tmp : "/tmp") + "/slow-restart-" + std::to_string(getpid());
  std::remove(marker.c_str());
  auto c = mpx::spawn<SlowRestart>(mpx::ActorOptions().restart(mpx::Restart::on_failure), marker);
  const pid_t first = c.pid();
  ASSERT_GT(first, 0);
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  ASSERT_TRUE(mpx::testing::wait_until([&] { return c.pid() != first; }, seconds(30)));
  EXPECT_EQ(c.pid(), 0) << "during the restart, whose constructor takes 2 s";
  EXPECT_EQ(c.call(&SlowRestart::get).get(), 1);
  EXPECT_GT(c.pid(), 0);
  EXPECT_NE(c.pid(), first);
  std::remove(marker.c_str());
}

TEST(Actor, RestartOnFailureRebuildsFromConstructorArguments) {
  auto c = mpx::spawn<Counter>(mpx::ActorOptions().restart(mpx::Restart::on_failure).max_restarts(2), 100);
  EXPECT_EQ(c.call(&Counter::add, 5).get(), 105);
  const pid_t first = c.pid();
  try {
    c.call(&Counter::crash).get();
    FAIL() << "no exception";
  } catch (const mpx::ActorDied& e) {
    EXPECT_TRUE(e.restarted()) << e.what();
    EXPECT_NE(std::string(e.what()).find("state was lost"), std::string::npos) << e.what();
  }
  EXPECT_EQ(c.call(&Counter::get).get(), 100);  // a fresh Counter(100)
  EXPECT_NE(c.pid(), first);
  EXPECT_EQ(c.restarts(), 1);
  c.kill();
  EXPECT_EQ(c.call(&Counter::add, 1).get(), 101);
  EXPECT_EQ(c.restarts(), 2);
  c.kill();  // the third death is one too many
  EXPECT_FALSE(c.is_alive());
  try {
    c.call(&Counter::get).get();
    FAIL() << "no exception";
  } catch (const mpx::ActorDied& e) {
    EXPECT_NE(std::string(e.what()).find("max_restarts"), std::string::npos) << e.what();
  }
}

TEST(Actor, CallTimeoutAndWaitFor) {
  auto c = mpx::spawn<Counter>(0);
  auto late = c.call(&Counter::slow_add, 1, 400 * kSlow, milliseconds(50));
  EXPECT_THROW(late.get(), mpx::TimeoutError);
  auto f = c.call(&Counter::slow_add, 1, 200 * kSlow);
  EXPECT_FALSE(f.wait_for(milliseconds(10)));
  EXPECT_FALSE(f.ready());
  EXPECT_TRUE(f.wait_for(seconds(30)));
  EXPECT_EQ(f.get(), 2);  // the timed-out call still ran; its answer was dropped
  EXPECT_THROW(c.call(&Counter::slow_add, 1, 300 * kSlow).get(milliseconds(20)), mpx::TimeoutError);
  EXPECT_EQ(c.call(&Counter::get).get(), 3);
}

TEST(Actor, LastHandleStopsTheActor) {
  pid_t pid = 0;
  {
    auto c = mpx::spawn<Counter>(0);
    pid = c.pid();
    auto copy = c;
    copy.tell(&Counter::add, 1);
  }
  EXPECT_FALSE(process_exists(pid));  // reaped by its spawner: no zombie either
  EXPECT_TRUE(mpx::testing::wait_no_descendants(seconds(10)).empty());
}

// Calls made before stop(), or before the last handle goes, are answered: answers more
// than a socket buffer holds arrive too (the actor used to exit with them unsent).
TEST(Actor, AnswersToCallsMadeBeforeStopAllArrive) {
  {
    auto c = mpx::spawn<Counter>(0);
    auto big = c.call(&Counter::text, 4 << 20);
    std::vector<mpx::Future<int>> adds;
    for (int i = 0; i < 3000; ++i) adds.push_back(c.call(&Counter::add, 1));
    c.stop();
    EXPECT_EQ(big.get().size(), std::size_t{4} << 20);
    int highest = 0;
    for (auto& f : adds) highest = std::max(highest, f.get());
    EXPECT_EQ(highest, 3000);
  }
  mpx::Future<std::string> last;
  {
    auto c = mpx::spawn<Counter>(0);
    last = c.call(&Counter::text, 4 << 20);
  }
  EXPECT_EQ(last.get().size(), std::size_t{4} << 20);
}

TEST(Actor, StopWithGraceKillsAStuckActor) {
  auto c = mpx::spawn<Counter>(0);
  c.tell(&Counter::slow_add, 1, 60000);
  EXPECT_FALSE(c.stop(milliseconds(100)));
  EXPECT_FALSE(c.is_alive());
  EXPECT_THROW(c.call(&Counter::get).get(), mpx::ActorDied);
}

// An actor lets the objects of its last calls go once it is idle (base::IdleTrim): after
// six 20 MiB arguments it kept about 60 MiB of them mapped without that.
TEST(Actor, AnIdleActorGivesBackTheMemoryLargeArgumentsNeeded) {
  auto summer = mpx::spawn<Summer>();
  const std::vector<double> big(std::size_t{20} << 17, 1.0);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(summer.call(&Summer::sum, big).get(), double(big.size()));
  auto mapped_kib = [&] {  // shared memory mapped (RssShmem), such as objects
    std::ifstream status("/proc/" + std::to_string(summer.pid()) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("RssShmem:", 0) == 0) return std::atol(line.c_str() + 9);
    }
    return -1L;
  };
  long kib = mapped_kib();
  for (int i = 0; i < 100 && kib >= 16 * 1024; ++i) {
    std::this_thread::sleep_for(milliseconds(100));
    kib = mapped_kib();
  }
  EXPECT_GE(kib, 0);
  EXPECT_LT(kib, 16 * 1024) << "the idle actor still maps " << kib << " KiB of shared memory";
}

TEST(Actor, HundredActorsOnTwoCores) {
  const int n = 100 / kSlow;
  std::vector<mpx::Actor<Counter>> actors;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) actors.push_back(mpx::spawn<Counter>(i));
  const auto t1 = std::chrono::steady_clock::now();
  std::vector<mpx::Future<int>> fs;
  for (int i = 0; i < n; ++i) fs.push_back(actors[i].call(&Counter::add, 1000));
  for (int i = 0; i < n; ++i) EXPECT_EQ(fs[i].get(), 1000 + i);
  long rss_kb = 0;
  for (auto& a : actors) {
    std::ifstream status("/proc/" + std::to_string(a.pid()) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmRSS:", 0) == 0) rss_kb += std::atol(line.c_str() + 6);
    }
  }
  std::printf("%d idle actors: %ld KiB RSS in total, %ld KiB each\n", n, rss_kb, rss_kb / n);
  const auto t2 = std::chrono::steady_clock::now();
  actors.clear();
  const auto t3 = std::chrono::steady_clock::now();
  std::printf("spawning %d actors took %lld ms, stopping them %lld ms\n", n,
              static_cast<long long>(std::chrono::duration_cast<milliseconds>(t1 - t0).count()),
              static_cast<long long>(std::chrono::duration_cast<milliseconds>(t3 - t2).count()));
  EXPECT_TRUE(mpx::testing::wait_no_descendants(seconds(30)).empty());
}

// Ray's named actors: a name given at spawn finds the actor from any process of the
// program; a second live actor cannot have it; it is free again once the actor ends.
TEST(Actor, NamedActorsAreFoundFromAnyProcess) {
  auto totals = mpx::spawn<Counter>(mpx::ActorOptions().name("totals"), 100);
  EXPECT_EQ(totals.name(), "totals");
  auto same = mpx::find_actor<Counter>("totals");
  EXPECT_EQ(same.call(&Counter::add, 1).get(), 101);
  EXPECT_EQ(same.pid(), totals.pid());
  mpx::Pool pool(2);
  std::vector<std::tuple<std::string, int>> items;
  for (int i = 0; i < 10; ++i) items.emplace_back("totals", 1);
  pool.starmap(add_by_name, items);
  EXPECT_EQ(totals.call(&Counter::get).get(), 111);

  try {
    mpx::spawn<Counter>(mpx::ActorOptions().name("totals"), 0);
    FAIL() << "expected mpx::Error";
  } catch (const mpx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("an actor named 'totals' exists already"), std::string::npos) << e.what();
  }
  try {
    mpx::find_actor<Picky>("totals");
    FAIL() << "expected mpx::Error";
  } catch (const mpx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("is not of class Picky"), std::string::npos) << e.what();
  }
  EXPECT_THROW(mpx::find_actor<Counter>("nobody"), mpx::Error);
  // Names are at most 127 bytes: a longer one is refused, not cut (it could then be
  // neither found nor spawned again).
  const std::string longest(127, 'n');
  auto named = mpx::spawn<Counter>(mpx::ActorOptions().name(longest), 3);
  EXPECT_EQ(mpx::find_actor<Counter>(longest).call(&Counter::get).get(), 3);
  try {
    mpx::spawn<Counter>(mpx::ActorOptions().name(longest + "n"), 0);
    FAIL() << "expected mpx::Error";
  } catch (const mpx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("an actor name is at most 127 bytes"), std::string::npos) << e.what();
  }

  totals.stop();
  EXPECT_THROW(mpx::find_actor<Counter>("totals"), mpx::Error);
  auto again = mpx::spawn<Counter>(mpx::ActorOptions().name("totals"), 7);  // free again
  EXPECT_EQ(mpx::find_actor<Counter>("totals").call(&Counter::get).get(), 7);
}

// Killed with SIGKILL: without restarts the name goes with it; with on_failure the
// restarted actor keeps it.
TEST(Actor, NamedActorKilled) {
  auto mortal = mpx::spawn<Counter>(mpx::ActorOptions().name("mortal"), 0);
  mortal.kill();
  EXPECT_TRUE(mpx::testing::wait_until(
      [] {
        try {
          mpx::find_actor<Counter>("mortal");
          return false;
        } catch (const mpx::Error&) {
          return true;
        }
      },
      seconds(30)));
  auto phoenix = mpx::spawn<Counter>(
      mpx::ActorOptions().name("phoenix").restart(mpx::Restart::on_failure), 5);
  const pid_t first = phoenix.pid();
  phoenix.kill();
  auto found = mpx::find_actor<Counter>("phoenix");
  EXPECT_EQ(found.call(&Counter::get).get(), 5);
  EXPECT_NE(found.pid(), first);
}

TEST(ActorHelper, DISABLED_DriverWithActors) {
  if (!std::getenv("MPX_ACTOR_HELPER")) GTEST_SKIP();
  auto a = mpx::spawn<Counter>(0);
  auto b = mpx::spawn<Counter>(mpx::ActorOptions().restart(mpx::Restart::on_failure), 0);
  a.call(&Counter::get).get();
  b.call(&Counter::get).get();
  std::printf("READY %d %d\n", a.pid(), b.pid());
  std::fflush(stdout);
  pause();
}

TEST(Actor, DriverKilledTakesItsActorsAlong) {
  auto helper = mpx::testing::start_helper_driver("ActorHelper.DISABLED_DriverWithActors",
                                                  "MPX_ACTOR_HELPER");
  ASSERT_GT(helper.pid, 0) << helper.output;
  EXPECT_EQ(mpx::testing::descendants(helper.pid).size(), 2u);
  kill(helper.pid, SIGKILL);
  waitpid(helper.pid, nullptr, 0);
  const auto left = mpx::testing::wait_no_descendants(seconds(10), helper.pid);
  for (const auto& d : left) ADD_FAILURE() << "orphan: pid " << d.pid << " " << d.cmdline;
}

TEST(Actor, ForeignHandleIsRefused) {
  auto c = mpx::spawn<Counter>(0);
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack(c);
  auto oh = msgpack::unpack(buf.data(), buf.size());
  EXPECT_THROW(oh.get().as<mpx::Actor<Picky>>(), mpx::DecodeError);
  EXPECT_EQ(oh.get().as<mpx::Actor<Counter>>().call(&Counter::add, 2).get(), 2);
  auto bad = msgpack::unpack("\x93\xa3" "abc\x01\x02", 7);
  EXPECT_ANY_THROW(bad.get().as<mpx::Actor<Counter>>());
}

// Anything a same-user process can write to an actor's socket: the actor drops it
// (and the connection, when the stream cannot be resynchronised) and serves on.
TEST(Actor, HostileInputIsDroppedAndTheActorServes) {
  auto c = mpx::spawn<Counter>(0);
  // Its callers' socket, and the one `mpx status` reads (tests/observe_test.cc).
  std::vector<std::string> endpoints;
  for (const std::string& e : mpx::testing::listening_endpoints(c.pid())) {
    if (e.size() < 7 || e.compare(e.size() - 7, 7, "-status") != 0) endpoints.push_back(e);
  }
  ASSERT_EQ(endpoints.size(), 1u);
  const std::string endpoint = endpoints[0];
  auto frame = [](mpx::wire::Type type, std::uint32_t count, std::uint64_t start,
                  const std::string& payload) {
    mpx::wire::Header h;
    h.type = type;
    h.call_id = 7;
    h.count = count;
    h.start = start;
    std::string out;
    mpx::transport::append_frame(out, h, payload);
    return out;
  };
  auto u32 = [](std::uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); };
  msgpack::sbuffer one;
  msgpack::pack(one, std::make_tuple(1));
  const std::string args(one.data(), one.size());
  std::string flood;
  for (int i = 0; i < 5000; ++i) flood += frame(mpx::wire::Type::kSubmit, 1, 1, args);
  const std::vector<std::pair<std::string, std::string>> inputs = {
      {"garbage", std::string(4096, '\xc1')},
      {"header length 0", u32(0) + u32(0)},
      {"header length over the limit", u32(100000) + u32(0) + std::string(64, 'x')},
      {"payload length over the limit", u32(10) + u32(0x7fffffff) + std::string(64, 'x')},
      {"header that is not a header", u32(4) + u32(0) + "\x93\x01\x02\x03"},
      {"truncated frame", frame(mpx::wire::Type::kCall, 0, 1, args).substr(0, 12)},
      {"method out of range", frame(mpx::wire::Type::kCall, 99, 1, args)},
      {"arguments of the wrong shape", frame(mpx::wire::Type::kCall, 0, 1, "\xa3" "abc")},
      {"arguments that are not msgpack", frame(mpx::wire::Type::kCall, 0, 1, "\xc1\xc1")},
      {"wrong incarnation", frame(mpx::wire::Type::kCall, 0, 9, args)},
      {"a flood of messages actors do not take", flood},
  };
  int expected = 0;
  for (const auto& [what, bytes] : inputs) {
    mpx::transport::Connection conn = mpx::transport::Connection::dial(mpx::transport::Endpoint::from(endpoint));
    ASSERT_TRUE(conn) << what;
    ASSERT_EQ(send(conn.fd(), bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size())) << what;
    std::this_thread::sleep_for(milliseconds(20));
    conn.close();
    ++expected;
    EXPECT_EQ(c.call(&Counter::add, 1).get(seconds(10 * kSlow)), expected) << "after " << what;
  }
  EXPECT_EQ(c.call(&Counter::get).get(), expected);  // none of the bad calls ran
}
