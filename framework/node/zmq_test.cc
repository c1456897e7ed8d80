// node::Link over real ZeroMQ sockets (inproc): a message whose last part is large
// crosses in pieces that the receiving Link puts back together, each piece seen as
// heard on the way, per peer.
#include "framework/node/zmq.h"

#include <zmq.h>

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/node/protocol.h"
#include "framework/transport/loop.h"

namespace mpx {
namespace node {
namespace {

std::string text(const transport::Message& m) { return std::string(m.data<char>(), m.size()); }

std::string pattern(std::size_t n, char seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i % 251);
  return s;
}

struct Received {
  std::vector<std::vector<std::string>> messages;  // whole ones, routing id first on a ROUTER
  int pieces = 0;
};

// Runs links until pred(), or fails after 10 s.
template <class Pred>
void service_until(std::vector<Link*> links, Pred pred) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!pred()) {
    ASSERT_LT(std::chrono::steady_clock::now(), give_up) << "nothing arrived";
    for (Link* l : links) l->service();
  }
}

TEST(LinkTest, LargeLastPartsCrossInPiecesAndArriveWhole) {
  Context context;
  transport::Loop loop;
  Socket router(context, Socket::kRouter);
  router.bind("inproc://link-test");
  Socket a(context, Socket::kDealer), b(context, Socket::kDealer);
  a.set(ZMQ_ROUTING_ID, std::string_view("a"));
  b.set(ZMQ_ROUTING_ID, std::string_view("b"));
  a.connect("inproc://link-test");
  b.connect("inproc://link-test");
  Received at_router, at_a;
  auto record = [](Received& into, const std::vector<transport::Message>& parts, std::size_t head) {
    if (parts.size() == head + 2 && text(parts[head]) == std::string(1, static_cast<char>(Kind::kPiece))) {
      ++into.pieces;
      return;
    }
    std::vector<std::string> m;
    for (const auto& p : parts) m.push_back(text(p));
    into.messages.push_back(m);
  };
  Link router_link(router, loop, [&](auto& parts) { record(at_router, parts, 1); });
  Link a_link(a, loop, [&](auto& parts) { record(at_a, parts, 0); });
  Link b_link(b, loop, [&](auto& parts) { record(at_router, parts, 0); });

  const std::size_t piece = Link::kPieceBytes;
  const std::string m = "M";
  // From both dealers at once, so that their pieces interleave at the router.
  const std::string big_a = pattern(3 * piece + 7, 'a'), big_b = pattern(2 * piece, 'b');
  const std::string exact = pattern(piece, 'e');
  ASSERT_TRUE(a_link.send({part(m), part("id-a"), part(big_a)}));
  ASSERT_TRUE(b_link.send({part(m), part("id-b"), part(big_b)}));
  ASSERT_TRUE(a_link.send({part(m), part("exact"), part(exact)}));
  service_until({&router_link, &a_link, &b_link}, [&] { return at_router.messages.size() == 3; });
  EXPECT_EQ(at_router.pieces, 3 + 1) << "a's 3 pieces and b's 1; a part of kPieceBytes goes whole";
  std::vector<std::string> want_a{"a", m, "id-a", big_a}, want_b{"b", m, "id-b", big_b};
  std::vector<std::string> want_exact{"a", m, "exact", exact};
  int found = 0;
  for (const auto& got : at_router.messages) found += got == want_a || got == want_b || got == want_exact;
  EXPECT_EQ(found, 3);

  // And from the router to a dealer, behind its routing id.
  const std::string big = pattern(piece * 4 + 1, 'r');
  ASSERT_TRUE(router_link.send({part("a"), part(m), part(big)}));
  service_until({&router_link, &a_link}, [&] { return at_a.messages.size() == 1; });
  EXPECT_EQ(at_a.pieces, 4);
  EXPECT_EQ(at_a.messages[0], (std::vector<std::string>{m, big}));
}

}  // namespace
}  // namespace node
}  // namespace mpx
