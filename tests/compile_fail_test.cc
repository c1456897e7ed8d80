// Programs that must not compile: each file in tests/compile_fail/ is compiled for
// real with the system compiler against mpx's public headers, and its first line says
// what must happen ("// expect: compiles", or "// expect: <text>" that the compiler's
// error output must contain). This is how a static_assert meant for users is tested.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace {

std::string runfile(const std::string& path) {
  const char* root = std::getenv("TEST_SRCDIR");
  return std::string(root ? root : ".") + "/mpx/" + path;
}

struct Compiled {
  int status = -1;
  std::string output;
};

Compiled compile(const std::string& file) {
  // The defines the system-library targets give (third_party/system.BUILD).
  const std::string command =
      "c++ -std=c++17 -fsyntax-only -DMSGPACK_NO_BOOST -DSPDLOG_SHARED_LIB "
      "-DSPDLOG_COMPILED_LIB -DSPDLOG_FMT_EXTERNAL -I" +
      runfile("framework/include") + " " + file + " 2>&1";
  Compiled out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.output.append(buf, n);
  out.status = pclose(pipe);
  return out;
}

void expect_as_announced(const std::string& name) {
  const std::string file = runfile("tests/compile_fail/" + name);
  std::ifstream in(file);
  std::string first;
  std::getline(in, first);
  const std::string marker = "// expect: ";
  ASSERT_EQ(first.rfind(marker, 0), 0u) << file << " does not start with '" << marker << "'";
  const std::string expected = first.substr(marker.size());
  const Compiled c = compile(file);
  ASSERT_NE(c.status, -1) << "could not run the compiler";
  if (expected == "compiles") {
    EXPECT_EQ(c.status, 0) << c.output;
    return;
  }
  EXPECT_NE(c.status, 0) << name << " compiled, but must not";
  EXPECT_NE(c.output.find(expected), std::string::npos)
      << "the error does not say '" << expected << "':\n" << c.output;
}

TEST(CompileFailTest, TheControlCompiles) { expect_as_announced("owning_result_compiles.cc"); }
TEST(CompileFailTest, AStringViewResultIsRefused) { expect_as_announced("string_view_result.cc"); }
TEST(CompileFailTest, APointerResultIsRefused) { expect_as_announced("pointer_result.cc"); }
TEST(CompileFailTest, AnActorMethodReturningAStringViewIsRefused) {
  expect_as_announced("actor_string_view_method.cc");
}
TEST(CompileFailTest, ViewsNestedInContainersAreRefused) {
  expect_as_announced("vector_of_string_view_result.cc");
}
TEST(CompileFailTest, AWritableSpanParameterIsRefused) {
  expect_as_announced("mutable_span_parameter.cc");
}
TEST(CompileFailTest, AnObjectOfAViewIsRefused) { expect_as_announced("object_of_string_view.cc"); }
TEST(CompileFailTest, PuttingAStringLiteralSaysWhatToPass) {
  expect_as_announced("put_string_literal.cc");
}
TEST(CompileFailTest, ParametersTooLargeForAStackAreRefused) {
  expect_as_announced("huge_array_parameter.cc");
}
TEST(CompileFailTest, AResultTooLargeForAStackIsRefused) { expect_as_announced("huge_array_result.cc"); }
TEST(CompileFailTest, AnArrayUnderTheStackLimitCompiles) { expect_as_announced("large_array_compiles.cc"); }
TEST(CompileFailTest, ALambdaWithCapturesIsRefused) { expect_as_announced("lambda_with_captures.cc"); }
TEST(CompileFailTest, AGenericLambdaIsRefused) { expect_as_announced("generic_lambda.cc"); }
TEST(CompileFailTest, RegisteringAnExceptionWithoutAStringConstructorSaysWhatToAdd) {
  expect_as_announced("register_exception_without_string_constructor.cc");
}

}  // namespace
