// The pipeline run: starting its stage pools and threads, the caller's side (next
// batch, progress, cancel), failure and teardown, and the functions mpx/pipeline.h's
// templates call.
#include "framework/pipeline/run.h"

#include <pthread.h>

#include <algorithm>

#include "mpx/runtime.h"

namespace mpx {
namespace detail {

std::string what_of(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

bool skip_object(const char* data, std::size_t size, std::size_t& off) {
  msgpack::null_visitor visitor;
  try {
    return msgpack::parse(data, size, off, visitor);
  } catch (const std::exception&) {
    return false;
  }
}

void name_thread(const std::string& name) { pthread_setname_np(pthread_self(), name.c_str()); }

std::mutex& Stage::mu() { return call->mu(); }

// ---- Start ----------------------------------------------------------------------------

void PipelineRunCore::start() {
  const auto& specs = plan_->stages;
  for (std::size_t k = 0; k < specs.size(); ++k) {
    auto s = std::make_unique<Stage>();
    const StageOptions& o = specs[k].options;
    s->run = this;
    s->number = k + 1;
    s->name = o.name();
    s->kind = specs[k].kind;
    if (o.workers() < 0) {
      throw Error("pipeline stage " + s->name + ": workers must be at least 1 (or 0 for cpu_count())");
    }
    s->workers = o.workers() > 0 ? o.workers() : cpu_count();
    s->ordered = o.order() == Order::ordered;
    s->skip_errors = o.skip_errors();
    s->buffer_items = o.buffer();
    s->buffer_bytes = o.buffer_bytes();
    s->batch = o.batch();
    if (s->buffer_items == 0) throw Error("pipeline stage " + s->name + ": buffer must be at least 1 item");
    stages_.push_back(std::move(s));
  }
  // The pools start in parallel: each costs a router and its workers' start-up.
  std::vector<std::exception_ptr> errors(stages_.size());
  {
    std::vector<std::thread> starters;
    for (std::size_t k = 0; k < stages_.size(); ++k) {
      starters.emplace_back([this, k, &errors, &specs] {
        try {
          PoolOptions options = specs[k].options.pool();
          options.processes(stages_[k]->workers);
          // A stage's results go on to the next stage as the bytes they came in
          // (answers.cc), which cannot carry the descriptors of results as objects.
          options.object_threshold(0);
          stages_[k]->pool = std::make_shared<PoolCore>(options);
        } catch (...) {
          errors[k] = std::current_exception();
        }
      });
    }
    for (auto& t : starters) t.join();
  }
  for (std::size_t k = 0; k < stages_.size(); ++k) {
    if (errors[k]) {
      closing_ = true;
      for (auto& s : stages_) s->pool.reset();
      std::rethrow_exception(stage_error(*stages_[k], std::nullopt, std::nullopt, errors[k]));
    }
  }
  for (auto& s : stages_) {
    s->call = std::make_shared<StageCall>(*plan_->stages[s->number - 1].task, *s);
    pool_begin_call(*s->pool, s->call);
  }
  source_ = plan_->open_source();
  // Two of the largest chunks the first stage takes (not the first, slow-start one: an
  // unsized source's chunks grow from 1).
  source_buffer_.capacity = 2 * batch_cap(*stages_.front());
  for (std::size_t k = 0; k < stages_.size(); ++k) {
    movers_.emplace_back([this, k] {
      name_thread("mpx-stage-" + std::to_string(k + 1));
      mover(k);
    });
  }
  movers_.emplace_back([this] {
    name_thread("mpx-source");
    read_source();
  });
}

// ---- The caller's side ----------------------------------------------------------------

bool PipelineRunCore::next_batch(OutputBatch& out) {
  {
    // Over already (a failure thrown once, the end reached, a cancel): the pools are
    // gone; say so again rather than touch them.
    std::lock_guard<std::mutex> lock(teardown_mu_);
    if (torn_down_) {
      std::lock_guard<std::mutex> failure(failure_mu_);
      if (failure_) std::rethrow_exception(failure_);
      return false;
    }
  }
  Stage& last = *stages_.back();
  pool_wait(
      *last.pool, [&] { return failed() || !last.ready.empty() || last.finished_locked(); },
      Clock::time_point::max());
  bool got = false;
  {
    std::lock_guard<std::mutex> lock(last.mu());
    if (!failed() && !last.ready.empty()) {
      Piece p = std::move(last.ready.front());
      last.ready.pop_front();
      // Nothing takes part of the last stage's pieces: they are handed over whole.
      out.spans = std::move(p.spans);
      out.origins = std::move(p.origins);
      out.first_index = p.first_index;
      out.bytes = std::move(p.bytes);
      std::uint64_t bytes = 0;
      for (const auto& span : out.spans) bytes += span.second;
      const std::uint64_t n = out.spans.size();
      last.buffered -= n;
      last.held_items.fetch_sub(n, std::memory_order_acq_rel);
      last.held_bytes.fetch_sub(bytes, std::memory_order_acq_rel);
      got = true;
    }
  }
  if (got) {
    last.notify_capacity();
    return true;
  }
  if (failed()) {
    teardown(true);
    throw_failure();
  }
  teardown(false);
  return false;
}

std::vector<StageProgress> PipelineRunCore::progress() const {
  std::lock_guard<std::mutex> lock(progress_mu_);
  return final_progress_ ? *final_progress_ : live_progress();
}

std::vector<StageProgress> PipelineRunCore::live_progress() const {
  std::vector<StageProgress> out;
  for (const auto& s : stages_) {
    StageProgress p;
    p.name = s->name;
    p.workers = s->workers;
    if (s->call && s->pool) {
      std::lock_guard<std::mutex> lock(s->mu());
      p.in = s->submitted;
      p.done = s->done;
      p.in_flight = s->submitted - s->done;
      p.out = s->out;
      p.buffered = s->buffered;
      p.failed = s->failed;
      p.finished = s->finished_locked() && s->ready.empty();
    }
    out.push_back(std::move(p));
  }
  return out;
}

void PipelineRunCore::cancel() {
  {
    std::lock_guard<std::mutex> lock(failure_mu_);
    if (!failure_) cancelled_ = true;
  }
  failed_.store(true, std::memory_order_release);
  wake_all();
  teardown(true);
}

void PipelineRunCore::fail_output(std::uint64_t index, std::uint64_t origin, const std::exception& e) {
  const Stage& last = *stages_.back();
  fail(stage_error(last, index, origin,
                   std::make_exception_ptr(DecodeError(
                       std::string("a result did not decode as the pipeline's item type: ") + e.what()))));
  teardown(true);
  throw_failure();
}

void PipelineRunCore::fail(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lock(failure_mu_);
    if (failure_ || cancelled_) return;
    failure_ = std::move(error);
  }
  failed_.store(true, std::memory_order_release);
  wake_all();
}

void PipelineRunCore::wake_all() {
  {
    std::lock_guard<std::mutex> lock(source_buffer_.mu);
  }
  source_buffer_.items_cv.notify_all();
  source_buffer_.room_cv.notify_all();
  for (auto& s : stages_) {
    s->notify_capacity();
    if (s->pool) s->pool->interrupt();
  }
}

void PipelineRunCore::teardown(bool abort) {
  std::lock_guard<std::mutex> lock(teardown_mu_);
  if (torn_down_) return;
  torn_down_ = true;
  closing_.store(true, std::memory_order_release);
  // Killing the workers first ends what they run and wakes any mover blocked on a pool.
  if (abort) {
    // A source waiting in a Feed stops waiting; any other source returns on its own.
    if (source_.interrupt) source_.interrupt();
    for (auto& s : stages_) {
      if (s->pool) s->pool->terminate();
    }
  }
  for (auto& t : movers_) {
    if (t.joinable()) t.join();
  }
  {
    std::lock_guard<std::mutex> lock(progress_mu_);
    final_progress_ = live_progress();
  }
  // The routers stop their workers and exit; in parallel, each takes a few ms.
  std::vector<std::thread> stoppers;
  for (auto& s : stages_) {
    if (!s->pool) continue;
    if (!abort && s->call) pool_abandon_call(*s->pool, *s->call);
    stoppers.emplace_back([pool = std::move(s->pool)]() mutable { pool.reset(); });
  }
  for (auto& t : stoppers) t.join();
}

void PipelineRunCore::throw_failure() {
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(failure_mu_);
    error = failure_;
  }
  if (error) std::rethrow_exception(error);
  throw PipelineError("pipeline run was cancelled", 0, "", std::nullopt, std::nullopt, nullptr);
}

std::exception_ptr PipelineRunCore::stage_error(const Stage& s, std::optional<std::uint64_t> item,
                                                std::optional<std::uint64_t> origin,
                                                std::exception_ptr cause) const {
  std::string what = "pipeline stage " + std::to_string(s.number) + " " + s.name + " failed";
  if (item) what += " at item " + std::to_string(*item);
  if (origin) what += " (source item " + std::to_string(*origin) + ")";
  what += ": " + what_of(cause);
  return std::make_exception_ptr(PipelineError(what, s.number, s.name, item, origin, cause));
}

// ---- The functions the templates call -------------------------------------------------

std::exception_ptr pipeline_source_error(std::uint64_t position, std::exception_ptr cause) {
  return std::make_exception_ptr(
      PipelineError("pipeline source failed at item " + std::to_string(position) + ": " + what_of(cause),
                    0, "source", position, position, cause));
}

std::shared_ptr<PipelineRunCore> pipeline_start(std::shared_ptr<const PipelinePlan> plan) {
  auto run = std::make_shared<PipelineRunCore>(std::move(plan));
  run->start();
  return run;
}

bool pipeline_next_batch(PipelineRunCore& run, OutputBatch& out) { return run.next_batch(out); }

std::vector<StageProgress> pipeline_progress(const PipelineRunCore& run) { return run.progress(); }

void pipeline_cancel(PipelineRunCore& run) { run.cancel(); }

void pipeline_fail_output(PipelineRunCore& run, std::uint64_t index, std::uint64_t origin,
                          const std::exception& e) {
  run.fail_output(index, origin, e);
}

}  // namespace detail
}  // namespace mpx
