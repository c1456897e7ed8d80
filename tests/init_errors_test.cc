// mpx::init refuses a program whose registry is inconsistent, naming the problem,
// instead of letting a worker later run the wrong function.
#include <string>

#include <gtest/gtest.h>

#include "mpx/mpx.h"

namespace first {
int f(int x) { return x; }
MPX_TASK(f);
}  // namespace first
namespace second {
int f(int x) { return -x; }
MPX_TASK(f);  // the same name "f" for another function
}  // namespace second

namespace {

int square(int x) { return x * x; }
void nothing() {}
MPX_TASK(square);
MPX_TASK(nothing);

// Runs first (declaration order): mpx::init has not succeeded in this binary.
TEST(InitErrors, SpawningBeforeInitIsRefused) {
  try {
    mpx::Pool pool(1);
    FAIL() << "expected mpx::Error";
  } catch (const mpx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("mpx::init"), std::string::npos) << e.what();
  }
  mpx::Process p(nothing);
  EXPECT_THROW(p.start(), mpx::Error);
}

TEST(InitErrors, TwoFunctionsUnderOneNameAreRefused) {
  char arg0[] = "init_errors_test";
  char* argv[] = {arg0, nullptr};
  try {
    mpx::init(1, argv);
    FAIL() << "expected mpx::Error";
  } catch (const mpx::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'f'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("two different functions"), std::string::npos) << e.what();
  }
}

TEST(InitErrors, MalformedRoleFlagsAreRefused) {
  char arg0[] = "init_errors_test";
  char role[] = "--mpx-role=juggler";
  char* argv[] = {arg0, role, nullptr};
  EXPECT_THROW(mpx::init(2, argv), mpx::Error);
}

}  // namespace
