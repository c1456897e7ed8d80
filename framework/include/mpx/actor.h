// mpx/actor.h — stateful actors: one object owned by its own OS process, called by
// message.
//
//   class Counter {
//    public:
//     explicit Counter(int start) : n_(start) {}
//     int add(int k) { return n_ += k; }
//     int get() const { return n_; }
//    private:
//     int n_;
//   };
//   MPX_ACTOR(Counter, add, get);                  // in Counter's namespace, once
//
//   auto c = mpx::spawn<Counter>(10);              // a new process constructs Counter(10)
//   mpx::Future<int> f = c.call(&Counter::add, 5);
//   int now = f.get();                             // 15
//   c.tell(&Counter::add, 1);                      // fire and forget
//   c.call(&Counter::get, std::chrono::milliseconds(200)).get();  // TimeoutError if late
//   c.stop();                                      // or let the last handle go
//   auto named = mpx::spawn<Counter>(mpx::ActorOptions().name("totals"), 0);
//   auto same = mpx::find_actor<Counter>("totals");   // from any process of the program
//
// Semantics:
// - An actor runs one message at a time. Messages from one process arrive in the order
//   that process sent them (all threads of a process share one connection per actor).
// - A method that throws fails that call's Future with its exception (its own type and
//   mpx::RemoteInfo, or mpx::RemoteError: see mpx/errors.h); the actor
//   goes on with its state as the method left it.
// - If the actor's process dies, every call it had not answered fails with
//   mpx::ActorDied, and so does every later call, unless ActorOptions::restart is
//   Restart::on_failure: then the actor is constructed again from its constructor
//   arguments (its state is lost, which ActorDied::restarted() and the log say) and
//   later calls reach the new instance. Calls are never re-run: at most once.
// - Handles are copyable and serializable: pass one to a Pool task, a Process or
//   another actor and calls from there reach the same actor. The actor lives while a
//   handle to it exists in the process that spawned it (or a call that carries it is in
//   flight); when the last one goes it is stopped: the messages sent before run, its
//   destructor runs, its process exits. If that process dies, its actors die too.
//
// Thread safety: handles and futures may be used from any thread.
#ifndef MPX_ACTOR_H_
#define MPX_ACTOR_H_

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpx/detail/args.h"
#include "mpx/detail/codec.h"
#include "mpx/detail/deadline.h"
#include "mpx/detail/pins.h"
#include "mpx/detail/segment.h"
#include "mpx/errors.h"
#include "mpx/future.h"

namespace mpx {

enum class Restart {
  never,       // a dead actor stays dead: calls fail with ActorDied (default)
  on_failure,  // an actor that dies without being stopped is constructed again
};

// Actor settings, builder style: mpx::ActorOptions().restart(Restart::on_failure).
class ActorOptions {
 public:
  ActorOptions& restart(Restart policy) {
    restart_ = policy;
    return *this;
  }
  // Restarts allowed over the actor's life before it is declared dead; default 3.
  ActorOptions& max_restarts(int n) {
    max_restarts_ = n;
    return *this;
  }
  // Process name (current_process().name inside the actor, and in logs and errors);
  // default "<Class>-<n>". A name given here also names the actor for
  // mpx::find_actor<T>(name) in every process of this program, as Ray's named actors:
  // spawn throws mpx::Error if a live actor of this program has it already; it is free
  // again once the actor stops or dies for good.
  ActorOptions& name(std::string name) {
    name_ = std::move(name);
    return *this;
  }
  // How long spawn (and a restart) waits for the constructor to finish; default 30 s.
  ActorOptions& startup_timeout(std::chrono::milliseconds timeout) {
    startup_timeout_ = timeout;
    return *this;
  }
  Restart restart() const { return restart_; }
  int max_restarts() const { return max_restarts_; }
  const std::string& name() const { return name_; }
  std::chrono::milliseconds startup_timeout() const { return startup_timeout_; }

 private:
  Restart restart_ = Restart::never;
  int max_restarts_ = 3;
  std::string name_;
  std::chrono::milliseconds startup_timeout_{30000};
};

namespace detail {

// ---- What MPX_ACTOR registers --------------------------------------------------------

// Runs one method on the object from a call payload (array of arguments); packs the
// result (nil for void) into out. Throws whatever the method or the decoding throws.
using ActorMethodFn = void (*)(void* object, const char* data, std::size_t size, Buffer& out);

// One way to construct an actor class: the class plus the types of the constructor
// arguments spawn was given. Registered at static initialisation in every process of
// the program (see ActorFactory), so a fresh actor process finds it by key.
struct ActorFactoryEntry {
  std::string key;         // "<qualified class>(<argument types>)"
  std::string class_name;  // as spelled in MPX_ACTOR
  void* (*create)(const char* data, std::size_t size);
  void (*destroy)(void* object);
  const ActorMethodFn* methods;
  std::size_t method_count;
  const std::vector<std::string>* method_names;
};
bool register_actor_factory(const ActorFactoryEntry* entry);
const ActorFactoryEntry* find_actor_factory(std::string_view key);

// "add, get" (the macro's stringified list) -> {"add", "get"}.
std::vector<std::string> split_method_names(const char* list);

template <class M>
struct MethodTraits;
template <class R, class C, class... P>
struct MethodTraits<R (C::*)(P...)> {
  using Result = R;
  using Class = C;
  using Codec = ArgCodec<P...>;
  static constexpr std::size_t kArity = sizeof...(P);
};
template <class R, class C, class... P>
struct MethodTraits<R (C::*)(P...) const> : MethodTraits<R (C::*)(P...)> {};
template <class R, class C, class... P>
struct MethodTraits<R (C::*)(P...) noexcept> : MethodTraits<R (C::*)(P...)> {};
template <class R, class C, class... P>
struct MethodTraits<R (C::*)(P...) const noexcept> : MethodTraits<R (C::*)(P...)> {};

// The member pointers MPX_ACTOR listed, found by argument-dependent lookup of the
// functions the macro defines next to the class.
template <class T>
struct ActorMethods {
  static constexpr auto kAll = mpx_actor_methods(static_cast<T*>(nullptr));
  using Tuple = std::remove_const_t<decltype(kAll)>;
  static constexpr std::size_t kCount = std::tuple_size_v<Tuple>;

  template <std::size_t I>
  static void run(void* object, const char* data, std::size_t size, Buffer& out) {
    constexpr auto method = std::get<I>(kAll);
    using Traits = MethodTraits<std::remove_const_t<decltype(method)>>;
    static_assert((check_result_type<typename Traits::Result>(), true));
    msgpack::zone zone;
    std::size_t off = 0;
    const msgpack::object obj = read_object(zone, data, size, off);
    auto args = Traits::Codec::unpack_call(obj);
    T& self = *static_cast<T*>(object);
    msgpack::packer<Buffer> pk(out);
    auto invoke = [&self](auto&&... a) -> decltype(auto) {
      return (self.*method)(std::forward<decltype(a)>(a)...);
    };
    if constexpr (std::is_void_v<typename Traits::Result>) {
      std::apply(invoke, std::move(args));
      pk.pack_nil();
    } else {
      pk.pack(std::apply(invoke, std::move(args)));
    }
  }

  template <std::size_t... I>
  static const ActorMethodFn* table(std::index_sequence<I...>) {
    static const ActorMethodFn fns[] = {&run<I>...};
    return fns;
  }
  static const ActorMethodFn* table() { return table(std::make_index_sequence<kCount>{}); }

  // Position of method in the MPX_ACTOR list.
  template <class M, std::size_t... I>
  static std::size_t index_of(M method, std::index_sequence<I...>) {
    std::size_t found = kCount;
    (void)std::initializer_list<int>{([&] {
      if constexpr (std::is_same_v<std::tuple_element_t<I, Tuple>, M>) {
        if (found == kCount && std::get<I>(kAll) == method) found = I;
      }
    }(), 0)...};
    return found;
  }
  template <class M>
  static constexpr bool lists_type(std::index_sequence<>) {
    return false;
  }
  template <class M, std::size_t I0, std::size_t... I>
  static constexpr bool lists_type(std::index_sequence<I0, I...>) {
    return std::is_same_v<std::tuple_element_t<I0, Tuple>, M> ||
           lists_type<M>(std::index_sequence<I...>{});
  }
  template <class M>
  static std::size_t index_of(M method) {
    static_assert(lists_type<M>(std::make_index_sequence<kCount>{}),
                  "this method is not listed in the class's MPX_ACTOR(...): only listed methods "
                  "can be called on an actor");
    return index_of(method, std::make_index_sequence<kCount>{});
  }
};

// Constructor arguments travel as the types spawn was given, decayed; C strings as
// std::string (a pointer cannot cross processes).
template <class A>
struct StoredArg {
  using type = std::decay_t<A>;
};
template <>
struct StoredArg<const char*> {
  using type = std::string;
};
template <>
struct StoredArg<char*> {
  using type = std::string;
};
template <class A>
using CtorArg = typename StoredArg<std::decay_t<A>>::type;

template <class T, class... A>
struct ActorFactory {
  // The decoded constructor arguments live as long as the object: a constructor may
  // keep a view of one (an mpx::Span of a std::vector argument, a std::string_view of a
  // std::string), as it could of its caller's argument within one process. Arguments
  // taken by value are moved out of them.
  using Args = std::tuple<A...>;
  static std::mutex& kept_mu() {
    static std::mutex mu;
    return mu;
  }
  static std::map<const void*, std::unique_ptr<Args>>& kept() {
    static auto* by_object = new std::map<const void*, std::unique_ptr<Args>>();  // outlives exit
    return *by_object;
  }
  static void* create(const char* data, std::size_t size) {
    msgpack::zone zone;
    std::size_t off = 0;
    const msgpack::object obj = read_object(zone, data, size, off);
    auto args = std::make_unique<Args>(ArgCodec<A...>::unpack_call(obj));
    T* object = std::apply([](auto&&... a) { return new T(std::move(a)...); }, std::move(*args));
    std::lock_guard<std::mutex> lock(kept_mu());
    kept()[object] = std::move(args);
    return object;
  }
  static void destroy(void* object) {
    delete static_cast<T*>(object);
    std::lock_guard<std::mutex> lock(kept_mu());
    kept().erase(object);
  }
  static const ActorFactoryEntry& entry() {
    static const std::vector<std::string> names =
        split_method_names(mpx_actor_method_list(static_cast<T*>(nullptr)));
    static const ActorFactoryEntry e{
        std::string(pretty_type_name<T>()) + "(" + join_types() + ")",
        mpx_actor_class_name(static_cast<T*>(nullptr)),
        &create,
        &destroy,
        ActorMethods<T>::table(),
        ActorMethods<T>::kCount,
        &names};
    return e;
  }
  static std::string join_types() {
    std::string out;
    ((out += (out.empty() ? "" : ", ") + std::string(pretty_type_name<A>())), ...);
    return out;
  }
  // Instantiated by spawn<T>(args...): its initialisation runs before main in every
  // process of the program, so the fresh actor process knows this constructor too.
  static inline const bool registered = register_actor_factory(&entry());
};

// ---- The runtime (framework/actor/actor.cc) ------------------------------------------

class ActorClient;  // one connection per (process, actor), shared by every handle
class ActorOwner;   // exists in the spawning process only; stops the actor when it goes
struct ActorCall;

struct ActorLink {
  std::shared_ptr<ActorClient> client;
  std::shared_ptr<ActorOwner> owner;
};

std::shared_ptr<ActorLink> spawn_actor(const ActorFactoryEntry& factory, std::string args,
                                       Pins pins, const ActorOptions& options);
// Sends one message. want_reply false: a tell. Throws ActorDied when the actor is known
// dead or stopped.
std::shared_ptr<ActorCall> actor_send(ActorClient& client, std::uint32_t method,
                                      std::string_view method_name, Buffer&& args, Pins pins,
                                      bool want_reply, Clock::time_point call_deadline);
// Waits for the call's answer until deadline; true once it is done (answered, failed
// or past its own call deadline).
bool actor_wait(ActorClient& client, ActorCall& call, Clock::time_point deadline);
// Waits, collecting the actor's answers, until pred() (evaluated under the client's
// lock) holds or the deadline.
bool actor_wait_until(ActorClient& client, const std::function<bool()>& pred,
                      Clock::time_point deadline);
// Under the client's lock: whether call is done (failed, if past its own deadline).
bool actor_done_locked(ActorClient& client, ActorCall& call);
bool actor_failed_locked(ActorCall& call);
// Fails call for this caller with CancelledError unless done (false then).
bool actor_cancel(ActorClient& client, ActorCall& call);
bool actor_cancelled(ActorClient& client, ActorCall& call);
// The call's error once done, null when it succeeded.
std::exception_ptr actor_error(ActorClient& client, ActorCall& call);
Completion& actor_completion(ActorCall& call);
// The answer's msgpack bytes; throws the call's failure (RemoteError, ActorDied,
// TimeoutError). Only after actor_wait returned true.
std::string_view actor_result(const ActorCall& call);
void actor_stop(ActorLink& link);
bool actor_stop_for(ActorLink& link, std::chrono::milliseconds grace);
void actor_kill(ActorLink& link);
pid_t actor_pid(const ActorClient& client);
bool actor_alive(const ActorClient& client);
int actor_restarts(const ActorClient& client);
const std::string& actor_name(const ActorClient& client);
// An actor call as its mpx::Future sees it (mpx/future.h).
template <class R>
class ActorFutureState final : public FutureState<R> {
 public:
  ActorFutureState(std::shared_ptr<ActorClient> client, std::shared_ptr<ActorCall> call)
      : client_(std::move(client)), call_(std::move(call)) {}
  bool wait_until(Clock::time_point deadline) override { return actor_wait(*client_, *call_, deadline); }
  bool wait_source(const std::function<bool()>& pred, Clock::time_point deadline) override {
    return actor_wait_until(*client_, pred, deadline);
  }
  bool done_locked() override { return actor_done_locked(*client_, *call_); }
  bool failed_locked() override { return actor_done_locked(*client_, *call_) && actor_failed_locked(*call_); }
  const void* source() const override { return client_.get(); }
  bool cancel() override { return actor_cancel(*client_, *call_); }
  bool cancelled() override { return actor_cancelled(*client_, *call_); }
  std::exception_ptr error() override { return actor_error(*client_, *call_); }
  Completion& completion() override { return actor_completion(*call_); }
  // Throws mpx::RemoteError when the method threw, mpx::ActorDied when the actor died
  // before answering, mpx::TimeoutError when the call's own timeout passed,
  // mpx::CancelledError when it was cancelled.
  R value() override {
    const std::string_view bytes = actor_result(*call_);
    if constexpr (!std::is_void_v<R>) {
      msgpack::zone zone;
      std::size_t off = 0;
      try {
        return read_object(zone, bytes.data(), bytes.size(), off).template as<R>();
      } catch (const msgpack::type_error& e) {
        throw DecodeError(std::string("actor answer does not decode as the method's result type: ") +
                          e.what());
      }
    }
  }
  // Decoded afresh: the answer stays in its wire form.
  R take() override { return value(); }

 private:
  std::shared_ptr<ActorClient> client_;
  std::shared_ptr<ActorCall> call_;
};

// The control block every handle maps; and, in the spawning process, keeps the actor
// alive while a message carrying its handle travels (adds the owner to the PinScope).
const std::shared_ptr<Segment>& actor_control(const ActorClient& client);
void pin_actor(const ActorLink& link);
template <class Stream>
void pack_actor(msgpack::packer<Stream>& pk, const ActorLink& link, std::string_view class_key) {
  pin_actor(link);
  pk.pack_array(3);
  pk.pack(std::string_view("mpx.Actor"));
  pk.pack(class_key);
  pack_segment(pk, actor_control(*link.client));
}
// Throws msgpack::type_error for something that is not an actor handle, DecodeError for
// a handle to an actor of another class, SharedMemoryError when it cannot be mapped.
std::shared_ptr<ActorLink> unpack_actor(const msgpack::object& o, std::string_view class_key);
// The live actor named name in this program (framework/actor/named.cc). Throws
// mpx::Error when there is none or it is of another class.
std::shared_ptr<ActorLink> find_actor_link(const std::string& name, std::string_view class_key);

}  // namespace detail

// A handle to an actor of class T (see the top of this file).
template <class T>
class Actor {
 public:
  // Calls method(args...) in the actor. A duration after the method's arguments bounds
  // the call: once it passes, the Future fails with TimeoutError (the actor may still
  // run the call; its answer is then dropped). The timeout starts once the call is
  // sent: call() and tell() write the call to the actor's socket, and while an actor
  // busy with a long method has a socket buffer's worth of calls unread (~200 KB), they
  // wait to write, as do other threads calling it meanwhile.
  template <class M, class... Args>
  auto call(M method, Args&&... args) const {
    using Traits = detail::MethodTraits<M>;
    using R = typename Traits::Result;
    static_assert(std::is_base_of_v<typename Traits::Class, T>,
                  "Actor<T>::call: the method belongs to another class");
    if constexpr (sizeof...(Args) == Traits::kArity + 1) {
      auto all = std::forward_as_tuple(std::forward<Args>(args)...);
      const auto& timeout = std::get<sizeof...(Args) - 1>(all);
      static_assert(is_duration<std::decay_t<decltype(timeout)>>::value,
                    "Actor<T>::call: one argument too many for this method (a trailing "
                    "argument must be a std::chrono duration: the call's timeout)");
      return answer<R>(send(method, true, detail::deadline_after(timeout), std::move(all),
                            std::make_index_sequence<Traits::kArity>{}));
    } else {
      static_assert(sizeof...(Args) == Traits::kArity,
                    "Actor<T>::call: wrong number of arguments for this method");
      return answer<R>(send(method, true, detail::Clock::time_point::max(),
                            std::forward_as_tuple(std::forward<Args>(args)...),
                            std::make_index_sequence<Traits::kArity>{}));
    }
  }
  // Sends method(args...) without waiting for, or getting, an answer. A throwing method
  // is logged by the actor. Throws ActorDied if the actor is already known dead.
  template <class M, class... Args>
  void tell(M method, Args&&... args) const {
    using Traits = detail::MethodTraits<M>;
    static_assert(std::is_base_of_v<typename Traits::Class, T>,
                  "Actor<T>::tell: the method belongs to another class");
    static_assert(sizeof...(Args) == Traits::kArity,
                  "Actor<T>::tell: wrong number of arguments for this method");
    send(method, false, detail::Clock::time_point::max(),
               std::forward_as_tuple(std::forward<Args>(args)...),
               std::make_index_sequence<Traits::kArity>{});
  }
  // Stops the actor after the messages already sent to it, runs its destructor and
  // waits for its process to exit. No-op if it is already stopped or dead.
  void stop() const { detail::actor_stop(*link_); }
  // stop() that kills the process if it has not exited within grace; returns whether
  // it stopped on its own.
  bool stop(std::chrono::milliseconds grace) const { return detail::actor_stop_for(*link_, grace); }
  // SIGKILL, no destructor; a Restart::on_failure actor is restarted.
  void kill() const { detail::actor_kill(*link_); }
  // The current process of the actor (changes with restarts); 0 once it is dead.
  pid_t pid() const { return detail::actor_pid(*link_->client); }
  bool is_alive() const { return detail::actor_alive(*link_->client); }
  int restarts() const { return detail::actor_restarts(*link_->client); }
  const std::string& name() const { return detail::actor_name(*link_->client); }

 private:
  template <class R2, class... A>
  friend Actor<R2> spawn(const ActorOptions& options, A&&... args);
  friend struct ActorAccess;

  template <class D>
  struct is_duration : std::false_type {};
  template <class Rep, class Period>
  struct is_duration<std::chrono::duration<Rep, Period>> : std::true_type {};

  explicit Actor(std::shared_ptr<detail::ActorLink> link) : link_(std::move(link)) {}

  template <class R>
  Future<R> answer(std::shared_ptr<detail::ActorCall> call) const {
    return Future<R>(nullptr,
                     std::make_shared<detail::ActorFutureState<R>>(link_->client, std::move(call)));
  }
  template <class M, class Tuple, std::size_t... I>
  auto send(M method, bool want_reply, detail::Clock::time_point deadline, Tuple&& args,
            std::index_sequence<I...>) const {
    using Traits = detail::MethodTraits<M>;
    const std::size_t index = detail::ActorMethods<T>::index_of(method);
    detail::Buffer buf;
    detail::Pins pins;  // shared objects among the arguments live until the answer
    // Large arguments as objects only for calls: a tell has no answer, so its pins go
    // only when a later call is answered, and objects would pile up meanwhile.
    detail::ObjectSink objects{want_reply ? detail::default_object_threshold() : 0, &pins};
    {
      detail::PinScope scope(pins);
      detail::ObjectScope object_scope(objects);
      msgpack::packer<detail::Buffer> pk(buf);
      Traits::Codec::pack_call(pk, std::get<I>(std::forward<Tuple>(args))...);
    }
    auto call = detail::actor_send(*link_->client, static_cast<std::uint32_t>(index),
                                   method_name(index), std::move(buf), std::move(pins),
                                   want_reply, deadline);
    return call;
  }
  static std::string_view method_name(std::size_t index) {
    static const std::vector<std::string> names =
        detail::split_method_names(mpx_actor_method_list(static_cast<T*>(nullptr)));
    return index < names.size() ? std::string_view(names[index]) : std::string_view();
  }

  std::shared_ptr<detail::ActorLink> link_;
};

struct ActorAccess {
  template <class T>
  static const detail::ActorLink& link(const Actor<T>& a) {
    return *a.link_;
  }
  template <class T>
  static Actor<T> adopt(std::shared_ptr<detail::ActorLink> link) {
    return Actor<T>(std::move(link));
  }
};

// Starts a new process that constructs T(args...) and serves calls to it. Returns once
// the constructor has finished. Throws the constructor's exception (see mpx/errors.h),
// mpx::ActorDied when the process died while starting.
template <class T, class... Args>
Actor<T> spawn(const ActorOptions& options, Args&&... args) {
  using Factory = detail::ActorFactory<T, detail::CtorArg<Args>...>;
  (void)Factory::registered;
  detail::Buffer buf;
  detail::Pins pins;
  detail::ObjectSink objects{detail::default_object_threshold(), &pins};  // large ones
  {
    detail::PinScope scope(pins);
    detail::ObjectScope object_scope(objects);
    msgpack::packer<detail::Buffer> pk(buf);
    detail::ArgCodec<detail::CtorArg<Args>...>::pack_call(pk, std::forward<Args>(args)...);
  }
  return Actor<T>(detail::spawn_actor(Factory::entry(), std::string(buf.data(), buf.size()),
                                      std::move(pins), options));
}
namespace detail {
template <class... Args>
struct starts_with_options : std::false_type {};
template <class First, class... Rest>
struct starts_with_options<First, Rest...> : std::is_same<std::decay_t<First>, ActorOptions> {};
}  // namespace detail
template <class T, class... Args,
          std::enable_if_t<!detail::starts_with_options<Args...>::value, int> = 0>
Actor<T> spawn(Args&&... args) {
  return spawn<T>(ActorOptions(), std::forward<Args>(args)...);
}

// The live actor spawned with ActorOptions().name(name) by any process of this program
// (Ray's get_actor): a handle like the one spawn returned. Throws mpx::Error when no
// live actor has that name, or it is not a T.
template <class T>
Actor<T> find_actor(const std::string& name) {
  return ActorAccess::adopt<T>(detail::find_actor_link(name, detail::pretty_type_name<T>()));
}

}  // namespace mpx

namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {

  template <class T>
  struct pack<mpx::Actor<T>> {
    template <class Stream>
    msgpack::packer<Stream>& operator()(msgpack::packer<Stream>& pk, const mpx::Actor<T>& a) const {
      mpx::detail::pack_actor(pk, mpx::ActorAccess::link(a), mpx::detail::pretty_type_name<T>());
      return pk;
    }
  };
  template <class T>
  struct as<mpx::Actor<T>> {
    mpx::Actor<T> operator()(const msgpack::object& o) const {
      return mpx::ActorAccess::adopt<T>(
          mpx::detail::unpack_actor(o, mpx::detail::pretty_type_name<T>()));
    }
  };
  template <class T>
  struct convert<mpx::Actor<T>> {
    const msgpack::object& operator()(const msgpack::object& o, mpx::Actor<T>& a) const {
      a = as<mpx::Actor<T>>()(o);
      return o;
    }
  };

  }  // namespace adaptor
}  // MSGPACK_API_VERSION_NAMESPACE
}  // namespace msgpack

// ---- MPX_ACTOR ----------------------------------------------------------------------
#define MPX_DETAIL_AMP_1(C, a) &C::a
#define MPX_DETAIL_AMP_2(C, a, ...) &C::a, MPX_DETAIL_AMP_1(C, __VA_ARGS__)
#define MPX_DETAIL_AMP_3(C, a, ...) &C::a, MPX_DETAIL_AMP_2(C, __VA_ARGS__)
#define MPX_DETAIL_AMP_4(C, a, ...) &C::a, MPX_DETAIL_AMP_3(C, __VA_ARGS__)
#define MPX_DETAIL_AMP_5(C, a, ...) &C::a, MPX_DETAIL_AMP_4(C, __VA_ARGS__)
#define MPX_DETAIL_AMP_6(C, a, ...) &C::a, MPX_DETAIL_AMP_5(C, __VA_ARGS__)
#define MPX_DETAIL_AMP_7(C, a, ...) &C::a, MPX_DETAIL_AMP_6(C, __VA_ARGS__)
#define MPX_DETAIL_AMP_8(C, a, ...) &C::a, MPX_DETAIL_AMP_7(C, __VA_ARGS__)
#define MPX_DETAIL_AMP_9(C, a, ...) &C::a, MPX_DETAIL_AMP_8(C, __VA_ARGS__)
#define MPX_DETAIL_AMP_10(C, a, ...) &C::a, MPX_DETAIL_AMP_9(C, __VA_ARGS__)
#define MPX_DETAIL_AMP_11(C, a, ...) &C::a, MPX_DETAIL_AMP_10(C, __VA_ARGS__)
#define MPX_DETAIL_AMP_12(C, a, ...) &C::a, MPX_DETAIL_AMP_11(C, __VA_ARGS__)
#define MPX_DETAIL_AMP_13(C, a, ...) &C::a, MPX_DETAIL_AMP_12(C, __VA_ARGS__)
#define MPX_DETAIL_AMP_14(C, a, ...) &C::a, MPX_DETAIL_AMP_13(C, __VA_ARGS__)
#define MPX_DETAIL_AMP_15(C, a, ...) &C::a, MPX_DETAIL_AMP_14(C, __VA_ARGS__)
#define MPX_DETAIL_AMP_16(C, a, ...) &C::a, MPX_DETAIL_AMP_15(C, __VA_ARGS__)
#define MPX_DETAIL_NTH(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, \
                       N, ...)                                                               \
  N
#define MPX_DETAIL_COUNT(...) \
  MPX_DETAIL_NTH(__VA_ARGS__, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define MPX_DETAIL_AMP(C, ...) \
  MPX_DETAIL_CONCAT(MPX_DETAIL_AMP_, MPX_DETAIL_COUNT(__VA_ARGS__))(C, __VA_ARGS__)
#ifndef MPX_DETAIL_CONCAT
#define MPX_DETAIL_CONCAT2(a, b) a##b
#define MPX_DETAIL_CONCAT(a, b) MPX_DETAIL_CONCAT2(a, b)
#endif

// Makes class C an actor whose listed methods (1 to 16, not overloaded) can be called
// through mpx::Actor<C>. Use once, at namespace scope, in the namespace of C. The
// constructor used by spawn<C>(args...) is found from the arguments' types.
#define MPX_ACTOR(C, ...)                                                        \
  [[maybe_unused]] constexpr auto mpx_actor_methods(C*) {                        \
    return ::std::make_tuple(MPX_DETAIL_AMP(C, __VA_ARGS__));                    \
  }                                                                              \
  [[maybe_unused]] inline const char* mpx_actor_method_list(C*) { return #__VA_ARGS__; } \
  [[maybe_unused]] inline const char* mpx_actor_class_name(C*) { return #C; }    \
  static_assert(true, "")

#endif  // MPX_ACTOR_H_
