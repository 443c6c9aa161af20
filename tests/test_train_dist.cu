// tests/test_train_dist.cu — data-parallel vit_train (host/dist.cu, simt's NCCL between real
// processes): W ranks with global batch B train exactly what one rank does with W micro-batches
// of B/W; resuming across rank counts continues exactly; a killed rank stops the others with
// one clear line; bad combinations of flags are refused before anything starts.
//
// The ranks are this test binary run again (/proc/self/exe --gtest_filter=TrainDist.Rank), which
// calls train_main with the arguments in VIT_TRAIN_CHILD_ARGS. simt only: on a GPU machine
// `make gpu-check` runs the real binary with --gpus N when it has N GPUs.
#if defined(VIT_SIMT)
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <sstream>
#include <thread>

#include "common/rendezvous.h"
#include "common/train_state.h"
#include "host/train.h"
#include "tests/toy_cifar.h"
#include "tests/train_runner.h"

extern char** environ;

namespace {

std::string pack(const std::vector<std::string>& args) {
  std::string p;
  for (const std::string& a : args) p += (p.empty() ? "" : "\x1f") + a;
  return p;
}

// --gpus N from an in-process train_main starts the ranks as children of this test binary.
vit::TrainHooks rank_hooks() {
  vit::TrainHooks h;
  h.rank_command = [](const std::vector<std::string>& args) {
    vit::RankCommand c;
    c.argv = {"/proc/self/exe", "--gtest_filter=TrainDist.Rank"};
    c.env = {"VIT_TRAIN_CHILD_ARGS=" + pack(std::vector<std::string>(args.begin() + 1, args.end()))};
    return c;
  };
  return h;
}

std::vector<std::string> base(const vit_test::TempDir& d, const std::string& out,
                              std::vector<std::string> extra) {
  std::vector<std::string> a = {
      "--device", "cuda", "--preset", "tiny", "--data", d / "data", "--out", d / out,
      "--epochs", "2", "--batch-size", "16", "--lr", "2e-3", "--augment", "crop-flip",
      "--optimizer", "adamw", "--weight-decay", "0.05", "--clip-grad", "1",
      "--label-smoothing", "0.1", "--seed", "3", "--no-tf32", "--log-every", "1"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// The first six columns of metrics.csv (epoch, losses, accuracies, lr) must be the same bits.
void expect_same_run(const std::string& a_dir, const std::string& b_dir, double rtol = 0) {
  auto a = vit_test::metrics_rows(a_dir + "/metrics.csv"), b = vit_test::metrics_rows(b_dir + "/metrics.csv");
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  for (size_t e = 0; e < a.size(); ++e)
    for (size_t k = 0; k < 6; ++k) {
      if (rtol == 0) EXPECT_EQ(b[e][k], a[e][k]) << "epoch " << e + 1 << " column " << k;
      else EXPECT_NEAR(b[e][k], a[e][k], rtol * std::fabs(a[e][k])) << "epoch " << e + 1 << " column " << k;
    }
  vit::TrainingCheckpoint x = vit::load_training_checkpoint(a_dir + "/last.safetensors", {});
  vit::TrainingCheckpoint y = vit::load_training_checkpoint(b_dir + "/last.safetensors", {});
  EXPECT_EQ(y.state.step, x.state.step);
  EXPECT_EQ(y.state.micro_step, x.state.micro_step);
  ASSERT_EQ(x.params.size(), y.params.size());
  size_t differ = 0;
  double worst = 0;
  for (size_t i = 0; i < x.params.size(); ++i) {
    double dlt = std::fabs((double)x.params[i] - y.params[i]);
    if (rtol == 0 ? dlt != 0 : dlt > 1e-6 + rtol * std::fabs(x.params[i])) ++differ;
    worst = std::max(worst, dlt);
  }
  EXPECT_EQ(differ, 0u) << "parameters differ (worst " << worst << ")";
  if (rtol == 0) {
    EXPECT_EQ(0, memcmp(x.adam_m.data(), y.adam_m.data(), x.adam_m.size() * 4)) << "Adam m";
    EXPECT_EQ(0, memcmp(x.adam_v.data(), y.adam_v.data(), x.adam_v.size() * 4)) << "Adam v";
  }
}

}  // namespace

TEST(TrainDist, Rank) {
  const char* packed = getenv("VIT_TRAIN_CHILD_ARGS");
  if (!packed || !getenv("WORLD_SIZE")) GTEST_SKIP() << "a rank process of the TrainDist tests";
  vit_test::train_child_main(packed);
}

TEST(TrainDist, TwoRanksTrainExactlyWhatOneRankWithTwoMicroBatchesDoes) {
  vit_test::TempDir d;
  vit_test::make_toy_cifar(d / "data", 40, 16);
  // 40 images, batch 16: 3 steps per epoch, the last of 8 images — one micro-batch, so rank 1
  // has nothing to do in it and contributes zero gradients.
  vit_test::TrainRun one = vit_test::run_train(base(d, "one", {"--accum-steps", "2"}));
  ASSERT_EQ(one.rc, 0) << one.err;
  vit::TrainHooks h = rank_hooks();
  vit_test::TrainRun two = vit_test::run_train(base(d, "two", {"--gpus", "2"}), &h);
  ASSERT_EQ(two.rc, 0) << two.out << two.err;
  EXPECT_NE(two.out.find("x 2 ranks"), std::string::npos) << two.out;
  EXPECT_NE(two.out.find("2 micro-batches of 8, 1 per rank"), std::string::npos) << two.out;
  // A sum of two floats does not depend on the order: every bit agrees.
  expect_same_run(d / "one", d / "two");
}

TEST(TrainDist, ThreeRanksMatchThreeMicroBatches) {
  vit_test::TempDir d;
  vit_test::make_toy_cifar(d / "data", 40, 16);
  auto args = [&](const std::string& out, std::vector<std::string> x) {
    std::vector<std::string> a = base(d, out, x);
    for (size_t i = 0; i + 1 < a.size(); ++i)
      if (a[i] == "--batch-size") a[i + 1] = "24";
    return a;
  };
  vit_test::TrainRun one = vit_test::run_train(args("one", {"--accum-steps", "3"}));
  ASSERT_EQ(one.rc, 0) << one.err;
  vit::TrainHooks h = rank_hooks();
  vit_test::TrainRun three = vit_test::run_train(args("three", {"--gpus", "3"}), &h);
  ASSERT_EQ(three.rc, 0) << three.err;
  // NCCL may add three ranks' gradients in any association, so the promise is a tolerance:
  // relative 1e-6 after 4 steps (simt's NCCL sums in rank order, which happens to be the
  // accumulation order, and agrees bitwise).
  expect_same_run(d / "one", d / "three", 1e-6);
}

TEST(TrainDist, ResumeAcrossRankCountsContinuesExactly) {
  vit_test::TempDir d;
  vit_test::make_toy_cifar(d / "data", 40, 16);
  vit::TrainHooks h = rank_hooks();
  vit_test::TrainRun full = vit_test::run_train(base(d, "full", {"--gpus", "2"}), &h);
  ASSERT_EQ(full.rc, 0) << full.err;
  // 2 ranks for 4 steps (into epoch 2), then 1 rank: --accum-steps 2 follows from the checkpoint
  // (--max-steps is saved with the run: 0 lifts it).
  vit_test::TrainRun a = vit_test::run_train(base(d, "down", {"--gpus", "2", "--max-steps", "4"}), &h);
  ASSERT_EQ(a.rc, 0) << a.err;
  vit_test::TrainRun a2 = vit_test::run_train(
      {"--device", "cuda", "--data", d / "data", "--resume", d / "down/last.safetensors", "--max-steps", "0"});
  ASSERT_EQ(a2.rc, 0) << a2.err;
  expect_same_run(d / "full", d / "down");
  // And back: 1 rank with 2 micro-batches for 2 steps, then 2 ranks.
  vit_test::TrainRun b = vit_test::run_train(base(d, "up", {"--accum-steps", "2", "--max-steps", "2"}));
  ASSERT_EQ(b.rc, 0) << b.err;
  vit_test::TrainRun b2 = vit_test::run_train(
      {"--device", "cuda", "--data", d / "data", "--resume", d / "up/last.safetensors", "--gpus", "2",
       "--max-steps", "0"}, &h);
  ASSERT_EQ(b2.rc, 0) << b2.err;
  expect_same_run(d / "full", d / "up");
  // Three ranks cannot split a checkpoint's two micro-batches.
  vit_test::TrainRun c = vit_test::run_train(
      {"--device", "cuda", "--data", d / "data", "--resume", d / "up/last.safetensors", "--gpus", "3"}, &h);
  EXPECT_EQ(c.rc, 1);
  EXPECT_NE(c.err.find("the checkpoint takes 2 micro-batch(es) per step"), std::string::npos) << c.err;
}

TEST(TrainDist, AKilledRankStopsTheOthersWithOneLine) {
  vit_test::TempDir d;
  vit_test::make_toy_cifar(d / "data", 200, 16);
  const int port = vit::free_local_port();
  std::vector<std::string> args = base(d, "run", {"--epochs", "50", "--dist-timeout", "20"});
  std::string self = "/proc/self/exe", filter = "--gtest_filter=TrainDist.Rank";
  pid_t pid[2];
  int out0[2], err0[2];
  ASSERT_EQ(pipe(out0), 0);
  ASSERT_EQ(pipe(err0), 0);
  for (int r = 0; r < 2; ++r) {
    std::vector<std::string> env_s = {"VIT_TRAIN_CHILD_ARGS=" + pack(args), "RANK=" + std::to_string(r),
                                      "LOCAL_RANK=" + std::to_string(r), "WORLD_SIZE=2",
                                      "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + std::to_string(port)};
    for (char** e = environ; *e; ++e)
      if (!strchr("RLWMV", (*e)[0])) env_s.push_back(*e);  // not RANK, LOCAL_RANK, WORLD_SIZE, MASTER_*, VIT_*
    std::vector<char*> envp;
    for (std::string& e : env_s) envp.push_back(&e[0]);
    envp.push_back(nullptr);
    char* argv[] = {&self[0], &filter[0], nullptr};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (r == 0) {
      posix_spawn_file_actions_adddup2(&fa, out0[1], 1);
      posix_spawn_file_actions_adddup2(&fa, err0[1], 2);
    }
    posix_spawn_file_actions_addclose(&fa, out0[0]);
    posix_spawn_file_actions_addclose(&fa, err0[0]);
    ASSERT_EQ(posix_spawn(&pid[r], self.c_str(), &fa, nullptr, argv, envp.data()), 0);
    posix_spawn_file_actions_destroy(&fa);
  }
  close(out0[1]);
  close(err0[1]);
  FILE* out = fdopen(out0[0], "r");
  std::string log;
  char line[1024];
  bool killed = false;
  while (fgets(line, sizeof line, out)) {
    log += line;
    if (!killed && strstr(line, " step 2/")) {
      kill(pid[1], SIGKILL);
      killed = true;
      break;
    }
  }
  ASSERT_TRUE(killed) << log;
  int st1 = 0;
  waitpid(pid[1], &st1, 0);  // reaped: rank 0 must notice the exit by itself
  auto t0 = std::chrono::steady_clock::now();
  int st0 = 0;
  pid_t got = 0;
  while ((got = waitpid(pid[0], &st0, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (got == 0) {
    kill(pid[0], SIGKILL);
    waitpid(pid[0], &st0, 0);
    FAIL() << "rank 0 still running 60 s after rank 1 was killed";
  }
  std::string err;
  FILE* ef = fdopen(err0[0], "r");
  while (fgets(line, sizeof line, ef)) err += line;
  fclose(ef);
  fclose(out);
  ASSERT_TRUE(WIFEXITED(st0)) << err;
  EXPECT_EQ(WEXITSTATUS(st0), 1) << err;
  // Found by the gradient or the metrics all-reduce, whichever runs first after the kill.
  EXPECT_NE(err.find("vit_train: error: NCCL: ncclAllReduce"), std::string::npos) << err;
  EXPECT_NE(err.find("failed on rank 0"), std::string::npos) << err;
  EXPECT_NE(err.find("rank 1 (pid"), std::string::npos) << err;
}

TEST(TrainDist, RefusedCombinations) {
  vit_test::TempDir d;
  vit_test::make_toy_cifar(d / "data", 40, 16);
  vit::TrainHooks h = rank_hooks();
  auto err_of = [&](std::vector<std::string> extra) {
    vit_test::TrainRun r = vit_test::run_train(base(d, "x", extra), &h);
    EXPECT_EQ(r.rc, 1) << r.out;
    return r.err;
  };
  EXPECT_NE(err_of({"--gpus", "2", "--device", "cpu"}).find("need --device cuda"), std::string::npos);
  EXPECT_NE(err_of({"--gpus", "3"}).find("--batch-size 16 cannot be split into 3 rank(s) x 1"),
            std::string::npos);
  EXPECT_NE(err_of({"--gpus", "0"}).find("--gpus must be in 1..4096"), std::string::npos);
  setenv("WORLD_SIZE", "2", 1);
  setenv("RANK", "5", 1);
  EXPECT_NE(err_of({}).find("RANK=5 is not in 0..1"), std::string::npos);
  setenv("RANK", "0", 1);
  EXPECT_NE(err_of({"--gpus", "3"}).find("--gpus 3 but WORLD_SIZE=2"), std::string::npos);
  unsetenv("WORLD_SIZE");
  unsetenv("RANK");
}
#endif  // VIT_SIMT
