// Where a function lives in the program, and what the program's symbol tables say is
// there: how a plain function pointer becomes a task name that other processes of the
// same program can turn back into that function, and check (registry.cc).
//
// Every process of a program maps the same files, each at its own address: a
// function is named by its module ("exe" for the program, else the shared library's
// file name) and its offset from that module's load bias, which is what the ELF
// symbol tables (.symtab, else .dynsym) record as the symbol's value.
#ifndef MPX_FRAMEWORK_REGISTRY_SYMBOLS_H_
#define MPX_FRAMEWORK_REGISTRY_SYMBOLS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mpx {
namespace detail {

struct LoadedModule {
  std::string name;  // "exe" or the library's file name (no directory)
  std::string path;  // a path that opens its file ("/proc/self/exe" for the program)
  std::uintptr_t bias = 0;  // load bias: address = bias + symbol value
};

// The module holding address, nullopt if none does.
std::optional<LoadedModule> module_of(const void* address);
// The loaded module of that name, nullopt if none is.
std::optional<LoadedModule> module_named(const std::string& name);

// The (mangled) names of the function symbols whose value is offset in module's file.
// Empty when none starts there. Throws mpx::Error naming the file when it has no
// symbol table that lists local functions (a stripped program) or cannot be read.
// Tables are read once per module and kept for the life of the process.
std::vector<std::string> functions_at(const LoadedModule& module, std::uintptr_t offset);

}  // namespace detail
}  // namespace mpx

#endif  // MPX_FRAMEWORK_REGISTRY_SYMBOLS_H_
