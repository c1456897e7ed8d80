// Messages: one struct per message type over the fixed header (wire.h), and the payloads
// that are not opaque, encoded and checked here and nowhere else.
//
// A header has the same eight fields for every type; what they mean depends on the
// type. Each struct below names its fields and says how they map; header() builds the
// header, from() reads it (wire::decode validated every field's range already), and the
// types with a payload name its format. Task arguments and results stay opaque bytes:
// only the driver and the workers decode them; the router reads headers, and of payloads
// only the two that are its own business (a worker's INIT_FAILED error, its own CONFIG).
//
// | type        | from -> to       | fields                                  | payload            |
// |-------------|------------------|-----------------------------------------|--------------------|
// | HELLO       | driver -> router | pid, wants_lane                         | -                  |
// | WELCOME     | router -> driver | workers, router pid                     | -                  |
// | SUBMIT      | driver -> router | call, start, count, pure, task name,    | argument chunk     |
// |             |                  | attempts (runs lost with a lane worker) |                    |
// | CANCEL      | driver -> router | call, kill_running, want_ack, on_lane   | -                  |
// |             | router -> driver | call (the acknowledgement)              | -                  |
// | SHUTDOWN    | driver -> router | -                                       | -                  |
// | TERMINATE   | driver -> router | -                                       | -                  |
// | READY       | worker -> router | pid, process name                       | -                  |
// | CONFIG      | router -> worker | -                                       | WorkerConfig map   |
// | CONFIGURED  | worker -> router | pid                                     | -                  |
// | INIT_FAILED | worker -> router | pid                                     | ErrorInfo          |
// | TASK        | router -> worker | a SUBMIT forwarded, type byte rewritten | argument chunk     |
// | RESULT      | worker -> driver | call, start, count, pid, has_errors     | result chunk       |
// | LOST        | router -> driver | call, worker pid, timed_out             | LostChunks         |
// | POOL_ERROR  | router -> driver | call (0: the whole pool)                | ErrorInfo          |
// | PING / PONG | router <-> worker| pid (PONG)                              | -                  |
// | STOP        | router -> worker, caller -> actor | -                      | -                  |
// | CALL        | caller -> actor  | call, incarnation, method, pid, tell    | arguments          |
// | REPLY       | actor -> caller  | call, pid, failed                       | result / ErrorInfo |
// | DATA        | one end of an mpx::Pipe -> the other | pid                 | the message        |
// | LANE        | router -> driver, router -> worker | worker pid, 1 fd      | -                  |
// | LANE_END    | router -> driver | worker pid                              | -                  |
// | RESUBMIT    | router -> driver | call, start, count, attempts            | -                  |
// | LANE_FREE   | driver -> router | -                                       | -                  |
//
// RESULT goes worker -> router -> driver unchanged, with the descriptors of the results
// that travel as objects (Header::fds).
//
// Lanes. A pool's driver that asks (HELLO's wants_lane) gets a lane: a stream straight
// to one of its workers, whose two ends the router hands to both (LANE, the descriptor
// with it). A call of one chunk made while nothing else of the driver's is out goes
// TASK driver -> worker and RESULT worker -> driver on it, without the router's two
// hops. The router still answers for what the lane's worker ran: the worker names the
// lane chunk it runs and counts what the lane carried in the page it shares with its
// router (WorkerShared), so that when it dies running one, the router reports the chunk
// LOST, or asks the driver to submit it again (RESUBMIT: with its retries, the router
// has no copy), and then says the lane is gone (LANE_END): a lane chunk still unanswered
// then had not started, and the driver submits it to the router. And the router does not
// hand the lane's worker more than its credit while it is busy with the lane: the
// driver's SUBMITs say whether its lane is busy (lane_busy), and LANE_FREE says that it
// became free while chunks of the driver's were out (they may wait for that worker).
#ifndef MPX_FRAMEWORK_WIRE_MESSAGES_H_
#define MPX_FRAMEWORK_WIRE_MESSAGES_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "framework/wire/wire.h"
#include "mpx/detail/codec.h"
#include "mpx/detail/raw_chunk.h"

namespace mpx {
namespace wire {

using detail::ErrorInfo;

// A message that is its type alone: SHUTDOWN, TERMINATE, STOP, PING, LANE_FREE.
template <Type T>
struct Bare {
  static constexpr Type kType = T;
  Header header() const { return {T}; }
  static Bare from(const Header&) { return {}; }
};
using Shutdown = Bare<Type::kShutdown>;
using Terminate = Bare<Type::kTerminate>;
using Stop = Bare<Type::kStop>;
using Ping = Bare<Type::kPing>;
using LaneFree = Bare<Type::kLaneFree>;

// A message that names its sender's pid: HELLO, PONG, CONFIGURED, INIT_FAILED
// (payload: ErrorInfo) and DATA.
template <Type T>
struct FromProcess {
  static constexpr Type kType = T;
  std::int32_t pid = 0;
  Header header() const { return {T, 0, 0, 0, pid}; }
  static FromProcess from(const Header& h) { return {h.pid}; }
};
using Pong = FromProcess<Type::kPong>;
using Configured = FromProcess<Type::kConfigured>;
using InitFailed = FromProcess<Type::kInitFailed>;
using Data = FromProcess<Type::kData>;  // payload: the message, as the user sent it

struct Hello {
  static constexpr Type kType = Type::kHello;
  std::int32_t pid = 0;
  bool wants_lane = false;  // flags & kFlagWantsLane
  Header header() const { return {kType, 0, 0, 0, pid, wants_lane ? kFlagWantsLane : std::uint8_t{0}}; }
  static Hello from(const Header& h) { return {h.pid, (h.flags & kFlagWantsLane) != 0}; }
};

struct Welcome {
  static constexpr Type kType = Type::kWelcome;
  std::uint32_t workers = 0;   // count
  std::int32_t router_pid = 0;  // pid
  Header header() const { return {kType, 0, 0, workers, router_pid}; }
  static Welcome from(const Header& h) { return {h.count, h.pid}; }
};

// SUBMIT, and TASK (the same chunk on its way to a worker). Payload: the chunk's
// arguments, a msgpack array of count items (opaque to the router).
template <Type T>
struct Chunk {
  static constexpr Type kType = T;
  std::uint64_t call_id = 0;
  std::uint64_t start = 0;   // index of the chunk's first item in its call
  std::uint32_t count = 0;   // items in the chunk
  bool pure = false;         // flags & kFlagPure: an MPX_PURE_TASK, run again if lost
  std::string_view task;     // name: the registered task's name
  // pid: runs of it already lost with their worker (a lane chunk the router asked to
  // have again, RESUBMIT): they count against its retries.
  std::int32_t attempts = 0;
  bool lane_busy = false;  // flags & kFlagLaneBusy (SUBMIT): the sender's lane is busy
  Header header() const {
    return {T, call_id, start, count, attempts,
            static_cast<std::uint8_t>((pure ? kFlagPure : 0) | (lane_busy ? kFlagLaneBusy : 0)), task};
  }
  static Chunk from(const Header& h) {
    return {h.call_id, h.start, h.count, (h.flags & kFlagPure) != 0, h.name, std::max(h.pid, 0),
            (h.flags & kFlagLaneBusy) != 0};
  }
  // A chunk names at least one item, and no more than it has bytes (each item takes
  // one at least): a larger count is a lie that would make a worker build an error
  // answer of that many items. A chunk of numbers held in an argument buffer
  // (mpx/detail/raw_chunk.h) has its items there, not in the payload: the worker checks
  // its count against the buffer. false and *why otherwise.
  bool valid(std::string_view payload, std::string* why) const {
    if (count == 0) {
      *why = "an empty " + std::string(type_name(T)) + " of call " + std::to_string(call_id);
      return false;
    }
    const std::size_t payload_size = payload.size();
    const bool in_buffer = detail::at_raw_chunk(payload.data(), payload.size(), 0) &&
                           !detail::at_raw_block(payload.data(), payload.size(), 0);
    if (count > payload_size && !in_buffer) {
      *why = "a " + std::string(type_name(T)) + " of call " + std::to_string(call_id) + " announcing " +
             std::to_string(count) + " items in " + std::to_string(payload_size) + " bytes";
      return false;
    }
    return true;
  }
};
using Submit = Chunk<Type::kSubmit>;
using Task = Chunk<Type::kTask>;

struct Cancel {
  static constexpr Type kType = Type::kCancel;
  std::uint64_t call_id = 0;
  bool kill_running = false;  // flags & kFlagKillRunning: chunks running are stopped too
  // flags & kFlagWantAck: the router answers with a CANCEL of the call once every
  // worker holding its chunks was told (from then on none of them starts one).
  bool want_ack = false;
  // flags & kFlagOnLane: a chunk of the call went by the driver's lane, so the lane's
  // worker is told too (and stopped, with kill_running, if it runs that chunk).
  bool on_lane = false;
  Header header() const {
    return {kType, call_id, 0, 0, 0,
            static_cast<std::uint8_t>((kill_running ? kFlagKillRunning : 0) | (want_ack ? kFlagWantAck : 0) |
                                      (on_lane ? kFlagOnLane : 0))};
  }
  static Cancel from(const Header& h) {
    return {h.call_id, (h.flags & kFlagKillRunning) != 0, (h.flags & kFlagWantAck) != 0,
            (h.flags & kFlagOnLane) != 0};
  }
};

// Payload: the chunk's results (see mpx/detail/codec.h), opaque to the router.
struct Result {
  static constexpr Type kType = Type::kResult;
  std::uint64_t call_id = 0;
  std::uint64_t start = 0;
  std::uint32_t count = 0;
  std::int32_t pid = 0;     // the worker that ran it
  bool has_errors = false;  // flags & kFlagHasErrors: an error list follows the values
  std::uint8_t objects = 0;  // fds: its own result objects' memfds (wire::own_fds; more came ahead)
  Header header() const {
    Header h{kType, call_id, start, count, pid, has_errors ? kFlagHasErrors : std::uint8_t{0}};
    h.fds = objects;
    return h;
  }
  static Result from(const Header& h) {
    return {h.call_id, h.start, h.count, h.pid, (h.flags & kFlagHasErrors) != 0, h.fds};
  }
};

// Chunks of one call that died with their worker. Payload: LostChunks.
struct Lost {
  static constexpr Type kType = Type::kLost;
  std::uint64_t call_id = 0;
  std::int32_t pid = 0;     // the worker that died
  bool timed_out = false;   // flags & kFlagTimedOut: it was killed for its time budget
  Header header() const { return {kType, call_id, 0, 0, pid, timed_out ? kFlagTimedOut : std::uint8_t{0}}; }
  static Lost from(const Header& h) { return {h.call_id, h.pid, (h.flags & kFlagTimedOut) != 0}; }
};
// (start, count) of each lost chunk.
using Ranges = std::vector<std::pair<std::uint64_t, std::uint32_t>>;
struct LostChunks {
  // type "mpx::WorkerLost" or "mpx::TimeoutError", message: how the worker ended, pid.
  ErrorInfo error;
  Ranges ranges;
  MSGPACK_DEFINE(error, ranges);
};
std::string encode(const LostChunks& lost);
// Throws DecodeError.
LostChunks decode_lost(std::string_view payload);

// Payload: ErrorInfo, message: why. Type "mpx::PoolBroken": the pool is broken (for
// every call when call_id is 0); "mpx::DecodeError": the router refused a chunk of the
// call that it could not take (an empty SUBMIT, or one announcing more items than bytes).
struct PoolError {
  static constexpr Type kType = Type::kPoolError;
  std::uint64_t call_id = 0;  // 0: every call of the pool
  Header header() const { return {kType, call_id}; }
  static PoolError from(const Header& h) { return {h.call_id}; }
};

// LANE: one end of a new lane (the header's one descriptor), to the driver and to the
// worker at the other end. LANE_END: that worker is gone, and what the router had to
// say about its lane chunk was said before.
template <Type T>
struct LaneNote {
  static constexpr Type kType = T;
  std::int32_t pid = 0;  // the lane's worker
  Header header() const {
    Header h{T, 0, 0, 0, pid};
    if (T == Type::kLane) h.fds = 1;
    return h;
  }
  static LaneNote from(const Header& h) { return {h.pid}; }
};
using Lane = LaneNote<Type::kLane>;
using LaneEnd = LaneNote<Type::kLaneEnd>;

// A lane chunk whose worker died running it, to be submitted again with attempts runs
// lost (the router keeps no copy of a lane chunk).
struct Resubmit {
  static constexpr Type kType = Type::kResubmit;
  std::uint64_t call_id = 0;
  std::uint64_t start = 0;
  std::uint32_t count = 0;
  std::int32_t attempts = 0;  // pid
  Header header() const { return {kType, call_id, start, count, attempts}; }
  static Resubmit from(const Header& h) { return {h.call_id, h.start, h.count, std::max(h.pid, 0)}; }
};

struct Ready {
  static constexpr Type kType = Type::kReady;
  std::int32_t pid = 0;
  std::string_view name;  // the worker's process name
  Header header() const { return {kType, 0, 0, 0, pid, 0, name}; }
  static Ready from(const Header& h) { return {h.pid, h.name}; }
};

// Payload: WorkerConfig, a msgpack map of named fields.
using Config = Bare<Type::kConfig>;
struct WorkerConfig {
  std::string initializer;        // task name; empty: none
  std::string initializer_args;   // its msgpack argument array
  std::uint64_t max_message_bytes = std::uint64_t{1} << 30;  // larger results fail
  std::uint64_t memory_limit = 0;  // RLIMIT_AS the worker sets on itself; 0: none
  // Results of this many bytes or more go back as objects, their descriptors with the
  // RESULT frame (mpx/object.h); 0: every result by value.
  std::uint64_t object_threshold = 0;
  template <class Self, class F>
  static void fields(Self& self, F&& field) {
    field("initializer", self.initializer);
    field("initializer_args", self.initializer_args);
    field("max_message_bytes", self.max_message_bytes);
    field("memory_limit", self.memory_limit);
    field("object_threshold", self.object_threshold);
  }
};
std::string encode(const WorkerConfig& config);
// Absent fields keep their defaults, unknown ones are ignored; throws DecodeError.
WorkerConfig decode_worker_config(std::string_view payload);

// Payload: the arguments (msgpack array).
struct Call {
  static constexpr Type kType = Type::kCall;
  std::uint64_t call_id = 0;
  std::uint32_t incarnation = 0;  // start: the actor process it is meant for
  std::uint32_t method = 0;       // count: the method's index in MPX_ACTOR's list
  std::int32_t pid = 0;           // the caller
  bool tell = false;              // flags & kFlagNoReply: nobody waits for an answer
  Header header() const {
    return {kType, call_id, incarnation, method, pid, tell ? kFlagNoReply : std::uint8_t{0}};
  }
  static Call from(const Header& h) {
    return {h.call_id, static_cast<std::uint32_t>(h.start), h.count, h.pid, (h.flags & kFlagNoReply) != 0};
  }
};

// Payload: the method's result (msgpack), or ErrorInfo when failed.
struct Reply {
  static constexpr Type kType = Type::kReply;
  std::uint64_t call_id = 0;
  std::int32_t pid = 0;  // the actor's process
  bool failed = false;   // flags & kFlagHasErrors
  Header header() const { return {kType, call_id, 0, 0, pid, failed ? kFlagHasErrors : std::uint8_t{0}}; }
  static Reply from(const Header& h) { return {h.call_id, h.pid, (h.flags & kFlagHasErrors) != 0}; }
};

}  // namespace wire
}  // namespace mpx

#endif  // MPX_FRAMEWORK_WIRE_MESSAGES_H_
