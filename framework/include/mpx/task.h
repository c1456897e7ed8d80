// mpx/task.h — registering functions so other processes can run them by name.
//
// Workers are fresh processes of the same program: they find your functions through
// a registry filled at static-initialisation time, never through inherited memory.
//
//   int square(int x) { return x * x; }
//   MPX_TASK(square);                  // at namespace scope, once per function
//
//   pool.map(square, xs);              // square runs in the workers by that name
//
//   MPX_PURE_TASK(parse);              // no side effects: a pool re-runs it when the
//                                      // worker running it dies (see PoolOptions)
//
// Parameters and results travel as msgpack: built-in types, standard containers,
// and your own structs with MSGPACK_DEFINE(...). Overloaded functions cannot be
// registered by name; wrap them in a uniquely named function.
//
// Without MPX_TASK, plain functions and captureless lambdas work too:
//
//   pool.map(cube, xs);                                  // any function of the program
//   pool.map(static_cast<double (*)(double)>(f), ys);    // one of an overload set
//   pool.map([](int x) { return x * x; }, xs);           // a lambda capturing nothing
//
// Their names are made from where they sit in the program (they change with every
// build), and a worker checks a plain function's name against the program's symbol
// table before it calls anything (see function_task). MPX_TASK gives a stable name
// (pipelines across builds, remote nodes run the same build anyway), marks a task
// pure, and works in a stripped program, which has no symbol table to check against.
//
// Thread safety: registration happens before main; plain functions' tasks are made on
// first use under a lock; lookups are safe from any thread.
#ifndef MPX_TASK_H_
#define MPX_TASK_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "mpx/detail/args.h"
#include "mpx/detail/codec.h"
#include "mpx/detail/handle.h"
#include "mpx/detail/raw_chunk.h"
#include "mpx/errors.h"

namespace mpx {
namespace detail {

// Collects the results of one chunk: the results array is packed as items finish;
// failures are kept aside and appended after it (see codec.h for the layout). In raw
// mode (the second constructor) the results are a raw block of count items written in
// place (raw_slot), a failed item's bytes zero.
class ChunkWriter {
 public:
  ChunkWriter(Buffer& out, std::uint32_t count) : out_(out), packer_(out) { packer_.pack_array(count); }
  ChunkWriter(Buffer& out, std::uint32_t count, std::uint8_t raw_code)
      : out_(out), packer_(out), width_(raw_code & 0x0f),
        raw_at_(begin_raw_block(out, raw_code, count)) {}
  // Raw results written at slots (a chunk's room in its argument buffer, raw_chunk.h);
  // out gets the ext naming them (written by the caller) and any error list.
  ChunkWriter(Buffer& out, std::uint8_t raw_code, char* slots)
      : out_(out), packer_(out), width_(raw_code & 0x0f), slots_(slots) {}
  msgpack::packer<Buffer>& packer() { return packer_; }
  char* raw_slot(std::uint32_t index) {
    return (slots_ != nullptr ? slots_ : out_.data() + raw_at_) + std::size_t{index} * width_;
  }
  void fail(std::uint32_t index, std::string type, std::string message) {
    mark_failed(index);
    ErrorInfo e;
    e.type = std::move(type);
    e.message = std::move(message);
    e.item = index;
    e.pid = pid();
    errors_.push_back(std::move(e));
  }
  // The exception being handled fails item index.
  void fail_current(std::uint32_t index) {
    mark_failed(index);
    errors_.push_back(current_error(index));
  }
  // Appends the error list; returns whether any item failed.
  bool finish() {
    if (errors_.empty()) return false;
    packer_.pack(errors_);
    return true;
  }

 private:
  void mark_failed(std::uint32_t index) {
    if (width_ > 0) {
      std::memset(raw_slot(index), 0, width_);
    } else {
      packer_.pack_nil();
    }
  }
  Buffer& out_;
  msgpack::packer<Buffer> packer_;
  // This process's pid, looked up once per chunk that fails anything.
  std::int32_t pid() {
    if (pid_ == 0) pid_ = process_id();
    return pid_;
  }
  std::vector<ErrorInfo> errors_;
  std::int32_t pid_ = 0;
  const std::size_t width_ = 0;   // raw mode: bytes per result; 0: msgpack
  const std::size_t raw_at_ = 0;  // raw mode: offset of the first result in out_
  char* const slots_ = nullptr;   // raw mode, results in a buffer: the first result's
};

struct TaskEntry {
  const char* name;
  const void* function;  // the registered function's address, for lookups by pointer
  std::size_t arity;
  // Runs every item of a chunk payload, writing each result or failure. Throws
  // DecodeError, before running anything, when the payload is not an array of the
  // expected length.
  void (*run_chunk)(const TaskEntry& self, const char* data, std::size_t size,
                    std::uint32_t expected, Buffer& out, bool& had_errors);
  // Runs one call whose payload is the full argument array; exceptions propagate.
  void (*run_call)(const TaskEntry& self, const char* data, std::size_t size);
  // Registered with MPX_PURE_TASK: running it twice is harmless, so a pool runs it
  // again when its worker dies (PoolOptions::max_retries).
  bool pure = false;
};

// Registry (registry.cc). register_task keeps the pointer: entries have static storage.
void register_task(const TaskEntry* entry);
// By name: a registered task, or a plain function's (see function_task) once checked.
// nullptr if there is none; *why (if given) then says what is wrong with the name.
const TaskEntry* find_task(const std::string& name, std::string* why = nullptr);
// By the registered function's address (a separate name: a string literal must never
// silently pick this overload through its conversion to const void*).
const TaskEntry* find_task_at(const void* function);

template <class Fn>
const void* function_address(Fn* fn) {
  return reinterpret_cast<const void*>(fn);
}

template <class Signature>
struct FunctionTraits;
template <class R, class... Params>
struct FunctionTraits<R (*)(Params...)> {
  using Result = R;
  using Codec = ArgCodec<Params...>;
  static constexpr std::size_t kArity = sizeof...(Params);
};
template <class R, class... Params>
struct FunctionTraits<R (*)(Params...) noexcept> : FunctionTraits<R (*)(Params...)> {};

std::string argument_error_message(const TaskEntry& task, const std::exception& e);
// For arguments that could not be decoded for lack of memory.
std::string out_of_memory_message(const TaskEntry& task);

// Where a task's function comes from: a constant (MPX_TASK, lambdas: calls inlined)
// or the entry (plain function pointers, resolved at run time: see function_task).
template <auto F>
struct ConstantCallee {
  using Pointer = decltype(F);
  static constexpr Pointer get(const TaskEntry&) { return F; }
};
template <class P>
struct EntryCallee {
  using Pointer = P;
  static Pointer get(const TaskEntry& self) {
    return reinterpret_cast<Pointer>(const_cast<void*>(self.function));
  }
};

template <class Callee>
struct TaskRunner {
  using Traits = FunctionTraits<typename Callee::Pointer>;
  using Codec = typename Traits::Codec;
  using R = typename Traits::Result;
  static_assert((check_result_type<R>(), true));
  static_assert(!is_handle<Bare<R>>::value,
                "a task cannot return a shared object (Value, Array, Lock, Queue, ...): one "
                "created in a worker belongs to that worker and is gone with it; create it in "
                "the caller and pass it to the task as an argument");

  static void run_chunk(const TaskEntry& self, const char* data, std::size_t size,
                        std::uint32_t expected, Buffer& out, bool& had_errors) {
    std::size_t off = 0;
    if (at_raw_chunk(data, size, off)) {
      constexpr bool kRawResult = !std::is_void_v<R> && kRawItem<Bare<R>>;
      had_errors = run_raw_chunk(self, read_raw_chunk(data, size, off, expected, kRawResult), out);
      return;
    }
    const std::uint32_t count = read_array_header(data, size, off);
    if (count != expected) {
      throw DecodeError("task '" + std::string(self.name) + "': chunk holds " +
                        std::to_string(count) + " items, header says " +
                        std::to_string(expected));
    }
    ChunkWriter writer(out, count);
    msgpack::zone zone;
    for (std::uint32_t i = 0; i < count; ++i) {
      zone.clear();
      msgpack::object obj;
      try {
        obj = read_object(zone, data, size, off);
      } catch (const std::exception& e) {
        // The rest of the payload is unreadable: each remaining item fails on its own,
        // the items already run keep their results.
        for (std::uint32_t j = i; j < count; ++j) {
          writer.fail(j, "mpx::DecodeError", argument_error_message(self, e));
        }
        break;
      }
      // Built in place: handles to shared objects are not default-constructible
      // cheaply (a default Value creates a segment).
      std::optional<typename Codec::Tuple> args;
      try {
        args.emplace(Codec::unpack_item(obj));
      } catch (const SharedMemoryError& e) {
        writer.fail(i, "mpx::SharedMemoryError", argument_error_message(self, e));
        continue;
      } catch (const std::bad_alloc&) {
        writer.fail(i, "std::bad_alloc", out_of_memory_message(self));
        continue;
      } catch (const std::exception& e) {
        writer.fail(i, "mpx::DecodeError", argument_error_message(self, e));
        continue;
      }
      // A result whose encoding throws half-way (bad_alloc, an adaptor that throws)
      // is cut back to where its item began: the item fails alone, its neighbours'
      // bytes stay readable.
      const std::size_t item_begins = out.size();
      try {
        if constexpr (std::is_void_v<R>) {
          std::apply(Callee::get(self), std::move(*args));
          writer.packer().pack_nil();
        } else {
          decltype(auto) result = std::apply(Callee::get(self), std::move(*args));
          ResultScope packing;  // an object the worker put() cannot leave with the result
          ArgumentCodec<Bare<decltype(result)>>::pack(writer.packer(), result);
        }
      } catch (...) {
        out.truncate(item_begins);
        writer.fail_current(i);
      }
    }
    had_errors = writer.finish();
  }

  // A chunk of raw arguments (codec.h): each item is read in place; results go back
  // raw when they are numbers too, into the chunk's buffer when it came in one with
  // room for them (raw_chunk.h). An item whose type is not the parameter's (never
  // from this program's driver) goes through msgpack's conversion, as any item does.
  static bool run_raw_chunk(const TaskEntry& self, const RawChunk& chunk, Buffer& out) {
    const RawBlock& block = chunk.block;
    const auto count = static_cast<std::uint32_t>(block.count);
    constexpr bool kRawResult = !std::is_void_v<R> && kRawItem<Bare<R>>;
    std::optional<ChunkWriter> writer;
    if constexpr (kRawResult) {
      if (chunk.results != nullptr && chunk.results_bytes == std::size_t{count} * sizeof(Bare<R>)) {
        pack_raw_chunk_ref(out, chunk.buffer->ref(), raw_code<Bare<R>>(), chunk.results_at, 0, 0);
        writer.emplace(out, raw_code<Bare<R>>(), chunk.results);
      } else {
        writer.emplace(out, count, raw_code<Bare<R>>());
      }
    } else {
      writer.emplace(out, count);
    }
    for (std::uint32_t i = 0; i < count; ++i) {
      std::optional<typename Codec::Tuple> args;
      try {
        if constexpr (Codec::kRawItems) {
          using P = typename Codec::Single;
          if (block.code == raw_code<P>()) {
            P v;
            std::memcpy(&v, block.bytes + std::size_t{i} * sizeof(P), sizeof(P));
            args.emplace(v);
          }
        }
        if (!args) args.emplace(Codec::unpack_item(raw_element(block, i)));
      } catch (const std::exception& e) {
        writer->fail(i, "mpx::DecodeError", argument_error_message(self, e));
        continue;
      }
      const std::size_t item_begins = out.size();
      try {
        if constexpr (std::is_void_v<R>) {
          std::apply(Callee::get(self), std::move(*args));
          writer->packer().pack_nil();
        } else if constexpr (kRawResult) {
          const Bare<R> result = std::apply(Callee::get(self), std::move(*args));
          std::memcpy(writer->raw_slot(i), &result, sizeof result);
        } else {
          decltype(auto) result = std::apply(Callee::get(self), std::move(*args));
          ResultScope packing;
          ArgumentCodec<Bare<decltype(result)>>::pack(writer->packer(), result);
        }
      } catch (...) {
        out.truncate(item_begins);
        writer->fail_current(i);
      }
    }
    return writer->finish();
  }

  static void run_call(const TaskEntry& self, const char* data, std::size_t size) {
    msgpack::zone zone;
    std::size_t off = 0;
    const msgpack::object obj = read_object(zone, data, size, off);
    std::optional<typename Codec::Tuple> args;
    try {
      args.emplace(Codec::unpack_call(obj));
    } catch (const SharedMemoryError& e) {
      throw SharedMemoryError(argument_error_message(self, e));
    } catch (const std::exception& e) {
      throw DecodeError(argument_error_message(self, e));
    }
    std::apply(Callee::get(self), std::move(*args));
  }
};

template <auto F>
using TaskImpl = TaskRunner<ConstantCallee<F>>;

template <auto F>
constexpr TaskEntry make_task_entry(const char* name, bool pure = false) {
  return TaskEntry{name, nullptr, FunctionTraits<decltype(F)>::kArity, &TaskImpl<F>::run_chunk,
                   &TaskImpl<F>::run_call, pure};
}

struct TaskRegistration {
  TaskRegistration(TaskEntry* entry, const void* function) {
    entry->function = function;
    register_task(entry);
  }
};

// Captureless lambdas as tasks, without MPX_TASK. Every process runs the same program,
// so a lambda's closure type exists in all of them: ClosureTask<F>'s registration, a
// static member instantiated by the call that uses the lambda, runs during static
// initialisation in every process, and workers find the lambda by name in the
// registry like any MPX_TASK (a name they do not know fails as NotRegistered: a
// message cannot make a worker call anything that was not registered).
//
// The name: "lambda <demangled closure type> @<module>+0x<offset of its invoker>". The
// offset from the module's load address is the same in every process of the program
// and tells apart closures whose demangled names collide (lambdas in same-named
// functions of two anonymous namespaces). It changes with every build: use MPX_TASK
// for names that must stay stable (pipelines across builds).
std::string closure_task_name(const std::type_info& closure, const void* invoker);

template <class Member>
struct CallOperator {};  // not a lambda with typed parameters: see closure_task
template <class C, class R, class... P>
struct CallOperator<R (C::*)(P...) const> {
  using Pointer = R (*)(P...);
};
template <class C, class R, class... P>
struct CallOperator<R (C::*)(P...) const noexcept> : CallOperator<R (C::*)(P...) const> {};
template <class C, class R, class... P>
struct CallOperator<R (C::*)(P...)> : CallOperator<R (C::*)(P...) const> {};  // mutable
template <class C, class R, class... P>
struct CallOperator<R (C::*)(P...) noexcept> : CallOperator<R (C::*)(P...) const> {};

template <class F, class = void>
struct HasTypedCall : std::false_type {};
template <class F>
struct HasTypedCall<F, std::void_t<typename CallOperator<decltype(&F::operator())>::Pointer>>
    : std::true_type {};

// The closure object a worker calls. A captureless closure has no state, but C++17
// closures cannot be default-constructed (C++20's can): the union provides storage of
// its type, whose operator() never reads it.
template <class F>
F& closure_object() {
  union Storage {
    char none = 0;
    F closure;
  };
  static Storage storage{};
  return storage.closure;
}

template <class F, class Pointer>
struct ClosureInvoker;
template <class F, class R, class... P>
struct ClosureInvoker<F, R (*)(P...)> {
  static R invoke(P... p) { return closure_object<F>()(std::forward<P>(p)...); }
};

template <class F>
struct ClosureTask {
  using Pointer = typename CallOperator<decltype(&F::operator())>::Pointer;
  static constexpr Pointer kInvoker = &ClosureInvoker<F, Pointer>::invoke;
  static TaskEntry& entry() {
    static const std::string name = closure_task_name(typeid(F), function_address(kInvoker));
    static TaskEntry e = make_task_entry<kInvoker>(name.c_str());
    return e;
  }
  static const TaskRegistration registration;
};
template <class F>
const TaskRegistration ClosureTask<F>::registration(&ClosureTask<F>::entry(),
                                                    function_address(ClosureTask<F>::kInvoker));

// The registered function that runs closure type F: what pools and Process take in
// place of the lambda.
template <class F>
auto closure_task() {
  static_assert(std::is_empty_v<F>,
                "a lambda with captures cannot be a task: workers are fresh processes that "
                "never see the captured values; capture nothing and pass them as arguments");
  static_assert(HasTypedCall<F>::value,
                "only a lambda with one call operator and typed parameters can be a task "
                "(not a generic lambda with auto parameters, nor an overloaded function "
                "object); or register a function with MPX_TASK");
  (void)&ClosureTask<F>::registration;  // instantiates it: it registers F at start-up
  return ClosureTask<F>::kInvoker;
}
template <class F>
using EnableIfClosure = std::enable_if_t<std::is_class_v<F>>;

// Plain function pointers as tasks, without MPX_TASK: pool.map(square, xs). A pointer
// is a run-time value, but its type is known where it is passed: that call
// instantiates FunctionSignature<R (*)(P...)>, whose registration (a static member,
// as for lambdas) gives every process of the program a runner for that signature.
// The task's name carries the function's module, its offset there and the
// signature's key (function_task, registry.cc). A process that receives the name runs
// it only if the module's symbol table has a C++ function starting at that offset
// whose parameter types are the signature's, so a message cannot make it call any
// other code: not the middle of a function, not a function of other parameters, not a
// signature the program never passes. (A C++ symbol does not record a non-template
// function's result type: the offset comes from the driver, which took it from a
// pointer of the right type.)
struct SignatureEntry {
  const char* type_name;        // typeid(R (*)(P...)).name()
  const char* parameters_name;  // typeid(void (*)(P...)).name(): what symbols are checked against
  std::size_t arity;
  void (*run_chunk)(const TaskEntry& self, const char* data, std::size_t size,
                    std::uint32_t expected, Buffer& out, bool& had_errors);
  void (*run_call)(const TaskEntry& self, const char* data, std::size_t size);
};
void register_signature(const SignatureEntry* entry);
// The task that runs the plain function at fn, of that signature: made once per
// function and kept. Throws NotRegistered naming why when it cannot be found again by
// other processes (no symbol table, not a C++ function, parameters that differ).
const TaskEntry& function_task(const void* fn, const SignatureEntry& signature, const char* what);

struct SignatureRegistration {
  explicit SignatureRegistration(const SignatureEntry* entry) { register_signature(entry); }
};

template <class Pointer>
struct FunctionSignature;
template <class R, class... P>
struct FunctionSignature<R (*)(P...)> {
  using Runner = TaskRunner<EntryCallee<R (*)(P...)>>;
  static const SignatureEntry& entry() {
    static const SignatureEntry e{typeid(R (*)(P...)).name(), typeid(void (*)(P...)).name(),
                                  sizeof...(P), &Runner::run_chunk, &Runner::run_call};
    return e;
  }
  static const SignatureRegistration registration;
};
template <class R, class... P>
const SignatureRegistration FunctionSignature<R (*)(P...)>::registration(
    &FunctionSignature<R (*)(P...)>::entry());

// The task for fn: its MPX_TASK registration (or its lambda's) when it has one, else
// the plain function's. what names the operation in errors ("Pool::map").
template <class R, class... P>
const TaskEntry& require_task(R (*fn)(P...), const char* what) {
  (void)&FunctionSignature<R (*)(P...)>::registration;  // registers the signature at start-up
  if (const TaskEntry* e = find_task_at(function_address(fn))) return *e;
  return function_task(function_address(fn), FunctionSignature<R (*)(P...)>::entry(), what);
}
template <class R, class... P>
const TaskEntry& require_task(R (*fn)(P...) noexcept, const char* what) {
  return require_task(static_cast<R (*)(P...)>(fn), what);
}

}  // namespace detail
}  // namespace mpx

#define MPX_DETAIL_CONCAT2(a, b) a##b
#define MPX_DETAIL_CONCAT(a, b) MPX_DETAIL_CONCAT2(a, b)

// Registers a free function under its spelled name (e.g. "square", "ns::f"). Use once
// per function at namespace scope; every process of the program then knows it.
#define MPX_DETAIL_TASK(fn, pure)                                                        \
  static ::mpx::detail::TaskEntry MPX_DETAIL_CONCAT(mpx_task_entry_, __LINE__) =         \
      ::mpx::detail::make_task_entry<&fn>(#fn, pure);                                    \
  static const ::mpx::detail::TaskRegistration MPX_DETAIL_CONCAT(mpx_task_reg_, __LINE__)( \
      &MPX_DETAIL_CONCAT(mpx_task_entry_, __LINE__), ::mpx::detail::function_address(&fn))
#define MPX_TASK(fn) MPX_DETAIL_TASK(fn, false)
// A task without side effects (or an idempotent one): when its worker dies, a Pool
// runs its chunk again, by default up to 3 times (PoolOptions::max_retries).
#define MPX_PURE_TASK(fn) MPX_DETAIL_TASK(fn, true)

#endif  // MPX_TASK_H_
