// What a stage's pool answers: result chunks sliced into items without decoding them
// (a flat_map's into their elements), passed on in order, failures kept or skipped.
#include "framework/pipeline/run.h"

#include "mpx/runtime.h"

namespace mpx {
namespace detail {

// ---- Answers from the pools -----------------------------------------------------------

void PipelineRunCore::publish_locked(Stage& s, std::uint64_t start, Piece&& piece) {
  s.buffered += piece.spans.size();
  if (!s.ordered) {
    piece.first_index = s.out;
    s.out += piece.spans.size();
    if (!piece.spans.empty()) s.ready.push_back(std::move(piece));
    return;
  }
  s.finished.emplace(start, std::move(piece));
  while (!s.finished.empty() && s.finished.begin()->first == s.release_next) {
    auto node = s.finished.extract(s.finished.begin());
    Piece& p = node.mapped();
    s.release_next += p.input_count;
    p.first_index = s.out;
    s.out += p.spans.size();
    if (!p.spans.empty()) s.ready.push_back(std::move(p));
  }
}

void PipelineRunCore::note_skipped(Stage& s, std::uint64_t item, std::uint64_t origin,
                                   const std::string& why) {
  std::uint64_t n;
  {
    std::lock_guard<std::mutex> lock(s.mu());
    n = ++s.failed;
  }
  auto level = n <= kSkipWarnings ? spdlog::level::warn : spdlog::level::debug;
  logger().log(level, "pipeline stage {} {}: dropped item {} (source item {}): {}{}", s.number,
               s.name, item, origin, why,
               n == kSkipWarnings ? " (further drops of this stage are logged at debug level)" : "");
}

void PipelineRunCore::on_results(Stage& s, std::uint64_t start, std::uint32_t count,
                                 const char* data, std::size_t size, bool has_errors,
                                 pid_t worker_pid) {
  SentChunk sent;
  {
    std::lock_guard<std::mutex> lock(s.mu());
    auto it = s.sent.find(start);
    // Not ours (any more): an answer to a chunk already reported lost, or one that does
    // not match what was sent. Its items were accounted for once already.
    if (it == s.sent.end() || it->second.count != count) return;
    sent = std::move(it->second);
    s.sent.erase(it);
  }
  // Slice the answer: each value's bytes, and the failed items.
  std::vector<std::pair<std::size_t, std::size_t>> values;
  std::vector<ErrorInfo> errors;
  std::exception_ptr unreadable;
  try {
    std::size_t off = 0;
    if (read_array_header(data, size, off) != count) {
      throw DecodeError("a result chunk holds another number of items than its header says");
    }
    values.reserve(count);
    for (std::uint32_t i = 0; i < count; ++i) {
      const std::size_t begin = off;
      if (!skip_object(data, size, off)) throw DecodeError("a result chunk is truncated or malformed");
      values.emplace_back(begin, off - begin);
    }
    if (has_errors) errors = read_error_list(data, size, off, count);
  } catch (...) {
    unreadable = std::current_exception();
  }

  Piece piece;
  piece.input_count = count;
  std::exception_ptr first_error;
  std::vector<std::pair<std::uint64_t, std::string>> dropped;  // (index in chunk, why)
  if (unreadable) {
    if (s.skip_errors) {
      for (std::uint32_t i = 0; i < count; ++i) dropped.emplace_back(i, "unreadable answer");
    } else {
      first_error = stage_error(s, start, sent.origins.at(0), unreadable);
    }
  } else {
    const std::size_t region_begin = values.empty() ? 0 : values.front().first;
    const std::size_t region_end = values.empty() ? 0 : values.back().first + values.back().second;
    piece.bytes.assign(data + region_begin, region_end - region_begin);
    std::size_t next_error = 0;
    for (std::uint32_t i = 0; i < count; ++i) {
      if (next_error < errors.size() && errors[next_error].item == i) {
        const ErrorInfo& e = errors[next_error++];
        if (s.skip_errors) {
          dropped.emplace_back(i, e.type + ": " + e.message);
        } else if (!first_error) {
          first_error = stage_error(s, start + i, sent.origins[i], s.call->make_remote_error(start, e, worker_pid));
        }
        continue;
      }
      const auto rel = static_cast<std::uint32_t>(values[i].first - region_begin);
      const auto len = static_cast<std::uint32_t>(values[i].second);
      if (s.kind == StageKind::kMap) {
        piece.spans.emplace_back(rel, len);
        piece.origins.push_back(sent.origins[i]);
        continue;
      }
      // flat_map: the value is a sequence; its elements go on one by one.
      std::size_t off = 0;
      const char* v = piece.bytes.data() + rel;
      try {
        const std::uint32_t n = read_array_header(v, len, off);
        for (std::uint32_t j = 0; j < n; ++j) {
          const std::size_t begin = off;
          if (!skip_object(v, len, off)) throw DecodeError("a flat_map result is truncated");
          piece.spans.emplace_back(static_cast<std::uint32_t>(rel + begin),
                                   static_cast<std::uint32_t>(off - begin));
          piece.origins.push_back(sent.origins[i]);
        }
      } catch (const std::exception& e) {
        auto cause = std::make_exception_ptr(DecodeError(
            "task '" + std::string(s.call->task().name) +
            "': a flat_map stage's result must be a sequence: " + e.what()));
        if (s.skip_errors) {
          dropped.emplace_back(i, e.what());
        } else if (!first_error) {
          first_error = stage_error(s, start + i, sent.origins[i], cause);
        }
      }
    }
  }
  std::uint64_t out_bytes = 0;
  for (const auto& span : piece.spans) out_bytes += span.second;
  const std::uint64_t outputs = piece.spans.size();
  {
    std::lock_guard<std::mutex> lock(s.mu());
    s.done += count;
    s.held_items.fetch_add(outputs, std::memory_order_acq_rel);
    s.held_items.fetch_sub(count, std::memory_order_acq_rel);
    s.held_bytes.fetch_add(out_bytes, std::memory_order_acq_rel);
    s.held_bytes.fetch_sub(sent.bytes, std::memory_order_acq_rel);
    publish_locked(s, start, std::move(piece));
  }
  for (const auto& [i, why] : dropped) note_skipped(s, start + i, sent.origins[i], why);
  s.notify_capacity();
  if (first_error) fail(first_error);
}

void PipelineRunCore::on_lost(Stage& s, const std::vector<std::uint64_t>& indices, pid_t worker_pid,
                              const std::string& reason, bool timed_out) {
  std::exception_ptr cause = s.call->make_lost_error(indices, worker_pid, reason, timed_out);
  std::vector<std::pair<std::uint64_t, SentChunk>> lost;
  {
    std::lock_guard<std::mutex> lock(s.mu());
    // Lost items come as whole chunks, by ascending index.
    std::size_t i = 0;
    while (i < indices.size()) {
      auto it = s.sent.find(indices[i]);
      if (it == s.sent.end()) {
        ++i;
        continue;
      }
      const std::uint64_t start = it->first;
      const std::uint64_t end = start + it->second.count;
      while (i < indices.size() && indices[i] < end) ++i;
      s.done += it->second.count;
      s.held_items.fetch_sub(it->second.count, std::memory_order_acq_rel);
      s.held_bytes.fetch_sub(it->second.bytes, std::memory_order_acq_rel);
      Piece empty;
      empty.input_count = it->second.count;
      publish_locked(s, start, std::move(empty));
      lost.emplace_back(start, std::move(it->second));
      s.sent.erase(it);
    }
  }
  s.notify_capacity();
  if (lost.empty()) return;
  if (!s.skip_errors) {
    fail(stage_error(s, lost.front().first, lost.front().second.origins.at(0), cause));
    return;
  }
  const std::string why = what_of(cause);
  for (const auto& [start, chunk] : lost) {
    for (std::uint32_t i = 0; i < chunk.count; ++i) note_skipped(s, start + i, chunk.origins[i], why);
  }
}

void PipelineRunCore::on_pool_failure(Stage& s, std::exception_ptr error) {
  if (closing_.load(std::memory_order_acquire)) return;  // our own teardown stops the pools
  fail(stage_error(s, std::nullopt, std::nullopt, error));
}

}  // namespace detail
}  // namespace mpx
