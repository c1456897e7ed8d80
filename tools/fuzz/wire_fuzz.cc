// libFuzzer target: mpx::wire::decode, the header validator every socket reader runs on
// whatever arrives (tools/fuzz/run builds and runs it).
//
// Properties checked on every input:
//   - decode never crashes, reads only inside [data, data + size), and either returns a
//     header or says why not;
//   - an accepted header is within the documented ranges (known type, version checked,
//     name of at most kMaxNameSize bytes pointing into the input);
//   - round trip: encode(decoded) decodes again to the same fields, fits in
//     kMaxHeaderSize, and is canonical (encoding it once more gives the same bytes).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "framework/wire/wire.h"

namespace {

namespace wire = mpx::wire;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "wire_fuzz: property violated: %s\n", what);
  std::abort();
}

bool same_fields(const wire::Header& a, const wire::Header& b) {
  return a.type == b.type && a.call_id == b.call_id && a.start == b.start &&
         a.count == b.count && a.pid == b.pid && a.flags == b.flags && a.name == b.name;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // An exact-size copy, so a read one past the end is an ASan report, not a silent read
  // of libFuzzer's own buffer slack.
  std::unique_ptr<char[]> exact(new char[size]);
  if (size > 0) std::memcpy(exact.get(), data, size);

  std::string why;
  const std::optional<wire::Header> h = wire::decode(exact.get(), size, &why);
  if (!h) {
    if (why.empty()) fail("decode rejected an input without a reason");
    return 0;
  }
  if (size > wire::kMaxHeaderSize) fail("decode accepted an oversized frame");
  const auto type = static_cast<std::uint8_t>(h->type);
  if (type == 0 || type > static_cast<std::uint8_t>(wire::Type::kLastType)) {
    fail("decode accepted an unknown type");
  }
  if (std::strcmp(wire::type_name(h->type), "UNKNOWN") == 0) fail("accepted type has no name");
  if (h->name.size() > wire::kMaxNameSize) fail("decode accepted an overlong name");
  if (!h->name.empty() &&
      (h->name.data() < exact.get() || h->name.data() + h->name.size() > exact.get() + size)) {
    fail("decoded name does not point into the input");
  }

  char buf[wire::kMaxHeaderSize];
  const std::size_t n = wire::encode(*h, buf);
  if (n > wire::kMaxHeaderSize) fail("encode wrote more than kMaxHeaderSize");
  std::unique_ptr<char[]> encoded(new char[n]);
  std::memcpy(encoded.get(), buf, n);
  const std::optional<wire::Header> again = wire::decode(encoded.get(), n, &why);
  if (!again) fail(("re-encoded header does not decode: " + why).c_str());
  if (!same_fields(*h, *again)) fail("round trip changed a field");
  if (wire::encode(*again) != std::string(encoded.get(), n)) fail("encoding is not canonical");
  return 0;
}
