#include "framework/node/zmq.h"

#include <dlfcn.h>
#include <poll.h>
#include <zmq.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "framework/node/protocol.h"
#include "mpx/errors.h"
#include "mpx/runtime.h"

namespace mpx {
namespace node {
namespace {

// libzmq's functions mpx uses, found with dlsym once.
struct Api {
  void* (*ctx_new)();
  int (*ctx_term)(void*);
  int (*ctx_set)(void*, int, int);
  void* (*socket)(void*, int);
  int (*close)(void*);
  int (*setsockopt)(void*, int, const void*, size_t);
  int (*getsockopt)(void*, int, void*, size_t*);
  int (*bind)(void*, const char*);
  int (*connect)(void*, const char*);
  int (*send)(void*, const void*, size_t, int);
  int (*msg_init)(zmq_msg_t*);
  int (*msg_recv)(zmq_msg_t*, void*, int);
  void* (*msg_data)(zmq_msg_t*);
  size_t (*msg_size)(const zmq_msg_t*);
  int (*msg_more)(const zmq_msg_t*);
  int (*msg_close)(zmq_msg_t*);
  int (*errno_)();
  const char* (*strerror)(int);
  int (*curve_keypair)(char*, char*);
  uint8_t* (*z85_decode)(uint8_t*, const char*);
  char* (*z85_encode)(char*, const uint8_t*, size_t);
};

const Api& api() {
  static Api a;
  static std::string failure;
  static std::once_flag once;
  std::call_once(once, [] {
    void* lib = ::dlopen("libzmq.so.5", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      failure = std::string("cannot load libzmq (") + ::dlerror() +
                "): listening pools and node agents need ZeroMQ 4.3 with CURVE "
                "(Debian: apt-get install libzmq5)";
      return;
    }
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(lib, name));
      if (fn == nullptr && failure.empty()) failure = std::string("libzmq lacks ") + name;
    };
    sym(a.ctx_new, "zmq_ctx_new");
    sym(a.ctx_term, "zmq_ctx_term");
    sym(a.ctx_set, "zmq_ctx_set");
    sym(a.socket, "zmq_socket");
    sym(a.close, "zmq_close");
    sym(a.setsockopt, "zmq_setsockopt");
    sym(a.getsockopt, "zmq_getsockopt");
    sym(a.bind, "zmq_bind");
    sym(a.connect, "zmq_connect");
    sym(a.send, "zmq_send");
    sym(a.msg_init, "zmq_msg_init");
    sym(a.msg_recv, "zmq_msg_recv");
    sym(a.msg_data, "zmq_msg_data");
    sym(a.msg_size, "zmq_msg_size");
    sym(a.msg_more, "zmq_msg_more");
    sym(a.msg_close, "zmq_msg_close");
    sym(a.errno_, "zmq_errno");
    sym(a.strerror, "zmq_strerror");
    sym(a.curve_keypair, "zmq_curve_keypair");
    sym(a.z85_decode, "zmq_z85_decode");
    sym(a.z85_encode, "zmq_z85_encode");
  });
  if (!failure.empty()) throw Error("mpx: " + failure);
  return a;
}

[[noreturn]] void fail(const std::string& what) {
  const Api& z = api();
  throw Error("mpx: ZeroMQ " + what + ": " + z.strerror(z.errno_()));
}

}  // namespace

Keypair new_keypair() {
  char pub[41], sec[41];
  if (api().curve_keypair(pub, sec) != 0) fail("zmq_curve_keypair (is libzmq built with CURVE?)");
  return {pub, sec};
}

std::string z85_decode(const std::string& text, const char* what) {
  if (text.size() != 40) {
    throw Error(std::string("mpx: ") + what + " is not a CURVE key (40 Z85 characters, got " +
                std::to_string(text.size()) + ")");
  }
  std::string out(32, '\0');
  if (api().z85_decode(reinterpret_cast<uint8_t*>(out.data()), text.c_str()) == nullptr) {
    throw Error(std::string("mpx: ") + what + " is not a CURVE key (not Z85 text)");
  }
  return out;
}

std::string z85_encode(std::string_view bytes) {
  std::string out(bytes.size() * 5 / 4 + 1, '\0');
  if (api().z85_encode(out.data(), reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()) ==
      nullptr) {
    throw Error("mpx: z85_encode: size not a multiple of 4");
  }
  out.pop_back();
  return out;
}

Context::Context() {
  ctx_ = api().ctx_new();
  if (ctx_ == nullptr) fail("zmq_ctx_new");
}

Context::~Context() { api().ctx_term(ctx_); }

Socket::Socket(Context& context, Type type) : type_(type) {
  const int t = type == kRouter ? ZMQ_ROUTER : type == kDealer ? ZMQ_DEALER : ZMQ_REP;
  socket_ = api().socket(context.get(), t);
  if (socket_ == nullptr) fail("zmq_socket");
  set(ZMQ_LINGER, 0);  // closing never waits for a peer that is gone
}

Socket::~Socket() { api().close(socket_); }

void Socket::set(int option, int value) {
  if (api().setsockopt(socket_, option, &value, sizeof value) != 0) {
    fail("zmq_setsockopt(" + std::to_string(option) + ")");
  }
}

void Socket::set(int option, std::string_view bytes) {
  if (api().setsockopt(socket_, option, bytes.data(), bytes.size()) != 0) {
    fail("zmq_setsockopt(" + std::to_string(option) + ")");
  }
}

std::string Socket::get_string(int option) const {
  char buf[256];
  size_t size = sizeof buf;
  if (api().getsockopt(socket_, option, buf, &size) != 0) fail("zmq_getsockopt");
  return std::string(buf, size > 0 && buf[size - 1] == '\0' ? size - 1 : size);
}

void Socket::bind(const std::string& endpoint) {
  if (api().bind(socket_, endpoint.c_str()) == 0) return;
  const Api& z = api();
  const int err = z.errno_();
  std::string advice;
  // ZeroMQ binds tcp:// to an address or an interface's name, never a host name.
  if (err == ENODEV && endpoint.rfind("tcp://", 0) == 0) {
    advice = " (listen on an address, such as tcp://0.0.0.0:PORT for every interface or "
             "tcp://127.0.0.1:PORT, or an interface's name; host names are not bound)";
  }
  throw Error("mpx: ZeroMQ cannot listen on " + endpoint + ": " + z.strerror(err) + advice);
}

void Socket::connect(const std::string& endpoint) {
  if (api().connect(socket_, endpoint.c_str()) != 0) fail("cannot dial " + endpoint);
}

int Socket::fd() const {
  int fd = -1;
  size_t size = sizeof fd;
  if (api().getsockopt(socket_, ZMQ_FD, &fd, &size) != 0) fail("zmq_getsockopt(ZMQ_FD)");
  return fd;
}

bool Socket::readable() const {
  int events = 0;
  size_t size = sizeof events;
  if (api().getsockopt(socket_, ZMQ_EVENTS, &events, &size) != 0) return false;
  return (events & ZMQ_POLLIN) != 0;
}

Socket::Send Socket::send(const std::vector<transport::Message>& parts) {
  const Api& z = api();
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const bool last = i + 1 == parts.size();
    const int flags = ZMQ_DONTWAIT | (last ? 0 : ZMQ_SNDMORE);
    if (z.send(socket_, parts[i].data(), parts[i].size(), flags) >= 0) continue;
    const int err = z.errno_();
    // Only the first part can be refused: once it is taken, the rest of the message
    // goes to the same queue (ZeroMQ counts whole messages against the high-water mark).
    if (i == 0 && err == EAGAIN) return Send::kAgain;
    if (i == 0 && err == EHOSTUNREACH) return Send::kUnreachable;
    fail("zmq_send");
  }
  return Send::kSent;
}

bool Socket::receive(std::vector<transport::Message>* parts) {
  const Api& z = api();
  parts->clear();
  for (;;) {
    zmq_msg_t msg;
    z.msg_init(&msg);
    if (z.msg_recv(&msg, socket_, parts->empty() ? ZMQ_DONTWAIT : 0) < 0) {
      const int err = z.errno_();
      z.msg_close(&msg);
      if (parts->empty() && err == EAGAIN) return false;
      if (err == EINTR) continue;
      fail("zmq_msg_recv");
    }
    parts->emplace_back(z.msg_data(&msg), z.msg_size(&msg));
    const bool more = z.msg_more(&msg) != 0;
    z.msg_close(&msg);
    if (!more) return true;
  }
}

transport::Message part(std::string_view bytes) { return transport::Message(bytes.data(), bytes.size()); }

Link::Link(Socket& socket, transport::Loop& loop, OnMessage on_message)
    : socket_(socket), loop_(loop), on_message_(std::move(on_message)) {
  watch_ = loop_.watch(socket_.fd(), POLLIN, [this](short) { service(); });
}

Link::~Link() { loop_.unwatch(watch_); }

bool Link::send(std::vector<transport::Message> parts) {
  const std::size_t head = socket_.routed() ? 1 : 0;
  if (parts.size() >= head + 2 && parts.back().size() > kPieceBytes) {
    const transport::Message whole = std::move(parts.back());
    const char* bytes = whole.data<char>();
    const std::size_t in_pieces = whole.size() - ((whole.size() - 1) % kPieceBytes + 1);
    const char kind = static_cast<char>(Kind::kPiece);
    for (std::size_t at = 0; at < in_pieces; at += kPieceBytes) {
      std::vector<transport::Message> piece;
      if (head > 0) piece.push_back(parts[0]);
      piece.push_back(part(std::string_view(&kind, 1)));
      piece.push_back(part(std::string_view(bytes + at, kPieceBytes)));
      if (!send_whole(std::move(piece))) return false;
    }
    parts.back() = part(std::string_view(bytes + in_pieces, whole.size() - in_pieces));
  }
  return send_whole(std::move(parts));
}

void Link::take_pieces(std::vector<transport::Message>& parts) {
  const std::size_t head = socket_.routed() ? 1 : 0;
  if (parts.size() < head + 2) return;
  const std::string_view peer = head > 0 ? parts[0].view() : std::string_view();
  const bool piece = parts.size() == head + 2 && parts[head].size() == 1 &&
                     *parts[head].data<char>() == static_cast<char>(Kind::kPiece);
  if (piece) {
    auto it = pieces_.find(peer);
    if (it == pieces_.end()) it = pieces_.emplace(std::string(peer), Pieces()).first;
    // A message is at most transport::kMaxPayload: a peer sending more is broken, and
    // the message these pieces were for is dropped.
    Pieces& got = it->second;
    if (got.size + parts.back().size() > transport::kMaxPayload) {
      if (!got.overflowed) {
        logger().error("zmq link: a peer sent more than {} bytes of pieces for one message; dropping it",
                       transport::kMaxPayload);
      }
      got.parts.clear();
      got.size = 0;
      got.overflowed = true;
      return;
    }
    got.size += parts.back().size();
    got.parts.push_back(std::move(parts.back()));
    return;
  }
  if (pieces_.empty()) return;
  auto it = pieces_.find(peer);
  if (it == pieces_.end()) return;
  if (it->second.overflowed || it->second.size + parts.back().size() > transport::kMaxPayload) {
    parts.clear();
  } else {
    // Copied once, into a message of the whole size.
    Pieces& got = it->second;
    got.parts.push_back(std::move(parts.back()));
    transport::Message whole = transport::Message::allocate(got.size + got.parts.back().size());
    std::size_t at = 0;
    for (const transport::Message& p : got.parts) {
      std::memcpy(whole.data<char>() + at, p.data<char>(), p.size());
      at += p.size();
    }
    parts.back() = std::move(whole);
  }
  pieces_.erase(it);
}

bool Link::send_whole(std::vector<transport::Message> parts) {
  flush_queue();
  bool sent = true;
  if (queue_.empty()) {
    switch (socket_.send(parts)) {
      case Socket::Send::kSent: break;
      case Socket::Send::kAgain: queue_.push_back(std::move(parts)); break;
      case Socket::Send::kUnreachable: sent = false; break;
    }
  } else {
    queue_.push_back(std::move(parts));
  }
  // A send may consume the descriptor's edge for messages that arrived meanwhile.
  if (!receiving_ && socket_.readable()) loop_.ready_again(watch_);
  return sent;
}

void Link::flush_queue() {
  while (!queue_.empty()) {
    const auto got = socket_.send(queue_.front());
    if (got == Socket::Send::kAgain) return;
    queue_.pop_front();  // sent, or its peer is gone
  }
}

void Link::service() {
  flush_queue();
  if (receiving_) return;
  receiving_ = true;
  std::vector<transport::Message> parts;
  // Bounded, so one busy peer does not keep the loop from the others; the loop runs
  // this again while messages wait.
  for (int i = 0; i < 256 && socket_.receive(&parts); ++i) {
    take_pieces(parts);
    on_message_(parts);
  }
  receiving_ = false;
  flush_queue();
  if (socket_.readable()) loop_.ready_again(watch_);
}

}  // namespace node
}  // namespace mpx
