// tests/test_ref_ops.cpp — the ops of the CPU reference (cpu/*.h), each checked two ways:
// forward against independent naive code or PyTorch values written down here, and backward
// against central differences in double (vit_test::gradcheck, h = 1e-5) of the scalar
// L = sum(out * R) for a fixed random R, at odd shapes (T = 17, C = 24 with 3 heads of 8).
// Parameter gradients are checked as accumulations: they start non-zero and the test
// subtracts the start.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/philox.h"
#include "cpu/attention.h"
#include "cpu/dropout.h"
#include "cpu/gelu.h"
#include "cpu/layernorm.h"
#include "cpu/linear.h"
#include "cpu/loss.h"
#include "cpu/patch_embed.h"
#include "tests/test_ref_util.h"
#include "tests/test_util.h"

using namespace vit::ref;
using vit_test::gradcheck;
using vit_test::rand_vec;
using std::vector;

// Bounds: in double with h = 1e-5 the truncation error of central differences is ~1e-10 and
// the rounding error of f is ~1e-16 * sum|terms| / h: the worst differences measured are
// ~5e-10 absolute (gradients here are 1e-2 .. 1). 1e-6 relative + 1e-8 absolute leaves a 20x
// margin yet catches any wrong term (a dropped factor or sign is an O(1) relative error).
static const double RTOL = 1e-6, ATOL = 1e-8;

// dv - start, for parameter gradients that accumulate.
static vector<double> minus(const vector<double>& a, const vector<double>& b) {
  vector<double> r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = a[i] - b[i];
  return r;
}

TEST(RefLinear, ForwardMatchesNaive) {
  const int N = 5, in = 24, out = 13;
  auto x = rand_vec(N * in, 1), w = rand_vec(out * in, 2), b = rand_vec(out, 3);
  vector<double> y(N * out), ref(N * out);
  linear_forward(x.data(), w.data(), b.data(), y.data(), N, in, out);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < out; ++o) {
      double s = b[o];
      for (int i = 0; i < in; ++i) s += x[n * in + i] * w[o * in + i];
      ref[n * out + o] = s;
    }
  EXPECT_TRUE(vit_test::allclose(y, ref, 1e-12, 1e-12));
  linear_forward(x.data(), w.data(), (const double*)nullptr, y.data(), N, in, out);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < out; ++o) ref[n * out + o] -= b[o];
  EXPECT_TRUE(vit_test::allclose(y, ref, 1e-12, 1e-12));
}

TEST(RefLinear, GradCheck) {
  const int N = 17, in = 24, out = 13;
  auto x = rand_vec(N * in, 1), w = rand_vec(out * in, 2), b = rand_vec(out, 3);
  auto R = rand_vec(N * out, 4);
  vector<double> y(N * out);
  auto f = [&] {
    linear_forward(x.data(), w.data(), b.data(), y.data(), N, in, out);
    return vit_test::dot(y, R);
  };
  auto dw0 = rand_vec(out * in, 5), db0 = rand_vec(out, 6);
  vector<double> dx(N * in), dw = dw0, db = db0;
  linear_backward(R.data(), x.data(), w.data(), dx.data(), dw.data(), db.data(), N, in, out);
  EXPECT_TRUE(gradcheck(f, x.data(), dx.data(), x.size(), 1000, RTOL, ATOL));
  auto gw = minus(dw, dw0), gb = minus(db, db0);
  EXPECT_TRUE(gradcheck(f, w.data(), gw.data(), w.size(), 1000, RTOL, ATOL));
  EXPECT_TRUE(gradcheck(f, b.data(), gb.data(), b.size(), 1000, RTOL, ATOL));
  // nullptr dx / db are skipped, dw still accumulates
  vector<double> dw2 = dw0;
  linear_backward(R.data(), x.data(), w.data(), (double*)nullptr, dw2.data(), (double*)nullptr, N, in, out);
  EXPECT_TRUE(vit_test::allclose(dw2, dw, 1e-13, 1e-13));
}

TEST(RefLayerNorm, ForwardMatchesNaive) {
  const int N = 7, C = 24;
  auto x = rand_vec(N * C, 1, -2, 3), w = rand_vec(C, 2), b = rand_vec(C, 3);
  vector<double> y(N * C), mean(N), rstd(N), ref(N * C);
  layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), N, C, 1e-5);
  for (int n = 0; n < N; ++n) {
    double m = 0, v = 0;
    for (int c = 0; c < C; ++c) m += x[n * C + c] / C;
    for (int c = 0; c < C; ++c) v += (x[n * C + c] - m) * (x[n * C + c] - m) / C;  // biased
    for (int c = 0; c < C; ++c) ref[n * C + c] = (x[n * C + c] - m) / std::sqrt(v + 1e-5) * w[c] + b[c];
    EXPECT_NEAR(mean[n], m, 1e-13);
    EXPECT_NEAR(rstd[n], 1 / std::sqrt(v + 1e-5), 1e-12);
  }
  EXPECT_TRUE(vit_test::allclose(y, ref, 1e-12, 1e-12));
}

TEST(RefLayerNorm, GradCheck) {
  const int N = 17, C = 24;
  auto x = rand_vec(N * C, 1, -2, 3), w = rand_vec(C, 2, 0.5, 1.5), b = rand_vec(C, 3);
  auto R = rand_vec(N * C, 4);
  vector<double> y(N * C), mean(N), rstd(N);
  auto f = [&] {
    layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), N, C, 1e-5);
    return vit_test::dot(y, R);
  };
  f();
  auto dw0 = rand_vec(C, 5), db0 = rand_vec(C, 6);
  vector<double> dx(N * C), dw = dw0, db = db0;
  layernorm_backward(R.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), dw.data(), db.data(), N, C);
  EXPECT_TRUE(gradcheck(f, x.data(), dx.data(), x.size(), 1000, RTOL, ATOL));
  auto gw = minus(dw, dw0), gb = minus(db, db0);
  EXPECT_TRUE(gradcheck(f, w.data(), gw.data(), C, 1000, RTOL, ATOL));
  EXPECT_TRUE(gradcheck(f, b.data(), gb.data(), C, 1000, RTOL, ATOL));
}

TEST(RefGelu, ForwardMatchesPyTorch) {
  // torch.nn.functional.gelu(x, approximate='tanh' | 'none') in float64, torch 1.13.
  const vector<double> x = {-3.0, -1.0, -0.5, 0.0, 0.3, 1.0, 2.5};
  const vector<double> tanh_ref = {-0.0036373920817729943, -0.15880800939172324, -0.15428599017485606, 0.0,
                                   0.18537092354275922, 0.8411919906082768, 2.484915733910001};
  const vector<double> erf_ref = {-0.00404969409489031, -0.15865525393145702, -0.15426876936299344, 0.0,
                                  0.1853734266566858, 0.841344746068543, 2.4844758366855597};
  vector<double> y(x.size());
  gelu_forward(x.data(), y.data(), x.size(), vit::Gelu::Tanh);
  EXPECT_TRUE(vit_test::allclose(y, tanh_ref, 1e-14, 1e-15));
  gelu_forward(x.data(), y.data(), x.size(), vit::Gelu::Erf);
  EXPECT_TRUE(vit_test::allclose(y, erf_ref, 1e-14, 1e-15));
  vector<float> xf(x.begin(), x.end()), yf(x.size());
  gelu_forward(xf.data(), yf.data(), x.size(), vit::Gelu::Tanh);
  EXPECT_TRUE(vit_test::allclose(yf, tanh_ref, 1e-6, 1e-7));
}

TEST(RefGelu, GradCheckBothVariants) {
  const size_t n = 101;
  for (vit::Gelu g : {vit::Gelu::Tanh, vit::Gelu::Erf}) {
    SCOPED_TRACE(vit::gelu_name(g));
    auto x = rand_vec(n, 1, -4, 4), R = rand_vec(n, 2);
    vector<double> y(n), dx(n);
    auto f = [&] { gelu_forward(x.data(), y.data(), n, g); return vit_test::dot(y, R); };
    gelu_backward(R.data(), x.data(), dx.data(), n, g);
    EXPECT_TRUE(gradcheck(f, x.data(), dx.data(), n, 1000, RTOL, ATOL));
  }
}

TEST(RefDropout, MaskScaleAndGrad) {
  const size_t n = 20000;
  const float p = 0.25f;
  auto x = rand_vec(n, 1, 0.5, 1.5);
  vector<double> y(n);
  dropout_forward(x.data(), y.data(), n, p, 7, vit::SITE_EMBED_DROPOUT, 3);
  size_t kept = 0;
  for (size_t i = 0; i < n; ++i) {
    const bool keep = vit::philox_uniform(7, vit::SITE_EMBED_DROPOUT, 3, i) >= p;  // the contract
    kept += keep;
    ASSERT_EQ(y[i], keep ? x[i] * (double)(1.0f / 0.75f) : 0.0) << i;
  }
  // 20000 Bernoulli(0.75): sd ~61, so +-400 is ~6.5 sd
  EXPECT_NEAR((double)kept, 0.75 * n, 400);
  // another step, another site: another mask
  vector<double> y2(n);
  dropout_forward(x.data(), y2.data(), n, p, 7, vit::SITE_EMBED_DROPOUT, 4);
  EXPECT_NE(y, y2);
  dropout_forward(x.data(), y2.data(), n, p, 7, vit::layer_site(0, 1), 3);
  EXPECT_NE(y, y2);
  // the 4-at-a-time mask helper makes the same decisions, from any (unaligned) start
  for (uint64_t first : {0ull, 1ull, 3ull, 4097ull}) {
    double mask[37];
    dropout_mask(7, 5, 9, first, 37, p, 2.0, mask);
    for (int k = 0; k < 37; ++k)
      ASSERT_EQ(mask[k], vit::dropout_keep(7, 5, 9, first + k, p) ? 2.0 : 0.0) << first << "+" << k;
  }
  // p = 0 copies
  dropout_forward(x.data(), y2.data(), n, 0.0f, 7, vit::SITE_EMBED_DROPOUT, 3);
  EXPECT_EQ(y2, x);
  // backward with the same fixed mask
  const size_t m = 300;
  auto xs = rand_vec(m, 3), R = rand_vec(m, 4);
  vector<double> ys(m), dx(m);
  auto f = [&] { dropout_forward(xs.data(), ys.data(), m, p, 7, 5, 9); return vit_test::dot(ys, R); };
  dropout_backward(R.data(), dx.data(), m, p, 7, 5, 9);
  EXPECT_TRUE(gradcheck(f, xs.data(), dx.data(), m, 1000, RTOL, ATOL));
}

// Naive attention written independently of cpu/attention.cpp: scores, softmax, dropout by the
// contract's index, weighted sum.
static vector<double> naive_attention(const vector<double>& qkv, int B, int Tn, int C, int NH,
                                      float p, uint64_t seed, uint32_t site, uint64_t step) {
  const int hd = C / NH;
  vector<double> out((size_t)B * Tn * C, 0.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int i = 0; i < Tn; ++i) {
        vector<double> s(Tn);
        double mx = -1e300, sum = 0;
        for (int j = 0; j < Tn; ++j) {
          double d = 0;
          for (int e = 0; e < hd; ++e)
            d += qkv[((size_t)b * Tn + i) * 3 * C + h * hd + e] * qkv[((size_t)b * Tn + j) * 3 * C + C + h * hd + e];
          s[j] = d / std::sqrt((double)hd);
          mx = std::max(mx, s[j]);
        }
        for (int j = 0; j < Tn; ++j) sum += (s[j] = std::exp(s[j] - mx));
        for (int j = 0; j < Tn; ++j) {
          double pr = s[j] / sum;
          const uint64_t idx = (((uint64_t)b * NH + h) * Tn + i) * Tn + j;
          if (p > 0) pr = vit::dropout_keep(seed, site, step, idx, p) ? pr / (1.0 - (double)p) : 0.0;
          for (int e = 0; e < hd; ++e)
            out[((size_t)b * Tn + i) * C + h * hd + e] += pr * qkv[((size_t)b * Tn + j) * 3 * C + 2 * C + h * hd + e];
        }
      }
  return out;
}

TEST(RefAttention, ForwardMatchesNaive) {
  const int B = 2, Tn = 17, C = 24, NH = 3;
  auto qkv = rand_vec((size_t)B * Tn * 3 * C, 1, -1.5, 1.5);
  vector<double> out((size_t)B * Tn * C), probs((size_t)B * NH * Tn * Tn);
  for (float p : {0.0f, 0.2f}) {
    SCOPED_TRACE(p);
    attention_forward(qkv.data(), out.data(), probs.data(), B, Tn, C, NH, p, 11, vit::layer_site(1, 0), 5);
    // (1 - p) is float in the contract: compare with a tolerance that covers 1/(1-p) in float
    EXPECT_TRUE(vit_test::allclose(out, naive_attention(qkv, B, Tn, C, NH, p, 11, vit::layer_site(1, 0), 5), 1e-7, 1e-12));
    for (int r = 0; r < B * NH * Tn; ++r) {  // saved probs are pre-dropout: rows sum to 1
      double s = 0;
      for (int j = 0; j < Tn; ++j) s += probs[(size_t)r * Tn + j];
      ASSERT_NEAR(s, 1.0, 1e-13);
    }
  }
}

TEST(RefAttention, GradCheckWithDropout) {
  const int B = 2, Tn = 17, C = 24, NH = 3;
  for (float p : {0.0f, 0.1f}) {
    SCOPED_TRACE(p);
    auto qkv = rand_vec((size_t)B * Tn * 3 * C, 1, -1.5, 1.5);
    auto R = rand_vec((size_t)B * Tn * C, 2);
    vector<double> out(R.size()), probs((size_t)B * NH * Tn * Tn), dqkv(qkv.size());
    auto f = [&] {
      attention_forward(qkv.data(), out.data(), probs.data(), B, Tn, C, NH, p, 3, 77, 2);
      return vit_test::dot(out, R);
    };
    f();
    attention_backward(R.data(), qkv.data(), probs.data(), dqkv.data(), B, Tn, C, NH, p, 3, 77, 2);
    EXPECT_TRUE(gradcheck(f, qkv.data(), dqkv.data(), qkv.size(), 600, RTOL, ATOL));
  }
}

TEST(RefXent, ForwardMatchesPyTorch) {
  // torch.nn.functional.cross_entropy([[1, 2, 3]], [0], label_smoothing=0 | 0.1), float64
  const double logits[3] = {1, 2, 3};
  const int32_t label = 0;
  double loss, probs[3];
  EXPECT_NEAR(xent_forward(logits, &label, &loss, probs, 1, 3, 0.0f), 2.4076059644443806, 1e-14);
  EXPECT_NEAR(xent_forward(logits, &label, &loss, probs, 1, 3, 0.1f), 2.3076059644443805, 1e-8);  // eps is float
  EXPECT_NEAR(probs[2], std::exp(3.0) / (std::exp(1.0) + std::exp(2.0) + std::exp(3.0)), 1e-15);
  const int32_t bad = 3;
  EXPECT_THROW(xent_forward(logits, &bad, &loss, probs, 1, 3, 0.0f), vit::Error);
}

TEST(RefXent, GradCheckWithSmoothing) {
  const int B = 5, K = 7;
  const int32_t labels[B] = {0, 6, 3, 3, 1};
  for (float eps : {0.0f, 0.1f}) {
    SCOPED_TRACE(eps);
    auto z = rand_vec(B * K, 1, -3, 3);
    vector<double> losses(B), probs(B * K), dz(B * K);
    auto f = [&] { return xent_forward(z.data(), labels, losses.data(), probs.data(), B, K, eps); };
    f();
    xent_backward(probs.data(), labels, dz.data(), B, K, eps, 1.0 / B);
    EXPECT_TRUE(gradcheck(f, z.data(), dz.data(), z.size(), 1000, RTOL, ATOL));
  }
}

TEST(RefPatchEmbed, ForwardMatchesNaiveConv) {
  const int B = 2, Cin = 3, H = 16, p = 4, C = 24, g = H / p, Tn = g * g + 1;
  auto x = rand_vec((size_t)B * Cin * H * H, 1), w = rand_vec((size_t)C * Cin * p * p, 2);
  auto b = rand_vec(C, 3), cls = rand_vec(C, 4), pos = rand_vec((size_t)Tn * C, 5);
  vector<double> out((size_t)B * Tn * C);
  patch_embed_forward(x.data(), w.data(), b.data(), cls.data(), pos.data(), out.data(), B, Cin, H, p, C);
  for (int bi = 0; bi < B; ++bi)
    for (int c = 0; c < C; ++c) {
      EXPECT_NEAR(out[(size_t)bi * Tn * C + c], cls[c] + pos[c], 1e-14);
      for (int oy = 0; oy < g; ++oy)
        for (int ox = 0; ox < g; ++ox) {  // Conv2d(Cin, C, kernel p, stride p), weight (C, Cin, p, p)
          double s = b[c];
          for (int ci = 0; ci < Cin; ++ci)
            for (int ky = 0; ky < p; ++ky)
              for (int kx = 0; kx < p; ++kx)
                s += w[((c * Cin + ci) * p + ky) * p + kx] * x[(((size_t)bi * Cin + ci) * H + oy * p + ky) * H + ox * p + kx];
          const int t = 1 + oy * g + ox;
          EXPECT_NEAR(out[((size_t)bi * Tn + t) * C + c], s + pos[t * C + c], 1e-12);
        }
    }
}

TEST(RefPatchEmbed, GradCheck) {
  const int B = 2, Cin = 3, H = 16, p = 4, C = 24, Tn = (H / p) * (H / p) + 1;
  auto x = rand_vec((size_t)B * Cin * H * H, 1), w = rand_vec((size_t)C * Cin * p * p, 2);
  auto b = rand_vec(C, 3), cls = rand_vec(C, 4), pos = rand_vec((size_t)Tn * C, 5);
  auto R = rand_vec((size_t)B * Tn * C, 6);
  vector<double> out(R.size());
  auto f = [&] {
    patch_embed_forward(x.data(), w.data(), b.data(), cls.data(), pos.data(), out.data(), B, Cin, H, p, C);
    return vit_test::dot(out, R);
  };
  auto dw0 = rand_vec(w.size(), 7), db0 = rand_vec(C, 8), dcls0 = rand_vec(C, 9), dpos0 = rand_vec(pos.size(), 10);
  vector<double> dx(x.size()), dw = dw0, db = db0, dcls = dcls0, dpos = dpos0;
  patch_embed_backward(R.data(), x.data(), w.data(), dx.data(), dw.data(), db.data(), dcls.data(), dpos.data(), B, Cin, H, p, C);
  EXPECT_TRUE(gradcheck(f, x.data(), dx.data(), x.size(), 400, RTOL, ATOL));
  auto gw = minus(dw, dw0), gb = minus(db, db0), gc = minus(dcls, dcls0), gp = minus(dpos, dpos0);
  EXPECT_TRUE(gradcheck(f, w.data(), gw.data(), w.size(), 400, RTOL, ATOL));
  EXPECT_TRUE(gradcheck(f, b.data(), gb.data(), C, 400, RTOL, ATOL));
  EXPECT_TRUE(gradcheck(f, cls.data(), gc.data(), C, 400, RTOL, ATOL));
  EXPECT_TRUE(gradcheck(f, pos.data(), gp.data(), pos.size(), 400, RTOL, ATOL));
}
