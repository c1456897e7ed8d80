// Wire header: the small msgpack frame in front of every payload frame.
//
// Every mpx message is this header and a payload, framed by the transport
// (framework/transport); messages.h gives each type's fields their names. Routers
// route on headers; task arguments and results pass through them untouched. The
// header is a fixed-shape msgpack array so it can be decoded without allocation:
//   [version, type, call_id, start, count, pid, flags, name]
// or, for a frame that carries descriptors (SCM_RIGHTS, see transport.h), the same with
// a ninth field, how many: [..., name, fds].
// Decoding validates everything (version, type, integer ranges, name length) and
// reports a reason instead of throwing, since hostile or corrupt input is an ordinary
// outcome for a socket reader.
#ifndef MPX_FRAMEWORK_WIRE_WIRE_H_
#define MPX_FRAMEWORK_WIRE_WIRE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mpx {
namespace wire {

constexpr std::uint8_t kVersion = 1;
// Headers are tiny; anything longer is rejected before parsing.
constexpr std::size_t kMaxHeaderSize = 512;
constexpr std::size_t kMaxNameSize = 255;
// Most descriptors one frame carries (the kernel's own limit is 253 per message).
constexpr std::uint8_t kMaxFds = 64;
// Most descriptors one frame brings in all: kMaxFds of its own, the rest in DESCRIPTORS
// frames sent just ahead of it (kMaxFds each), which the receiving transport::Reader
// hands over with it. Bounded so that a peer cannot make a reader hold descriptors
// without end; a chunk's results are objects up to this many (then by value).
constexpr std::size_t kMaxFrameFds = 1024;
// How many of a frame's n descriptors (n <= kMaxFrameFds) go with it, in its header's
// fds: the last ones, 1 to kMaxFds of them; those before go ahead in DESCRIPTORS frames.
inline std::uint8_t own_fds(std::size_t n) {
  return n == 0 ? 0 : static_cast<std::uint8_t>((n - 1) % kMaxFds + 1);
}

// What each type's fields mean, and its payload: messages.h, one struct per type.
enum class Type : std::uint8_t {
  kHello = 1,
  kSubmit,
  kCancel,
  kShutdown,
  kTerminate,
  kWelcome,
  kResult,
  kLost,
  kPoolError,
  kReady,
  kConfig,
  kInitFailed,
  kTask,
  kStop,
  kPing,
  kPong,
  kConfigured,
  kCall,
  kReply,
  kData,
  kLane,
  kLaneEnd,
  kResubmit,
  kLaneFree,
  // Descriptors (its header's fds, kMaxFds) for the frame that follows, which has more
  // than one frame's worth (see kMaxFrameFds); no payload. transport::Reader takes it
  // in and never returns it.
  kDescriptors,
  kLastType = kDescriptors,
};

const char* type_name(Type t);

// A heartbeat says that a peer lives, not that there is work. Loops that trim once idle
// (base::IdleTrim) do not count it as work: heartbeats come once per heartbeat_interval,
// the same period as the trim's, and under load they would win the race every time.
inline bool is_heartbeat(Type t) { return t == Type::kPing || t == Type::kPong; }

// Flag bits.
constexpr std::uint8_t kFlagHasErrors = 1;  // kResult: an error list follows the results
constexpr std::uint8_t kFlagPure = 2;       // kSubmit, kTask: an MPX_PURE_TASK (retried)
constexpr std::uint8_t kFlagTimedOut = 4;   // kLost: the chunk ran over its time budget
constexpr std::uint8_t kFlagNoReply = 8;    // kCall: a tell, nobody waits for an answer
constexpr std::uint8_t kFlagKillRunning = 16;  // kCancel: also kill workers running the call
constexpr std::uint8_t kFlagWantAck = 32;      // kCancel: answer with a CANCEL once done
constexpr std::uint8_t kFlagWantsLane = 64;    // kHello: the client takes a lane (kLane)
constexpr std::uint8_t kFlagOnLane = 128;      // kCancel: the call has a chunk on the lane
// kSubmit: the sender's lane is busy (its worker runs or has queued a chunk of the
// sender's). Flags are per type: this is kFlagTimedOut's bit, which only LOST carries.
constexpr std::uint8_t kFlagLaneBusy = 4;

// Upper bounds, in seconds, of the chunk latency histogram (PoolStatus): the router's
// for the chunks it hands out, a worker's for those that come by its lane.
constexpr double kLatencyBounds[] = {0.0001, 0.001, 0.01, 0.1, 1, 10, 60};
constexpr std::size_t kLatencyBuckets = sizeof(kLatencyBounds) / sizeof(kLatencyBounds[0]);

// What a worker writes in the memory it shares with its router while it runs the chunk
// (call_id, start), so that, if it dies, the router knows which chunk killed it and
// which ones had merely finished (their results possibly lost with it). Never 0, which
// means "between chunks".
inline std::uint64_t chunk_mark(std::uint64_t call_id, std::uint64_t start) {
  std::uint64_t h = call_id * 0x9E3779B97F4A7C15ull ^ (start + 0x632BE59BD9B4E019ull);
  h ^= h >> 31;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 29;
  return h | 1;
}

// What came and went by a worker's lane (wire::Lane), as its router reads it from
// WorkerShared::lane.
struct LaneCounts {
  std::uint64_t received_chunks = 0, received_items = 0, bytes_in = 0;
  std::uint64_t completed_chunks = 0, completed_items = 0, error_chunks = 0, bytes_out = 0;
  std::uint64_t latency_count = 0, latency_sum_ns = 0;
  std::uint64_t latency_buckets[kLatencyBuckets] = {};
};

// The memory a local worker shares with its router (see local_workers.h).
// running: the chunk_mark of the chunk the worker runs, 0 between chunks (worker
// writes). unsent: results the worker finished and has not written to its socket yet,
// unsent_bytes of whole frames (worker writes, router reads once the worker is dead;
// see worker::ResultBatch). cancelled: the last kCancelSlots cancelled calls whose chunks the worker
// held, call ids at cancels % kCancelSlots (router writes; slots first, then cancels).
// A worker holds at most a few dozen chunks, so a cancel it still needs is never
// overwritten. The handshake that makes a cancelled chunk either skipped by the worker
// or seen running by the router: the worker stores running, then reads cancelled; the
// router stores cancelled, then reads running (all sequentially consistent).
//
// A worker with a lane (wire::Lane) runs chunks its router never saw: lane_* name the
// lane chunk it runs (stored before running is), so that the router can account for it
// if the worker dies running it, and lane counts what came and went by the lane, which
// the router adds to its own counts (PoolStatus). Worker writes, router reads.
//
// Taking chunks back (work stealing): a worker busy with a long chunk holds the chunks
// prefetched behind it, which an idle worker could run. `taken` is one word, so that
// both sides change it with one compare-exchange and neither waits: its high bits
// count the TASKs from the router (not the lane) that the worker has taken up (run, or
// skipped as cancelled or taken back), modulo 2^kTakenUpBits; its low kSkipBits count
// those after them that the router took back, which the worker skips as it reaches
// them. The router takes back every TASK the worker has not reached, up to the number
// it sent, and takes back again while earlier ones still wait to be skipped: a worker
// can run a chunk from its lane before it reads the TASKs taken back behind the last
// one, and the TASKs sent to it after those would otherwise wait for that chunk (a map
// waiting for a long task the caller will only end after the map). Each TASK is
// either taken up by its worker or taken back by the router, never both.
struct WorkerShared {
  static constexpr std::size_t kCancelSlots = 256;
  static constexpr std::size_t kUnsentCapacity = 32 * 1024;
  // A worker holds at most its credit of chunks; past kMaxSkip not taken up (a prefetch
  // of millions) nothing is taken back. The count taken up wraps: only its distance to
  // the number sent, never 2^kTakenUpBits, matters.
  static constexpr unsigned kSkipBits = 24;
  static constexpr unsigned kTakenUpBits = 64 - kSkipBits;
  static constexpr std::uint64_t kMaxSkip = (std::uint64_t{1} << kSkipBits) - 1;
  static constexpr std::uint64_t kTakenUpMask = (std::uint64_t{1} << kTakenUpBits) - 1;
  std::atomic<std::uint64_t> running;
  std::atomic<std::uint64_t> taken;
  std::atomic<std::uint64_t> cancels;
  std::atomic<std::uint64_t> cancelled[kCancelSlots];
  std::atomic<std::uint64_t> lane_call, lane_start;
  std::atomic<std::uint32_t> lane_count;
  std::atomic<std::uint8_t> lane_flags;  // the TASK's flags (kFlagPure)
  struct {
    std::atomic<std::uint64_t> received_chunks, received_items, bytes_in;
    std::atomic<std::uint64_t> completed_chunks, completed_items, error_chunks, bytes_out;
    std::atomic<std::uint64_t> latency_count, latency_sum_ns;
    std::atomic<std::uint64_t> latency_buckets[kLatencyBuckets];
  } lane;
  std::atomic<std::uint32_t> unsent_bytes;
  char unsent[kUnsentCapacity];
  // Router side: the lane counts so far (each field read once; a chunk in progress may
  // be counted received and not yet completed).
  LaneCounts lane_counts() const {
    LaneCounts c;
    c.received_chunks = lane.received_chunks.load(std::memory_order_relaxed);
    c.received_items = lane.received_items.load(std::memory_order_relaxed);
    c.bytes_in = lane.bytes_in.load(std::memory_order_relaxed);
    c.completed_chunks = lane.completed_chunks.load(std::memory_order_relaxed);
    c.completed_items = lane.completed_items.load(std::memory_order_relaxed);
    c.error_chunks = lane.error_chunks.load(std::memory_order_relaxed);
    c.bytes_out = lane.bytes_out.load(std::memory_order_relaxed);
    c.latency_count = lane.latency_count.load(std::memory_order_relaxed);
    c.latency_sum_ns = lane.latency_sum_ns.load(std::memory_order_relaxed);
    for (std::size_t b = 0; b < kLatencyBuckets; ++b) {
      c.latency_buckets[b] = lane.latency_buckets[b].load(std::memory_order_relaxed);
    }
    return c;
  }
  // Worker side: whether call_id was cancelled.
  bool is_cancelled(std::uint64_t call_id) const {
    const std::uint64_t n = cancels.load();
    const std::uint64_t first = n > kCancelSlots ? n - kCancelSlots : 0;
    for (std::uint64_t i = first; i < n; ++i) {
      if (cancelled[i % kCancelSlots].load() == call_id) return true;
    }
    return false;
  }
  // Worker side: takes up its next TASK from the router; false when the router took
  // it back (the worker skips it: an idle worker runs it).
  bool take_up_next() {
    std::uint64_t t = taken.load(std::memory_order_acquire);
    for (;;) {
      const std::uint64_t skip = t & kMaxSkip;
      // The shift drops the count's carry out of the word: it wraps.
      const std::uint64_t next = (((t >> kSkipBits) + 1) << kSkipBits) | (skip == 0 ? 0 : skip - 1);
      if (taken.compare_exchange_weak(t, next, std::memory_order_acq_rel)) return skip == 0;
    }
  }
  // Router side: takes back the TASKs the worker has not reached, of the `sent` it was
  // sent so far. Returns the number of the first one taken back now (those before it
  // were taken up, or taken back earlier); sent when none was.
  std::uint64_t take_back(std::uint64_t sent) {
    std::uint64_t t = taken.load(std::memory_order_acquire);
    for (;;) {
      const std::uint64_t not_taken_up = (sent - (t >> kSkipBits)) & kTakenUpMask;
      const std::uint64_t skip = t & kMaxSkip;
      if (skip >= not_taken_up || not_taken_up > kMaxSkip) return sent;
      if (taken.compare_exchange_weak(t, (t & ~kMaxSkip) | not_taken_up, std::memory_order_acq_rel)) {
        return sent - not_taken_up + skip;
      }
    }
  }
  // Router side: publishes a cancel, then returns the running mark.
  std::uint64_t cancel(std::uint64_t call_id) {
    const std::uint64_t n = cancels.load();
    cancelled[n % kCancelSlots].store(call_id);
    cancels.store(n + 1);
    return running.load();
  }
};

struct Header {
  Type type = Type::kHello;
  std::uint64_t call_id = 0;
  std::uint64_t start = 0;
  std::uint32_t count = 0;
  std::int32_t pid = 0;
  std::uint8_t flags = 0;
  // Task name (SUBMIT, TASK) or process name (READY). Points into the buffer it was
  // decoded from, or to storage the encoder's caller keeps alive.
  std::string_view name;
  // Descriptors sent with the frame (a RESULT's objects), at most kMaxFds.
  std::uint8_t fds = 0;
};

// Encodes h into out (at least kMaxHeaderSize bytes); returns the size written.
// Names longer than kMaxNameSize are a caller bug: the process aborts with a message
// (in every build mode).
std::size_t encode(const Header& h, char* out);
std::string encode(const Header& h);

// Decodes a header; on failure returns nullopt and sets *why to a short reason.
std::optional<Header> decode(const char* data, std::size_t size, std::string* why);

}  // namespace wire
}  // namespace mpx

#endif  // MPX_FRAMEWORK_WIRE_WIRE_H_
