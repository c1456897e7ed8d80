// Test helpers (testonly): a handle packed into the msgpack bytes a message carries,
// and read back, as another process would.
#ifndef MPX_FRAMEWORK_SHM_HANDLE_BYTES_H_
#define MPX_FRAMEWORK_SHM_HANDLE_BYTES_H_

#include <string>

#include <msgpack.hpp>

namespace mpx {
namespace shm_testing {

template <class H>
std::string pack(const H& handle) {
  msgpack::sbuffer buf;
  msgpack::pack(buf, handle);
  return std::string(buf.data(), buf.size());
}

template <class H>
H unpack(const std::string& bytes) {
  msgpack::object_handle oh = msgpack::unpack(bytes.data(), bytes.size());
  return oh.get().as<H>();
}

}  // namespace shm_testing
}  // namespace mpx

#endif  // MPX_FRAMEWORK_SHM_HANDLE_BYTES_H_
