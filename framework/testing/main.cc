// GoogleTest main for suites whose binaries are re-executed as mpx roles: mpx::init
// must run before GoogleTest parses the command line.
#include <gtest/gtest.h>

#include "mpx/mpx.h"

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
