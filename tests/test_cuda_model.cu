// tests/test_cuda_model.cu — the CUDA model (host/cuda_model.cu) against the CPU reference model
// (make_cpu_model) on the same weights, batches and seed: whole training steps — input pipeline
// with augmentation, forward, loss, backward, gradient accumulation, clipping, Adam/AdamW — and
// inference. Under simt (build/test_simt) the kernels run on the CPU; built by nvcc
// (build/test_gpu) the same comparisons run on a GPU when one is present.
//
// Tolerances: FP32 on both sides, different summation orders (cuBLAS vs the reference's BLAS
// calls, blocked reductions in the kernels), so values agree to ~1e-6 relative per op and the
// errors grow through the layers. Each comparison states rtol/atol; atol covers entries that
// are sums cancelling to near zero.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/attention_map.h"
#include "common/config.h"
#include "common/error.h"
#include "common/model.h"
#include "kernels/attention_tc.cuh"
#include "common/params.h"
#include "common/philox.h"
#include "cpu/optim.h"
#include "host/cuda_model.h"
#include "kernels/common.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_util.h"

namespace {

using namespace vit;
using vit_test::allclose;

// Test data from Philox, keyed apart from the model's own draws by a test-only site number.
constexpr uint32_t SITE_TEST = 1000;

std::vector<uint8_t> make_images(int B, int S, uint64_t seed) {
  std::vector<uint8_t> img((size_t)B * 3 * S * S);
  for (size_t i = 0; i < img.size(); ++i)
    img[i] = (uint8_t)(philox_u32(seed, SITE_TEST, 0, i) & 255);
  return img;
}

std::vector<int32_t> make_labels(int B, int K, uint64_t seed) {
  std::vector<int32_t> y(B);
  for (int b = 0; b < B; ++b) y[b] = (int32_t)(philox_u32(seed, SITE_TEST, 1, b) % (uint32_t)K);
  return y;
}

// init_params, then every parameter moved by a little noise: LN weights away from 1, biases
// and LN biases away from 0, so every bias and affine path carries a value that matters.
std::vector<float> make_params(const Config& c, const ParamLayout& l, uint64_t seed) {
  std::vector<float> p(l.total, 0.0f);
  init_params(c, l, seed, p.data());
  for (const ParamTensor& t : l.tensors)
    for (size_t i = 0; i < t.numel; ++i)
      p[t.offset + i] += 0.05f * (philox_uniform(seed, SITE_TEST, 2, t.offset + i) - 0.5f);
  return p;
}

// Every tensor of two flat buffers; the failure names the tensor.
::testing::AssertionResult tensors_close(const ParamLayout& l, const std::vector<float>& got,
                                         const std::vector<float>& ref, double rtol, double atol,
                                         const std::string& what) {
  for (const ParamTensor& t : l.tensors) {
    ::testing::AssertionResult r =
        allclose(got.data() + t.offset, ref.data() + t.offset, t.numel, rtol, atol);
    if (!r) return ::testing::AssertionFailure() << what << " of " << t.name << ": " << r.message();
  }
  return ::testing::AssertionSuccess();
}

// |got - ref| <= rtol * scale[i] for every element: `scale` is the magnitude of the operands
// that formed the value, so the bound covers rounding where they cancel. Names the tensor.
::testing::AssertionResult close_to_scale(const ParamLayout& l, const std::vector<float>& got,
                                          const std::vector<float>& ref,
                                          const std::vector<double>& scale, double rtol,
                                          const std::string& what) {
  for (const ParamTensor& t : l.tensors)
    for (size_t i = t.offset; i < t.offset + t.numel; ++i) {
      const double err = std::fabs((double)got[i] - (double)ref[i]);
      if (!(err <= rtol * scale[i]))
        return ::testing::AssertionFailure()
               << what << " of " << t.name << "[" << i - t.offset << "]: " << got[i]
               << " vs reference " << ref[i] << " (error " << err << " > " << rtol << " * "
               << scale[i] << ")";
    }
  return ::testing::AssertionSuccess();
}

struct Tol {
  double rtol, atol;
};

struct StepTol {
  Tol loss{1e-5, 1e-6};
  Tol logits{1e-5, 1e-5};
  Tol grads{1e-4, 1e-6};
  // > 0 (BF16): gradients compared per tensor by relative L2 error ||got - ref|| / ||ref||
  // instead of elementwise (single entries near zero carry the operands' rounding, ~2^-8 of
  // the terms that cancelled there, which no elementwise rtol describes).
  double grad_rel_l2 = 0;
  double metrics_loss_rtol = 1e-5;
  int correct_slack = 0;  // images whose argmax may flip (a near-tie moved by the rounding)
  double norm_vs_cpu_rtol = 1e-5;  // the global gradient norm vs the CPU model's
};

// Worst per-tensor relative L2 error of got vs ref; the tensor's name into *worst_name.
double worst_rel_l2(const ParamLayout& l, const std::vector<float>& got,
                    const std::vector<float>& ref, std::string* worst_name) {
  double worst = 0;
  for (const ParamTensor& t : l.tensors) {
    double e = 0, r = 0;
    for (size_t i = t.offset; i < t.offset + t.numel; ++i) {
      e += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
      r += (double)ref[i] * ref[i];
    }
    const double rel = std::sqrt(e) / std::max(std::sqrt(r), 1e-30);
    if (rel > worst) {
      worst = rel;
      *worst_name = t.name;
    }
  }
  return worst;
}

// Runs the same sequence on the CUDA and the CPU model and compares after every stage:
//   step A: forward(batch 1) + backward, forward(batch 2) + backward (accumulating),
//           optimizer_step(t=1, grad_scale=1/2)
//   step B: zero_grad, forward(batch 1, other step) + backward, optimizer_step(t=2) from the
//           state step A left (non-zero moments)
//   metrics of the three training forwards; an eval forward; infer() on normalised input.
void compare_training(const Config& c, ModelOptions o, const OptimConfig& opt, int B,
                      const StepTol& tol, bool check_clip_active) {
  std::unique_ptr<Model> gpu = make_cuda_model(c, o);
  std::unique_ptr<Model> cpu = make_cpu_model(c, o);
  const ParamLayout& L = cpu->layout();
  ASSERT_EQ(gpu->layout().total, L.total);
  const size_t n = L.total;
  const int K = c.classes, S = o.input.src_size;

  const std::vector<float> p0 = make_params(c, L, 7);
  gpu->set_params(p0.data());
  cpu->set_params(p0.data());
  std::vector<float> zeros(n, 0.0f);
  gpu->set_adam_state(zeros.data(), zeros.data());
  cpu->set_adam_state(zeros.data(), zeros.data());
  gpu->zero_grad();
  cpu->zero_grad();

  const std::vector<uint8_t> img1 = make_images(B, S, 11), img2 = make_images(B, S, 12);
  const std::vector<int32_t> y1 = make_labels(B, K, 11), y2 = make_labels(B, K, 12);
  std::vector<float> lg(B * K), lc(B * K), a(n), b(n), a2(n), b2(n);

  auto compare_forward = [&](const char* what) {
    SCOPED_TRACE(what);
    EXPECT_TRUE(allclose(std::vector<float>{gpu->last_loss()}, std::vector<float>{cpu->last_loss()},
                         tol.loss.rtol, tol.loss.atol))
        << "loss";
    gpu->get_logits(lg.data());
    cpu->get_logits(lc.data());
    EXPECT_TRUE(allclose(lg, lc, tol.logits.rtol, tol.logits.atol)) << "logits";
  };
  auto compare_grads = [&](const char* what) {
    SCOPED_TRACE(what);
    gpu->get_grads(a.data());
    cpu->get_grads(b.data());
    if (tol.grad_rel_l2 > 0) {
      std::string name;
      const double e = worst_rel_l2(L, a, b, &name);
      EXPECT_LE(e, tol.grad_rel_l2) << "gradient of " << name << ": relative L2 error";
      printf("    %s: worst gradient relative L2 error %.4f (%s)\n", what, e, name.c_str());
    } else {
      EXPECT_TRUE(tensors_close(L, a, b, tol.grads.rtol, tol.grads.atol, "gradient"));
    }
  };
  // The optimizer stage. Adam's first step moves each parameter by about lr*g/(|g|+eps): a
  // gradient that is tiny (or cancels against weight decay) turns its FP32 rounding into a
  // step error of a good fraction of lr, so an elementwise comparison of the two models' updated
  // parameters cannot be tight. The stage is therefore checked on its own inputs: the CUDA
  // model's update from its own gradients and state against the reference optimizer
  // (cpu/optim, which the CPU model runs) on the same numbers — tight; the gradients themselves
  // were compared with the CPU model's above. Then the CPU model's state is copied into the
  // CUDA model, so the next stage starts from identical parameters and moments.
  std::vector<float> g_gpu(n), p_prev(n), m_prev(n), v_prev(n), pe(n), me(n), ve(n);
  auto before_update = [&]() {
    gpu->get_grads(g_gpu.data());
    gpu->get_params(p_prev.data());
    gpu->get_adam_state(m_prev.data(), v_prev.data());
  };
  auto check_update = [&](const char* what, float lr, int64_t t, float grad_scale) {
    SCOPED_TRACE(what);
    pe = p_prev;
    me = m_prev;
    ve = v_prev;
    const double norm = ref::global_grad_norm(g_gpu.data(), n, grad_scale);
    const float coef = ref::clip_coefficient(norm, opt.clip_grad);
    for (const ParamTensor& pt : L.tensors)
      ref::adam_update(pe.data() + pt.offset, g_gpu.data() + pt.offset, me.data() + pt.offset,
                       ve.data() + pt.offset, pt.numel, opt, lr, t, grad_scale, coef, pt.decay);
    const float ng = gpu->last_grad_norm(), nc = cpu->last_grad_norm();
    if (opt.clip_grad > 0) {
      EXPECT_NEAR(ng, norm, 1e-6 * norm) << "global gradient norm vs the reference on the same grads";
      EXPECT_NEAR(ng, nc, tol.norm_vs_cpu_rtol * nc) << "global gradient norm vs the CPU model";
    } else {  // no clipping: neither model computes the norm (common/model.h)
      EXPECT_TRUE(std::isnan(ng)) << ng;
      EXPECT_TRUE(std::isnan(nc)) << nc;
    }
    if (check_clip_active) {
      EXPECT_LT(coef, 1.0f) << "the test means clipping to be active";
    }
    gpu->get_params(a.data());
    gpu->get_adam_state(a2.data(), b2.data());
    // Bounds relative to the operands: m = b1*m + (1-b1)*g' can cancel to near 0, and the
    // clip coefficient (float on the device, from a double norm here) differs by ~1e-7.
    std::vector<double> sp(n), sm(n), sv(n);
    for (const ParamTensor& pt : L.tensors)
      for (size_t i = pt.offset; i < pt.offset + pt.numel; ++i) {
        double g = std::fabs((double)g_gpu[i] * grad_scale * coef);
        if (opt.kind == OptimConfig::Adam && pt.decay) g += opt.weight_decay * std::fabs(p_prev[i]);
        sp[i] = std::fabs(p_prev[i]) + lr;
        sm[i] = opt.beta1 * std::fabs(m_prev[i]) + (1 - opt.beta1) * g;
        sv[i] = opt.beta2 * v_prev[i] + (1 - opt.beta2) * g * g;
      }
    EXPECT_TRUE(close_to_scale(L, a, pe, sp, 1e-6, "updated parameter"));
    EXPECT_TRUE(close_to_scale(L, a2, me, sm, 1e-6, "Adam m"));
    EXPECT_TRUE(close_to_scale(L, b2, ve, sv, 1e-6, "Adam v"));
    // The update really moved the parameters (else the comparison above proves little).
    double moved = 0;
    for (size_t i = 0; i < n; ++i) moved = std::max(moved, (double)std::fabs(a[i] - p_prev[i]));
    EXPECT_GT(moved, 0.5 * lr);
    // Continue both models from the CPU model's state.
    cpu->get_params(b.data());
    gpu->set_params(b.data());
    cpu->get_adam_state(a.data(), a2.data());
    gpu->set_adam_state(a.data(), a2.data());
  };

  // Step A: two accumulated micro-batches.
  for (Model* m : {gpu.get(), cpu.get()}) m->forward(img1.data(), y1.data(), B, true, 5);
  compare_forward("step A, micro-batch 1");
  for (Model* m : {gpu.get(), cpu.get()}) m->backward();
  compare_grads("step A, micro-batch 1");
  for (Model* m : {gpu.get(), cpu.get()}) m->forward(img2.data(), y2.data(), B, true, 6);
  compare_forward("step A, micro-batch 2");
  for (Model* m : {gpu.get(), cpu.get()}) m->backward();
  compare_grads("step A, accumulated");
  before_update();
  for (Model* m : {gpu.get(), cpu.get()}) m->optimizer_step(opt, 1e-3f, 1, 0.5f);
  check_update("step A", 1e-3f, 1, 0.5f);

  // Step B: from the updated state, t = 2 (bias correction, non-zero moments).
  for (Model* m : {gpu.get(), cpu.get()}) {
    m->zero_grad();
    m->forward(img1.data(), y1.data(), B, true, 7);
  }
  compare_forward("step B");
  for (Model* m : {gpu.get(), cpu.get()}) m->backward();
  compare_grads("step B");
  before_update();
  for (Model* m : {gpu.get(), cpu.get()}) m->optimizer_step(opt, 1e-3f, 2, 1.0f);
  check_update("step B", 1e-3f, 2, 1.0f);

  const Metrics mg = gpu->take_metrics(), mc = cpu->take_metrics();
  EXPECT_EQ(mg.count, 3 * B);
  EXPECT_EQ(mg.count, mc.count);
  EXPECT_NEAR(mg.correct, mc.correct, tol.correct_slack);
  EXPECT_NEAR(mg.loss_sum, mc.loss_sum, tol.metrics_loss_rtol * std::fabs(mc.loss_sum));
  const Metrics empty = gpu->take_metrics();  // take_metrics() resets
  EXPECT_EQ(empty.count, 0);
  EXPECT_EQ(empty.loss_sum, 0.0);

  // Evaluation forward: no dropout, no augmentation.
  for (Model* m : {gpu.get(), cpu.get()}) m->forward(img2.data(), y2.data(), B, false, 8);
  compare_forward("eval forward");
  // backward() after an eval forward: the gradient without dropout, as on the CPU model.
  for (Model* m : {gpu.get(), cpu.get()}) {
    m->zero_grad();
    m->backward();
  }
  compare_grads("eval forward");

  // infer() on already normalised float input, more images than max_batch (chunked).
  const int NI = 2 * o.max_batch + 1;
  const size_t img_floats = (size_t)3 * c.image_size * c.image_size;
  std::vector<float> x((size_t)NI * img_floats), ig((size_t)NI * K), ic((size_t)NI * K);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 2.0f * philox_uniform(3, SITE_TEST, 4, i) - 1.0f;
  gpu->infer(x.data(), NI, ig.data());
  cpu->infer(x.data(), NI, ic.data());
  EXPECT_TRUE(allclose(ig, ic, tol.logits.rtol, tol.logits.atol)) << "infer logits";
  EXPECT_THROW(gpu->backward(), Error) << "infer() replaced the forward's activations";
}

Config tiny() { return preset("tiny"); }

ModelOptions options(int max_batch, Augment aug, float smoothing) {
  ModelOptions o;
  o.seed = 1234;
  o.label_smoothing = smoothing;
  o.input.augment = aug;
  o.max_batch = max_batch;
  o.precision = vit::Precision::Fp32;
  return o;
}

// The tiny preset (T=17, C=64, 2 layers, 2 heads, MLP 128, tanh GELU, no final LN), dropout
// 0.1 everywhere, crop-flip augmentation, AdamW with weight decay and active clipping.
TEST(CudaModel, TrainingStepMatchesCpuTinyAdamW) {
  VIT_REQUIRE_GPU();
  Config c = tiny();
  c.dropout = 0.1f;
  c.attn_dropout = 0.1f;
  OptimConfig opt;
  opt.kind = OptimConfig::AdamW;
  opt.weight_decay = 0.05f;
  opt.clip_grad = 0.05f;
  compare_training(c, options(4, Augment::CropFlip, 0.1f), opt, 3, StepTol{}, true);
}

// --precision bf16 against the FP32 reference. Every GEMM operand is rounded to BF16 (unit
// roundoff u = 2^-8) and the GEMMs accumulate in FP32, so each GEMM output is off by at most
// ~2u of the sum of absolute products (tests/test_matmul_lt.cu checks that bound per GEMM);
// through the 2 layers, the head and the backward the errors add up like random walks.
// Stated tolerances: loss and logits within 2e-2 relative (+ 2e-3 absolute, for logits near
// 0), each gradient tensor within 2% relative L2 error of the reference's and the global
// gradient norm within 1%, the metrics' loss sum within 1e-2, one image's argmax may flip.
// Measured under simt (printed per stage): worst gradient tensor 0.40..0.64% relative L2, the
// norm 0.02..0.1%. The optimizer stage is FP32 and is still checked tightly on the model's own
// gradients (check_update). An FP32 path by mistake would pass too, so
// Bf16IsNotFp32AndIsDeterministic checks that the bf16 mode's bits differ from fp32's.
StepTol bf16_tol() {
  StepTol t;
  t.loss = {2e-2, 2e-3};
  t.logits = {2e-2, 2e-3};
  t.grad_rel_l2 = 0.02;
  t.norm_vs_cpu_rtol = 1e-2;
  t.metrics_loss_rtol = 1e-2;
  t.correct_slack = 1;
  return t;
}

TEST(CudaModel, Bf16TrainingStepMatchesCpuTinyAdamW) {
  VIT_REQUIRE_GPU();
  Config c = tiny();
  c.dropout = 0.1f;
  c.attn_dropout = 0.1f;
  OptimConfig opt;
  opt.kind = OptimConfig::AdamW;
  opt.weight_decay = 0.05f;
  opt.clip_grad = 0.05f;
  ModelOptions o = options(4, Augment::CropFlip, 0.1f);
  o.precision = Precision::Bf16;
  compare_training(c, o, opt, 3, bf16_tol(), true);
}

TEST(CudaModel, Bf16TrainingStepMatchesCpuTinyFinalLnErfAdam) {
  VIT_REQUIRE_GPU();
  Config c = tiny();
  c.final_ln = true;
  c.gelu = Gelu::Erf;
  c.qkv_bias = false;
  c.ln_eps = 1e-6f;
  c.dropout = 0.2f;
  c.attn_dropout = 0.15f;
  OptimConfig opt;
  opt.kind = OptimConfig::Adam;
  opt.weight_decay = 0.01f;
  ModelOptions o = options(6, Augment::Flip, 0.0f);
  o.precision = Precision::Bf16;
  compare_training(c, o, opt, 5, bf16_tol(), false);
}

TEST(CudaModel, Bf16TrainingStepMatchesCpuBasicShapes) {
  VIT_REQUIRE_GPU();
  Config c = preset("basic");
  c.layers = 1;
  OptimConfig opt;
  opt.clip_grad = 1.0f;
  ModelOptions o = options(2, Augment::RrcFlip, 0.1f);
  o.precision = Precision::Bf16;
  compare_training(c, o, opt, 2, bf16_tol(), false);
}

// The other branches: final LayerNorm, erf GELU, no qkv bias, flip only, plain Adam with L2
// weight decay, no clipping, odd batch, and a batch smaller than max_batch.
TEST(CudaModel, TrainingStepMatchesCpuTinyFinalLnErfAdam) {
  VIT_REQUIRE_GPU();
  Config c = tiny();
  c.final_ln = true;
  c.gelu = Gelu::Erf;
  c.qkv_bias = false;
  c.ln_eps = 1e-6f;
  c.dropout = 0.2f;
  c.attn_dropout = 0.15f;
  OptimConfig opt;
  opt.kind = OptimConfig::Adam;
  opt.weight_decay = 0.01f;
  compare_training(c, options(6, Augment::Flip, 0.0f), opt, 5, StepTol{}, false);
}

// The basic preset's shapes (patch 4, T=65, C=256, 4 heads of 64, MLP 1024) with one layer,
// B=2, random-resized-crop (so the input kernel resizes) and dropout on.
TEST(CudaModel, TrainingStepMatchesCpuBasicShapes) {
  VIT_REQUIRE_GPU();
  Config c = preset("basic");
  c.layers = 1;
  OptimConfig opt;
  opt.clip_grad = 1.0f;
  StepTol tol;
  tol.grads = {2e-4, 2e-6};
  compare_training(c, options(2, Augment::RrcFlip, 0.1f), opt, 2, tol, false);
}

// vit-b16 shapes: image 224 (the input kernel resizes 32 -> 224), patch 16, T=197, C=768,
// 12 heads, MLP 3072, erf GELU, final LN; one layer, B=1. Forward and backward vs the CPU.
TEST(CudaModel, ForwardBackwardMatchesCpuVitB16Shapes) {
  VIT_REQUIRE_GPU();
  Config c = preset("vit-b16");
  c.layers = 1;
  c.dropout = 0.1f;  // the preset has none; on here so the masks are checked at this size too
  c.attn_dropout = 0.1f;
  ModelOptions o = options(1, Augment::CropFlip, 0.1f);
  std::unique_ptr<Model> gpu = make_cuda_model(c, o);
  std::unique_ptr<Model> cpu = make_cpu_model(c, o);
  const ParamLayout& L = cpu->layout();
  const std::vector<float> p0 = make_params(c, L, 8);
  const std::vector<uint8_t> img = make_images(1, 32, 21);
  const std::vector<int32_t> y = make_labels(1, c.classes, 21);
  for (Model* m : {gpu.get(), cpu.get()}) {
    m->set_params(p0.data());
    m->zero_grad();
    m->forward(img.data(), y.data(), 1, true, 3);
  }
  EXPECT_NEAR(gpu->last_loss(), cpu->last_loss(), 1e-5 * std::fabs(cpu->last_loss()) + 1e-6);
  std::vector<float> lg(c.classes), lc(c.classes);
  gpu->get_logits(lg.data());
  cpu->get_logits(lc.data());
  EXPECT_TRUE(allclose(lg, lc, 1e-5, 1e-5));
  for (Model* m : {gpu.get(), cpu.get()}) m->backward();
  std::vector<float> a(L.total), b(L.total);
  gpu->get_grads(a.data());
  cpu->get_grads(b.data());
  EXPECT_TRUE(tensors_close(L, a, b, 2e-4, 2e-6, "gradient"));
}

// Three training steps on a fresh model (tiny, dropout, crop-flip, AdamW with clipping): the
// parameters after each step. Under simt, run with the given thread order.
std::vector<std::vector<float>> three_steps(Precision prec, bool reverse_order) {
  Config c = tiny();
  OptimConfig opt;
  opt.kind = OptimConfig::AdamW;
  opt.weight_decay = 0.05f;
  opt.clip_grad = 0.5f;
  const int B = 3;
  ModelOptions o = options(B, Augment::CropFlip, 0.1f);
  o.precision = prec;
  const ParamLayout L(c);
  const std::vector<float> p0 = make_params(c, L, 9);
#if defined(VIT_SIMT)
  simt::set_thread_order(reverse_order ? simt::Order::Reverse : simt::Order::Forward);
#endif
  std::vector<std::vector<float>> out;
  std::unique_ptr<Model> m = make_cuda_model(c, o);
  m->set_params(p0.data());
  std::vector<float> z(L.total, 0.0f);
  m->set_adam_state(z.data(), z.data());
  for (int t = 1; t <= 3; ++t) {
    const std::vector<uint8_t> img = make_images(B, 32, 100 + t);
    const std::vector<int32_t> y = make_labels(B, c.classes, 100 + t);
    m->zero_grad();
    m->forward(img.data(), y.data(), B, true, (uint64_t)t);
    m->backward();
    m->optimizer_step(opt, 1e-3f, t, 1.0f);
    out.emplace_back(L.total);
    m->get_params(out.back().data());
  }
#if defined(VIT_SIMT)
  simt::set_thread_order(simt::Order::Forward);
#endif
  EXPECT_NE(0, memcmp(out[0].data(), p0.data(), L.total * sizeof(float)))
      << "step 1 did not change the parameters";
  return out;
}

// Three training steps run twice on fresh models give bitwise identical parameters after each
// step. Under simt the second run has its threads in reverse order: a kernel whose result
// depended on thread scheduling (float atomics, racy reductions) would differ.
TEST(CudaModel, ThreeStepsTwiceBitwiseIdentical) {
  VIT_REQUIRE_GPU();
  const auto a = three_steps(Precision::Fp32, false), b = three_steps(Precision::Fp32, true);
  for (int t = 0; t < 3; ++t)
    EXPECT_EQ(0, memcmp(a[t].data(), b[t].data(), a[t].size() * sizeof(float)))
        << "parameters after step " << t + 1 << " differ between the two runs";
}

// The same in bf16 mode (cuBLASLt GEMMs, BF16 stores, the AdamW step writing the BF16 copy);
// and its parameters are not the fp32 mode's, so the BF16 path really ran (how close the two
// are is the Bf16TrainingStep* tests' business: elementwise, Adam's early steps of ~lr*sign(g)
// turn a near-zero gradient's rounding into a difference of up to 2 lr per step).
TEST(CudaModel, Bf16IsNotFp32AndIsDeterministic) {
  VIT_REQUIRE_GPU();
  const auto a = three_steps(Precision::Bf16, false), b = three_steps(Precision::Bf16, true);
  const auto f = three_steps(Precision::Fp32, false);
  for (int t = 0; t < 3; ++t) {
    EXPECT_EQ(0, memcmp(a[t].data(), b[t].data(), a[t].size() * sizeof(float)))
        << "bf16 parameters after step " << t + 1 << " differ between the two runs";
    EXPECT_NE(0, memcmp(a[t].data(), f[t].data(), a[t].size() * sizeof(float)))
        << "bf16 mode gave the fp32 mode's bits after step " << t + 1;
  }
}

// Steps issued back to back, with no host read in between, end where the same steps do when
// the host reads the parameters after each one. The copy stream then runs ahead of the compute
// stream, so the two staging slots and both event waits in forward() are exercised (under simt,
// deleting either cudaStreamWaitEvent makes the unsynchronised run read a later batch).
TEST(CudaModel, StepsWithoutHostSyncMatchSyncedSteps) {
  VIT_REQUIRE_GPU();
  Config c = tiny();
  OptimConfig opt;
  opt.kind = OptimConfig::AdamW;
  const int B = 2, steps = 5;
  const ModelOptions o = options(B, Augment::CropFlip, 0.1f);
  const ParamLayout L(c);
  const std::vector<float> p0 = make_params(c, L, 4);
  std::vector<float> final_params[2];
  for (int run = 0; run < 2; ++run) {
    std::unique_ptr<Model> m = make_cuda_model(c, o);
    m->set_params(p0.data());
    std::vector<float> z(L.total, 0.0f);
    m->set_adam_state(z.data(), z.data());
    std::vector<float> p(L.total);
    for (int t = 1; t <= steps; ++t) {
      const std::vector<uint8_t> img = make_images(B, 32, 200 + t);
      const std::vector<int32_t> y = make_labels(B, c.classes, 200 + t);
      m->zero_grad();
      m->forward(img.data(), y.data(), B, true, (uint64_t)t);
      m->backward();
      m->optimizer_step(opt, 1e-3f, t, 1.0f);
      if (run == 0) m->get_params(p.data());  // synchronises every step
    }
    m->get_params(p.data());
    final_params[run] = p;
  }
  EXPECT_TRUE(vit_test::bitwise_equal(final_params[1], final_params[0]));
}

// A fresh model holds init_params(options.seed), as the CPU model does; zero Adam state.
TEST(CudaModel, FreshModelHasInitParams) {
  VIT_REQUIRE_GPU();
  Config c = tiny();
  const ModelOptions o = options(2, Augment::None, 0.0f);
  std::unique_ptr<Model> gpu = make_cuda_model(c, o);
  std::unique_ptr<Model> cpu = make_cpu_model(c, o);
  const size_t n = cpu->layout().total;
  std::vector<float> a(n), b(n), m(n), v(n);
  gpu->get_params(a.data());
  cpu->get_params(b.data());
  EXPECT_EQ(0, memcmp(a.data(), b.data(), n * sizeof(float)));
  gpu->get_adam_state(m.data(), v.data());
  for (size_t i = 0; i < n; ++i) ASSERT_TRUE(m[i] == 0.0f && v[i] == 0.0f) << "element " << i;
}

// vit_predict --attention on --device cuda: the probabilities recomputed by attention_probs
// from every layer's saved qkv and lse are the CPU model's, and so are the rollout maps drawn
// from them. 5 images through a model planned for 2 (chunks of 2, 2, 1); dropout configured
// but inference has none; erf GELU + final LN so both architectures' paths run.
TEST(CudaModel, AttentionProbabilitiesAndRolloutMatchCpu) {
  VIT_REQUIRE_GPU();
  Config c = tiny();
  c.gelu = Gelu::Erf;
  c.final_ln = true;
  ModelOptions o = options(2, Augment::None, 0.0f);
  o.fp16_input = Fp16Input::Off;
  std::unique_ptr<Model> gpu = make_cuda_model(c, o);
  std::unique_ptr<Model> cpu = make_cpu_model(c, o);
  const ParamLayout l(c);
  const std::vector<float> p = make_params(c, l, 21);
  gpu->set_params(p.data());
  cpu->set_params(p.data());
  const int B = 5, L = c.layers, NH = c.heads, T = c.tokens(), K = c.classes;
  const size_t img = (size_t)3 * c.image_size * c.image_size, per = (size_t)L * NH * T * T;
  std::vector<float> x(B * img);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 2.0f * philox_uniform(8, SITE_TEST, 5, i) - 1.0f;
  std::vector<float> lg(B * K), lc(B * K), pg(B * per, NAN), pc(B * per);
  gpu->infer_attention(x.data(), B, lg.data(), pg.data());
  cpu->infer_attention(x.data(), B, lc.data(), pc.data());
  EXPECT_TRUE(allclose(lg, lc, 1e-4, 1e-5)) << "logits";
  // Probabilities in [0, 1]: relative error of the scores' float rounding after 2 layers.
  EXPECT_TRUE(allclose(pg, pc, 1e-4, 1e-6)) << "probabilities";
  for (int b = 0; b < B; ++b) {
    const std::vector<float> rg = attention_rollout(pg.data() + b * per, L, NH, T);
    const std::vector<float> rc = attention_rollout(pc.data() + b * per, L, NH, T);
    EXPECT_TRUE(allclose(rg, rc, 1e-4, 1e-7)) << "rollout of image " << b;
  }
}

TEST(CudaModel, RejectsBatchLargerThanPlanned) {
  VIT_REQUIRE_GPU();
  Config c = tiny();
  std::unique_ptr<Model> m = make_cuda_model(c, options(2, Augment::None, 0.0f));
  const std::vector<uint8_t> img = make_images(3, 32, 1);
  const std::vector<int32_t> y = make_labels(3, c.classes, 1);
  EXPECT_THROW(m->forward(img.data(), y.data(), 3, true, 0), Error);
  EXPECT_THROW(m->backward(), Error) << "backward before any training forward";
}

// backward() stores the output gradients over activations it has consumed: a second one needs
// a new forward (common/model.h), and says so instead of returning wrong gradients.
TEST(CudaModel, SecondBackwardNeedsANewForward) {
  VIT_REQUIRE_GPU();
  Config c = tiny();
  std::unique_ptr<Model> m = make_cuda_model(c, options(2, Augment::None, 0.0f));
  const std::vector<uint8_t> img = make_images(2, 32, 1);
  const std::vector<int32_t> y = make_labels(2, c.classes, 1);
  m->forward(img.data(), y.data(), 2, true, 0);
  m->backward();
  EXPECT_THROW(m->backward(), Error);
  m->forward(img.data(), y.data(), 2, true, 1);
  EXPECT_NO_THROW(m->backward());
  // train_step ran its own backward: none may follow it
  Model::MicroBatch mb = {img.data(), y.data(), 2, 2};
  m->train_step(&mb, 1, OptimConfig(), 1e-3f, 1, 1.0f);
  EXPECT_THROW(m->backward(), Error);
}

// The memory plan: parameters, gradients and Adam moments exactly; activations at least the
// saved activations counted by hand, growing with the batch.
TEST(CudaModel, MemoryPlan) {
  Config c = tiny();
  ParamLayout L(c);
  ModelOptions o = options(8, Augment::None, 0.0f);
  const CudaMemoryPlan p8 = cuda_memory_plan(c, o);
  EXPECT_EQ(p8.param_floats, L.total);
  EXPECT_EQ(p8.param_bytes, 4 * L.total * sizeof(float));
  const size_t B = 8, T = c.tokens(), C = c.hidden, M = c.mlp;
  // Per layer kept for the backward: ln1, qkv (3C), att, mid, ln2 (C each but qkv), fc1 pre and
  // post GELU (M each); plus the residual stream entering every layer and leaving the last.
  const size_t saved = c.layers * B * T * (7 * C + 2 * M) + (c.layers + 1) * B * T * C;
  EXPECT_GE(p8.activation_bytes, saved * sizeof(float));
  o.max_batch = 16;
  const CudaMemoryPlan p16 = cuda_memory_plan(c, o);
  EXPECT_GE(p16.activation_bytes - p8.activation_bytes, saved * sizeof(float));
  EXPECT_EQ(p16.total_bytes(), p16.param_bytes + p16.activation_bytes);
  EXPECT_NE(p16.describe().find("batch 16"), std::string::npos) << p16.describe();
  // bf16: + the BF16 weight copy (2 bytes per parameter float); per layer ln1, qkv (3C), att,
  // ln2, fc1_pre and fc1_act, and the stored output gradients dqkv (3C) and dpre (M), at 2 bytes
  // instead of 4; + the FP32 attention kernels' FP32 dqkv (B,T,3C) when the head dim is not a
  // tensor-core one. At tiny's batch 8 every other piece is a multiple of the 256-byte arena
  // alignment, so the difference is exact.
  auto align256 = [](size_t b) { return (b + 255) / 256 * 256; };
  ModelOptions ob = options(8, Augment::None, 0.0f);
  ob.precision = Precision::Bf16;
  const CudaMemoryPlan b8 = cuda_memory_plan(c, ob);
  EXPECT_TRUE(b8.bf16);
  EXPECT_FALSE(p8.bf16);
  EXPECT_EQ(b8.param_bytes, p8.param_bytes + L.total * 2);
  const size_t BTC = B * T * C, BTM = B * T * M;
  const size_t halved = c.layers * (9 * BTC + 3 * BTM) * 2;
  const size_t added =
      attention_tc_supports_head_dim(C / c.heads) ? 0 : align256(3 * BTC * sizeof(float));
  EXPECT_EQ(p8.activation_bytes - b8.activation_bytes, halved - added);
  EXPECT_NE(b8.describe().find("+ BF16 weights"), std::string::npos) << b8.describe();
  EXPECT_NE(b8.describe().find("BF16/FP32 activations"), std::string::npos) << b8.describe();
  EXPECT_NE(out_of_memory_message(b8, 1 << 20).find("BF16/FP32 activations"), std::string::npos);
  o.max_batch = 0;
  EXPECT_THROW(cuda_memory_plan(c, o), Error);
}

}  // namespace
