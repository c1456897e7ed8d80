// Another user gets nothing: a process that dropped to uid/gid 65534 ("nobody") can
// neither talk to a live pool's router (the router reads the peer's uid with
// SO_PEERCRED and closes the connection) nor read an actor's or a router's status
// (`mpx status`) nor map a shared object of this user (/proc/<owner>/fd is closed to
// it), while the same attempts from this user succeed.
//
// The other user is a copy of this binary started with posix_spawn running one
// DISABLED_ helper test, which drops its privileges first. Needs root; skipped, with
// the reason, otherwise.
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <msgpack.hpp>

#include "framework/router/status.h"
#include "framework/testing/testing.h"
#include "framework/transport/loop.h"
#include "framework/transport/transport.h"
#include "framework/wire/wire.h"
#include "mpx/mpx.h"

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr uid_t kNobody = 65534;
constexpr char kEndpointVar[] = "MPX_CROSS_USER_ENDPOINT";
constexpr char kHandleVar[] = "MPX_CROSS_USER_HANDLE";
constexpr char kKeepUserVar[] = "MPX_CROSS_USER_KEEP_USER";  // control run: no drop
constexpr char kStatusPidsVar[] = "MPX_CROSS_USER_STATUS_PIDS";  // "<actor pid> <router pid>"

int square(int x) { return x * x; }
MPX_TASK(square);

class Tally {
 public:
  int add(int k) { return n_ += k; }

 private:
  int n_ = 0;
};
MPX_ACTOR(Tally, add);

using mpx::testing::hex;
using mpx::testing::unhex;

// Drops every privilege for good: supplementary groups, then gid, then uid. Returns
// an empty string on success, else what failed.
std::string drop_to_nobody() {
  if (geteuid() != 0) return "not running as root (uid " + std::to_string(geteuid()) + ")";
  if (setgroups(0, nullptr) != 0) return std::string("setgroups: ") + std::strerror(errno);
  if (setgid(kNobody) != 0) return std::string("setgid(65534): ") + std::strerror(errno);
  if (setuid(kNobody) != 0) return std::string("setuid(65534): ") + std::strerror(errno);
  if (getuid() != kNobody || geteuid() != kNobody || getgid() != kNobody || setuid(0) == 0) {
    return "privileges were not dropped for good";
  }
  return "";
}

// In the helper: becomes nobody unless this is the control run.
void become_other_user_or_skip() {
  if (std::getenv(kKeepUserVar) != nullptr) return;
  const std::string failed = drop_to_nobody();
  if (!failed.empty()) GTEST_SKIP() << "cannot drop to uid 65534: " << failed;
}

// Connects to endpoint as a client, sends HELLO and waits up to timeout for an answer;
// returns its header type, or -1 if none came. *disconnected says whether the peer
// closed the connection meanwhile.
int hello_answer(const std::string& endpoint, milliseconds timeout, bool* disconnected) {
  *disconnected = false;
  mpx::transport::Connection conn = mpx::transport::Connection::dial(
      mpx::transport::Endpoint::from(endpoint), "Rcrossuser" + std::to_string(getpid()));
  if (!conn) {
    *disconnected = true;  // refused outright
    return -1;
  }
  mpx::wire::Header h;
  h.type = mpx::wire::Type::kHello;
  h.pid = getpid();
  conn.send(h, "");
  int answer = -1;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    mpx::wire::Header header;
    std::string_view header_bytes, payload;
    std::string why;
    if (conn.next(header, header_bytes, payload, &why) == mpx::transport::Reader::Next::kFrame) {
      answer = static_cast<int>(header.type);
      break;
    }
    const auto left =
        std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{conn.fd(), POLLIN, 0};
    mpx::transport::poll(&p, 1, left);
    if (conn.fill() == mpx::transport::Reader::Fill::kClosed) {
      *disconnected = true;
      break;
    }
  }
  return answer;
}

// Runs helper_test and turns its outcome into this test's: a skip there is a skip
// here (with its reason), a failure there is a failure here (with its output).
void run_as_other_user(const std::string& helper_test, std::vector<std::string> env) {
  const auto run = mpx::testing::run_helper("CrossUserHelper.DISABLED_" + helper_test,
                                            std::move(env), seconds(20));
  ASSERT_FALSE(run.timed_out) << run.output;
  const auto skipped = run.output.find("Skipped\n");
  if (skipped != std::string::npos || run.output.find("[  SKIPPED ]") != std::string::npos) {
    const auto reason = run.output.find("cannot drop");
    const std::string why = reason == std::string::npos
                                ? run.output
                                : run.output.substr(reason, run.output.find('\n', reason) - reason);
    GTEST_SKIP() << why;
  }
  ASSERT_TRUE(WIFEXITED(run.wait_status) && WEXITSTATUS(run.wait_status) == 0) << run.output;
  ASSERT_NE(run.output.find("[  PASSED  ] 1 test"), std::string::npos) << run.output;
}

std::string front_endpoint(const mpx::Pool& pool) {
  for (const std::string& e : mpx::testing::listening_endpoints(pool.router_pid())) {
    if (e.size() > 6 && e.compare(e.size() - 6, 6, "-front") == 0) return e;
  }
  return "";
}

// ---- helpers: run in a separate process (see run_as_other_user) -------------------

TEST(CrossUserHelper, DISABLED_TalkToRouter) {
  const char* endpoint = std::getenv(kEndpointVar);
  if (endpoint == nullptr) GTEST_SKIP() << "helper: run by CrossUserTest only";
  become_other_user_or_skip();
  if (IsSkipped()) return;
  EXPECT_EQ(getuid(), kNobody);
  // Unix streams themselves work for this user: a private listener of its own talks.
  {
    const auto own = mpx::transport::Endpoint::from("unix://@mpx-cross-user-control-" + std::to_string(getpid()));
    mpx::transport::Listener listener = mpx::transport::Listener::bind(own);
    ASSERT_TRUE(listener) << std::strerror(errno);
    mpx::transport::Connection client = mpx::transport::Connection::dial(own, "ping");
    ASSERT_TRUE(client) << "unix streams do not work as nobody at all: " << std::strerror(errno);
    pollfd p{listener.fd(), POLLIN, 0};
    ASSERT_EQ(mpx::transport::poll(&p, 1, milliseconds(10000)), 1);
  }
  // The pool's router: no WELCOME, and it drops the connection.
  bool disconnected = false;
  EXPECT_EQ(hello_answer(endpoint, milliseconds(10000), &disconnected), -1)
      << "the router answered uid " << getuid();
  EXPECT_TRUE(disconnected) << "the router never dropped the connection";
}

TEST(CrossUserHelper, DISABLED_ReadStatus) {
  const char* pids = std::getenv(kStatusPidsVar);
  if (pids == nullptr) GTEST_SKIP() << "helper: run by CrossUserTest only";
  int actor = 0, router = 0;
  ASSERT_EQ(std::sscanf(pids, "%d %d", &actor, &router), 2) << pids;
  become_other_user_or_skip();
  if (IsSkipped()) return;
  const bool same_user = std::getenv(kKeepUserVar) != nullptr;
  // `mpx status` lists what answers; the sockets are in /proc/net/unix for all to see.
  const auto live = mpx::router::live_status(milliseconds(5000));
  bool listed_actor = false, listed_pool = false;
  for (const auto& a : live.actors) listed_actor = listed_actor || a.pid == actor;
  for (const auto& p : live.pools) listed_pool = listed_pool || p.router_pid == router;
  EXPECT_EQ(listed_actor, same_user) << "uid " << getuid();
  EXPECT_EQ(listed_pool, same_user) << "uid " << getuid();
  std::string why;
  const auto pool = mpx::router::query_status(mpx::router::status_endpoint_name(router), milliseconds(5000), &why);
  EXPECT_EQ(pool.has_value(), same_user) << why;
  if (!same_user) EXPECT_EQ(why, "served by uid 0, not this user");
  // The actor, dialled raw (past the reader's own check): another user reads nothing.
  mpx::transport::Connection raw =
      mpx::transport::Connection::dial(mpx::transport::Endpoint::from(mpx::router::status_endpoint_name(actor)));
  ASSERT_TRUE(raw) << std::strerror(errno);
  std::string answer;
  for (;;) {
    pollfd p{raw.fd(), POLLIN, 0};
    ASSERT_EQ(mpx::transport::poll(&p, 1, milliseconds(10000)), 1) << "the actor neither answered nor closed";
    char buf[4096];
    const ssize_t n = ::read(raw.fd(), buf, sizeof buf);
    if (n <= 0) break;
    answer.append(buf, static_cast<std::size_t>(n));
  }
  EXPECT_EQ(answer.empty(), !same_user) << answer.size() << " bytes of status for uid " << getuid();
  // An actor's status is not a pool's.
  EXPECT_FALSE(mpx::router::query_status(mpx::router::status_endpoint_name(actor), milliseconds(5000), &why));
  if (same_user) EXPECT_NE(why.find("the answer is of kind 'actor'"), std::string::npos) << why;
}

TEST(CrossUserHelper, DISABLED_MapSharedValue) {
  const char* handle = std::getenv(kHandleVar);
  if (handle == nullptr) GTEST_SKIP() << "helper: run by CrossUserTest only";
  become_other_user_or_skip();
  if (IsSkipped()) return;
  const std::string bytes = unhex(handle);
  msgpack::object_handle oh = msgpack::unpack(bytes.data(), bytes.size());
  if (std::getenv(kKeepUserVar) != nullptr) {
    // Control: the same user maps it and reads the parent's value.
    auto value = oh.get().as<mpx::Value<int>>();
    EXPECT_EQ(value.load(), 42);
    return;
  }
  try {
    auto value = oh.get().as<mpx::Value<int>>();
    ADD_FAILURE() << "uid " << getuid() << " mapped another user's Value, reading " << value.load();
  } catch (const mpx::SharedMemoryError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("permission denied"), std::string::npos) << what;
    EXPECT_NE(what.find("one user"), std::string::npos) << what;
  }
}

// ---- the tests --------------------------------------------------------------------

class CrossUserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to become another user (uid " << geteuid() << ")";
  }
  void TearDown() override {
    auto left = mpx::testing::wait_no_descendants(seconds(10));
    for (const auto& d : left) ADD_FAILURE() << "left running: pid " << d.pid << " " << d.cmdline;
  }
};

TEST_F(CrossUserTest, RouterRefusesAnotherUser) {
  mpx::Pool pool(1);
  const std::string endpoint = front_endpoint(pool);
  ASSERT_FALSE(endpoint.empty()) << "no front endpoint among the router's sockets";
  // This user is welcome (bounded so a missing answer fails here, not at the timeout).
  bool disconnected = false;
  EXPECT_EQ(hello_answer(endpoint, milliseconds(10000), &disconnected),
            static_cast<int>(mpx::wire::Type::kWelcome));
  EXPECT_FALSE(disconnected);
  run_as_other_user("TalkToRouter", {std::string(kEndpointVar) + "=" + endpoint});
  if (IsSkipped()) return;
  EXPECT_EQ(pool.map(square, std::vector<int>{1, 2, 3}), (std::vector<int>{1, 4, 9}));
}

TEST_F(CrossUserTest, StatusRefusesAnotherUser) {
  auto tally = mpx::spawn<Tally>();
  EXPECT_EQ(tally.call(&Tally::add, 2).get(), 2);
  mpx::Pool pool(1);
  const std::string pids =
      std::string(kStatusPidsVar) + "=" + std::to_string(tally.pid()) + " " + std::to_string(pool.router_pid());
  // Control: a process of this user sees both.
  run_as_other_user("ReadStatus", {pids, std::string(kKeepUserVar) + "=1"});
  if (HasFatalFailure()) return;
  run_as_other_user("ReadStatus", {pids});
  if (IsSkipped()) return;
  EXPECT_EQ(tally.call(&Tally::add, 1).get(), 3);
}

TEST_F(CrossUserTest, SharedMemoryRefusesAnotherUser) {
  mpx::Value<int> value(42);
  msgpack::sbuffer buf;
  msgpack::pack(buf, value);
  const std::string handle = std::string(kHandleVar) + "=" + hex(std::string(buf.data(), buf.size()));
  // Control: the same handle in a process of this user maps fine.
  run_as_other_user("MapSharedValue", {handle, std::string(kKeepUserVar) + "=1"});
  if (HasFatalFailure()) return;
  run_as_other_user("MapSharedValue", {handle});
  if (IsSkipped()) return;
  EXPECT_EQ(value.load(), 42);
}

}  // namespace
