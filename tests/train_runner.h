// tests/train_runner.h — run vit_train in-process (train_main) with its output captured, and
// read a run's metrics.csv back as numbers. Shared by the training and fine-tuning tests.
#pragma once
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "host/train.h"

namespace vit_test {

struct TrainRun {
  int rc;
  std::string out, err;
};

// train_main with `args` (the program name is added), stdout and stderr captured.
inline TrainRun run_train(std::vector<std::string> args, const vit::TrainHooks* hooks = nullptr) {
  args.insert(args.begin(), "vit_train");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(&a[0]);
  argv.push_back(nullptr);
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  TrainRun r;
  r.rc = vit::train_main((int)args.size(), argv.data(), hooks);
  fflush(stdout);
  r.out = testing::internal::GetCapturedStdout();
  r.err = testing::internal::GetCapturedStderr();
  return r;
}

// The body of a child process that runs vit_train (tests that need a separate process: a real
// signal, several ranks): train_main with the arguments packed in `packed` ('\x1f'-separated),
// then _exit with its status (no gtest teardown in the child).
[[noreturn]] inline void train_child_main(const char* packed) {
  std::vector<std::string> args = {"vit_train"};
  std::stringstream ss(packed);
  for (std::string a; std::getline(ss, a, '\x1f');) args.push_back(a);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(&a[0]);
  argv.push_back(nullptr);
  int rc = vit::train_main((int)args.size(), argv.data());
  fflush(stdout);
  fflush(stderr);
  _exit(rc);
}

// metrics.csv rows as numbers: (epoch, train_loss, train_acc, test_loss, test_acc, lr).
inline std::vector<std::vector<double>> metrics_rows(const std::string& path) {
  std::vector<std::vector<double>> rows;
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);  // header
  while (std::getline(f, line)) {
    std::vector<double> r;
    std::stringstream s(line);
    for (std::string x; std::getline(s, x, ',') && r.size() < 6;) r.push_back(std::stod(x));
    rows.push_back(r);
  }
  return rows;
}

}  // namespace vit_test
