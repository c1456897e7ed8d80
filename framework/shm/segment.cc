// Shared memory segments: sealed memfds, owned by the process that creates them and
// opened by others through /proc/<owner>/fd/<fd>. See mpx/detail/segment.h.
#include "mpx/detail/segment.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "framework/base/base.h"
#include "mpx/errors.h"
#include "mpx/runtime.h"

namespace mpx {
namespace detail {
namespace {

constexpr std::uint64_t kMagic = 0x313047455358504Dull;  // "MPXSEG01", little-endian
constexpr std::uint32_t kLayoutVersion = 1;
constexpr std::size_t kHeaderBytes = 256;
constexpr std::size_t kTypeNameBytes = 128;
// A process other than the owner keeps its most recently opened segments mapped even
// when it holds no handle to them, so a task receiving the same Value a million times
// maps it once: up to this many, and this many bytes (a worker handed a fresh large
// Array per task must not keep them all).
constexpr std::size_t kRecentlyOpened = 64;
constexpr std::size_t kRecentlyOpenedBytes = std::size_t{64} << 20;

// The first kHeaderBytes of every segment. Written once by the owner before the
// segment's fd is shared; read-only afterwards.
struct Header {
  std::uint64_t magic;
  std::uint64_t id;
  std::uint32_t version;
  std::uint32_t kind;
  std::uint64_t type_hash;
  std::uint32_t type_size;
  std::uint32_t type_align;
  std::uint64_t count;
  std::uint64_t body_bytes;
  char type_name[kTypeNameBytes];
};
static_assert(sizeof(Header) <= kHeaderBytes, "segment header outgrew its slot");

std::string errno_text(int err) { return std::strerror(err); }

bool typed(SegmentKind kind) {
  return kind == SegmentKind::kValue || kind == SegmentKind::kArray ||
         kind == SegmentKind::kQueue || kind == SegmentKind::kRawValue ||
         kind == SegmentKind::kRawArray;
}

// "Value<int>", "Lock"; "Value" when the type is not known; "object of double
// elements", "object holding std::map<...>" (mpx::put's objects).
std::string kind_text(SegmentKind kind, std::string_view type_name) {
  if (kind == SegmentKind::kObject) {
    return "object of " + std::string(type_name.empty() ? "raw" : type_name) + " elements";
  }
  if (kind == SegmentKind::kEncodedObject) {
    return type_name.empty() ? "object encoded with msgpack"
                             : "object holding " + std::string(type_name);
  }
  if (kind == SegmentKind::kArgumentBuffer) {
    return "argument of " + std::string(type_name.empty() ? "raw" : type_name) + " elements";
  }
  std::string out = segment_kind_name(kind);
  if (typed(kind) && !type_name.empty()) {
    out += '<';
    out += type_name;
    out += '>';
  }
  return out;
}

// "a Value<int>", "an Array<double>", "a Lock", "an object of double elements".
std::string describe(SegmentKind kind, std::string_view type_name) {
  const std::string text = kind_text(kind, type_name);
  return (std::string_view("AEIOUaeiou").find(text[0]) != std::string_view::npos ? "an " : "a ") +
         text;
}

// Objects (mpx::put) are sealed against writes and mapped read-only.
// A switch without default: a new kind must be placed here (-Wswitch says so).
bool read_only(SegmentKind kind) {
  switch (kind) {
    case SegmentKind::kObject:
    case SegmentKind::kEncodedObject:
    case SegmentKind::kArgumentBuffer:  // for its receivers; its sender rewrites it
      return true;
    case SegmentKind::kValue:
    case SegmentKind::kArray:
    case SegmentKind::kLock:
    case SegmentKind::kRLock:
    case SegmentKind::kSemaphore:
    case SegmentKind::kEvent:
    case SegmentKind::kBarrier:
    case SegmentKind::kQueue:
    case SegmentKind::kActor:
    case SegmentKind::kCondition:
    case SegmentKind::kRawValue:
    case SegmentKind::kRawArray:
    case SegmentKind::kSharedMemory:
      return false;
  }
  return false;
}

std::string byte_text(std::uint64_t bytes) {
  static const char* const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return std::to_string(bytes) + " bytes";
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.1f %s", v, units[u]);
  return text;
}

// Memory a new shared-memory object may take: MemAvailable plus free swap, less when
// this process's cgroup has a memory limit closer than that. nullopt when unknown.
std::optional<std::uint64_t> available_memory(std::string& source) {
  std::ifstream meminfo("/proc/meminfo");
  std::uint64_t available = 0, swap_free = 0;
  bool found = false;
  for (std::string line; std::getline(meminfo, line);) {
    const auto kib = [&](std::size_t skip) {
      return std::strtoull(line.c_str() + skip, nullptr, 10) * 1024;
    };
    if (line.rfind("MemAvailable:", 0) == 0) {
      available = kib(13);
      found = true;
    } else if (line.rfind("SwapFree:", 0) == 0) {
      swap_free = kib(9);
    }
  }
  if (!found) return std::nullopt;
  std::uint64_t room = available + swap_free;
  source = "MemAvailable + SwapFree in /proc/meminfo";
  // cgroup v2: "0::/path" in /proc/self/cgroup; memory.max is "max" when unlimited.
  std::ifstream cgroup("/proc/self/cgroup");
  for (std::string line; std::getline(cgroup, line);) {
    if (line.rfind("0::", 0) != 0) continue;
    const std::string dir = "/sys/fs/cgroup" + line.substr(3);
    std::ifstream max_file(dir + "/memory.max"), current_file(dir + "/memory.current");
    std::string max_text;
    std::uint64_t current = 0;
    if (max_file >> max_text && max_text != "max" && current_file >> current) {
      const std::uint64_t max = std::strtoull(max_text.c_str(), nullptr, 10);
      const std::uint64_t left = max > current ? max - current : 0;
      if (left < room) {
        room = left;
        source = "the memory limit of this process's cgroup (" + dir + "/memory.max)";
      }
    }
  }
  return room;
}

// A size known in advance is checked before anything is written: a put() of more than
// the machine can hold fails at once with the reason, instead of pushing the system into
// swap or the OOM killer half-way through.
void check_fits(std::size_t bytes, const std::string& what) {
  constexpr std::size_t kCheckFrom = std::size_t{16} << 20;  // reading /proc costs ~20 us
  if (bytes < kCheckFrom) return;
  std::string source;
  const auto room = available_memory(source);
  if (room && bytes > *room) {
    throw SharedMemoryError("mpx: cannot create " + what + " of " + byte_text(bytes) +
                            ": it does not fit in memory (" + byte_text(*room) +
                            " available: " + source +
                            "); put a smaller object, or split it into several");
  }
  rlimit fsize{};
  if (getrlimit(RLIMIT_FSIZE, &fsize) == 0 && fsize.rlim_cur != RLIM_INFINITY &&
      bytes + kHeaderBytes > fsize.rlim_cur) {
    throw SharedMemoryError("mpx: cannot create " + what + " of " + byte_text(bytes) +
                            ": it exceeds this process's file size limit of " +
                            byte_text(fsize.rlim_cur) + " (RLIMIT_FSIZE, ulimit -f)");
  }
}

// memfd_create with the error mpx reports for it.
int make_memfd(const std::string& name, const std::string& what) {
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    const int err = errno;
    std::string hint;
    if (err == EMFILE) {
      rlimit lim{};
      getrlimit(RLIMIT_NOFILE, &lim);
      hint = " (each shared object created by a process holds one file descriptor there; "
             "this process may open " + std::to_string(lim.rlim_cur) + ")";
    }
    throw SharedMemoryError("mpx: cannot create " + what + ": memfd_create: " +
                            errno_text(err) + hint);
  }
  return fd;
}

struct Registry {
  std::mutex mu;
  // Segments this process created, by id (guarded by mu).
  std::unordered_map<std::uint64_t, std::weak_ptr<Segment>> owned;
  // Segments of other processes this process mapped, by id (guarded by mu).
  std::unordered_map<std::uint64_t, std::weak_ptr<Segment>> opened;
  std::deque<std::shared_ptr<Segment>> recent;  // guarded by mu
  // This process's argument buffers waiting for reuse, oldest first, and their bytes
  // (guarded by mu).
  std::deque<std::shared_ptr<Segment>> free_buffers;
  std::size_t free_buffer_bytes = 0;
  // Other processes' argument buffers this process mapped, by (owner, fd) (guarded by
  // mu): a buffer is mapped once and read for each of its uses.
  std::map<std::pair<pid_t, int>, std::weak_ptr<Segment>> buffers;
  std::size_t recent_bytes = 0;                 // body bytes of recent; guarded by mu
  std::uint64_t next = 1;                       // guarded by mu
  const std::uint64_t base = base::random_u64();
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: handles may outlive main
  return *r;
}

template <class Map>
void sweep_expired(Map& map) {
  for (auto it = map.begin(); it != map.end();) {
    it = it->second.expired() ? map.erase(it) : std::next(it);
  }
}

}  // namespace

const char* segment_kind_name(SegmentKind kind) {
  switch (kind) {
    case SegmentKind::kValue: return "Value";
    case SegmentKind::kArray: return "Array";
    case SegmentKind::kLock: return "Lock";
    case SegmentKind::kRLock: return "RLock";
    case SegmentKind::kSemaphore: return "Semaphore";
    case SegmentKind::kEvent: return "Event";
    case SegmentKind::kBarrier: return "Barrier";
    case SegmentKind::kQueue: return "Queue";
    case SegmentKind::kActor: return "Actor";
    case SegmentKind::kCondition: return "Condition";
    case SegmentKind::kRawValue: return "RawValue";
    case SegmentKind::kRawArray: return "RawArray";
    case SegmentKind::kSharedMemory: return "SharedMemory";
    case SegmentKind::kObject: return "Object";
    case SegmentKind::kEncodedObject: return "EncodedObject";
    case SegmentKind::kArgumentBuffer: return "ArgumentBuffer";
  }
  return "shared object";
}

const TypeTag& untyped_tag() {
  static constexpr TypeTag tag{0, 0, 0, ""};
  return tag;
}

namespace {

// The number of a new segment in this process: its name and id derive from it.
std::uint64_t next_number(Registry& reg) {
  std::lock_guard<std::mutex> lock(reg.mu);
  return reg.next++;
}

std::string memfd_name(SegmentKind kind, std::uint64_t n) {
  return "mpx-" + std::to_string(getpid()) + "-" + segment_kind_name(kind) + "-" + std::to_string(n);
}

Header make_header(const SegmentRef& ref, const TypeTag& tag, std::uint64_t body_bytes) {
  Header h{};
  h.id = ref.id;
  h.version = kLayoutVersion;
  h.kind = static_cast<std::uint32_t>(ref.kind);
  h.type_hash = tag.hash;
  h.type_size = tag.size;
  h.type_align = tag.align;
  h.count = ref.count;
  h.body_bytes = body_bytes;
  const std::size_t len = std::min(tag.name.size(), kTypeNameBytes - 1);
  std::memcpy(h.type_name, tag.name.data(), len);
  h.type_name[len] = '\0';
  h.magic = kMagic;
  return h;
}

void register_owned(Registry& reg, const std::shared_ptr<Segment>& seg) {
  std::lock_guard<std::mutex> lock(reg.mu);
  if (reg.owned.size() >= 64 && reg.owned.size() % 64 == 0) sweep_expired(reg.owned);
  reg.owned[seg->ref().id] = seg;
}

}  // namespace

std::shared_ptr<Segment> Segment::create(SegmentKind kind, const TypeTag& tag, std::uint64_t count,
                                         std::size_t body_bytes) {
  Registry& reg = registry();
  const std::uint64_t n = next_number(reg);
  const std::string what = describe(kind, tag.name);
  const std::string name = memfd_name(kind, n);
  const std::size_t body = (body_bytes + 63) & ~std::size_t{63};
  if (body < body_bytes || body > (SIZE_MAX >> 1)) {
    throw SharedMemoryError("mpx: cannot create " + what + " of " +
                            std::to_string(body_bytes) + " bytes: too large");
  }
  const std::size_t total = kHeaderBytes + body;

  const int fd = make_memfd(name, what);
  auto fail = [&](const char* step) {
    const int err = errno;
    close(fd);
    throw SharedMemoryError("mpx: cannot create " + what + " of " +
                            std::to_string(body_bytes) + " bytes: " + step + ": " +
                            errno_text(err));
  };
  if (ftruncate(fd, static_cast<off_t>(total)) != 0) fail("ftruncate");
  // Nobody, the owner included, can resize it afterwards: a shrink would turn every
  // other process's access into SIGBUS.
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) fail("F_ADD_SEALS");
  struct stat st {};
  if (fstat(fd, &st) != 0) fail("fstat");
  void* map = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) fail("mmap");

  std::shared_ptr<Segment> seg =
      owned_mapping(SegmentRef{kind, getpid(), fd, reg.base ^ (n * 0x9E3779B97F4A7C15ull),
                               tag.hash, count},
                    name, map, total, body_bytes, st.st_dev, st.st_ino);
  auto* h = static_cast<Header*>(map);
  Header fresh = make_header(seg->ref_, tag, body_bytes);
  fresh.magic = 0;
  *h = fresh;
  // Published last: a reader that sees the magic sees the whole header.
  __atomic_store_n(&h->magic, kMagic, __ATOMIC_RELEASE);
  register_owned(reg, seg);
  return seg;
}

SegmentWriter::SegmentWriter(int fd, std::size_t offset, std::string what)
    : fd_(fd), offset_(offset), what_(std::move(what)), staging_(new char[kStagingBytes]) {
  rlimit fsize{};
  limit_ = getrlimit(RLIMIT_FSIZE, &fsize) == 0 && fsize.rlim_cur != RLIM_INFINITY
               ? static_cast<std::uint64_t>(fsize.rlim_cur)
               : UINT64_MAX;
}

void SegmentWriter::write(const char* data, std::size_t size) {
  if (size == 0) return;  // an empty vector's data() may be null
  if (size <= kStagingBytes - staged_) {
    std::memcpy(staging_.get() + staged_, data, size);
    staged_ += size;
    return;
  }
  flush();
  if (size < kStagingBytes) {
    std::memcpy(staging_.get(), data, size);
    staged_ = size;
  } else {
    store(data, size);  // large pieces (the elements, a long string) go straight in
  }
}

void SegmentWriter::flush() {
  if (staged_ == 0) return;
  const std::size_t n = std::exchange(staged_, 0);
  store(staging_.get(), n);
}

void SegmentWriter::store(const char* data, std::size_t size) {
  const std::uint64_t end = offset_ + written_ + size;
  if (end > limit_ || end < size) {
    // Checked here rather than left to write(2), which would raise SIGXFSZ and kill the
    // process by default.
    throw SharedMemoryError("mpx: cannot create " + what_ + ": it exceeds this process's " +
                            "file size limit of " + byte_text(limit_) +
                            " (RLIMIT_FSIZE, ulimit -f) after " + byte_text(written_) +
                            " were written");
  }
  while (size > 0) {
    const ssize_t n = pwrite(fd_, data, size, static_cast<off_t>(offset_ + written_));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;
      throw SharedMemoryError(
          "mpx: cannot create " + what_ + ": writing it failed after " + byte_text(written_) +
          ": " + errno_text(err) +
          (err == ENOSPC || err == ENOMEM ? " (the machine is out of memory for shared memory)"
                                          : ""));
    }
    written_ += static_cast<std::size_t>(n);
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

std::shared_ptr<Segment> Segment::create_sealed(SegmentKind kind, const TypeTag& tag,
                                                std::optional<std::uint64_t> count,
                                                std::size_t size_hint,
                                                const std::function<void(SegmentWriter&)>& fill) {
  if (!read_only(kind)) {
    throw Error(std::string("mpx: internal: a ") + segment_kind_name(kind) +
                " segment cannot be created sealed");
  }
  Registry& reg = registry();
  const std::string what = describe(kind, tag.name);
  check_fits(size_hint, what);
  const std::uint64_t n = next_number(reg);
  const std::string name = memfd_name(kind, n);
  const int fd = make_memfd(name, what);
  void* map = MAP_FAILED;
  std::size_t total = 0;
  std::uint64_t body_bytes = 0;
  SegmentRef ref;
  struct stat st {};
  try {
    SegmentWriter writer(fd, kHeaderBytes, what);
    fill(writer);
    writer.flush();
    body_bytes = writer.size();
    total = kHeaderBytes + body_bytes;
    ref = SegmentRef{kind, getpid(), fd, reg.base ^ (n * 0x9E3779B97F4A7C15ull), tag.hash,
                     count ? *count : body_bytes};
    const Header header = make_header(ref, tag, body_bytes);
    auto fail = [&](const char* step) {
      throw SharedMemoryError("mpx: cannot create " + what + " of " + byte_text(body_bytes) +
                              ": " + step + ": " + errno_text(errno));
    };
    if (ftruncate(fd, static_cast<off_t>(total)) != 0) fail("ftruncate");
    if (pwrite(fd, &header, sizeof header, 0) != static_cast<ssize_t>(sizeof header)) fail("pwrite");
    // Read-only from here on, for every process: F_SEAL_WRITE stops write(2) and any
    // new writable shared mapping (none exists: the body was written with pwrite).
    // The kernel refuses F_SEAL_WRITE (EBUSY) while any page still has an extra
    // reference; freshly written pages can, for a moment, under memory pressure (seen
    // once for 300 MiB under UBSan): try again for up to about a second.
    int sealed = fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    for (int attempt = 0; sealed != 0 && errno == EBUSY && attempt < 100; ++attempt) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      sealed = fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    }
    if (sealed != 0) fail("F_ADD_SEALS");
    if (fstat(fd, &st) != 0) fail("fstat");
    map = mmap(nullptr, total, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) fail("mmap");
  } catch (...) {
    close(fd);
    throw;
  }
  std::shared_ptr<Segment> seg = owned_mapping(ref, name, map, total, body_bytes, st.st_dev, st.st_ino);
  register_owned(reg, seg);
  return seg;
}

std::shared_ptr<Segment> Segment::owned_mapping(const SegmentRef& ref, const std::string& name,
                                                void* map, std::size_t map_bytes,
                                                std::size_t body_bytes, dev_t dev, ino_t ino) {
  std::shared_ptr<Segment> seg(new Segment());
  seg->ref_ = ref;
  seg->name_ = name;
  seg->map_ = map;
  seg->map_bytes_ = map_bytes;
  seg->body_ = static_cast<char*>(map) + kHeaderBytes;
  seg->body_bytes_ = body_bytes;
  seg->owned_fd_ = ref.fd;
  seg->dev_ = dev;
  seg->ino_ = ino;
  return seg;
}

bool Segment::held_by_owner() const {
  const std::string path =
      "/proc/" + std::to_string(ref_.owner) + "/fd/" + std::to_string(ref_.fd);
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_;
}

namespace {

// Keeps seg mapped as one of the most recently opened segments, and moves those beyond
// kRecentlyOpened (or kRecentlyOpenedBytes) to evicted, which the caller frees once
// reg.mu is released. reg.mu held.
void remember_recent(Registry& reg, const std::shared_ptr<Segment>& seg,
                     std::vector<std::shared_ptr<Segment>>& evicted) {
  reg.recent.push_back(seg);
  reg.recent_bytes += seg->body_bytes();
  while (reg.recent.size() > kRecentlyOpened ||
         (reg.recent.size() > 1 && reg.recent_bytes > kRecentlyOpenedBytes)) {
    reg.recent_bytes -= reg.recent.front()->body_bytes();
    evicted.push_back(std::move(reg.recent.front()));
    reg.recent.pop_front();
  }
}

// Drops this process's cached mapping of seg (handles that hold it keep it).
void forget_opened(Registry& reg, const std::shared_ptr<Segment>& seg) {
  std::shared_ptr<Segment> evicted;  // unmapped after the lock is released
  std::lock_guard<std::mutex> lock(reg.mu);
  auto it = reg.opened.find(seg->ref().id);
  if (it != reg.opened.end() && it->second.lock() == seg) reg.opened.erase(it);
  auto r = std::find(reg.recent.begin(), reg.recent.end(), seg);
  if (r != reg.recent.end()) {
    reg.recent_bytes -= seg->body_bytes();
    evicted = std::move(*r);
    reg.recent.erase(r);
  }
}

void check_kind(const SegmentRef& ref, SegmentKind kind, const TypeTag& tag) {
  if (ref.kind != kind) {
    throw SharedMemoryError("mpx: " + describe(ref.kind, "") + " cannot be used as " +
                            describe(kind, tag.name));
  }
}

void check_header(const Header& h, const SegmentRef& ref, SegmentKind kind, const TypeTag& tag,
                  const std::string& what) {
  if (h.kind != static_cast<std::uint32_t>(kind)) {
    throw SharedMemoryError("mpx: shared memory named as " + what + " holds " +
                            describe(static_cast<SegmentKind>(h.kind), ""));
  }
  if (h.type_hash != tag.hash) {
    const std::string held(h.type_name, strnlen(h.type_name, kTypeNameBytes));
    if (kind == SegmentKind::kObject) {
      throw SharedMemoryError("mpx: " + describe(kind, held) + " (" +
                              std::to_string(h.type_size) + " bytes each) cannot be read as " +
                              std::string(tag.name) + " elements (" + std::to_string(tag.size) +
                              " bytes each)");
    }
    if (kind == SegmentKind::kEncodedObject) {
      throw SharedMemoryError("mpx: " + describe(kind, held) + " cannot be read as " +
                              std::string(tag.name));
    }
    throw SharedMemoryError("mpx: " + describe(kind, held) + " (" +
                            std::to_string(h.type_size) + "-byte elements) cannot be used as " +
                            what + " (" + std::to_string(tag.size) + "-byte elements)");
  }
  if (h.count != ref.count) {
    throw SharedMemoryError("mpx: a handle to " + what + " does not match its segment");
  }
}

}  // namespace

namespace {

// A node agent's workers (framework/node/agent.cc sets MPX_NODE_HOST for them) run on
// another host than a handle's owner: a pid there names another process, or none.
void check_same_host(const std::string& shared) {
  static const char* const node = std::getenv("MPX_NODE_HOST");
  if (node != nullptr) {
    throw SharedMemoryError("mpx: " + shared + " cannot be used by a worker on another host (" + node +
                            ", a node agent's): shared memory does not cross hosts; pass values, "
                            "or use a pool without listen() for calls that share memory");
  }
}

SharedMemoryError destroyed_here(const std::string& shared) {
  return SharedMemoryError("mpx: " + shared +
                           " is gone: every handle to it in this process, which created it, "
                           "was destroyed");
}

std::string dropped_text(const SegmentRef& ref) {
  return "process " + std::to_string(ref.owner) +
         ", which created it, no longer holds it (every handle to it there was destroyed)";
}

// "... is gone: " the owner's exit when it has exited, else why.
SharedMemoryError gone_error(const SegmentRef& ref, const std::string& shared, const std::string& why) {
  if (base::process_ended(ref.owner)) {
    return SharedMemoryError("mpx: " + shared + " is gone: process " + std::to_string(ref.owner) +
                             ", which created it, has exited");
  }
  return SharedMemoryError("mpx: " + shared + " is gone: " + why);
}

// A segment's memfd, opened through its owner's /proc/<pid>/fd/<fd> and mapped whole.
struct OwnerMapping {
  void* map = nullptr;
  std::size_t total = 0;
  struct stat st {};
  std::string name;  // the memfd's, "mpx-<owner pid>-<kind>-<n>"
};

// Maps what ref.fd names in its owner: a memfd of mpx sealed against resizing (and
// against writes when write_sealed), read-write when writable; populate: all its pages
// mapped at once (MAP_POPULATE), for memory that is read or written whole, as an
// argument buffer is (on the virtual machine of BENCHMARKS.md a page fault costs ~12 us,
// a populated page ~0.3 us). The caller checks the header. Throws SharedMemoryError
// naming why (gone, permission denied), MapOutOfMemory when mmap has no room.
OwnerMapping map_from_owner(const SegmentRef& ref, const std::string& shared, bool writable,
                            bool write_sealed, bool populate = false) {
  const std::string path = "/proc/" + std::to_string(ref.owner) + "/fd/" + std::to_string(ref.fd);
  char target[256];
  const ssize_t len = ref.fd >= 0 && ref.owner > 0 ? readlink(path.c_str(), target, sizeof target - 1)
                                                   : (errno = ENOENT, -1);
  if (len < 0) {
    if (errno == EACCES || errno == EPERM) {
      throw SharedMemoryError("mpx: cannot map " + shared + " of process " +
                              std::to_string(ref.owner) +
                              ": permission denied (shared objects work only between "
                              "processes of one user)");
    }
    throw gone_error(ref, shared, dropped_text(ref));
  }
  target[len] = '\0';
  if (std::strncmp(target, "/memfd:mpx-", 11) != 0) throw gone_error(ref, shared, dropped_text(ref));
  const int fd = ::open(path.c_str(), (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == EACCES || err == EPERM) {
      throw SharedMemoryError("mpx: cannot map " + shared + " of process " +
                              std::to_string(ref.owner) + ": " + errno_text(err) +
                              " (shared objects work only between processes of one user)");
    }
    throw gone_error(ref, shared, dropped_text(ref));
  }
  OwnerMapping m;
  const int seals = fcntl(fd, F_GET_SEALS);
  if (fstat(fd, &m.st) != 0 || seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) == 0 ||
      static_cast<std::size_t>(m.st.st_size) < kHeaderBytes) {
    close(fd);
    throw gone_error(ref, shared, dropped_text(ref));
  }
  if (write_sealed && (seals & F_SEAL_WRITE) == 0) {
    // Only create_sealed makes objects, and it seals them before they are shared: this
    // fd names something else now.
    close(fd);
    throw gone_error(ref, shared, dropped_text(ref));
  }
  m.total = static_cast<std::size_t>(m.st.st_size);
  m.map = mmap(nullptr, m.total, writable ? PROT_READ | PROT_WRITE : PROT_READ,
                MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0);
  const int map_err = errno;
  close(fd);  // the mapping keeps the memory; the owner's fd keeps the name
  if (m.map == MAP_FAILED) {
    // Out of address space (a pool's worker_memory_limit, or vm.max_map_count): its own
    // type, so that arguments sent as objects can fail as their values would have.
    if (map_err == ENOMEM) {
      throw MapOutOfMemory("mpx: cannot map " + shared + ": mmap: " + errno_text(map_err));
    }
    throw SharedMemoryError("mpx: cannot map " + shared + ": mmap: " + errno_text(map_err));
  }
  m.name = target + 7;  // after "/memfd:"
  if (auto space = m.name.find(' '); space != std::string::npos) m.name.resize(space);
  return m;
}

}  // namespace

namespace {
thread_local std::vector<int>* t_attached = nullptr;
}  // namespace

AttachedObjects::AttachedObjects(std::vector<int>& fds) : previous_(t_attached) { t_attached = &fds; }
AttachedObjects::~AttachedObjects() { t_attached = previous_; }

std::shared_ptr<Segment> Segment::adopt_attached(const SegmentRef& ref, SegmentKind kind,
                                                 const TypeTag& tag) {
  for (int& fd : *t_attached) {
    if (fd < 0) continue;
    Header h{};
    struct stat st {};
    if (::pread(fd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h) || h.id != ref.id ||
        h.magic != kMagic || h.version != kLayoutVersion || fstat(fd, &st) != 0) {
      continue;
    }
    const std::string what = describe(kind, tag.name);
    check_header(h, ref, kind, tag, what);
    // Only create_sealed makes objects, sealed before they are shared.
    const int seals = fcntl(fd, F_GET_SEALS);
    const auto total = static_cast<std::size_t>(st.st_size);
    constexpr int kSealed = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW;
    if (!read_only(kind) || seals < 0 || (seals & kSealed) != kSealed || total < kHeaderBytes ||
        h.body_bytes > total - kHeaderBytes) {
      throw SharedMemoryError("mpx: the " + what + " that came with a message is not a sealed object");
    }
    void* map = mmap(nullptr, total, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
      const int err = errno;
      const std::string why = "mpx: cannot map " + what + " that came with a message: mmap: " + errno_text(err);
      if (err == ENOMEM) throw MapOutOfMemory(why);
      throw SharedMemoryError(why);
    }
    char target[256];
    const ssize_t len = readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), target, sizeof target - 1);
    std::string name = len > 7 ? std::string(target + 7, static_cast<std::size_t>(len) - 7) : "mpx-object";
    if (auto space = name.find(' '); space != std::string::npos) name.resize(space);
    SegmentRef mine = ref;
    mine.owner = getpid();
    mine.fd = fd;
    fd = -1;  // the Segment owns it now
    std::shared_ptr<Segment> seg =
        owned_mapping(mine, name, map, total, static_cast<std::size_t>(h.body_bytes), st.st_dev, st.st_ino);
    register_owned(registry(), seg);
    return seg;
  }
  return nullptr;
}

std::shared_ptr<Segment> Segment::open(const SegmentRef& ref, SegmentKind kind,
                                       const TypeTag& tag) {
  check_kind(ref, kind, tag);
  if (t_attached != nullptr && read_only(kind)) {
    if (std::shared_ptr<Segment> adopted = adopt_attached(ref, kind, tag)) return adopted;
  }
  const std::string what = describe(kind, tag.name);
  const std::string shared = "shared " + kind_text(kind, tag.name);
  check_same_host(shared);
  Registry& reg = registry();
  const pid_t self = getpid();
  std::shared_ptr<Segment> known;
  {
    std::lock_guard<std::mutex> lock(reg.mu);
    auto& table = ref.owner == self ? reg.owned : reg.opened;
    auto it = table.find(ref.id);
    if (it != table.end()) known = it->second.lock();
  }
  if (known) {
    check_header(*static_cast<const Header*>(known->map_), ref, kind, tag, what);
    if (ref.owner == self || !read_only(kind) || known->held_by_owner()) return known;
    forget_opened(reg, known);  // its owner let it go: later opens say so, as in a new process
  }
  if (ref.owner == self) throw destroyed_here(shared);
  const bool sealed = read_only(kind);
  OwnerMapping m = map_from_owner(ref, shared, /*writable=*/!sealed, /*write_sealed=*/sealed);
  std::shared_ptr<Segment> seg(new Segment());
  seg->map_ = m.map;
  seg->map_bytes_ = m.total;
  seg->dev_ = m.st.st_dev;
  seg->ino_ = m.st.st_ino;
  const auto* h = static_cast<const Header*>(m.map);
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != kMagic || h->version != kLayoutVersion ||
      h->id != ref.id) {
    throw gone_error(ref, shared, dropped_text(ref));  // the fd number now names another segment
  }
  check_header(*h, ref, kind, tag, what);
  if (h->body_bytes > m.total - kHeaderBytes) {
    throw SharedMemoryError("mpx: " + shared + " is smaller than its header says");
  }
  seg->ref_ = ref;
  seg->name_ = std::move(m.name);
  seg->body_ = static_cast<char*>(m.map) + kHeaderBytes;
  seg->body_bytes_ = h->body_bytes;

  std::vector<std::shared_ptr<Segment>> evicted;  // unmapped after the lock is released
  std::lock_guard<std::mutex> lock(reg.mu);
  auto& slot = reg.opened[ref.id];
  if (std::shared_ptr<Segment> raced = slot.lock()) return raced;  // another thread won
  slot = seg;
  if (reg.opened.size() >= 2 * kRecentlyOpened && reg.opened.size() % kRecentlyOpened == 0) {
    sweep_expired(reg.opened);
  }
  // A SharedMemory block is let go when its handles are (Python's close()): users size
  // and hold those themselves.
  if (kind == SegmentKind::kSharedMemory) return seg;
  remember_recent(reg, seg, evicted);
  return seg;
}

namespace {

constexpr std::size_t kBufferGrain = std::size_t{64} << 10;

// A new argument buffer of this process with room for need bytes (header included):
// a memfd rounded up to kBufferGrain, sealed against resizing (a receiver's mapping
// can never fault past its end), mapped read-write here.
struct NewBuffer {
  SegmentRef ref;
  std::string name;
  void* map;
  std::size_t total;
  struct stat st;
};
NewBuffer make_buffer(Registry& reg, std::size_t need, const std::string& what) {
  const std::size_t total = (need + kBufferGrain - 1) / kBufferGrain * kBufferGrain;
  if (total < need) throw SharedMemoryError("mpx: cannot create " + what + ": too large");
  check_fits(total, what);
  const std::uint64_t n = next_number(reg);
  const std::string name = memfd_name(SegmentKind::kArgumentBuffer, n);
  const int fd = make_memfd(name, what);
  auto fail = [&](const char* step) {
    const int err = errno;
    close(fd);
    throw SharedMemoryError("mpx: cannot create " + what + " of " + byte_text(total) + ": " +
                            step + ": " + errno_text(err));
  };
  if (ftruncate(fd, static_cast<off_t>(total)) != 0) fail("ftruncate");
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) fail("F_ADD_SEALS");
  NewBuffer b{SegmentRef{SegmentKind::kArgumentBuffer, getpid(), fd,
                         reg.base ^ (n * 0x9E3779B97F4A7C15ull), 0, 0},
              name, nullptr, total, {}};
  if (fstat(fd, &b.st) != 0) fail("fstat");
  // Populated at once: its sender writes the arguments and a worker their results,
  // the whole of it (see map_from_owner).
  b.map = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (b.map == MAP_FAILED) fail("mmap");
  return b;
}

}  // namespace

std::shared_ptr<Segment> Segment::lend_buffer(const TypeTag& tag, const void* data,
                                              std::size_t element_bytes, std::uint64_t count) {
  const std::size_t bytes = element_bytes * static_cast<std::size_t>(count);
  return lend_buffer(tag, bytes, count, [&](char* body) {
    if (bytes > 0) copy_to_buffer(body, data, bytes);
  });
}

#if defined(__x86_64__)
namespace {

// Half the L2 cache, where a copy's source and destination no longer both fit; never
// under 512 KiB, where streaming measured no faster here (and 5-10% slower at 128-256
// KiB, whose bytes a reader close by still finds in a shared cache).
std::size_t streaming_copy_bytes() {
  static const std::size_t bytes = [] {
    long l2 = 0;
#ifdef _SC_LEVEL2_CACHE_SIZE
    l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return std::max(l2 > 0 ? static_cast<std::size_t>(l2) / 2 : 0, std::size_t{512} << 10);
  }();
  return bytes;
}

}  // namespace
#endif

void Segment::copy_to_buffer(char* to, const void* from, std::size_t n) {
  const char* src = static_cast<const char*>(from);
#if defined(__x86_64__)
  if (n >= streaming_copy_bytes()) {
    // At most 15 bytes, and n is at least 512 KiB here.
    const std::size_t head = (16 - (reinterpret_cast<std::uintptr_t>(to) & 15)) & 15;
    std::memcpy(to, src, head);
    std::size_t i = head;
    for (; i + 64 <= n; i += 64) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 16));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 32));
      const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 48));
      _mm_stream_si128(reinterpret_cast<__m128i*>(to + i), a);
      _mm_stream_si128(reinterpret_cast<__m128i*>(to + i + 16), b);
      _mm_stream_si128(reinterpret_cast<__m128i*>(to + i + 32), c);
      _mm_stream_si128(reinterpret_cast<__m128i*>(to + i + 48), d);
    }
    std::memcpy(to + i, src + i, n - i);
    // Non-temporal stores are weakly ordered: they must be visible before the message
    // naming the buffer is.
    _mm_sfence();
    return;
  }
#endif
  if (n > 0) std::memcpy(to, src, n);
}

std::shared_ptr<Segment> Segment::lend_buffer(const TypeTag& tag, std::size_t bytes,
                                              std::uint64_t count,
                                              const std::function<void(char*)>& fill) {
  Registry& reg = registry();
  const std::size_t need = kHeaderBytes + bytes;
  std::shared_ptr<Segment> buffer;
  {
    // The smallest free buffer that fits, if it is not more than twice what is needed
    // (a large buffer stays free for a large argument) or the smallest there is; of
    // equal ones the lowest: a call's chunks then take the same buffers in the same
    // order each time, so that a worker tends to get one it has mapped already.
    const std::size_t most = std::max(2 * need, kBufferGrain);
    std::lock_guard<std::mutex> lock(reg.mu);
    auto best = reg.free_buffers.end();
    for (auto it = reg.free_buffers.begin(); it != reg.free_buffers.end(); ++it) {
      const std::size_t room = (*it)->map_bytes_;
      if (room >= need && room <= most &&
          (best == reg.free_buffers.end() || room < (*best)->map_bytes_ ||
           (room == (*best)->map_bytes_ && (*it)->map_ < (*best)->map_))) {
        best = it;
      }
    }
    if (best != reg.free_buffers.end()) {
      buffer = std::move(*best);
      reg.free_buffers.erase(best);
      reg.free_buffer_bytes -= buffer->map_bytes_;
    }
  }
  if (!buffer) {
    const NewBuffer b = make_buffer(reg, need, describe(SegmentKind::kArgumentBuffer, tag.name));
    buffer = owned_mapping(b.ref, b.name, b.map, b.total, b.total - kHeaderBytes, b.st.st_dev,
                           b.st.st_ino);
  }
  std::shared_ptr<Segment> use(new Segment());
  use->ref_ = SegmentRef{SegmentKind::kArgumentBuffer, getpid(), buffer->owned_fd_,
                         reg.base ^ (next_number(reg) * 0x9E3779B97F4A7C15ull), tag.hash, count};
  use->name_ = buffer->name_;
  use->map_ = buffer->map_;
  use->body_ = buffer->body_;
  use->body_bytes_ = bytes;
  use->dev_ = buffer->dev_;
  use->ino_ = buffer->ino_;
  auto* h = static_cast<Header*>(buffer->map_);
  // A ref of an earlier use stops matching before any byte changes: no receiver reads
  // an earlier use any more (the invariant in segment.h), and one that did anyway would
  // see current() turn false once it has read (the id is a seqlock's sequence).
  __atomic_store_n(&h->id, std::uint64_t{0}, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  fill(use->body_);  // a throw frees the buffer (held only here)
  Header fresh = make_header(use->ref_, tag, bytes);
  fresh.id = 0;
  *h = fresh;
  __atomic_store_n(&h->id, use->ref_.id, __ATOMIC_RELEASE);  // published last
  use->base_ = std::move(buffer);
  register_owned(reg, use);
  return use;
}

void Segment::recycle_buffers(std::vector<std::shared_ptr<Segment>>& lent) {
  Registry& reg = registry();
  std::vector<std::shared_ptr<Segment>> dropped;  // freed after the lock is released
  std::unique_lock<std::mutex> lock(reg.mu);
  for (std::shared_ptr<Segment>& use : lent) {
    if (!use || !use->base_ || use.use_count() != 1) continue;  // still read here: dropped below
    std::shared_ptr<Segment> buffer = use->base_;
    dropped.push_back(std::move(use));
    if (buffer->map_bytes_ > kFreeBufferBytes) continue;
    reg.free_buffer_bytes += buffer->map_bytes_;
    reg.free_buffers.push_back(std::move(buffer));
    while (reg.free_buffer_bytes > kFreeBufferBytes) {
      reg.free_buffer_bytes -= reg.free_buffers.front()->map_bytes_;
      dropped.push_back(std::move(reg.free_buffers.front()));
      reg.free_buffers.pop_front();
    }
  }
  lock.unlock();
  lent.clear();  // uses still held elsewhere are merely let go
}

bool Segment::current() const {
  if (!base_) return true;
  __atomic_thread_fence(__ATOMIC_ACQUIRE);  // the reads of the body come before this one
  return __atomic_load_n(&static_cast<const Header*>(map_)->id, __ATOMIC_RELAXED) == ref_.id;
}

std::size_t Segment::free_buffer_bytes() {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mu);
  return reg.free_buffer_bytes;
}

std::size_t Segment::free_buffers() {
  Registry& reg = registry();
  std::lock_guard<std::mutex> lock(reg.mu);
  return reg.free_buffers.size();
}

std::shared_ptr<Segment> Segment::open_buffer(const SegmentRef& ref, const TypeTag& tag,
                                              bool writable) {
  const SegmentKind kind = SegmentKind::kArgumentBuffer;
  check_kind(ref, kind, tag);
  const std::string what = describe(kind, tag.name);
  const std::string shared = "shared " + kind_text(kind, tag.name);
  Registry& reg = registry();
  if (ref.owner == getpid()) {
    std::shared_ptr<Segment> use;
    {
      std::lock_guard<std::mutex> lock(reg.mu);
      auto it = reg.owned.find(ref.id);
      if (it != reg.owned.end()) use = it->second.lock();
    }
    if (!use) throw destroyed_here(shared);
    check_header(*static_cast<const Header*>(use->map_), ref, kind, tag, what);
    return use;
  }
  check_same_host(shared);
  const auto key = std::make_pair(ref.owner, ref.fd);
  const auto current = [&](const Segment& buffer) {
    return __atomic_load_n(&static_cast<const Header*>(buffer.map_)->id, __ATOMIC_ACQUIRE) == ref.id;
  };
  std::shared_ptr<Segment> buffer;
  {
    std::lock_guard<std::mutex> lock(reg.mu);
    auto it = reg.buffers.find(key);
    if (it != reg.buffers.end()) buffer = it->second.lock();
  }
  if (!buffer || !current(*buffer) || (writable && !buffer->writable_)) {
    // Not mapped yet (or not for writing), or the mapping is of a buffer the owner has
    // since let go (its fd number now names another one): map what the fd names now.
    OwnerMapping m = map_from_owner(ref, shared, writable, /*write_sealed=*/false, /*populate=*/true);
    std::shared_ptr<Segment> mapped(new Segment());
    mapped->map_ = m.map;
    mapped->map_bytes_ = m.total;
    mapped->dev_ = m.st.st_dev;
    mapped->ino_ = m.st.st_ino;
    mapped->ref_ = ref;
    mapped->name_ = std::move(m.name);
    mapped->body_ = static_cast<char*>(m.map) + kHeaderBytes;
    mapped->body_bytes_ = m.total - kHeaderBytes;
    mapped->writable_ = writable;
    const auto* h = static_cast<const Header*>(m.map);
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != kMagic || h->version != kLayoutVersion ||
        !current(*mapped)) {
      throw gone_error(ref, shared, "process " + std::to_string(ref.owner) +
                                        " has reused it for another argument (a stale handle)");
    }
    buffer = mapped;
    std::vector<std::shared_ptr<Segment>> evicted;  // unmapped after the lock is released
    std::lock_guard<std::mutex> lock(reg.mu);
    reg.buffers[key] = buffer;
    if (reg.buffers.size() >= 2 * kRecentlyOpened && reg.buffers.size() % kRecentlyOpened == 0) {
      sweep_expired(reg.buffers);
    }
    remember_recent(reg, buffer, evicted);
  }
  const auto* h = static_cast<const Header*>(buffer->map_);
  check_header(*h, ref, kind, tag, what);
  if (h->body_bytes > buffer->map_bytes_ - kHeaderBytes) {
    throw SharedMemoryError("mpx: " + shared + " is smaller than its header says");
  }
  std::shared_ptr<Segment> use(new Segment());
  use->ref_ = ref;
  use->name_ = buffer->name_;
  use->map_ = buffer->map_;
  use->body_ = buffer->body_;
  use->body_bytes_ = static_cast<std::size_t>(h->body_bytes);
  use->dev_ = buffer->dev_;
  use->ino_ = buffer->ino_;
  use->base_ = std::move(buffer);
  return use;
}

namespace {

// The kinds whose body starts with a robust pthread mutex. Semaphore and Event are bare
// futexes, and an actor's control block starts with its seqlock and incarnation count,
// which read as a mutex's owner would name a thread of this process once enough
// restarts had happened (and keep a dead actor's block mapped forever).
// A switch without default: a new kind must be placed here (-Wswitch says so).
bool starts_with_mutex(SegmentKind kind) {
  switch (kind) {
    case SegmentKind::kValue:
    case SegmentKind::kArray:
    case SegmentKind::kLock:
    case SegmentKind::kRLock:
    case SegmentKind::kBarrier:
    case SegmentKind::kQueue:
      return true;
    case SegmentKind::kSemaphore:
    case SegmentKind::kEvent:
    case SegmentKind::kActor:
    case SegmentKind::kCondition:     // slots of futex words
    case SegmentKind::kRawValue:      // the data alone
    case SegmentKind::kRawArray:
    case SegmentKind::kSharedMemory:  // a name, then the user's bytes
    case SegmentKind::kObject:        // read-only data: an object has no mutex
    case SegmentKind::kEncodedObject:
    case SegmentKind::kArgumentBuffer:
      return false;
  }
  return false;
}

// Whether a thread of this process holds the robust mutex at p. glibc links a held
// robust mutex into its thread's robust list through the mutex's own memory.
bool held_here(const void* p) {
  const auto* m = static_cast<const pthread_mutex_t*>(p);
  const int owner = __atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED);
  return owner > 0 && access(("/proc/self/task/" + std::to_string(owner)).c_str(), F_OK) == 0;
}

}  // namespace

Segment::~Segment() {
  if (map_ != nullptr && !base_) {  // a buffer's use leaves the mapping to the buffer
    if (body_ != nullptr && starts_with_mutex(ref_.kind) && held_here(body_)) {
      // Unmapping it would leave the holder's robust list pointing into freed (or
      // reused) memory: every later lock of that thread, and the kernel's clean-up at
      // its exit, would write there. The mapping stays until the process exits.
      logger().error("mpx: the last handle to {} ({}) was dropped while this process still "
                     "holds its lock; its memory stays mapped until the process exits",
                     describe(ref_.kind, ""), name_);
    } else {
      munmap(map_, map_bytes_);
    }
  }
  if (owned_fd_ >= 0) close(owned_fd_);
}

SegmentRef unpack_segment_ref(const msgpack::object& o) {
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 6) throw msgpack::type_error();
  const msgpack::object* f = o.via.array.ptr;
  SegmentRef ref;
  const auto k = f[0].as<std::uint32_t>();
  if (k < static_cast<std::uint32_t>(SegmentKind::kValue) ||
      k > static_cast<std::uint32_t>(SegmentKind::kLastKind)) {
    throw msgpack::type_error();
  }
  ref.kind = static_cast<SegmentKind>(k);
  ref.owner = static_cast<pid_t>(f[1].as<std::int64_t>());
  ref.fd = f[2].as<int>();
  ref.id = f[3].as<std::uint64_t>();
  ref.type_hash = f[4].as<std::uint64_t>();
  ref.count = f[5].as<std::uint64_t>();
  return ref;
}

std::shared_ptr<Segment> unpack_segment(const msgpack::object& o, SegmentKind kind,
                                        const TypeTag& tag) {
  return Segment::open(unpack_segment_ref(o), kind, tag);
}

void forget_recently_opened_segments() {
  Registry& reg = registry();
  std::deque<std::shared_ptr<Segment>> evicted;  // unmapped after the lock is released
  std::lock_guard<std::mutex> lock(reg.mu);
  evicted.swap(reg.recent);
  reg.recent_bytes = 0;
}

}  // namespace detail
}  // namespace mpx
