// The actor's control block, written by its owner's supervisor and read by every
// handle, and the bootstrap an actor process starts from.
#include "framework/actor/control.h"

#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <iterator>
#include <tuple>

#include "framework/base/base.h"
#include "framework/base/futex.h"
#include "mpx/detail/codec.h"
#include "mpx/errors.h"

namespace mpx {
namespace actor {

transport::Endpoint incarnation_endpoint(const Control& control, std::uint32_t incarnation) {
  return transport::Endpoint::from(control.endpoint).with_suffix("-" + std::to_string(incarnation));
}

std::string encode_bootstrap(const Bootstrap& b) {
  detail::Buffer buf;
  msgpack::packer<detail::Buffer> pk(buf);
  pk.pack_array(4);
  pk.pack(b.factory_key);
  pk.pack_bin(static_cast<std::uint32_t>(b.args.size()));
  pk.pack_bin_body(b.args.data(), static_cast<std::uint32_t>(b.args.size()));
  pk.pack(b.endpoint);
  pk.pack(b.incarnation);
  return std::string(buf.data(), buf.size());
}

Bootstrap decode_bootstrap(const std::string& bytes) {
  try {
    auto oh = msgpack::unpack(bytes.data(), bytes.size());
    std::tuple<std::string, msgpack::type::raw_ref, std::string, std::uint32_t> t;
    oh.get().convert(t);
    Bootstrap b;
    b.factory_key = std::get<0>(t);
    b.args.assign(std::get<1>(t).ptr, std::get<1>(t).size);
    b.endpoint = std::get<2>(t);
    b.incarnation = std::get<3>(t);
    return b;
  } catch (const std::exception& e) {
    throw DecodeError(std::string("actor bootstrap: ") + e.what());
  }
}

// Sleeps while word holds expected, at most for slice.
void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                std::chrono::milliseconds slice) {
  base::futex_wait(word, expected, std::chrono::steady_clock::now() + slice);
}

void copy_text(char* dst, std::size_t cap, const std::string& text) {
  const std::size_t n = std::min(cap - 1, text.size());
  std::memcpy(dst, text.data(), n);
  dst[n] = '\0';
}

void publish(Control& c, State state, const std::string& reason) {
  c.seq.fetch_add(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);  // seq odd before any word changes
  if (!reason.empty()) {
    char text[sizeof c.reason] = {};
    copy_text(text, sizeof text, reason);
    for (std::size_t i = 0; i < std::size(c.reason); ++i) {
      std::uint64_t word;
      std::memcpy(&word, text + 8 * i, 8);
      c.reason[i].store(word, std::memory_order_relaxed);
    }
  }
  c.state.store(static_cast<std::uint32_t>(state), std::memory_order_release);
  c.seq.fetch_add(1, std::memory_order_release);
  base::futex_wake(&c.seq, INT32_MAX);
}

bool process_exists(pid_t pid) { return !base::process_ended(pid); }

std::string read_reason(const Control& c) {
  char text[sizeof c.reason];
  // A publish is a few stores long; one that never ends had its process (the actor's
  // owner) die in the middle of it: after a while the text is read as it is.
  for (int tries = 0;; ++tries) {
    const std::uint32_t before = c.seq.load(std::memory_order_acquire);
    if ((before & 1) && tries < 10000) {
      sched_yield();
      continue;
    }
    for (std::size_t i = 0; i < std::size(c.reason); ++i) {
      const std::uint64_t word = c.reason[i].load(std::memory_order_relaxed);
      std::memcpy(text + 8 * i, &word, 8);
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if (c.seq.load(std::memory_order_relaxed) == before || tries >= 10000) break;
  }
  text[sizeof text - 1] = '\0';
  return std::string(text);
}

}  // namespace actor
}  // namespace mpx
