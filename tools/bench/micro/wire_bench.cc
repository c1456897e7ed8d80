// Micro-benchmarks of the wire header (framework/wire/wire.h): encoding the header of
// a SUBMIT, and decoding (with full validation) the header of a RESULT, as the router
// does for every message it forwards.
#include <cstdint>
#include <string>

#include "framework/wire/wire.h"
#include "tools/bench/micro/micro.h"

namespace {

mpx::wire::Header submit() {
  mpx::wire::Header h;
  h.type = mpx::wire::Type::kSubmit;
  h.call_id = 123456;
  h.start = 99000;
  h.count = 1000;
  h.pid = 4242;
  h.flags = mpx::wire::kFlagPure;
  h.name = "square";
  return h;
}

void BM_WireEncode(benchmark::State& state) {
  const mpx::wire::Header h = submit();
  char out[mpx::wire::kMaxHeaderSize];
  for (auto _ : state) {
    benchmark::DoNotOptimize(mpx::wire::encode(h, out));
    benchmark::ClobberMemory();
  }
}
MPX_MICRO(BM_WireEncode);

void BM_WireDecode(benchmark::State& state) {
  mpx::wire::Header h = submit();
  h.type = mpx::wire::Type::kResult;
  const std::string bytes = mpx::wire::encode(h);
  std::string why;
  for (auto _ : state) {
    auto back = mpx::wire::decode(bytes.data(), bytes.size(), &why);
    if (!back) state.SkipWithError(why.c_str());
    benchmark::DoNotOptimize(back);
  }
}
MPX_MICRO(BM_WireDecode);

}  // namespace
