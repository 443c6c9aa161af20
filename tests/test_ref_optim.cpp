// tests/test_ref_optim.cpp — Adam / AdamW, gradient clipping, LR schedules (cpu/optim.h) and
// weight init (cpu/init.cpp), checked against formulas written out here independently.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/model.h"
#include "cpu/optim.h"
#include "tests/test_util.h"

using namespace vit::ref;
using std::vector;

// PyTorch's Adam/AdamW written out in double, one element at a time.
static void adam_by_hand(vector<double>& p, const vector<double>& g, vector<double>& m,
                         vector<double>& v, const vit::OptimConfig& o, double lr, int t,
                         double gscale, bool decay) {
  for (size_t i = 0; i < p.size(); ++i) {
    double gi = g[i] * gscale;
    if (decay && o.kind == vit::OptimConfig::Adam) gi += o.weight_decay * p[i];
    if (decay && o.kind == vit::OptimConfig::AdamW) p[i] -= lr * o.weight_decay * p[i];
    m[i] = o.beta1 * m[i] + (1 - o.beta1) * gi;
    v[i] = o.beta2 * v[i] + (1 - o.beta2) * gi * gi;
    const double mhat = m[i] / (1 - std::pow((double)o.beta1, t));
    const double vhat = v[i] / (1 - std::pow((double)o.beta2, t));
    p[i] -= lr * mhat / (std::sqrt(vhat) + o.eps);
  }
}

TEST(RefAdam, StepsMatchFormula) {
  const size_t n = 37;
  for (auto kind : {vit::OptimConfig::Adam, vit::OptimConfig::AdamW})
    for (bool decay : {false, true}) {
      SCOPED_TRACE(std::string(kind == vit::OptimConfig::Adam ? "Adam" : "AdamW") + (decay ? " decay" : " no decay"));
      vit::OptimConfig o;
      o.kind = kind;
      o.weight_decay = 0.05f;
      o.beta1 = 0.8f;
      o.beta2 = 0.95f;
      vector<float> p(n), m(n, 0), v(n, 0), g(n);
      vector<double> pd(n), md(n, 0), vd(n, 0);
      for (size_t i = 0; i < n; ++i) pd[i] = p[i] = std::sin(1.0 + i);
      for (int t = 1; t <= 4; ++t) {
        vector<double> gd(n);
        for (size_t i = 0; i < n; ++i) gd[i] = g[i] = (float)std::cos(0.3 * i * t) * (i % 5 + 1);
        const float lr = 1e-2f * t, gscale = 0.5f, clip = 0.8f;
        adam_update(p.data(), g.data(), m.data(), v.data(), n, o, lr, t, gscale, clip, decay);
        adam_by_hand(pd, gd, md, vd, o, lr, t, (double)gscale * clip, decay);
        ASSERT_TRUE(vit_test::allclose(p, pd, 1e-5, 1e-6)) << "step " << t;
        ASSERT_TRUE(vit_test::allclose(m, md, 1e-5, 1e-7)) << "step " << t;
        ASSERT_TRUE(vit_test::allclose(v, vd, 1e-5, 1e-8)) << "step " << t;
      }
    }
}

TEST(RefAdam, DecayFlagHonoured) {
  // Zero gradient: only weight decay moves p. AdamW: p *= 1 - lr*wd exactly (the Adam part sees
  // g = 0 and m = 0). Adam: g' = wd*p, first step moves p by lr*sign(p) (mhat/sqrt(vhat) = 1).
  vit::OptimConfig o;
  o.weight_decay = 0.1f;
  vector<float> g(3, 0.0f), m(3, 0), v(3, 0);
  vector<float> p = {1.0f, -2.0f, 0.5f};
  o.kind = vit::OptimConfig::AdamW;
  adam_update(p.data(), g.data(), m.data(), v.data(), 3, o, 0.01f, 1, 1, 1, true);
  EXPECT_TRUE(vit_test::allclose(p, vector<double>{0.999, -1.998, 0.4995}, 1e-6, 0));
  p = {1.0f, -2.0f, 0.5f};
  adam_update(p.data(), g.data(), m.data(), v.data(), 3, o, 0.01f, 1, 1, 1, false);
  EXPECT_TRUE(vit_test::allclose(p, vector<double>{1.0, -2.0, 0.5}, 0, 0));
  o.kind = vit::OptimConfig::Adam;
  adam_update(p.data(), g.data(), m.data(), v.data(), 3, o, 0.01f, 1, 1, 1, true);
  EXPECT_TRUE(vit_test::allclose(p, vector<double>{0.99, -1.99, 0.49}, 1e-6, 0));
}

TEST(RefClip, NormAndCoefficient) {
  vector<float> g = {3, 0, 4, 0, 0};  // norm 5
  EXPECT_DOUBLE_EQ(global_grad_norm(g.data(), g.size(), 1.0f), 5.0);
  EXPECT_DOUBLE_EQ(global_grad_norm(g.data(), g.size(), 0.5f), 2.5);
  EXPECT_FLOAT_EQ(clip_coefficient(2.5, 1.0f), (float)(1.0 / (2.5 + 1e-6)));
  EXPECT_EQ(clip_coefficient(2.5, 3.0f), 1.0f);  // under the limit: untouched
  EXPECT_EQ(clip_coefficient(2.5, 0.0f), 1.0f);  // 0 = clipping off
  // many elements over several chunks: sum of squares of 1..n
  vector<float> big(200000);
  double s = 0;
  for (size_t i = 0; i < big.size(); ++i) { big[i] = (float)((i % 7) - 3); s += big[i] * big[i]; }
  EXPECT_NEAR(global_grad_norm(big.data(), big.size(), 2.0f), 2 * std::sqrt(s), 1e-9 * std::sqrt(s));
}

TEST(RefSchedule, ConstantAndWarmupCosine) {
  EXPECT_EQ(lr_constant(1e-3f, 17), 1e-3f);
  EXPECT_FLOAT_EQ(lr_warmup_cosine(1.0f, 0.0f, 10, 110, 1), 0.1f);
  EXPECT_FLOAT_EQ(lr_warmup_cosine(1.0f, 0.0f, 10, 110, 10), 1.0f);
  EXPECT_FLOAT_EQ(lr_warmup_cosine(1.0f, 0.0f, 10, 110, 60), 0.5f);  // half way: cos(pi/2)
  EXPECT_NEAR(lr_warmup_cosine(1.0f, 0.1f, 10, 110, 110), 0.1f, 1e-7);
  EXPECT_NEAR(lr_warmup_cosine(1.0f, 0.0f, 0, 100, 0), 1.0f, 1e-7);
}

TEST(RefInit, DistributionsAndDeterminism) {
  vit::Config c = vit::preset("tiny");
  c.final_ln = true;
  vit::ParamLayout l(c);
  vector<float> a(l.total, 7.0f), b(l.total, 7.0f), d(l.total);
  vit::init_params(c, l, 123, a.data());
  vit::init_params(c, l, 123, b.data());
  vit::init_params(c, l, 124, d.data());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, d);
  vector<bool> covered(l.total, false);
  for (const auto& t : l.tensors) {
    SCOPED_TRACE(t.name);
    double s = 0, s2 = 0, mx = 0;
    for (size_t i = 0; i < t.numel; ++i) {
      const double x = a[t.offset + i];
      s += x; s2 += x * x; mx = std::max(mx, std::fabs(x));
      covered[t.offset + i] = true;
    }
    const double mean = s / t.numel, sd = std::sqrt(s2 / t.numel - mean * mean);
    const bool ln = t.name.find("ln") != std::string::npos;
    const bool weight = t.name.size() > 7 && t.name.substr(t.name.size() - 7) == ".weight";
    if (ln && weight) {
      EXPECT_EQ(mx, 1.0); EXPECT_EQ(sd, 0.0);
    } else if (t.name == "cls_token" || t.name == "pos_embed") {
      EXPECT_LE(mx, 2 * 0.02 + 1e-7);  // truncated at 2 std
      // std of N(0,1) truncated at +-2 is 0.8796; loose bound for the few samples of cls
      EXPECT_NEAR(sd, 0.02 * 0.8796, t.numel > 1000 ? 0.001 : 0.005);
    } else if (weight) {
      EXPECT_NEAR(sd, 0.02, t.numel > 4000 ? 0.0006 : 0.002);
      EXPECT_NEAR(mean, 0.0, 0.002);
      EXPECT_GT(mx, 2.5 * 0.02);  // not truncated
    } else {
      EXPECT_EQ(mx, 0.0);  // biases
    }
  }
  for (size_t i = 0; i < l.total; ++i) {
    if (!covered[i]) {
      ASSERT_EQ(a[i], 0.0f) << "padding at " << i;
    }
  }
}
