// PoolOptions::metrics: a Prometheus pull endpoint in the driver (prometheus-cpp's
// Exposer). Each scrape asks the pool's router for its status (framework/router/
// status.h) and turns it into metric families: nothing is counted twice, and the pool's
// hot path keeps only the router's plain counters.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include "framework/pool/metrics_hook.h"
#include "framework/router/status.h"
#include "mpx/errors.h"

namespace mpx {
namespace metrics {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

class PoolCollector final : public prometheus::Collectable {
 public:
  explicit PoolCollector(std::function<pid_t()> router_pid) : router_pid_(std::move(router_pid)) {}

  std::vector<MetricFamily> Collect() const override {
    const pid_t pid = router_pid_();
    if (pid <= 0) return {};
    std::string why;
    auto s = router::query_status(router::status_endpoint_name(pid), std::chrono::seconds(2), &why);
    std::vector<MetricFamily> out;
    out.push_back(gauge("mpx_pool_up", "1 while the pool's router answers, 0 otherwise", s ? 1 : 0));
    if (!s) return out;
    out.push_back(counter("mpx_tasks_submitted_total", "Items submitted to the pool", s->submitted_items));
    out.push_back(counter("mpx_tasks_completed_total", "Items whose results came back (values or task errors)",
                          s->completed_items));
    out.push_back(counter("mpx_tasks_lost_total",
                          "Items failed with WorkerLost or TimeoutError (their worker died or was killed)",
                          s->lost_items));
    out.push_back(counter("mpx_chunks_failed_total", "Result chunks carrying at least one task error (RemoteError)",
                          s->error_chunks));
    out.push_back(counter("mpx_chunks_retried_total", "Chunks run again after their worker died", s->retried_chunks));
    out.push_back(counter("mpx_chunks_taken_back_total",
                          "Chunks taken back from a worker held up by a long chunk, for an idle one",
                          s->taken_back_chunks));
    out.push_back(counter("mpx_worker_restarts_total", "Workers replaced after a death", s->worker_restarts));
    MetricFamily deaths{"mpx_worker_deaths_total",
                        "Worker deaths by cause (signal, exit, timeout, stopped, heartbeat, startup)",
                        MetricType::Counter, {}};
    for (const auto& [cause, n] : s->worker_deaths) {
      ClientMetric m;
      m.label.push_back({"cause", cause});
      m.counter.value = static_cast<double>(n);
      deaths.metric.push_back(std::move(m));
    }
    out.push_back(std::move(deaths));
    out.push_back(gauge("mpx_queued_chunks", "Chunks waiting in the router's queue", s->queued_chunks));
    out.push_back(gauge("mpx_in_flight_chunks", "Chunks held by workers (running or prefetched)",
                        s->in_flight_chunks));
    out.push_back(gauge("mpx_workers", "Live worker processes", s->workers.size()));
    out.push_back(gauge("mpx_worker_memory_limit_bytes", "RLIMIT_AS of each worker, 0 for none",
                        s->worker_memory_limit));
    MetricFamily bytes{"mpx_bytes_total", "Payload bytes through the router: in (arguments), out (results)",
                       MetricType::Counter, {}};
    for (const auto& [direction, n] : {std::pair<const char*, std::uint64_t>{"in", s->bytes_in},
                                       std::pair<const char*, std::uint64_t>{"out", s->bytes_out}}) {
      ClientMetric m;
      m.label.push_back({"direction", direction});
      m.counter.value = static_cast<double>(n);
      bytes.metric.push_back(std::move(m));
    }
    out.push_back(std::move(bytes));
    MetricFamily latency{"mpx_chunk_seconds", "Time a worker spent on a chunk, start to result",
                         MetricType::Histogram, {}};
    {
      ClientMetric m;
      m.histogram.sample_count = s->latency_count;
      m.histogram.sample_sum = s->latency_sum_s;
      const auto& bounds = router::latency_bounds();
      for (std::size_t b = 0; b < bounds.size() && b < s->latency_buckets.size(); ++b) {
        m.histogram.bucket.push_back({s->latency_buckets[b], bounds[b]});
      }
      m.histogram.bucket.push_back({s->latency_count, std::numeric_limits<double>::infinity()});
      latency.metric.push_back(std::move(m));
    }
    out.push_back(std::move(latency));
    MetricFamily rss{"mpx_worker_resident_bytes", "Resident memory of each worker", MetricType::Gauge, {}};
    for (const auto& w : s->workers) {
      if (!w.host.empty()) continue;  // a node agent's: its memory is not read from this host
      ClientMetric m;
      m.label.push_back({"worker", w.name});
      m.label.push_back({"pid", std::to_string(w.pid)});
      m.gauge.value = static_cast<double>(w.rss_bytes);
      rss.metric.push_back(std::move(m));
    }
    out.push_back(std::move(rss));
    return out;
  }

 private:
  static MetricFamily counter(const char* name, const char* help, double value) {
    ClientMetric m;
    m.counter.value = value;
    return MetricFamily{name, help, MetricType::Counter, {m}};
  }
  static MetricFamily gauge(const char* name, const char* help, double value) {
    ClientMetric m;
    m.gauge.value = value;
    return MetricFamily{name, help, MetricType::Gauge, {m}};
  }
  std::function<pid_t()> router_pid_;
};

struct Server {
  std::shared_ptr<PoolCollector> collector;  // the exposer holds it weakly
  std::unique_ptr<prometheus::Exposer> exposer;
};

std::shared_ptr<void> start(const std::string& address, std::function<pid_t()> router_pid) {
  auto server = std::make_shared<Server>();
  server->collector = std::make_shared<PoolCollector>(std::move(router_pid));
  try {
    server->exposer = std::make_unique<prometheus::Exposer>(address, 1);
  } catch (const std::exception& e) {
    throw Error("PoolOptions::metrics: cannot serve metrics at '" + address + "' (" + e.what() +
                "); give a free host:port, e.g. \"127.0.0.1:9464\"");
  }
  server->exposer->RegisterCollectable(server->collector, "/metrics");
  return server;
}

const bool registered = [] {
  detail::metrics_starter() = &start;
  return true;
}();

}  // namespace
}  // namespace metrics
}  // namespace mpx
