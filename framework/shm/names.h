// Names for shared objects, held in Linux's abstract unix socket namespace: a process
// that gives an object a name binds two sockets, one whose address is the name (so a
// second claim of it fails) and one whose address also says where the object is (pid,
// descriptor, id); a process looking a name up finds the second in /proc/net/unix.
// The kernel drops both when their holder closes them or dies however it dies: a name
// never outlives its object and nothing is ever written to disk or /dev/shm.
//
// Names are per user (the uid is part of the address) and per network namespace.
// Lookups trust what they find only as far as the caller checks it: the object found
// must carry the name it was looked up by.
#ifndef MPX_FRAMEWORK_SHM_NAMES_H_
#define MPX_FRAMEWORK_SHM_NAMES_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace mpx {
namespace names {

struct Location {
  pid_t pid = 0;
  int fd = -1;
  std::uint64_t id = 0;
  std::uint64_t extra = 0;  // the space's own use (a SharedMemory's size)
};

// Claims name in space ("shm", "actor") for where; the claim lasts as long as the
// returned object. nullptr when the name is held already. Throws mpx::Error when the
// sockets cannot be made.
std::shared_ptr<const void> claim(std::string_view space, std::string_view name, const Location& where);

// Where the object holding name in space is, if anybody holds it.
std::optional<Location> find(std::string_view space, std::string_view name);

}  // namespace names
}  // namespace mpx

#endif  // MPX_FRAMEWORK_SHM_NAMES_H_
