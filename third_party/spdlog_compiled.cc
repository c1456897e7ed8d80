// spdlog and {fmt} compiled into the programs that use mpx, from Debian's own headers
// (libspdlog-dev, libfmt-dev), instead of linking libspdlog.so and libfmt.so.
//
// Why: every mpx process (driver, router, each worker and actor) is a fresh exec of the
// user's binary, and the dynamic loader touches every page of a shared library's symbol
// tables while it relocates it. Those two libraries cost an idle Pool(2) worker about
// 130 KiB of PSS (BENCHMARKS.md, "spdlog and {fmt} compiled in"), and a static copy
// brings only its code, of which a process touches what it calls.
//
// The public headers keep SPDLOG_COMPILED_LIB without FMT_HEADER_ONLY, so a user's
// translation units compile as fast as before (header-only doubles the compile time of
// a file including mpx/mpx.h: 5.7 -> 12.8 s); the definitions they call live here. This
// file instantiates what Debian's libspdlog and libfmt export (the sinks and factories a
// user may call, not only mpx's), so a program that logs through spdlog links unchanged.
#include <fmt/format-inl.h>
#include <spdlog/async.h>
#include <spdlog/async_logger-inl.h>
#include <spdlog/cfg/helpers-inl.h>
#include <spdlog/common-inl.h>
#include <spdlog/details/backtracer-inl.h>
#include <spdlog/details/file_helper-inl.h>
#include <spdlog/details/log_msg-inl.h>
#include <spdlog/details/log_msg_buffer-inl.h>
#include <spdlog/details/null_mutex.h>
#include <spdlog/details/os-inl.h>
#include <spdlog/details/periodic_worker-inl.h>
#include <spdlog/details/registry-inl.h>
#include <spdlog/details/thread_pool-inl.h>
#include <spdlog/logger-inl.h>
#include <spdlog/pattern_formatter-inl.h>
#include <spdlog/sinks/ansicolor_sink-inl.h>
#include <spdlog/sinks/base_sink-inl.h>
#include <spdlog/sinks/basic_file_sink-inl.h>
#include <spdlog/sinks/rotating_file_sink-inl.h>
#include <spdlog/sinks/sink-inl.h>
#include <spdlog/sinks/stdout_color_sinks-inl.h>
#include <spdlog/sinks/stdout_sinks-inl.h>
#include <spdlog/spdlog-inl.h>

#include <mutex>

FMT_BEGIN_NAMESPACE
namespace detail {
template FMT_API auto dragonbox::to_decimal(float x) noexcept -> dragonbox::decimal_fp<float>;
template FMT_API auto dragonbox::to_decimal(double x) noexcept -> dragonbox::decimal_fp<double>;
template FMT_API locale_ref::locale_ref(const std::locale& loc);
template FMT_API auto locale_ref::get<std::locale>() const -> std::locale;
template FMT_API auto thousands_sep_impl(locale_ref) -> thousands_sep_result<char>;
template FMT_API auto decimal_point_impl(locale_ref) -> char;
template FMT_API void buffer<char>::append(const char*, const char*);
template FMT_API void vformat_to(buffer<char>&, string_view, basic_format_args<FMT_BUFFER_CONTEXT(char)>,
                                 locale_ref);
template FMT_API auto thousands_sep_impl(locale_ref) -> thousands_sep_result<wchar_t>;
template FMT_API auto decimal_point_impl(locale_ref) -> wchar_t;
template FMT_API void buffer<wchar_t>::append(const wchar_t*, const wchar_t*);
}  // namespace detail
FMT_END_NAMESPACE

namespace spdlog {
template SPDLOG_API logger::logger(std::string name, sinks_init_list::iterator begin,
                                   sinks_init_list::iterator end);
namespace sinks {
template class SPDLOG_API base_sink<std::mutex>;
template class SPDLOG_API base_sink<details::null_mutex>;
template class SPDLOG_API basic_file_sink<std::mutex>;
template class SPDLOG_API basic_file_sink<details::null_mutex>;
template class SPDLOG_API rotating_file_sink<std::mutex>;
template class SPDLOG_API rotating_file_sink<details::null_mutex>;
template class SPDLOG_API stdout_sink_base<details::console_mutex>;
template class SPDLOG_API stdout_sink_base<details::console_nullmutex>;
template class SPDLOG_API stdout_sink<details::console_mutex>;
template class SPDLOG_API stdout_sink<details::console_nullmutex>;
template class SPDLOG_API stderr_sink<details::console_mutex>;
template class SPDLOG_API stderr_sink<details::console_nullmutex>;
template class SPDLOG_API ansicolor_sink<details::console_mutex>;
template class SPDLOG_API ansicolor_sink<details::console_nullmutex>;
template class SPDLOG_API ansicolor_stdout_sink<details::console_mutex>;
template class SPDLOG_API ansicolor_stdout_sink<details::console_nullmutex>;
template class SPDLOG_API ansicolor_stderr_sink<details::console_mutex>;
template class SPDLOG_API ansicolor_stderr_sink<details::console_nullmutex>;
}  // namespace sinks

#define MPX_SPDLOG_FACTORIES(factory)                                                                  \
  template SPDLOG_API std::shared_ptr<logger> stdout_logger_mt<factory>(const std::string&);           \
  template SPDLOG_API std::shared_ptr<logger> stdout_logger_st<factory>(const std::string&);           \
  template SPDLOG_API std::shared_ptr<logger> stderr_logger_mt<factory>(const std::string&);           \
  template SPDLOG_API std::shared_ptr<logger> stderr_logger_st<factory>(const std::string&);           \
  template SPDLOG_API std::shared_ptr<logger> stdout_color_mt<factory>(const std::string&, color_mode); \
  template SPDLOG_API std::shared_ptr<logger> stdout_color_st<factory>(const std::string&, color_mode); \
  template SPDLOG_API std::shared_ptr<logger> stderr_color_mt<factory>(const std::string&, color_mode); \
  template SPDLOG_API std::shared_ptr<logger> stderr_color_st<factory>(const std::string&, color_mode);
MPX_SPDLOG_FACTORIES(synchronous_factory)
MPX_SPDLOG_FACTORIES(async_factory)
#undef MPX_SPDLOG_FACTORIES
}  // namespace spdlog
