// Manager: the server actor holding dicts and lists of msgpack bytes, and the proxy
// calls to it. See mpx/manager.h.
#include "mpx/manager.h"

#include <algorithm>
#include <list>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <variant>

#include "mpx/runtime.h"

namespace mpx {
namespace detail {
namespace {

// [found, value]
std::string found_answer(const std::string* value) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(2);
  pk.pack(value != nullptr);
  const std::string_view bytes = value ? std::string_view(*value) : std::string_view();
  pk.pack_bin(static_cast<std::uint32_t>(bytes.size()));
  pk.pack_bin_body(bytes.data(), static_cast<std::uint32_t>(bytes.size()));
  return std::string(buf.data(), buf.size());
}

// A dict that keeps insertion order, as Python's.
struct Dict {
  std::list<std::pair<std::string, std::string>> entries;
  std::unordered_map<std::string, std::list<std::pair<std::string, std::string>>::iterator> index;

  std::string* find(const std::string& key) {
    auto it = index.find(key);
    return it == index.end() ? nullptr : &it->second->second;
  }
  void set(const std::string& key, std::string value) {
    if (std::string* v = find(key)) {
      *v = std::move(value);
      return;
    }
    entries.emplace_back(key, std::move(value));
    index.emplace(key, std::prev(entries.end()));
  }
  std::optional<std::string> pop(const std::string& key) {
    auto it = index.find(key);
    if (it == index.end()) return std::nullopt;
    std::string value = std::move(it->second->second);
    entries.erase(it->second);
    index.erase(it);
    return value;
  }
};

using List = std::vector<std::string>;

std::size_t list_index(const List& l, long index, bool inserting = false) {
  const long n = static_cast<long>(l.size());
  long i = index < 0 ? index + n : index;
  if (inserting) return static_cast<std::size_t>(std::clamp(i, 0L, n));  // as Python's insert
  if (i < 0 || i >= n) {
    throw std::out_of_range("list index " + std::to_string(index) + " out of range for a list of " +
                            std::to_string(n) + " (Python's IndexError)");
  }
  return static_cast<std::size_t>(i);
}

long decode_index(const std::string& bytes) { return decode<long>(bytes); }

}  // namespace

// The actor: every request arrives as (op, object id, two encoded operands) and is
// answered with encoded bytes; one request at a time, so none is ever half applied.
class ManagerServer {
 public:
  std::string request(std::uint32_t op_number, std::uint64_t id, std::string a, std::string b) {
    const auto op = static_cast<ManagerOp>(op_number);
    if (op == ManagerOp::kCreateDict || op == ManagerOp::kCreateList) {
      const std::uint64_t fresh = next_id_++;
      if (op == ManagerOp::kCreateDict) {
        objects_.emplace(fresh, Dict{});
      } else {
        objects_.emplace(fresh, List{});
      }
      return encode(fresh);
    }
    auto it = objects_.find(id);
    if (it == objects_.end()) {
      if (op == ManagerOp::kDrop) return encode(false);
      throw std::runtime_error("the managed object " + std::to_string(id) +
                               " is gone (every proxy to it in the process that created it was dropped)");
    }
    if (op == ManagerOp::kDrop) {
      objects_.erase(it);
      return encode(true);
    }
    if (auto* d = std::get_if<Dict>(&it->second)) return on_dict(*d, op, std::move(a), std::move(b));
    return on_list(std::get<List>(it->second), op, std::move(a), std::move(b));
  }

 private:
  static std::string on_dict(Dict& d, ManagerOp op, std::string a, std::string b) {
    switch (op) {
      case ManagerOp::kSize: return encode(d.entries.size());
      case ManagerOp::kClear:
        d.entries.clear();
        d.index.clear();
        return encode(msgpack::type::nil_t());
      case ManagerOp::kContains: return encode(d.find(a) != nullptr);
      case ManagerOp::kGet: return found_answer(d.find(a));
      case ManagerOp::kSet:
        d.set(a, std::move(b));
        return encode(msgpack::type::nil_t());
      case ManagerOp::kPop: {
        const auto v = d.pop(a);
        return found_answer(v ? &*v : nullptr);
      }
      case ManagerOp::kSetDefault:
        if (const std::string* v = d.find(a)) return *v;
        d.set(a, b);
        return b;
      case ManagerOp::kUpdate:
        // Each item is [key, value]: split into the two encodings as sent, so that keys
        // stay byte-identical to the ones set() stores.
        for (const auto& item : decode_items(a)) {
          const auto halves = decode_items(item);
          if (halves.size() != 2) throw std::invalid_argument("update: an item is not a [key, value] pair");
          d.set(halves[0], halves[1]);
        }
        return encode(msgpack::type::nil_t());
      case ManagerOp::kKeys:
      case ManagerOp::kValues:
      case ManagerOp::kItems: {
        std::vector<std::string> out;
        for (const auto& [k, v] : d.entries) {
          if (op == ManagerOp::kKeys) {
            out.push_back(k);
          } else if (op == ManagerOp::kValues) {
            out.push_back(v);
          } else {
            out.push_back(pair_bytes(k, v));
          }
        }
        return encode_items(out);
      }
      default:
        throw std::invalid_argument("this operation does not apply to a dict");
    }
  }

  static std::string on_list(List& l, ManagerOp op, std::string a, std::string b) {
    switch (op) {
      case ManagerOp::kSize: return encode(l.size());
      case ManagerOp::kClear:
        l.clear();
        return encode(msgpack::type::nil_t());
      case ManagerOp::kValues: return encode_items(l);
      case ManagerOp::kContains: return encode(std::find(l.begin(), l.end(), a) != l.end());
      case ManagerOp::kCount: return encode(static_cast<std::size_t>(std::count(l.begin(), l.end(), a)));
      case ManagerOp::kIndex: {
        auto it = std::find(l.begin(), l.end(), a);
        if (it == l.end()) throw std::invalid_argument("list.index(x): x not in list (Python's ValueError)");
        return encode(static_cast<std::size_t>(it - l.begin()));
      }
      case ManagerOp::kRemove: {
        auto it = std::find(l.begin(), l.end(), a);
        if (it == l.end()) throw std::invalid_argument("list.remove(x): x not in list (Python's ValueError)");
        l.erase(it);
        return encode(msgpack::type::nil_t());
      }
      case ManagerOp::kAppend:
        l.push_back(std::move(a));
        return encode(msgpack::type::nil_t());
      case ManagerOp::kExtend:
        for (auto& item : decode_items(a)) l.push_back(std::move(item));
        return encode(msgpack::type::nil_t());
      case ManagerOp::kGetAt: return l[list_index(l, decode_index(a))];
      case ManagerOp::kSetAt:
        l[list_index(l, decode_index(a))] = std::move(b);
        return encode(msgpack::type::nil_t());
      case ManagerOp::kPopAt: {
        if (l.empty()) throw std::out_of_range("pop from empty list (Python's IndexError)");
        const std::size_t i = list_index(l, decode_index(a));
        std::string v = std::move(l[i]);
        l.erase(l.begin() + static_cast<long>(i));
        return v;
      }
      case ManagerOp::kInsert:
        l.insert(l.begin() + static_cast<long>(list_index(l, decode_index(a), true)), std::move(b));
        return encode(msgpack::type::nil_t());
      default:
        throw std::invalid_argument("this operation does not apply to a list");
    }
  }

  static std::string pair_bytes(const std::string& k, const std::string& v) {
    // [key, value], spliced from their encodings.
    std::string out;
    out.push_back(static_cast<char>(0x92));  // fixarray of 2
    out += k;
    out += v;
    return out;
  }

  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, std::variant<Dict, List>> objects_;
};
MPX_ACTOR(ManagerServer, request);

std::string encode_items(const std::vector<std::string>& encoded) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(static_cast<std::uint32_t>(encoded.size()));
  for (const auto& e : encoded) buf.write(e.data(), e.size());  // already msgpack
  return std::string(buf.data(), buf.size());
}

std::vector<std::string> decode_items(const std::string& bytes) {
  std::size_t off = 0;
  const std::uint32_t n = read_array_header(bytes.data(), bytes.size(), off);
  std::vector<std::string> out;
  out.reserve(n);
  msgpack::zone zone;
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::size_t start = off;
    read_object(zone, bytes.data(), bytes.size(), off);
    out.emplace_back(bytes.data() + start, off - start);
  }
  return out;
}

namespace {

// Drops its object from the server when the last proxy in the creating process goes.
struct ManagedOwner {
  std::shared_ptr<ManagerHandle> server;
  std::uint64_t id;
  ~ManagedOwner() {
    try {
      server->tell(&ManagerServer::request, static_cast<std::uint32_t>(ManagerOp::kDrop), id,
                   std::string(), std::string());
    } catch (const std::exception&) {
      // The server is gone, and the object with it.
    }
  }
};

// Rethrows a server-side failure as the local type the proxy documents.
[[noreturn]] void rethrow(const RemoteInfo& e) {
  if (e.type_name() == "std::out_of_range") throw std::out_of_range("mpx::Manager: " + e.message());
  if (e.type_name() == "std::invalid_argument") throw std::invalid_argument("mpx::Manager: " + e.message());
  throw;
}

}  // namespace

std::string manager_request(const ManagedRef& ref, ManagerOp op, std::string a, std::string b) {
  try {
    return ref.server
        ->call(&ManagerServer::request, static_cast<std::uint32_t>(op), ref.id, std::move(a), std::move(b))
        .get();
  } catch (const RemoteInfo& e) {
    rethrow(e);
  }
}

ManagedRef manager_create(const std::shared_ptr<ManagerHandle>& server, ManagerOp op) {
  ManagedRef ref;
  ref.server = server;
  ref.id = decode<std::uint64_t>(manager_request(ref, op));
  ref.owner = std::shared_ptr<ManagedOwner>(new ManagedOwner{server, ref.id});  // no temporary to drop it
  return ref;
}

std::shared_ptr<ManagerHandle> manager_start() {
  return std::make_shared<ManagerHandle>(spawn<ManagerServer>());
}

void manager_shutdown(const ManagerHandle& server) { server.stop(); }

pid_t manager_pid(const ManagerHandle& server) { return server.pid(); }

ManagedRef unpack_managed(const msgpack::object& o) {
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 2) throw msgpack::type_error();
  ManagedRef ref;
  ref.server = std::make_shared<ManagerHandle>(o.via.array.ptr[0].as<ManagerHandle>());
  ref.id = o.via.array.ptr[1].as<std::uint64_t>();
  return ref;
}

}  // namespace detail

Manager::Manager() : server_(detail::manager_start()) {}

void Manager::shutdown() { detail::manager_shutdown(*server_); }

pid_t Manager::pid() const { return detail::manager_pid(*server_); }

}  // namespace mpx
