// Parallel model training (the guide's "entrenar modelos en paralelo"): a grid of
// hyper-parameters for a logistic regression, fitted by trainer actors on one data set.
// The data set is loaded once, in the main process, and put() into a read-only shared
// object: every trainer maps the same pages (mpx::Span views), nothing is copied to
// them, however large it is. The data set is generated from a fixed seed, so the winner
// is the same on every run; the example checks it against a serial fit in the main
// process.
//
//   bazel run //examples/actor:training
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <tuple>
#include <vector>

#include "mpx/mpx.h"

namespace training {

// Samples in rows of kFeatures values (row-major), and a 0/1 label per sample.
constexpr std::size_t kFeatures = 6;
struct DataSet {
  std::vector<double> x;
  std::vector<int> y;
};

// 2,000 samples; labels from known weights plus label noise.
DataSet make_data(unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const std::vector<double> truth = {1.5, -2.0, 0.7, 0.0, 0.0, 3.0};
  DataSet d;
  for (int i = 0; i < 2000; ++i) {
    double z = 0.2;
    for (double w : truth) {
      d.x.push_back(normal(rng));
      z += w * d.x.back();
    }
    d.y.push_back(uniform(rng) < 1.0 / (1.0 + std::exp(-z)) ? 1 : 0);
  }
  return d;
}

// Full-batch gradient descent on the first 1,500 samples; returns the log-loss on the
// rest. Reads the data through views: a shared object's pages, or a local vector's.
double fit_and_validate(mpx::Span<const double> x, mpx::Span<const int> y, double learning_rate,
                        double l2, int epochs) {
  const std::size_t train = 1500, samples = y.size();
  std::vector<double> w(kFeatures, 0.0);
  double bias = 0.0;
  auto score = [&](std::size_t i) {
    double z = bias;
    for (std::size_t j = 0; j < kFeatures; ++j) z += w[j] * x[i * kFeatures + j];
    return z;
  };
  for (int epoch = 0; epoch < epochs; ++epoch) {
    std::vector<double> grad(kFeatures, 0.0);
    double grad_bias = 0.0;
    for (std::size_t i = 0; i < train; ++i) {
      const double err = 1.0 / (1.0 + std::exp(-score(i))) - y[i];
      for (std::size_t j = 0; j < kFeatures; ++j) grad[j] += err * x[i * kFeatures + j];
      grad_bias += err;
    }
    for (std::size_t j = 0; j < kFeatures; ++j) w[j] -= learning_rate * (grad[j] / train + l2 * w[j]);
    bias -= learning_rate * grad_bias / train;
  }
  double loss = 0.0;
  for (std::size_t i = train; i < samples; ++i) {
    const double p = std::clamp(1.0 / (1.0 + std::exp(-score(i))), 1e-12, 1 - 1e-12);
    loss -= y[i] ? std::log(p) : std::log(1 - p);
  }
  return loss / static_cast<double>(samples - train);
}

// One actor per core. It keeps views of the shared data set: the object stays mapped
// (and alive) while a trainer holds them, even if the main process let go of it.
class Trainer {
 public:
  Trainer(mpx::Span<const double> x, mpx::Span<const int> y) : x_(x), y_(y) {}
  double fit(double learning_rate, double l2, int epochs) {
    ++fits_;
    return fit_and_validate(x_, y_, learning_rate, l2, epochs);
  }
  int fits() const { return fits_; }
  // Whether the data is the shared object's pages rather than a copy.
  bool maps_shared_data() const { return x_.in_object() && y_.in_object(); }

 private:
  mpx::Span<const double> x_;
  mpx::Span<const int> y_;
  int fits_ = 0;
};
MPX_ACTOR(Trainer, fit, fits, maps_shared_data);

}  // namespace training

int main(int argc, char** argv) {
  mpx::init(argc, argv);
  using training::Trainer;
  constexpr unsigned kSeed = 20261125;
  constexpr int kEpochs = 150;
  std::vector<std::tuple<double, double>> grid;
  for (double lr : {0.05, 0.2, 0.8, 2.0}) {
    for (double l2 : {0.0, 0.01, 0.1}) grid.emplace_back(lr, l2);
  }

  // Loaded once; each put() copies it once into a sealed, read-only shared object.
  const training::DataSet data = training::make_data(kSeed);
  const mpx::ObjectRef<std::vector<double>> x = mpx::put(data.x);
  const mpx::ObjectRef<std::vector<int>> y = mpx::put(data.y);
  std::vector<mpx::Actor<Trainer>> trainers;  // each gets two handles, not the data
  for (int i = 0; i < mpx::cpu_count(); ++i) trainers.push_back(mpx::spawn<Trainer>(x, y));
  // Every configuration is sent at once (round robin); each trainer runs its share in
  // order while the others run theirs.
  std::vector<mpx::Future<double>> losses;
  for (std::size_t i = 0; i < grid.size(); ++i) {
    const auto [lr, l2] = grid[i];
    losses.push_back(trainers[i % trainers.size()].call(&Trainer::fit, lr, l2, kEpochs));
  }
  std::size_t best = 0;
  for (std::size_t i = 0; i < grid.size(); ++i) {
    const double loss = losses[i].get();
    std::printf("lr=%-5g l2=%-5g validation log-loss %.4f\n", std::get<0>(grid[i]),
                std::get<1>(grid[i]), loss);
    if (loss < losses[best].get()) best = i;
  }
  int fits = 0;
  bool shared = true;
  for (auto& t : trainers) {
    fits += t.call(&Trainer::fits).get();
    shared = shared && t.call(&Trainer::maps_shared_data).get();
  }
  std::printf("%zu fits on %zu trainer actors, %s\n", static_cast<std::size_t>(fits),
              trainers.size(), shared ? "all mapping one shared data set" : "SOME WITH COPIES");
  std::printf("best: lr=%g l2=%g log-loss %.4f\n", std::get<0>(grid[best]), std::get<1>(grid[best]),
              losses[best].get());

  // The same winner, found serially here, proves the actors computed what they should.
  std::size_t serial_best = 0;
  double serial_loss = 1e300;
  for (std::size_t i = 0; i < grid.size(); ++i) {
    const double loss = training::fit_and_validate(data.x, data.y, std::get<0>(grid[i]),
                                                   std::get<1>(grid[i]), kEpochs);
    if (loss < serial_loss) {
      serial_loss = loss;
      serial_best = i;
    }
  }
  const bool same = serial_best == best && serial_loss == losses[best].get();
  std::printf("serial check: %s\n", same ? "same winner" : "MISMATCH");
  return same && shared ? 0 : 1;
}
