// ResultBatch: a pool worker's results of quick chunks, written to the router together.
//
// A result written on its own costs a sendmsg and a wake-up of the router. With one
// item per chunk that was most of the work: map(square, 100k ints, chunksize=1) ran at
// 330k items/s with a write per result and 720k with one write per batch. So the
// result of a quick chunk may wait while the next chunk is already read, and what
// waits leaves in one write once the worker has run what it read. Two rules keep that
// as safe as writing at once:
//  - What waits lives in the memory shared with the router (wire::WorkerShared::unsent),
//    as whole frames, stored before the chunk's running mark is cleared. A worker that
//    dies with results unwritten leaves them there, and the router takes them
//    (RouterCore::on_unsent_results): they are delivered, as if written.
//  - A chunk that runs long does not hold back the results before it: a thread of this
//    class writes what has waited kMaxWait.
// Without a shared page (a worker its router did not spawn) nothing waits.
#ifndef MPX_FRAMEWORK_WORKER_RESULT_BATCH_H_
#define MPX_FRAMEWORK_WORKER_RESULT_BATCH_H_

#include <pthread.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "framework/transport/transport.h"
#include "framework/wire/wire.h"

namespace mpx {
namespace worker {

class ResultBatch {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::microseconds kMaxWait{1000};

  // shared: the page shared with the router, or null. A write that fails means the
  // router is gone: the worker then ends (std::_Exit(0)), as it does on any send.
  // max_wait: how long a held result may wait for flush() (tests that look at what
  // waits pass a long one, so that a slow run does not see it written already).
  ResultBatch(transport::Connection& router, wire::WorkerShared* shared,
              std::chrono::microseconds max_wait = kMaxWait);
  ~ResultBatch();  // writes what waits
  ResultBatch(const ResultBatch&) = delete;
  ResultBatch& operator=(const ResultBatch&) = delete;

  // A message, written now, after what waits (messages keep their order).
  void send(const wire::Header& header, std::string_view payload, const std::vector<int>& fds = {});
  // A result that may wait for flush() (or max_wait); written now when it cannot wait.
  void hold(const wire::Header& header, std::string_view payload);
  // Writes what waits.
  void flush();
  // Bytes waiting (tests).
  std::size_t waiting() const;

 private:
  bool append_locked(std::string_view frame);  // false: no room (or no page)
  void write_locked();
  bool start_flusher_locked();
  void flusher();
  static void* flusher_main(void* self);

  transport::Connection& router_;
  wire::WorkerShared* const shared_;
  const std::chrono::microseconds max_wait_;
  mutable std::mutex mu_;  // the socket's writing side, the waiting bytes, the fields below
  std::condition_variable wake_;
  std::size_t length_ = 0;
  Clock::time_point since_ = Clock::time_point::max();  // when the oldest waiting result came
  bool flusher_asleep_ = false;  // waiting without a deadline: hold() wakes it
  bool stopping_ = false;
  enum class Flusher { kNone, kRunning, kFailed } flusher_state_ = Flusher::kNone;
  pthread_t flusher_{};
  std::string frame_;  // scratch for encoding
};

}  // namespace worker
}  // namespace mpx

#endif  // MPX_FRAMEWORK_WORKER_RESULT_BATCH_H_
