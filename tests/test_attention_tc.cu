// tests/test_attention_tc.cu — the tensor-core attention kernels (kernels/attention_tc.cuh)
// against the CPU reference vit::ref::attention_forward/backward in FP32 on the same
// bf16-rounded qkv and dout: out, lse (against a double log-sum-exp from qkv) and dq, dk, dv, at
// T = 17, 65, 197 and 260 (tails of every kind against 16-row tiles and 64-row chunks, several
// chunks and online-softmax rescales), head dims 64 and 32, attention dropout off and on, FP32
// and BF16 outputs,
// under two simt thread orders and a scrambled WMMA element-to-lane mapping (plus one case under
// the natural mapping). Results must also be bitwise identical across thread orders (no atomics).
//
// Tolerances are bounds derived per element from where the kernels round (u = 2^-8, the unit
// roundoff of bf16), evaluated in double from the reference's own P, dP and inputs:
//   out_ie : u * sum_j |P'_ij v_je|                      P' rounded to bf16 before P'V
//            (+ u |out_ie| when out is bf16)
//   D_i    : sum_e |dO_ie| * bound(out_ie)               D = dO . O uses the kernel's O
//   dS_ij  : P_ij * bound(D_i) + u |dS_ij|               dS rounded to bf16 before dS K, dS^T Q
//   dq_ie  : sum_j bound(dS_ij) |k_je| / sqrt(hd),  dk_je : sum_i bound(dS_ij) |q_ie| / sqrt(hd)
//   dv_je  : u * sum_i |P'_ij dO_ie|
//            (+ u |value| for bf16 dqkv)
// plus an FP32 allowance of 1e-5 relative on the same sums (scores, exponentials and sums are
// FP32 in both, in different orders) and 1e-6 absolute. The worst measured error / bound ratio
// of each check is printed; measured under simt over all cases: out 0.51, dv 0.76 (rows where one
// key dominates, so one rounding error is most of the sum), dq 0.18, dk 0.19 (many terms whose
// rounding errors partly cancel; the bound adds them in magnitude), lse 0.014.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/philox.h"
#include "cpu/attention.h"
#include "cpu/dropout.h"
#include "kernels/attention_tc.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_util.h"

namespace {

using vit_test::bitwise_equal;
using vit_test::DeviceBuffer;

constexpr double kU = 1.0 / 256;  // bf16 unit roundoff
constexpr double kF = 1e-5;       // FP32 allowance (relative)
constexpr double kA = 1e-6;       // absolute floor

// Uniform in [lo, hi) rounded to bf16 (test-only Philox site), as bf16 and as float.
void bf16_values(size_t n, uint64_t seed, float lo, float hi, std::vector<__nv_bfloat16>* v,
                 std::vector<float>* f) {
  v->resize(n);
  f->resize(n);
  for (size_t i = 0; i < n; ++i) {
    (*v)[i] = __float2bfloat16(lo + (hi - lo) * vit::philox_uniform(seed, 1001, 0, i));
    (*f)[i] = __bfloat162float((*v)[i]);
  }
}

template <class T>
std::vector<float> as_float(const std::vector<T>& v) {
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) f[i] = vit::attn_tc::to_float(v[i]);
  return f;
}

// |got - want| <= bound elementwise; reports the worst element and prints the worst ratio.
::testing::AssertionResult within(const char* what, const std::vector<float>& got,
                                  const std::vector<float>& want, const std::vector<double>& bound) {
  double worst = 0;
  size_t at = 0, bad = 0;
  for (size_t e = 0; e < got.size(); ++e) {
    const double ratio = std::fabs((double)got[e] - want[e]) / bound[e];
    if (!(ratio <= 1)) ++bad;
    if (!(ratio <= worst)) { worst = ratio; at = e; }
  }
  std::printf("    %-4s worst |error| / bound = %.3f\n", what, worst);
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << got.size()
                                       << " beyond the bound; worst [" << at << "] " << got[at]
                                       << " vs " << want[at] << " (bound " << bound[at] << ")";
}

struct Case {
  const char* name;
  int B, T, NH;
  float p_drop;
  bool bf16_out;
  int hd = 64;  // head dim (C = hd * NH)
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

struct Expect {  // reference values and bounds, all (B,T,C) / (B,NH,T) / (B,T,3C)
  std::vector<float> out, dqkv;
  std::vector<double> lse, out_bound, lse_bound, dqkv_bound;
};

Expect expected(const Case& c, const std::vector<float>& qkv, const std::vector<float>& dout,
                uint64_t seed, uint32_t site, uint64_t step) {
  const int B = c.B, T = c.T, NH = c.NH, hd = c.hd, C = NH * hd, C3 = 3 * C;
  const double uo = c.bf16_out ? kU : 0.0, scale = 1.0 / std::sqrt((double)hd);
  const float keep_scale = vit::ref::dropout_scale(c.p_drop);
  Expect x;
  x.out.resize((size_t)B * T * C);
  x.dqkv.resize((size_t)B * T * C3);
  std::vector<float> probs((size_t)B * NH * T * T);
  vit::ref::attention_forward<float>(qkv.data(), x.out.data(), probs.data(), B, T, C, NH,
                                     c.p_drop, seed, site, step);
  vit::ref::attention_backward<float>(dout.data(), qkv.data(), probs.data(), x.dqkv.data(), B, T,
                                      C, NH, c.p_drop, seed, site, step);
  x.lse.assign((size_t)B * NH * T, 0);
  x.lse_bound.assign(x.lse.size(), 0);
  x.out_bound.assign(x.out.size(), kA);
  x.dqkv_bound.assign(x.dqkv.size(), kA);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      const size_t bh = (size_t)b * NH + h;
      auto q = [&](int i, int e) { return (double)qkv[((size_t)b * T + i) * C3 + h * hd + e]; };
      auto k = [&](int j, int e) { return (double)qkv[((size_t)b * T + j) * C3 + C + h * hd + e]; };
      auto v = [&](int j, int e) { return (double)qkv[((size_t)b * T + j) * C3 + 2 * C + h * hd + e]; };
      auto dO = [&](int i, int e) { return (double)dout[((size_t)b * T + i) * C + h * hd + e]; };
      auto P = [&](int i, int j) { return (double)probs[(bh * T + i) * T + j]; };
      std::vector<double> M((size_t)T * T), dS((size_t)T * T), dSb((size_t)T * T), D(T), Db(T);
      for (int i = 0; i < T; ++i) {
        // log-sum-exp in double from the definition
        double mx = -INFINITY, sum = 0;
        std::vector<double> s(T);
        for (int j = 0; j < T; ++j) {
          double d = 0;
          for (int e = 0; e < hd; ++e) d += q(i, e) * k(j, e);
          s[j] = d * scale;
          mx = std::max(mx, s[j]);
        }
        for (int j = 0; j < T; ++j) sum += std::exp(s[j] - mx);
        x.lse[bh * T + i] = mx + std::log(sum);
        x.lse_bound[bh * T + i] = 1e-5 + 1e-5 * std::fabs(x.lse[bh * T + i]);
        for (int j = 0; j < T; ++j)
          M[(size_t)i * T + j] = c.p_drop == 0.0f ||
                                         vit::dropout_keep(seed, site, step, (bh * T + i) * T + j, c.p_drop)
                                     ? keep_scale : 0.0;
        // out and its bound; D and its bound
        double Dex = 0, Dbound = 0;
        for (int e = 0; e < hd; ++e) {
          double mag = 0;
          for (int j = 0; j < T; ++j) mag += std::fabs(P(i, j) * M[(size_t)i * T + j] * v(j, e));
          const size_t o = ((size_t)b * T + i) * C + h * hd + e;
          const double ob = (kU + kF) * mag + uo * std::fabs(x.out[o]) + kA;
          x.out_bound[o] = ob;
          Dex += dO(i, e) * x.out[o];
          Dbound += std::fabs(dO(i, e)) * ob + kF * std::fabs(dO(i, e) * x.out[o]);
        }
        D[i] = Dex;
        Db[i] = Dbound;
        for (int j = 0; j < T; ++j) {
          double dp = 0;
          for (int e = 0; e < hd; ++e) dp += dO(i, e) * v(j, e);
          dp *= M[(size_t)i * T + j];
          dS[(size_t)i * T + j] = P(i, j) * (dp - Dex);
          dSb[(size_t)i * T + j] = P(i, j) * Dbound + (kU + kF) * std::fabs(dS[(size_t)i * T + j]) +
                                   kF * P(i, j) * (std::fabs(dp) + std::fabs(Dex));
        }
      }
      for (int r = 0; r < T; ++r)
        for (int e = 0; e < hd; ++e) {
          double bq = 0, bk = 0, bv = 0;
          for (int t = 0; t < T; ++t) {
            bq += dSb[(size_t)r * T + t] * std::fabs(k(t, e));   // dq_r: sum over keys t
            bk += dSb[(size_t)t * T + r] * std::fabs(q(t, e));   // dk_r: sum over queries t
            bv += (kU + kF) * std::fabs(P(t, r) * M[(size_t)t * T + r] * dO(t, e));
          }
          const size_t g = ((size_t)b * T + r) * C3 + h * hd + e;
          x.dqkv_bound[g] += scale * bq + uo * std::fabs(x.dqkv[g]);
          x.dqkv_bound[g + C] += scale * bk + uo * std::fabs(x.dqkv[g + C]);
          x.dqkv_bound[g + 2 * C] += bv + uo * std::fabs(x.dqkv[g + 2 * C]);
        }
    }
  return x;
}

struct Result {
  std::vector<float> out, lse, dqkv;
};

template <class OutT>
Result run(const Case& c, const DeviceBuffer<__nv_bfloat16>& qkv, const std::vector<float>& dout_f,
           uint64_t seed, uint32_t site, uint64_t step) {
  const size_t BT = (size_t)c.B * c.T;
  const int C = c.hd * c.NH;
  std::vector<OutT> dout_h(dout_f.size());
  for (size_t e = 0; e < dout_f.size(); ++e) dout_h[e] = vit::attn_tc::from_float<OutT>(dout_f[e]);
  DeviceBuffer<OutT> dout(dout_h), out(BT * C), dqkv(BT * 3 * C);
  DeviceBuffer<float> lse((size_t)c.B * c.NH * c.T),
      scratch(vit::attention_tc_scratch_floats(c.B, c.T, C, c.NH));
  // NaN bytes everywhere an output goes, so an element the kernels do not write fails.
  CUDA_CHECK(cudaMemset(out.ptr, 0xff, out.n * sizeof(OutT)));
  CUDA_CHECK(cudaMemset(dqkv.ptr, 0xff, dqkv.n * sizeof(OutT)));
  CUDA_CHECK(cudaMemset(lse.ptr, 0xff, lse.n * sizeof(float)));
  vit::attention_forward_tc<OutT>(0, qkv.ptr, out.ptr, lse.ptr, c.B, c.T, C, c.NH, c.p_drop, seed,
                                  site, step);
  vit::attention_backward_tc<OutT>(0, dout.ptr, qkv.ptr, out.ptr, lse.ptr, dqkv.ptr, scratch.ptr,
                                   c.B, c.T, C, c.NH, c.p_drop, seed, site, step);
  CUDA_CHECK(cudaDeviceSynchronize());
  return Result{as_float(out.download()), lse.download(), as_float(dqkv.download())};
}

class AttentionTcTest : public ::testing::TestWithParam<Case> {};

void check_case(const Case& c) {
  const int C = c.hd * c.NH, C3 = 3 * C;
  const size_t BT = (size_t)c.B * c.T;
  const uint64_t seed = 4321, step = 5;
  const uint32_t site = vit::layer_site(2, 0);
  // Entries in [-2, 2): scores of std ~1.3, so the running max moves between chunks.
  std::vector<__nv_bfloat16> qkv_b, dout_b;
  std::vector<float> qkv_f, dout_f;
  bf16_values(BT * C3, 31 + c.T, -2.0f, 2.0f, &qkv_b, &qkv_f);
  bf16_values(BT * C, 47 + c.T, -1.0f, 1.0f, &dout_b, &dout_f);
  const Expect x = expected(c, qkv_f, dout_f, seed, site, step);
  DeviceBuffer<__nv_bfloat16> qkv(qkv_b);

  Result first;
  bool have_first = false;
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    std::printf("  %s, %s order\n", c.name, order);
    const Result r = c.bf16_out ? run<__nv_bfloat16>(c, qkv, dout_f, seed, site, step)
                                : run<float>(c, qkv, dout_f, seed, site, step);
    EXPECT_TRUE(within("out", r.out, x.out, x.out_bound));
    std::vector<float> lse_want(x.lse.begin(), x.lse.end());
    EXPECT_TRUE(within("lse", r.lse, lse_want, x.lse_bound));
    // dq, dk, dv separately (each has its own bound formula)
    for (int part = 0; part < 3; ++part) {
      std::vector<float> got, want;
      std::vector<double> bound;
      for (size_t row = 0; row < BT; ++row)
        for (int e = 0; e < C; ++e) {
          const size_t g = row * C3 + part * C + e;
          got.push_back(r.dqkv[g]);
          want.push_back(x.dqkv[g]);
          bound.push_back(x.dqkv_bound[g]);
        }
      EXPECT_TRUE(within(part == 0 ? "dq" : part == 1 ? "dk" : "dv", got, want, bound));
    }
    if (!have_first) {
      first = r;
      have_first = true;
    } else {
      EXPECT_TRUE(bitwise_equal(r.out, first.out)) << "out depends on thread order";
      EXPECT_TRUE(bitwise_equal(r.lse, first.lse)) << "lse depends on thread order";
      EXPECT_TRUE(bitwise_equal(r.dqkv, first.dqkv)) << "dqkv depends on thread order";
    }
  });
}

TEST_P(AttentionTcTest, MatchesReferenceWithinBf16Bounds) {
  VIT_REQUIRE_GPU();
#if defined(VIT_SIMT)
  const simt::WmmaMap map = simt::wmma_map();
  const uint64_t map_seed = simt::wmma_map_seed();
  simt::set_wmma_map(simt::WmmaMap::Scrambled, 11);
  check_case(GetParam());
  simt::set_wmma_map(map, map_seed);
#else
  check_case(GetParam());
#endif
}

// B, NH small for simt; head dim 64 (C = 64 NH) unless given. T = 17: one partial 16-row tile past the first;
// 65: a 64-key chunk plus a 1-key sub-tile (basic preset); 197: 4 chunks (vit-b16); 260: 5.
INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTcTest,
    ::testing::Values(Case{"T17", 2, 17, 2, 0.0f, false}, Case{"T17_drop", 2, 17, 2, 0.1f, false},
                      Case{"T65", 2, 65, 2, 0.0f, false}, Case{"T65_drop", 2, 65, 2, 0.1f, false},
                      Case{"T65_drop_bf16", 1, 65, 2, 0.1f, true},
                      Case{"T197", 1, 197, 2, 0.0f, false}, Case{"T197_drop", 1, 197, 2, 0.1f, false},
                      Case{"T197_bf16", 1, 197, 1, 0.0f, true},
                      Case{"T260", 1, 260, 1, 0.0f, false}, Case{"T260_drop", 1, 260, 1, 0.25f, false},
                      // the other head dims (the tiny preset's is 32)
                      Case{"T65_hd32_drop", 1, 65, 2, 0.1f, false, 32},
                      Case{"T17_hd32_bf16", 2, 17, 2, 0.0f, true, 32},
                      Case{"T197_hd32_drop", 1, 197, 2, 0.1f, false, 32}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

// dropout_run on its own: every start alignment and run length (0..13 values, so runs that begin
// and end inside a group of 4, span one, or several), against dropout_keep element by element.
__global__ void __launch_bounds__(128) dropout_run_kernel(uint64_t base, float p, uint8_t* out) {
  const int t = threadIdx.x, start = t % 8, n = t / 8 % 14;  // 112 (start, n) pairs
  if (t >= 112) return;
  for (int k = 0; k < 16; ++k) out[t * 16 + k] = 2;  // 2: not visited
  vit::attn_tc::dropout_run(77, 5, 3, p, base + start, n,
                            [&](int k, bool keep) { out[t * 16 + k] = keep ? 1 : 0; });
}

TEST(AttentionTc, DropoutRunMatchesDropoutKeep) {
  VIT_REQUIRE_GPU();
  const uint64_t base = (1ull << 34) + 4;  // above 2^32: the truncated block counter as philox_u32
  DeviceBuffer<uint8_t> out(112 * 16);
  LAUNCH(dropout_run_kernel, 1, 128, 0, 0, base, 0.5f, out.ptr);
  const std::vector<uint8_t> got = out.download();
  for (int t = 0; t < 112; ++t) {
    const int start = t % 8, n = t / 8 % 14;
    for (int k = 0; k < 16; ++k) {
      const int want = k < n ? (int)vit::dropout_keep(77, 5, 3, base + start + k, 0.5f) : 2;
      ASSERT_EQ((int)got[t * 16 + k], want) << "start " << start << " n " << n << " k " << k;
    }
  }
}

#if defined(VIT_SIMT)
// The natural (lane-major) mapping too: nothing may depend on which mapping is used.
TEST(AttentionTc, NaturalWmmaMapping) {
  const simt::WmmaMap map = simt::wmma_map();
  const uint64_t map_seed = simt::wmma_map_seed();
  simt::set_wmma_map(simt::WmmaMap::Natural);
  check_case(Case{"T65_drop_natural", 1, 65, 2, 0.1f, false});
  simt::set_wmma_map(map, map_seed);
}
#endif

TEST(AttentionTc, UnsupportedShapesFailClearly) {
  VIT_REQUIRE_GPU();
  float* f = nullptr;
  EXPECT_THROW(vit::attention_forward_tc<float>(0, nullptr, f, f, 1, 17, 32, 2, 0.0f, 0, 0, 0),
               vit::Error);  // head dim 16
  EXPECT_THROW(vit::attention_forward_tc<float>(0, nullptr, f, f, 1, 0, 128, 2, 0.0f, 0, 0, 0),
               vit::Error);  // T = 0
  EXPECT_THROW(vit::attention_forward_tc<float>(0, nullptr, f, f, 1, 17, 128, 2, 1.0f, 0, 0, 0),
               vit::Error);  // dropout 1
  EXPECT_THROW(vit::attention_backward_tc<float>(0, f, nullptr, f, f, f, f, 1, 17, 100, 3, 0.0f, 0, 0, 0),
               vit::Error);  // C not divisible by heads
  try {
    vit::attention_forward_tc<float>(0, nullptr, f, f, 1, 17, 96, 2, 0.0f, 0, 0, 0);
    ADD_FAILURE() << "head dim 48 accepted";
  } catch (const vit::Error& e) {
    EXPECT_NE(std::string(e.what()).find("head dim 48"), std::string::npos) << e.what();
  }
}

}  // namespace
