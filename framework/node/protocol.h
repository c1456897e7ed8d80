// What a node agent and a pool's router say over their ZeroMQ link (DEALER at the agent,
// ROUTER at the router; the ROUTER's first frame, the agent's routing id, is not shown).
// Each message is a kind frame (one byte) and its parts:
//
// | kind | from -> to       | parts                         | meaning                        |
// |------|------------------|-------------------------------|--------------------------------|
// | H    | agent -> router  | Hello map                     | join with slots workers        |
// | W    | router -> agent  | Welcome map                   | admitted; heartbeat timing     |
// | N    | router -> agent  | reason text                   | refused (build, tasks); exit   |
// | B    | both             | -                             | heartbeat                      |
// | S    | router -> agent  | worker id, process name       | start a worker                 |
// | K    | router -> agent  | worker id                     | kill it                        |
// | X    | agent -> router  | Exit map                      | a worker ended (after its last |
// |      |                  |                               | M: the link keeps order)       |
// | T    | agent -> router  | stopped worker ids, '\n'-joined | which workers are stopped    |
// | M    | both             | worker id, header, payload    | a frame to or from a worker    |
// | Q    | router -> agent  | reason text                   | the pool is gone: kill, exit   |
// | L    | router -> agent  | reason text                   | declared lost: kill, join anew |
// | P    | both             | bytes                         | a piece of the next message's  |
// |      |                  |                               | last part (see node::Link)     |
//
// Worker ids are the router's: the agent maps them to its own children.
#ifndef MPX_FRAMEWORK_NODE_PROTOCOL_H_
#define MPX_FRAMEWORK_NODE_PROTOCOL_H_

#include <chrono>
#include <cstdint>
#include <string>

namespace mpx {
namespace node {

enum class Kind : char {
  kHello = 'H',
  kWelcome = 'W',
  kRefused = 'N',
  kBeat = 'B',
  kSpawn = 'S',
  kKill = 'K',
  kExit = 'X',
  kStopped = 'T',
  kMessage = 'M',
  kQuit = 'Q',
  kLost = 'L',
  kPiece = 'P',
};

struct Hello {
  std::string host;       // the agent's host name
  std::int64_t pid = 0;   // the agent's pid
  int slots = 0;          // workers it runs
  std::string build_id;   // of its binary (see build_id())
  std::string tasks;      // hash of the registered task names (tasks_hash())
  template <class Self, class F>
  static void fields(Self& self, F&& field) {
    field("host", self.host);
    field("pid", self.pid);
    field("slots", self.slots);
    field("build_id", self.build_id);
    field("tasks", self.tasks);
  }
};

struct Welcome {
  std::chrono::milliseconds heartbeat_interval{250};
  std::chrono::milliseconds host_timeout{3000};  // silent this long: the other side is gone
  template <class Self, class F>
  static void fields(Self& self, F&& field) {
    field("heartbeat_interval_ms", self.heartbeat_interval);
    field("host_timeout_ms", self.host_timeout);
  }
};

struct Exit {
  std::string id;
  int wait_status = -1;
  bool has_mark = false;
  std::uint64_t mark = 0;
  // Whole frames of results the worker had finished and not written (LocalWorkers'
  // OnExit): the router takes those of chunks it still holds.
  std::string unsent;
  template <class Self, class F>
  static void fields(Self& self, F&& field) {
    field("id", self.id);
    field("wait_status", self.wait_status);
    field("has_mark", self.has_mark);
    field("mark", self.mark);
    field("unsent", self.unsent);
  }
};

std::string encode(const Hello& m);
std::string encode(const Welcome& m);
std::string encode(const Exit& m);
// Throw mpx::DecodeError.
Hello decode_hello(const std::string& bytes);
Welcome decode_welcome(const std::string& bytes);
Exit decode_exit(const std::string& bytes);

// This binary's GNU build-id (hex), or, without one, a hash of its file: agents must
// run the very program the pool runs.
std::string build_id();
// A hash of the sorted registered task names (hex): the same program registers the
// same tasks, a different build may not.
std::string tasks_hash();

}  // namespace node
}  // namespace mpx

#endif  // MPX_FRAMEWORK_NODE_PROTOCOL_H_
