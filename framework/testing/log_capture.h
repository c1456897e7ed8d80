// What mpx::logger() writes while a LogCapture lives, for tests that check what a
// component logged (or that it stayed quiet). Records every level the logger passes.
#ifndef MPX_FRAMEWORK_TESTING_LOG_CAPTURE_H_
#define MPX_FRAMEWORK_TESTING_LOG_CAPTURE_H_

#include <algorithm>
#include <memory>
#include <sstream>
#include <string>

#include <spdlog/sinks/ostream_sink.h>

#include "mpx/runtime.h"

namespace mpx {
namespace testing {

class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(out_)) {
    mpx::logger().sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& sinks = mpx::logger().sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::string text() {
    mpx::logger().flush();
    return out_.str();
  }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

}  // namespace testing
}  // namespace mpx

#endif  // MPX_FRAMEWORK_TESTING_LOG_CAPTURE_H_
