// tests/test_attention.cu — the fused attention kernels (kernels/attention.cuh) against the CPU
// reference vit::ref::attention_forward/backward (float) at the shapes the presets use and odd
// ones: out, lse (against a double-precision log-sum-exp computed here from qkv) and dqkv, with
// attention dropout off and on, under two simt thread orders; results must also be bitwise
// identical between runs (and between thread orders under simt: the kernels are deterministic).
// Output buffers start as NaN so an element the kernels fail to write shows up.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/philox.h"
#include "cpu/attention.h"
#include "kernels/attention.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_util.h"

namespace {

using Buf = vit_test::DeviceBuffer<float>;
using vit_test::bitwise_equal;

// A device buffer whose bytes are all 0xff (NaN), so an element the kernels do not write fails
// the comparison on a GPU as well (simt NaN-fills fresh allocations by itself).
Buf nan_buffer(size_t n) {
  Buf b(n);
  CUDA_CHECK(cudaMemset(b.get(), 0xff, n * sizeof(float)));
  return b;
}

// Uniform in [lo, hi), from Philox (test-only site number).
std::vector<float> random_vec(size_t n, uint64_t seed, float lo, float hi) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = lo + (hi - lo) * vit::philox_uniform(seed, 1000, 0, i);
  return v;
}

struct Case {
  const char* name;
  int B, T, C, NH;
  float p_drop;
  float range = 2.0f;  // qkv entries uniform in [-range, range)
  double tol = 1.0;    // tolerance multiplier (see the test body)
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

struct Result {
  std::vector<float> out, lse, dqkv;
};

class AttentionTest : public ::testing::TestWithParam<Case> {};

// Forward and backward on the device; inputs already uploaded.
Result run_kernels(const Case& c, const Buf& qkv, const Buf& dout, uint64_t seed,
                   uint32_t site, uint64_t step) {
  const size_t BT = (size_t)c.B * c.T;
  Buf out = nan_buffer(BT * c.C), lse = nan_buffer((size_t)c.B * c.NH * c.T);
  Buf dqkv = nan_buffer(BT * 3 * c.C);
  Buf scratch = nan_buffer(vit::attention_scratch_floats(c.B, c.T, c.C, c.NH));
  vit::attention_forward(0, qkv, out, lse, c.B, c.T, c.C, c.NH, c.p_drop, seed, site, step);
  vit::attention_backward(0, dout, qkv, out, lse, dqkv, scratch, c.B, c.T, c.C, c.NH,
                          c.p_drop, seed, site, step);
  CUDA_CHECK(cudaDeviceSynchronize());
  return Result{out.download(), lse.download(), dqkv.download()};
}

TEST_P(AttentionTest, MatchesReferenceAndIsDeterministic) {
  VIT_REQUIRE_GPU();
  const Case c = GetParam();
  const int hd = c.C / c.NH, C3 = 3 * c.C;
  const uint64_t seed = 1234, step = 7;
  const uint32_t site = vit::layer_site(3, 0);
  const size_t BT = (size_t)c.B * c.T;
  // |q.k| / sqrt(hd) has std ~1.3 with entries in [-2, 2): a non-trivial softmax whose running
  // max changes from tile to tile; range 6 gives scores of std ~12 (nearly one-hot rows).
  const std::vector<float> qkv_h = random_vec(BT * C3, 11 + c.T, -c.range, c.range);
  const std::vector<float> dout_h = random_vec(BT * c.C, 22 + c.T, -1.0f, 1.0f);

  // Reference (float), and the row log-sum-exp in double straight from the definition.
  std::vector<float> out_ref(BT * c.C), probs((size_t)c.B * c.NH * c.T * c.T), dqkv_ref(BT * C3);
  vit::ref::attention_forward<float>(qkv_h.data(), out_ref.data(), probs.data(), c.B, c.T, c.C,
                                     c.NH, c.p_drop, seed, site, step);
  vit::ref::attention_backward<float>(dout_h.data(), qkv_h.data(), probs.data(), dqkv_ref.data(),
                                      c.B, c.T, c.C, c.NH, c.p_drop, seed, site, step);
  std::vector<double> lse_ref((size_t)c.B * c.NH * c.T);
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.NH; ++h)
      for (int i = 0; i < c.T; ++i) {
        std::vector<double> s(c.T);
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < c.T; ++j) {
          const float* q = &qkv_h[((size_t)b * c.T + i) * C3 + h * hd];
          const float* k = &qkv_h[((size_t)b * c.T + j) * C3 + c.C + h * hd];
          double d = 0;
          for (int e = 0; e < hd; ++e) d += (double)q[e] * k[e];
          s[j] = d / std::sqrt((double)hd);
          mx = std::max(mx, s[j]);
        }
        for (int j = 0; j < c.T; ++j) sum += std::exp(s[j] - mx);
        lse_ref[((size_t)b * c.NH + h) * c.T + i] = mx + std::log(sum);
      }

  Buf qkv(qkv_h), dout(dout_h);
  Result first;
  bool have_first = false;
  int runs_compared = 0;
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    Result r = run_kernels(c, qkv, dout, seed, site, step);
    // Tolerances: FP32 with a different summation order than the reference (online softmax,
    // tiled dot products); values are O(1), so atol covers outputs that cancel to near zero.
    // Observed worst |error| at range 2: ~1.3e-6 (out, dqkv), ~1e-6 (lse). With range 6 the
    // scores reach |S| ~ 30 and their float rounding alone moves P by ~1e-5 relative (in the
    // reference as much as here), hence tol = 10 for that case.
    EXPECT_TRUE(vit_test::allclose(r.out, out_ref, 1e-5 * c.tol, 2e-6 * c.tol)) << "out";
    EXPECT_TRUE(vit_test::allclose(r.lse.data(), lse_ref.data(), lse_ref.size(), 1e-5 * c.tol,
                                   1e-5 * c.tol))
        << "lse";
    EXPECT_TRUE(vit_test::allclose(r.dqkv, dqkv_ref, 1e-5 * c.tol, 5e-6 * c.tol)) << "dqkv";
    if (!have_first) {
      first = r;
      have_first = true;
    } else {  // under simt: the other thread order must give the same bits
      EXPECT_TRUE(bitwise_equal(r.out, first.out)) << "out depends on thread order";
      EXPECT_TRUE(bitwise_equal(r.lse, first.lse)) << "lse depends on thread order";
      EXPECT_TRUE(bitwise_equal(r.dqkv, first.dqkv)) << "dqkv depends on thread order";
      ++runs_compared;
    }
  });
  if (runs_compared == 0) {  // on a GPU (one hardware order): a second run, bitwise identical
    Result again = run_kernels(c, qkv, dout, seed, site, step);
    EXPECT_TRUE(bitwise_equal(again.out, first.out)) << "out differs between runs";
    EXPECT_TRUE(bitwise_equal(again.lse, first.lse)) << "lse differs between runs";
    EXPECT_TRUE(bitwise_equal(again.dqkv, first.dqkv)) << "dqkv differs between runs";
  }
}

// --precision bf16 saves qkv and out in BF16; the kernels convert on load and round out once on
// store. So (bitwise): the BF16 forward's out is bf16(the FP32 forward's out on the rounded
// qkv), its lse the FP32 forward's; the BF16 backward's dqkv is the FP32 backward's on the
// rounded qkv and the rounded out. The FP32 tests above thus cover the BF16 path's math. And
// out differs from the unrounded run's (the BF16 path did read BF16).
std::vector<float> round_bf16(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = __bfloat162float(__float2bfloat16(v[i]));
  return r;
}
std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& v) {
  std::vector<__nv_bfloat16> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = __float2bfloat16(v[i]);
  return r;
}
std::vector<float> from_bf16(const std::vector<__nv_bfloat16>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = __bfloat162float(v[i]);
  return r;
}

TEST_P(AttentionTest, Bf16IsTheFp32KernelOnRoundedValues) {
  VIT_REQUIRE_GPU();
  const Case c = GetParam();
  const uint64_t seed = 1234, step = 7;
  const uint32_t site = vit::layer_site(3, 0);
  const size_t BT = (size_t)c.B * c.T, NL = (size_t)c.B * c.NH * c.T;
  const std::vector<float> qkv_h = random_vec(BT * 3 * c.C, 11 + c.T, -c.range, c.range);
  const std::vector<float> dout_h = random_vec(BT * c.C, 22 + c.T, -1.0f, 1.0f);
  const std::vector<float> qkv_r = round_bf16(qkv_h);
  Buf dout(dout_h), scratch = nan_buffer(vit::attention_scratch_floats(c.B, c.T, c.C, c.NH));
  // FP32 kernels on the rounded qkv; the backward then on the rounded out.
  Buf q32(qkv_r), out32 = nan_buffer(BT * c.C), lse32 = nan_buffer(NL), dq32 = nan_buffer(BT * 3 * c.C);
  vit::attention_forward(0, q32, out32, lse32, c.B, c.T, c.C, c.NH, c.p_drop, seed, site, step);
  const std::vector<float> out_f = out32.download();
  Buf out_r(round_bf16(out_f));
  vit::attention_backward(0, dout, q32, out_r, lse32, dq32, scratch, c.B, c.T, c.C, c.NH,
                          c.p_drop, seed, site, step);
  // BF16 kernels.
  vit_test::DeviceBuffer<__nv_bfloat16> q16(to_bf16(qkv_h)), out16(BT * c.C);
  Buf lse16 = nan_buffer(NL), dq16 = nan_buffer(BT * 3 * c.C);
  vit::attention_forward(0, q16.get(), out16.get(), lse16, c.B, c.T, c.C, c.NH, c.p_drop, seed,
                         site, step);
  vit::attention_backward(0, dout, (const __nv_bfloat16*)q16.get(),
                          (const __nv_bfloat16*)out16.get(), lse16, dq16, scratch, c.B, c.T, c.C,
                          c.NH, c.p_drop, seed, site, step);
  EXPECT_TRUE(bitwise_equal(from_bf16(out16.download()), round_bf16(out_f))) << "out";
  EXPECT_TRUE(bitwise_equal(lse16.download(), lse32.download())) << "lse";
  EXPECT_TRUE(bitwise_equal(dq16.download(), dq32.download())) << "dqkv";
  // Unrounded qkv: a different out.
  Buf qu(qkv_h), outu = nan_buffer(BT * c.C), lseu = nan_buffer(NL);
  vit::attention_forward(0, qu, outu, lseu, c.B, c.T, c.C, c.NH, c.p_drop, seed, site, step);
  EXPECT_FALSE(bitwise_equal(outu.download(), out_f)) << "rounding qkv changed nothing";
}

// B, T, C, NH chosen so every supported head dim, the presets' (T, hd) and tails of every kind
// (T = 17, 65, 197, 257 against 32-row blocks and tiles) are covered, with small B*NH for simt.
INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTest,
    ::testing::Values(Case{"T17_hd16", 2, 17, 32, 2, 0.0f}, Case{"T17_hd16_drop", 2, 17, 32, 2, 0.1f},
                      Case{"T17_hd32", 2, 17, 64, 2, 0.0f}, Case{"T17_hd32_drop", 2, 17, 64, 2, 0.5f},
                      Case{"basic_T65_hd64", 2, 65, 256, 4, 0.0f},
                      Case{"basic_T65_hd64_drop", 2, 65, 256, 4, 0.1f},
                      Case{"vitb16_T197_hd64", 1, 197, 128, 2, 0.0f},
                      Case{"vitb16_T197_hd64_drop", 1, 197, 128, 2, 0.1f},
                      Case{"T257_hd32", 1, 257, 64, 2, 0.0f},
                      Case{"T257_hd32_drop", 1, 257, 64, 2, 0.1f},
                      Case{"peaked_T65_hd32_drop", 1, 65, 64, 2, 0.1f, 6.0f, 10.0}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

// attention_probs (the maps' kernel) recomputes P from the forward's qkv and lse: the reference's
// probabilities (saved before dropout, so the forward's dropout must not change them), every
// element written (NaN-filled output), rows summing to 1, the same bits in every thread order.
TEST(Attention, ProbsKernelMatchesReferenceProbabilities) {
  VIT_REQUIRE_GPU();
  for (const Case c : {Case{"T17_hd16", 2, 17, 32, 2, 0.1f}, Case{"T65_hd64", 1, 65, 128, 2, 0.0f},
                       Case{"T197_hd64", 1, 197, 64, 1, 0.0f}, Case{"peaked", 1, 65, 64, 2, 0.0f, 6.0f, 10.0}}) {
    SCOPED_TRACE(c.name);
    const size_t BT = (size_t)c.B * c.T, PT = (size_t)c.B * c.NH * c.T * c.T;
    const uint64_t seed = 99, step = 3;
    const uint32_t site = vit::layer_site(1, 0);
    const std::vector<float> qkv_h = random_vec(BT * 3 * c.C, 31 + c.T, -c.range, c.range);
    std::vector<float> out_ref(BT * c.C), probs_ref(PT);
    vit::ref::attention_forward<float>(qkv_h.data(), out_ref.data(), probs_ref.data(), c.B, c.T,
                                       c.C, c.NH, c.p_drop, seed, site, step);
    Buf qkv(qkv_h);
    std::vector<float> first;
    vit_test::for_each_thread_order([&](const char* order) {
      SCOPED_TRACE(order);
      Buf out = nan_buffer(BT * c.C), lse = nan_buffer((size_t)c.B * c.NH * c.T);
      Buf probs = nan_buffer(PT);
      vit::attention_forward(0, qkv, out, lse, c.B, c.T, c.C, c.NH, c.p_drop, seed, site, step);
      vit::attention_probs(0, qkv, lse, probs, c.B, c.T, c.C, c.NH);
      CUDA_CHECK(cudaDeviceSynchronize());
      const std::vector<float> p = probs.download();
      // P = exp(S - lse): a relative error of lse's and S's float rounding (|S| up to ~30 in
      // the peaked case), on values <= 1.
      EXPECT_TRUE(vit_test::allclose(p, probs_ref, 2e-5 * c.tol, 1e-6 * c.tol)) << "probs";
      for (size_t r = 0; r < PT / c.T; ++r) {
        double sum = 0;
        for (int j = 0; j < c.T; ++j) sum += p[r * c.T + j];
        ASSERT_NEAR(sum, 1.0, 1e-5 * c.tol) << "row " << r;
      }
      if (first.empty()) first = p;
      else EXPECT_TRUE(bitwise_equal(p, first)) << "probs depend on thread order";
    });
  }
  EXPECT_THROW(vit::attention_probs(0, nullptr, nullptr, nullptr, 1, 17, 96, 2), vit::Error);
}

TEST(Attention, UnsupportedShapesFailClearly) {
  VIT_REQUIRE_GPU();
  // head dim 48 (C=96, 2 heads), C not divisible by heads, dropout 1: vit::Error before any launch.
  EXPECT_THROW(vit::attention_forward(0, nullptr, nullptr, nullptr, 1, 17, 96, 2, 0.0f, 0, 0, 0),
               vit::Error);
  EXPECT_THROW(vit::attention_forward(0, nullptr, nullptr, nullptr, 1, 17, 100, 3, 0.0f, 0, 0, 0),
               vit::Error);
  EXPECT_THROW(vit::attention_backward(0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1,
                                       17, 128, 1, 0.0f, 0, 0, 0),
               vit::Error);
  EXPECT_THROW(vit::attention_forward(0, nullptr, nullptr, nullptr, 1, 17, 64, 2, 1.0f, 0, 0, 0),
               vit::Error);
  try {
    vit::attention_forward(0, nullptr, nullptr, nullptr, 1, 17, 96, 2, 0.0f, 0, 0, 0);
  } catch (const vit::Error& e) {
    EXPECT_NE(std::string(e.what()).find("head dim 48"), std::string::npos) << e.what();
  }
}

}  // namespace
