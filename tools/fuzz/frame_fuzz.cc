// libFuzzer target: mpx::transport::Reader, the first code any byte sent to a router or
// an actor meets (the identity preamble, then length-prefixed frames), and the Writer
// that sends frames on (tools/fuzz/run builds and runs it).
//
// Input: byte 0 says how the rest arrives (in pieces of 1..256 bytes), byte 1 whether
// an identity preamble comes first; the rest goes through a real unix socketpair into a
// Reader whose payload limit is 4 KiB, so the limit itself is exercised.
//
// Properties checked on every input:
//   - nothing crashes, reads out of bounds, leaks or allocates without bound;
//   - identity(): an accepted identity has 1..255 bytes; a refusal says why;
//   - next(): every frame's header decoded (wire::decode accepts it again); kBadFrame
//     and kBroken say why; after kBroken nothing else is read (the caller must drop the
//     connection); the bytes of accepted and skipped frames never exceed the input;
//   - a frame read is the same frame after a round trip through Writer and Reader.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "framework/transport/transport.h"

namespace {

namespace transport = mpx::transport;
namespace wire = mpx::wire;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "frame_fuzz: property violated: %s\n", what);
  std::abort();
}

struct Pair {
  Pair() {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd) != 0) fail("socketpair");
  }
  ~Pair() {
    ::close(fd[0]);
    ::close(fd[1]);
  }
  int fd[2];
};

struct Frame {
  std::string header, payload;
};

// Reads everything the reader can take from fd; returns the frames and whether the
// stream broke.
std::vector<Frame> read_frames(transport::Reader& r, int fd, bool* broken) {
  std::vector<Frame> frames;
  *broken = false;
  for (;;) {
    wire::Header h;
    std::string_view header_bytes, payload;
    std::string why;
    const auto got = r.next(h, header_bytes, payload, &why);
    if (got == transport::Reader::Next::kFrame) {
      std::string again;
      if (!wire::decode(header_bytes.data(), header_bytes.size(), &again)) fail("a frame's header does not decode again");
      if (payload.size() > 4096) fail("a payload over the limit was accepted");
      frames.push_back({std::string(header_bytes), std::string(payload)});
      continue;
    }
    if (got == transport::Reader::Next::kBadFrame || got == transport::Reader::Next::kBroken) {
      if (why.empty()) fail("a refusal without a reason");
    }
    if (got == transport::Reader::Next::kBadFrame) continue;
    if (got == transport::Reader::Next::kBroken) {
      *broken = true;
      return frames;
    }
    if (r.fill(fd) != transport::Reader::Fill::kData) return frames;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t piece = 1 + data[0];
  const bool with_identity = data[1] & 1;
  data += 2;
  size -= 2;

  Pair p;
  transport::Reader r(/*max_payload=*/4096);
  std::size_t sent = 0;
  std::vector<Frame> frames;
  bool broken = false, refused = false, identified = !with_identity;
  while (sent < size && !broken && !refused) {
    const std::size_t n = std::min(piece, size - sent);
    if (::send(p.fd[0], data + sent, n, MSG_NOSIGNAL) != static_cast<ssize_t>(n)) fail("send");
    sent += n;
    r.fill(p.fd[1]);
    if (!identified) {
      std::string id, why;
      bool bad = false;
      if (r.identity(&id, &bad, &why)) {
        if (id.empty() || id.size() > transport::kMaxIdentity) fail("an identity of a bad size was accepted");
        identified = true;
      } else if (bad) {
        if (why.empty()) fail("an identity refused without a reason");
        refused = true;
      }
      if (!identified) continue;
    }
    for (auto& f : read_frames(r, p.fd[1], &broken)) frames.push_back(std::move(f));
  }
  std::size_t bytes = 0;
  for (const auto& f : frames) bytes += transport::kFramePrefix + f.header.size() + f.payload.size();
  if (bytes > size) fail("more frame bytes than input");

  // Round trip: what was read, written by a Writer and read again, is the same.
  if (!frames.empty()) {
    Pair q;
    transport::Writer w;
    for (const auto& f : frames) {
      w.push(transport::Message(f.header.data(), f.header.size()), transport::Message(f.payload.data(), f.payload.size()));
    }
    transport::Reader back(4096);
    std::vector<Frame> again;
    // At most 16 KiB (the fuzzer's max_len): all of it fits the socket buffer.
    for (int turn = 0; turn < 1000 && (w.pending() || again.size() < frames.size()); ++turn) {
      if (w.pending() && w.flush(q.fd[0]) == transport::Writer::Status::kGone) fail("writer lost its peer");
      bool b = false;
      back.fill(q.fd[1]);
      for (auto& f : read_frames(back, q.fd[1], &b)) again.push_back(std::move(f));
      if (b) fail("frames written by the Writer broke the stream");
    }
    if (again.size() != frames.size()) fail("a different number of frames after a round trip");
    for (std::size_t i = 0; i < frames.size(); ++i) {
      if (again[i].header != frames[i].header || again[i].payload != frames[i].payload) fail("a frame changed in a round trip");
    }
  }
  return 0;
}
