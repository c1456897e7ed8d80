#include "framework/registry/symbols.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "mpx/errors.h"

namespace mpx {
namespace detail {
namespace {

std::string short_name(const char* link_map_name) {
  // The link map names the program "" (dladdr's dli_fname would be argv[0], which
  // differs between roles) and libraries by path.
  if (link_map_name == nullptr || link_map_name[0] == '\0') return "exe";
  const std::string path = link_map_name;
  return path.substr(path.rfind('/') + 1);
}

LoadedModule describe(const char* link_map_name, std::uintptr_t bias) {
  LoadedModule m;
  m.name = short_name(link_map_name);
  m.path = m.name == "exe" ? "/proc/self/exe" : link_map_name;
  m.bias = bias;
  return m;
}

// One file's function symbols, sorted by value; names point into the mapped file,
// which stays mapped (read-only, shared with the page cache) for the process's life.
struct SymbolTable {
  std::vector<std::pair<std::uintptr_t, const char*>> functions;
  bool complete = false;  // from .symtab (local functions too), not only .dynsym
};

class Corrupt : public std::exception {};

SymbolTable read_table(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path + " to read its symbols: " + std::strerror(errno));
  struct stat st {};
  const bool sized = ::fstat(fd, &st) == 0 && st.st_size > static_cast<off_t>(sizeof(Elf64_Ehdr));
  void* map = sized ? ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0)
                    : MAP_FAILED;
  ::close(fd);
  if (map == MAP_FAILED) throw Error("cannot map " + path + " to read its symbols");
  const char* base = static_cast<const char*>(map);
  const auto size = static_cast<std::size_t>(st.st_size);
  auto at = [&](std::size_t off, std::size_t len) {
    if (off > size || len > size - off) throw Corrupt();
    return base + off;
  };
  SymbolTable table;
  try {
    Elf64_Ehdr eh;
    std::memcpy(&eh, at(0, sizeof eh), sizeof eh);
    if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_shentsize != sizeof(Elf64_Shdr)) {
      throw Corrupt();
    }
    std::vector<Elf64_Shdr> sections(eh.e_shnum);
    if (!sections.empty()) {
      std::memcpy(sections.data(), at(eh.e_shoff, sections.size() * sizeof(Elf64_Shdr)),
                  sections.size() * sizeof(Elf64_Shdr));
    }
    auto scan = [&](std::uint32_t type) {
      bool found = false;
      for (const Elf64_Shdr& s : sections) {
        if (s.sh_type != type || s.sh_link >= sections.size() || s.sh_entsize != sizeof(Elf64_Sym)) continue;
        found = true;
        const Elf64_Shdr& strings = sections[s.sh_link];
        const char* names = at(strings.sh_offset, strings.sh_size);
        const std::size_t count = s.sh_size / sizeof(Elf64_Sym);
        const char* syms = at(s.sh_offset, count * sizeof(Elf64_Sym));
        for (std::size_t i = 0; i < count; ++i) {
          Elf64_Sym sym;
          std::memcpy(&sym, syms + i * sizeof sym, sizeof sym);
          if (ELF64_ST_TYPE(sym.st_info) != STT_FUNC || sym.st_value == 0 || sym.st_shndx == SHN_UNDEF ||
              sym.st_name >= strings.sh_size) {
            continue;
          }
          // A name must end inside its table: a name running off it is not read.
          const char* name = names + sym.st_name;
          if (std::memchr(name, '\0', strings.sh_size - sym.st_name) == nullptr) continue;
          table.functions.emplace_back(static_cast<std::uintptr_t>(sym.st_value), name);
        }
      }
      return found;
    };
    table.complete = scan(SHT_SYMTAB);
    if (!table.complete) scan(SHT_DYNSYM);
  } catch (const Corrupt&) {
    ::munmap(map, size);
    throw Error(path + " is not an ELF file whose symbols mpx can read");
  }
  std::sort(table.functions.begin(), table.functions.end());
  return table;
}

const SymbolTable& table_of(const LoadedModule& module) {
  static std::mutex mu;
  static auto* tables = new std::map<std::string, SymbolTable>();  // never destroyed: see SymbolTable
  std::lock_guard<std::mutex> lock(mu);
  auto it = tables->find(module.path);
  if (it == tables->end()) it = tables->emplace(module.path, read_table(module.path)).first;
  return it->second;
}

}  // namespace

std::optional<LoadedModule> module_of(const void* address) {
  Dl_info info{};
  link_map* map = nullptr;
  if (dladdr1(address, &info, reinterpret_cast<void**>(&map), RTLD_DL_LINKMAP) == 0 || map == nullptr) {
    return std::nullopt;
  }
  return describe(map->l_name, static_cast<std::uintptr_t>(map->l_addr));
}

std::optional<LoadedModule> module_named(const std::string& name) {
  struct Search {
    const std::string* name;
    std::optional<LoadedModule> found;
  } search{&name, std::nullopt};
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) {
        auto* s = static_cast<Search*>(data);
        if (short_name(info->dlpi_name) != *s->name) return 0;
        s->found = describe(info->dlpi_name, static_cast<std::uintptr_t>(info->dlpi_addr));
        return 1;
      },
      &search);
  return search.found;
}

std::vector<std::string> functions_at(const LoadedModule& module, std::uintptr_t offset) {
  const SymbolTable& table = table_of(module);
  std::vector<std::string> names;
  auto range = std::equal_range(table.functions.begin(), table.functions.end(),
                                std::make_pair(offset, static_cast<const char*>(nullptr)),
                                [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto it = range.first; it != range.second; ++it) names.emplace_back(it->second);
  if (names.empty() && !table.complete) {
    throw Error(module.name + " has no symbol table of its local functions (was it stripped?)");
  }
  return names;
}

}  // namespace detail
}  // namespace mpx
