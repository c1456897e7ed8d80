// Word count over a directory of text files (the guide's "procesar muchos archivos en
// paralelo"), as a pipeline: read each file, split it into words, normalise each word,
// and fold the counts in this process. Each stage runs in worker processes of its own,
// at the same time as the others; bounded buffers between them keep memory flat.
//
//   bazel run //examples/pipeline:word_count              # generates 24 files first
//   bazel run //examples/pipeline:word_count -- /some/dir  # counts the .txt files there
//
// The generated files come from a fixed seed, so the counts are the same on every run;
// the example checks them against a serial count made in this process.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mpx/mpx.h"

namespace words {

std::string read_file(std::string path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Words are runs of letters and apostrophes; everything else separates them.
std::vector<std::string> split_words(std::string text) {
  std::vector<std::string> out;
  std::string word;
  for (char c : text) {
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '\'') {
      word += c;
    } else if (!word.empty()) {
      out.push_back(std::move(word));
      word.clear();
    }
  }
  if (!word.empty()) out.push_back(std::move(word));
  return out;
}

// Lower case, without leading or trailing apostrophes.
std::string normalise(std::string word) {
  for (char& c : word) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const auto first = word.find_first_not_of('\'');
  if (first == std::string::npos) return {};
  return word.substr(first, word.find_last_not_of('\'') - first + 1);
}

MPX_TASK(read_file);
MPX_TASK(split_words);
MPX_TASK(normalise);

using Counts = std::map<std::string, std::int64_t>;

void count(Counts& counts, const std::string& word) {
  if (!word.empty()) ++counts[word];
}

// 24 files of 4,000 words from a 40-word vocabulary, the first words far more common
// (the smaller of two uniform picks), in mixed case and with punctuation.
std::vector<std::string> generate(const std::string& dir) {
  static const char* kVocabulary[] = {
      "the",   "of",     "and",    "process", "pool",   "worker", "queue",  "lock",
      "value", "array",  "pipe",   "task",    "result", "map",    "item",   "chunk",
      "core",  "memory", "signal", "router",  "socket", "actor",  "stage",  "buffer",
      "error", "retry",  "timeout", "python", "thread", "fork",   "spawn",  "join",
      "crash", "heartbeat", "shared", "atomic", "barrier", "event", "don't", "cpu"};
  constexpr std::uint32_t kWords = sizeof kVocabulary / sizeof kVocabulary[0];
  std::uint64_t state = 42;
  auto next = [&state] {  // xorshift64*: the same sequence on every platform
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return static_cast<std::uint32_t>((state * 2685821657736338717ull) >> 32);
  };
  std::vector<std::string> paths;
  for (int f = 0; f < 24; ++f) {
    char name[32];
    std::snprintf(name, sizeof name, "/part-%02d.txt", f);
    paths.push_back(dir + name);
    std::ofstream out(paths.back());
    for (int w = 0; w < 4000; ++w) {
      std::string word = kVocabulary[std::min(next() % kWords, next() % kWords)];
      switch (next() % 8) {
        case 0: word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0]))); break;
        case 1: for (char& c : word) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c))); break;
        default: break;
      }
      out << word << (next() % 10 == 0 ? ". " : next() % 15 == 0 ? ",\n" : " ");
    }
  }
  return paths;
}

std::vector<std::string> text_files(const std::string& dir) {
  std::vector<std::string> paths;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      if (name.size() > 4 && name.compare(name.size() - 4, 4, ".txt") == 0) paths.push_back(dir + "/" + name);
    }
    closedir(d);
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

}  // namespace words

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  using namespace words;
  std::string dir;
  bool generated = false;
  std::vector<std::string> paths;
  if (argc > 1) {
    dir = argv[1];
    paths = text_files(dir);
  } else {
    char tmpl[] = "/tmp/mpx-word-count-XXXXXX";
    if (!mkdtemp(tmpl)) {
      std::perror("mkdtemp");
      return 1;
    }
    dir = tmpl;
    generated = true;
    paths = generate(dir);
  }

  const auto t0 = std::chrono::steady_clock::now();
  const Counts counts = mpx::Pipeline::from(paths)
                            .map(read_file, /*workers=*/2)
                            .flat_map(split_words, 2)
                            .map(normalise, 2)
                            .reduce(count, Counts{});
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - t0).count();

  std::int64_t total = 0;
  std::vector<std::pair<std::int64_t, std::string>> by_count;
  for (const auto& [word, n] : counts) {
    total += n;
    by_count.emplace_back(-n, word);
  }
  std::sort(by_count.begin(), by_count.end());
  std::printf("%zu files, %lld words, %zu distinct\n", paths.size(), static_cast<long long>(total),
              counts.size());
  for (std::size_t i = 0; i < 3 && i < by_count.size(); ++i) {
    std::printf("%zu. %s %lld\n", i + 1, by_count[i].second.c_str(),
                static_cast<long long>(-by_count[i].first));
  }
  std::fprintf(stderr, "counted in %lld ms by a 3-stage pipeline of 2 workers each\n",
               static_cast<long long>(ms));

  Counts serial;
  for (const auto& path : paths) {
    for (const auto& w : split_words(read_file(path))) count(serial, normalise(w));
  }
  std::printf("serial check: %s\n", serial == counts ? "same counts" : "DIFFERENT COUNTS");

  if (generated) {
    for (const auto& p : paths) unlink(p.c_str());
    rmdir(dir.c_str());
  }
  return serial == counts ? 0 : 1;
}
