#include "mpx/progress.h"

#include <gtest/gtest.h>

namespace mpx {
namespace detail {
namespace {

TEST(FormatProgress, TerminalBarShowsCountsRateEtaAndFailures) {
  ProgressLine line{"squares", 250, 1000, 2, ""};
  const std::string s = format_progress(line, 2.0, true, 100);
  EXPECT_NE(s.find("squares  25% ["), std::string::npos) << s;
  EXPECT_NE(s.find("250/1000"), std::string::npos) << s;
  EXPECT_NE(s.find("[00:02<00:06, 125/s, 2 failed]"), std::string::npos) << s;
  EXPECT_NE(s.find("##########"), std::string::npos) << s;
  EXPECT_LE(s.size(), 100u) << s;
}

TEST(FormatProgress, FullBarWhenDone) {
  ProgressLine line{"m", 10, 10, 0, ""};
  const std::string s = format_progress(line, 1.0, true, 80);
  EXPECT_NE(s.find("m 100% [" + std::string(40, '#') + "] 10/10"), std::string::npos) << s;
}

TEST(FormatProgress, LogLineWithEta) {
  ProgressLine line{"squares", 500, 1000, 0, ""};
  EXPECT_EQ(format_progress(line, 5.0, false, 0), "squares: 500/1000 (50%) in 5.0 s, 100/s, ETA 5.0 s");
}

TEST(FormatProgress, UnknownTotalHasNoBar) {
  ProgressLine line{"map(read_file)", 7, 0, 1, "3 in flight"};
  EXPECT_EQ(format_progress(line, 1.0, false, 0), "map(read_file): 7 in 1.0 s, 7.0/s, 1 failed, 3 in flight");
  const std::string s = format_progress(line, 1.0, true, 80);
  EXPECT_EQ(s.find('#'), std::string::npos) << s;
}

}  // namespace
}  // namespace detail
}  // namespace mpx
