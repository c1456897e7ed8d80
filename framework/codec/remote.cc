// Turning a failure another process reported (an ErrorInfo) into the exception the
// caller throws: the original type when this process knows how to make one
// (mpx::register_exception, and the standard types registered below), else
// mpx::RemoteError. Every caller of a pool, an actor or a pipeline goes through
// remote_exception, so a type registered once arrives typed everywhere.
#include <future>
#include <ios>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <typeinfo>
#include <unordered_map>
#include <utility>

#include "mpx/detail/codec.h"
#include "mpx/errors.h"

namespace mpx {
namespace detail {
namespace {

// A std::system_error's category from the name its code travelled with; null for a
// category this process cannot name (the error then arrives as RemoteError).
const std::error_category* category_named(const std::string& name) {
  for (const std::error_category* c : {&std::generic_category(), &std::system_category(),
                                       &std::iostream_category(), &std::future_category()}) {
    if (name == c->name()) return c;
  }
  return nullptr;
}

// "<category>:<value>" back into a code; false when it is not one this process knows.
bool parse_code(const std::string& text, std::error_code& out) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) return false;
  const std::error_category* category = category_named(text.substr(0, colon));
  if (!category) return false;
  try {
    std::size_t used = 0;
    const int value = std::stoi(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1) return false;
    out = std::error_code(value, *category);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

class Factories {
 public:
  Factories() {
    add(typeid(std::logic_error), &make_remote_exception<std::logic_error>);
    add(typeid(std::invalid_argument), &make_remote_exception<std::invalid_argument>);
    add(typeid(std::domain_error), &make_remote_exception<std::domain_error>);
    add(typeid(std::length_error), &make_remote_exception<std::length_error>);
    add(typeid(std::out_of_range), &make_remote_exception<std::out_of_range>);
    add(typeid(std::runtime_error), &make_remote_exception<std::runtime_error>);
    add(typeid(std::range_error), &make_remote_exception<std::range_error>);
    add(typeid(std::overflow_error), &make_remote_exception<std::overflow_error>);
    add(typeid(std::underflow_error), &make_remote_exception<std::underflow_error>);
    add(typeid(std::bad_alloc), [](RemoteInfo&& info) {
      return std::make_exception_ptr(RemoteException<std::bad_alloc>(std::move(info)));
    });
  }
  void add(const std::type_info& type, RemoteFactory factory) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string name = demangle(type.name());
    auto [it, added] = by_name_.emplace(name, Entry{&type, factory});
    if (added || *it->second.type == type) return;
    // Two types of one name in anonymous namespaces of different files: an error
    // named so cannot be told to be either, and comes back as a RemoteError.
    if (name.find("(anonymous namespace)") != std::string::npos) it->second.factory = nullptr;
  }
  RemoteFactory find(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second.factory;
  }

 private:
  struct Entry {
    const std::type_info* type;
    RemoteFactory factory;
  };
  std::mutex mu_;
  std::unordered_map<std::string, Entry> by_name_;  // guarded by mu_
};

Factories& factories() {
  static Factories* f = new Factories;  // never destroyed: used by threads at exit
  return *f;
}

}  // namespace

void register_remote_factory(const std::type_info& type, RemoteFactory factory) {
  factories().add(type, factory);
}

std::exception_ptr remote_exception(std::string task_name, const ErrorInfo& error,
                                    std::uint64_t index, pid_t pid) {
  RemoteInfo info(std::move(task_name), error.type, error.message, index, pid);
  if (error.type == "std::system_error") {
    std::error_code code;
    if (parse_code(error.code, code)) {
      // what() is the description; the base keeps the original message and the code.
      return std::make_exception_ptr(
          RemoteException<std::system_error>(std::move(info), code, error.message));
    }
  } else if (RemoteFactory make = factories().find(error.type)) {
    try {
      return make(RemoteInfo(info));
    } catch (...) {
      // The type's constructor refused this message: a RemoteError still says it all.
    }
  }
  return std::make_exception_ptr(RemoteError(info.task_name(), info.type_name(), info.message(),
                                             info.task_index(), info.worker_pid()));
}

}  // namespace detail
}  // namespace mpx
