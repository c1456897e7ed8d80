// mpx/manager.h — Manager: shared containers served by a process of their own
// (Python's multiprocessing.Manager with dict(), list() and Namespace()).
//
//   mpx::Manager manager;                                   // starts the server process
//   auto scores = manager.dict<std::string, int>();
//   auto log = manager.list<std::string>();
//   auto settings = manager.Namespace();
//   settings.set("threshold", 0.5);
//
//   void worker(mpx::DictProxy<std::string, int> scores, mpx::ListProxy<std::string> log) {
//     scores.set("worker-" + std::to_string(getpid()), 1);
//     log.append("done");
//   }
//   MPX_TASK(worker);                                       // proxies go to Processes,
//   pool.apply(worker, scores, log);                        // pool tasks and actors
//   scores.get("a");                                        // std::optional<int>
//
// Why a server process and not shared memory: these containers hold any number of
// items of any msgpack-serializable type, which a sealed shared-memory segment (fixed
// size, fixed layout) cannot, and a server that applies one request at a time cannot
// be left half-updated by a client killed in the middle of one (a request is a whole
// frame or nothing). Fixed-size data belongs in Value, Array, RawArray or
// ShareableList, which need no server. The server is an mpx actor: one call is one
// round trip over a unix stream (BENCHMARKS.md: ~10x faster than Python's Manager).
//
// Semantics:
// - Each operation is atomic (the server runs one at a time); a read-modify-write of
//   several operations is not: guard it with an mpx::Lock, as in Python.
// - Iteration order of a dict is insertion order, as in Python. Keys compare by their
//   msgpack encoding (so 1 and 1.0 are different keys).
// - Lifetime: the server lives while the Manager or a proxy lives in the process that
//   created the Manager (or until shutdown()); an object lives while a proxy to it
//   lives in the process that created it (a Process, Pool or actor call given a proxy
//   keeps it). If the server process dies, every operation throws mpx::ActorDied.
// - Errors: an index out of range throws std::out_of_range (Python's IndexError),
//   at() of a missing key std::out_of_range (KeyError), a Namespace attribute that was
//   never set mpx::Error (AttributeError), a value of another type DecodeError.
//
// Thread safety: proxies and the Manager may be used from any thread of any process.
#ifndef MPX_MANAGER_H_
#define MPX_MANAGER_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <msgpack.hpp>

#include "mpx/actor.h"
#include "mpx/detail/codec.h"
#include "mpx/detail/handle.h"
#include "mpx/errors.h"

namespace mpx {
namespace detail {

class ManagerServer;  // the server actor (framework/manager)
using ManagerHandle = Actor<ManagerServer>;

enum class ManagerOp : std::uint32_t {
  kCreateDict = 1,
  kCreateList,
  kDrop,
  kSize,
  kClear,
  kValues,   // list items / dict values, as an array
  kContains,
  kCount,
  kIndex,
  // dict
  kGet,      // [found, value]
  kSet,
  kPop,      // [found, value]
  kSetDefault,
  kKeys,
  kItems,    // array of [key, value]
  kUpdate,   // a: array of [key, value]
  // list
  kAppend,
  kExtend,   // a: array of values
  kGetAt,    // a: index (negative from the end)
  kSetAt,
  kPopAt,
  kInsert,
  kRemove,
};

// One object of a manager: the server, the object's id, and in the process that
// created it the token whose end drops the object.
struct ManagedRef {
  std::shared_ptr<ManagerHandle> server;
  std::uint64_t id = 0;
  std::shared_ptr<const void> owner;  // creator process only
};

// Runs op on ref's object; returns the encoded answer. Throws what the server threw,
// as the local type where there is one (std::out_of_range), mpx::ActorDied when the
// server is gone.
std::string manager_request(const ManagedRef& ref, ManagerOp op, std::string a = {}, std::string b = {});
// Creates an object; the returned ref owns it.
ManagedRef manager_create(const std::shared_ptr<ManagerHandle>& server, ManagerOp op);
std::shared_ptr<ManagerHandle> manager_start();
void manager_shutdown(const ManagerHandle& server);
pid_t manager_pid(const ManagerHandle& server);
// Travels as [server, id]; pins the owner token (in its process) while a call carries
// it, as the server's handle pins the server.
template <class Stream>
void pack_managed(msgpack::packer<Stream>& pk, const ManagedRef& ref) {
  if (ref.owner) pin(ref.owner);
  pk.pack_array(2);
  pk.pack(*ref.server);
  pk.pack(ref.id);
}
ManagedRef unpack_managed(const msgpack::object& o);

template <class T>
std::string encode(const T& value) {
  detail::Buffer buf;  // keeps -0.0 (see codec.h)
  msgpack::pack(buf, value);
  return std::string(buf.data(), buf.size());
}
template <class T>
T decode(const std::string& bytes) {
  try {
    msgpack::object_handle oh = msgpack::unpack(bytes.data(), bytes.size());
    return oh.get().as<T>();
  } catch (const SharedMemoryError&) {
    throw;
  } catch (const std::exception& e) {
    throw DecodeError(std::string("mpx::Manager: a stored value could not be read as ") +
                      std::string(pretty_type_name<T>()) + ": " + e.what());
  }
}
// An answer [found, value bytes] as (found, value bytes).
inline std::pair<bool, std::string> split_found(const std::string& bytes) {
  try {
    msgpack::object_handle oh = msgpack::unpack(bytes.data(), bytes.size());
    const auto t = oh.get().as<std::tuple<bool, msgpack::type::raw_ref>>();
    // Copied while oh lives: the reference points into its zone.
    return {std::get<0>(t), std::string(std::get<1>(t).ptr, std::get<1>(t).size)};
  } catch (const std::exception& e) {
    throw DecodeError(std::string("mpx::Manager: a malformed answer: ") + e.what());
  }
}
template <class T>
std::optional<T> decode_found(const std::string& bytes) {
  auto [found, value] = split_found(bytes);
  if (!found) return std::nullopt;
  return decode<T>(value);
}
inline bool found(const std::string& bytes) { return split_found(bytes).first; }
std::string encode_items(const std::vector<std::string>& encoded);
std::vector<std::string> decode_items(const std::string& bytes);

// What every proxy has: its object, and how it travels.
class ProxyBase {
 public:
  // The object's server process.
  pid_t server_pid() const { return manager_pid(*ref_.server); }

 protected:
  explicit ProxyBase(ManagedRef ref) : ref_(std::move(ref)) {}
  std::string request(ManagerOp op, std::string a = {}, std::string b = {}) const {
    return manager_request(ref_, op, std::move(a), std::move(b));
  }
  ManagedRef ref_;
  friend struct ProxyAccess;
};

struct ProxyAccess {
  static const ManagedRef& ref(const ProxyBase& p) { return p.ref_; }
};

}  // namespace detail

class Manager;

// A dict in a Manager (Python's DictProxy), with keys K and values V.
template <class K, class V>
class DictProxy : public detail::ProxyBase {
 public:
  void set(const K& key, const V& value) { request(detail::ManagerOp::kSet, detail::encode(key), detail::encode(value)); }
  // Python's d.get(key): nullopt when absent.
  std::optional<V> get(const K& key) const {
    return detail::decode_found<V>(request(detail::ManagerOp::kGet, detail::encode(key)));
  }
  V get(const K& key, const V& fallback) const { return get(key).value_or(fallback); }
  // Python's d[key]: throws std::out_of_range (KeyError) when absent.
  V at(const K& key) const {
    if (auto v = get(key)) return *std::move(v);
    throw std::out_of_range("mpx::DictProxy::at: no such key (Python's KeyError)");
  }
  bool contains(const K& key) const {
    return detail::decode<bool>(request(detail::ManagerOp::kContains, detail::encode(key)));
  }
  // Removes key; its value, or nullopt when absent.
  std::optional<V> pop(const K& key) {
    return detail::decode_found<V>(request(detail::ManagerOp::kPop, detail::encode(key)));
  }
  // The value of key, after setting it to value if it was absent.
  V setdefault(const K& key, const V& value) {
    return detail::decode<V>(request(detail::ManagerOp::kSetDefault, detail::encode(key), detail::encode(value)));
  }
  void update(const std::map<K, V>& items) {
    std::vector<std::string> encoded;
    for (const auto& [k, v] : items) encoded.push_back(detail::encode(std::make_tuple(k, v)));
    request(detail::ManagerOp::kUpdate, detail::encode_items(encoded));
  }
  std::size_t size() const { return detail::decode<std::size_t>(request(detail::ManagerOp::kSize)); }
  bool empty() const { return size() == 0; }
  void clear() { request(detail::ManagerOp::kClear); }
  std::vector<K> keys() const { return decode_all<K>(detail::ManagerOp::kKeys); }
  std::vector<V> values() const { return decode_all<V>(detail::ManagerOp::kValues); }
  std::vector<std::pair<K, V>> items() const {
    std::vector<std::pair<K, V>> out;
    for (const auto& item : decode_all<std::tuple<K, V>>(detail::ManagerOp::kItems)) {
      out.emplace_back(std::get<0>(item), std::get<1>(item));
    }
    return out;
  }
  // A copy (Python's dict(d)).
  std::map<K, V> copy() const {
    std::map<K, V> out;
    for (auto& [k, v] : items()) out.emplace(std::move(k), std::move(v));
    return out;
  }

 private:
  explicit DictProxy(detail::ManagedRef ref) : ProxyBase(std::move(ref)) {}
  template <class T>
  std::vector<T> decode_all(detail::ManagerOp op) const {
    std::vector<T> out;
    for (const auto& bytes : detail::decode_items(request(op))) out.push_back(detail::decode<T>(bytes));
    return out;
  }
  friend class Manager;
  friend struct detail::HandleCodec<DictProxy<K, V>>;
};

// A list in a Manager (Python's ListProxy). Indices may be negative, counting from the
// end, as in Python; out of range throws std::out_of_range (IndexError).
template <class T>
class ListProxy : public detail::ProxyBase {
 public:
  void append(const T& value) { request(detail::ManagerOp::kAppend, detail::encode(value)); }
  void extend(const std::vector<T>& values) {
    std::vector<std::string> encoded;
    for (const auto& v : values) encoded.push_back(detail::encode(v));
    request(detail::ManagerOp::kExtend, detail::encode_items(encoded));
  }
  T at(long index) const { return detail::decode<T>(request(detail::ManagerOp::kGetAt, detail::encode(index))); }
  T operator[](long index) const { return at(index); }
  void set(long index, const T& value) {
    request(detail::ManagerOp::kSetAt, detail::encode(index), detail::encode(value));
  }
  T pop(long index = -1) { return detail::decode<T>(request(detail::ManagerOp::kPopAt, detail::encode(index))); }
  void insert(long index, const T& value) {
    request(detail::ManagerOp::kInsert, detail::encode(index), detail::encode(value));
  }
  // Removes the first item equal to value; throws std::invalid_argument (ValueError)
  // when there is none.
  void remove(const T& value) { request(detail::ManagerOp::kRemove, detail::encode(value)); }
  // Throws std::invalid_argument (ValueError) when value is not there.
  std::size_t index(const T& value) const {
    return detail::decode<std::size_t>(request(detail::ManagerOp::kIndex, detail::encode(value)));
  }
  std::size_t count(const T& value) const {
    return detail::decode<std::size_t>(request(detail::ManagerOp::kCount, detail::encode(value)));
  }
  bool contains(const T& value) const {
    return detail::decode<bool>(request(detail::ManagerOp::kContains, detail::encode(value)));
  }
  std::size_t size() const { return detail::decode<std::size_t>(request(detail::ManagerOp::kSize)); }
  bool empty() const { return size() == 0; }
  void clear() { request(detail::ManagerOp::kClear); }
  // A copy (Python's list(l)).
  std::vector<T> to_vector() const {
    std::vector<T> out;
    for (const auto& bytes : detail::decode_items(request(detail::ManagerOp::kValues))) {
      out.push_back(detail::decode<T>(bytes));
    }
    return out;
  }

 private:
  explicit ListProxy(detail::ManagedRef ref) : ProxyBase(std::move(ref)) {}
  friend class Manager;
  friend struct detail::HandleCodec<ListProxy<T>>;
};

// Python's Namespace: named attributes of any msgpack-serializable type.
//   ns.set("lr", 0.1);  double lr = ns.get<double>("lr");
class NamespaceProxy : public detail::ProxyBase {
 public:
  template <class T>
  void set(const std::string& name, const T& value) {
    request(detail::ManagerOp::kSet, detail::encode(name), detail::encode(value));
  }
  // Throws mpx::Error when name was never set (Python's AttributeError), DecodeError
  // when it holds another type.
  template <class T>
  T get(const std::string& name) const {
    auto v = detail::decode_found<T>(request(detail::ManagerOp::kGet, detail::encode(name)));
    if (!v) throw Error("mpx::Namespace: no attribute '" + name + "' (Python's AttributeError)");
    return *std::move(v);
  }
  bool has(const std::string& name) const {
    return detail::decode<bool>(request(detail::ManagerOp::kContains, detail::encode(name)));
  }
  // Removes name (Python's del ns.name); false when it was not set.
  bool del(const std::string& name) {
    return detail::found(request(detail::ManagerOp::kPop, detail::encode(name)));
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& bytes : detail::decode_items(request(detail::ManagerOp::kKeys))) {
      out.push_back(detail::decode<std::string>(bytes));
    }
    return out;
  }

 private:
  explicit NamespaceProxy(detail::ManagedRef ref) : ProxyBase(std::move(ref)) {}
  friend class Manager;
  friend struct detail::HandleCodec<NamespaceProxy>;
};

class Manager {
 public:
  // Starts the server process. Throws what mpx::spawn throws.
  Manager();
  template <class K, class V>
  DictProxy<K, V> dict() {
    return DictProxy<K, V>(detail::manager_create(server_, detail::ManagerOp::kCreateDict));
  }
  template <class K, class V>
  DictProxy<K, V> dict(const std::map<K, V>& initial) {
    auto d = dict<K, V>();
    if (!initial.empty()) d.update(initial);
    return d;
  }
  template <class T>
  ListProxy<T> list() {
    return ListProxy<T>(detail::manager_create(server_, detail::ManagerOp::kCreateList));
  }
  template <class T>
  ListProxy<T> list(const std::vector<T>& initial) {
    auto l = list<T>();
    if (!initial.empty()) l.extend(initial);
    return l;
  }
  NamespaceProxy Namespace() {
    return NamespaceProxy(detail::manager_create(server_, detail::ManagerOp::kCreateDict));
  }
  // Stops the server now (Python's shutdown()): later operations on its proxies throw
  // mpx::ActorDied. Idempotent.
  void shutdown();
  // The server's process.
  pid_t pid() const;

 private:
  std::shared_ptr<detail::ManagerHandle> server_;
};

namespace detail {
template <class P>
struct ProxyCodec {
  template <class Stream>
  static void pack(msgpack::packer<Stream>& pk, const P& p) {
    pack_managed(pk, ProxyAccess::ref(p));
  }
  static ManagedRef ref_of(const msgpack::object& o) { return unpack_managed(o); }
};
template <class K, class V>
struct HandleCodec<DictProxy<K, V>> : ProxyCodec<DictProxy<K, V>> {
  static DictProxy<K, V> unpack(const msgpack::object& o) { return DictProxy<K, V>(ProxyCodec<DictProxy<K, V>>::ref_of(o)); }
};
template <class T>
struct HandleCodec<ListProxy<T>> : ProxyCodec<ListProxy<T>> {
  static ListProxy<T> unpack(const msgpack::object& o) { return ListProxy<T>(ProxyCodec<ListProxy<T>>::ref_of(o)); }
};
template <>
struct HandleCodec<NamespaceProxy> : ProxyCodec<NamespaceProxy> {
  static NamespaceProxy unpack(const msgpack::object& o) { return NamespaceProxy(ref_of(o)); }
};
}  // namespace detail

}  // namespace mpx

#endif  // MPX_MANAGER_H_
