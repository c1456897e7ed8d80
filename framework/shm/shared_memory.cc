// SharedMemory: a segment of raw bytes whose name is claimed in the abstract socket
// namespace (names.h). See mpx/shared_memory.h.
#include "mpx/shared_memory.h"

#include <sys/random.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <new>
#include <iterator>
#include <mutex>
#include <unordered_map>

#include "framework/shm/names.h"

namespace mpx {

using detail::Segment;
using detail::SegmentKind;

namespace {

constexpr std::size_t kNameBytes = 200;
constexpr std::size_t kHeaderBytes = 256;  // of the segment's body, before buf()

// The start of a block's segment body; written by the creator before it is shared,
// but for unlinked.
struct BlockHeader {
  char name[kNameBytes + 1];
  std::atomic<std::uint32_t> unlinked;
};
static_assert(sizeof(BlockHeader) <= kHeaderBytes, "a SharedMemory header outgrew its slot");

// The creator's claim on the name, kept with the segment until unlink() lets it go.
struct NameHold {
  std::mutex mu;
  std::shared_ptr<const void> claim;  // guarded by mu
};

// The holds of the blocks this process created, by segment id, so that unlink() finds
// its block's name whichever handle it is called on.
std::mutex holds_mu;
std::unordered_map<std::uint64_t, std::weak_ptr<NameHold>>& holds() {
  static auto* m = new std::unordered_map<std::uint64_t, std::weak_ptr<NameHold>>();
  return *m;
}

BlockHeader& header(const Segment& s) { return *reinterpret_cast<BlockHeader*>(s.body()); }

// Python's names may start with '/'; the rest must be safe in every place a name goes.
std::string check_name(const std::string& name) {
  const std::string bare = !name.empty() && name[0] == '/' ? name.substr(1) : name;
  const bool ok = !bare.empty() && bare.size() <= kNameBytes &&
                  bare.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789._-") == std::string::npos;
  if (!ok) {
    throw std::invalid_argument("mpx::SharedMemory: '" + name +
                                "' is not a valid name: use 1 to 200 letters, digits, '.', '_' "
                                "or '-' (after an optional '/')");
  }
  return bare;
}

std::string fresh_name() {
  std::uint64_t r = 0;
  if (getrandom(&r, sizeof r, 0) != static_cast<ssize_t>(sizeof r)) {
    r = static_cast<std::uint64_t>(getpid()) * 0x9E3779B97F4A7C15ull ^
        static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&r));
  }
  char text[32];
  std::snprintf(text, sizeof text, "psm_%016" PRIx64, r);
  return text;
}

}  // namespace

SharedMemory::SharedMemory(detail::AdoptTag, std::shared_ptr<Segment> segment)
    : segment_(std::move(segment)) {
  if (segment_->body_bytes() < kHeaderBytes + segment_->ref().count) {
    throw SharedMemoryError("mpx::SharedMemory: the block is smaller than its header says");
  }
  const BlockHeader& h = header(*segment_);
  name_.assign(h.name, strnlen(h.name, kNameBytes));
}

SharedMemory::SharedMemory(const std::string& name, bool create_it, std::size_t size)
    : SharedMemory(create_it ? create(name, size) : attach(name)) {}

SharedMemory SharedMemory::create(std::size_t size) {
  for (;;) {
    try {
      return create(fresh_name(), size);
    } catch (const SharedMemoryError&) {
      // Taken (64 random bits: practically never): draw again.
    }
  }
}

SharedMemory SharedMemory::create(const std::string& name, std::size_t size) {
  const std::string bare = check_name(name);
  if (size == 0) {
    throw std::invalid_argument("mpx::SharedMemory: size must be positive (got 0)");
  }
  auto segment = Segment::create(SegmentKind::kSharedMemory, detail::untyped_tag(), size,
                                 kHeaderBytes + size);
  BlockHeader& h = *new (segment->body()) BlockHeader();
  std::memcpy(h.name, bare.data(), bare.size());
  const detail::SegmentRef& r = segment->ref();
  auto hold = std::make_shared<NameHold>();
  hold->claim = names::claim("shm", bare, names::Location{r.owner, r.fd, r.id, size});
  if (!hold->claim) {
    // A block that another process unlink()ed: its creator holds the name until it
    // lets go of it (mpx/shared_memory.h), which is not what a Python user expects.
    std::string creator;
    try {
      if (const auto where = names::find("shm", bare)) {
        const detail::SegmentRef ref{SegmentKind::kSharedMemory, where->pid, where->fd, where->id, 0, where->extra};
        auto held = Segment::open(ref, SegmentKind::kSharedMemory, detail::untyped_tag());
        if (header(*held).unlinked.load() != 0) creator = std::to_string(where->pid);
      }
    } catch (const std::exception&) {
      // Gone meanwhile, or not ours to open: the plain message below.
    }
    if (!creator.empty()) {
      throw SharedMemoryError("mpx::SharedMemory: a block named '" + bare +
                              "' was unlink()ed, but its name stays with process " + creator +
                              ", which created it, until that process unlinks it or drops its "
                              "handles to it (unlike Python, where any process frees the name): "
                              "create the new block there, or pick another name");
    }
    throw SharedMemoryError("mpx::SharedMemory: a block named '" + bare +
                            "' exists already (Python's FileExistsError)");
  }
  segment->keep(hold);
  {
    std::lock_guard<std::mutex> lock(holds_mu);
    for (auto it = holds().begin(); it != holds().end();) {
      it = it->second.expired() ? holds().erase(it) : std::next(it);
    }
    holds()[r.id] = hold;
  }
  return SharedMemory(detail::AdoptTag{}, std::move(segment));
}

SharedMemory SharedMemory::attach(const std::string& name) {
  const std::string bare = check_name(name);
  const std::string missing = "mpx::SharedMemory: no block named '" + bare +
                              "' (Python's FileNotFoundError): a block lives while a handle to it "
                              "lives in the process that created it";
  const auto where = names::find("shm", bare);
  if (!where) throw SharedMemoryError(missing);
  const detail::SegmentRef ref{SegmentKind::kSharedMemory, where->pid, where->fd, where->id, 0, where->extra};
  SharedMemory shm(detail::AdoptTag{}, Segment::open(ref, SegmentKind::kSharedMemory, detail::untyped_tag()));
  if (shm.name_ != bare || header(*shm.segment_).unlinked.load() != 0) throw SharedMemoryError(missing);
  return shm;
}

const std::string& SharedMemory::name() const { return name_; }

std::size_t SharedMemory::size() const {
  if (!segment_) throw Error("mpx::SharedMemory: this handle was closed (close())");
  return static_cast<std::size_t>(segment_->ref().count);
}

unsigned char* SharedMemory::buf() const {
  if (!segment_) throw Error("mpx::SharedMemory: this handle was closed (close())");
  return reinterpret_cast<unsigned char*>(segment_->body() + kHeaderBytes);
}

void SharedMemory::close() { segment_.reset(); }

void SharedMemory::unlink() {
  if (!segment_) throw Error("mpx::SharedMemory::unlink: this handle was closed (close())");
  header(*segment_).unlinked.store(1);
  // In the creator, the name itself is let go; elsewhere attach() sees the flag.
  std::shared_ptr<NameHold> hold;
  {
    std::lock_guard<std::mutex> lock(holds_mu);
    auto it = holds().find(segment_->ref().id);
    if (it != holds().end()) hold = it->second.lock();
  }
  if (hold) {
    std::lock_guard<std::mutex> lock(hold->mu);
    hold->claim.reset();
  }
}

namespace detail {

std::size_t check_shareable_list(const SharedMemory& shm, const TypeTag& tag) {
  const std::string what = "mpx::ShareableList: the block '" + shm.name() + "'";
  if (shm.size() < sizeof(ShareableListHeader)) throw SharedMemoryError(what + " is not a ShareableList");
  const auto* h = reinterpret_cast<const ShareableListHeader*>(shm.buf());
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != kShareableListMagic) {
    throw SharedMemoryError(what + " is not a ShareableList");
  }
  if (h->type_hash != tag.hash) {
    throw SharedMemoryError(what + " holds another element type than " + std::string(tag.name));
  }
  return static_cast<std::size_t>(h->count);
}

}  // namespace detail
}  // namespace mpx
