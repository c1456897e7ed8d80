// The threads that feed a pipeline's stages: the source thread, which packs source
// items as they are read, and one mover per stage, which waits for room in its stage
// (backpressure), takes a batch from the source or from the stage before, and submits
// it to its stage's pool.
#include "framework/pipeline/run.h"

#include <algorithm>

namespace mpx {
namespace detail {

// ---- The source thread ----------------------------------------------------------------

void PipelineRunCore::read_source() {
  SourceBuffer& b = source_buffer_;
  Buffer item;
  msgpack::packer<Buffer> pk(item);
  for (std::uint64_t position = 0;; ++position) {
    {
      std::unique_lock<std::mutex> lock(b.mu);
      b.room_cv.wait(lock, [&] { return failed() || b.waiting() < b.capacity; });
      if (failed()) return;
    }
    item.clear();
    Pins pins;
    bool got = false;
    try {
      PinScope scope(pins);
      got = source_.pack(pk);
    } catch (...) {
      fail(pipeline_source_error(position, std::current_exception()));
      return;
    }
    {
      std::lock_guard<std::mutex> lock(b.mu);
      if (!got) {
        b.ended = true;
      } else {
        b.bytes.append(item.data(), item.size());
        b.ends.push_back(b.bytes.size());
        b.pins.push_back(std::move(pins));
      }
    }
    b.items_cv.notify_one();
    if (!got) return;
  }
}

// ---- The movers -----------------------------------------------------------------------

void PipelineRunCore::mover(std::size_t k) {
  Stage& s = *stages_[k];
  try {
    for (;;) {
      const std::size_t room = wait_capacity(s);
      Chunk c;
      const std::size_t limit = std::min(room, batch_cap(s));
      const bool more = k == 0 ? take_from_source(s, room, c) : take_from_stage(*stages_[k - 1], limit, c);
      if (c.count > 0) submit(s, std::move(c));
      if (!more) {
        close_input(s);
        return;
      }
    }
  } catch (const Stopped&) {
  } catch (...) {
    // Submitting failed: the pool broke, or a chunk is over max_message_bytes.
    fail(stage_error(s, std::nullopt, std::nullopt, std::current_exception()));
  }
}

std::size_t PipelineRunCore::wait_capacity(Stage& s) {
  std::unique_lock<std::mutex> lock(s.cap_mu);
  // The count the predicate saw: read again, it could be over the buffer already (a
  // flat_map's answers add items while this returns) and the room would wrap around.
  std::uint64_t items = 0;
  s.cap_cv.wait(lock, [&] {
    if (failed()) return true;
    items = s.held_items.load(std::memory_order_acquire);
    return items < s.buffer_items &&
           (items == 0 || s.held_bytes.load(std::memory_order_acquire) < s.buffer_bytes);
  });
  if (failed()) throw Stopped{};
  return s.buffer_items - items;
}

std::size_t PipelineRunCore::batch_cap(const Stage& s) const {
  if (s.batch) return s.batch;
  return std::clamp<std::size_t>(s.buffer_items / (4 * static_cast<std::size_t>(s.workers)), 1,
                                 kMaxAutoBatch);
}

std::size_t PipelineRunCore::source_batch(const Stage& s) const {
  const std::size_t cap = batch_cap(s);
  if (s.batch) return cap;
  if (plan_->source_size) return std::min(cap, auto_chunksize(*plan_->source_size, s.workers));
  // Unknown length: start small so that a short source still spreads over the workers.
  const std::uint64_t doubled = std::uint64_t{1} << std::min<std::uint64_t>(s.chunks_sent, 20);
  return static_cast<std::size_t>(std::min<std::uint64_t>(cap, doubled));
}

bool PipelineRunCore::take_from_source(Stage& s, std::size_t room, Chunk& c) {
  SourceBuffer& b = source_buffer_;
  const std::size_t limit = std::min(room, source_batch(s));
  {
    std::unique_lock<std::mutex> lock(b.mu);
    b.items_cv.wait(lock, [&] { return failed() || b.waiting() > 0 || b.ended; });
    if (failed()) throw Stopped{};
    const std::size_t n = std::min(limit, b.waiting());
    if (n == 0) return false;  // ended, and everything was taken
    const std::size_t begin = b.head == 0 ? 0 : b.ends[b.head - 1];
    const std::size_t end = b.ends[b.head + n - 1];
    c.buf.write(b.bytes.data() + begin, end - begin);
    for (std::size_t i = 0; i < n; ++i) {
      c.origins.push_back(b.next_origin + i);
      for (auto& pin : b.pins[b.head + i]) c.pins.push_back(std::move(pin));
    }
    c.count = static_cast<std::uint32_t>(n);
    b.head += n;
    b.next_origin += n;
    if (b.head == b.ends.size()) {
      b.bytes.clear();
      b.ends.clear();
      b.pins.clear();
      b.head = 0;
    } else if (b.head >= 1024 && b.head * 2 >= b.ends.size()) {
      // Compact: drop what was taken.
      const std::size_t cut = b.ends[b.head - 1];
      b.bytes.erase(0, cut);
      b.ends.erase(b.ends.begin(), b.ends.begin() + static_cast<std::ptrdiff_t>(b.head));
      for (auto& e : b.ends) e -= cut;
      b.pins.erase(b.pins.begin(), b.pins.begin() + static_cast<std::ptrdiff_t>(b.head));
      b.head = 0;
    }
  }
  b.room_cv.notify_one();
  return true;
}

bool PipelineRunCore::take_from_stage(Stage& up, std::size_t limit, Chunk& c) {
  pool_wait(
      *up.pool, [&] { return failed() || !up.ready.empty() || up.finished_locked(); },
      Clock::time_point::max());
  std::uint64_t bytes = 0;
  {
    std::lock_guard<std::mutex> lock(up.mu());
    if (failed()) throw Stopped{};
    if (up.ready.empty()) return false;  // every item of the stage before is through
    while (c.count < limit && !up.ready.empty()) {
      Piece& p = up.ready.front();
      const std::size_t n = std::min<std::size_t>(limit - c.count, p.left());
      // Adjacent spans (a map stage's answer without failures) go in one copy.
      std::size_t i = p.taken;
      const std::size_t end = p.taken + n;
      while (i < end) {
        const std::uint32_t run_begin = p.spans[i].first;
        std::uint32_t run_end = run_begin + p.spans[i].second;
        std::size_t j = i + 1;
        while (j < end && p.spans[j].first == run_end) run_end += p.spans[j++].second;
        c.buf.write(p.bytes.data() + run_begin, run_end - run_begin);
        bytes += run_end - run_begin;
        i = j;
      }
      c.origins.insert(c.origins.end(), p.origins.begin() + static_cast<std::ptrdiff_t>(p.taken),
                       p.origins.begin() + static_cast<std::ptrdiff_t>(end));
      c.count += static_cast<std::uint32_t>(n);
      p.taken = end;
      if (p.left() == 0) up.ready.pop_front();
    }
    up.buffered -= c.count;
    up.held_items.fetch_sub(c.count, std::memory_order_acq_rel);
    up.held_bytes.fetch_sub(bytes, std::memory_order_acq_rel);
  }
  up.notify_capacity();
  return true;
}

void PipelineRunCore::submit(Stage& s, Chunk&& c) {
  c.seal();
  const std::uint32_t count = c.count;
  const std::size_t bytes = c.buf.size();
  std::uint64_t start;
  {
    std::lock_guard<std::mutex> lock(s.mu());
    start = s.submitted;
    s.submitted += count;
    SentChunk sent;
    sent.count = count;
    sent.origins = std::move(c.origins);
    sent.bytes = bytes;
    sent.pins = std::move(c.pins);
    s.sent.emplace(start, std::move(sent));
    s.held_items.fetch_add(count, std::memory_order_acq_rel);
    s.held_bytes.fetch_add(bytes, std::memory_order_acq_rel);
  }
  ++s.chunks_sent;
  pool_send_chunk(*s.pool, *s.call, start, count, std::move(c.buf));
  pool_flush(*s.pool);
}

void PipelineRunCore::close_input(Stage& s) {
  {
    std::lock_guard<std::mutex> lock(s.mu());
    s.input_closed = true;
  }
  s.pool->interrupt();  // the taker may be waiting for exactly this
}

}  // namespace detail
}  // namespace mpx
