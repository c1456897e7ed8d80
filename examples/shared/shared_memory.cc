// SharedMemory found by name, and a ShareableList (Python's
// multiprocessing.shared_memory).
//
// Teaches: a block created under a name is attached by name in another process; a
// ShareableList goes to a child as an argument. Unlike Python's, the block needs no
// unlink() and cannot leak into /dev/shm: it lives while the creating process holds a
// handle to it, and is gone with it, however it ends.
//
//   bazel run //examples/shared:shared_memory
#include <unistd.h>

#include <cstdio>
#include <string>

#include "mpx/mpx.h"

// Attaches by name and writes the squares of 0..15 as bytes.
void fill_squares(std::string name) {
  auto block = mpx::SharedMemory::attach(name);
  for (std::size_t i = 0; i < 16; ++i) block.buf()[i] = static_cast<unsigned char>(i * i);
}
MPX_TASK(fill_squares);

void rename_first(mpx::ShareableList<std::string> names) { names.set(0, "ada"); }
MPX_TASK(rename_first);

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  const std::string name = "example-squares-" + std::to_string(getpid());
  auto block = mpx::SharedMemory::create(name, 16);
  mpx::Process writer(fill_squares, name);
  writer.start();
  writer.join();
  int sum = 0;
  for (std::size_t i = 0; i < block.size(); ++i) sum += block.buf()[i];
  std::printf("a child attached by name and wrote 16 squares; their sum: %d\n", sum);

  mpx::ShareableList<std::string> names({"alan", "grace"});
  mpx::Process renamer(rename_first, names);
  renamer.start();
  renamer.join();
  std::printf("names: %s, %s\n", names[0].c_str(), names[1].c_str());
  return 0;
}
