// Exceptions thrown in workers and actors arrive in the caller as their own types
// (derived from the original type and from mpx::RemoteInfo), with real processes.
#include <unistd.h>

#include <cerrno>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <gtest/gtest.h>

#include "framework/testing/testing.h"
#include "mpx/mpx.h"

// A user's own exception type, registered: it arrives as itself.
struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
static const bool parse_error_registered = mpx::register_exception<ParseError>();

// Not registered: it arrives as mpx::RemoteError naming its type.
struct Unregistered : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace {

// Throws the exception named by kind with message.
int throw_kind(const std::string& kind, const std::string& message) {
  if (kind == "logic_error") throw std::logic_error(message);
  if (kind == "invalid_argument") throw std::invalid_argument(message);
  if (kind == "domain_error") throw std::domain_error(message);
  if (kind == "length_error") throw std::length_error(message);
  if (kind == "out_of_range") throw std::out_of_range(message);
  if (kind == "runtime_error") throw std::runtime_error(message);
  if (kind == "range_error") throw std::range_error(message);
  if (kind == "overflow_error") throw std::overflow_error(message);
  if (kind == "underflow_error") throw std::underflow_error(message);
  if (kind == "bad_alloc") throw std::bad_alloc();
  if (kind == "system_error") throw std::system_error(EACCES, std::generic_category(), message);
  if (kind == "parse_error") throw ParseError(message);
  if (kind == "unregistered") throw Unregistered(message);
  if (kind == "int") throw 42;
  return 0;
}
MPX_TASK(throw_kind);

int negative_fails(int x) {
  if (x < 0) throw std::domain_error("negative: " + std::to_string(x));
  return x;
}
MPX_TASK(negative_fails);

class RemoteExceptionsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    EXPECT_TRUE(mpx::testing::wait_no_descendants(std::chrono::seconds(10)).empty());
  }
};

// Runs throw_kind(kind) in a worker and rethrows what get() throws.
void run_in_pool(mpx::Pool& pool, const std::string& kind, const std::string& message = "m") {
  pool.apply(throw_kind, kind, message);
}

template <class E>
void expect_typed(mpx::Pool& pool, const std::string& kind, const std::string& type_name) {
  try {
    run_in_pool(pool, kind, "went wrong");
    ADD_FAILURE() << kind << ": no exception";
  } catch (const E& e) {
    const auto* info = dynamic_cast<const mpx::RemoteInfo*>(&e);
    ASSERT_NE(info, nullptr) << kind << " arrived without RemoteInfo";
    EXPECT_EQ(info->type_name(), type_name);
    EXPECT_EQ(info->task_name(), "throw_kind");
    EXPECT_NE(info->worker_pid(), getpid());
    EXPECT_GT(info->worker_pid(), 0);
    EXPECT_EQ(std::string(e.what()), info->description());
    EXPECT_EQ(dynamic_cast<const mpx::RemoteError*>(&e), nullptr) << kind;
  }
  // The same failure also matches std::exception and RemoteInfo on their own.
  EXPECT_THROW(run_in_pool(pool, kind), std::exception) << kind;
  EXPECT_THROW(run_in_pool(pool, kind), mpx::RemoteInfo) << kind;
}

TEST_F(RemoteExceptionsTest, EveryStandardTypeArrivesAsItself) {
  mpx::Pool pool(2);
  expect_typed<std::logic_error>(pool, "logic_error", "std::logic_error");
  expect_typed<std::invalid_argument>(pool, "invalid_argument", "std::invalid_argument");
  expect_typed<std::domain_error>(pool, "domain_error", "std::domain_error");
  expect_typed<std::length_error>(pool, "length_error", "std::length_error");
  expect_typed<std::out_of_range>(pool, "out_of_range", "std::out_of_range");
  expect_typed<std::runtime_error>(pool, "runtime_error", "std::runtime_error");
  expect_typed<std::range_error>(pool, "range_error", "std::range_error");
  expect_typed<std::overflow_error>(pool, "overflow_error", "std::overflow_error");
  expect_typed<std::underflow_error>(pool, "underflow_error", "std::underflow_error");
  expect_typed<std::bad_alloc>(pool, "bad_alloc", "std::bad_alloc");
  expect_typed<std::system_error>(pool, "system_error", "std::system_error");
  // A derived type matches its own catch, not a sibling's.
  try {
    run_in_pool(pool, "invalid_argument", "x");
  } catch (const std::out_of_range&) {
    ADD_FAILURE() << "invalid_argument caught as out_of_range";
  } catch (const std::logic_error& e) {
    EXPECT_NE(dynamic_cast<const std::invalid_argument*>(&e), nullptr);
  }
}

TEST_F(RemoteExceptionsTest, TheMessageTheItemAndASystemErrorsCodeAreKept) {
  mpx::Pool pool(2);
  try {
    pool.map(negative_fails, std::vector<int>{0, 1, 2, -3, 4}, 1);
    FAIL() << "no exception";
  } catch (const std::domain_error& e) {
    const auto& info = dynamic_cast<const mpx::RemoteInfo&>(e);
    EXPECT_EQ(info.message(), "negative: -3");
    EXPECT_EQ(info.task_index(), 3u);
    EXPECT_EQ(std::string(e.what()),
              "task 'negative_fails' item 3 raised std::domain_error in worker pid " +
                  std::to_string(info.worker_pid()) + ": negative: -3");
  }
  try {
    run_in_pool(pool, "system_error", "open /secret");
    FAIL() << "no exception";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::permission_denied);
    EXPECT_EQ(&e.code().category(), &std::generic_category());
    const auto& info = dynamic_cast<const mpx::RemoteInfo&>(e);
    EXPECT_EQ(info.message(), std::system_error(EACCES, std::generic_category(), "open /secret").what());
  }
}

TEST_F(RemoteExceptionsTest, ImapRaisesTheTypedErrorAtItsItem) {
  mpx::Pool pool(2);
  auto it = pool.imap(negative_fails, std::vector<int>{5, -1, 7}, 1);
  EXPECT_EQ(it.next(), std::optional<int>(5));
  EXPECT_THROW(it.next(), std::domain_error);
  EXPECT_EQ(it.next(), std::optional<int>(7));
}

TEST_F(RemoteExceptionsTest, RegisteredTypesArriveAsThemselvesOthersAsRemoteError) {
  ASSERT_TRUE(parse_error_registered);
  mpx::Pool pool(1);
  try {
    run_in_pool(pool, "parse_error", "line 3: unexpected '}'");
    FAIL() << "no exception";
  } catch (const ParseError& e) {
    const auto& info = dynamic_cast<const mpx::RemoteInfo&>(e);
    EXPECT_EQ(info.type_name(), "ParseError");
    EXPECT_EQ(info.message(), "line 3: unexpected '}'");
  }
  try {
    run_in_pool(pool, "unregistered", "who am I");
    FAIL() << "no exception";
  } catch (const mpx::RemoteError& e) {
    EXPECT_EQ(e.type_name(), "Unregistered");
    EXPECT_EQ(e.message(), "who am I");
    const mpx::RemoteInfo& info = e;  // RemoteError is a RemoteInfo too
    EXPECT_EQ(info.description(), e.what());
  }
  try {
    run_in_pool(pool, "int");
    FAIL() << "no exception";
  } catch (const mpx::RemoteError& e) {
    EXPECT_EQ(e.type_name(), "int");
  }
}

class Thrower {
 public:
  explicit Thrower(int limit) : limit_(limit) {
    if (limit < 0) throw std::invalid_argument("limit must not be negative");
  }
  int at(int i) {
    if (i >= limit_) throw std::out_of_range("index " + std::to_string(i));
    return i;
  }

 private:
  int limit_;
};
MPX_ACTOR(Thrower, at);

TEST_F(RemoteExceptionsTest, ActorMethodsAndConstructorsThrowTypedErrors) {
  {
    auto t = mpx::spawn<Thrower>(2);
    EXPECT_EQ(t.call(&Thrower::at, 1).get(), 1);
    try {
      t.call(&Thrower::at, 5).get();
      FAIL() << "no exception";
    } catch (const std::out_of_range& e) {
      const auto& info = dynamic_cast<const mpx::RemoteInfo&>(e);
      EXPECT_EQ(info.task_name(), "Thrower::at");
      EXPECT_EQ(info.message(), "index 5");
      EXPECT_EQ(info.worker_pid(), t.pid());
    }
    EXPECT_THROW(mpx::spawn<Thrower>(-1), std::invalid_argument);
    t.stop();
  }
}

}  // namespace
