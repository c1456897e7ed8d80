// imap and imap_unordered read their input lazily, with a bounded read-ahead, with
// real processes: endless inputs stream, an input that throws fails the iteration at
// its position after the earlier results.
#include <algorithm>
#include <cstddef>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/testing/testing.h"
#include "mpx/mpx.h"

namespace {

using std::chrono::seconds;

int square(int x) { return x * x; }
MPX_TASK(square);

// 0, 1, 2, ... up to limit (endless when limit < 0), read through a single-pass input
// iterator; counts the items read; reading item throw_at throws.
struct Numbers {
  int limit = -1;
  int throw_at = -1;
  int* read = nullptr;

  struct iterator {
    using iterator_category = std::input_iterator_tag;
    using value_type = int;
    using difference_type = std::ptrdiff_t;
    using pointer = const int*;
    using reference = const int&;
    const Numbers* range;
    int value;
    const int& operator*() const {
      if (value == range->throw_at) throw std::range_error("input broke at " + std::to_string(value));
      return value;
    }
    iterator& operator++() {
      ++value;
      ++*range->read;
      return *this;
    }
    bool operator!=(const iterator& other) const { return value != other.value; }
    bool operator==(const iterator& other) const { return value == other.value; }
  };
  iterator begin() const { return iterator{this, 0}; }
  iterator end() const { return iterator{this, limit}; }
};

class LazyImapTest : public ::testing::Test {
 protected:
  void TearDown() override {
    auto left = mpx::testing::wait_no_descendants(seconds(10));
    for (const auto& d : left) ADD_FAILURE() << "left running: pid " << d.pid << " " << d.cmdline;
  }
};

TEST_F(LazyImapTest, AnEndlessInputStreamsWithABoundedReadAhead) {
  for (int workers : {1, 2}) {
    mpx::Pool pool(workers);
    int read = 0;
    Numbers numbers{-1, -1, &read};
    auto it = pool.imap(square, numbers, 3);
    // Read-ahead: two chunks of 3 per worker.
    const int ahead = 2 * 3 * workers;
    EXPECT_LE(read, ahead);
    for (int i = 0; i < 50; ++i) {
      ASSERT_EQ(it.next(), std::optional<int>(i * i));
      EXPECT_LE(read, i + ahead + 3) << "read far ahead of the consumer";  // whole chunks
    }
    // Dropped mid-way: the rest is never read, nothing hangs, the pool goes on.
  }
  mpx::Pool pool(2);
  int read = 0;
  {
    auto it = pool.imap_unordered(square, Numbers{-1, -1, &read}, 1);
    int sum = 0;
    for (int i = 0; i < 20; ++i) sum += *it.next();
    EXPECT_GE(sum, 0);
  }
  EXPECT_EQ(pool.apply(square, 9), 81);
}

TEST_F(LazyImapTest, AnInputErrorSurfacesAtItsPositionAfterTheEarlierResults) {
  mpx::Pool pool(2);
  for (std::size_t chunksize : {1, 4}) {
    int read = 0;
    auto it = pool.imap(square, Numbers{100, 7, &read}, chunksize);
    for (int i = 0; i < 7; ++i) ASSERT_EQ(it.next(), std::optional<int>(i * i)) << chunksize;
    EXPECT_THROW(it.next(), std::range_error) << "the input's own error, not a remote one";
    EXPECT_EQ(it.next(), std::nullopt);
    EXPECT_EQ(it.size(), 7u);
  }
  int read = 0;
  auto it = pool.imap_unordered(square, Numbers{100, 5, &read}, 2);
  std::vector<int> got;
  try {
    for (int v : it) got.push_back(v);
    FAIL() << "the input error was lost";
  } catch (const std::range_error& e) {
    EXPECT_EQ(std::string(e.what()), "input broke at 5");
  }
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 4, 9, 16}));
}

TEST_F(LazyImapTest, AnRvalueRangeIsOwnedAndEndsTheIteration) {
  mpx::Pool pool(2);
  auto it = pool.imap(square, std::vector<int>{1, 2, 3, 4, 5});  // the temporary is gone
  std::vector<int> got;
  for (int v : it) got.push_back(v);
  EXPECT_EQ(got, (std::vector<int>{1, 4, 9, 16, 25}));
  EXPECT_EQ(it.size(), 5u);
  auto empty = pool.imap(square, std::vector<int>{});
  EXPECT_EQ(empty.next(), std::nullopt);
  int read = 0;
  auto exact = pool.imap(square, Numbers{6, -1, &read}, 3);  // ends on a chunk boundary
  int n = 0;
  for (int v : exact) {
    EXPECT_EQ(v, n * n);
    ++n;
  }
  EXPECT_EQ(n, 6);
}

}  // namespace
