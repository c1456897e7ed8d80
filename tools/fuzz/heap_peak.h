// Peak heap growth of a stretch of code, for the fuzz targets' "decoding n bytes never
// needs more than a fixed multiple of n bytes of memory" property (an amplification —
// a few bytes that make a decoder allocate megabytes — is a bug even when nothing
// crashes). Counted by sanitizer malloc/free hooks, so it needs an ASan build, which
// tools/fuzz/run makes. Single-threaded use only: the fuzz targets run one input at a
// time on one thread.
#ifndef MPX_TOOLS_FUZZ_HEAP_PEAK_H_
#define MPX_TOOLS_FUZZ_HEAP_PEAK_H_

#include <sanitizer/allocator_interface.h>

#include <cstddef>
#include <cstdint>

namespace mpx_fuzz {

class HeapPeak {
 public:
  // Starts counting: peak() is the most bytes live at once, beyond those live now.
  HeapPeak() {
    static const bool installed =
        __sanitizer_install_malloc_and_free_hooks(&on_malloc, &on_free) != 0;
    (void)installed;
    live() = 0;
    peak_ref() = 0;
    counting() = true;
  }
  ~HeapPeak() { counting() = false; }
  HeapPeak(const HeapPeak&) = delete;
  HeapPeak& operator=(const HeapPeak&) = delete;

  std::int64_t peak() const { return peak_ref(); }

 private:
  static std::int64_t& live() {
    static std::int64_t bytes = 0;
    return bytes;
  }
  static std::int64_t& peak_ref() {
    static std::int64_t bytes = 0;
    return bytes;
  }
  static bool& counting() {
    static bool on = false;
    return on;
  }
  static void on_malloc(const volatile void*, std::size_t size) {
    if (!counting()) return;
    live() += static_cast<std::int64_t>(size);
    if (live() > peak_ref()) peak_ref() = live();
  }
  // Blocks allocated before counting started make live() negative when freed, which
  // only lowers what counts as a peak later: never a false report.
  static void on_free(const volatile void* p) {
    if (counting() && p != nullptr) {
      live() -= static_cast<std::int64_t>(__sanitizer_get_allocated_size(p));
    }
  }
};

}  // namespace mpx_fuzz

#endif  // MPX_TOOLS_FUZZ_HEAP_PEAK_H_
