// hostile_user_test's second file: a type named as one in hostile_user_test.cc, each in
// its file's anonymous namespace, with its fields in the other order.
#include <stdexcept>
#include <string>

#include "mpx/mpx.h"

namespace {
struct Item {
  int height = 0;
  int width = 0;
  MSGPACK_DEFINE(width, height);
};
int area_code_b(Item i) { return i.width * 1000 + i.height; }
}  // namespace

int hostile_user_area_b(mpx::Pool& pool, int width, int height) {
  Item item;
  item.width = width;
  item.height = height;
  return pool.apply(area_code_b, item);
}

namespace {
// Named as an exception type of hostile_user_test.cc's anonymous namespace.
struct AppError : std::runtime_error {
  explicit AppError(const std::string& what) : std::runtime_error(what) {}
};
const bool registered = mpx::register_exception<AppError>();
void throw_app_error_b() { throw AppError("from b"); }
}  // namespace

void hostile_user_throw_b(mpx::Pool& pool) { pool.apply(throw_app_error_b); }
