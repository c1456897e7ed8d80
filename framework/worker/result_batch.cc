#include "framework/worker/result_batch.h"

#include <signal.h>

#include <cstdlib>
#include <cstring>

namespace mpx {
namespace worker {
namespace {

// The flusher only waits and writes: a small stack, so that a worker_memory_limit
// (RLIMIT_AS) is not spent on it.
constexpr std::size_t kFlusherStack = 128 * 1024;

}  // namespace

ResultBatch::ResultBatch(transport::Connection& router, wire::WorkerShared* shared,
                         std::chrono::microseconds max_wait)
    : router_(router), shared_(shared), max_wait_(max_wait) {}

ResultBatch::~ResultBatch() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    write_locked();
    stopping_ = true;
  }
  wake_.notify_all();
  if (flusher_state_ == Flusher::kRunning) pthread_join(flusher_, nullptr);
}

void ResultBatch::send(const wire::Header& header, std::string_view payload, const std::vector<int>& fds) {
  std::lock_guard<std::mutex> lock(mu_);
  if (length_ > 0 && fds.empty()) {
    // One write for what waits and this.
    frame_.clear();
    transport::append_frame(frame_, header, payload);
    if (append_locked(frame_)) {
      write_locked();
      return;
    }
  }
  write_locked();
  if (!router_.send(header, payload, fds)) std::_Exit(0);
}

void ResultBatch::hold(const wire::Header& header, std::string_view payload) {
  std::lock_guard<std::mutex> lock(mu_);
  frame_.clear();
  transport::append_frame(frame_, header, payload);
  if (shared_ != nullptr && frame_.size() <= wire::WorkerShared::kUnsentCapacity && start_flusher_locked()) {
    if (!append_locked(frame_)) {
      write_locked();
      append_locked(frame_);
    }
    if (since_ == Clock::time_point::max()) {
      since_ = Clock::now();
      if (flusher_asleep_) wake_.notify_one();
    }
    return;
  }
  write_locked();
  if (!router_.send_bytes(frame_)) std::_Exit(0);
}

void ResultBatch::flush() {
  std::lock_guard<std::mutex> lock(mu_);
  write_locked();
}

std::size_t ResultBatch::waiting() const {
  std::lock_guard<std::mutex> lock(mu_);
  return length_;
}

bool ResultBatch::append_locked(std::string_view frame) {
  if (shared_ == nullptr || length_ + frame.size() > wire::WorkerShared::kUnsentCapacity) return false;
  std::memcpy(shared_->unsent + length_, frame.data(), frame.size());
  length_ += frame.size();
  // Whole frames only: the router reads this many bytes once this process is dead.
  shared_->unsent_bytes.store(static_cast<std::uint32_t>(length_), std::memory_order_release);
  return true;
}

void ResultBatch::write_locked() {
  if (length_ == 0) return;
  // Should this process die between the write and the reset, the router reads these
  // frames twice (socket and page) and takes the second copies of none: their chunks
  // are answered already.
  if (!router_.send_bytes(std::string_view(shared_->unsent, length_))) std::_Exit(0);
  length_ = 0;
  shared_->unsent_bytes.store(0, std::memory_order_release);
  since_ = Clock::time_point::max();
}

bool ResultBatch::start_flusher_locked() {
  if (flusher_state_ != Flusher::kNone) return flusher_state_ == Flusher::kRunning;
  // Signals stay the main thread's (a task's handlers, SIGTERM): the flusher blocks all.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, kFlusherStack);
  const int rc = pthread_create(&flusher_, &attr, &ResultBatch::flusher_main, this);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  // Without a thread (a tight memory limit), results are written at once.
  flusher_state_ = rc == 0 ? Flusher::kRunning : Flusher::kFailed;
  return rc == 0;
}

void* ResultBatch::flusher_main(void* self) {
  static_cast<ResultBatch*>(self)->flusher();
  return nullptr;
}

void ResultBatch::flusher() {
  std::unique_lock<std::mutex> lock(mu_);
  bool quiet = false;  // a period passed with nothing waiting
  while (!stopping_) {
    if (since_ == Clock::time_point::max()) {
      if (quiet) {
        flusher_asleep_ = true;
        wake_.wait(lock);
        flusher_asleep_ = false;
        quiet = false;
      } else {
        // A busy worker holds results again soon: a period awake spares hold() a wake-up.
        quiet = true;
        wake_.wait_for(lock, max_wait_);
      }
      continue;
    }
    quiet = false;
    const auto due = since_ + max_wait_;
    if (Clock::now() >= due) {
      write_locked();
      continue;
    }
    wake_.wait_until(lock, due);
  }
}

}  // namespace worker
}  // namespace mpx
