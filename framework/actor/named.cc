// Named actors (Ray's named actors): ActorOptions().name("x") claims "x" for the actor
// among the processes of this program, and find_actor<T>("x") finds it from any of
// them. Names live in the abstract socket namespace (framework/shm/names.h), scoped by
// the driver's pid; the claim is held by the spawning process's supervisor and let go
// when the actor stops or dies for good (or the spawner dies).
#include "framework/actor/named.h"

#include <string>

#include "framework/actor/actor_internal.h"
#include "framework/base/base.h"
#include "framework/shm/names.h"
#include "mpx/actor.h"

namespace mpx {
namespace actor {
namespace {

std::string space() { return "actor." + std::to_string(base::driver_pid()); }

// A factory key is "<class>(<constructor argument types>)": the class is what comes
// before the parenthesis that matches the last one.
std::string_view class_of(std::string_view factory_key) {
  int depth = 0;
  for (std::size_t i = factory_key.size(); i-- > 0;) {
    if (factory_key[i] == ')') ++depth;
    if (factory_key[i] == '(' && --depth == 0) return factory_key.substr(0, i);
  }
  return factory_key;
}

}  // namespace

std::shared_ptr<const void> claim_name(const std::string& name, const detail::Segment& control,
                                       std::string_view factory_key) {
  if (name.empty()) return nullptr;
  const detail::SegmentRef& r = control.ref();
  auto claim = names::claim(space(), name,
                            names::Location{r.owner, r.fd, r.id, detail::fnv1a(class_of(factory_key))});
  if (!claim) {
    throw Error("mpx::spawn: an actor named '" + name +
                "' exists already in this program (names of live actors are unique, as Ray's)");
  }
  return claim;
}

}  // namespace actor

namespace detail {

std::shared_ptr<ActorLink> find_actor_link(const std::string& name, std::string_view class_key) {
  const auto where = names::find(actor::space(), name);
  const std::string missing = "mpx::find_actor: no live actor named '" + name + "' in this program";
  if (!where) throw Error(missing);
  if (where->extra != fnv1a(class_key)) {
    throw Error("mpx::find_actor: the actor named '" + name + "' is not of class " + std::string(class_key));
  }
  // Read as a handle would be: [marker, class, control segment ref].
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(3);
  pk.pack(std::string_view("mpx.Actor"));
  pk.pack(class_key);
  pk.pack_array(6);
  pk.pack(static_cast<std::uint32_t>(SegmentKind::kActor));
  pk.pack(static_cast<std::int64_t>(where->pid));
  pk.pack(where->fd);
  pk.pack(where->id);
  pk.pack(std::uint64_t{0});
  pk.pack(std::uint64_t{0});
  msgpack::object_handle oh = msgpack::unpack(buf.data(), buf.size());
  std::shared_ptr<ActorLink> link;
  try {
    link = unpack_actor(oh.get(), class_key);
  } catch (const SharedMemoryError&) {
    throw Error(missing);  // it ended between the lookup and now
  }
  if (actor_name(*link->client) != name || !actor_alive(*link->client)) throw Error(missing);
  return link;
}

}  // namespace detail
}  // namespace mpx
