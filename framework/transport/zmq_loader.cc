// libzmq, loaded on first use instead of at program start.
//
// Every mpx role is the same executable, and most processes never touch ZeroMQ: a
// Process child, an actor, the driver until it makes a Pool. Linked normally, libzmq
// brings its whole dependency tree into every one of them at exec (libsodium, libpgm,
// libnorm, GSSAPI/Kerberos: 13 of the program's 22 shared libraries), which measured
// ~2.5 ms of a ~3.5 ms Process start here. So the program defines the libzmq functions
// it uses itself (the C API cppzmq calls, prototypes from <zmq.h>), and each one
// forwards to the real function, found with dlopen/dlsym the first time any is called.
//
// Thread safety: the library handle and each function pointer are function-local
// statics (initialised once, thread-safe). A libzmq that cannot be loaded is a broken
// installation: the process says so on stderr and aborts.
#include <dlfcn.h>
#include <zmq.h>

#include <cstdio>
#include <cstdlib>

namespace {

// The soname libzmq3-dev links against (package libzmq5).
constexpr const char* kLibrary = "libzmq.so.5";

void* library() {
  static void* const handle = [] {
    void* h = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      std::fprintf(stderr, "mpx: cannot load %s (Debian package libzmq5): %s\n", kLibrary, dlerror());
      std::abort();
    }
    return h;
  }();
  return handle;
}

template <class Fn>
Fn resolve(const char* name) {
  void* symbol = dlsym(library(), name);
  if (symbol == nullptr) {
    std::fprintf(stderr, "mpx: %s has no function %s: %s\n", kLibrary, name, dlerror());
    std::abort();
  }
  return reinterpret_cast<Fn>(symbol);
}

}  // namespace

#define MPX_ZMQ_FORWARD(result, name, params, args)                    \
  extern "C" result name params {                                      \
    static const auto real = resolve<result(*) params>(#name);         \
    return real args;                                                  \
  }

MPX_ZMQ_FORWARD(int, zmq_errno, (void), ())
MPX_ZMQ_FORWARD(const char*, zmq_strerror, (int errnum), (errnum))
MPX_ZMQ_FORWARD(void, zmq_version, (int* major, int* minor, int* patch), (major, minor, patch))
MPX_ZMQ_FORWARD(int, zmq_has, (const char* capability), (capability))

MPX_ZMQ_FORWARD(void*, zmq_ctx_new, (void), ())
MPX_ZMQ_FORWARD(int, zmq_ctx_term, (void* context), (context))
MPX_ZMQ_FORWARD(int, zmq_ctx_shutdown, (void* context), (context))
MPX_ZMQ_FORWARD(int, zmq_ctx_set, (void* context, int option, int value), (context, option, value))
MPX_ZMQ_FORWARD(int, zmq_ctx_get, (void* context, int option), (context, option))

MPX_ZMQ_FORWARD(int, zmq_msg_init, (zmq_msg_t* msg), (msg))
MPX_ZMQ_FORWARD(int, zmq_msg_init_size, (zmq_msg_t* msg, size_t size), (msg, size))
MPX_ZMQ_FORWARD(int, zmq_msg_init_data,
                (zmq_msg_t* msg, void* data, size_t size, zmq_free_fn* free_fn, void* hint),
                (msg, data, size, free_fn, hint))
MPX_ZMQ_FORWARD(int, zmq_msg_send, (zmq_msg_t* msg, void* socket, int flags), (msg, socket, flags))
MPX_ZMQ_FORWARD(int, zmq_msg_recv, (zmq_msg_t* msg, void* socket, int flags), (msg, socket, flags))
MPX_ZMQ_FORWARD(int, zmq_msg_close, (zmq_msg_t* msg), (msg))
MPX_ZMQ_FORWARD(int, zmq_msg_move, (zmq_msg_t* dest, zmq_msg_t* src), (dest, src))
MPX_ZMQ_FORWARD(int, zmq_msg_copy, (zmq_msg_t* dest, zmq_msg_t* src), (dest, src))
MPX_ZMQ_FORWARD(void*, zmq_msg_data, (zmq_msg_t* msg), (msg))
MPX_ZMQ_FORWARD(size_t, zmq_msg_size, (const zmq_msg_t* msg), (msg))
MPX_ZMQ_FORWARD(int, zmq_msg_more, (const zmq_msg_t* msg), (msg))
MPX_ZMQ_FORWARD(int, zmq_msg_get, (const zmq_msg_t* msg, int property), (msg, property))
MPX_ZMQ_FORWARD(int, zmq_msg_set, (zmq_msg_t* msg, int property, int value), (msg, property, value))
MPX_ZMQ_FORWARD(const char*, zmq_msg_gets, (const zmq_msg_t* msg, const char* property), (msg, property))

MPX_ZMQ_FORWARD(void*, zmq_socket, (void* context, int type), (context, type))
MPX_ZMQ_FORWARD(int, zmq_close, (void* socket), (socket))
MPX_ZMQ_FORWARD(int, zmq_setsockopt, (void* socket, int option, const void* value, size_t size),
                (socket, option, value, size))
MPX_ZMQ_FORWARD(int, zmq_getsockopt, (void* socket, int option, void* value, size_t* size),
                (socket, option, value, size))
MPX_ZMQ_FORWARD(int, zmq_bind, (void* socket, const char* address), (socket, address))
MPX_ZMQ_FORWARD(int, zmq_connect, (void* socket, const char* address), (socket, address))
MPX_ZMQ_FORWARD(int, zmq_unbind, (void* socket, const char* address), (socket, address))
MPX_ZMQ_FORWARD(int, zmq_disconnect, (void* socket, const char* address), (socket, address))
MPX_ZMQ_FORWARD(int, zmq_send, (void* socket, const void* buf, size_t size, int flags),
                (socket, buf, size, flags))
MPX_ZMQ_FORWARD(int, zmq_recv, (void* socket, void* buf, size_t size, int flags),
                (socket, buf, size, flags))
MPX_ZMQ_FORWARD(int, zmq_socket_monitor, (void* socket, const char* address, int events),
                (socket, address, events))
MPX_ZMQ_FORWARD(int, zmq_poll, (zmq_pollitem_t * items, int count, long timeout), (items, count, timeout))
MPX_ZMQ_FORWARD(int, zmq_proxy, (void* frontend, void* backend, void* capture), (frontend, backend, capture))
