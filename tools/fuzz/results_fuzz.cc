// libFuzzer target: mpx::detail::read_results, the driver's reader of the RESULT
// chunks workers send back, with convert_result for a few result types, as
// GatherCall/StreamCall run them.
//
// Input: byte 0 = the header's item count (low 7 bits) and its has-errors flag (bit 7);
// byte 1 picks the result type (low 2 bits); the rest is the result payload.
//
// Properties checked on every input:
//   - read_results returns or throws mpx::DecodeError, nothing else;
//   - when it returns, every item of the chunk is either delivered once as a value, in
//     order, or named once in the error list — never both, never outside the chunk;
//   - it never holds more than kBytesPerByte times the payload's size (plus a fixed
//     allowance) on the heap: no few bytes may claim megabytes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "mpx/detail/call.h"
#include "mpx/detail/codec.h"
#include "mpx/errors.h"
#include "mpx/task.h"
#include "tools/fuzz/heap_peak.h"

namespace {

namespace detail = mpx::detail;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "results_fuzz: property violated: %s\n", what.c_str());
  std::abort();
}

struct Point {
  int x = 0;
  int y = 0;
  std::string label;
  MSGPACK_DEFINE(x, y, label);
};

// See payload_fuzz.cc. (Measured over a 5-minute corpus: at most 128 * size + 8.7 KB.)
constexpr std::int64_t kBytesPerByte = 128;
constexpr std::int64_t kAllowance = std::int64_t{32} << 10;

// Only its name is read (in convert_result's error message).
const detail::TaskEntry kTask{"fuzzed_task", nullptr, 1, nullptr, nullptr};

template <class R>
void read(const char* data, std::size_t size, std::uint32_t count, bool has_errors) {
  std::vector<bool> seen(count, false);
  std::int64_t last = -1;
  std::vector<detail::ErrorInfo> errors;
  try {
    errors = detail::read_results(data, size, count, has_errors,
                                  [&](std::uint32_t i, const msgpack::object& obj) {
                                    if (i >= count) fail("a value outside the chunk");
                                    if (static_cast<std::int64_t>(i) <= last) {
                                      fail("values out of order or repeated");
                                    }
                                    last = i;
                                    seen[i] = true;
                                    detail::Stored<R> value{};
                                    detail::convert_result<R>(obj, value, kTask);
                                  });
  } catch (const mpx::DecodeError&) {
    return;  // the pool fails the call with it: the expected outcome for garbage
  } catch (...) {
    fail("read_results threw " + detail::current_exception_type() + ": " +
         detail::current_exception_message());
  }
  if (!has_errors && !errors.empty()) fail("an error list without the has-errors flag");
  for (std::size_t k = 0; k < errors.size(); ++k) {
    const std::uint32_t i = errors[k].item;
    if (i >= count) fail("an error outside the chunk");
    if (k > 0 && i <= errors[k - 1].item) fail("errors out of order or repeated");
    if (seen[i]) fail("an item is both a value and an error");
    seen[i] = true;
  }
  for (std::uint32_t i = 0; i < count; ++i) {
    if (!seen[i]) fail("item " + std::to_string(i) + " is neither a value nor an error");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint32_t count = data[0] & 0x7f;
  const bool has_errors = (data[0] & 0x80) != 0;
  const std::size_t payload_size = size - 2;
  // Exact-size copy: a read one past the payload is an ASan report.
  std::unique_ptr<char[]> payload(new char[payload_size]);
  if (payload_size > 0) std::memcpy(payload.get(), data + 2, payload_size);
  const mpx_fuzz::HeapPeak heap;
  switch (data[1] & 3) {
    case 0: read<int>(payload.get(), payload_size, count, has_errors); break;
    case 1: read<std::string>(payload.get(), payload_size, count, has_errors); break;
    case 2: read<Point>(payload.get(), payload_size, count, has_errors); break;
    case 3: read<void>(payload.get(), payload_size, count, has_errors); break;
  }
  const std::int64_t limit = kBytesPerByte * static_cast<std::int64_t>(payload_size) + kAllowance;
  if (heap.peak() > limit) {
    fail("reading " + std::to_string(payload_size) + " bytes took " + std::to_string(heap.peak()) +
         " bytes of heap (limit " + std::to_string(limit) + ")");
  }
  return 0;
}
