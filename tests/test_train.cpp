// tests/test_train.cpp — vit_train end to end, in-process (train_main), on a generated dataset
// in the CIFAR-10 format with the tiny preset and the CPU reference model:
//   * it learns: test accuracy well above chance after a few epochs; every output is written;
//   * resume is exact: 2 epochs straight == 1 epoch + --resume + 1 epoch (metrics rows equal
//     except the time columns), also when stopped mid-epoch under a cosine schedule;
//   * SIGINT / SIGTERM finish the step, save last.safetensors and return 130 / 143, and the
//     resumed run again equals the straight one;
//   * NaN loss stops with the step and keeps the last good checkpoint;
//   * every bad input is one line on stderr, a non-zero status, and no damage to an existing
//     checkpoint.
// Plus the pieces with hand-computed values: the learning-rate schedule, option parsing, the
// checkpoint's state metadata.
#include <gtest/gtest.h>

#include <csignal>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/train_state.h"
#include "common/weights.h"
#include "host/train.h"
#include "tests/toy_cifar.h"
#include "tests/train_runner.h"

using vit_test::TempDir;

namespace {

using Result = vit_test::TrainRun;
using vit_test::run_train;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// metrics.csv rows without the two time columns (seconds, images_per_s).
std::vector<std::string> rows_without_time(const std::string& path) {
  std::vector<std::string> rows;
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);  // header
  while (std::getline(f, line)) {
    for (int k = 0; k < 2; ++k) line = line.substr(0, line.find_last_of(','));
    rows.push_back(line);
  }
  return rows;
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream s(line);
  std::string f;
  while (std::getline(s, f, ',')) out.push_back(f);
  return out;
}

// The shared small dataset: 10 classes, 320 train / 160 test images (built once).
const std::string& toy_data() {
  static TempDir* dir = nullptr;
  if (!dir) {
    dir = new TempDir();  // lives for the whole test binary
    vit_test::make_toy_cifar(dir->path, 320, 160);
  }
  return dir->path;
}

// Common flags: tiny model on the CPU, quick settings.
std::vector<std::string> base_args(const std::string& out, std::vector<std::string> more = {}) {
  std::vector<std::string> a = {"--device", "cpu",  "--preset", "tiny", "--data", toy_data(),
                                "--out",    out,    "--batch-size", "32", "--lr", "2e-3",
                                "--seed",   "7"};
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

}  // namespace

// ---- pieces ------------------------------------------------------------------------------------

TEST(TrainSchedule, ConstantWarmupCosine) {
  vit::TrainOptions o;
  o.lr = 1.0f;
  o.epochs = 2;
  EXPECT_DOUBLE_EQ(vit::learning_rate(o, 0, 10), 1.0);
  EXPECT_DOUBLE_EQ(vit::learning_rate(o, 19, 10), 1.0);
  o.warmup_epochs = 0.5f;  // 5 warmup updates: 1/5, 2/5, ..., 5/5
  EXPECT_DOUBLE_EQ(vit::learning_rate(o, 0, 10), 0.2);
  EXPECT_DOUBLE_EQ(vit::learning_rate(o, 4, 10), 1.0);
  EXPECT_DOUBLE_EQ(vit::learning_rate(o, 12, 10), 1.0);  // constant after the warmup
  o.schedule = "cosine";  // over updates 5..19: 0.5 * (1 + cos(pi * (s - 5) / 15))
  EXPECT_DOUBLE_EQ(vit::learning_rate(o, 2, 10), 0.6);
  EXPECT_DOUBLE_EQ(vit::learning_rate(o, 5, 10), 1.0);
  EXPECT_NEAR(vit::learning_rate(o, 10, 10), 0.75, 1e-12);  // cos(pi/3) = 0.5
  EXPECT_NEAR(vit::learning_rate(o, 20, 10), 0.0, 1e-12);   // cos(pi) = -1
  o.warmup_epochs = 0;
  EXPECT_NEAR(vit::learning_rate(o, 10, 10), 0.5, 1e-12);   // halfway: cos(pi/2) = 0
}

TEST(TrainOptions, RoundTripAndErrors) {
  vit::TrainOptions o;
  o.set("lr", "3e-4");
  o.set("optimizer", "adamw");
  o.set("augment", "crop-flip");
  o.set("warmup_epochs", "2.5");
  o.set("seed", "123456789012");
  vit::TrainOptions p;
  for (const auto& [k, v] : o.to_map()) p.set(k, v);
  EXPECT_EQ(p.to_map(), o.to_map());
  EXPECT_EQ(p.seed, 123456789012ull);
  EXPECT_FLOAT_EQ(p.lr, 3e-4f);
  auto bad = [&](const char* k, const char* v, const char* needle) {
    try {
      vit::TrainOptions q;
      q.set(k, v);
      ADD_FAILURE() << k << "=" << v << " accepted";
    } catch (const vit::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  bad("lr", "0", "--lr");
  bad("lr", "abc", "--lr");
  bad("epochs", "-1", "--epochs");
  bad("batch_size", "0", "--batch-size");
  bad("optimizer", "sgd", "--optimizer");
  bad("augment", "mixup", "--augment");
  bad("label_smoothing", "1", "--label-smoothing");
  bad("device", "tpu", "--device");
  bad("store_size", "-1", "--store-size");
  bad("precision", "fp16", "--precision");
  vit::TrainOptions q;
  q.batch_size = 30;
  q.accum_steps = 4;
  EXPECT_THROW(q.validate(), vit::Error);
}

TEST(TrainOptions, PrecisionAndItsTf32Aliases) {
  vit::TrainOptions o;
  EXPECT_EQ(o.precision, "auto");  // resolved by train_main, never recorded as auto
  for (const char* p : {"bf16", "tf32", "fp32"}) {
    o.set("precision", p);
    EXPECT_EQ(o.to_map().at("precision"), p);
  }
  // --tf32 / --no-tf32, and the "tf32" key of checkpoints written before --precision.
  o.set("tf32", "true");
  EXPECT_EQ(o.precision, "tf32");
  o.set("tf32", "false");
  EXPECT_EQ(o.precision, "fp32");
  EXPECT_EQ(o.to_map().count("tf32"), 0u);
}

TEST(TrainOptions, PrecisionOnTheCpuIsFp32WithANote) {
  TempDir d;
  Result r = run_train(base_args(d / "run", {"--epochs", "0", "--precision", "bf16"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("note: --device cpu ignores --precision bf16"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("device cpu (precision fp32)"), std::string::npos) << r.out;
  nlohmann::json j = nlohmann::json::parse(slurp(d / "run/config.json"));
  EXPECT_EQ(j["train"]["precision"], "fp32");
  // Both spellings at once: one line, exit 1.
  Result both = run_train(base_args(d / "b", {"--precision", "tf32", "--no-tf32"}));
  EXPECT_EQ(both.rc, 1);
  EXPECT_NE(both.err.find("--precision and --tf32/--no-tf32 exclude each other"),
            std::string::npos) << both.err;
}

TEST(TrainState, MetadataRoundTripIsExact) {
  vit::TrainState s;
  s.step = 123;
  s.micro_step = 456;
  s.epoch = 3;
  s.batch = 7;
  s.loss_sum = 1.0 / 3.0;
  s.correct = 11;
  s.count = 29;
  s.seconds = 0.1;
  s.lr = 2e-4 * M_PI;
  s.best_acc = 0.8125;
  s.best_epoch = 2;
  vit::TrainState t = vit::state_from_metadata(vit::state_to_metadata(s), "x");
  EXPECT_EQ(t.step, 123);
  EXPECT_EQ(t.micro_step, 456);
  EXPECT_EQ(t.epoch, 3);
  EXPECT_EQ(t.batch, 7);
  EXPECT_EQ(t.loss_sum, s.loss_sum);  // bit-exact
  EXPECT_EQ(t.lr, s.lr);
  EXPECT_EQ(t.correct, 11);
  EXPECT_EQ(t.count, 29);
  EXPECT_EQ(t.best_acc, 0.8125);
  EXPECT_EQ(t.best_epoch, 2);
  std::map<std::string, std::string> md = vit::state_to_metadata(s);
  md.erase("state.batch");
  EXPECT_THROW(vit::state_from_metadata(md, "x"), vit::Error);
}

// ---- end to end -------------------------------------------------------------------------------

TEST(TrainEndToEnd, LearnsTheToyDatasetAndWritesEveryOutput) {
  TempDir d;
  Result r = run_train(base_args(d / "run", {"--epochs", "4"}));
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  std::ifstream f(d / "run/metrics.csv");
  std::string header;
  std::getline(f, header);
  EXPECT_EQ(header, "epoch,train_loss,train_acc,test_loss,test_acc,lr,seconds,images_per_s");
  std::vector<std::vector<std::string>> rows;
  for (std::string line; std::getline(f, line);) rows.push_back(split_csv(line));
  ASSERT_EQ(rows.size(), 4u);
  for (size_t e = 0; e < rows.size(); ++e) {
    ASSERT_EQ(rows[e].size(), 8u);
    EXPECT_EQ(rows[e][0], std::to_string(e + 1));
    for (int c : {2, 4}) {
      double acc = std::stod(rows[e][c]);
      EXPECT_TRUE(acc >= 0 && acc <= 1) << acc;
    }
    EXPECT_FLOAT_EQ(std::stof(rows[e][5]), 2e-3f);  // constant schedule
  }
  double first_loss = std::stod(rows[0][1]), last_loss = std::stod(rows[3][1]);
  double test_acc = std::stod(rows[3][4]);
  EXPECT_LT(last_loss, first_loss);
  EXPECT_GT(test_acc, 0.5) << "10 classes: chance is 0.1";
  // config.json, checkpoints, curves.
  nlohmann::json j = nlohmann::json::parse(slurp(d / "run/config.json"));
  // Typed values: numbers as numbers (floats in their shortest form), booleans, strings.
  ASSERT_TRUE(j["train"]["batch_size"].is_number_integer());
  EXPECT_EQ(j["train"]["batch_size"], 32);
  ASSERT_TRUE(j["train"]["lr"].is_number_float());
  EXPECT_EQ(j["train"]["lr"].get<double>(), 0.002);  // --lr 2e-3, no float32 noise
  EXPECT_EQ(j["train"]["lr"].dump(), "0.002");
  EXPECT_EQ(j["train"]["seed"], 7);
  EXPECT_EQ(j["train"]["precision"], "fp32");  // --device cpu: the reference is FP32
  ASSERT_TRUE(j["train"]["freeze_backbone"].is_boolean());
  EXPECT_EQ(j["train"]["freeze_backbone"], false);
  EXPECT_EQ(j["train"]["optimizer"], "adam");
  EXPECT_EQ(j["train"]["device"], "cpu");
  EXPECT_EQ(j["model"]["hidden"], 64);
  EXPECT_EQ(j["model"]["patch_size"], 8);
  EXPECT_EQ(j["model"]["dropout"].dump(), "0.1");
  EXPECT_EQ(j["model"]["ln_eps"].dump(), "1e-05");
  EXPECT_EQ(j["model"]["qkv_bias"], true);
  EXPECT_EQ(j["model"]["gelu"], "tanh");
  EXPECT_EQ(j["model"]["mean"].dump(), "[0.5,0.5,0.5]");
  EXPECT_EQ(j["dataset"]["train_images"], 320);
  EXPECT_EQ(j["dataset"]["format"], "cifar-10");
  EXPECT_EQ(j["dataset"]["image_size"], 32);
  EXPECT_EQ(j["dataset"]["class_names"].size(), 10u);  // toy batches.meta.txt
  vit::TrainingCheckpoint ck = vit::load_training_checkpoint(d / "run/last.safetensors", {});
  EXPECT_EQ(ck.state.epoch, 4);
  EXPECT_EQ(ck.state.step, 40);  // 320 / 32 per epoch
  EXPECT_EQ(ck.state.batch, 0);
  EXPECT_EQ(ck.train["lr"], "0.00200000009");
  EXPECT_EQ(ck.config.hidden, 64);
  vit::TrainingCheckpoint best = vit::load_training_checkpoint(d / "run/best.safetensors", {});
  double best_acc = 0;
  for (auto& row : rows) best_acc = std::max(best_acc, std::stod(row[4]));
  EXPECT_NEAR(best.state.best_acc, best_acc, 1e-9);
  EXPECT_EQ(rows[best.state.best_epoch - 1][4], rows[best.state.epoch - 1][4]);
  // A checkpoint is also a plain weight file (vit_predict, --init).
  vit::LoadedWeights w = vit::load_weights(d / "run/last.safetensors", {});
  EXPECT_EQ(w.params, ck.params);
  EXPECT_GT(slurp(d / "run/curves.png").size(), 1000u);
  EXPECT_NE(r.out.find("best test accuracy"), std::string::npos) << r.out;

  // --eval-only --init on the checkpoint reproduces the last epoch's test metrics.
  Result ev = run_train({"--device", "cpu", "--data", toy_data(), "--eval-only", "--init",
                   d / "run/last.safetensors", "--batch-size", "32"});
  ASSERT_EQ(ev.rc, 0) << ev.err;
  char want[64];
  snprintf(want, sizeof want, "acc %.4f", test_acc);
  EXPECT_NE(ev.out.find(want), std::string::npos) << ev.out << " (wanted " << want << ")";
}

TEST(TrainEndToEnd, ResumeAtAnEpochBoundaryIsExact) {
  TempDir d;
  std::vector<std::string> aug = {"--augment", "crop-flip"};
  Result a = run_train(base_args(d / "a", {"--epochs", "2", "--augment", "crop-flip"}));
  ASSERT_EQ(a.rc, 0) << a.err;
  Result b1 = run_train(base_args(d / "b", {"--epochs", "1", "--augment", "crop-flip"}));
  ASSERT_EQ(b1.rc, 0) << b1.err;
  Result b2 = run_train({"--device", "cpu", "--data", toy_data(), "--resume", d / "b/last.safetensors",
                   "--epochs", "2"});
  ASSERT_EQ(b2.rc, 0) << b2.err;
  std::vector<std::string> ra = rows_without_time(d / "a/metrics.csv");
  ASSERT_EQ(ra.size(), 2u);
  EXPECT_EQ(rows_without_time(d / "b/metrics.csv"), ra);
  vit::TrainingCheckpoint ca = vit::load_training_checkpoint(d / "a/last.safetensors", {});
  vit::TrainingCheckpoint cb = vit::load_training_checkpoint(d / "b/last.safetensors", {});
  EXPECT_EQ(ca.params, cb.params);
  EXPECT_EQ(ca.adam_v, cb.adam_v);
}

TEST(TrainEndToEnd, ResumeMidEpochWithCosineIsExact) {
  TempDir d;
  std::vector<std::string> more = {"--epochs", "2", "--schedule", "cosine", "--warmup-epochs",
                                   "0.5", "--accum-steps", "2", "--optimizer", "adamw",
                                   "--weight-decay", "0.05", "--clip-grad", "1"};
  Result a = run_train(base_args(d / "a", more));
  ASSERT_EQ(a.rc, 0) << a.err;
  std::vector<std::string> stop = more;
  stop.insert(stop.end(), {"--max-steps", "13"});  // epoch 2, batch 3 of 10
  Result b1 = run_train(base_args(d / "b", stop));
  ASSERT_EQ(b1.rc, 0) << b1.err;
  vit::TrainingCheckpoint mid = vit::load_training_checkpoint(d / "b/last.safetensors", {});
  EXPECT_EQ(mid.state.step, 13);
  EXPECT_EQ(mid.state.micro_step, 26);
  EXPECT_EQ(mid.state.epoch, 1);
  EXPECT_EQ(mid.state.batch, 3);
  Result b2 = run_train({"--device", "cpu", "--data", toy_data(), "--resume", d / "b/last.safetensors",
                   "--max-steps", "0"});
  ASSERT_EQ(b2.rc, 0) << b2.err << b2.out;
  EXPECT_EQ(rows_without_time(d / "b/metrics.csv"), rows_without_time(d / "a/metrics.csv"));
}

TEST(TrainEndToEnd, SignalsSaveAndExit) {
  struct sigaction before;  // SIG_DFL, or SIG_IGN when the suite runs as a background job
  sigaction(SIGINT, nullptr, &before);
  TempDir d;
  Result a = run_train(base_args(d / "a", {"--epochs", "2"}));
  ASSERT_EQ(a.rc, 0) << a.err;
  for (int sig : {SIGINT, SIGTERM}) {
    std::string out = d / (sig == SIGINT ? "int" : "term");
    vit::TrainHooks h;
    const int64_t at = sig == SIGINT ? 4 : 10;  // mid-epoch / the last step of epoch 1
    h.after_step = [&](int64_t step) { if (step == at) raise(sig); };
    Result b = run_train(base_args(out, {"--epochs", "2"}), &h);
    EXPECT_EQ(b.rc, sig == SIGINT ? 130 : 143) << b.err;
    EXPECT_NE(b.out.find("--resume"), std::string::npos) << b.out;
    vit::TrainingCheckpoint ck = vit::load_training_checkpoint(out + "/last.safetensors", {});
    EXPECT_EQ(ck.state.step, at);
    Result c = run_train({"--device", "cpu", "--data", toy_data(), "--resume", out + "/last.safetensors"});
    ASSERT_EQ(c.rc, 0) << c.err;
    EXPECT_EQ(rows_without_time(out + "/metrics.csv"), rows_without_time(d / "a/metrics.csv"));
  }
  // The handlers are gone again: SIGINT is back to what it was before the runs.
  struct sigaction now;
  sigaction(SIGINT, nullptr, &now);
  EXPECT_EQ(now.sa_handler, before.sa_handler);
}

namespace {
// Wraps a real model; its loss reads NaN from the forward with Philox step `bad` on, and its
// metrics report that step as the first non-finite one (as the real models do).
struct NanModel : vit::Model {
  std::unique_ptr<vit::Model> m;
  uint64_t bad, last = 0;
  int64_t first_bad = -1;
  NanModel(std::unique_ptr<vit::Model> mm, uint64_t b) : m(std::move(mm)), bad(b) {}
  const vit::Config& config() const override { return m->config(); }
  const vit::ParamLayout& layout() const override { return m->layout(); }
  void get_params(float* o) const override { m->get_params(o); }
  void set_params(const float* i) override { m->set_params(i); }
  void get_grads(float* o) const override { m->get_grads(o); }
  void get_adam_state(float* a, float* b) const override { m->get_adam_state(a, b); }
  void set_adam_state(const float* a, const float* b) override { m->set_adam_state(a, b); }
  void forward(const uint8_t* x, const int32_t* y, int B, bool train, uint64_t step) override {
    last = train ? step : 0;
    m->forward(x, y, B, train, step);
    if (last >= bad && first_bad < 0) first_bad = (int64_t)step;
  }
  void backward() override { m->backward(); }
  void zero_grad() override { m->zero_grad(); }
  void optimizer_step(const vit::OptimConfig& o, float lr, int64_t t, float s) override {
    m->optimizer_step(o, lr, t, s);
  }
  float last_grad_norm() override { return m->last_grad_norm(); }
  void get_logits(float* o) const override { m->get_logits(o); }
  float last_loss() override { return last >= bad ? NAN : m->last_loss(); }
  vit::Metrics take_metrics() override {
    vit::Metrics r = m->take_metrics();
    if (first_bad >= 0) {
      r.first_nonfinite_step = first_bad;
      r.first_nonfinite_loss = NAN;
      first_bad = -1;
    }
    return r;
  }
  void infer(const float* x, int B, float* l) override { m->infer(x, B, l); }
};
}  // namespace

TEST(TrainEndToEnd, NanLossStopsAndKeepsTheLastGoodCheckpoint) {
  TempDir d;
  vit::TrainHooks h;
  h.make_model = [](const std::string&, const vit::Config& c, const vit::ModelOptions& o) {
    return std::unique_ptr<vit::Model>(new NanModel(vit::make_cpu_model(c, o), 14));
  };
  Result r = run_train(base_args(d / "run", {"--epochs", "3"}), &h);
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("loss is nan at step 15 (epoch 2, batch 5)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("last.safetensors"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;
  vit::TrainingCheckpoint ck = vit::load_training_checkpoint(d / "run/last.safetensors", {});
  EXPECT_EQ(ck.state.step, 10);  // the end of epoch 1, untouched
  EXPECT_EQ(rows_without_time(d / "run/metrics.csv").size(), 1u);
}

// ---- bad input ---------------------------------------------------------------------------------

TEST(TrainBadInput, OneLineNonZeroAndTheCheckpointIsIntact) {
  TempDir d;
  Result good = run_train(base_args(d / "run", {"--epochs", "1"}));
  ASSERT_EQ(good.rc, 0) << good.err;
  const std::string ckpt = d / "run/last.safetensors";
  const std::string before = slurp(ckpt);
  ASSERT_GT(before.size(), 1000u);

  // Datasets with one defect each.
  auto dataset = [&](const std::string& name, std::function<void(const std::string&)> spoil) {
    std::string dir = d / name;
    vit_test::make_toy_cifar(dir, 20, 10);
    spoil(dir);
    return dir;
  };
  std::string missing_file = dataset("missing_file", [](const std::string& dir) {
    remove((dir + "/data_batch_2.bin").c_str());
  });
  std::string truncated = dataset("truncated", [](const std::string& dir) {
    std::ofstream(dir + "/data_batch_4.bin", std::ios::binary | std::ios::app) << "xyz";
  });
  std::string bad_label = dataset("bad_label", [](const std::string& dir) {
    std::string recs = slurp(dir + "/test_batch.bin");
    recs[3073] = (char)10;  // record 1: label 10 of 10 classes
    std::ofstream(dir + "/test_batch.bin", std::ios::binary) << recs;
  });
  std::string empty = dataset("empty", [](const std::string& dir) {
    std::ofstream(dir + "/test_batch.bin", std::ios::binary | std::ios::trunc);
  });
  const std::string corrupt = d / "corrupt.safetensors";
  std::ofstream(corrupt, std::ios::binary) << "this is not a safetensors file at all";
  const std::string weights_only = d / "weights_only.safetensors";
  {
    vit::TrainingCheckpoint ck = vit::load_training_checkpoint(ckpt, {});
    vit::save_checkpoint(weights_only, ck.config, vit::ParamLayout(ck.config), ck.params.data());
  }

  struct Case {
    std::vector<std::string> args;
    std::string needle;
  };
  const std::string out = d / "run";
  std::vector<Case> cases = {
      {base_args(out, {"--data", d / "nowhere"}), "nowhere"},
      {base_args(out, {"--data", missing_file}), "data_batch_2.bin"},
      {base_args(out, {"--data", truncated}), "data_batch_4.bin"},
      {base_args(out, {"--data", bad_label}), "label 10"},
      {base_args(out, {"--data", empty}), "empty"},
      {base_args(out, {"--epochs", "-3"}), "--epochs"},
      {base_args(out, {"--lr", "fast"}), "--lr"},
      {base_args(out, {"--batch-size", "0"}), "--batch-size"},
      {base_args(out, {"--batch-size", "30", "--accum-steps", "4"}), "--accum-steps"},
      {base_args(out, {"--optimizer", "sgd"}), "--optimizer"},
      {base_args(out, {"--augment", "mixup"}), "--augment"},
      {base_args(out, {"--schedule", "step"}), "--schedule"},
      {base_args(out, {"--label-smoothing", "2"}), "--label-smoothing"},
      {base_args(out, {"--frobnicate"}), "--frobnicate"},
      {base_args(out, {"--hidden", "63"}), "--heads"},
      {base_args(out, {"--eval-only"}), "--init"},
      {{"--device", "cpu", "--data", toy_data(), "--resume", corrupt}, "corrupt.safetensors"},
      {{"--device", "cpu", "--data", toy_data(), "--resume", d / "absent.safetensors"}, "absent"},
      {{"--device", "cpu", "--data", toy_data(), "--resume", weights_only}, "--init"},
      {{"--device", "cpu", "--data", toy_data(), "--resume", ckpt, "--batch-size", "16"},
       "--batch-size"},
      {{"--device", "cpu", "--data", toy_data(), "--resume", ckpt, "--hidden", "32"}, "hidden"},
  };
  for (const Case& c : cases) {
    std::string cmd;
    for (const std::string& a : c.args) cmd += a + " ";
    Result r = run_train(c.args);
    EXPECT_NE(r.rc, 0) << cmd;
    EXPECT_EQ(r.err.rfind("vit_train: error: ", 0), 0u) << cmd << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << cmd << "\n" << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << cmd << "\n" << r.err;
    EXPECT_EQ(slurp(ckpt), before) << "checkpoint changed by: " << cmd;
  }
}

TEST(TrainBadInput, Help) {
  Result h = run_train({"--help"});
  EXPECT_EQ(h.rc, 0);
  for (const char* f : {"--device", "--epochs", "--resume", "--augment", "--hidden", "--store-size N",
                        "--strict", "image folder"})
    EXPECT_NE(h.out.find(f), std::string::npos) << f;
}

// ---- a real, asynchronous signal from another process ---------------------------------------
// The test binary runs itself (/proc/self/exe) with --gtest_filter=TrainSignal.Child; that
// child runs train_main with the arguments in VIT_TRAIN_CHILD_ARGS (separated by '\x1f') and
// exits with its status. The parent sends SIGINT once the child has logged its second step.

#include <spawn.h>
#include <sys/wait.h>

extern char** environ;

TEST(TrainSignal, Child) {
  const char* packed = getenv("VIT_TRAIN_CHILD_ARGS");
  if (!packed) GTEST_SKIP() << "helper process of TrainSignal.SigintFromAnotherProcess";
  vit_test::train_child_main(packed);
}

TEST(TrainSignal, SigintFromAnotherProcess) {
  TempDir d;
  std::string packed;
  for (const std::string& a : base_args(d / "run", {"--epochs", "50", "--log-every", "1"}))
    packed += (packed.empty() ? "" : "\x1f") + a;
  std::vector<std::string> env_s = {"VIT_TRAIN_CHILD_ARGS=" + packed};
  for (char** e = environ; *e; ++e)
    if (strncmp(*e, "VIT_TRAIN_CHILD_ARGS=", 21) != 0) env_s.push_back(*e);
  std::vector<char*> envp;
  for (std::string& e : env_s) envp.push_back(&e[0]);
  envp.push_back(nullptr);
  std::string self = "/proc/self/exe", filter = "--gtest_filter=TrainSignal.Child";
  char* argv[] = {&self[0], &filter[0], nullptr};

  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  pid_t pid;
  ASSERT_EQ(posix_spawn(&pid, self.c_str(), &fa, nullptr, argv, envp.data()), 0);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  FILE* out = fdopen(fds[0], "r");
  std::string log;
  char line[1024];
  bool sent = false;
  while (fgets(line, sizeof line, out)) {
    log += line;
    if (!sent && strstr(line, " step 2/")) {
      kill(pid, SIGINT);
      sent = true;
    }
  }
  fclose(out);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(sent) << log;
  ASSERT_TRUE(WIFEXITED(status)) << log;
  EXPECT_EQ(WEXITSTATUS(status), 130) << log;
  EXPECT_NE(log.find("interrupted (SIGINT): saved"), std::string::npos) << log;
  vit::TrainingCheckpoint ck = vit::load_training_checkpoint(d / "run/last.safetensors", {});
  EXPECT_GE(ck.state.step, 2);
  EXPECT_LT(ck.state.step, 500);  // stopped long before the 50 epochs
}
