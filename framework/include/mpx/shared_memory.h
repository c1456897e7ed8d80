// mpx/shared_memory.h — SharedMemory: a block of bytes found by name (Python's
// multiprocessing.shared_memory.SharedMemory), and ShareableList<T>, a fixed-length
// list in one (Python's ShareableList).
//
//   auto block = mpx::SharedMemory::create("frames", 1 << 20);   // or create(size): a
//   std::memcpy(block.buf(), pixels, block.size());               // fresh "psm_..." name
//   // any process of this user, even one mpx did not start:
//   auto same = mpx::SharedMemory::attach("frames");
//   same.buf()[0];
//
//   mpx::ShareableList<double> prices({1.5, 2.0, 7.25}, "prices");
//   auto seen = mpx::ShareableList<double>::attach("prices");
//   seen.set(0, 1.75);
//   mpx::ShareableList<std::string> words({"alpha", "beta"});     // each slot keeps the
//   words.set(1, "gamma");                                          // room its first value took
//
// Lifetime, unlike Python's (whose blocks stay in /dev/shm until unlink(), and leak
// when a program is killed): a block is a sealed memfd like every mpx shared object. It
// and its name live while a handle to it lives in the process that created it (a
// Process or Pool call given a handle keeps it); processes that attached keep their
// mapping until their handles go. When the creator drops its last handle or dies, even
// by SIGKILL, the name is gone at once, and the memory once the last process that
// mapped it lets go. Nothing is ever left in /dev/shm.
//
// Names: an optional leading '/', then 1 to 200 of [A-Za-z0-9._-]; one namespace per
// user. A SharedMemory is also a handle: pass it to a Process or Pool task as is.
//
// Thread and process safety: the bytes are plain shared memory; guard concurrent
// writers with a Lock (ShareableList is not synchronized either, as in Python).
#ifndef MPX_SHARED_MEMORY_H_
#define MPX_SHARED_MEMORY_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "mpx/detail/handle.h"
#include "mpx/errors.h"

namespace mpx {

class SharedMemory {
 public:
  // Python's SharedMemory(name, create, size): creates a block of size bytes named
  // name when create, else attaches to the one named name (size is then ignored).
  explicit SharedMemory(const std::string& name, bool create = false, std::size_t size = 0);
  // A new zero-filled block with a fresh name ("psm_" and 16 hex digits). Throws
  // std::invalid_argument for size 0, SharedMemoryError when the system refuses.
  static SharedMemory create(std::size_t size);
  // Throws SharedMemoryError when the name is taken (Python's FileExistsError),
  // std::invalid_argument for a malformed name or size 0.
  static SharedMemory create(const std::string& name, std::size_t size);
  // Throws SharedMemoryError when no block has that name (Python's
  // FileNotFoundError), or it cannot be mapped.
  static SharedMemory attach(const std::string& name);

  const std::string& name() const;
  std::size_t size() const;
  // size() bytes. Throws mpx::Error after close().
  unsigned char* buf() const;
  // This handle lets go of the block (other handles, here or elsewhere, keep it).
  void close();
  bool closed() const { return segment_ == nullptr; }
  // The name is released: attach() no longer finds it (in every process), and the
  // creator may give it to a new block. The memory stays while handles to it live.
  // Unlike Python, only the creating process may reuse the name at once: elsewhere,
  // create() of it fails (saying so) until the creator unlinks it or lets go of it.
  void unlink();

 private:
  SharedMemory(detail::AdoptTag, std::shared_ptr<detail::Segment> segment);
  std::shared_ptr<detail::Segment> segment_;
  std::string name_;
  friend struct detail::HandleAccess;
};

namespace detail {
template <>
struct HandleTraits<SharedMemory> {
  static constexpr SegmentKind kKind = SegmentKind::kSharedMemory;
  static const TypeTag& tag() { return untyped_tag(); }
};

// The start of a ShareableList's block: what it holds, checked on attach.
struct ShareableListHeader {
  std::uint64_t magic;
  std::uint64_t type_hash;
  std::uint64_t count;
  std::uint64_t reserved;
};
constexpr std::uint64_t kShareableListMagic = 0x3130534C4258504Dull;  // "MPXBLS01"
// Checks the header of a block attached as a ShareableList of tag; returns count.
std::size_t check_shareable_list(const SharedMemory& shm, const TypeTag& tag);
}  // namespace detail

// A fixed-length list in a SharedMemory block (Python's ShareableList). T is trivially
// copyable, or std::string: each string slot keeps the room (rounded up to 8 bytes)
// of the value it was created with, and a longer value throws std::length_error, as
// Python's ValueError.
template <class T>
class ShareableList {
  static constexpr bool kString = std::is_same_v<T, std::string>;
  static_assert(kString || std::is_trivially_copyable_v<T>,
                "mpx::ShareableList<T> holds trivially copyable T or std::string");

 public:
  // A new list holding values, in a block named name (a fresh name if none).
  explicit ShareableList(const std::vector<T>& values, const std::optional<std::string>& name = std::nullopt)
      : shm_(make(values, name)), count_(values.size()) {}
  ShareableList(std::initializer_list<T> values, const std::optional<std::string>& name = std::nullopt)
      : ShareableList(std::vector<T>(values), name) {}
  // Python's ShareableList(name=...): the list another process created. Throws
  // SharedMemoryError when there is none or it holds another type.
  static ShareableList attach(const std::string& name) { return ShareableList(SharedMemory::attach(name)); }

  std::size_t size() const { return count_; }
  // Throws std::out_of_range past the end.
  T get(std::size_t i) const {
    check(i);
    if constexpr (kString) {
      const Slot s = slot(i);
      return std::string(reinterpret_cast<const char*>(shm_.buf() + s.offset), *s.length);
    } else {
      T out;
      std::memcpy(static_cast<void*>(&out), data() + i * sizeof(T), sizeof(T));
      return out;
    }
  }
  T operator[](std::size_t i) const { return get(i); }
  void set(std::size_t i, const T& value) {
    check(i);
    if constexpr (kString) {
      const Slot s = slot(i);
      if (value.size() > s.capacity) {
        throw std::length_error("mpx::ShareableList::set: a string of " + std::to_string(value.size()) +
                                " bytes exceeds the " + std::to_string(s.capacity) +
                                " bytes item " + std::to_string(i) + " has");
      }
      std::memcpy(shm_.buf() + s.offset, value.data(), value.size());
      *s.length = value.size();
    } else {
      std::memcpy(data() + i * sizeof(T), &value, sizeof(T));
    }
  }
  std::size_t count(const T& value) const {
    std::size_t n = 0;
    for (std::size_t i = 0; i < count_; ++i) n += get(i) == value;
    return n;
  }
  // Throws std::invalid_argument when value is not there (Python's ValueError).
  std::size_t index(const T& value) const {
    for (std::size_t i = 0; i < count_; ++i) {
      if (get(i) == value) return i;
    }
    throw std::invalid_argument("mpx::ShareableList::index: value not in the list");
  }
  std::vector<T> to_vector() const {
    std::vector<T> out;
    for (std::size_t i = 0; i < count_; ++i) out.push_back(get(i));
    return out;
  }
  // The block (Python's .shm): its name() is how other processes attach.
  const SharedMemory& shm() const { return shm_; }

 private:
  static constexpr std::size_t kHeader = sizeof(detail::ShareableListHeader);
  // Strings: per item an offset and a capacity (u64 each) and a length (u64), then the
  // bytes.
  struct Slot {
    std::size_t offset, capacity;
    std::uint64_t* length;
  };
  static std::size_t round8(std::size_t n) { return std::max<std::size_t>(8, (n + 7) & ~std::size_t{7}); }

  static SharedMemory make(const std::vector<T>& values, const std::optional<std::string>& name) {
    const std::size_t n = values.size();
    std::size_t bytes = kHeader;
    if constexpr (kString) {
      bytes += n * 3 * sizeof(std::uint64_t);
      for (const auto& v : values) bytes += round8(v.size());
    } else {
      bytes += n * sizeof(T);
    }
    SharedMemory shm = name ? SharedMemory::create(*name, std::max<std::size_t>(bytes, 1))
                            : SharedMemory::create(std::max<std::size_t>(bytes, 1));
    auto* h = reinterpret_cast<detail::ShareableListHeader*>(shm.buf());
    h->type_hash = detail::type_tag<T>().hash;
    h->count = n;
    if constexpr (kString) {
      auto* table = reinterpret_cast<std::uint64_t*>(shm.buf() + kHeader);
      std::size_t at = kHeader + n * 3 * sizeof(std::uint64_t);
      for (std::size_t i = 0; i < n; ++i) {
        table[3 * i] = at;
        table[3 * i + 1] = round8(values[i].size());
        table[3 * i + 2] = values[i].size();
        std::memcpy(shm.buf() + at, values[i].data(), values[i].size());
        at += round8(values[i].size());
      }
    } else {
      if (n > 0) std::memcpy(shm.buf() + kHeader, values.data(), n * sizeof(T));  // data() may be null
    }
    __atomic_store_n(&h->magic, detail::kShareableListMagic, __ATOMIC_RELEASE);
    return shm;
  }
  explicit ShareableList(SharedMemory shm)
      : shm_(std::move(shm)), count_(detail::check_shareable_list(shm_, detail::type_tag<T>())) {
    if constexpr (kString) {
      const auto* table = reinterpret_cast<const std::uint64_t*>(shm_.buf() + kHeader);
      if (kHeader + count_ * 3 * sizeof(std::uint64_t) > shm_.size()) bad();
      for (std::size_t i = 0; i < count_; ++i) {
        if (table[3 * i] > shm_.size() || table[3 * i + 1] > shm_.size() - table[3 * i]) bad();
      }
    } else if (kHeader + count_ * sizeof(T) > shm_.size()) {
      bad();
    }
  }
  [[noreturn]] static void bad() {
    throw SharedMemoryError("mpx::ShareableList: the block's layout does not fit its size");
  }
  void check(std::size_t i) const {
    if (i >= count_) {
      throw std::out_of_range("mpx::ShareableList: index " + std::to_string(i) +
                              " is out of range for a list of " + std::to_string(count_));
    }
  }
  unsigned char* data() const { return shm_.buf() + kHeader; }
  Slot slot(std::size_t i) const {
    auto* table = reinterpret_cast<std::uint64_t*>(shm_.buf() + kHeader);
    const std::size_t capacity = table[3 * i + 1];
    auto* length = &table[3 * i + 2];
    if (*length > capacity) *length = capacity;  // a torn write by another process
    return Slot{table[3 * i], capacity, length};
  }

  SharedMemory shm_;
  std::size_t count_ = 0;
  friend struct detail::HandleCodec<ShareableList<T>>;
};

namespace detail {
// A ShareableList travels as its block.
template <class T>
struct HandleCodec<ShareableList<T>> {
  template <class Stream>
  static void pack(msgpack::packer<Stream>& pk, const ShareableList<T>& l) {
    pk.pack(l.shm());
  }
  static ShareableList<T> unpack(const msgpack::object& o) {
    return ShareableList<T>(o.as<SharedMemory>());
  }
};
}  // namespace detail

}  // namespace mpx

#endif  // MPX_SHARED_MEMORY_H_
