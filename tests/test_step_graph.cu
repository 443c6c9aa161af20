// tests/test_step_graph.cu — one training step as one CUDA graph (host/step_graph.h,
// CudaModel::train_step): a replayed step computes the same bits as the eager step, the
// counted launches of an eager step are the step-time model's (common/cost.cpp step_ops), and a
// graph step is one launch. Under simt the graph is simt's emulation (captured nodes, replayed in
// an adversarial order that respects the captured dependencies).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "common/cost.h"
#include "common/train_state.h"
#include "common/philox.h"
#include "host/cuda_model.h"
#include "host/step_graph.h"
#include "tests/test_util.h"
#include "tests/toy_cifar.h"
#include "kernels/gemm_ln.cuh"
#include "tests/train_runner.h"

namespace {

using vit::Config;
using vit::LaunchCounts;
using vit::Model;
using vit::ModelOptions;
using vit::OptimConfig;
using vit::StepOp;

// basic's structure (12 layers, dropout, qkv bias, no final LN) at a width simt runs in seconds:
// the launch count depends on the structure, not on the widths.
Config basic_like() {
  Config c = vit::preset("basic");
  c.image_size = 16;
  c.hidden = 32;
  c.heads = 2;  // head dim 16
  c.mlp = 64;
  return c;
}
// vit-b16's structure: final LN, erf GELU, the input resized (FP16 input), no dropout.
Config vitb16_like() {
  Config c = vit::preset("vit-b16");
  c.image_size = 32;
  c.patch_size = 8;  // 16 patches of the 32x32 image resized from 16x16
  c.hidden = 32;
  c.heads = 2;
  c.mlp = 64;
  return c;
}

ModelOptions options(int src, bool graph, vit::Augment aug = vit::Augment::None,
                     vit::Precision prec = vit::Precision::Fp32) {
  ModelOptions o;
  o.seed = 7;
  o.precision = prec;
  o.input.src_size = src;
  o.input.augment = aug;
  o.input.crop_pad = 2;
  o.max_batch = 3;
  o.label_smoothing = 0.1f;
  o.cuda_graph = graph;
  return o;
}

int launches_of(const std::vector<StepOp>& ops, StepOp::Kind k) {
  int n = 0;
  for (const StepOp& op : ops) n += op.kind == k ? op.count : 0;
  return n;
}

// The counted step against step_ops, kind by kind: kernels = memory-bound + attention ops,
// library calls = GEMMs, memory operations = memsets + copies.
void expect_counts_match(const LaunchCounts& n, const std::vector<StepOp>& ops) {
  EXPECT_EQ(n.kernels, (uint64_t)(launches_of(ops, StepOp::Memory) + launches_of(ops, StepOp::KernelGemm) +
                                  launches_of(ops, StepOp::Attention)));
  EXPECT_EQ(n.library, (uint64_t)launches_of(ops, StepOp::Gemm));
  EXPECT_EQ(n.memops, (uint64_t)(launches_of(ops, StepOp::Memset) + launches_of(ops, StepOp::Copy)));
  EXPECT_EQ(n.graphs, 0u);
}

}  // namespace

TEST(StepGraph, EagerLaunchesAreTheStepModelsAndAGraphStepIsOneLaunch) {
  VIT_REQUIRE_GPU();
  OptimConfig opt;
  {
    SCOPED_TRACE("basic");
    const Config c = basic_like();
    // The reduced width changes no count: step_ops of the real preset lists as many launches.
    const std::vector<StepOp> ops = vit::step_ops(c, 2, vit::Precision::Fp32);
    ASSERT_EQ(vit::step_time(ops, vit::Precision::Fp32, vit::named_gpus()[1]).launches,
              vit::step_time(vit::step_ops(vit::preset("basic"), 64, vit::Precision::Tf32),
                             vit::Precision::Tf32, vit::named_gpus()[1])
                  .launches);
    vit::StepLaunches n = vit::count_step_launches(c, options(16, false), opt, 2, 1);
    expect_counts_match(n.eager, ops);
    // The goal of the launch work: at most 150 kernels + library calls + copies per step of the
    // basic preset, before graph capture (it was 501 with one kernel per op, per-layer weight
    // gradient GEMMs and separate LayerNorm / dropout / bias kernels).
    EXPECT_LE(n.eager.total(), 150u);
    EXPECT_EQ(n.eager.total(), 148u);  // README's number (vit_bench --launches)
    EXPECT_EQ(n.graph.graphs, 1u);
    EXPECT_EQ(n.graph.total(), 1u) << "a graph step launches nothing besides the graph";
    // Clipping adds the two gradient-norm kernels; two micro-batches repeat the forward and
    // backward (and their input copies), not zero_grad or the optimizer.
    opt.clip_grad = 1.0f;
    n = vit::count_step_launches(c, options(16, false), opt, 2, 2);
    const std::vector<StepOp> clip = vit::step_ops(c, 2, vit::Precision::Fp32, true);
    const int optimizer = 3;  // grad norm (2) + Adam
    EXPECT_EQ(n.eager.total(),
              2 * (uint64_t)(vit::step_time(clip, vit::Precision::Fp32, vit::named_gpus()[1])
                                 .launches - optimizer) + optimizer);
    EXPECT_EQ(n.graph.total(), 1u);
    opt.clip_grad = 0.0f;
  }
  {
    SCOPED_TRACE("vit-b16");
    const Config c = vitb16_like();
    const std::vector<StepOp> ops = vit::step_ops(c, 2, vit::Precision::Fp32);
    vit::StepLaunches n = vit::count_step_launches(c, options(16, false), opt, 2, 1);
    expect_counts_match(n.eager, ops);
    EXPECT_EQ(n.eager.total(), 179u);
    EXPECT_EQ(n.graph.total(), 1u);
  }
  {
    SCOPED_TRACE("bf16 at basic's head dim (tensor-core attention): the same count");
    Config c = basic_like();
    c.hidden = 64;
    c.heads = 2;  // head dim 32
    c.mlp = 128;
    const vit::StepLaunches n = vit::count_step_launches(
        c, options(16, false, vit::Augment::None, vit::Precision::Bf16), opt, 2, 1);
    expect_counts_match(n.eager, vit::step_ops(c, 2, vit::Precision::Bf16));
    EXPECT_EQ(n.eager.total(), 148u);
    // and the real presets' models in every precision
    for (vit::Precision p : {vit::Precision::Fp32, vit::Precision::Tf32, vit::Precision::Bf16})
      EXPECT_LE(vit::step_time(vit::step_ops(vit::preset("basic"), 64, p), p,
                               vit::named_gpus()[1]).launches, 150)
          << vit::precision_name(p);
  }
  {
    SCOPED_TRACE("an evaluation forward");
    const Config c = basic_like();
    std::unique_ptr<Model> m = vit::make_cuda_model(c, options(16, true));
    std::vector<uint8_t> img(2 * 3 * 16 * 16, 7);
    std::vector<int32_t> lab(2, 1);
    for (int i = 0; i < 2; ++i) m->forward(img.data(), lab.data(), 2, false, i);  // captures
    const LaunchCounts before = vit::launch_counts();
    m->forward(img.data(), lab.data(), 2, false, 2);
    const LaunchCounts n = vit::launch_counts() - before;
    EXPECT_EQ(n.graphs, 1u);
    EXPECT_EQ(n.total(), 1u);
    m->take_metrics();
  }
}

namespace {

struct StepRun {
  std::vector<float> params, m, v, logits;
  std::vector<double> loss_sums;
  std::vector<int64_t> correct;
  float last_loss = 0, grad_norm = 0;
};

// Four steps of `c`: full steps of 2 micro-batches (3 + 3 images), a partial last batch (3 + 1),
// then a full one again: the first steps capture both parities' graphs, the later ones replay.
StepRun train(const Config& c, const ModelOptions& o, const OptimConfig& opt) {
  std::unique_ptr<Model> m = vit::make_cuda_model(c, o);
  const size_t per = (size_t)c.channels * o.input.src_size * o.input.src_size;
  std::vector<uint8_t> img(6 * per);
  std::vector<int32_t> lab(6);
  StepRun r;
  uint64_t micro = 0;
  for (int step = 0; step < 5; ++step) {
    for (size_t i = 0; i < img.size(); ++i) img[i] = vit::philox_u32(9, step, 1, i) & 255;
    for (int i = 0; i < 6; ++i) lab[i] = (int32_t)(vit::philox_u32(9, step, 2, i) % c.classes);
    const int second = step == 2 ? 1 : 3;
    Model::MicroBatch mb[2] = {{img.data(), lab.data(), 3, micro},
                               {img.data() + 3 * per, lab.data() + 3, second, micro + 1}};
    m->train_step(mb, 2, opt, 1e-3f * (step + 1), step + 1, 0.5f);
    micro += 2;
    vit::Metrics mt = m->take_metrics();
    r.loss_sums.push_back(mt.loss_sum);
    r.correct.push_back(mt.correct);
    // An evaluation forward (a graph per batch size too) of the step's second micro-batch.
    m->forward(img.data() + 3 * per, lab.data() + 3, second, /*train=*/false, micro);
    mt = m->take_metrics();
    r.loss_sums.push_back(mt.loss_sum);
    r.correct.push_back(mt.correct);
  }
  const size_t n = m->layout().total;
  r.params.resize(n);
  r.m.resize(n);
  r.v.resize(n);
  m->get_params(r.params.data());
  m->get_adam_state(r.m.data(), r.v.data());
  // The last forward: the evaluation of 3 images.
  r.logits.resize(3 * c.classes);
  m->get_logits(r.logits.data());
  r.last_loss = m->last_loss();
  r.grad_norm = m->last_grad_norm();
  // The gradients were consumed by the last update (common/model.h).
  std::vector<float> g(n);
  m->get_grads(g.data());
  for (size_t i = 0; i < n; ++i)
    if (g[i] != 0.0f) {
      ADD_FAILURE() << "gradient " << i << " is " << g[i] << " after the optimizer step";
      break;
    }
  return r;
}

void expect_same_bits(const StepRun& a, const StepRun& b) {
  EXPECT_EQ(a.loss_sums, b.loss_sums);
  EXPECT_EQ(a.correct, b.correct);
  EXPECT_EQ(0, memcmp(a.params.data(), b.params.data(), a.params.size() * sizeof(float)))
      << "parameters";
  EXPECT_EQ(0, memcmp(a.m.data(), b.m.data(), a.m.size() * sizeof(float))) << "Adam m";
  EXPECT_EQ(0, memcmp(a.v.data(), b.v.data(), a.v.size() * sizeof(float))) << "Adam v";
  EXPECT_EQ(a.logits, b.logits);
  EXPECT_EQ(a.last_loss, b.last_loss);
  if (std::isnan(a.grad_norm)) EXPECT_TRUE(std::isnan(b.grad_norm));
  else EXPECT_EQ(a.grad_norm, b.grad_norm);
}

}  // namespace

TEST(StepGraph, ReplayedStepsGiveTheEagerBits) {
  VIT_REQUIRE_GPU();
  OptimConfig opt;
  opt.kind = OptimConfig::AdamW;
  opt.weight_decay = 0.05f;
  {
    SCOPED_TRACE("basic-like: dropout, crop-flip, no clipping");
    Config c = basic_like();
    c.layers = 2;
    const StepRun eager = train(c, options(16, false, vit::Augment::CropFlip), opt);
    const StepRun graph = train(c, options(16, true, vit::Augment::CropFlip), opt);
    expect_same_bits(graph, eager);
    EXPECT_TRUE(std::isnan(graph.grad_norm)) << "no clipping: no norm";
  }
  {
    SCOPED_TRACE("basic-like in bf16 (tensor-core attention at head dim 32), random-resized crop");
    Config c = basic_like();
    c.layers = 2;
    c.hidden = 64;
    c.mlp = 128;
    const StepRun eager =
        train(c, options(16, false, vit::Augment::RrcFlip, vit::Precision::Bf16), opt);
    const StepRun graph =
        train(c, options(16, true, vit::Augment::RrcFlip, vit::Precision::Bf16), opt);
    expect_same_bits(graph, eager);
  }
  {
    SCOPED_TRACE("vit-b16-like in bf16: final LN, erf GELU, FP16 input, clipping");
    Config c = vitb16_like();
    c.layers = 2;
    c.dropout = c.attn_dropout = 0.1f;
    OptimConfig clip = opt;
    clip.clip_grad = 0.05f;
    const StepRun eager =
        train(c, options(16, false, vit::Augment::Flip, vit::Precision::Bf16), clip);
    const StepRun graph =
        train(c, options(16, true, vit::Augment::Flip, vit::Precision::Bf16), clip);
    expect_same_bits(graph, eager);
  }
  {
    SCOPED_TRACE("vit-b16-like: final LN, FP16 resized input, dropout on, flip, clipping");
    Config c = vitb16_like();
    c.layers = 2;
    c.dropout = c.attn_dropout = 0.1f;
    opt.clip_grad = 0.05f;  // small enough to clip
    const StepRun eager = train(c, options(16, false, vit::Augment::Flip), opt);
    const StepRun graph = train(c, options(16, true, vit::Augment::Flip), opt);
    expect_same_bits(graph, eager);
    EXPECT_GT(graph.grad_norm, opt.clip_grad);
  }
}

TEST(StepGraph, EagerCallsAfterGraphStepsSeeTheGraphsResults) {
  VIT_REQUIRE_GPU();
  // Mixing the two: graph steps, then an eager forward/backward/optimizer_step, then graph steps
  // again, equals the same sequence run eagerly (the input slots and the gradients' zero state
  // are shared by both paths).
  const Config c = [] { Config c = basic_like(); c.layers = 1; return c; }();
  OptimConfig opt;
  std::vector<float> out[2];
  for (int graph = 0; graph < 2; ++graph) {
    std::unique_ptr<Model> m = vit::make_cuda_model(c, options(16, graph != 0));
    const size_t per = (size_t)3 * 16 * 16;
    std::vector<uint8_t> img(3 * per);
    std::vector<int32_t> lab(3);
    for (int s = 0; s < 4; ++s) {
      for (size_t i = 0; i < img.size(); ++i) img[i] = vit::philox_u32(5, s, 1, i) & 255;
      for (int i = 0; i < 3; ++i) lab[i] = (int32_t)(vit::philox_u32(5, s, 2, i) % c.classes);
      if (s == 2) {
        m->zero_grad();
        m->forward(img.data(), lab.data(), 3, true, s);
        m->backward();
        m->optimizer_step(opt, 1e-3f, s + 1, 1.0f);
      } else {
        Model::MicroBatch mb = {img.data(), lab.data(), 3, (uint64_t)s};
        m->train_step(&mb, 1, opt, 1e-3f, s + 1, 1.0f);
      }
    }
    out[graph].resize(m->layout().total);
    m->get_params(out[graph].data());
  }
  EXPECT_EQ(0, memcmp(out[0].data(), out[1].data(), out[0].size() * sizeof(float)));
}

TEST(StepGraph, VitTrainGivesTheSameRunWithAndWithoutGraphs) {
  VIT_REQUIRE_GPU();
  vit_test::TempDir d;
  vit_test::make_toy_cifar(d / "data", 40, 16);
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{
        "--device", "cuda", "--preset", "tiny", "--data", d / "data", "--out", d / out,
        "--epochs", "2", "--batch-size", "16", "--accum-steps", "2", "--lr", "2e-3",
        "--augment", "crop-flip", "--clip-grad", "1", "--seed", "3", "--no-tf32"};
  };
  vit_test::TrainRun g = vit_test::run_train(args("graph"));
  ASSERT_EQ(g.rc, 0) << g.err;
  std::vector<std::string> eager_args = args("eager");
  eager_args.push_back("--no-graph");
  vit_test::TrainRun e = vit_test::run_train(eager_args);
  ASSERT_EQ(e.rc, 0) << e.err;
  // Every column of every epoch (times aside), and the final state bit for bit.
  auto a = vit_test::metrics_rows(d / "graph/metrics.csv");
  auto b = vit_test::metrics_rows(d / "eager/metrics.csv");
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a, b);
  vit::TrainingCheckpoint ca = vit::load_training_checkpoint(d / "graph/last.safetensors", {});
  vit::TrainingCheckpoint cb = vit::load_training_checkpoint(d / "eager/last.safetensors", {});
  EXPECT_EQ(ca.params, cb.params);
  EXPECT_EQ(ca.adam_m, cb.adam_m);
  EXPECT_EQ(ca.adam_v, cb.adam_v);
}

// The step-time model takes the fused GEMM + LayerNorm path exactly where the CUDA model does.
TEST(StepGraph, CostModelKnowsTheFusedWidths) {
  for (int C = 0; C <= 1100; ++C)
    EXPECT_EQ(vit::fused_ln_width(C), vit::gemm_ln_supports(C)) << "hidden " << C;
}
