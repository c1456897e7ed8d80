// Writes the seed corpora of the fuzz targets: `tools/fuzz/run --seeds` runs it into
// tools/fuzz/corpus/<target>/. Each seed is a well-formed input of the shape its
// target expects (see the target's header comment), so the fuzzer starts from the
// messages mpx really sends and mutates outwards.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <msgpack.hpp>

#include "framework/wire/wire.h"
#include "mpx/detail/codec.h"
#include "mpx/detail/segment.h"

namespace {

namespace wire = mpx::wire;
namespace detail = mpx::detail;

std::string g_root;

// The shape of the Point structs of payload_fuzz.cc and results_fuzz.cc.
struct Point {
  int x, y;
  std::string label;
  MSGPACK_DEFINE(x, y, label);
};

void write(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::string dir = g_root + "/" + target;
  mkdir(dir.c_str(), 0755);
  std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
}

template <class... T>
std::string packed(const T&... values) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  (pk.pack(values), ...);
  return std::string(buf.data(), buf.size());
}

void wire_seeds() {
  for (int t = 1; t <= static_cast<int>(wire::Type::kLastType); ++t) {
    wire::Header h;
    h.type = static_cast<wire::Type>(t);
    h.call_id = 7;
    h.start = 1000;
    h.count = 25;
    h.pid = 4242;
    h.flags = h.type == wire::Type::kResult ? wire::kFlagHasErrors : 0;
    if (h.type == wire::Type::kSubmit || h.type == wire::Type::kTask ||
        h.type == wire::Type::kConfig) {
      h.name = "square";
    } else if (h.type == wire::Type::kReady) {
      h.name = "PoolWorker-1";
    }
    write("wire_fuzz", std::string("type-") + wire::type_name(h.type), wire::encode(h));
  }
  wire::Header extremes;
  extremes.type = wire::Type::kSubmit;
  extremes.call_id = UINT64_MAX;
  extremes.start = UINT64_MAX;
  extremes.count = UINT32_MAX;
  extremes.pid = INT32_MIN;
  extremes.flags = 255;
  const std::string long_name(wire::kMaxNameSize, 'n');
  extremes.name = long_name;
  write("wire_fuzz", "extremes", wire::encode(extremes));
  // Compact integer and string forms another msgpack encoder would choose.
  write("wire_fuzz", "compact",
        packed(std::make_tuple(1, 2, 3, 0, 4, -1, 0, std::string("concat"))));
}

// Payload seeds: byte 0 = task index (low 3 bits) | item count << 3 (see payload_fuzz.cc).
// frame_fuzz: [piece size][identity first?] then a connection's bytes.
void frame_seeds() {
  auto frame = [](wire::Type type, const std::string& name, const std::string& payload) {
    wire::Header h;
    h.type = type;
    h.name = name;
    h.count = 1;
    const std::string head = wire::encode(h);
    std::string out(8, '\0');
    for (int i = 0; i < 4; ++i) {
      out[i] = static_cast<char>((head.size() >> (8 * i)) & 0xff);
      out[4 + i] = static_cast<char>((payload.size() >> (8 * i)) & 0xff);
    }
    return out + head + payload;
  };
  const std::string identity = std::string("mpx1") + char(9) + "Rtoken123";
  write("frame_fuzz", "hello-whole", std::string("\xff\x01", 2) + identity + frame(wire::Type::kHello, "", ""));
  write("frame_fuzz", "submit-bytewise",
        std::string("\x00\x01", 2) + identity + frame(wire::Type::kSubmit, "square", "\x91\x07"));
  write("frame_fuzz", "two-frames-no-identity",
        std::string("\x10\x00", 2) + frame(wire::Type::kResult, "", "\x91\x31") + frame(wire::Type::kPong, "", ""));
  write("frame_fuzz", "bad-header-then-good",
        std::string("\x20\x00", 2) + std::string("\x03\0\0\0\x02\0\0\0\xc1\xc1\xc1" "ab", 13) +
            frame(wire::Type::kPing, "", ""));
  write("frame_fuzz", "payload-over-limit", std::string("\x40\x00", 2) + std::string("\x05\0\0\0\x01\x20\0\0", 8));
}

void payload_seed(const std::string& name, int task, int count, const std::string& payload) {
  write("payload_fuzz", name, std::string(1, static_cast<char>(task | (count << 3))) + payload);
}

void payload_seeds() {
  payload_seed("square", 0, 4, packed(std::vector<int>{0, -1, 300, -70000}));
  payload_seed("square-empty", 0, 0, packed(std::vector<int>{}));
  payload_seed("square-wide-header", 0, 31, [] {
    std::vector<int> xs(20, 9);
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_array(20);  // array16 form (more than 15 items)
    for (int x : xs) pk.pack(x);
    return std::string(buf.data(), buf.size());
  }());
  payload_seed(
      "concat", 1, 2,
      packed(std::vector<std::tuple<std::string, std::string>>{{"a", "b"}, {"", "long text"}}));
  payload_seed("record", 2, 3, packed(std::vector<int>{1, 2, 3}));
  payload_seed("fragile", 3, 3, packed(std::vector<int>{3, 4, 5}));
  payload_seed("swap_xy", 4, 2, packed(std::vector<Point>{{1, 2, "p"}, {3, 4, ""}}));
  payload_seed("tally", 5, 1,
               packed(std::vector<std::tuple<std::vector<int>, std::map<std::string, int>>>{
                   {{1, 2, 3}, {{"a", 1}, {"b", 2}}}}));
  payload_seed("scale", 6, 2,
               packed(std::vector<std::tuple<double, bool>>{{1.5, true}, {-2.25, false}}));
  payload_seed("nested", 7, 2,
               packed(std::vector<std::tuple<std::vector<std::vector<std::string>>,
                                             std::optional<std::int64_t>>>{
                   {{{"x", "y"}, {}}, 5}, {{}, std::nullopt}}));
  payload_seed("square-count-mismatch", 0, 2, packed(std::vector<int>{1, 2, 3}));
}

// Result seeds: byte 0 = count | 0x80 if has-errors, byte 1 = result type (0 int,
// 1 string, 2 Point, 3 void); then the chunk as ChunkWriter writes it.
void results_seed(const std::string& name, int count, bool has_errors, int type,
                  const std::string& payload) {
  std::string bytes;
  bytes += static_cast<char>(count | (has_errors ? 0x80 : 0));
  bytes += static_cast<char>(type);
  write("results_fuzz", name, bytes + payload);
}

void results_seeds() {
  results_seed("ints", 3, false, 0, packed(std::vector<int>{1, 4, 9}));
  results_seed("strings", 2, false, 1, packed(std::vector<std::string>{"ab", ""}));
  results_seed("points", 1, false, 2, packed(std::vector<Point>{{1, 2, "z"}}));
  results_seed("void", 2, false, 3, packed(std::vector<msgpack::type::nil_t>(2)));
  {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_array(4);
    pk.pack(1);
    pk.pack_nil();
    pk.pack(3);
    pk.pack_nil();
    pk.pack(std::vector<detail::ErrorInfo>{{"std::runtime_error", "bad input", 1, 4242, {}},
                                           {"mpx::DecodeError", "could not decode", 3, 4242, {}}});
    results_seed("ints-with-errors", 4, true, 0, std::string(buf.data(), buf.size()));
  }
  results_seed("empty", 0, false, 0, packed(std::vector<int>{}));
}

void segment_seed(const std::string& name, int pick, const std::string& payload) {
  write("segment_ref_fuzz", name, std::string(1, static_cast<char>(pick)) + payload);
}

void segment_seeds() {
  // pick: kind = 1 + pick % 8, tag = (pick / 8) % 3 (0 int, 1 double, 2 untyped).
  // Ids 0..2 stand for the target's own Value<int>, Array<double> and Lock.
  const std::uint64_t int_hash = detail::type_tag<int>().hash;
  const std::uint64_t double_hash = detail::type_tag<double>().hash;
  auto ref = [](std::uint32_t kind, std::int64_t owner, int fd, std::uint64_t id,
                std::uint64_t hash, std::uint64_t count) {
    return packed(std::make_tuple(kind, owner, fd, id, hash, count));
  };
  segment_seed("value-int-own", 0, ref(1, 2, 5, 0, int_hash, 1));
  segment_seed("array-double-own", 1 + 8, ref(2, 2, 6, 1, double_hash, 16));
  segment_seed("lock-own", 2 + 16, ref(3, 2, 7, 2, 0, 0));
  segment_seed("value-as-array", 1, ref(1, 2, 5, 0, int_hash, 1));
  segment_seed("value-wrong-type", 8, ref(1, 2, 5, 0, int_hash, 1));
  segment_seed("value-other-process", 0, ref(1, 3, 5, 0, int_hash, 1));
  segment_seed("value-unknown-id", 0, ref(1, 2, 5, 0x123456789abcdefull, int_hash, 1));
  segment_seed("owner-zero", 0, ref(1, 0, 5, 0, int_hash, 1));
  segment_seed("owner-negative", 0, ref(1, -1, -1, 0, int_hash, 1));
  segment_seed("queue", 7, ref(8, 2, 9, 0, int_hash, 4));
  segment_seed("not-a-ref", 0, packed(std::string("not a handle")));
  // Span<const double> parameters (pick >= 0xF0); id 3 is the target's object of 16.
  const std::string object = ref(14, 2, 8, 3, double_hash, 16);
  auto window = [&](std::uint64_t first, std::uint64_t count) {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_array(3);
    buf.write(object.data(), object.size());
    pk.pack(first);
    pk.pack(count);
    return std::string(buf.data(), buf.size());
  };
  segment_seed("span-window", 0xF0, window(4, 8));
  segment_seed("span-past-the-end", 0xF0, window(12, 8));
  segment_seed("span-by-value", 0xF0, packed(msgpack::type::raw_ref("01234567abcdefgh", 16)));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus directory>\n", argv[0]);
    return 2;
  }
  g_root = argv[1];
  mkdir(g_root.c_str(), 0755);
  wire_seeds();
  frame_seeds();
  payload_seeds();
  results_seeds();
  segment_seeds();
  return 0;
}
