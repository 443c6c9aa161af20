// tests/test_simt_programs.cpp — the real program built by `make simt` (build/simt/vit_train: the
// nvcc program's sources compiled by g++ against simt) trains end to end with --device cuda and
// writes the metrics of --device cpu. Unlike tests/test_train_cuda.cu, which calls train_main
// in-process, this runs the binary a user runs: its own main, argument parsing, exit status and
// files. The Makefile builds build/simt/vit_train before build/test_simt (order-only
// prerequisite), so `make test` always has it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/toy_cifar.h"
#include "tests/train_runner.h"

namespace {

// build/simt/vit_train next to this test binary (build/test_simt).
std::string simt_program(const char* name) {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return name;
  std::string self(buf, (size_t)n);
  std::string dir = self.substr(0, self.rfind('/'));
  // build/test_simt -> build/simt/NAME; the sanitizer build (build/asan/test_simt) runs the same
  // program, build/simt/NAME (its Makefile rule builds it first).
  if (dir.size() >= 5 && dir.compare(dir.size() - 5, 5, "/asan") == 0) dir.resize(dir.size() - 5);
  return dir + "/simt/" + name;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Runs `prog args...` with stdout and stderr into files under `dir`; returns the exit status.
int run_program(const std::string& prog, const std::vector<std::string>& args,
                const std::string& dir, const std::string& tag, std::string* output) {
  std::string cmd = "'" + prog + "'";
  for (const std::string& a : args) cmd += " '" + a + "'";
  const std::string out = dir + "/" + tag + ".out";
  cmd += " >'" + out + "' 2>&1";
  int rc = system(cmd.c_str());
  *output = slurp(out);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

}  // namespace

TEST(SimtPrograms, VitTrainCudaPathMatchesCpuReference) {
  const std::string prog = simt_program("vit_train");
  ASSERT_EQ(access(prog.c_str(), X_OK), 0)
      << prog << " is missing: `make build/test_simt` (or `make simt`) builds it";
  vit_test::TempDir d;
  vit_test::make_toy_cifar(d / "data", 40, 16);
  // 40 images, batch 16: 3 steps (the last of 8 images), then the 16 test images. Small enough
  // for the CPU, long enough for dropout, augmentation and Adam to act.
  auto args = [&](const std::string& device) {
    return std::vector<std::string>{"--device", device, "--preset", "tiny", "--data", d / "data",
                                    "--out", d / device, "--epochs", "1", "--batch-size", "16",
                                    "--augment", "crop-flip", "--seed", "5", "--no-tf32"};
  };
  std::string out;
  ASSERT_EQ(run_program(prog, args("cpu"), d.path, "cpu", &out), 0) << out;
  ASSERT_EQ(run_program(prog, args("cuda"), d.path, "cuda", &out), 0) << out;
  auto cpu = vit_test::metrics_rows(d / "cpu/metrics.csv");
  auto gpu = vit_test::metrics_rows(d / "cuda/metrics.csv");
  ASSERT_EQ(cpu.size(), 1u);
  ASSERT_EQ(gpu.size(), 1u);
  ASSERT_EQ(gpu[0].size(), 6u);
  // The tolerances of tests/test_train_cuda.cu (same models, same kind of run): losses to 1e-5
  // relative (float summation orders differ), accuracies to one image, the lr exactly.
  EXPECT_EQ(gpu[0][0], cpu[0][0]);
  EXPECT_NEAR(gpu[0][1], cpu[0][1], 1e-5 * cpu[0][1]) << "train loss";
  EXPECT_NEAR(gpu[0][3], cpu[0][3], 1e-5 * cpu[0][3]) << "test loss";
  EXPECT_NEAR(gpu[0][2], cpu[0][2], 1.0 / 40 + 1e-9) << "train acc";
  EXPECT_NEAR(gpu[0][4], cpu[0][4], 1.0 / 16 + 1e-9) << "test acc";
  EXPECT_DOUBLE_EQ(gpu[0][5], cpu[0][5]);
  // A loss of ~ln(10) after 3 steps: the run really trained on the data (not NaN, not empty).
  EXPECT_GT(cpu[0][1], 1.0);
  EXPECT_LT(cpu[0][1], 4.0);
}

TEST(SimtPrograms, VitTrainBadConfigIsOneLineAndNonZeroExit) {
  const std::string prog = simt_program("vit_train");
  ASSERT_EQ(access(prog.c_str(), X_OK), 0) << prog << " is missing";
  vit_test::TempDir d;
  std::string out;
  EXPECT_EQ(run_program(prog, {"--device", "cuda", "--preset", "tiny", "--hidden", "30", "--heads", "4"},
                        d.path, "bad", &out),
            1);
  EXPECT_EQ(out.rfind("vit_train: error: ", 0), 0u) << out;  // a user error, not an executor abort
  EXPECT_NE(out.find("not divisible by --heads 4"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}
