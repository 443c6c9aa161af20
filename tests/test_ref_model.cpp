// tests/test_ref_model.cpp — the whole reference ViT (cpu/model.h): end-to-end gradient check in
// double (every parameter tensor and the input, dropout on at a fixed step, final LN on and
// off, both GELUs), float CpuModel against RefModel<double>, determinism, and a short training
// run that must lower the loss.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "common/error.h"
#include "common/model.h"
#include "common/philox.h"
#include "cpu/input.h"
#include "cpu/model.h"
#include "cpu/optim.h"
#include "tests/test_ref_util.h"
#include "tests/test_util.h"

using vit_test::gradcheck;
using vit_test::rand_vec;
using std::vector;

// T = 17 tokens (16 patches + CLS), hidden 24 with 3 heads of 8, MLP 40, 5 classes, 2 layers.
static vit::Config odd_config(bool final_ln, vit::Gelu g) {
  vit::Config c = vit::preset("tiny");
  c.image_size = 16; c.patch_size = 4; c.hidden = 24; c.heads = 3; c.mlp = 40; c.layers = 2;
  c.classes = 5; c.dropout = 0.1f; c.attn_dropout = 0.1f; c.final_ln = final_ln; c.gelu = g;
  return c;
}

// Parameters with every entry non-trivial: init, then larger weights and random LN / biases so
// every gradient term is exercised (std 0.02 makes the deep terms vanishingly small).
static vector<double> rich_params(const vit::Config& c, const vit::ParamLayout& l) {
  vector<float> p(l.total);
  vit::init_params(c, l, 1, p.data());
  auto r = rand_vec(l.total, 50, -0.3, 0.3);
  vector<double> d(l.total);
  for (size_t i = 0; i < l.total; ++i) d[i] = p[i] * 10.0 + r[i];
  return d;
}

struct GradCase { bool final_ln; vit::Gelu gelu; };
class RefModelGrad : public ::testing::TestWithParam<GradCase> {};

TEST_P(RefModelGrad, EveryTensorAndInput) {
  const vit::Config c = odd_config(GetParam().final_ln, GetParam().gelu);
  const int B = 2;
  vit::ref::RefModel<double> m(c, B, 77, 0.1f);
  const vit::ParamLayout& l = m.layout();
  ASSERT_EQ(c.tokens(), 17);
  vector<double> P = rich_params(c, l);
  auto x = rand_vec((size_t)B * 3 * 16 * 16, 51, -2, 2);
  const int32_t labels[B] = {3, 1};
  const uint64_t step = 5;
  auto f = [&] { return m.forward(x.data(), labels, B, true, step, P.data()); };
  const double loss = f();
  // dropout is on: eval and another step give other losses
  EXPECT_NE(loss, m.forward(x.data(), labels, B, false, step, P.data()));
  EXPECT_NE(loss, m.forward(x.data(), labels, B, true, step + 1, P.data()));
  EXPECT_EQ(loss, f());  // same step, same masks
  vector<double> G(l.total, 0.0), dx(x.size());
  m.backward(P.data(), G.data(), dx.data());
  // Bounds: the model composes ~40 ops; in double the central-difference error measured is
  // below 1e-9 absolute with gradients of 1e-4 .. 1; 1e-5 relative + 1e-8 absolute.
  const double rtol = 1e-5, atol = 1e-8;
  for (const vit::ParamTensor& t : l.tensors) {
    SCOPED_TRACE(t.name);
    EXPECT_TRUE(gradcheck(f, P.data() + t.offset, G.data() + t.offset, t.numel, 6, rtol, atol));
    double mx = 0;
    for (size_t i = 0; i < t.numel; ++i) mx = std::max(mx, std::fabs(G[t.offset + i]));
    EXPECT_GT(mx, 1e-6);  // every tensor really receives gradient
  }
  SCOPED_TRACE("input");
  EXPECT_TRUE(gradcheck(f, x.data(), dx.data(), x.size(), 24, rtol, atol));
}

INSTANTIATE_TEST_SUITE_P(Variants, RefModelGrad,
                         ::testing::Values(GradCase{false, vit::Gelu::Tanh}, GradCase{true, vit::Gelu::Tanh},
                                           GradCase{true, vit::Gelu::Erf}),
                         [](const auto& i) {
                           return std::string(i.param.final_ln ? "FinalLN" : "NoFinalLN") + "_" +
                                  vit::gelu_name(i.param.gelu);
                         });

TEST(RefModel, NoQkvBiasAndGradsAccumulate) {
  vit::Config c = odd_config(false, vit::Gelu::Tanh);
  c.qkv_bias = false;
  c.layers = 1;
  const int B = 2;
  vit::ref::RefModel<double> m(c, B, 3);
  const vit::ParamLayout& l = m.layout();
  EXPECT_EQ(l.blocks[0].qkv_b, vit::ParamLayout::NONE);
  vector<double> P = rich_params(c, l);
  auto x = rand_vec((size_t)B * 3 * 16 * 16, 52);
  const int32_t labels[B] = {0, 4};
  auto f = [&] { return m.forward(x.data(), labels, B, true, 1, P.data()); };
  f();
  vector<double> G(l.total, 0.0);
  m.backward(P.data(), G.data());
  EXPECT_TRUE(gradcheck(f, P.data() + l.blocks[0].qkv_w, G.data() + l.blocks[0].qkv_w, 3 * 24 * 24, 12, 1e-5, 1e-8));
  vector<double> G2 = G;
  f();  // gradcheck left the activations of a perturbed forward behind
  m.backward(P.data(), G2.data());  // += : twice the gradient
  for (size_t i = 0; i < l.total; ++i) ASSERT_NEAR(G2[i], 2 * G[i], 1e-12 + 1e-12 * std::fabs(G[i]));
}

// The float model of --device cpu against the double reference on the same parameters and the
// same (augmented, dropped-out) batch.
TEST(CpuModel, FloatMatchesDoubleReference) {
  vit::Config c = vit::preset("tiny");  // 32x32, patch 8: T = 17, hidden 64, 2 heads, 2 layers
  vit::ModelOptions o;
  o.seed = 9;
  o.max_batch = 4;
  o.label_smoothing = 0.1f;
  o.input.augment = vit::Augment::CropFlip;
  auto model = vit::make_cpu_model(c, o);
  const vit::ParamLayout& l = model->layout();
  const int B = 3;
  vector<uint8_t> img((size_t)B * 3 * 32 * 32);
  for (size_t i = 0; i < img.size(); ++i) img[i] = vit::philox_u32(1, 2, 3, i) & 255;
  const int32_t labels[B] = {1, 7, 7};
  vector<float> pf(l.total);
  model->get_params(pf.data());
  // 3x init: logits O(1) so the comparison means something. (Much larger weights, e.g. 5x with
  // LayerNorm gains of 5, make the net chaotic enough that float itself drifts by 1e-5.)
  for (size_t i = 0; i < l.total; ++i) pf[i] *= 3.0f;
  model->set_params(pf.data());
  model->forward(img.data(), labels, B, true, 4);
  model->backward();

  vit::ref::RefModel<double> ref(c, B, o.seed, o.label_smoothing);
  vector<double> x((size_t)B * 3 * 32 * 32), pd(pf.begin(), pf.end()), gd(l.total, 0.0);
  vit::ref::preprocess(img.data(), B, o.input, c, true, o.seed, 4, x.data());
  const double loss = ref.forward(x.data(), labels, B, true, 4, pd.data());
  ref.backward(pd.data(), gd.data());

  EXPECT_NEAR(model->last_loss(), loss, 1e-5 * std::fabs(loss));
  vector<float> logits((size_t)B * c.classes), g(l.total);
  model->get_logits(logits.data());
  EXPECT_TRUE(vit_test::allclose(logits.data(), ref.logits(), logits.size(), 1e-5, 1e-5));
  model->get_grads(g.data());
  // float accumulates ~1e-7 relative per op over ~40 ops; the largest gradient is ~1e-1
  EXPECT_TRUE(vit_test::allclose(g, gd, 1e-4, 2e-6));
}

TEST(CpuModel, DeterministicAndMetrics) {
  vit::Config c = vit::preset("tiny");
  vit::ModelOptions o;
  o.seed = 5;
  o.max_batch = 4;
  o.input.augment = vit::Augment::CropFlip;
  auto a = vit::make_cpu_model(c, o), b = vit::make_cpu_model(c, o);
  const int B = 4;
  vector<uint8_t> img((size_t)B * 3 * 32 * 32);
  for (size_t i = 0; i < img.size(); ++i) img[i] = vit::philox_u32(2, 2, 3, i) & 255;
  const int32_t labels[B] = {0, 1, 2, 3};
  a->forward(img.data(), labels, B, true, 10);
  b->forward(img.data(), labels, B, true, 10);
  EXPECT_EQ(a->last_loss(), b->last_loss());  // same seed and step: bit-identical
  const float l10 = a->last_loss();
  a->forward(img.data(), labels, B, true, 10);
  EXPECT_EQ(a->last_loss(), l10);
  a->forward(img.data(), labels, B, true, 11);
  EXPECT_NE(a->last_loss(), l10);  // other step: other dropout / crops
  vector<float> logits((size_t)B * c.classes);
  a->get_logits(logits.data());
  int correct = 0;
  for (int i = 0; i < B; ++i) {
    const float* z = &logits[(size_t)i * c.classes];
    correct += (int)(std::max_element(z, z + c.classes) - z) == labels[i];
  }
  vit::Metrics m = a->take_metrics();
  EXPECT_EQ(m.count, 3 * B);
  EXPECT_NEAR(m.loss_sum, B * (2 * l10 + a->last_loss()), 1e-4);
  EXPECT_EQ(a->take_metrics().count, 0);
  // infer on the eval pipeline equals forward(train=false), across chunks of max_batch
  a->forward(img.data(), labels, B, false, 0);
  a->get_logits(logits.data());
  vector<float> x((size_t)B * 3 * 32 * 32), inf(logits.size());
  vit::ref::preprocess(img.data(), B, o.input, c, false, 0, 0, x.data());
  vit::ModelOptions o2 = o;
  o2.max_batch = 3;  // 4 images: chunks of 3 + 1
  auto d = vit::make_cpu_model(c, o2);
  d->infer(x.data(), B, inf.data());
  EXPECT_TRUE(vit_test::allclose(inf, logits, 1e-6, 1e-6));
  (void)correct;
  EXPECT_THROW(a->forward(img.data(), labels, 5, true, 0), vit::Error);  // over max_batch
  EXPECT_THROW(d->backward(), vit::Error);  // infer leaves nothing to differentiate
}

TEST(CpuModel, OptimizerStepClipsAndReportsNorm) {
  vit::Config c = vit::preset("tiny");
  vit::ModelOptions o;
  o.max_batch = 2;
  auto m = vit::make_cpu_model(c, o);
  const size_t n = m->layout().total;
  vector<uint8_t> img((size_t)2 * 3 * 32 * 32);
  for (size_t i = 0; i < img.size(); ++i) img[i] = vit::philox_u32(3, 2, 3, i) & 255;
  const int32_t labels[2] = {4, 9};
  m->forward(img.data(), labels, 2, true, 0);
  m->backward();
  vector<float> g(n), p0(n), p1(n);
  m->get_grads(g.data());
  m->get_params(p0.data());
  double s = 0;
  for (float x : g) s += 0.5 * x * 0.5 * x;
  vit::OptimConfig opt;
  opt.clip_grad = (float)(0.1 * std::sqrt(s));  // forces clipping
  m->optimizer_step(opt, 1e-3f, 1, 0.5f);
  EXPECT_NEAR(m->last_grad_norm(), std::sqrt(s), 1e-6 * std::sqrt(s));
  m->get_params(p1.data());
  // First Adam step moves each parameter by lr * g/|g| (up to eps), whatever the clipping.
  const vit::ParamTensor* t = m->layout().find("head.weight");
  for (size_t i = t->offset; i < t->offset + t->numel; ++i)
    if (std::fabs(g[i]) > 1e-4) {
      ASSERT_NEAR(p1[i] - p0[i], g[i] > 0 ? -1e-3 : 1e-3, 2e-5) << i;
    }
  vector<float> mm(n), vv(n);
  m->get_adam_state(mm.data(), vv.data());
  const float coef = vit::ref::clip_coefficient(std::sqrt(s), opt.clip_grad);
  EXPECT_NEAR(mm[t->offset], 0.1f * g[t->offset] * 0.5f * coef, 1e-9);
}

TEST(CpuModel, TrainingLowersTheLoss) {
  vit::Config c = vit::preset("tiny");
  vit::ModelOptions o;
  o.seed = 1;
  o.max_batch = 16;
  auto m = vit::make_cpu_model(c, o);
  const int B = 16;
  vector<uint8_t> img((size_t)B * 3 * 32 * 32);
  vector<int32_t> labels(B);
  for (int b = 0; b < B; ++b) {  // class = which colour channel is bright, plus noise
    labels[b] = b % 3;
    for (int ch = 0; ch < 3; ++ch)
      for (int i = 0; i < 32 * 32; ++i) {
        const size_t k = ((size_t)b * 3 + ch) * 32 * 32 + i;
        img[k] = (uint8_t)((ch == labels[b] ? 150 : 50) + (vit::philox_u32(4, 4, 4, k) & 63));
      }
  }
  m->forward(img.data(), labels.data(), B, false, 0);
  const float before = m->last_loss();
  vit::OptimConfig opt;
  for (int t = 1; t <= 30; ++t) {
    m->zero_grad();
    m->forward(img.data(), labels.data(), B, true, t);
    m->backward();
    m->optimizer_step(opt, 1e-3f, t, 1.0f);
  }
  m->forward(img.data(), labels.data(), B, false, 0);
  const float after = m->last_loss();
  // from ln(10) = 2.30 at init; uniform over the 3 classes used would be ln(3) = 1.10
  EXPECT_LT(after, 0.5f) << "before " << before << " after " << after;
}
