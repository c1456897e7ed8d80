// Wire header: the small msgpack frame in front of every payload frame.
//
// Every mpx message is this header and an opaque payload, framed by the transport
// (framework/transport). Routers decode headers only; payloads pass through untouched. The header is a fixed-shape
// msgpack array so it can be decoded without allocation:
//   [version, type, call_id, start, count, pid, flags, name]
// Decoding validates everything (version, type, integer ranges, name length) and
// reports a reason instead of throwing, since hostile or corrupt input is an ordinary
// outcome for a socket reader.
#ifndef MPX_FRAMEWORK_WIRE_WIRE_H_
#define MPX_FRAMEWORK_WIRE_WIRE_H_

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

enum class Type : std::uint8_t {
  // driver -> router
  kHello = 1,   // from the driver's result socket: "send results here"
  kSubmit,      // a chunk of a call: call_id, start, count, name = task
  kCancel,      // drop queued chunks of call_id
  kShutdown,    // stop workers gracefully, then exit
  kTerminate,   // kill workers now, then exit
  // router -> driver
  kWelcome,     // answer to kHello; count = number of workers
  kResult,      // forwarded from a worker unchanged
  kLost,        // chunks of call_id died with a worker; payload lists them
  kPoolError,   // the pool is broken (initializer failed, workers cannot start)
  // router <-> worker
  kReady,       // worker -> router after connecting: pid, name
  kConfig,      // router -> worker: payload = initializer, name = its task name
  kInitFailed,  // worker -> router: initializer threw; payload = [type, message]
  kTask,        // router -> worker: a kSubmit forwarded unchanged but for the type
  kStop,        // router -> worker: exit now
  kPing,
  kPong,
  kConfigured,  // worker -> router: the initializer finished; heartbeats apply from now
  // caller <-> actor (framework/actor); kHello/kWelcome/kStop are reused there
  kCall,        // caller -> actor: call_id, start = incarnation, count = method index,
                // name = the caller's reply socket id; kFlagNoReply for a tell
  kReply,       // actor -> caller: call_id; kFlagHasErrors: payload = [type, message]
  // either end of an mpx::Pipe
  kData,        // one Connection message: the payload
  kLastType = kData,
};

const char* type_name(Type t);

// Flag bits.
constexpr std::uint8_t kFlagHasErrors = 1;  // kResult: an error list follows the results
constexpr std::uint8_t kFlagPure = 2;       // kSubmit, kTask: an MPX_PURE_TASK (retried)
constexpr std::uint8_t kFlagTimedOut = 4;   // kLost: the chunk ran over its time budget
constexpr std::uint8_t kFlagNoReply = 8;    // kCall: a tell, nobody waits for an answer

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

struct Header {
  Type type = Type::kHello;
  std::uint64_t call_id = 0;
  std::uint64_t start = 0;
  std::uint32_t count = 0;
  std::int32_t pid = 0;
  std::uint8_t flags = 0;
  // Task name (kSubmit, kTask, kConfig) or process name (kReady). Points into the
  // buffer it was decoded from, or to storage the encoder's caller keeps alive.
  std::string_view name;
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
