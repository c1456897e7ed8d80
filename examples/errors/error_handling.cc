// Guide section 7.2, "Implementar manejo de errores": a failing task does not take the
// others down.
//
// Teaches:
//  * an exception thrown by a task in a worker comes back to the caller as its own
//    type (here std::invalid_argument), and as mpx::RemoteInfo, carrying the original
//    type name, message and input position (types mpx cannot recreate arrive as
//    mpx::RemoteError, a RemoteInfo too; mpx::register_exception<T>() adds yours);
//  * the pool is still usable after a task failed;
//  * imap reports a failed item at its position, and iteration can continue past it
//    (call next() inside try/catch; a range-for would stop at the first error);
//  * an mpx::Process whose function throws exits with exitcode 1 (the child logs the
//    error to stderr), as a Python Process that raised.
//
//   bazel run //examples/errors:error_handling
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mpx/mpx.h"

// Fails for multiples of 3 other than 0.
int checked_inverse(int x) {
  if (x != 0 && x % 3 == 0) throw std::invalid_argument("bad input " + std::to_string(x));
  return -x;
}
MPX_TASK(checked_inverse);

void failing_worker() { throw std::runtime_error("worker gave up"); }
MPX_TASK(failing_worker);

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  mpx::Pool pool(2);

  // 1. map with one bad item (3): the whole call throws the item's error.
  try {
    pool.map(checked_inverse, std::vector<int>{0, 1, 2, 3, 4});
    std::printf("map: no error?\n");
  } catch (const std::invalid_argument& e) {  // the type the task threw
    const auto& remote = dynamic_cast<const mpx::RemoteInfo&>(e);
    std::printf("map failed: %s at item %llu: %s\n", remote.type_name().c_str(),
                static_cast<unsigned long long>(remote.task_index()), remote.message().c_str());
  }

  // 2. The pool still works.
  const std::vector<int> ok = pool.map(checked_inverse, std::vector<int>{1, 2, 4});
  std::printf("pool still usable: %d %d %d\n", ok[0], ok[1], ok[2]);

  // 3. imap: each item succeeds or fails on its own, in input order.
  mpx::ImapIterator<int> it = pool.imap(checked_inverse, std::vector<int>{1, 3, 5, 6, 7});
  for (;;) {
    try {
      std::optional<int> v = it.next();
      if (!v) break;
      std::printf("imap: %d\n", *v);
    } catch (const mpx::RemoteInfo& e) {  // any task failure, whatever its type
      std::printf("imap: item %llu failed: %s\n",
                  static_cast<unsigned long long>(e.task_index()), e.message().c_str());
    }
  }

  // 4. A Process whose function throws exits with code 1.
  mpx::Process p(failing_worker);
  std::fflush(stdout);
  p.start();
  p.join();
  std::printf("failing process exitcode %d\n", *p.exitcode());
  return 0;
}
