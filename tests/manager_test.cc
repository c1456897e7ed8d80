// Manager across real processes: dict, list and Namespace proxies used from Process
// children and pool workers; a client killed with SIGKILL in the middle of its updates;
// the server killed; objects dropped with their creator's proxies; the error paths.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "framework/testing/testing.h"
#include "mpx/mpx.h"

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

void record_visit(mpx::DictProxy<std::string, int> visits, mpx::ListProxy<int> order,
                  mpx::NamespaceProxy ns, int me) {
  visits.set("worker-" + std::to_string(me), me * 10);
  order.append(me);
  if (me == 0) ns.set("first", std::string("zero"));
}
int read_setting(mpx::NamespaceProxy ns) { return ns.get<int>("answer"); }
// Appends [me, 0], [me, 1], ... forever (until killed) or n times.
void append_tagged(mpx::ListProxy<std::vector<int>> out, mpx::DictProxy<int, int> last, int me, int n,
                   mpx::Event started) {
  started.set();
  for (int i = 0; n < 0 || i < n; ++i) {
    out.append({me, i});
    last.set(me, i);
  }
}
int size_of(mpx::DictProxy<std::string, int> d) { return static_cast<int>(d.size()); }
MPX_TASK(record_visit);
MPX_TASK(read_setting);
MPX_TASK(append_tagged);
MPX_TASK(size_of);

class ManagerTest : public ::testing::Test {
 protected:
  void TearDown() override {
    auto left = mpx::testing::wait_no_descendants(seconds(10));
    for (const auto& d : left) ADD_FAILURE() << "left running: pid " << d.pid << " " << d.cmdline;
  }
};

TEST_F(ManagerTest, DictListAndNamespaceAsPythonHasThem) {
  mpx::Manager manager;
  EXPECT_GT(manager.pid(), 0);
  EXPECT_NE(manager.pid(), getpid());
  auto d = manager.dict<std::string, double>({{"b", 2.0}});
  d.set("a", 1.0);
  d.set("c", 3.0);
  d.set("b", 2.5);  // keeps its place
  EXPECT_EQ(d.keys(), (std::vector<std::string>{"b", "a", "c"}));
  EXPECT_EQ(d.values(), (std::vector<double>{2.5, 1.0, 3.0}));
  EXPECT_EQ(d.get("a"), 1.0);
  EXPECT_EQ(d.get("zzz"), std::nullopt);
  EXPECT_EQ(d.get("zzz", -1.0), -1.0);
  EXPECT_TRUE(d.contains("c"));
  EXPECT_EQ(d.pop("a"), 1.0);
  EXPECT_EQ(d.pop("a"), std::nullopt);
  EXPECT_EQ(d.setdefault("d", 4.0), 4.0);
  EXPECT_EQ(d.setdefault("d", 5.0), 4.0);
  EXPECT_EQ(d.size(), 3u);
  EXPECT_EQ(d.copy(), (std::map<std::string, double>{{"b", 2.5}, {"c", 3.0}, {"d", 4.0}}));
  EXPECT_THROW(d.at("nope"), std::out_of_range);
  d.clear();
  EXPECT_TRUE(d.empty());

  auto l = manager.list<int>({1, 2, 3});
  l.append(4);
  l.extend({5, 6});
  l.insert(0, 0);
  l.insert(-1, 55);  // before the last, as Python's insert
  EXPECT_EQ(l.to_vector(), (std::vector<int>{0, 1, 2, 3, 4, 5, 55, 6}));
  EXPECT_EQ(l[-1], 6);
  EXPECT_EQ(l.pop(), 6);
  EXPECT_EQ(l.pop(0), 0);
  l.set(-1, 50);
  l.remove(3);
  EXPECT_EQ(l.index(50), 4u);
  EXPECT_EQ(l.count(2), 1u);
  EXPECT_EQ(l.to_vector(), (std::vector<int>{1, 2, 4, 5, 50}));
  EXPECT_THROW(l.at(5), std::out_of_range);
  EXPECT_THROW(l.set(-6, 1), std::out_of_range);
  EXPECT_THROW(l.remove(99), std::invalid_argument);
  EXPECT_THROW(l.index(99), std::invalid_argument);
  l.clear();
  EXPECT_THROW(l.pop(), std::out_of_range);

  auto ns = manager.Namespace();
  ns.set("lr", 0.1);
  ns.set("name", std::string("run-1"));
  EXPECT_EQ(ns.get<double>("lr"), 0.1);
  EXPECT_EQ(ns.get<std::string>("name"), "run-1");
  EXPECT_TRUE(ns.has("lr"));
  EXPECT_EQ(ns.names(), (std::vector<std::string>{"lr", "name"}));
  EXPECT_THROW(ns.get<int>("missing"), mpx::Error);
  EXPECT_THROW(ns.get<int>("name"), mpx::DecodeError);
  EXPECT_TRUE(ns.del("lr"));
  EXPECT_FALSE(ns.del("lr"));
}

TEST_F(ManagerTest, ProxiesGoToProcessesAndPoolTasks) {
  mpx::Manager manager;
  auto visits = manager.dict<std::string, int>();
  auto order = manager.list<int>();
  auto ns = manager.Namespace();
  ns.set("answer", 42);
  std::vector<mpx::Process> ps;
  for (int i = 0; i < 3; ++i) ps.emplace_back(record_visit, visits, order, ns, i);
  for (auto& p : ps) p.start();
  mpx::Pool pool(2);
  std::vector<std::tuple<mpx::DictProxy<std::string, int>, mpx::ListProxy<int>, mpx::NamespaceProxy, int>> items;
  for (int i = 3; i < 10; ++i) items.emplace_back(visits, order, ns, i);
  pool.starmap(record_visit, items);
  for (auto& p : ps) p.join();
  for (auto& p : ps) EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(visits.size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(visits.at("worker-" + std::to_string(i)), i * 10);
  auto got = order.to_vector();
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(ns.get<std::string>("first"), "zero");
  EXPECT_EQ(pool.apply(read_setting, ns), 42);
}

// Three clients append to one list as fast as they can; one is killed with SIGKILL in
// the middle. Every append is whole or absent: the others' items are all there, in
// order, and the killed one's are a prefix of what it meant to write.
TEST_F(ManagerTest, ClientKilledMidStreamCorruptsNothing) {
  mpx::Manager manager;
  auto out = manager.list<std::vector<int>>();
  auto last = manager.dict<int, int>();
  std::vector<mpx::Event> started(3);
  mpx::Process doomed(append_tagged, out, last, 0, -1, started[0]);
  mpx::Process a(append_tagged, out, last, 1, 300, started[1]);
  mpx::Process b(append_tagged, out, last, 2, 300, started[2]);
  doomed.start();
  a.start();
  b.start();
  for (auto& e : started) ASSERT_TRUE(e.wait(seconds(30)));
  ASSERT_TRUE(mpx::testing::wait_until([&] { return last.contains(0) && last.at(0) > 50; }, seconds(30)));
  doomed.kill();
  doomed.join();
  a.join();
  b.join();
  EXPECT_EQ(doomed.exitcode(), -SIGKILL);
  std::map<int, std::vector<int>> by_client;
  for (const auto& item : out.to_vector()) {
    ASSERT_EQ(item.size(), 2u);
    by_client[item[0]].push_back(item[1]);
  }
  for (int client : {0, 1, 2}) {
    const auto& seq = by_client[client];
    for (std::size_t i = 0; i < seq.size(); ++i) ASSERT_EQ(seq[i], static_cast<int>(i)) << "client " << client;
  }
  EXPECT_EQ(by_client[1].size(), 300u);
  EXPECT_EQ(by_client[2].size(), 300u);
  EXPECT_GT(by_client[0].size(), 50u);
  EXPECT_EQ(last.at(1), 299);
  // The manager goes on serving.
  out.append({9, 9});
  EXPECT_EQ(out.at(-1), (std::vector<int>{9, 9}));
}

TEST_F(ManagerTest, ServerKilledOrShutDownFailsEveryOperation) {
  mpx::Manager manager;
  auto d = manager.dict<std::string, int>();
  d.set("x", 1);
  kill(manager.pid(), SIGKILL);
  try {
    d.set("y", 2);
    FAIL() << "expected ActorDied";
  } catch (const mpx::ActorDied& e) {
    EXPECT_NE(std::string(e.what()).find("killed by signal 9"), std::string::npos) << e.what();
  }
  mpx::Manager second;
  auto l = second.list<int>();
  second.shutdown();
  second.shutdown();
  EXPECT_THROW(l.append(1), mpx::ActorDied);
}

// An object lives while a proxy to it lives in the process that created it; a call
// given a proxy keeps it.
TEST_F(ManagerTest, ObjectsLiveWithTheirCreatorsProxies) {
  mpx::Manager manager;
  mpx::Pool pool(1);
  auto result = pool.apply_async(size_of, manager.dict<std::string, int>({{"k", 1}}));
  EXPECT_EQ(result.get(), 1) << "the call kept the object alive";
  mpx::Queue<mpx::DictProxy<std::string, int>> q;
  {
    auto short_lived = manager.dict<std::string, int>();
    q.put(short_lived);  // items in a Queue do not keep it
  }
  try {
    pool.apply(size_of, q.get());
    FAIL() << "expected RemoteError";
  } catch (const mpx::RemoteError& e) {
    EXPECT_NE(e.message().find("is gone"), std::string::npos) << e.message();
  }
}

}  // namespace
