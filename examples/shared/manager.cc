// A Manager's dict and list shared by a Pool's tasks (Python's multiprocessing.Manager).
//
// Teaches: manager.dict() and manager.list() return proxies that go to pool tasks (and
// Processes, and actors) like any other argument; every operation is one round trip
// to the manager's server process, and atomic there. Each task counts the words of
// one text, stores the count under the text's name and appends the name to a list.
//
//   bazel run //examples/shared:manager
#include <cstdio>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "mpx/mpx.h"

int count_words(mpx::DictProxy<std::string, int> counts, mpx::ListProxy<std::string> done,
                std::string name, std::string text) {
  std::istringstream in(text);
  int words = 0;
  for (std::string w; in >> w;) ++words;
  counts.set(name, words);
  done.append(name);
  return words;
}
MPX_TASK(count_words);

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  mpx::Manager manager;  // a server process of its own
  auto counts = manager.dict<std::string, int>();
  auto done = manager.list<std::string>();
  auto ns = manager.Namespace();
  ns.set("corpus", std::string("three short texts"));

  std::vector<std::tuple<mpx::DictProxy<std::string, int>, mpx::ListProxy<std::string>,
                         std::string, std::string>> jobs = {
      {counts, done, "a", "the quick brown fox"},
      {counts, done, "b", "jumps over"},
      {counts, done, "c", "the lazy dog and the cat"},
  };
  mpx::Pool pool(2);
  pool.starmap(count_words, jobs);

  for (const auto& [name, words] : counts.copy()) std::printf("%s: %d words\n", name.c_str(), words);
  std::printf("texts done: %zu (%s)\n", done.size(), ns.get<std::string>("corpus").c_str());
  return 0;
}
