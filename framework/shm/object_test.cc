// Single-process tests of mpx::put, ObjectRef and Span: how each type is stored, the
// seals that make an object read-only, handles and views through msgpack, and every
// error path (wrong type, wrong count, gone, empty, too large). The same objects across
// real processes (pool workers, a Process, actors, owners and readers killed) are in
// //tests:objects_test.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <msgpack.hpp>

#include "framework/shm/handle_bytes.h"
#include "mpx/detail/segment.h"
#include "mpx/errors.h"
#include "mpx/object.h"
#include "mpx/shared.h"

namespace mpx {
namespace {

struct Point {
  double x, y;
  int tag;
};

struct Labelled {
  std::string name;
  std::vector<int> values;
  MSGPACK_DEFINE(name, values);
};

struct WithValue {
  Value<int> counter;
  MSGPACK_DEFINE(counter);
};

using shm_testing::pack;
using shm_testing::unpack;

// The line of /proc/self/maps that maps the memfd called name.
std::string maps_line(const std::string& name) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/memfd:" + name + " ") != std::string::npos) return line;
  }
  return "";
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

int open_fds() {
  int n = 0;
  for (int fd = 0; fd < 4096; ++fd) n += fcntl(fd, F_GETFD) >= 0;
  return n;
}

TEST(ObjectTest, VectorIsStoredRawAndViewedWithoutCopy) {
  std::vector<double> data(100000);
  std::iota(data.begin(), data.end(), 0.5);
  ObjectRef<std::vector<double>> ref = put(data);
  EXPECT_EQ(ref.size(), data.size());
  EXPECT_EQ(ref.nbytes(), data.size() * sizeof(double));
  EXPECT_EQ(ref.owner(), getpid());
  Span<const double> view = ref.get();
  ASSERT_EQ(view.size(), data.size());
  EXPECT_TRUE(view.in_object());
  EXPECT_TRUE(std::equal(view.begin(), view.end(), data.begin()));
  EXPECT_EQ(ref.get().data(), view.data()) << "every get() views the same mapping";
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(view.data()) % 64, 0u);
  EXPECT_EQ(ref.value(), data);
  EXPECT_EQ(view.subspan(10, 3).to_vector(), (std::vector<double>{10.5, 11.5, 12.5}));
  EXPECT_EQ(view.last(1)[0], 99999.5);
  EXPECT_THROW(view.subspan(99999, 2), std::out_of_range);
  EXPECT_THROW(view.at(100000), std::out_of_range);
  EXPECT_THROW(view.last(100001), std::out_of_range);
}

// Sealed before the handle exists, mapped PROT_READ: nobody can change it under a reader.
TEST(ObjectTest, ObjectIsSealedAndMappedReadOnly) {
  auto ref = put(std::string("immutable"));
  const detail::Segment& segment = *detail::ObjectAccess::segment(ref);
  const int fd = segment.ref().fd;
  const int seals = fcntl(fd, F_GET_SEALS);
  ASSERT_GE(seals, 0);
  EXPECT_EQ(seals & (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
            F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  const std::string line = maps_line(segment.name());
  ASSERT_FALSE(line.empty()) << segment.name();
  EXPECT_NE(line.find(" r--s "), std::string::npos) << line;
  // Not through the owner's descriptor, not through a new open, not through a mapping.
  EXPECT_EQ(pwrite(fd, "X", 1, 300), -1);
  EXPECT_EQ(errno, EPERM);
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  const int rw = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(rw, 0);
  EXPECT_EQ(mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0), MAP_FAILED);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(ftruncate(rw, 0), -1);
  close(rw);
  Span<const char> text = ref.get();
  EXPECT_EQ(std::string(text.data(), text.size()), "immutable");
  EXPECT_EQ(ref.value(), "immutable");
}

TEST(ObjectTest, EachTypeGetsItsLayout) {
  auto array = put(std::array<int, 4>{1, 2, 3, 4});
  Span<const int> elements = array.get();
  EXPECT_EQ(elements.size(), 4u);
  EXPECT_EQ((array.value()), (std::array<int, 4>{1, 2, 3, 4}));

  auto point = put(Point{1.5, -2, 7});
  const Point& p = point.get();  // a reference into the mapping
  EXPECT_EQ(p.tag, 7);
  EXPECT_EQ(reinterpret_cast<const char*>(&p), detail::ObjectAccess::segment(point)->body());
  EXPECT_EQ(point.value().y, -2);

  std::map<std::string, int> counts{{"a", 1}, {"b", 2}};
  auto map = put(counts);  // msgpack-encoded, decoded at each get()
  EXPECT_EQ(map.get(), counts);
  EXPECT_EQ(detail::ObjectAccess::segment(map)->ref().kind, detail::SegmentKind::kEncodedObject);
  auto strings = put(std::vector<std::string>{"x", "yy"});
  EXPECT_EQ(strings.get(), (std::vector<std::string>{"x", "yy"}));
  auto flags = put(std::vector<bool>{true, false, true});  // not contiguous: encoded
  EXPECT_EQ(flags.get(), (std::vector<bool>{true, false, true}));
  auto labelled = put(Labelled{"n", {1, 2}});
  EXPECT_EQ(labelled.get().values, (std::vector<int>{1, 2}));

  const std::vector<float> buffer{1, 2, 3};
  auto from_span = put(Span<const float>(buffer.data(), buffer.size()));
  static_assert(std::is_same_v<decltype(from_span), ObjectRef<std::vector<float>>>);
  EXPECT_EQ(from_span.value(), buffer);

  auto empty = put(std::vector<double>{});
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_TRUE(empty.get().empty());
  EXPECT_EQ(unpack<ObjectRef<std::vector<double>>>(pack(empty)).size(), 0u);
}

TEST(ObjectTest, HandlesAndViewsTravelThroughMsgpack) {
  std::vector<std::int64_t> data(1000);
  std::iota(data.begin(), data.end(), 0);
  auto ref = put(data);
  auto again = unpack<ObjectRef<std::vector<std::int64_t>>>(pack(ref));
  EXPECT_EQ(again.get().data(), ref.get().data()) << "the owner's mapping, not a copy";

  // A Span of an object travels as [ref, first, count]: a handle, not the bytes.
  Span<const std::int64_t> window = ref.get().subspan(100, 50);
  const std::string bytes = pack(window);
  EXPECT_LT(bytes.size(), 64u);
  auto view = unpack<Span<const std::int64_t>>(bytes);
  EXPECT_TRUE(view.in_object());
  EXPECT_EQ(view.data(), ref.get().data() + 100);
  EXPECT_EQ(view.size(), 50u);

  // A Span of ordinary memory travels as its bytes, into storage the receiver owns.
  Span<const std::int64_t> local(data);
  const std::string copied = pack(local);
  EXPECT_GT(copied.size(), data.size() * sizeof(std::int64_t));
  auto copy = unpack<Span<const std::int64_t>>(copied);
  EXPECT_FALSE(copy.in_object());
  EXPECT_NE(copy.data(), data.data());
  EXPECT_EQ(copy.to_vector(), data);

  // An ObjectRef converts to a Span of its elements (what a Span<const E> task
  // parameter receives when given a ref).
  Span<const std::int64_t> converted = ref;
  EXPECT_EQ(converted.data(), ref.get().data());

  // Empty refs and spans travel as such.
  EXPECT_FALSE(unpack<ObjectRef<std::vector<double>>>(pack(ObjectRef<std::vector<double>>())).valid());
  EXPECT_TRUE(unpack<Span<const double>>(pack(Span<const double>())).empty());
}

TEST(ObjectTest, WrongTypeOrCountIsNamed) {
  auto ref = put(std::vector<double>{1, 2, 3, 4, 5});
  const std::string bytes = pack(ref);
  std::string e = error_of([&] { unpack<ObjectRef<std::vector<int>>>(bytes); });
  EXPECT_NE(e.find("an object of double elements (8 bytes each) cannot be read as int elements "
                   "(4 bytes each)"),
            std::string::npos)
      << e;
  e = error_of([&] { unpack<Span<const float>>(pack(ref.get())); });
  EXPECT_NE(e.find("cannot be read as float elements"), std::string::npos) << e;
  e = error_of([&] { unpack<ObjectRef<std::array<double, 3>>>(bytes); });
  EXPECT_NE(e.find("an object of 5 double elements cannot be read as std::array<double, 3>"),
            std::string::npos)
      << e;
  e = error_of([&] { unpack<ObjectRef<std::map<int, int>>>(bytes); });
  EXPECT_NE(e.find("an object of raw elements cannot be used as an object holding std::map<int, int>"),
            std::string::npos)
      << e;
  auto encoded = put(std::map<int, int>{{1, 2}});
  e = error_of([&] { unpack<ObjectRef<std::map<int, double>>>(pack(encoded)); });
  EXPECT_NE(e.find("an object holding std::map<int, int> cannot be read as std::map<int, double>"),
            std::string::npos)
      << e;
  EXPECT_THROW(unpack<ObjectRef<std::vector<int>>>(bytes), SharedMemoryError);
  // A lying range is bad input, not a view past the end.
  msgpack::sbuffer lie;
  msgpack::packer<msgpack::sbuffer> pk(lie);
  pk.pack_array(3);
  detail::pack_segment(pk, detail::ObjectAccess::segment(ref));
  pk.pack(std::uint64_t{4});
  pk.pack(std::uint64_t{2});
  EXPECT_THROW(unpack<Span<const double>>(std::string(lie.data(), lie.size())), msgpack::type_error);
}

TEST(ObjectTest, GoneAndEmptyRefsSaySo) {
  std::string bytes;
  {
    auto ref = put(std::vector<int>{1, 2, 3});
    bytes = pack(ref);
  }
  std::string e = error_of([&] { unpack<ObjectRef<std::vector<int>>>(bytes); });
  EXPECT_NE(e.find("is gone: every handle to it in this process, which created it, was destroyed"),
            std::string::npos)
      << e;
  ObjectRef<std::vector<int>> empty;
  EXPECT_FALSE(empty.valid());
  e = error_of([&] { empty.get(); });
  EXPECT_NE(e.find("this ObjectRef is empty"), std::string::npos) << e;
  EXPECT_THROW(empty.value(), Error);
}

// Shared objects packed inside an encoded object live as long as the object does.
TEST(ObjectTest, HandlesInsideAnObjectAreKeptByIt) {
  ObjectRef<WithValue> ref;
  {
    Value<int> counter(41);
    ref = put(WithValue{counter});
  }
  WithValue decoded = ref.get();
  EXPECT_EQ(decoded.counter.fetch_add(1), 41);
  EXPECT_EQ(ref.get().counter.load(), 42);
}

// A size known in advance is refused before anything is written: here 1 TiB, viewed
// through a reserved, never-touched mapping (ThreadSanitizer's address-space layout
// may not hold 1 TiB in one piece: then the largest power of two down to 64 GiB, still
// far beyond this machine's memory and swap).
TEST(ObjectTest, TooLargeForMemoryIsRefusedUpFront) {
  std::size_t huge = std::size_t{1} << 40;
  void* region = MAP_FAILED;
  for (; huge >= (std::size_t{1} << 36); huge /= 2) {
    region = mmap(nullptr, huge, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region != MAP_FAILED) break;
  }
  ASSERT_NE(region, MAP_FAILED);
  const int fds = open_fds();
  const std::string e =
      error_of([&] { put(Span<const char>(static_cast<const char*>(region), huge)); });
  munmap(region, huge);
  char size_text[32];
  if (huge == (std::size_t{1} << 40)) {
    std::snprintf(size_text, sizeof size_text, "1.0 TiB");
  } else {
    std::snprintf(size_text, sizeof size_text, "%.1f GiB", static_cast<double>(huge) / (1 << 30));
  }
  EXPECT_NE(e.find(std::string("cannot create an object of char elements of ") + size_text +
                   ": it does not fit in memory"),
            std::string::npos)
      << e;
  EXPECT_EQ(open_fds(), fds) << "nothing left open";
}

// RLIMIT_FSIZE bounds memfd writes too; write(2) past it would raise SIGXFSZ, which
// kills the process by default. put() checks first and throws instead, whether the size
// is known in advance (raw elements) or only while encoding.
TEST(ObjectTest, FileSizeLimitIsAnErrorNotASignal) {
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  rlimit small = saved;
  small.rlim_cur = 1 << 20;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  const std::string raw = error_of([] { put(std::vector<char>(32 << 20, 'x')); });
  const std::string encoded =
      error_of([] { put(std::vector<std::string>(64, std::string(64 << 10, 'y'))); });
  const std::string fits = error_of([] { put(std::vector<char>(512 << 10, 'z')); });
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &saved), 0);
  EXPECT_NE(raw.find("exceeds this process's file size limit of 1.0 MiB (RLIMIT_FSIZE"),
            std::string::npos)
      << raw;
  EXPECT_NE(encoded.find("exceeds this process's file size limit of 1.0 MiB (RLIMIT_FSIZE"),
            std::string::npos)
      << encoded;
  EXPECT_NE(encoded.find("an object holding std::vector<std::__cxx11::basic_string<char> >"),
            std::string::npos)
      << encoded;
  EXPECT_EQ(fits, "(no exception)");
}

// Argument buffers take large copies with non-temporal stores (Segment::copy_to_buffer):
// every byte must land, at any alignment of either side, around the size where the
// streaming starts and the 64-byte steps end, and nothing past the end may be touched.
TEST(ArgumentBufferTest, CopyToBufferCopiesEveryByteAtAnyAlignment) {
  std::vector<char> source((std::size_t{16} << 20) + 256);
  for (std::size_t i = 0; i < source.size(); ++i) source[i] = static_cast<char>(i * 131 + (i >> 12));
  std::vector<char> target(source.size() + 64);
  const std::size_t sizes[] = {0, 1, 15, 16, 63, 64, 65, 4095, (std::size_t{512} << 10) - 1,
                               std::size_t{512} << 10, (std::size_t{512} << 10) + 1,
                               (std::size_t{1} << 20) + 77, std::size_t{3} << 20,
                               // streamed even where the L2 cache is 32 MiB
                               (std::size_t{16} << 20) + 3};
  for (std::size_t n : sizes) {
    for (std::size_t from_at : {0, 1, 8, 15}) {
      for (std::size_t to_at : {0, 3, 16, 33}) {
        std::fill(target.begin(), target.end(), '\x5a');
        detail::Segment::copy_to_buffer(target.data() + to_at, source.data() + from_at, n);
        ASSERT_EQ(std::memcmp(target.data() + to_at, source.data() + from_at, n), 0)
            << n << " bytes from +" << from_at << " to +" << to_at;
        for (std::size_t i = 0; i < 64; ++i) {
          ASSERT_EQ(target[to_at + n + i], '\x5a') << "byte " << i << " past " << n << " bytes written";
        }
        for (std::size_t i = 0; i < to_at; ++i) ASSERT_EQ(target[i], '\x5a') << "byte before the copy";
      }
    }
  }
  // Through a lent buffer, as a pool's argument goes.
  const std::size_t n = (std::size_t{2} << 20) + 5;
  auto use = detail::Segment::lend_buffer(detail::untyped_tag(), source.data() + 7, 1, n);
  EXPECT_EQ(std::memcmp(use->body(), source.data() + 7, n), 0);
}

}  // namespace
}  // namespace mpx
