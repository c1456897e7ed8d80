// The task registry: MPX_TASK's entries by name and by function address.
//
// Registration runs during static initialisation, in an unspecified order across
// translation units, so the tables live in function-local statics. After main starts
// they are read-only, hence read without locks.
#include <algorithm>
#include <cerrno>
#include <memory>
#include <mutex>
#include <optional>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <vector>

#include "framework/registry/registry.h"
#include "framework/registry/symbols.h"
#include "mpx/task.h"

namespace mpx {
namespace detail {
namespace {

struct Tables {
  std::unordered_map<std::string, const TaskEntry*> by_name;
  std::unordered_map<const void*, const TaskEntry*> by_function;
  std::vector<std::string> duplicates;
  std::vector<std::string> too_long;
  std::unordered_map<std::string, const SignatureEntry*> signatures;  // by signature_key
};

Tables& tables() {
  static Tables t;
  return t;
}

// A plain function's task name: "function <demangled symbol> #<signature key> @<module>+0x<offset>".
constexpr char kFunctionPrefix[] = "function ";

std::string signature_key(const SignatureEntry& s) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a of the signature's type name
  for (const char* c = s.type_name; *c != '\0'; ++c) h = (h ^ static_cast<unsigned char>(*c)) * 1099511628211ull;
  char key[17];
  std::snprintf(key, sizeof key, "%016llx", static_cast<unsigned long long>(h));
  return key;
}

// "<module>+0x<offset>" of address; "?+0x<address>" outside any module. A module name
// is cut to module_room characters (a cut name still tells lambdas apart, but cannot
// be found again: plain functions pass no limit).
std::string where_in_module(const void* address, std::size_t module_room = std::string::npos) {
  const std::optional<LoadedModule> m = module_of(address);
  const std::uintptr_t offset = reinterpret_cast<std::uintptr_t>(address) - (m ? m->bias : 0);
  char where[32];
  std::snprintf(where, sizeof where, "+0x%zx", static_cast<std::size_t>(offset));
  return (m ? m->name.substr(0, module_room) : std::string("?")) + where;
}

// The parameter list a demangler prints for a function type or symbol: the last
// balanced "(...)" ("square(int)" -> "(int)", "void (*)(int)" -> "(int)").
std::string parameter_list(const std::string& demangled) {
  if (demangled.empty() || demangled.back() != ')') return "";
  int depth = 0;
  for (std::size_t i = demangled.size(); i-- > 0;) {
    if (demangled[i] == ')') ++depth;
    if (demangled[i] == '(' && --depth == 0) return demangled.substr(i);
  }
  return "";
}

// Plain functions' tasks, made on first use in each process and kept for its life.
class FunctionTasks {
 public:
  static FunctionTasks& instance() {
    static auto* tasks = new FunctionTasks();  // entries outlive every user: never destroyed
    return *tasks;
  }

  // In the process that passes the function.
  const TaskEntry& by_address(const void* fn, const SignatureEntry& signature, const char* what) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_address_.find(fn);
    if (it != by_address_.end()) return *it->second;
    const std::string where = where_in_module(fn);
    const std::string advice =
        ": register it with MPX_TASK(<function name>) at namespace scope, or pass a lambda";
    Checked c;
    try {
      c = check(where, signature);
    } catch (const Error& e) {
      throw NotRegistered(std::string(what) + ": the function at " + where +
                          " cannot be found again by other processes: " + e.what() + advice);
    }
    // Names travel in a 255-byte field: the symbol shown is cut, never the parts that
    // find the function again.
    const std::string tail = " #" + signature_key(signature) + " @" + where;
    const std::size_t fixed = std::string(kFunctionPrefix).size() + tail.size();
    if (fixed + 40 > 255) {
      throw NotRegistered(std::string(what) + ": the function at " + where +
                          " lives in a module whose name is too long for a task name" + advice);
    }
    std::string shown = c.symbol;
    if (shown.size() > 255 - fixed) shown = shown.substr(0, 255 - fixed - 3) + "...";
    return *(by_address_[fn] = add(kFunctionPrefix + shown + tail, c));
  }

  // In a process that receives the name: every part is checked again here.
  const TaskEntry& by_name(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_name_.find(name);
    if (it != by_name_.end()) return *it->second;
    const std::size_t at = name.rfind(" @");
    const std::size_t hash = name.rfind(" #", at);
    if (at == std::string::npos || hash == std::string::npos) {
      throw NotRegistered("no task named '" + name + "' is registered in this program");
    }
    const std::string key = name.substr(hash + 2, at - hash - 2);
    auto sig = tables().signatures.find(key);
    if (sig == tables().signatures.end()) {
      throw NotRegistered("task '" + name + "': this program passes no function of that signature");
    }
    if (sig->second == nullptr) {
      throw NotRegistered("task '" + name + "': its parameter or result types are named alike by "
                          "types in anonymous namespaces of other files, so this process cannot "
                          "tell which to decode: register the function with MPX_TASK(fn), or "
                          "give those types distinct names");
    }
    Checked c;
    try {
      c = check(name.substr(at + 2), *sig->second);
    } catch (const Error& e) {
      throw NotRegistered("task '" + name + "' is refused: " + e.what());
    }
    return *add(name, c);
  }

 private:
  struct Checked {
    const SignatureEntry* signature = nullptr;
    const void* function = nullptr;
    std::string symbol;  // demangled
  };
  struct Owned {
    std::string name;
    TaskEntry entry;
  };

  // where is "<module>+0x<offset>": the function there must start a C++ function of
  // the signature's parameter types in that module's symbol table.
  static Checked check(const std::string& where, const SignatureEntry& signature) {
    const std::size_t plus = where.rfind("+0x");
    if (plus == std::string::npos) throw Error("'" + where + "' is not <module>+0x<offset>");
    const std::optional<LoadedModule> module = module_named(where.substr(0, plus));
    if (!module) throw Error("no module named '" + where.substr(0, plus) + "' is loaded");
    char* end = nullptr;
    errno = 0;
    const unsigned long long offset = std::strtoull(where.c_str() + plus + 3, &end, 16);
    if (errno != 0 || end == where.c_str() + plus + 3 || *end != '\0') {
      throw Error("'" + where + "' has no hexadecimal offset");
    }
    const std::string wanted = parameter_list(demangle(signature.parameters_name));
    std::vector<std::string> seen;
    for (const std::string& mangled : functions_at(*module, static_cast<std::uintptr_t>(offset))) {
      const std::string symbol = demangle(mangled.c_str());
      if (mangled.rfind("_Z", 0) == 0 && !wanted.empty() && parameter_list(symbol) == wanted) {
        Checked c;
        c.signature = &signature;
        c.function = reinterpret_cast<const void*>(module->bias + static_cast<std::uintptr_t>(offset));
        c.symbol = symbol;
        return c;
      }
      seen.push_back(symbol);
    }
    if (seen.empty()) throw Error("no function starts at " + where);
    std::string list;
    for (const std::string& s : seen) list += (list.empty() ? "" : ", ") + s;
    throw Error("the function there (" + list + ") is not a C++ function taking " + wanted);
  }

  const TaskEntry* add(const std::string& name, const Checked& c) {
    auto owned = std::make_unique<Owned>();
    owned->name = name;
    owned->entry = TaskEntry{nullptr, c.function, c.signature->arity, c.signature->run_chunk,
                             c.signature->run_call, false};
    owned->entry.name = owned->name.c_str();
    const TaskEntry* e = &owned->entry;
    by_name_.emplace(owned->name, e);
    owned_.push_back(std::move(owned));
    return e;
  }

  std::mutex mu_;
  std::unordered_map<const void*, const TaskEntry*> by_address_;
  std::unordered_map<std::string, const TaskEntry*> by_name_;
  std::vector<std::unique_ptr<Owned>> owned_;
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

const TaskEntry* find_task_at(const void* function) {
  auto& m = tables().by_function;
  auto it = m.find(function);
  return it == m.end() ? nullptr : it->second;
}

void register_signature(const SignatureEntry* entry) {
  auto [it, added] = tables().signatures.emplace(signature_key(*entry), entry);
  // Types of the same name in anonymous namespaces of two files are two types under
  // one name (GCC spells every anonymous namespace _GLOBAL__N_1): a receiver could
  // not tell which decoder a function of that signature needs. Null marks the key
  // ambiguous (by_name refuses it) rather than decoding with the wrong type.
  if (!added && it->second != nullptr && it->second != entry &&
      std::strstr(entry->type_name, "_GLOBAL__N") != nullptr) {
    it->second = nullptr;
  }
}

const TaskEntry* find_task(const std::string& name, std::string* why) {
  auto& m = tables().by_name;
  auto it = m.find(name);
  if (it != m.end()) return it->second;
  if (name.rfind(kFunctionPrefix, 0) == 0) {
    try {
      return &FunctionTasks::instance().by_name(name);
    } catch (const NotRegistered& e) {
      if (why != nullptr) *why = e.what();
      return nullptr;
    }
  }
  if (why != nullptr) *why = "no task named '" + name + "' is registered in this program";
  return nullptr;
}

const TaskEntry& function_task(const void* fn, const SignatureEntry& signature, const char* what) {
  return FunctionTasks::instance().by_address(fn, signature, what);
}

std::string closure_task_name(const std::type_info& closure, const void* invoker) {
  const std::string suffix = " @" + where_in_module(invoker, 80);
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
