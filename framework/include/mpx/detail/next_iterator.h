// mpx/detail/next_iterator.h — an input iterator over anything with next() returning
// std::optional<T> (imap's results, a pipeline run's), so both can be range-for'd.
// Internal: not part of the public API.
#ifndef MPX_DETAIL_NEXT_ITERATOR_H_
#define MPX_DETAIL_NEXT_ITERATOR_H_

#include <cstddef>
#include <iterator>
#include <optional>

namespace mpx {
namespace detail {

template <class Owner, class T>
class NextIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = T;
  using difference_type = std::ptrdiff_t;
  using pointer = const T*;
  using reference = const T&;

  NextIterator() = default;  // the end
  // Takes the owner's first item (throws what next() throws).
  explicit NextIterator(Owner* owner) : owner_(owner), current_(owner->next()) {}

  reference operator*() const { return *current_; }
  pointer operator->() const { return &*current_; }
  // The current item itself (as_completed hands out futures to use in place).
  T& operator*() { return *current_; }
  T* operator->() { return &*current_; }
  NextIterator& operator++() {
    current_.reset();
    current_ = owner_->next();
    return *this;
  }
  // Equal when both are at the end, or both are not: an input iterator is only ever
  // compared with end().
  bool operator==(const NextIterator& o) const { return current_.has_value() == o.current_.has_value(); }
  bool operator!=(const NextIterator& o) const { return !(*this == o); }

 private:
  Owner* owner_ = nullptr;
  std::optional<T> current_;
};

}  // namespace detail
}  // namespace mpx

#endif  // MPX_DETAIL_NEXT_ITERATOR_H_
