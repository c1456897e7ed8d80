// libFuzzer target: mpx::detail::unpack_segment, which turns a shared-object handle
// found in a task's arguments ([kind, owner pid, fd, id, type hash, count]) into a
// mapped segment.
//
// Input: byte 0 picks the kind and element type the receiver asks for (from 0xF0 on:
// an mpx::Span<const double> task parameter, [object ref, first, count] or a bin of
// bytes); the rest is one msgpack object, decoded with read_object as a worker decodes
// an argument.
//
// Hermetic: unpack_segment opens /proc/<owner>/fd/<fd> of other processes, so before
// the call the owner field is rewritten: a positive pid becomes this process's own pid
// (even) or 0x7ffffff0 (odd), which is above the kernel's PID_MAX_LIMIT and so never
// names a process; zero and negative owners are left as they are (never opened). Ids
// 0..7 are replaced by the ids of four real segments this process owns (the fourth a
// read-only object of 16 doubles), so the checks of a segment that exists (kind, type,
// count, a Span's range) are reached too.
//
// Acceptable outcomes: a segment of the asked kind, a Span inside its object (or owning
// its bytes), or msgpack::type_error, mpx::SharedMemoryError or mpx::DecodeError.
// Anything else is a bug.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "mpx/detail/codec.h"
#include "mpx/detail/segment.h"
#include "mpx/errors.h"
#include "mpx/object.h"

namespace {

namespace detail = mpx::detail;
using detail::SegmentKind;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "segment_ref_fuzz: property violated: %s\n", what.c_str());
  std::abort();
}

constexpr pid_t kNoSuchPid = 0x7ffffff0;  // > PID_MAX_LIMIT (2^22): never a process

struct Owned {
  std::shared_ptr<detail::Segment> segments[4];
  Owned() {
    segments[0] =
        detail::Segment::create(SegmentKind::kValue, detail::type_tag<int>(), 1, sizeof(int));
    segments[1] = detail::Segment::create(SegmentKind::kArray, detail::type_tag<double>(), 16,
                                          16 * sizeof(double));
    segments[2] = detail::Segment::create(SegmentKind::kLock, detail::untyped_tag(), 0, 64);
    const std::vector<double> sixteen(16, 0.5);
    segments[3] = detail::ObjectAccess::segment(mpx::put(sixteen));
  }
};

const Owned& owned() {
  static const Owned* o = new Owned();  // kept for the whole run, like a live handle
  return *o;
}

const detail::TypeTag& tag_for(int pick) {
  switch (pick % 3) {
    case 0: return detail::type_tag<int>();
    case 1: return detail::type_tag<double>();
    default: return detail::untyped_tag();
  }
}

void set_int(msgpack::object& o, std::int64_t v) {
  if (v < 0) {
    o.type = msgpack::type::NEGATIVE_INTEGER;
    o.via.i64 = v;
  } else {
    o.type = msgpack::type::POSITIVE_INTEGER;
    o.via.u64 = static_cast<std::uint64_t>(v);
  }
}

// Rewrites the owner and id fields of something shaped like a handle (see above).
void constrain(msgpack::object& o) {
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 6) return;
  msgpack::object* f = o.via.array.ptr;
  if (f[1].type == msgpack::type::POSITIVE_INTEGER ||
      f[1].type == msgpack::type::NEGATIVE_INTEGER) {
    // Exactly the narrowing unpack_segment applies, so the pid it computes is ours.
    const std::int64_t wide = f[1].type == msgpack::type::POSITIVE_INTEGER
                                  ? static_cast<std::int64_t>(f[1].via.u64)
                                  : f[1].via.i64;
    const auto pid = static_cast<pid_t>(wide);
    if (f[1].type == msgpack::type::POSITIVE_INTEGER && f[1].via.u64 > INT64_MAX) {
      // as<std::int64_t>() throws type_error for it: nothing is opened.
    } else if (pid > 0) {
      set_int(f[1], pid % 2 == 0 ? getpid() : kNoSuchPid);
    } else {
      set_int(f[1], pid);
    }
  }
  if (f[3].type == msgpack::type::POSITIVE_INTEGER && f[3].via.u64 < 8) {
    f[3].via.u64 = owned().segments[f[3].via.u64 % 4]->ref().id;
  }
}

// A Span parameter: [ref, first, count] (the ref constrained as above) or a bin.
void decode_span(msgpack::object& o) {
  if (o.type == msgpack::type::ARRAY && o.via.array.size == 3) constrain(o.via.array.ptr[0]);
  try {
    const auto span = o.as<mpx::Span<const double>>();
    if (span.in_object()) {
      const auto& object = *owned().segments[3];
      const auto* first = reinterpret_cast<const double*>(object.body());
      if (span.data() < first || span.data() + span.size() > first + object.ref().count) {
        fail("a Span views memory outside its object");
      }
    } else if (o.type != msgpack::type::BIN || span.size_bytes() != o.via.bin.size) {
      fail("a Span owns bytes it was not sent");
    }
    for (double x : span) (void)x;  // readable throughout
  } catch (const msgpack::type_error&) {
  } catch (const mpx::SharedMemoryError&) {
  } catch (const mpx::DecodeError&) {
  } catch (...) {
    fail("Span decoding threw " + detail::current_exception_type() + ": " +
         detail::current_exception_message());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const Owned& mine = owned();
  const auto kind = static_cast<SegmentKind>(1 + data[0] % 8);
  const detail::TypeTag& tag = tag_for(data[0] / 8);
  msgpack::zone zone;
  std::size_t off = 0;
  msgpack::object obj;
  try {
    obj = detail::read_object(zone, reinterpret_cast<const char*>(data) + 1, size - 1, off);
  } catch (const mpx::DecodeError&) {
    return 0;
  }
  if (data[0] >= 0xF0) {
    decode_span(obj);
    return 0;
  }
  constrain(obj);
  try {
    std::shared_ptr<detail::Segment> seg = detail::unpack_segment(obj, kind, tag);
    if (!seg) fail("unpack_segment returned null");
    bool ours = false;
    for (const auto& s : mine.segments) ours = ours || s == seg;
    if (!ours) fail("unpack_segment returned a segment this process does not own");
    if (seg->ref().kind != kind) fail("unpack_segment returned a segment of another kind");
  } catch (const msgpack::type_error&) {
  } catch (const mpx::SharedMemoryError&) {
  } catch (const mpx::DecodeError&) {
  } catch (...) {
    fail("unpack_segment threw " + detail::current_exception_type() + ": " +
         detail::current_exception_message());
  }
  return 0;
}
