#include "framework/process/process_child.h"

#include <msgpack.hpp>

#include "framework/base/base.h"
#include "mpx/runtime.h"

namespace mpx {
namespace process_child {

std::string encode_bootstrap(const detail::TaskEntry& task, const std::string& args, bool daemon) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(3);
  pk.pack(std::string(task.name));
  pk.pack_bin(static_cast<std::uint32_t>(args.size()));
  pk.pack_bin_body(args.data(), static_cast<std::uint32_t>(args.size()));
  pk.pack(daemon);
  return std::string(buf.data(), buf.size());
}

int run_process(const spawning::Bootstrap& boot) {
  // The driver may run this Process from any thread, so PR_SET_PDEATHSIG (which follows
  // the spawning thread) is not reliable: watch the parent's pidfd instead.
  spawning::kill_self_when_gone(spawning::open_parent_or_exit(boot.parent));
  std::string name;
  std::string args;
  try {
    auto oh = msgpack::unpack(boot.payload.data(), boot.payload.size());
    std::tuple<std::string, msgpack::type::raw_ref, bool> call;
    oh.get().convert(call);
    name = std::get<0>(call);
    args.assign(std::get<1>(call).ptr, std::get<1>(call).size);
    base::set_daemon(std::get<2>(call));
  } catch (const std::exception& e) {
    logger().error("could not decode the call to run: {}", e.what());
    return 1;
  }
  std::string why;
  const detail::TaskEntry* entry = detail::find_task(name, &why);
  if (entry == nullptr) {
    logger().error("{}", why);
    return 1;
  }
  int code = 0;
  try {
    entry->run_call(*entry, args.data(), args.size());
  } catch (...) {
    logger().error("task '{}' raised {}: {}", name, detail::current_exception_type(),
                   detail::current_exception_message());
    code = 1;
  }
  end_children();  // the role ends with _exit, which runs no atexit handler
  return code;
}

}  // namespace process_child
}  // namespace mpx
