// Unit tests for the typed messages: every struct survives its header (through the
// real encoder and validating decoder), the checks a chunk must pass, and the payloads
// the framework decodes itself (LostChunks, WorkerConfig).
#include "framework/wire/messages.h"

#include <cstdint>
#include <deque>
#include <string>
#include <tuple>

#include <gtest/gtest.h>
#include <msgpack.hpp>

#include "mpx/errors.h"

namespace mpx {
namespace wire {
namespace {

// The header as it travels: encoded, then decoded with validation.
template <class M>
M through_the_wire(const M& message) {
  // A decoded message's names are views into the bytes it was read from: they must
  // outlive it (the test's whole run).
  static std::deque<std::string> read_from;
  const std::string& bytes = read_from.emplace_back(encode(message.header()));
  std::string why;
  const auto h = decode(bytes.data(), bytes.size(), &why);
  EXPECT_TRUE(h.has_value()) << why;
  EXPECT_EQ(h->type, M::kType);
  return M::from(*h);
}

TEST(Messages, EveryStructSurvivesItsHeader) {
  const auto submit = through_the_wire(Submit{7, 100, 25, true, "square"});
  EXPECT_EQ(std::make_tuple(submit.call_id, submit.start, submit.count, submit.pure, submit.task),
            std::make_tuple(7ull, 100ull, 25u, true, std::string_view("square")));
  const auto task = through_the_wire(Task{8, 0, 1, false, "cube"});
  EXPECT_EQ(std::make_tuple(task.call_id, task.count, task.pure, task.task),
            std::make_tuple(8ull, 1u, false, std::string_view("cube")));
  const auto result = through_the_wire(Result{9, 50, 10, 4242, true});
  EXPECT_EQ(std::make_tuple(result.call_id, result.start, result.count, result.pid, result.has_errors),
            std::make_tuple(9ull, 50ull, 10u, 4242, true));
  const auto lost = through_the_wire(Lost{10, 77, true});
  EXPECT_EQ(std::make_tuple(lost.call_id, lost.pid, lost.timed_out), std::make_tuple(10ull, 77, true));
  EXPECT_EQ(through_the_wire(Cancel{11}).call_id, 11u);
  EXPECT_EQ(through_the_wire(PoolError{12}).call_id, 12u);
  const auto welcome = through_the_wire(Welcome{4, 555});
  EXPECT_EQ(std::make_tuple(welcome.workers, welcome.router_pid), std::make_tuple(4u, 555));
  const auto ready = through_the_wire(Ready{321, "PoolWorker-3"});
  EXPECT_EQ(std::make_tuple(ready.pid, ready.name), std::make_tuple(321, std::string_view("PoolWorker-3")));
  EXPECT_EQ(through_the_wire(Hello{1}).pid, 1);
  EXPECT_EQ(through_the_wire(Pong{2}).pid, 2);
  EXPECT_EQ(through_the_wire(Configured{3}).pid, 3);
  EXPECT_EQ(through_the_wire(InitFailed{4}).pid, 4);
  EXPECT_EQ(through_the_wire(Data{5}).pid, 5);
  const auto call = through_the_wire(Call{13, 2, 5, 999, true});
  EXPECT_EQ(std::make_tuple(call.call_id, call.incarnation, call.method, call.pid, call.tell),
            std::make_tuple(13ull, 2u, 5u, 999, true));
  const auto reply = through_the_wire(Reply{14, 888, true});
  EXPECT_EQ(std::make_tuple(reply.call_id, reply.pid, reply.failed), std::make_tuple(14ull, 888, true));
  through_the_wire(Shutdown());
  through_the_wire(Terminate());
  through_the_wire(Stop());
  through_the_wire(Ping());
  through_the_wire(Config());
}

TEST(Messages, AChunkNamesAtLeastOneItemAndNoMoreThanItsBytes) {
  std::string why;
  EXPECT_TRUE((Submit{1, 0, 3, false, "f"}.valid("abc", &why)));
  EXPECT_FALSE((Submit{43, 0, 0, false, "f"}.valid("0123456789", &why)));
  EXPECT_EQ(why, "an empty SUBMIT of call 43");
  EXPECT_FALSE((Submit{1, 0, 262144, false, "f"}.valid("0123456789ab", &why)));
  EXPECT_EQ(why, "a SUBMIT of call 1 announcing 262144 items in 12 bytes");
  EXPECT_FALSE((Task{2, 0, 5, false, "f"}.valid("abcd", &why)));
  EXPECT_NE(why.find("TASK"), std::string::npos) << why;
  // A chunk of numbers in an argument buffer: its items are not in the payload.
  detail::Buffer ref;
  detail::pack_raw_chunk_ref(ref, detail::SegmentRef{detail::SegmentKind::kArgumentBuffer, 1, 3, 5, 0, 64},
                             detail::raw_code<int>(), 0, 0, 0);
  EXPECT_TRUE((Submit{1, 0, 262144, false, "f"}.valid(std::string_view(ref.data(), ref.size()), &why))) << why;
}

TEST(Messages, LostChunksCarryTheOneErrorFormat) {
  LostChunks lost;
  lost.error = {"mpx::TimeoutError", "ran longer than 5 ms per task", 0, 4242, {}};
  lost.ranges = {{0, 4}, {8, 2}};
  const LostChunks back = decode_lost(encode(lost));
  EXPECT_EQ(back.error.type, "mpx::TimeoutError");
  EXPECT_EQ(back.error.message, lost.error.message);
  EXPECT_EQ(back.error.pid, 4242);
  EXPECT_EQ(back.ranges, lost.ranges);
  // The old (reason, ranges) pair, garbage, trailing bytes: refused.
  msgpack::sbuffer old;
  msgpack::pack(old, std::make_pair(std::string("killed"), Ranges{{0, 1}}));
  EXPECT_THROW(decode_lost(std::string_view(old.data(), old.size())), DecodeError);
  EXPECT_THROW(decode_lost("\xc1"), DecodeError);
  EXPECT_THROW(decode_lost(encode(lost) + "x"), DecodeError);
}

TEST(Messages, WorkerConfigIsAMapOfNamedFields) {
  WorkerConfig c;
  c.initializer = "connect_db";
  c.initializer_args = std::string("\x91\x01", 2);
  c.max_message_bytes = 4096;
  c.memory_limit = std::uint64_t{1} << 30;
  const WorkerConfig back = decode_worker_config(encode(c));
  EXPECT_EQ(back.initializer, c.initializer);
  EXPECT_EQ(back.initializer_args, c.initializer_args);
  EXPECT_EQ(back.max_message_bytes, 4096u);
  EXPECT_EQ(back.memory_limit, c.memory_limit);
  // An empty map: every default.
  const WorkerConfig defaults = decode_worker_config("\x80");
  EXPECT_EQ(defaults.initializer, "");
  EXPECT_EQ(defaults.max_message_bytes, WorkerConfig().max_message_bytes);
  EXPECT_THROW(decode_worker_config("\x90"), DecodeError) << "an array is no map";
  EXPECT_THROW(decode_worker_config(""), DecodeError);
}

}  // namespace
}  // namespace wire
}  // namespace mpx
