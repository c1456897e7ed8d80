// Condition: one futex slot per waiter, all bookkeeping under the user's lock.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "framework/base/base.h"
#include "framework/shm/state.h"
#include "mpx/sync.h"

namespace mpx {

using detail::Clock;
using detail::ConditionSlot;
using detail::ConditionState;
using detail::MutexState;
using detail::Segment;
using detail::SegmentKind;

namespace {

MutexState* mutex_of(detail::MutexHandle& lock) {
  return reinterpret_cast<MutexState*>(detail::HandleAccess::segment(lock)->body());
}

// A waiter whose process ended (a zombie too: killed, not yet joined by the notifier)
// will never look at its slot again. (A recycled pid could pass for it; the kernel
// reuses pids only after cycling through pid_max.)
bool waiter_gone(const ConditionSlot& slot) {
  return slot.pid != getpid() && base::process_ended(slot.pid);
}

void require_held(MutexState* lock, const char* what) {
  if (!detail::held_by_caller(lock)) {
    throw Error(std::string("mpx::Condition::") + what +
                ": the calling thread must hold the condition's lock (as in Python)");
  }
}

}  // namespace

std::shared_ptr<Segment> Condition::create_segment(int max_waiters) {
  if (max_waiters < 1 || max_waiters > 65536) {
    throw std::invalid_argument("mpx::Condition: max_waiters must be between 1 and 65536, got " +
                                std::to_string(max_waiters));
  }
  const std::size_t bytes =
      offsetof(ConditionState, slots) + sizeof(ConditionSlot) * static_cast<std::size_t>(max_waiters);
  auto segment = Segment::create(SegmentKind::kCondition, detail::untyped_tag(),
                                 static_cast<std::uint64_t>(max_waiters), bytes);
  auto* state = new (segment->body()) ConditionState();
  state->capacity = static_cast<std::uint32_t>(max_waiters);
  return segment;
}

Condition::Condition(int max_waiters) : Condition(RLock(), max_waiters) {}
Condition::Condition(const Lock& lock, int max_waiters)
    : Condition(create_segment(max_waiters), lock) {}
Condition::Condition(const RLock& lock, int max_waiters)
    : Condition(create_segment(max_waiters), lock) {}

Condition::Condition(std::shared_ptr<Segment> segment, detail::MutexHandle lock)
    : segment_(std::move(segment)),
      state_(reinterpret_cast<ConditionState*>(segment_->body())),
      lock_(std::move(lock)) {
  if (segment_->body_bytes() < offsetof(ConditionState, slots) +
                                   sizeof(ConditionSlot) * state_->capacity) {
    throw SharedMemoryError("mpx::Condition: the shared condition is smaller than its header says");
  }
}

bool Condition::wait_until(Clock::time_point deadline) {
  MutexState* lock = mutex_of(lock_);
  require_held(lock, "wait");
  ConditionState* s = state_;
  ConditionSlot* slot = nullptr;
  for (int pass = 0; pass < 2 && slot == nullptr; ++pass) {
    for (std::uint32_t i = 0; i < s->capacity; ++i) {
      ConditionSlot& candidate = s->slots[i];
      // Second pass: slots of waiters that died are free too.
      if (candidate.state.load() == detail::kSlotFree || (pass == 1 && waiter_gone(candidate))) {
        slot = &candidate;
        break;
      }
    }
  }
  if (slot == nullptr) {
    throw Error("mpx::Condition::wait: " + std::to_string(s->capacity) +
                " threads already wait on this condition (create it with a larger max_waiters)");
  }
  slot->pid = getpid();
  slot->ticket = s->next_ticket++;
  slot->state.store(detail::kSlotWaiting);

  // Every level of an RLock is released, and taken again afterwards (Python's
  // _release_save / _acquire_restore).
  const int levels = std::max(1, static_cast<int>(lock->mutex.__data.__count));
  for (int i = 0; i < levels; ++i) detail::unlock_robust(lock);
  for (;;) {
    if (slot->state.load() == detail::kSlotNotified) break;
    const auto now = Clock::now();
    if (deadline != Clock::time_point::max() && now >= deadline) break;
    // Sliced: a notifier that died between marking this slot and waking it must not
    // leave it asleep.
    detail::futex_wait(&slot->state, detail::kSlotWaiting, std::min(deadline, now + detail::kSleepSlice));
  }
  bool recovered = false;
  for (int i = 0; i < levels; ++i) {
    recovered |= detail::lock_robust(lock, Clock::time_point::max()) == detail::LockResult::kRecovered;
  }
  (void)recovered;  // previous_owner_died() reports it to the caller
  // Notified, even if the deadline passed meanwhile: the notification is consumed here.
  const bool notified = slot->state.load() == detail::kSlotNotified;
  slot->state.store(detail::kSlotFree);
  return notified;
}

void Condition::notify(int n) {
  if (n < 0) throw std::invalid_argument("mpx::Condition::notify: n must be >= 0");
  MutexState* lock = mutex_of(lock_);
  require_held(lock, "notify");
  ConditionState* s = state_;
  std::vector<ConditionSlot*> waiting;
  for (std::uint32_t i = 0; i < s->capacity; ++i) {
    if (s->slots[i].state.load() == detail::kSlotWaiting) waiting.push_back(&s->slots[i]);
  }
  std::sort(waiting.begin(), waiting.end(),
            [](const ConditionSlot* a, const ConditionSlot* b) { return a->ticket < b->ticket; });
  int woken = 0;
  for (ConditionSlot* slot : waiting) {
    if (woken == n) break;
    if (waiter_gone(*slot)) {
      slot->state.store(detail::kSlotFree);
      continue;
    }
    slot->state.store(detail::kSlotNotified);
    detail::futex_wake(&slot->state, 1);
    ++woken;
  }
}

void Condition::notify_all() { notify(INT_MAX); }

namespace detail {

Condition HandleCodec<Condition>::unpack(const msgpack::object& o) {
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 2 ||
      o.via.array.ptr[1].type != msgpack::type::ARRAY || o.via.array.ptr[1].via.array.size < 1) {
    throw msgpack::type_error();
  }
  auto segment = unpack_segment(o.via.array.ptr[0], SegmentKind::kCondition, untyped_tag());
  const auto kind = static_cast<SegmentKind>(o.via.array.ptr[1].via.array.ptr[0].as<std::uint32_t>());
  if (kind == SegmentKind::kRLock) {
    return Condition(std::move(segment), HandleAccess::adopt<RLock>(unpack_segment(
                                             o.via.array.ptr[1], SegmentKind::kRLock, untyped_tag())));
  }
  return Condition(std::move(segment), HandleAccess::adopt<Lock>(unpack_segment(
                                           o.via.array.ptr[1], SegmentKind::kLock, untyped_tag())));
}

}  // namespace detail
}  // namespace mpx
