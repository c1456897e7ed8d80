// Pipe and Connection across real processes: typed and raw messages, end of file when
// the peer is killed, broken pipes, ends handed to Process children, Pool tasks and
// through another connection, connection::wait over connections and sentinels.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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

struct Order {
  int id;
  std::string item;
  std::vector<double> prices;
  MSGPACK_DEFINE(id, item, prices);
};

// Answers each int n with the string of n, an Order with its total, until -1.
void echo(mpx::Connection conn) {
  for (;;) {
    const int n = conn.recv<int>();
    if (n < 0) break;
    conn.send(std::to_string(n));
  }
  Order o = conn.recv<Order>();
  double total = 0;
  for (double p : o.prices) total += p;
  conn.send(total);
  conn.send_bytes(std::string("\0raw\xff", 5));
}
// Sends one message, then waits to be killed.
void send_then_hang(mpx::Connection conn) {
  conn.send(std::string("last words"));
  for (;;) pause();
}
void exit_at_once(mpx::Connection) {}
// Pool task: sends its item back through the connection.
int send_back(mpx::Connection conn, int i) {
  conn.send(i);
  return i;
}
// Receives a Connection through a Connection and answers on it.
void answer_on_received(mpx::Connection control) {
  mpx::Connection data = control.recv<mpx::Connection>();
  data.send(std::string("via a passed end"));
}
void send_after(mpx::Connection conn, int ms) {
  std::this_thread::sleep_for(milliseconds(ms));
  conn.send(ms);
}
MPX_TASK(echo);
MPX_TASK(send_then_hang);
MPX_TASK(exit_at_once);
MPX_TASK(send_back);
MPX_TASK(answer_on_received);
MPX_TASK(send_after);

class ConnectionTest : public ::testing::Test {
 protected:
  void TearDown() override {
    auto left = mpx::testing::wait_no_descendants(seconds(10));
    for (const auto& d : left) ADD_FAILURE() << "left running: pid " << d.pid << " " << d.cmdline;
  }
};

TEST_F(ConnectionTest, TypedAndRawMessagesBothWays) {
  auto [parent_end, child_end] = mpx::Pipe();
  mpx::Process p(echo, child_end);
  p.start();
  child_end.close();
  for (int i = 0; i < 100; ++i) {
    parent_end.send(i);
    ASSERT_EQ(parent_end.recv<std::string>(), std::to_string(i));
  }
  parent_end.send(-1);
  parent_end.send(Order{7, "tea", {1.5, 2.25}});
  EXPECT_EQ(parent_end.recv<double>(), 3.75);
  EXPECT_EQ(parent_end.recv_bytes(), std::string("\0raw\xff", 5));
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_THROW(parent_end.recv<int>(), mpx::EOFError);
}

// The child is killed with SIGKILL after sending: the parent reads what it sent, then
// EOFError; poll() and wait() report the end ready instead of hanging.
TEST_F(ConnectionTest, EndOfFileWhenThePeerIsKilled) {
  auto [parent_end, child_end] = mpx::Pipe();
  mpx::Process p(send_then_hang, child_end);
  p.start();
  child_end.close();
  EXPECT_EQ(parent_end.recv<std::string>(), "last words");
  EXPECT_FALSE(parent_end.poll(milliseconds(50)));
  p.kill();
  p.join();
  EXPECT_TRUE(parent_end.poll(seconds(10)));
  EXPECT_EQ(mpx::connection::wait({parent_end}, seconds(10)).size(), 1u);
  EXPECT_THROW(parent_end.recv<std::string>(), mpx::EOFError);
  EXPECT_THROW(parent_end.send(1), mpx::BrokenPipeError);
}

// As in Python: an end this process still holds keeps the other from seeing EOF.
TEST_F(ConnectionTest, NoEndOfFileWhileThisProcessHoldsTheOtherEnd) {
  auto [parent_end, child_end] = mpx::Pipe();
  mpx::Process p(exit_at_once, child_end);
  p.start();
  p.join();
  EXPECT_FALSE(parent_end.poll(milliseconds(100)));
  child_end.close();
  EXPECT_TRUE(parent_end.poll(milliseconds(0)));
  EXPECT_THROW(parent_end.recv<int>(), mpx::EOFError);
}

// Every task of a map sends through one end; once the map is done no worker holds a
// copy, so closing ours gives EOF after the last message.
TEST_F(ConnectionTest, PoolTasksSendThroughOneEnd) {
  auto [reader, writer] = mpx::Pipe(/*duplex=*/false);
  mpx::Pool pool(2);
  std::vector<std::tuple<mpx::Connection, int>> items;
  for (int i = 0; i < 200; ++i) items.emplace_back(writer, i);
  pool.starmap(send_back, items);
  writer.close();
  std::vector<int> got;
  for (;;) {
    try {
      got.push_back(reader.recv<int>());
    } catch (const mpx::EOFError&) {
      break;
    }
  }
  std::sort(got.begin(), got.end());
  ASSERT_EQ(got.size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(got[static_cast<std::size_t>(i)], i);
}

TEST_F(ConnectionTest, AnEndTravelsThroughAnotherConnection) {
  auto [control_parent, control_child] = mpx::Pipe();
  auto [data_parent, data_child] = mpx::Pipe();
  mpx::Process p(answer_on_received, control_child);
  p.start();
  control_child.close();
  control_parent.send(data_child);  // the child duplicates it from this process
  EXPECT_EQ(data_parent.recv<std::string>(), "via a passed end");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_F(ConnectionTest, WaitOverConnectionsAndSentinels) {
  auto [fast_parent, fast_child] = mpx::Pipe();
  auto [slow_parent, slow_child] = mpx::Pipe();
  mpx::Process fast(send_after, fast_child, 10);
  mpx::Process slow(send_after, slow_child, 60000);
  fast.start();
  slow.start();
  fast_child.close();
  slow_child.close();
  auto ready = mpx::connection::wait({fast_parent, slow_parent}, seconds(30));
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_TRUE(ready[0].is_connection() && ready[0].connection() == fast_parent);
  EXPECT_EQ(fast_parent.recv<int>(), 10);
  EXPECT_TRUE(mpx::connection::wait({slow_parent}, milliseconds(20)).empty());
  // A sentinel among connections: the slow child's end of life. (quiet's other end is
  // held here, so it never becomes ready.)
  auto [quiet, quiet_other] = mpx::Pipe();
  slow.kill();
  auto any = mpx::connection::wait({quiet, slow.sentinel()}, seconds(30));
  ASSERT_EQ(any.size(), 1u);
  EXPECT_FALSE(any[0].is_connection());
  EXPECT_EQ(any[0].fd(), slow.sentinel());
  fast.join();
  slow.join();
}

// close() from another thread returns while a recv() or poll() waits on the end (the
// peer silent), and the waiting call then fails as on a closed end.
TEST_F(ConnectionTest, CloseFromAnotherThreadEndsAWaitingRecv) {
  for (const bool use_poll : {false, true}) {
    SCOPED_TRACE(use_poll ? "poll(forever)" : "recv");
    auto [a, b] = mpx::Pipe();
    std::atomic<bool> entered{false};
    std::string error;
    std::thread reader([&, a = a]() mutable {
      entered = true;
      try {
        if (use_poll) {
          a.poll(std::chrono::milliseconds::max());
        } else {
          a.recv<int>();
        }
        error = "returned";
      } catch (const mpx::Error& e) {
        error = e.what();
      }
    });
    ASSERT_TRUE(mpx::testing::wait_until([&] { return entered.load(); }, std::chrono::seconds(30)));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // into its wait, most likely
    std::atomic<bool> closed{false};
    std::thread closer([&, a = a]() mutable {
      a.close();
      closed = true;
    });
    const bool returned = mpx::testing::wait_until([&] { return closed.load(); }, std::chrono::seconds(30));
    if (!returned) b.send(1);  // lets the old code's reader (and so the closer) go
    closer.join();
    reader.join();
    EXPECT_TRUE(returned) << "close() waited for the reader";
    EXPECT_NE(error.find("the connection is closed"), std::string::npos) << error;
  }
}

TEST_F(ConnectionTest, MisuseIsReported) {
  auto [r, w] = mpx::Pipe(false);
  EXPECT_TRUE(r.readable());
  EXPECT_FALSE(r.writable());
  EXPECT_THROW(r.send(1), mpx::Error);
  EXPECT_THROW(w.recv<int>(), mpx::Error);
  w.send(std::string("not an int"));
  EXPECT_THROW(r.recv<int>(), mpx::DecodeError);
  w.send_bytes(std::string(100, 'x'));
  try {
    r.recv_bytes(10);
    FAIL() << "expected mpx::Error";
  } catch (const mpx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("longer than maxlength 10"), std::string::npos) << e.what();
  }
  EXPECT_THROW(r.recv_bytes(), mpx::Error);  // no longer readable
  w.close();
  EXPECT_TRUE(w.closed());
  EXPECT_EQ(w.fileno(), -1);
  EXPECT_THROW(w.send(1), mpx::Error);
  EXPECT_THROW(mpx::Process(exit_at_once, w), mpx::Error);  // a closed end cannot be passed
}

}  // namespace
