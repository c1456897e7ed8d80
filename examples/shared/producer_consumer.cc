// A producer/consumer pipeline over mpx::Queue: one process produces jobs, three
// consumer processes work on them, and the parent collects the results.
//
// Teaches: Queue<T> is Python's multiprocessing.Queue for any msgpack-serializable T,
// bounded (put waits while it is full, so a fast producer cannot run away), shared by
// passing it to each process. A sentinel per consumer ends the pipeline, and
// get(timeout) returns std::nullopt instead of waiting forever.
//
//   bazel run //examples/shared:producer_consumer
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "mpx/mpx.h"

struct Job {
  int id;
  std::string text;
  MSGPACK_DEFINE(id, text);
};

struct Result {
  int id;
  int length;
  MSGPACK_DEFINE(id, length);
};

constexpr int kJobs = 100;
constexpr int kConsumers = 3;

void produce(mpx::Queue<Job> jobs) {
  for (int i = 0; i < kJobs; ++i) jobs.put(Job{i, std::string(static_cast<std::size_t>(i), 'x')});
  for (int i = 0; i < kConsumers; ++i) jobs.put(Job{-1, ""});  // one stop sign each
}
MPX_TASK(produce);

void consume(mpx::Queue<Job> jobs, mpx::Queue<Result> results) {
  for (Job job = jobs.get(); job.id >= 0; job = jobs.get()) {
    results.put(Result{job.id, static_cast<int>(job.text.size())});
  }
}
MPX_TASK(consume);

int main(int argc, char** argv) {
  mpx::init(argc, argv);

  mpx::Queue<Job> jobs(/*maxsize=*/8);
  mpx::Queue<Result> results;
  mpx::Process producer(produce, jobs);
  std::vector<mpx::Process> consumers;
  for (int i = 0; i < kConsumers; ++i) consumers.emplace_back(consume, jobs, results);
  producer.start();
  for (auto& c : consumers) c.start();

  long total_length = 0;
  int received = 0;
  while (received < kJobs) {
    std::optional<Result> r = results.get(std::chrono::seconds(30));
    if (!r) break;  // nothing for 30 s: a consumer must have died
    total_length += r->length;
    ++received;
  }
  producer.join();
  for (auto& c : consumers) c.join();
  std::printf("results: %d, total length: %ld\n", received, total_length);
  std::printf("queue empty afterwards: %s\n", results.get(std::chrono::milliseconds(10)) ? "no" : "yes");
  return 0;
}
