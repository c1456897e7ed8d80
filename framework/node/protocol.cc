#include "framework/node/protocol.h"

#include <elf.h>
#include <link.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "framework/codec/fields.h"
#include "framework/registry/registry.h"

namespace mpx {
namespace node {
namespace {

std::uint64_t fnv1a(std::string_view bytes, std::uint64_t h = 0xcbf29ce484222325ull) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string hex(std::string_view bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string hex64(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// The main program's NT_GNU_BUILD_ID note (the first object dl_iterate_phdr reports).
int find_build_id(dl_phdr_info* info, size_t, void* out) {
  auto* id = static_cast<std::string*>(out);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_NOTE) continue;
    const char* p = reinterpret_cast<const char*>(info->dlpi_addr + ph.p_vaddr);
    const char* end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      const auto* note = reinterpret_cast<const ElfW(Nhdr)*>(p);
      const char* name = p + sizeof(ElfW(Nhdr));
      const char* desc = name + ((note->n_namesz + 3) & ~3u);
      if (note->n_type == NT_GNU_BUILD_ID && note->n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0 &&
          desc + note->n_descsz <= end) {
        *id = hex(std::string_view(desc, note->n_descsz));
        return 1;
      }
      p = desc + ((note->n_descsz + 3) & ~3u);
    }
  }
  return 1;  // only the main program
}

}  // namespace

std::string encode(const Hello& m) { return detail::encode_fields(m); }
std::string encode(const Welcome& m) { return detail::encode_fields(m); }
std::string encode(const Exit& m) { return detail::encode_fields(m); }
Hello decode_hello(const std::string& bytes) {
  Hello m;
  detail::decode_fields(bytes, m, "node hello");
  return m;
}
Welcome decode_welcome(const std::string& bytes) {
  Welcome m;
  detail::decode_fields(bytes, m, "node welcome");
  return m;
}
Exit decode_exit(const std::string& bytes) {
  Exit m;
  detail::decode_fields(bytes, m, "node worker exit");
  return m;
}

std::string build_id() {
  static const std::string id = [] {
    std::string found;
    dl_iterate_phdr(find_build_id, &found);
    if (!found.empty()) return found;
    std::ifstream exe("/proc/self/exe", std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(exe)), std::istreambuf_iterator<char>());
    return "file-" + hex64(fnv1a(bytes));
  }();
  return id;
}

std::string tasks_hash() {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const std::string& name : detail::task_names()) h = fnv1a(std::string_view(name.c_str(), name.size() + 1), h);
  return hex64(h);
}

}  // namespace node
}  // namespace mpx
