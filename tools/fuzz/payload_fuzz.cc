// libFuzzer target: the payload codec a pool worker runs on the bytes of every TASK
// message — mpx::detail::read_array_header, read_object and a registered task's
// run_chunk — and the driver's read_results on what the worker answers.
//
// Input: byte 0 picks the task (low 3 bits) and the header's item count (high 5 bits,
// 0..30; 31 takes the count the payload's own array header claims when that is at most
// 64, which keeps runs fast: a worker answers every announced item). The rest is the
// chunk payload.
//
// Properties checked on every input:
//   - read_array_header / read_object either advance the offset inside the payload or
//     throw mpx::DecodeError, nothing else;
//   - running the chunk the way mpx::worker::run_task does never crashes and throws
//     only std::exception (which run_task turns into one error per item);
//   - the driver decodes the answer with read_results without any error, and it holds
//     exactly `count` items, each either a value of the task's result type or an error;
//   - decoding and running never hold more than kBytesPerByte times the payload's size
//     (plus allowances per item and in all) on the heap: no few bytes may claim
//     megabytes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "mpx/detail/call.h"
#include "mpx/detail/codec.h"
#include "mpx/errors.h"
#include "mpx/task.h"
#include "tools/fuzz/heap_peak.h"

namespace mpx_payload_fuzz {

// Tasks whose bodies cannot misbehave on any decoded argument (no overflow, no huge
// allocation), so every report is about the codec.
std::int64_t square(int x) { return std::int64_t{x} * x; }
MPX_TASK(square);

std::string concat(std::string a, std::string b) { return a + b; }
MPX_TASK(concat);

int g_sink = 0;
void record(int x) { g_sink ^= x; }
MPX_TASK(record);

int fragile(int x) {
  if (x % 3 == 0) throw std::runtime_error("multiple of three");
  return x / 2;
}
MPX_TASK(fragile);

struct Point {
  int x = 0;
  int y = 0;
  std::string label;
  MSGPACK_DEFINE(x, y, label);
};
Point swap_xy(Point p) { return Point{p.y, p.x, p.label}; }
MPX_TASK(swap_xy);

std::size_t tally(std::vector<int> v, std::map<std::string, int> m) { return v.size() + m.size(); }
MPX_TASK(tally);

double scale(double d, bool twice) { return twice ? d * 2 : d; }
MPX_TASK(scale);

std::size_t nested(std::vector<std::vector<std::string>> v, std::optional<std::int64_t> extra) {
  std::size_t n = extra ? 1 : 0;
  for (const auto& inner : v) n += inner.size();
  return n;
}
MPX_TASK(nested);

}  // namespace mpx_payload_fuzz

namespace {

namespace detail = mpx::detail;
namespace f = mpx_payload_fuzz;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "payload_fuzz: property violated: %s\n", what.c_str());
  std::abort();
}

constexpr std::uint32_t kMaxCount = 64;
// The heap a chunk may need: a decoded element costs a 16-byte msgpack::object (32 for
// a map entry) plus its converted form (a std::string is 32 bytes) for every byte it
// takes; each announced item may carry an error message; buffers start at 8 KB.
// (Measured over a 5-minute corpus: at most 128 * size + 1 KB * count + 8.5 KB.)
constexpr std::int64_t kBytesPerByte = 128;
constexpr std::int64_t kBytesPerItem = 1024;
constexpr std::int64_t kAllowance = std::int64_t{32} << 10;

// The answer worker::run_task gives when run_chunk throws (an unreadable chunk).
detail::Buffer fail_all(std::uint32_t count, const std::string& message) {
  detail::Buffer out;
  detail::ChunkWriter writer(out, count);
  for (std::uint32_t i = 0; i < count; ++i) writer.fail(i, "mpx::DecodeError", message);
  writer.finish();
  return out;
}

// Walks the payload with the codec helpers alone: offsets only move forward and stay
// inside the payload; failures are DecodeError and nothing else.
void walk(const char* data, std::size_t size) {
  std::size_t off = 0;
  try {
    const std::uint32_t n = detail::read_array_header(data, size, off);
    if (off == 0 || off > size) fail("read_array_header moved the offset outside the payload");
    msgpack::zone zone;
    for (std::uint32_t i = 0; i < n; ++i) {
      const std::size_t before = off;
      zone.clear();
      detail::read_object(zone, data, size, off);
      if (off <= before || off > size) fail("read_object moved the offset outside the payload");
    }
  } catch (const mpx::DecodeError&) {
  }
}

template <class R>
void check_answer(const detail::TaskEntry& task, const detail::Buffer& out, std::uint32_t count,
                  bool has_errors) {
  std::vector<bool> seen(count, false);
  std::vector<detail::ErrorInfo> errors;
  try {
    errors = detail::read_results(out.data(), out.size(), count, has_errors,
                                  [&](std::uint32_t i, const msgpack::object& obj) {
                                    if (seen[i]) fail("a value was delivered twice");
                                    seen[i] = true;
                                    detail::Stored<R> value{};
                                    detail::convert_result<R>(obj, value, task);
                                    if (std::is_void_v<R> && !obj.is_nil()) {
                                      fail("a void task answered a non-nil value");
                                    }
                                  });
  } catch (const std::exception& e) {
    fail(std::string("the driver cannot read the worker's answer: ") + e.what());
  }
  if (has_errors != !errors.empty()) fail("has_errors does not match the error list");
  for (const detail::ErrorInfo& e : errors) {
    if (e.item >= count || seen[e.item]) fail("an error names a bad or answered item");
    seen[e.item] = true;
    if (e.type.empty()) fail("an error without a type");
  }
  for (std::uint32_t i = 0; i < count; ++i) {
    if (!seen[i]) fail("item " + std::to_string(i) + " got no answer");
  }
}

struct Target {
  const char* name;
  void (*check)(const detail::TaskEntry&, const detail::Buffer&, std::uint32_t, bool);
};

const Target kTargets[8] = {
    {"square", &check_answer<std::int64_t>},  {"concat", &check_answer<std::string>},
    {"record", &check_answer<void>},          {"fragile", &check_answer<int>},
    {"swap_xy", &check_answer<f::Point>},     {"tally", &check_answer<std::size_t>},
    {"scale", &check_answer<double>},         {"nested", &check_answer<std::size_t>},
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const Target& target = kTargets[data[0] & 7];
  std::uint32_t count = data[0] >> 3;
  // Exact-size copy: a read one past the payload is an ASan report.
  const std::size_t payload_size = size - 1;
  std::unique_ptr<char[]> payload(new char[payload_size]);
  if (payload_size > 0) std::memcpy(payload.get(), data + 1, payload_size);
  if (count == 31) {
    std::size_t off = 0;
    try {
      const std::uint32_t claimed = detail::read_array_header(payload.get(), payload_size, off);
      if (claimed <= kMaxCount) count = claimed;
    } catch (const mpx::DecodeError&) {
    }
  }

  const detail::TaskEntry* entry = detail::find_task(std::string(target.name));
  if (entry == nullptr) fail(std::string("task not registered: ") + target.name);
  detail::Buffer out;
  bool has_errors = false;
  {
    const mpx_fuzz::HeapPeak heap;
    walk(payload.get(), payload_size);
    // As mpx::worker::run_task: a throwing run_chunk fails every item; anything that
    // is not a std::exception escapes and is reported by libFuzzer as a crash.
    try {
      entry->run_chunk(*entry, payload.get(), payload_size, count, out, has_errors);
    } catch (const std::exception& e) {
      out = fail_all(count, e.what());
      has_errors = count > 0;
    }
    const std::int64_t limit = kBytesPerByte * static_cast<std::int64_t>(payload_size) +
                               kBytesPerItem * count + kAllowance;
    if (heap.peak() > limit) {
      fail("decoding " + std::to_string(payload_size) + " bytes took " +
           std::to_string(heap.peak()) + " bytes of heap (limit " + std::to_string(limit) + ")");
    }
  }
  target.check(*entry, out, count, has_errors);
  return 0;
}
