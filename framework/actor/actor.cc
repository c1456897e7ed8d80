// Actors, the caller's and the owner's API (mpx/actor.h's runtime): the registry of
// constructors, spawn, stop and kill, the owner that stops an actor when the last
// handle goes, and handles travelling in messages.
//
// Topology: every actor process listens on an abstract unix socket of its own (one per
// incarnation; server.cc). A process that talks to an actor has one stream connection
// to it (ActorClient, client.cc), shared by all its handles and threads. The process
// that spawned the actor (its owner) runs one supervisor thread (supervisor.cc) that
// reaps its actors and restarts them; everybody else learns of a death from the
// actor's pidfd and of the outcome from the control block (control.h).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "framework/actor/client.h"
#include "framework/actor/named.h"
#include "framework/actor/supervisor.h"
#include "framework/base/base.h"
#include "mpx/actor.h"
#include "mpx/runtime.h"

namespace mpx {
namespace detail {

using actor::process_exists;

// ---- Registry of constructors -------------------------------------------------------

namespace {
std::map<std::string, const ActorFactoryEntry*, std::less<>>& factories() {
  static auto* m = new std::map<std::string, const ActorFactoryEntry*, std::less<>>();
  return *m;
}
}  // namespace

bool register_actor_factory(const ActorFactoryEntry* entry) {
  factories().emplace(entry->key, entry);  // static initialisation: one thread
  return true;
}

const ActorFactoryEntry* find_actor_factory(std::string_view key) {
  auto& m = factories();
  auto it = m.find(key);
  return it == m.end() ? nullptr : it->second;
}

std::vector<std::string> split_method_names(const char* list) {
  std::vector<std::string> out;
  std::string cur;
  for (const char* p = list; ; ++p) {
    if (*p == ',' || *p == '\0') {
      const auto b = cur.find_first_not_of(" \t\n");
      const auto e = cur.find_last_not_of(" \t\n");
      out.push_back(b == std::string::npos ? "" : cur.substr(b, e - b + 1));
      cur.clear();
      if (*p == '\0') break;
    } else {
      cur += *p;
    }
  }
  return out;
}

// ---- Owner side ------------------------------------------------------------------------

// One thread (started on first use, leaked like the supervisor: stops may come during
// static destruction) that stops the actors whose last handle went on the supervisor
// thread, one after another.
class Stopper {
 public:
  static Stopper& get() {
    static Stopper* s = new Stopper();
    return *s;
  }
  void push(std::shared_ptr<ActorClient> client) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(client));
    }
    cv_.notify_one();
  }

 private:
  Stopper() {
    std::thread([this] {
      for (;;) {
        std::shared_ptr<ActorClient> client;
        {
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [this] { return !queue_.empty(); });
          client = std::move(queue_.front());
          queue_.pop_front();
        }
        stop_client(client);
      }
    }).detach();
  }
  static void stop_client(const std::shared_ptr<ActorClient>& client);
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<ActorClient>> queue_;  // guarded by mu_
};

class ActorOwner {
 public:
  ActorOwner(std::shared_ptr<ActorClient> client, std::shared_ptr<actor::Supervised> supervised)
      : client_(std::move(client)), supervised_(std::move(supervised)) {}
  ~ActorOwner() {
    if (actor::on_supervisor_thread()) {
      // The supervisor dropped the last handle (pinned by another actor's constructor
      // arguments). A stop waits for the supervisor to see the actor exit: it must
      // wait on another thread, or the supervisor would wait for itself.
      Stopper::get().push(client_);
      return;
    }
    stop(client_);
  }

  // Stops the actor behind client and waits for it (what the owner's destructor does).
  static void stop(const std::shared_ptr<ActorClient>& client) {
    try {
      ActorLink link{client, nullptr};
      actor_stop(link);
    } catch (const std::exception& e) {
      logger().error("actor {}: stopping it failed: {}", client->name(), e.what());
    }
    forget_expired(client->segment()->ref().id);
  }

 private:
  std::shared_ptr<ActorClient> client_;
  std::shared_ptr<actor::Supervised> supervised_;
};

void Stopper::stop_client(const std::shared_ptr<ActorClient>& client) { ActorOwner::stop(client); }

namespace {

std::atomic<int> actor_counter{0};

}  // namespace

std::shared_ptr<ActorLink> spawn_actor(const ActorFactoryEntry& factory, std::string args, Pins pins,
                                       const ActorOptions& options) {
  base::require_init("mpx::spawn");
  auto segment = Segment::create(SegmentKind::kActor, untyped_tag(), 0, sizeof(Control));
  auto* control = new (segment->body()) Control();
  const std::string name = options.name().empty()
                               ? factory.class_name + "-" + std::to_string(++actor_counter)
                               : options.name();
  if (options.name().size() >= sizeof control->name) {
    throw Error("mpx::spawn: an actor name is at most " + std::to_string(sizeof control->name - 1) +
                                " bytes; '" + options.name().substr(0, 40) + "...' has " +
                                std::to_string(options.name().size()));
  }
  const std::string endpoint = transport::Endpoint::unique("actor").str();
  if (endpoint.size() + 12 >= sizeof control->endpoint) {
    throw Error("mpx::spawn: endpoint name too long: " + endpoint);
  }
  actor::copy_text(control->endpoint, sizeof control->endpoint, endpoint);
  actor::copy_text(control->name, sizeof control->name, name);

  auto supervised = std::make_shared<actor::Supervised>();
  supervised->control_segment = segment;
  supervised->control = control;
  supervised->factory = &factory;
  supervised->args = std::move(args);
  supervised->options = options;
  supervised->pins = std::move(pins);
  supervised->name = actor::claim_name(options.name(), *segment, factory.key);
  const auto failure = actor::start_incarnation(*supervised, 1);
  if (failure) {
    if (failure->constructor_threw) {
      std::rethrow_exception(detail::remote_exception(factory.class_name + "::" + factory.class_name,
                                                      failure->error, 0, failure->pid));
    }
    throw ActorDied(name, "could not start: " + failure->reason, false);
  }
  control->pid.store(supervised->child.pid, std::memory_order_release);
  control->incarnation.store(1, std::memory_order_release);
  actor::publish(*control, State::kAlive, "");
  actor::supervise(supervised);

  auto client = client_for(segment, factory.class_name);
  auto owner = std::make_shared<ActorOwner>(client, std::move(supervised));
  remember_owner(segment->ref().id, owner);
  return std::make_shared<ActorLink>(ActorLink{std::move(client), std::move(owner)});
}

std::shared_ptr<ActorCall> actor_send(ActorClient& client, std::uint32_t method,
                                      std::string_view method_name, Buffer&& args, Pins pins,
                                      bool want_reply, Clock::time_point call_deadline) {
  return client.send(method, method_name, std::move(args), std::move(pins), want_reply, call_deadline);
}

bool actor_wait(ActorClient& client, ActorCall& call, Clock::time_point deadline) {
  return client.wait(call, deadline);
}

std::string_view actor_result(const ActorCall& call) {
  if (call.error) std::rethrow_exception(call.error);
  return call.reply;
}

bool actor_wait_until(ActorClient& client, const std::function<bool()>& pred,
                      Clock::time_point deadline) {
  return client.wait_until(pred, deadline);
}

bool actor_done_locked(ActorClient& client, ActorCall& call) { return client.done_locked(call); }

bool actor_failed_locked(ActorCall& call) { return call.done && call.error; }

bool actor_cancel(ActorClient& client, ActorCall& call) { return client.cancel(call); }

bool actor_cancelled(ActorClient& client, ActorCall& call) { return client.cancelled(call); }

std::exception_ptr actor_error(ActorClient& client, ActorCall& call) { return client.error_of(call); }

Completion& actor_completion(ActorCall& call) { return call.completion; }

namespace {

// Waits until the actor is over, or `deadline`; true if it is over.
bool wait_over(ActorClient& client, std::uint32_t stop_sent_to, Clock::time_point deadline) {
  Control& c = client.control();
  const pid_t owner = client.segment()->ref().owner;
  for (;;) {
    const std::uint32_t seq = c.seq.load(std::memory_order_acquire);
    if (actor::terminal(state_of(c))) return true;
    if (!client.segment()->owned() && !process_exists(owner)) return true;
    if (Clock::now() >= deadline) return false;
    if (state_of(c) == State::kAlive && c.incarnation.load() != stop_sent_to) {
      // A restart raced with the stop: tell the new incarnation too.
      stop_sent_to = client.send_stop();
      continue;
    }
    // Answers to calls sent before the STOP arrive while the actor ends: read them as
    // a Future's wait would, or answers more than a socket buffer holds could never
    // leave (the actor waits for them to, drain_answers in server.cc). With none due,
    // the futex wakes this at once when the state changes.
    if (client.awaits_answers()) {
      client.wait_until([&] { return c.seq.load(std::memory_order_acquire) != seq; },
                        std::min(deadline, Clock::now() + std::chrono::milliseconds(50)));
    } else {
      actor::futex_wait(&c.seq, seq, std::chrono::milliseconds(50));
    }
  }
}

}  // namespace

void actor_stop(ActorLink& link) {
  Control& c = link.client->control();
  if (actor::terminal(state_of(c))) return;
  c.stop_requested.store(1, std::memory_order_release);
  const std::uint32_t sent = link.client->send_stop();
  wait_over(*link.client, sent, Clock::time_point::max());
}

bool actor_stop_for(ActorLink& link, std::chrono::milliseconds grace) {
  Control& c = link.client->control();
  if (actor::terminal(state_of(c))) return true;
  c.stop_requested.store(1, std::memory_order_release);
  const std::uint32_t sent = link.client->send_stop();
  if (wait_over(*link.client, sent, detail::deadline_after(grace))) return true;
  const pid_t pid = c.pid.load();
  if (pid > 0) ::kill(pid, SIGKILL);
  wait_over(*link.client, sent, Clock::time_point::max());
  return false;
}

void actor_kill(ActorLink& link) {
  Control& c = link.client->control();
  const std::uint32_t seq = c.seq.load(std::memory_order_acquire);
  if (actor::terminal(state_of(c))) return;
  const std::uint32_t incarnation = c.incarnation.load();
  const pid_t pid = c.pid.load();
  if (pid > 0) ::kill(pid, SIGKILL);
  // Returns once the owner has seen it: the next call then meets the new incarnation
  // (or ActorDied), never the dying one.
  std::uint32_t s = seq;
  const pid_t owner = link.client->segment()->ref().owner;
  while (state_of(c) == State::kAlive && c.incarnation.load() == incarnation) {
    if (!link.client->segment()->owned() && !process_exists(owner)) return;
    actor::futex_wait(&c.seq, s, std::chrono::milliseconds(50));
    s = c.seq.load(std::memory_order_acquire);
  }
}

pid_t actor_pid(const ActorClient& client) {
  auto& c = const_cast<ActorClient&>(client).control();
  return actor::terminal(state_of(c)) ? 0 : c.pid.load(std::memory_order_acquire);
}

bool actor_alive(const ActorClient& client) {
  auto& c = const_cast<ActorClient&>(client).control();
  return !actor::terminal(state_of(c));
}

int actor_restarts(const ActorClient& client) {
  return static_cast<int>(const_cast<ActorClient&>(client).control().restarts.load());
}

const std::string& actor_name(const ActorClient& client) { return client.name(); }

const std::shared_ptr<Segment>& actor_control(const ActorClient& client) { return client.segment(); }

void pin_actor(const ActorLink& link) {
  if (link.owner) pin(std::shared_ptr<const void>(link.owner));
}

std::shared_ptr<ActorLink> unpack_actor(const msgpack::object& o, std::string_view class_key) {
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 3 ||
      o.via.array.ptr[0].type != msgpack::type::STR || o.via.array.ptr[1].type != msgpack::type::STR ||
      std::string_view(o.via.array.ptr[0].via.str.ptr, o.via.array.ptr[0].via.str.size) != "mpx.Actor") {
    throw DecodeError("not an actor handle");
  }
  const std::string_view key(o.via.array.ptr[1].via.str.ptr, o.via.array.ptr[1].via.str.size);
  if (key != class_key) {
    throw DecodeError("a handle to an actor of class " + std::string(key) +
                      " cannot be used as an Actor<" + std::string(class_key) + ">");
  }
  auto segment = unpack_segment(o.via.array.ptr[2], SegmentKind::kActor, untyped_tag());
  // The class name shown in errors: the last component of the qualified name.
  std::string short_name(class_key);
  const auto colon = short_name.rfind("::");
  if (colon != std::string::npos) short_name = short_name.substr(colon + 2);
  auto link = std::make_shared<ActorLink>();
  link->client = client_for(segment, short_name);
  if (segment->owned()) link->owner = owner_of(segment->ref().id);
  return link;
}

}  // namespace detail
}  // namespace mpx
