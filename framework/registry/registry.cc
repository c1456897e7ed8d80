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

const TaskEntry* find_task(const void* function) {
  auto& m = tables().by_function;
  auto it = m.find(function);
  return it == m.end() ? nullptr : it->second;
}

const TaskEntry& require_task(const void* function, const char* what) {
  if (const TaskEntry* e = find_task(function)) return *e;
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
