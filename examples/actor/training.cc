// Parallel model training (the guide's "entrenar modelos en paralelo"): a grid of
// hyper-parameters for a logistic regression, fitted by trainer actors. Each actor
// builds the data set once in its constructor and keeps it: later calls only train.
// The data set is generated from a fixed seed, so the winner is the same on every run;
// the example checks it against a serial fit in the main process.
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

struct DataSet {
  std::vector<std::vector<double>> x;
  std::vector<int> y;
};

// 2,000 samples of 6 features; labels from known weights plus label noise.
DataSet make_data(unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const std::vector<double> truth = {1.5, -2.0, 0.7, 0.0, 0.0, 3.0};
  DataSet d;
  for (int i = 0; i < 2000; ++i) {
    std::vector<double> row;
    double z = 0.2;
    for (double w : truth) {
      row.push_back(normal(rng));
      z += w * row.back();
    }
    d.x.push_back(row);
    d.y.push_back(uniform(rng) < 1.0 / (1.0 + std::exp(-z)) ? 1 : 0);
  }
  return d;
}

// Full-batch gradient descent on the first 1,500 samples; returns the log-loss on the
// last 500.
double fit_and_validate(const DataSet& d, double learning_rate, double l2, int epochs) {
  const std::size_t train = 1500, features = d.x[0].size();
  std::vector<double> w(features, 0.0);
  double bias = 0.0;
  for (int epoch = 0; epoch < epochs; ++epoch) {
    std::vector<double> grad(features, 0.0);
    double grad_bias = 0.0;
    for (std::size_t i = 0; i < train; ++i) {
      double z = bias;
      for (std::size_t j = 0; j < features; ++j) z += w[j] * d.x[i][j];
      const double err = 1.0 / (1.0 + std::exp(-z)) - d.y[i];
      for (std::size_t j = 0; j < features; ++j) grad[j] += err * d.x[i][j];
      grad_bias += err;
    }
    for (std::size_t j = 0; j < features; ++j) w[j] -= learning_rate * (grad[j] / train + l2 * w[j]);
    bias -= learning_rate * grad_bias / train;
  }
  double loss = 0.0;
  for (std::size_t i = train; i < d.x.size(); ++i) {
    double z = bias;
    for (std::size_t j = 0; j < features; ++j) z += w[j] * d.x[i][j];
    const double p = std::clamp(1.0 / (1.0 + std::exp(-z)), 1e-12, 1 - 1e-12);
    loss -= d.y[i] ? std::log(p) : std::log(1 - p);
  }
  return loss / static_cast<double>(d.x.size() - train);
}

// One actor per core: the data set is built once, in the actor's own process.
class Trainer {
 public:
  explicit Trainer(unsigned seed) : data_(make_data(seed)) {}
  double fit(double learning_rate, double l2, int epochs) {
    ++fits_;
    return fit_and_validate(data_, learning_rate, l2, epochs);
  }
  int fits() const { return fits_; }

 private:
  DataSet data_;
  int fits_ = 0;
};
MPX_ACTOR(Trainer, fit, fits);

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

  std::vector<mpx::Actor<Trainer>> trainers;
  for (int i = 0; i < mpx::cpu_count(); ++i) trainers.push_back(mpx::spawn<Trainer>(kSeed));
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
  for (auto& t : trainers) fits += t.call(&Trainer::fits).get();
  std::printf("%zu fits on %zu trainer actors\n", static_cast<std::size_t>(fits), trainers.size());
  std::printf("best: lr=%g l2=%g log-loss %.4f\n", std::get<0>(grid[best]), std::get<1>(grid[best]),
              losses[best].get());

  // The same winner, found serially here, proves the actors computed what they should.
  const auto data = training::make_data(kSeed);
  std::size_t serial_best = 0;
  double serial_loss = 1e300;
  for (std::size_t i = 0; i < grid.size(); ++i) {
    const double loss = training::fit_and_validate(data, std::get<0>(grid[i]), std::get<1>(grid[i]), kEpochs);
    if (loss < serial_loss) {
      serial_loss = loss;
      serial_best = i;
    }
  }
  const bool same = serial_best == best && serial_loss == losses[best].get();
  std::printf("serial check: %s\n", same ? "same winner" : "MISMATCH");
  return same ? 0 : 1;
}
