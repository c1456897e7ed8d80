// The task registry and the codec helpers the task templates call.
//
// Registration runs during static initialisation, in an unspecified order across
// translation units, so the tables live in function-local statics. After main starts
// they are read-only, hence read without locks.
#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <typeinfo>
#include <unordered_map>
#include <vector>

#include "framework/registry/registry.h"
#include "mpx/task.h"

namespace mpx {
namespace detail {
namespace {

struct Tables {
  std::unordered_map<std::string, const TaskEntry*> by_name;
  std::unordered_map<const void*, const TaskEntry*> by_function;
  std::vector<std::string> duplicates;
  std::vector<std::string> too_long;
};

Tables& tables() {
  static Tables t;
  return t;
}

// Parses one object without building it, adding up the elements its arrays and maps
// claim (a map entry counts twice) and stopping as soon as they exceed the budget.
// Every element takes at least one byte, so no well-formed object of n bytes claims
// more than n.
class ClaimedElements : public msgpack::null_visitor {
 public:
  explicit ClaimedElements(std::size_t budget) : budget_(budget) {}
  bool start_array(std::uint32_t n) { return take(n); }
  bool start_map(std::uint32_t n) { return take(std::size_t{n} * 2); }
  bool exceeded() const { return exceeded_; }

 private:
  bool take(std::size_t n) {
    if (n > budget_) return exceeded_ = true, false;  // false stops the parse
    budget_ -= n;
    return true;
  }
  std::size_t budget_;
  bool exceeded_ = false;
};

}  // namespace

void register_task(const TaskEntry* entry) {
  Tables& t = tables();
  // Names travel in the 255-byte name field of every SUBMIT header.
  if (std::string(entry->name).size() > 255) t.too_long.push_back(entry->name);
  auto [it, inserted] = t.by_name.emplace(entry->name, entry);
  if (!inserted && it->second->function != entry->function) {
    t.duplicates.push_back(entry->name);
  }
  t.by_function.emplace(entry->function, entry);
}

const TaskEntry* find_task(const std::string& name) {
  auto& m = tables().by_name;
  auto it = m.find(name);
  return it == m.end() ? nullptr : it->second;
}

const TaskEntry* find_task_at(const void* function) {
  auto& m = tables().by_function;
  auto it = m.find(function);
  return it == m.end() ? nullptr : it->second;
}

const TaskEntry& require_task(const void* function, const char* what) {
  if (const TaskEntry* e = find_task_at(function)) return *e;
  char address[32];
  std::snprintf(address, sizeof address, "%p", function);
  throw NotRegistered(std::string(what) + ": the function at " + address +
                      " is not registered; add MPX_TASK(<function name>) at namespace scope "
                      "next to its definition so worker processes can find it by name");
}

std::string argument_error_message(const TaskEntry& task, const std::exception& e) {
  return "task '" + std::string(task.name) + "' (" + std::to_string(task.arity) +
         " parameters) could not decode its arguments: " + e.what();
}

std::uint32_t read_array_header(const char* data, std::size_t size, std::size_t& off) {
  if (off >= size) throw DecodeError("payload truncated: expected an array");
  const auto* p = reinterpret_cast<const unsigned char*>(data + off);
  const std::size_t left = size - off;
  if ((p[0] & 0xf0) == 0x90) {
    off += 1;
    return p[0] & 0x0f;
  }
  if (p[0] == 0xdc && left >= 3) {
    off += 3;
    return (std::uint32_t{p[1]} << 8) | p[2];
  }
  if (p[0] == 0xdd && left >= 5) {
    off += 5;
    return (std::uint32_t{p[1]} << 24) | (std::uint32_t{p[2]} << 16) |
           (std::uint32_t{p[3]} << 8) | p[4];
  }
  throw DecodeError("payload is not a msgpack array");
}

msgpack::object read_object(msgpack::zone& zone, const char* data, std::size_t size,
                            std::size_t& off) {
  // msgpack-c allocates an array's or map's elements as soon as it reads the length,
  // before checking that the bytes are there: a 5-byte item claiming 2^32 elements asks
  // for ~100 GB. Every element takes at least one byte (a map entry two), so bound the
  // lengths by what is actually left.
  const std::size_t left = off < size ? size - off : 0;
  const msgpack::unpack_limit limit(/*array=*/left, /*map=*/left / 2, /*str=*/left, /*bin=*/left,
                                    /*ext=*/left);
  // That bound is per container, so nested containers each claiming `left` elements
  // (5 bytes apiece) still allocate left * left / 5 objects: a 64 KB payload took 2 s
  // and a 1 MB one 41 s and 800 MB. Containers are checked first, without allocating,
  // for claiming more elements in total than there are bytes (found by
  // tools/fuzz/payload_fuzz; see RunTaskTest.NestedOverclaimingContainersFailFast).
  const auto first = off < size ? static_cast<unsigned char>(data[off]) : 0;
  // fixmap, fixarray (0x80..0x9f), array16/32, map16/32 (0xdc..0xdf): scalars skip it.
  if ((first & 0xe0) == 0x80 || (first >= 0xdc && first <= 0xdf)) {
    ClaimedElements claims(left);
    std::size_t probe = off;
    msgpack::parse(data, size, probe, claims);
    if (claims.exceeded()) {
      throw DecodeError("payload could not be decoded: its arrays and maps claim more elements "
                        "than the " + std::to_string(left) + " bytes left could hold");
    }
  }
  try {
    return msgpack::unpack(zone, data, size, off, nullptr, nullptr, limit);
  } catch (const std::exception& e) {
    throw DecodeError(std::string("payload could not be decoded: ") + e.what());
  }
}

std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out(abi::__cxa_demangle(mangled, nullptr, nullptr, &status),
                                             std::free);
  return status == 0 && out ? std::string(out.get()) : std::string(mangled);
}

std::string current_exception_type() {
  const std::type_info* t = abi::__cxa_current_exception_type();
  return t ? demangle(t->name()) : std::string("unknown");
}

std::string current_exception_message() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (const std::string& s) {
    return s;
  } catch (const char* s) {
    return s ? s : "";
  } catch (...) {
    return "(exception not derived from std::exception)";
  }
}

std::vector<std::string> duplicate_task_names() { return tables().duplicates; }

std::vector<std::string> overlong_task_names() { return tables().too_long; }

}  // namespace detail
}  // namespace mpx
