// Unit tests for the transport layer: a real ROUTER and DEALER pair inside this process
// over an abstract ipc:// endpoint. Waiting is done by polling the socket (with a
// generous upper bound), never by sleeping.
#include "framework/transport/transport.h"

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <tuple>

#include <gtest/gtest.h>
#include <msgpack.hpp>

namespace mpx {
namespace transport {
namespace {

using wire::Header;
using wire::Type;

constexpr char kDealerId[] = "W4242";

// Waits until socket is readable (up to 10 s), then receives one message.
RecvStatus wait_receive(zmq::socket_t& socket, bool routed, Incoming& in, std::string* why) {
  zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
  zmq::poll(&item, 1, std::chrono::milliseconds(10000));
  return receive(socket, routed, in, why);
}

std::string payload_of(const Incoming& in) {
  return std::string(in.payload.data<char>(), in.payload.size());
}

Header sample(Type type, std::string_view name = "square") {
  Header h;
  h.type = type;
  h.call_id = 7;
  h.start = 100;
  h.count = 25;
  h.pid = 4242;
  h.flags = wire::kFlagHasErrors;
  h.name = name;
  return h;
}

void expect_header(const Header& got, const Header& want) {
  EXPECT_EQ(got.type, want.type);
  EXPECT_EQ(got.call_id, want.call_id);
  EXPECT_EQ(got.start, want.start);
  EXPECT_EQ(got.count, want.count);
  EXPECT_EQ(got.pid, want.pid);
  EXPECT_EQ(got.flags, want.flags);
  EXPECT_EQ(got.name, want.name);
}

class TransportTest : public ::testing::Test {
 protected:
  TransportTest()
      : endpoint_(make_endpoint("t")),
        router_(make_socket(zmq::socket_type::router)),
        dealer_(make_socket(zmq::socket_type::dealer, kDealerId)) {
    router_.bind(endpoint_);
    dealer_.connect(endpoint_);
  }

  // The ROUTER learns the dealer's routing id from its first message; after this the
  // router can address the dealer.
  void handshake() {
    send(dealer_, sample(Type::kReady, "PoolWorker-1"), std::string_view("hi"));
    Incoming in;
    std::string why;
    ASSERT_EQ(wait_receive(router_, true, in, &why), RecvStatus::kMessage) << why;
    ASSERT_EQ(in.sender(), kDealerId);
  }

  // Sends a good message dealer -> router and expects the router to receive it (after
  // whatever bad messages were sent before it).
  void expect_next_good(Incoming& in) {
    std::string why;
    RecvStatus st = wait_receive(router_, true, in, &why);
    ASSERT_EQ(st, RecvStatus::kMessage) << why;
    EXPECT_EQ(in.sender(), kDealerId);
    EXPECT_EQ(in.header.type, Type::kPong);
    EXPECT_EQ(payload_of(in), "good");
  }

  std::string endpoint_;
  zmq::socket_t router_;
  zmq::socket_t dealer_;
};

TEST(EndpointTest, EndpointsAreAbstractIpcAndUnique) {
  const std::string a = make_endpoint("t");
  const std::string b = make_endpoint("t");
  EXPECT_EQ(a.rfind("ipc://@", 0), 0u) << a;
  EXPECT_NE(a, b);
  EXPECT_EQ(a.substr(a.size() - 2), "-t");
}

TEST_F(TransportTest, ReceiveReturnsNothingWhenEmpty) {
  Incoming in;
  std::string why;
  EXPECT_EQ(receive(router_, true, in, &why), RecvStatus::kNothing);
  EXPECT_EQ(receive(dealer_, false, in, &why), RecvStatus::kNothing);
}

TEST_F(TransportTest, DealerToRouterCarriesHeaderPayloadAndRoutingId) {
  const Header h = sample(Type::kSubmit);
  send(dealer_, h, std::string_view("payload bytes"));
  Incoming in;
  std::string why;
  ASSERT_EQ(wait_receive(router_, true, in, &why), RecvStatus::kMessage) << why;
  EXPECT_EQ(in.sender(), kDealerId);
  expect_header(in.header, h);
  EXPECT_EQ(payload_of(in), "payload bytes");
  // The decoded name views into the received header frame.
  const char* frame = in.header_frame.data<char>();
  EXPECT_GE(in.header.name.data(), frame);
  EXPECT_LE(in.header.name.data() + in.header.name.size(), frame + in.header_frame.size());
  EXPECT_EQ(receive(router_, true, in, &why), RecvStatus::kNothing);
}

TEST_F(TransportTest, RouterToDealerBothSendForms) {
  handshake();
  const Header h = sample(Type::kTask, "multiply");
  send_to(router_, kDealerId, h, std::string_view("abc"));
  msgpack::sbuffer buf;
  msgpack::pack(buf, std::make_tuple(1, 2, 3));
  const std::string packed(buf.data(), buf.size());
  send_to(router_, kDealerId, sample(Type::kConfig, "init"), adopt(std::move(buf)));

  Incoming in;
  std::string why;
  ASSERT_EQ(wait_receive(dealer_, false, in, &why), RecvStatus::kMessage) << why;
  expect_header(in.header, h);
  EXPECT_EQ(payload_of(in), "abc");
  ASSERT_EQ(wait_receive(dealer_, false, in, &why), RecvStatus::kMessage) << why;
  expect_header(in.header, sample(Type::kConfig, "init"));
  EXPECT_EQ(payload_of(in), packed);
}

TEST_F(TransportTest, EmptyPayloadAndMessagePayloadSend) {
  send(dealer_, sample(Type::kPong, ""), zmq::message_t());
  Incoming in;
  std::string why;
  ASSERT_EQ(wait_receive(router_, true, in, &why), RecvStatus::kMessage) << why;
  EXPECT_EQ(in.header.type, Type::kPong);
  EXPECT_EQ(in.header.name, "");
  EXPECT_EQ(in.payload.size(), 0u);
}

TEST_F(TransportTest, ForwardToRewritesOnlyTheTypeByte) {
  handshake();
  const Header submit = sample(Type::kSubmit);
  send(dealer_, submit, std::string_view("chunk"));
  Incoming in;
  std::string why;
  ASSERT_EQ(wait_receive(router_, true, in, &why), RecvStatus::kMessage) << why;
  set_type(in.header_frame, Type::kTask);
  forward_to(router_, kDealerId, std::move(in.header_frame), std::move(in.payload));

  Incoming out;
  ASSERT_EQ(wait_receive(dealer_, false, out, &why), RecvStatus::kMessage) << why;
  Header want = submit;
  want.type = Type::kTask;
  expect_header(out.header, want);
  EXPECT_EQ(payload_of(out), "chunk");
}

TEST(AdoptTest, MovesTheBufferWithoutCopying) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, std::string(1000, 'x'));
  const char* data = buf.data();
  const std::size_t size = buf.size();
  zmq::message_t msg = adopt(std::move(buf));
  EXPECT_EQ(msg.data<char>(), data);
  EXPECT_EQ(msg.size(), size);
  EXPECT_EQ(buf.data(), nullptr);  // ownership left the buffer
  EXPECT_EQ(buf.size(), 0u);
}

TEST(AdoptTest, SmallBufferIsNotCopiedEither) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, 1);  // smaller than ZeroMQ's inline message size
  const char* data = buf.data();
  zmq::message_t msg = adopt(std::move(buf));
  EXPECT_EQ(msg.data<char>(), data);
  EXPECT_EQ(msg.size(), 1u);
}

TEST(AdoptTest, ReleasedBufferGivesAnEmptyMessage) {
  msgpack::sbuffer buf;
  std::free(buf.release());
  zmq::message_t msg = adopt(std::move(buf));
  EXPECT_EQ(msg.size(), 0u);
}

TEST_F(TransportTest, AdoptedPayloadArrivesIntact) {
  handshake();
  msgpack::sbuffer buf;
  msgpack::pack(buf, std::string(5000, 'p'));
  const std::string expected(buf.data(), buf.size());
  send_to(router_, kDealerId, sample(Type::kResult), adopt(std::move(buf)));
  Incoming in;
  std::string why;
  ASSERT_EQ(wait_receive(dealer_, false, in, &why), RecvStatus::kMessage) << why;
  EXPECT_EQ(payload_of(in), expected);
}

TEST_F(TransportTest, OneFrameMessageIsMalformedAndSocketStaysUsable) {
  const std::string header = wire::encode(sample(Type::kSubmit));
  dealer_.send(zmq::buffer(header), zmq::send_flags::none);  // header, no payload
  send(dealer_, sample(Type::kPong), std::string_view("good"));

  Incoming in;
  std::string why;
  ASSERT_EQ(wait_receive(router_, true, in, &why), RecvStatus::kMalformed);
  EXPECT_NE(why.find("no payload frame"), std::string::npos) << why;
  expect_next_good(in);
}

TEST_F(TransportTest, ThreeFrameMessageIsMalformedAndSocketStaysUsable) {
  const std::string header = wire::encode(sample(Type::kSubmit));
  dealer_.send(zmq::buffer(header), zmq::send_flags::sndmore);
  dealer_.send(zmq::str_buffer("payload"), zmq::send_flags::sndmore);
  dealer_.send(zmq::str_buffer("extra"), zmq::send_flags::none);
  // More than one extra frame: every one must be drained.
  dealer_.send(zmq::buffer(header), zmq::send_flags::sndmore);
  for (int i = 0; i < 4; ++i) dealer_.send(zmq::str_buffer("x"), zmq::send_flags::sndmore);
  dealer_.send(zmq::str_buffer("last"), zmq::send_flags::none);
  send(dealer_, sample(Type::kPong), std::string_view("good"));

  Incoming in;
  std::string why;
  ASSERT_EQ(wait_receive(router_, true, in, &why), RecvStatus::kMalformed);
  EXPECT_NE(why.find("more than two frames"), std::string::npos) << why;
  ASSERT_EQ(wait_receive(router_, true, in, &why), RecvStatus::kMalformed);
  expect_next_good(in);
}

TEST_F(TransportTest, GarbageHeaderIsMalformedAndSocketStaysUsable) {
  dealer_.send(zmq::str_buffer("\xc1 garbage"), zmq::send_flags::sndmore);
  dealer_.send(zmq::str_buffer("payload"), zmq::send_flags::none);
  // A well-formed msgpack header of the wrong version.
  std::string bad_version = wire::encode(sample(Type::kSubmit));
  bad_version[2] = 99;
  dealer_.send(zmq::buffer(bad_version), zmq::send_flags::sndmore);
  dealer_.send(zmq::str_buffer("payload"), zmq::send_flags::none);
  send(dealer_, sample(Type::kPong), std::string_view("good"));

  Incoming in;
  std::string why;
  ASSERT_EQ(wait_receive(router_, true, in, &why), RecvStatus::kMalformed);
  EXPECT_FALSE(why.empty());
  why.clear();
  ASSERT_EQ(wait_receive(router_, true, in, &why), RecvStatus::kMalformed);
  EXPECT_NE(why.find("version"), std::string::npos) << why;
  expect_next_good(in);
}

TEST_F(TransportTest, DealerSideMalformedMessagesToo) {
  handshake();
  const std::string header = wire::encode(sample(Type::kTask));
  // Router -> dealer: [id][header] only, then [id][header][a][b], then a good one.
  router_.send(zmq::buffer(std::string(kDealerId)), zmq::send_flags::sndmore);
  router_.send(zmq::buffer(header), zmq::send_flags::none);
  router_.send(zmq::buffer(std::string(kDealerId)), zmq::send_flags::sndmore);
  router_.send(zmq::buffer(header), zmq::send_flags::sndmore);
  router_.send(zmq::str_buffer("a"), zmq::send_flags::sndmore);
  router_.send(zmq::str_buffer("b"), zmq::send_flags::none);
  send_to(router_, kDealerId, sample(Type::kPing), std::string_view("good"));

  Incoming in;
  std::string why;
  ASSERT_EQ(wait_receive(dealer_, false, in, &why), RecvStatus::kMalformed);
  ASSERT_EQ(wait_receive(dealer_, false, in, &why), RecvStatus::kMalformed);
  ASSERT_EQ(wait_receive(dealer_, false, in, &why), RecvStatus::kMessage) << why;
  EXPECT_EQ(in.header.type, Type::kPing);
  EXPECT_EQ(payload_of(in), "good");
}

TEST(SetTypeTest, RewritesTheTypeAndNothingElse) {
  const Header h = sample(Type::kSubmit);
  const std::string bytes = wire::encode(h);
  for (int t = 1; t <= static_cast<int>(Type::kLastType); ++t) {
    zmq::message_t frame(bytes.data(), bytes.size());
    set_type(frame, static_cast<Type>(t));
    std::string why;
    const auto back = wire::decode(frame.data<char>(), frame.size(), &why);
    ASSERT_TRUE(back.has_value()) << why;
    Header want = h;
    want.type = static_cast<Type>(t);
    expect_header(*back, want);
  }
}

TEST_F(TransportTest, ForeignHeaderEncodingIsReencodedSoSetTypeWorks) {
  handshake();
  // msgpack-c's compact form: fixints, no 0xcc markers, so the type is not at offset 4.
  msgpack::sbuffer buf;
  msgpack::pack(buf, std::make_tuple(1, static_cast<int>(Type::kSubmit), 9, 3, 2, 77, 0,
                                     std::string("foreign_task")));
  const std::string foreign(buf.data(), buf.size());
  ASSERT_NE(static_cast<unsigned char>(foreign[1]), 0xcc);
  dealer_.send(zmq::buffer(foreign), zmq::send_flags::sndmore);
  dealer_.send(zmq::str_buffer("args"), zmq::send_flags::none);

  Incoming in;
  std::string why;
  ASSERT_EQ(wait_receive(router_, true, in, &why), RecvStatus::kMessage) << why;
  Header want;
  want.type = Type::kSubmit;
  want.call_id = 9;
  want.start = 3;
  want.count = 2;
  want.pid = 77;
  want.flags = 0;
  want.name = "foreign_task";
  expect_header(in.header, want);
  // Re-encoded into our fixed layout; the header still views into the (new) frame.
  EXPECT_EQ(std::string(in.header_frame.data<char>(), in.header_frame.size()), wire::encode(want));
  const char* frame = in.header_frame.data<char>();
  EXPECT_GE(in.header.name.data(), frame);
  EXPECT_LE(in.header.name.data() + in.header.name.size(), frame + in.header_frame.size());

  set_type(in.header_frame, Type::kTask);
  auto rewritten = wire::decode(in.header_frame.data<char>(), in.header_frame.size(), &why);
  ASSERT_TRUE(rewritten.has_value()) << why;
  want.type = Type::kTask;
  expect_header(*rewritten, want);

  forward_to(router_, kDealerId, std::move(in.header_frame), std::move(in.payload));
  Incoming out;
  ASSERT_EQ(wait_receive(dealer_, false, out, &why), RecvStatus::kMessage) << why;
  expect_header(out.header, want);
  EXPECT_EQ(payload_of(out), "args");
}

TEST_F(TransportTest, OwnLayoutWithCompactLaterFieldsStillRewritesCorrectly) {
  // Version and type in the 0xcc form but call id etc. compact: offset 4 is the type.
  const unsigned char raw[] = {0x98, 0xcc, 0x01, 0xcc, 0x02, 0x05, 0x00, 0x01,
                               0x00, 0x00, 0xa1, 'f'};
  dealer_.send(zmq::buffer(raw, sizeof raw), zmq::send_flags::sndmore);
  dealer_.send(zmq::str_buffer("p"), zmq::send_flags::none);
  Incoming in;
  std::string why;
  ASSERT_EQ(wait_receive(router_, true, in, &why), RecvStatus::kMessage) << why;
  EXPECT_EQ(in.header.type, Type::kSubmit);
  EXPECT_EQ(in.header.call_id, 5u);
  set_type(in.header_frame, Type::kTask);
  auto back = wire::decode(in.header_frame.data<char>(), in.header_frame.size(), &why);
  ASSERT_TRUE(back.has_value()) << why;
  EXPECT_EQ(back->type, Type::kTask);
  EXPECT_EQ(back->call_id, 5u);
  EXPECT_EQ(back->count, 1u);
  EXPECT_EQ(back->name, "f");
}

}  // namespace
}  // namespace transport
}  // namespace mpx
