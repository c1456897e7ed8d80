// Unit tests for the transport: messages, framing over real unix stream sockets
// (socketpairs and abstract listeners in this process), identities, malformed input,
// queued writes against a full socket, and signals during blocking calls.
#include "framework/transport/transport.h"

#include "framework/transport/loop.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <msgpack.hpp>

#include "mpx/errors.h"

namespace mpx {
namespace transport {
namespace {

using std::chrono::milliseconds;
using wire::Header;
using wire::Type;

struct Pair {
  Pair() { EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd), 0); }
  ~Pair() {
    for (int f : fd) {
      if (f >= 0) ::close(f);
    }
  }
  int fd[2] = {-1, -1};
};

Header make(Type type, std::uint64_t call_id = 0, std::string_view name = {}) {
  Header h;
  h.type = type;
  h.call_id = call_id;
  h.name = name;
  return h;
}

// Writes one frame on a blocking socket (header bytes as given: they may be foreign or
// malformed); false once the peer is gone.
bool write_frame(int fd, std::string_view header_bytes, std::string_view payload) {
  std::string bytes;
  append_frame(bytes, header_bytes, payload);
  for (std::size_t off = 0; off < bytes.size();) {
    const ssize_t n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}
bool write_frame(int fd, const Header& h, std::string_view payload) {
  return write_frame(fd, wire::encode(h), payload);
}

// Reads from fd until one frame is there (waiting in poll), or the peer closes.
Reader::Next read_one(Reader& r, int fd, Incoming& in, std::string* why) {
  for (;;) {
    const Reader::Next got = r.next(in, why);
    if (got != Reader::Next::kNone) return got;
    pollfd p{fd, POLLIN, 0};
    poll(&p, 1, milliseconds(5000));
    if (r.fill(fd) == Reader::Fill::kClosed) return Reader::Next::kNone;
  }
}

TEST(Message, CopiesShareTheirBytes) {
  Message a("hello", 5);
  Message b;
  b = a;
  EXPECT_EQ(b.data(), a.data()) << "a copy shares, it does not copy bytes";
  EXPECT_EQ(b.view(), "hello");
  b.data<char>()[0] = 'j';
  EXPECT_EQ(a.view(), "jello");
  EXPECT_TRUE(Message().empty());
  EXPECT_EQ(Message(nullptr, 0).size(), 0u);
}

TEST(Message, AdoptsABufferWithoutCopying) {
  detail::Buffer buf;
  msgpack::pack(buf, std::vector<int>{1, 2, 3});
  const char* storage = buf.data();
  const std::size_t size = buf.size();
  Message m = Message::adopt(std::move(buf));
  EXPECT_EQ(m.data<char>(), storage);
  EXPECT_EQ(m.size(), size);
  EXPECT_EQ(Message::adopt(detail::Buffer()).size(), 0u);
}

TEST(Framing, FramesOfEverySizeRoundTrip) {
  Pair p;
  std::vector<std::string> payloads = {"", "x", std::string(65536, 'a'), std::string(1 << 20, 'b'),
                                       std::string((4 << 20) + 3, 'c')};
  std::thread writer([&] {
    for (std::size_t i = 0; i < payloads.size(); ++i) {
      ASSERT_TRUE(write_frame(p.fd[0], make(Type::kResult, i, "square"), payloads[i]));
    }
  });
  Reader r;
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    Incoming in;
    std::string why;
    ASSERT_EQ(read_one(r, p.fd[1], in, &why), Reader::Next::kFrame) << why;
    EXPECT_EQ(in.header.type, Type::kResult);
    EXPECT_EQ(in.header.call_id, i);
    EXPECT_EQ(in.header.name, "square");
    EXPECT_EQ(in.payload.view(), payloads[i]) << i;
  }
  writer.join();
}

TEST(Framing, AFrameWrittenAByteAtATimeIsWhole) {
  Pair p;
  std::string bytes;
  append_frame(bytes, make(Type::kSubmit, 9, "f"), "payload");
  Reader r;
  Incoming in;
  std::string why;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    ASSERT_EQ(r.next(in, &why), Reader::Next::kNone) << "complete after " << i << " bytes";
    ASSERT_EQ(::send(p.fd[0], bytes.data() + i, 1, 0), 1);
    r.fill(p.fd[1]);
  }
  ASSERT_EQ(r.next(in, &why), Reader::Next::kFrame) << why;
  EXPECT_EQ(in.header.call_id, 9u);
  EXPECT_EQ(in.payload.view(), "payload");
}

TEST(Connections, IdentitiesComeFirstAndOnlyThisUidIsAccepted) {
  const Endpoint endpoint = Endpoint::unique("identity-test");
  Listener listener = Listener::bind(endpoint);
  ASSERT_TRUE(listener) << std::strerror(errno);
  Connection client = Connection::dial(endpoint, "Rtoken42");
  ASSERT_TRUE(client) << std::strerror(errno);
  EXPECT_EQ(client.identity(), "Rtoken42");
  ASSERT_TRUE(client.send(make(Type::kHello), ""));
  pollfd lp{listener.fd(), POLLIN, 0};
  ASSERT_EQ(poll(&lp, 1, milliseconds(5000)), 1);
  Connection server;
  long uid = -1;
  ASSERT_EQ(listener.accept(&server, &uid), Listener::Accept::kAccepted);
  EXPECT_EQ(uid, static_cast<long>(getuid()));
  EXPECT_EQ(server.peer_uid(), static_cast<long>(getuid()));
  EXPECT_EQ(listener.accept(&server, &uid), Listener::Accept::kNone) << "nobody else waits";
  std::string why;
  bool bad = false;
  while (!server.read_identity(&bad, &why)) {
    ASSERT_FALSE(bad) << why;
    pollfd p{server.fd(), POLLIN, 0};
    poll(&p, 1, milliseconds(5000));
    server.fill();
  }
  EXPECT_EQ(server.identity(), "Rtoken42");
  Incoming in;
  ASSERT_EQ(read_one(server.reader(), server.fd(), in, &why), Reader::Next::kFrame) << why;
  EXPECT_EQ(in.header.type, Type::kHello);
  // An identity too long to announce, nobody listening, a scheme not served yet.
  EXPECT_FALSE(Connection::dial(endpoint, std::string(256, 'x')));
  EXPECT_EQ(errno, ENAMETOOLONG);
  EXPECT_FALSE(Connection::dial(Endpoint::unique("nobody-listens")));
  EXPECT_EQ(errno, ECONNREFUSED);
  EXPECT_FALSE(Connection::dial(Endpoint::from("tcp://127.0.0.1:5555")));
  EXPECT_EQ(errno, EPROTONOSUPPORT);
  EXPECT_FALSE(Listener::bind(Endpoint::from("ipc:///tmp/mpx-test")));
  EXPECT_EQ(errno, EPROTONOSUPPORT);
}

TEST(Connections, MoveKeepsTheSocketAndWhatWasRead) {
  Pair p;
  Connection a(p.fd[0]);
  p.fd[0] = -1;
  Connection b(p.fd[1]);
  p.fd[1] = -1;
  ASSERT_TRUE(a.send(make(Type::kPing, 1), "x"));
  ASSERT_TRUE(a.send(make(Type::kPing, 2), "y"));
  Incoming in;
  std::string why;
  ASSERT_EQ(read_one(b.reader(), b.fd(), in, &why), Reader::Next::kFrame) << why;
  EXPECT_EQ(in.header.call_id, 1u);
  Connection moved(std::move(b));
  EXPECT_FALSE(b);
  ASSERT_EQ(read_one(moved.reader(), moved.fd(), in, &why), Reader::Next::kFrame) << why;
  EXPECT_EQ(in.header.call_id, 2u);
  Connection assigned;
  assigned = std::move(moved);
  EXPECT_FALSE(moved);
  a.close();
  pollfd pf{assigned.fd(), POLLIN, 0};
  poll(&pf, 1, milliseconds(5000));
  EXPECT_EQ(assigned.fill(), Reader::Fill::kClosed);
}

TEST(Framing, AConnectionWithoutAnIdentityIsBad) {
  Pair p;
  ASSERT_EQ(::send(p.fd[0], "GET / HTTP/1.1\r\n", 16, 0), 16);
  Reader r;
  r.fill(p.fd[1]);
  std::string id, why;
  bool bad = false;
  EXPECT_FALSE(r.identity(&id, &bad, &why));
  EXPECT_TRUE(bad);
  EXPECT_EQ(why, "the connection did not start with an identity");
}

TEST(Framing, ABadHeaderIsSkippedAndTheStreamStaysInStep) {
  Pair p;
  ASSERT_TRUE(write_frame(p.fd[0], std::string_view("\xc1\xc1\xc1", 3), "junk"));
  ASSERT_TRUE(write_frame(p.fd[0], make(Type::kPing, 5), ""));
  Reader r;
  Incoming in;
  std::string why;
  ASSERT_EQ(read_one(r, p.fd[1], in, &why), Reader::Next::kBadFrame);
  EXPECT_EQ(why, "header is not a msgpack array");
  ASSERT_EQ(read_one(r, p.fd[1], in, &why), Reader::Next::kFrame) << why;
  EXPECT_EQ(in.header.type, Type::kPing);
  EXPECT_EQ(in.header.call_id, 5u);
}

TEST(Framing, LengthsOutOfRangeBreakTheStream) {
  struct Case {
    std::uint32_t header_length, payload_length;
    const char* why;
  };
  for (const Case& c : {Case{0, 0, "header length 0 out of range"},
                        Case{static_cast<std::uint32_t>(wire::kMaxHeaderSize) + 1, 0,
                             "header length 513 out of range"},
                        Case{10, 1001, "payload of 1001 bytes is over the limit of 1000"}}) {
    Pair p;
    char prefix[kFramePrefix];
    for (int i = 0; i < 4; ++i) {
      prefix[i] = static_cast<char>((c.header_length >> (8 * i)) & 0xff);
      prefix[4 + i] = static_cast<char>((c.payload_length >> (8 * i)) & 0xff);
    }
    ASSERT_EQ(::send(p.fd[0], prefix, sizeof prefix, 0), 8);
    Reader r(/*max_payload=*/1000);
    r.fill(p.fd[1]);
    Incoming in;
    std::string why;
    EXPECT_EQ(r.next(in, &why), Reader::Next::kBroken);
    EXPECT_EQ(why, c.why);
  }
}

// Memory follows the bytes that arrived, not the length a prefix announces; and the
// buffer of a large frame is given back once it is read.
TEST(Framing, AnAnnouncedLengthCostsNothingUntilItsBytesArrive) {
  Pair p;
  char prefix[kFramePrefix] = {20, 0, 0, 0, 0, 0, 0, 0x20};  // a 512 MiB payload
  ASSERT_EQ(::send(p.fd[0], prefix, sizeof prefix, 0), 8);
  Reader r;
  r.fill(p.fd[1]);
  Incoming in;
  std::string why;
  EXPECT_EQ(r.next(in, &why), Reader::Next::kNone);
  r.fill(p.fd[1]);
  EXPECT_LE(r.capacity(), std::size_t{64} << 10);

  Pair q;
  std::thread writer([&] { ASSERT_TRUE(write_frame(q.fd[0], make(Type::kResult), std::string(8 << 20, 'x'))); });
  Reader big;
  ASSERT_EQ(read_one(big, q.fd[1], in, &why), Reader::Next::kFrame) << why;
  writer.join();
  EXPECT_EQ(in.payload.size(), std::size_t{8} << 20);
  EXPECT_LE(big.capacity(), (std::size_t{8} << 20) + 64) << "no doubling past the frame";
  ASSERT_TRUE(write_frame(q.fd[0], make(Type::kPing), ""));
  ASSERT_EQ(read_one(big, q.fd[1], in, &why), Reader::Next::kFrame);
  EXPECT_LE(big.capacity(), std::size_t{64} << 10) << "the large frame's buffer was kept";
}

// The router forwards large frames without copying them: their payloads (and headers)
// are slices of the reader's buffer, which the reader then leaves to them.
TEST(Framing, LargePayloadsAreSlicesOfTheReadersBufferThatOutliveIt) {
  Pair p;
  const std::string first(Reader::kSliceFrom, 'a'), second(Reader::kSliceFrom + 1, 'b');
  ASSERT_TRUE(write_frame(p.fd[0], make(Type::kResult, 1), first));
  ASSERT_TRUE(write_frame(p.fd[0], make(Type::kResult, 2), second));
  ASSERT_TRUE(write_frame(p.fd[0], make(Type::kPing), "small"));
  auto r = std::make_unique<Reader>();
  Incoming a, b, c;
  std::string why;
  ASSERT_EQ(read_one(*r, p.fd[1], a, &why), Reader::Next::kFrame) << why;
  ASSERT_EQ(read_one(*r, p.fd[1], b, &why), Reader::Next::kFrame) << why;
  ASSERT_EQ(read_one(*r, p.fd[1], c, &why), Reader::Next::kFrame) << why;
  // One read took all three: the second frame's header follows the first payload in
  // the same buffer, which only slicing (no copy) shows.
  EXPECT_EQ(b.header_frame.data<char>(), a.payload.data<char>() + a.payload.size() + kFramePrefix);
  EXPECT_EQ(b.payload.data<char>(), b.header_frame.data<char>() + b.header_frame.size());
  EXPECT_EQ(b.header.call_id, 2u);
  EXPECT_EQ(c.payload.view(), "small") << "a small frame is copied";

  // A 16 KiB frame among many in a buffer grown large is copied: a slice would keep
  // the whole buffer alive for as long as it lives.
  {
    Pair q;
    for (int i = 0; i < 10; ++i) {  // all in the socket before the first read
      ASSERT_TRUE(write_frame(q.fd[0], make(Type::kResult, i), std::string(Reader::kSliceFrom, 'q')));
    }
    Reader burst;
    std::vector<Incoming> got(10);
    for (Incoming& one : got) ASSERT_EQ(read_one(burst, q.fd[1], one, &why), Reader::Next::kFrame) << why;
    ASSERT_GT(burst.capacity(), 4 * Reader::kSliceFrom) << "one read took them all";
    for (std::size_t i = 1; i < got.size(); ++i) {
      EXPECT_NE(got[i].header_frame.data<char>(),
                got[i - 1].payload.data<char>() + got[i - 1].payload.size() + kFramePrefix)
          << "frame " << i << " was sliced out of a buffer four times its size";
      EXPECT_EQ(got[i].payload.view(), std::string(Reader::kSliceFrom, 'q'));
    }
  }

  // The reader reads on into fresh memory while the slices live, then goes; they stay.
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(write_frame(p.fd[0], make(Type::kResult, 10 + i), std::string(5000 + i, 'z')));
    Incoming more;
    ASSERT_EQ(read_one(*r, p.fd[1], more, &why), Reader::Next::kFrame) << why;
    ASSERT_EQ(more.payload.view(), std::string(5000 + i, 'z'));
  }
  Reader moved(std::move(*r));
  r.reset();
  EXPECT_EQ(a.payload.view(), first);
  EXPECT_EQ(b.payload.view(), second);
  set_type(b.header_frame, Type::kTask);  // the router retypes frames in place
  EXPECT_EQ(wire::decode(b.header_frame.data<char>(), b.header_frame.size(), &why)->type, Type::kTask);
  EXPECT_EQ(a.payload.view(), first) << "a neighbour's bytes untouched";
  a = Incoming();
  EXPECT_EQ(b.payload.view(), second);

  // Once no slice is left, the buffer is the reader's again.
  b = Incoming();
  ASSERT_TRUE(write_frame(p.fd[0], make(Type::kPing), "after"));
  ASSERT_EQ(read_one(moved, p.fd[1], c, &why), Reader::Next::kFrame) << why;
  EXPECT_EQ(c.payload.view(), "after");
}

TEST(Framing, AForeignButValidHeaderIsReEncoded) {
  // Compact integers instead of the fixed layout set_type relies on.
  msgpack::sbuffer foreign;
  msgpack::pack(foreign, std::make_tuple(1, static_cast<int>(Type::kSubmit), 5, 0, 2, 0, 0, "square"));
  Pair p;
  ASSERT_TRUE(write_frame(p.fd[0], std::string_view(foreign.data(), foreign.size()), "ab"));
  Reader r;
  Incoming in;
  std::string why;
  ASSERT_EQ(read_one(r, p.fd[1], in, &why), Reader::Next::kFrame) << why;
  set_type(in.header_frame, Type::kTask);
  auto h = wire::decode(in.header_frame.data<char>(), in.header_frame.size(), &why);
  ASSERT_TRUE(h) << why;
  EXPECT_EQ(h->type, Type::kTask);
  EXPECT_EQ(h->call_id, 5u);
  EXPECT_EQ(h->count, 2u);
  EXPECT_EQ(h->name, "square");
}

TEST(Framing, TheReaderSaysWhenThePeerClosed) {
  Pair p;
  Reader r;
  EXPECT_EQ(r.fill(p.fd[1]), Reader::Fill::kNothing);
  ASSERT_TRUE(write_frame(p.fd[0], make(Type::kPong), ""));
  ::close(p.fd[0]);
  p.fd[0] = -1;
  EXPECT_EQ(r.fill(p.fd[1]), Reader::Fill::kData) << "what was written before the close is read";
  Incoming in;
  std::string why;
  EXPECT_EQ(r.next(in, &why), Reader::Next::kFrame);
  EXPECT_EQ(r.fill(p.fd[1]), Reader::Fill::kClosed);
  EXPECT_FALSE(write_frame(p.fd[1], make(Type::kPing), "")) << "writing to a closed peer fails";
}

// Flushes w into p.fd[0] as the socket takes it and reads frames from p.fd[1] until
// frames have come (fewer if the stream broke: the test then fails).
std::vector<Incoming> deliver(Writer& w, Pair& p, int frames, Reader* reader = nullptr) {
  Reader own;
  Reader& r = reader != nullptr ? *reader : own;
  std::vector<Incoming> got;
  while (got.size() < static_cast<std::size_t>(frames)) {
    Incoming in;
    std::string why;
    const auto next = r.next(in, &why);
    if (next == Reader::Next::kFrame) {
      got.push_back(std::move(in));
      continue;
    }
    if (next == Reader::Next::kBroken) {
      ADD_FAILURE() << why;
      break;
    }
    w.flush(p.fd[0]);
    pollfd fds{p.fd[1], POLLIN, 0};
    poll(&fds, 1, milliseconds(100));
    r.fill(p.fd[1]);
  }
  return got;
}

TEST(Writer, QueuesWhatAFullSocketDoesNotTakeAndDeliversItInOrder) {
  Pair p;
  int small = 4096;
  ASSERT_EQ(::setsockopt(p.fd[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  ::fcntl(p.fd[0], F_SETFL, O_NONBLOCK);
  Writer w;
  constexpr int kFrames = 40;
  for (int i = 0; i < kFrames; ++i) {
    w.push(make(Type::kResult, static_cast<std::uint64_t>(i)), Message(std::string(100000, 'a' + i % 26).data(), 100000));
  }
  EXPECT_EQ(w.flush(p.fd[0]), Writer::Status::kPending) << "4 MB cannot fit a 4 KB socket buffer";
  EXPECT_GT(w.pending_bytes(), 0u);
  const std::vector<Incoming> got = deliver(w, p, kFrames);
  ASSERT_EQ(got.size(), static_cast<std::size_t>(kFrames));
  for (int i = 0; i < kFrames; ++i) {
    const Incoming& in = got[static_cast<std::size_t>(i)];
    EXPECT_EQ(in.header.call_id, static_cast<std::uint64_t>(i));
    EXPECT_EQ(in.payload.size(), 100000u);
    EXPECT_EQ(in.payload.data<char>()[99999], static_cast<char>('a' + i % 26));
  }
  EXPECT_FALSE(w.pending());
  EXPECT_EQ(w.pending_bytes(), 0u);
  ::close(p.fd[1]);
  p.fd[1] = -1;
  w.push(make(Type::kPing), Message());
  EXPECT_EQ(w.flush(p.fd[0]), Writer::Status::kGone);
}

// A memfd holding text, standing for a result's object.
int memfd_with(const std::string& text) {
  const int fd = ::memfd_create("transport-test", MFD_CLOEXEC);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::pwrite(fd, text.data(), text.size(), 0), static_cast<ssize_t>(text.size()));
  return fd;
}
std::string text_of(int fd) {
  char buf[64] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}
std::size_t open_fds() {
  std::size_t n = 0;
  for (int fd = 0; fd < 8192; ++fd) n += ::fcntl(fd, F_GETFD) >= 0;
  return n;
}
// Room for a few thousand descriptors at once (the soft limit is often 1024), as mpx's
// own processes make for themselves; false when the hard limit does not allow it.
bool room_for_descriptors(rlim_t n) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return false;
  if (limit.rlim_cur >= n) return true;
  if (limit.rlim_max < n) return false;
  limit.rlim_cur = n;
  return ::setrlimit(RLIMIT_NOFILE, &limit) == 0;
}

TEST(Descriptors, TravelWithTheirFrameThroughPartialWritesAndOutliveTheSender) {
  Pair p;
  int small = 4096;
  ASSERT_EQ(::setsockopt(p.fd[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
  ::fcntl(p.fd[0], F_SETFL, O_NONBLOCK);
  const std::size_t before = open_fds();
  Writer w;
  constexpr int kFrames = 30;
  // Every third frame carries i % 3 + 1 descriptors; the rest none. Large payloads:
  // the socket takes each frame in many pieces.
  for (int i = 0; i < kFrames; ++i) {
    Header h = make(Type::kResult, static_cast<std::uint64_t>(i));
    Fds fds;
    if (i % 3 == 0) {
      for (int j = 0; j <= i % 4; ++j) fds.push(memfd_with("frame " + std::to_string(i) + " fd " + std::to_string(j)));
      h.fds = static_cast<std::uint8_t>(fds.size());
    }
    w.push(header_message(h), Message(std::string(50000, 'x').data(), 50000), std::move(fds));
  }
  Reader r;
  std::vector<Incoming> got = deliver(w, p, kFrames, &r);
  ASSERT_EQ(got.size(), static_cast<std::size_t>(kFrames));
  EXPECT_FALSE(w.pending());
  ::close(p.fd[0]);  // the sender is gone: what it sent stays readable, descriptors too
  p.fd[0] = -1;
  for (int i = 0; i < kFrames; ++i) {
    const Incoming& in = got[static_cast<std::size_t>(i)];
    ASSERT_EQ(in.header.call_id, static_cast<std::uint64_t>(i));
    const std::size_t want = i % 3 == 0 ? static_cast<std::size_t>(i % 4 + 1) : 0;
    EXPECT_EQ(in.header.fds, want);
    ASSERT_EQ(in.fds.size(), want) << "frame " << i;
    for (std::size_t j = 0; j < want; ++j) {
      EXPECT_EQ(text_of(in.fds.get()[j]), "frame " + std::to_string(i) + " fd " + std::to_string(j));
    }
  }
  EXPECT_EQ(r.unclaimed_fds(), 0u);
  got.clear();
  EXPECT_EQ(open_fds(), before - 1) << "every descriptor sent or received is closed once dropped";
}

TEST(Descriptors, ABlockingSendCarriesThemAndAReaderClosesWhatNoFrameClaims) {
  Pair p;
  const std::size_t before = open_fds();
  Header h = make(Type::kResult, 7);
  const int a = memfd_with("a"), b = memfd_with("b");
  h.fds = 2;
  ASSERT_TRUE(transport::write_frame(p.fd[0], h, "payload", {a, b}));
  ::close(a);
  ::close(b);
  {
    Reader r;
    ASSERT_EQ(r.fill(p.fd[1]), Reader::Fill::kData);
    wire::Header got;
    std::string_view header_bytes, payload;
    std::string why;
    ASSERT_EQ(r.next(got, header_bytes, payload, &why), Reader::Next::kFrame) << why;
    ASSERT_EQ(r.frame_fds().size(), 2u);
    EXPECT_EQ(text_of(r.frame_fds().get()[0]), "a");
    EXPECT_EQ(text_of(r.frame_fds().get()[1]), "b");
    // Descriptors that a header does not count (a peer's mistake) wait unclaimed, and
    // the reader closes them when it goes, as it does the last frame's untaken ones.
    const int stray = memfd_with("stray");
    ASSERT_TRUE(transport::write_frame(p.fd[0], make(Type::kPing), "", {stray}));
    ::close(stray);
    ASSERT_EQ(r.fill(p.fd[1]), Reader::Fill::kData);
    EXPECT_EQ(r.unclaimed_fds(), 1u);
    ASSERT_EQ(r.next(got, header_bytes, payload, &why), Reader::Next::kFrame) << why;
    EXPECT_EQ(r.frame_fds().size(), 0u);
    EXPECT_EQ(r.unclaimed_fds(), 1u);
  }
  EXPECT_EQ(open_fds(), before);
}

// More descriptors than one frame carries (a chunk of many results that are objects):
// those before the frame's own go ahead in DESCRIPTORS frames, and the reader hands them
// all over with the frame, in the order sent, by both ways of writing.
TEST(Descriptors, MoreThanAFramesWorthArriveWithItInOrder) {
  if (!room_for_descriptors(8192)) GTEST_SKIP() << "RLIMIT_NOFILE's hard limit is under 8192";
  Pair p;
  ::fcntl(p.fd[0], F_SETFL, O_NONBLOCK);
  const std::size_t before = open_fds();
  const std::size_t counts[] = {64, 65, 128, 129, 300, wire::kMaxFrameFds};
  Writer w;
  for (std::size_t n : counts) {
    std::vector<int> fds;
    for (std::size_t j = 0; j < n; ++j) fds.push_back(memfd_with(std::to_string(n) + "/" + std::to_string(j)));
    Header h = make(Type::kResult, n);
    h.fds = wire::own_fds(n);
    ASSERT_TRUE(transport::write_frame(p.fd[0], h, "blocking", fds));
    Fds owned;
    for (int fd : fds) owned.push(fd);  // the queued copy closes its own once sent
    w.push(header_message(h), Message("queued", 6), std::move(owned));
    Reader r;
    std::vector<Incoming> got = deliver(w, p, 2, &r);
    ASSERT_EQ(got.size(), 2u) << n;
    for (const Incoming& in : got) {
      EXPECT_EQ(in.header.type, Type::kResult) << "a DESCRIPTORS frame is never handed out";
      EXPECT_EQ(in.header.call_id, n);
      EXPECT_EQ(in.fds_expected, n);
      ASSERT_EQ(in.fds.size(), n);
      for (std::size_t j = 0; j < n; ++j) {
        ASSERT_EQ(text_of(in.fds.get()[j]), std::to_string(n) + "/" + std::to_string(j));
      }
    }
    EXPECT_EQ(r.unclaimed_fds(), 0u);
  }
  EXPECT_EQ(open_fds(), before) << "every descriptor sent or received is closed once dropped";
}

// A peer announcing more than kMaxFrameFds for one frame breaks its stream (it would make
// the reader hold descriptors without end); what it sent is closed.
TEST(Descriptors, MoreThanAFrameMayBringBreakTheStream) {
  if (!room_for_descriptors(8192)) GTEST_SKIP() << "RLIMIT_NOFILE's hard limit is under 8192";
  Pair p;
  const std::size_t before = open_fds();
  Header carrier = make(Type::kDescriptors);
  carrier.fds = wire::kMaxFds;
  Reader r;
  std::string why;
  wire::Header got;
  std::string_view header_bytes, payload;
  Reader::Next next = Reader::Next::kNone;
  for (std::size_t sent = 0; sent <= wire::kMaxFrameFds && next == Reader::Next::kNone; sent += wire::kMaxFds) {
    std::vector<int> fds;
    for (int j = 0; j < wire::kMaxFds; ++j) fds.push_back(memfd_with("x"));
    ASSERT_TRUE(transport::write_frame(p.fd[0], carrier, "", fds));
    for (int fd : fds) ::close(fd);
    ASSERT_EQ(r.fill(p.fd[1]), Reader::Fill::kData);
    next = r.next(got, header_bytes, payload, &why);
  }
  EXPECT_EQ(next, Reader::Next::kBroken);
  EXPECT_NE(why.find("more than 1024 descriptors for one frame"), std::string::npos) << why;
  r.reset();
  EXPECT_EQ(open_fds(), before);
}

// Signal handlers interrupt poll and writes: the calls resume instead of failing.
std::atomic<int> alarms{0};
void on_alarm(int) { ++alarms; }

TEST(Signals, PollAndWritesResumeAfterEintr) {
  struct sigaction sa {};
  sa.sa_handler = on_alarm;  // no SA_RESTART: system calls do fail with EINTR
  ASSERT_EQ(sigaction(SIGALRM, &sa, nullptr), 0);
  itimerval every_ms{{0, 1000}, {0, 1000}};
  ASSERT_EQ(setitimer(ITIMER_REAL, &every_ms, nullptr), 0);
  Pair p;
  pollfd fds{p.fd[1], POLLIN, 0};
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(poll(&fds, 1, milliseconds(50)), 0);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(50)) << "poll gave up early";
  std::thread reader([&] {
    Reader r;
    Incoming in;
    std::string why;
    for (int i = 0; i < 20; ++i) ASSERT_EQ(read_one(r, p.fd[1], in, &why), Reader::Next::kFrame) << why;
  });
  Connection writer(p.fd[0]);
  p.fd[0] = -1;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(writer.send(make(Type::kResult), std::string(1 << 18, 'z')));
  reader.join();
  itimerval off{};
  setitimer(ITIMER_REAL, &off, nullptr);
  signal(SIGALRM, SIG_DFL);
  EXPECT_GT(alarms.load(), 0);
}

TEST(Endpoints, AreUniqueAndAbstract) {
  const Endpoint a = Endpoint::unique("x"), b = Endpoint::unique("x");
  EXPECT_NE(a.str(), b.str());
  EXPECT_EQ(a.str().rfind("unix://@mpx-", 0), 0u);
  EXPECT_EQ(a.scheme(), Endpoint::Scheme::kUnixAbstract);
  EXPECT_EQ(a.name(), a.str().substr(8));
  Listener first = Listener::bind(a);
  ASSERT_TRUE(first);
  EXPECT_FALSE(Listener::bind(a)) << "the same name twice";
  EXPECT_EQ(errno, EADDRINUSE);
}

TEST(Endpoints, UnknownSchemesAndOverlongNamesAreRefusedNeverCut) {
  std::string why;
  for (const char* bad : {"", "@name", "ipc://@old-spelling-is-zeromq-ipc-now-but-fine",
                          "http://host:80", "unix://name-without-at", "unix://@", "tcp://host",
                          "tcp://host:", "tcp://host:65536", "tcp://host:12x", "tcp://:80", "ipc://"}) {
    const auto e = Endpoint::parse(bad, &why);
    if (std::string_view(bad).rfind("ipc://@", 0) == 0) {
      // A ZeroMQ ipc path that happens to start with '@' (ZeroMQ's abstract ipc).
      ASSERT_TRUE(e.has_value()) << bad;
      EXPECT_EQ(e->scheme(), Endpoint::Scheme::kIpc);
      continue;
    }
    EXPECT_FALSE(e.has_value()) << bad;
    EXPECT_FALSE(why.empty()) << bad;
  }
  EXPECT_FALSE(Endpoint::parse("http://host:80", &why));
  EXPECT_NE(why.find("unknown scheme"), std::string::npos) << why;
  const std::string longest = "unix://@" + std::string(Endpoint::kMaxAbstractName, 'n');
  ASSERT_TRUE(Endpoint::parse(longest, &why)) << why;
  EXPECT_FALSE(Endpoint::parse(longest + "n", &why));
  EXPECT_NE(why.find("107"), std::string::npos) << why;
  EXPECT_THROW(Endpoint::from(longest).with_suffix("-2"), Error);
  try {
    Endpoint::from("zmq://x");
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("zmq://x"), std::string::npos) << e.what();
  }
  const Endpoint tcp = Endpoint::from("tcp://head-node:7000");
  EXPECT_EQ(tcp.scheme(), Endpoint::Scheme::kTcp);
  EXPECT_EQ(tcp.name(), "head-node");
  EXPECT_EQ(tcp.port(), 7000);
  const Endpoint ipc = Endpoint::from("ipc:///run/mpx/agent");
  EXPECT_EQ(ipc.scheme(), Endpoint::Scheme::kIpc);
  EXPECT_EQ(ipc.name(), "/run/mpx/agent");
  EXPECT_EQ(Endpoint::from("unix://@a").with_suffix("-2").str(), "unix://@a-2");
}

}  // namespace
}  // namespace transport
}  // namespace mpx
