// End-to-end check that a user project can depend on mpx: tests/consumer is a
// separate Bazel workspace that declares mpx with local_repository, calls
// mpx_dependencies() and builds a cc_binary on @mpx//framework:mpx, all offline.
//
// The test runs a nested `bazel --batch` in tests/consumer with its own
// --output_user_root (/tmp/mpx-consumer-bazel-<user>): it never talks to the outer
// Bazel server, leaves no server process behind, and keeps its cache between runs.
// Tagged "local" (bazel must write outside the sandbox) and "exclusive".

#include <gtest/gtest.h>

#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

std::string ShellQuote(const std::string& s) {
  std::string quoted = "'";
  for (char c : s) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout (and stderr, if the command redirects it)
};

// Runs `command` with /bin/sh; returns its exit code (128 + signal if killed).
CommandResult RunCommand(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    result.output = "popen failed";
    return result;
  }
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) {
    result.output.append(buffer, n);
  }
  int status = pclose(pipe);
  if (status == -1) {
    result.exit_code = -1;
  } else if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.exit_code = 128 + WTERMSIG(status);
  }
  return result;
}

// The real mpx source tree: tools/deps.bzl is a data runfile, a symlink into it.
std::string RepoRoot() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr || workspace == nullptr) return "";
  const std::string anchor = "/tools/deps.bzl";
  std::string runfile = std::string(srcdir) + "/" + workspace + anchor;
  char* real = realpath(runfile.c_str(), nullptr);
  if (real == nullptr) return "";
  std::string path(real);
  std::free(real);
  if (path.size() <= anchor.size() ||
      path.compare(path.size() - anchor.size(), anchor.size(), anchor) != 0) {
    return "";
  }
  return path.substr(0, path.size() - anchor.size());
}

std::string UserName() {
  if (const passwd* pw = getpwuid(getuid()); pw != nullptr && pw->pw_name[0] != '\0') {
    return pw->pw_name;
  }
  return "uid" + std::to_string(getuid());
}

TEST(ConsumerWorkspaceTest, BuildsAndRunsAgainstMpx) {
  const std::string root = RepoRoot();
  ASSERT_FALSE(root.empty()) << "cannot find the mpx source tree from runfile "
                             << "tools/deps.bzl (TEST_SRCDIR not set or not a symlink?)";
  const std::string consumer = root + "/tests/consumer";
  ASSERT_EQ(access((consumer + "/WORKSPACE").c_str(), R_OK), 0)
      << "no workspace at " << consumer;

  const std::string user = UserName();
  const std::string user_root = "/tmp/mpx-consumer-bazel-" + user;
  // A clean environment: the test's own variables (TEST_TMPDIR above all) change how
  // the bazel client behaves, and ~/.bazelrc must not leak in.
  const std::string env = "env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=" +
                          ShellQuote(user_root + "/home") + " USER=" +
                          ShellQuote(user) + " LANG=C.UTF-8 ";
  const std::string bazel = env + "bazel --batch --nohome_rc --output_user_root=" +
                            ShellQuote(user_root) + " ";
  const std::string in_consumer = "cd " + ShellQuote(consumer) + " && ";
  ASSERT_EQ(RunCommand("mkdir -p " + ShellQuote(user_root + "/home")).exit_code, 0);

  // --symlink_prefix=/ : no bazel-* links in the source tree.
  const auto start = std::chrono::steady_clock::now();
  CommandResult build =
      RunCommand(in_consumer + bazel + "build --symlink_prefix=/ //:consumer 2>&1");
  const double seconds = std::chrono::duration<double>(
                             std::chrono::steady_clock::now() - start).count();
  std::printf("nested bazel build of //:consumer took %.1f s\n", seconds);
  ASSERT_EQ(build.exit_code, 0) << "nested bazel build failed in " << consumer
                                << ":\n" << build.output;

  CommandResult info =
      RunCommand(in_consumer + bazel + "info --symlink_prefix=/ bazel-bin 2>/dev/null");
  ASSERT_EQ(info.exit_code, 0) << "bazel info bazel-bin failed:\n" << info.output;
  std::string bin = info.output;
  while (!bin.empty() && (bin.back() == '\n' || bin.back() == '\r')) bin.pop_back();
  ASSERT_FALSE(bin.empty());

  CommandResult run =
      RunCommand(env + "timeout 120 " + ShellQuote(bin + "/consumer") + " 2>&1");
  EXPECT_EQ(run.exit_code, 0) << "consumer output:\n" << run.output;
  EXPECT_NE(run.output.find("consumer sum 30"), std::string::npos)
      << "consumer output:\n" << run.output;
  EXPECT_NE(run.output.find("consumer actor total 30"), std::string::npos)
      << "consumer output:\n" << run.output;
  EXPECT_NE(run.output.find("consumer pipeline sum -30"), std::string::npos)
      << "consumer output:\n" << run.output;
  // spdlog is compiled into mpx (//third_party:spdlog): a user's own logger still links.
  EXPECT_NE(run.output.find("consumer logs 2.50 through spdlog"), std::string::npos)
      << "consumer output:\n" << run.output;
}

}  // namespace
