// The task registry: MPX_TASK's entries by name and by function address.
//
// Registration runs during static initialisation, in an unspecified order across
// translation units, so the tables live in function-local statics. After main starts
// they are read-only, hence read without locks.
#include <dlfcn.h>
#include <link.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <string>
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

std::string closure_task_name(const std::type_info& closure, const void* invoker) {
  std::string module = "?";
  std::uintptr_t offset = reinterpret_cast<std::uintptr_t>(invoker);
  Dl_info info{};
  link_map* map = nullptr;
  if (dladdr1(invoker, &info, reinterpret_cast<void**>(&map), RTLD_DL_LINKMAP) != 0 &&
      info.dli_fbase != nullptr) {
    offset -= reinterpret_cast<std::uintptr_t>(info.dli_fbase);
    // The link map names shared libraries by path and the program itself "": dladdr's
    // dli_fname would be the program's argv[0], which differs between roles.
    if (map != nullptr && map->l_name != nullptr) {
      module = map->l_name[0] != '\0' ? map->l_name : "exe";
      module = module.substr(module.rfind('/') + 1);
    }
  }
  char where[64];
  std::snprintf(where, sizeof where, "+0x%zx", static_cast<std::size_t>(offset));
  std::string suffix = " @" + module.substr(0, 80) + where;
  std::string type = demangle(closure.name());
  // Names travel in a 255-byte field: the type is cut, never the part that makes the
  // name unique.
  const std::size_t room = 255 - std::string("lambda ").size() - suffix.size();
  if (type.size() > room) type = type.substr(0, room - 3) + "...";
  return "lambda " + type + suffix;
}

std::string argument_error_message(const TaskEntry& task, const std::exception& e) {
  return "task '" + std::string(task.name) + "' (" + std::to_string(task.arity) +
         " parameters) could not decode its arguments: " + e.what();
}

std::string out_of_memory_message(const TaskEntry& task) {
  return "task '" + std::string(task.name) +
         "': out of memory decoding its arguments (a worker holds a chunk's bytes and "
         "their decoded values at once): pass smaller arguments or a smaller chunksize, "
         "or raise the pool's worker_memory_limit";
}

std::vector<std::string> duplicate_task_names() { return tables().duplicates; }

std::vector<std::string> overlong_task_names() { return tables().too_long; }

std::vector<std::string> task_names() {
  std::vector<std::string> names;
  for (const auto& [name, entry] : tables().by_name) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace detail
}  // namespace mpx
