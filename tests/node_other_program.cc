// Another program for tests/node_test: run as a node agent against a pool of
// node_test, it must be refused (another build-id, other tasks).
#include "mpx/mpx.h"

int other_task(int x) { return x + 1; }
MPX_TASK(other_task);

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  return 0;
}
