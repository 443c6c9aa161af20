// tests/test_gemm_ln.cu — the fused GEMM + dropout/residual + LayerNorm kernels
// (kernels/gemm_ln.cuh) against the CPU reference ops composed in double: ref::gemm (the
// Linear's matmul), ref::dropout_forward / dropout_backward (the same Philox mask),
// ref::layernorm_forward / layernorm_backward. Forward: out, y (FP32 and BF16), mean, rstd.
// Backward: dres, mask_out (none / separate / aliasing x), the ln_w / ln_b partials per block
// and summed. Every precision, at the basic preset's widths (C = 256, K = 256 and 1024), vit-b16's
// (C = 768, K = 768 and 3072), odd shapes (C = 48, 20, 1, 1000 — the 16-row blocks — and 1024),
// row strides > K, unaligned pointers (the synchronous-load, scalar-epilogue path), p = 0.1 and 0.
// Under simt in forward and reverse thread order (twice each: the outputs must be bitwise the
// same), with simt's default scrambled WMMA element-to-lane mapping, and once under the natural.
//
// Tolerances: per element, derived from the operands, |got - ref| <= tol, the worst ratio
// |got - ref| / tol printed for each case. Let S(r, c) = sum_k |a_rk| |b_kc| (the GEMM's terms).
//   GEMM, tight (reference on exactly the operand values the kernel multiplies: FP32, the
//     TF32-rounded FP32 values (round to nearest, ties away, as __float_to_tf32), BF16): products
//     are exact in every mode, only the FP32 sums differ: e_z = 1e-5 S + 1e-7 (a rigorous bound is
//     K 2^-24 S, 1.8e-4 S at K = 3072; sums of random-sign terms stay near sqrt(K) 2^-24 S).
//     Measured under simt: worst error / bound 0.002..0.027 (printed as "gemm").
//   GEMM, loose (reference on the FP32 values before rounding): TF32 keeps 10 mantissa bits, so
//     each operand moves by <= 2^-11 relative and a product by <= 2^-10 + 2^-22: e = (2^-10 +
//     1e-5) S; BF16 keeps 8 bits: (2^-8 + 1e-5) S. Measured: TF32 0.03..0.33, BF16 0.06..0.72 of
//     it (the larger ratios at small K, where fewer rounding errors cancel; "vs fp32 operands").
//   out = res + (z + bias) m: m e_z + 4 2^-24 (m |z + bias| + |out|) + 1e-7 (three FP32 roundings).
//   LayerNorm of out, first order in E = the row's worst out tolerance:
//     mean: E + 1e-6 mean|out|; rstd: 2 rstd^2 E + 1e-5 rstd;
//     y: 1.1 |w| rstd E (2 + |xhat| mean|xhat|) + 1e-5 (1 + |y|), + 2^-8 |y| when y is BF16
//     (one rounding to 8 significant bits: half an ulp <= 2^-8 relative). Measured: FP32 y <= 0.007
//     of its bound, BF16 y 0.84..0.97 (the rounding term is tight), mean/rstd <= 0.004.
//   backward: e_g as e_z on dy W; dx = rstd (dn - mean(dn) - xhat mean(dn xhat)) moves by
//     <= 1.1 rstd E (2 + |xhat| mean|xhat|) with E = max_c |w_c| e_g, + 1e-5 rstd (|dn| + |mean dn|
//     + |xhat mean(dn xhat)|) + 1e-6 for the FP32 arithmetic; dres adds 2^-23 |dres|. Partials:
//     sum_rows e_g |xhat| + 1e-5 sum_rows |g xhat| (ln_w), sum_rows e_g + 1e-5 sum_rows |g| (ln_b).
//     Measured: dres <= 0.007, partials <= 0.012, summed <= 0.004 of the bounds.
//   mask_out: bitwise AT(dres * m) of the kernel's own dres (the same multiply and rounding).
// A BF16 y must also be bitwise bf16 of the FP32-y launch's y (and out, mean, rstd bitwise the
// same): the epilogue is FP32 either way, y rounded once.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "common/error.h"
#include "common/philox.h"
#include "cpu/blas.h"
#include "cpu/dropout.h"
#include "cpu/layernorm.h"
#include "kernels/gemm_ln.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_ref_util.h"
#include "tests/test_util.h"

namespace {

using std::vector;
using vit::Precision;
using vit_test::DeviceBuffer;
typedef __nv_bfloat16 bf16;

constexpr uint32_t kSite = 21;
constexpr uint64_t kStep = 5;

// = wmma::__float_to_tf32 (cvt.rna.tf32.f32) on the host: 10 mantissa bits, ties away from 0.
float tf32_round(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

template <class T> T from_float(float v);
template <> float from_float<float>(float v) { return v; }
template <> bf16 from_float<bf16>(float v) { return __float2bfloat16(v); }
inline float to_f(float v) { return v; }
inline float to_f(bf16 v) { return __bfloat162float(v); }
// As floats, for bitwise comparisons (bf16 -> float keeps every bit).
template <class T>
vector<float> as_float(const vector<T>& v) {
  vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) f[i] = to_f(v[i]);
  return f;
}

const char* pname(Precision p) { return vit::precision_name(p); }

// A device copy of v starting `off` elements into its allocation (off = 1: misaligned for
// vector / async access), and the way back.
template <class T>
struct Dev {
  DeviceBuffer<T> buf;
  int off;
  Dev(size_t n, int offset) : buf(n + offset), off(offset) {}
  Dev(const vector<T>& v, int offset) : buf(v.size() + offset), off(offset) { upload(v); }
  T* ptr() const { return buf.ptr + off; }
  void upload(const vector<T>& v) {
    vector<T> w(off, from_float<T>(0.0f));
    w.insert(w.end(), v.begin(), v.end());
    buf.upload(w);
  }
  void fill_nan() {  // every output must be written
    CUDA_CHECK(cudaMemset(buf.ptr, 0xFF, buf.n * sizeof(T)));
  }
  vector<T> get() const {
    vector<T> w = buf.download();
    return vector<T>(w.begin() + off, w.end());
  }
};

// |got - ref| <= tol elementwise; the worst ratio goes to *worst.
template <class G>
::testing::AssertionResult within(const vector<G>& got, const vector<double>& ref,
                                  const vector<double>& tol, double* worst) {
  if (got.size() != ref.size() || tol.size() != ref.size())
    return ::testing::AssertionFailure() << "sizes " << got.size() << " " << ref.size() << " " << tol.size();
  size_t bad = 0, wi = 0;
  double w = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs((double)to_f(got[i]) - ref[i]), r = e / tol[i];
    if (!(r <= 1.0)) ++bad;
    if (!(r <= w)) { w = r; wi = i; }
  }
  *worst = std::max(*worst, w);
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << ref.size() << " beyond tolerance; worst ["
                                       << wi << "]: " << to_f(got[wi]) << " vs reference " << ref[wi]
                                       << " (tolerance " << tol[wi] << ")";
}

// C (M, N) = A (M, K) op(B) in double, and S = |A| |op(B)|: the reference GEMM and its scale.
void ref_gemm(bool bt, int M, int N, int K, const vector<double>& A, const vector<double>& B,
              vector<double>* Cm, vector<double>* S) {
  Cm->assign((size_t)M * N, 0.0);
  S->assign((size_t)M * N, 0.0);
  vit::ref::gemm(false, bt, M, N, K, 1.0, A.data(), K, B.data(), bt ? K : N, 0.0, Cm->data(), N);
  vector<double> a(A.size()), b(B.size());
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::fabs(A[i]);
  for (size_t i = 0; i < b.size(); ++i) b[i] = std::fabs(B[i]);
  vit::ref::gemm(false, bt, M, N, K, 1.0, a.data(), K, b.data(), bt ? K : N, 0.0, S->data(), N);
}

// The operand values a kernel of precision `prec` multiplies, in double: bf16 storage as
// stored, TF32 rounded, FP32 as is.
template <class AT>
vector<double> operand_values(const vector<AT>& v, Precision prec) {
  vector<double> d(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    d[i] = prec == Precision::Tf32 ? tf32_round(to_f(v[i])) : to_f(v[i]);
  return d;
}

// The dropout multipliers of flat indices 0 .. n-1 (1 when p == 0).
vector<float> mask_values(size_t n, float p, uint64_t seed) {
  vector<float> m(n, 1.0f);
  if (p > 0.0f) vit::ref::dropout_mask(seed, kSite, kStep, 0, n, p, vit::ref::dropout_scale(p), m.data());
  return m;
}

const double kRelSum = 1e-5;  // FP32 accumulation, relative to S (see the top of the file)

double loose_rel(Precision prec) {
  return prec == Precision::Bf16 ? std::ldexp(1.0, -8) + kRelSum
         : prec == Precision::Tf32 ? std::ldexp(1.0, -10) + kRelSum : kRelSum;
}

// ---- forward ---------------------------------------------------------------------------------

struct FwdCase {
  Precision prec;
  int N, K, C;
  int ldx_pad = 0;         // ldx = K + ldx_pad
  float p = 0.1f;
  bool ln = true, bias = true, stats = true;
  bool alias_out = false;  // out == res
  bool unaligned = false;  // every pointer one element past its allocation's start
  bool graph_step = false; // the step as DevStep(device base, offset)
  bool orders = true;      // both thread orders (else forward only)
};

std::string describe(const FwdCase& f) {
  char b[256];
  snprintf(b, sizeof b, "forward %s N=%d K=%d C=%d ldx=%d p=%g%s%s%s%s%s", pname(f.prec), f.N,
           f.K, f.C, f.K + f.ldx_pad, f.p, f.ln ? " ln" : "", f.bias ? " bias" : "",
           f.alias_out ? " out=res" : "", f.unaligned ? " unaligned" : "",
           f.stats ? "" : " no-stats");
  return b;
}

template <class AT, class YT>
void check_forward(const FwdCase& f) {
  SCOPED_TRACE(describe(f) + (std::is_same<YT, bf16>::value ? " y=bf16" : " y=fp32"));
  const int N = f.N, K = f.K, C = f.C, ldx = K + f.ldx_pad, off = f.unaligned ? 1 : 0;
  const uint64_t seed = 1000 + N + K + C;
  // x (N, ldx) and W (C, K) uniform, W scaled by 2/sqrt(K) so that z is O(1) like res; res
  // (N, C) offset from 0 so the two-pass variance matters.
  const vector<double> x0 = vit_test::rand_vec((size_t)N * ldx, 1);
  const vector<double> w0 = vit_test::rand_vec((size_t)C * K, 2, -2.0 / std::sqrt(K), 2.0 / std::sqrt(K));
  vector<AT> xa(x0.size()), wa(w0.size());
  for (size_t i = 0; i < xa.size(); ++i) xa[i] = from_float<AT>((float)x0[i]);
  for (size_t i = 0; i < wa.size(); ++i) wa[i] = from_float<AT>((float)w0[i]);
  const vector<float> bias = vit_test::to_float(vit_test::rand_vec(C, 3, -0.3, 0.3));
  const vector<float> res = vit_test::to_float(vit_test::rand_vec((size_t)N * C, 4, -0.5, 1.5));
  const vector<float> lw = vit_test::to_float(vit_test::rand_vec(C, 5, 0.5, 1.5));
  const vector<float> lb = vit_test::to_float(vit_test::rand_vec(C, 6, -0.2, 0.2));
  const float eps = 1e-5f;

  // Reference, tight: the operand values the kernel multiplies (contiguous x rows).
  vector<AT> xc((size_t)N * K);
  for (int r = 0; r < N; ++r)
    for (int k = 0; k < K; ++k) xc[(size_t)r * K + k] = xa[(size_t)r * ldx + k];
  vector<double> z, S;
  ref_gemm(true, N, C, K, operand_values(xc, f.prec), operand_values(wa, f.prec), &z, &S);
  // Loose: the FP32 values before any rounding (TF32, BF16 only).
  vector<double> zl, Sl;
  if (f.prec != Precision::Fp32) {
    vector<double> xd((size_t)N * K);
    for (int r = 0; r < N; ++r)
      for (int k = 0; k < K; ++k) xd[(size_t)r * K + k] = (float)x0[(size_t)r * ldx + k];
    vector<double> wd(w0.size());
    for (size_t i = 0; i < wd.size(); ++i) wd[i] = (float)w0[i];
    ref_gemm(true, N, C, K, xd, wd, &zl, &Sl);
  }
  const size_t NC = (size_t)N * C;
  const vector<float> m = mask_values(NC, f.p, seed);
  vector<double> zb(NC), zd(NC), out_ref(NC), tol_out(NC), out_loose(NC), tol_loose(NC);
  for (size_t i = 0; i < NC; ++i) zb[i] = z[i] + (f.bias ? bias[i % C] : 0.0);
  vit::ref::dropout_forward(zb.data(), zd.data(), NC, f.p, seed, kSite, kStep);
  for (size_t i = 0; i < NC; ++i) {
    out_ref[i] = res[i] + zd[i];
    tol_out[i] = m[i] * (kRelSum * S[i] + 1e-7) +
                 4 * std::ldexp(1.0, -24) * (m[i] * std::fabs(zb[i]) + std::fabs(out_ref[i])) + 1e-7;
    if (f.prec != Precision::Fp32) {
      out_loose[i] = res[i] + m[i] * (zl[i] + (f.bias ? bias[i % C] : 0.0));
      tol_loose[i] = m[i] * (loose_rel(f.prec) * Sl[i] + 1e-7) + tol_out[i];
    }
  }
  vector<double> y_ref(NC), mean_ref(N), rstd_ref(N), tol_y(NC), tol_mean(N), tol_rstd(N);
  if (f.ln) {
    const vector<double> lwd(lw.begin(), lw.end()), lbd(lb.begin(), lb.end());
    vit::ref::layernorm_forward(out_ref.data(), lwd.data(), lbd.data(), y_ref.data(),
                                mean_ref.data(), rstd_ref.data(), N, C, (double)eps);
    for (int r = 0; r < N; ++r) {
      double E = 0, mabs = 0, mx = 0;
      for (int c = 0; c < C; ++c) {
        E = std::max(E, tol_out[(size_t)r * C + c]);
        mabs += std::fabs(out_ref[(size_t)r * C + c]) / C;
        mx += std::fabs((out_ref[(size_t)r * C + c] - mean_ref[r]) * rstd_ref[r]) / C;
      }
      const double rs = rstd_ref[r];
      tol_mean[r] = E + 1e-6 * mabs;
      tol_rstd[r] = 2 * rs * rs * E + 1e-5 * rs;
      for (int c = 0; c < C; ++c) {
        const size_t i = (size_t)r * C + c;
        const double xh = std::fabs((out_ref[i] - mean_ref[r]) * rs);
        tol_y[i] = 1.1 * std::fabs(lw[c]) * rs * E * (2 + xh * mx) + 1e-5 * (1 + std::fabs(y_ref[i])) +
                   (std::is_same<YT, bf16>::value ? std::ldexp(std::fabs(y_ref[i]), -8) : 0.0);
      }
    }
  }

  // Device buffers.
  Dev<AT> dx(xa, off), dw(wa, off);
  Dev<float> dbias(bias, off), dres(res, off), dout(NC, off), dlw(lw, off), dlb(lb, off);
  Dev<float> dmean(N, off), drstd(N, off);
  Dev<YT> dy(NC, off);
  DeviceBuffer<uint64_t> step_base(vector<uint64_t>{kStep - 2});
  const vit::DevStep step = f.graph_step ? vit::DevStep(step_base.ptr, 2) : vit::DevStep(kStep);
  auto launch = [&](auto* y, float* mean, float* rstd) {
    vit::gemm_residual_ln_forward(0, f.prec, dx.ptr(), ldx, dw.ptr(), f.bias ? dbias.ptr() : nullptr,
                                  dres.ptr(), f.alias_out ? dres.ptr() : dout.ptr(), N, K, C, f.p,
                                  seed, kSite, step, f.ln ? dlw.ptr() : nullptr, dlb.ptr(), eps,
                                  f.ln ? y : nullptr, mean, rstd);
  };
  vector<vector<float>> first;
  vector<YT> first_y;
  double w_gemm = 0, w_loose = 0, w_y = 0, w_stats = 0;
  auto body = [&](const char* order) {
    SCOPED_TRACE(order);
    for (int run = 0; run < 2; ++run) {
      if (f.alias_out) dres.upload(res);
      dout.fill_nan();
      dy.fill_nan();
      dmean.fill_nan();
      drstd.fill_nan();
      launch(dy.ptr(), f.stats ? dmean.ptr() : nullptr, f.stats ? drstd.ptr() : nullptr);
      const vector<float> out = f.alias_out ? dres.get() : dout.get();
      EXPECT_TRUE(within(out, out_ref, tol_out, &w_gemm)) << "out";
      if (f.prec != Precision::Fp32) {
        EXPECT_TRUE(within(out, out_loose, tol_loose, &w_loose)) << "out vs fp32 operands";
      }
      vector<float> mean, rstd;
      vector<YT> y;
      if (f.ln) {
        y = dy.get();
        EXPECT_TRUE(within(y, y_ref, tol_y, &w_y)) << "y";
        if (f.stats) {
          mean = dmean.get();
          rstd = drstd.get();
          EXPECT_TRUE(within(mean, mean_ref, tol_mean, &w_stats)) << "mean";
          EXPECT_TRUE(within(rstd, rstd_ref, tol_rstd, &w_stats)) << "rstd";
        }
      }
      if (!f.ln || !f.stats) {  // untouched outputs stay as they were (NaN bytes)
        const vector<float> mn = dmean.get();
        EXPECT_TRUE(std::isnan(mn[0])) << "mean written without being asked for";
      }
      if (first.empty()) {
        first = {out, mean, rstd};
        first_y = y;
      } else {  // every run, every thread order: the same bits
        EXPECT_TRUE(vit_test::bitwise_equal(out, first[0])) << "out";
        EXPECT_TRUE(vit_test::bitwise_equal(mean, first[1])) << "mean";
        EXPECT_TRUE(vit_test::bitwise_equal(rstd, first[2])) << "rstd";
        EXPECT_TRUE(vit_test::bitwise_equal(as_float(y), as_float(first_y))) << "y";
      }
    }
  };
  if (f.orders) vit_test::for_each_thread_order(body);
  else body("one order");
  // A BF16 y is the FP32 epilogue's y rounded once.
  if (std::is_same<YT, bf16>::value && f.ln && f.stats) {
    Dev<float> dy32(NC, off);
    dy32.fill_nan();
    if (f.alias_out) dres.upload(res);
    launch(dy32.ptr(), dmean.ptr(), drstd.ptr());
    const vector<float> y32 = dy32.get();
    vector<bf16> want(NC);
    for (size_t i = 0; i < NC; ++i) want[i] = __float2bfloat16(y32[i]);
    EXPECT_TRUE(vit_test::bitwise_equal(as_float(first_y), as_float(want)))
        << "bf16 y is not bf16(fp32 y)";
    EXPECT_TRUE(vit_test::bitwise_equal(f.alias_out ? dres.get() : dout.get(), first[0])) << "out (fp32 y)";
    EXPECT_TRUE(vit_test::bitwise_equal(dmean.get(), first[1])) << "mean (fp32 y)";
  }
  printf("    %s: gemm %.3f, vs fp32 operands %.3f, y %.3f, stats %.3f (error / bound)\n",
         describe(f).c_str(), w_gemm, w_loose, w_y, w_stats);
}

template <class YT = float>
void forward_all_precisions(FwdCase f) {
  f.prec = Precision::Fp32;
  check_forward<float, YT>(f);
  f.prec = Precision::Tf32;
  check_forward<float, YT>(f);
  f.prec = Precision::Bf16;
  check_forward<bf16, bf16>(f);
}

// ---- backward --------------------------------------------------------------------------------

enum class MaskMode { None, Separate, AliasX };

struct BwdCase {
  Precision prec;
  int N, K, C;
  int lddy_pad = 0;      // lddy = K + lddy_pad
  float p = 0.1f;
  MaskMode mask = MaskMode::Separate;
  int ld_mask_pad = 0;   // separate mask: ld_mask = C + pad
  bool unaligned = false;
  bool orders = true;
};

std::string describe(const BwdCase& b) {
  char s[256];
  snprintf(s, sizeof s, "backward %s N=%d K=%d C=%d lddy=%d p=%g mask=%s%s", pname(b.prec), b.N,
           b.K, b.C, b.K + b.lddy_pad, b.p,
           b.mask == MaskMode::None ? "none" : b.mask == MaskMode::AliasX ? "alias-x" : "separate",
           b.unaligned ? " unaligned" : "");
  return s;
}

struct BwdResult {
  vector<float> dres, partial;
};

template <class AT>
BwdResult check_backward(const BwdCase& b) {
  SCOPED_TRACE(describe(b));
  const int N = b.N, K = b.K, C = b.C, lddy = K + b.lddy_pad, off = b.unaligned ? 1 : 0;
  const uint64_t seed = 2000 + N + K + C;
  const size_t NC = (size_t)N * C;
  const vector<double> dy0 = vit_test::rand_vec((size_t)N * lddy, 11);
  const vector<double> w0 = vit_test::rand_vec((size_t)K * C, 12, -2.0 / std::sqrt(K), 2.0 / std::sqrt(K));
  vector<AT> dya(dy0.size()), wa(w0.size());
  for (size_t i = 0; i < dya.size(); ++i) dya[i] = from_float<AT>((float)dy0[i]);
  for (size_t i = 0; i < wa.size(); ++i) wa[i] = from_float<AT>((float)w0[i]);
  const vector<float> x = vit_test::to_float(vit_test::rand_vec(NC, 13, -0.5, 1.5));  // LN input
  const vector<float> lw = vit_test::to_float(vit_test::rand_vec(C, 14, 0.5, 1.5));
  const vector<float> dres0 = vit_test::to_float(vit_test::rand_vec(NC, 15));
  // mean / rstd as the forward saved them (FP32), from the double reference.
  vector<float> mean(N), rstd(N);
  {
    const vector<double> xd(x.begin(), x.end()), ones(C, 1.0), zeros(C, 0.0);
    vector<double> yd(NC), md(N), rd(N);
    vit::ref::layernorm_forward(xd.data(), ones.data(), zeros.data(), yd.data(), md.data(), rd.data(), N, C, 1e-5);
    for (int r = 0; r < N; ++r) { mean[r] = (float)md[r]; rstd[r] = (float)rd[r]; }
  }

  // Reference: g = dy W (tight operands), then LN backward (double) at the FP32 mean / rstd.
  vector<AT> dyc((size_t)N * K);
  for (int r = 0; r < N; ++r)
    for (int k = 0; k < K; ++k) dyc[(size_t)r * K + k] = dya[(size_t)r * lddy + k];
  vector<double> g, S;
  ref_gemm(false, N, C, K, operand_values(dyc, b.prec), operand_values(wa, b.prec), &g, &S);
  const vector<double> xd(x.begin(), x.end()), lwd(lw.begin(), lw.end());
  const vector<double> md(mean.begin(), mean.end()), rd(rstd.begin(), rstd.end());
  vector<double> dx(NC), dw(C, 0.0), db(C, 0.0);
  vit::ref::layernorm_backward(g.data(), xd.data(), lwd.data(), md.data(), rd.data(), dx.data(),
                               dw.data(), db.data(), N, C);
  vector<double> dres_ref(NC), tol_dres(NC), tol_dw(C, 0.0), tol_db(C, 0.0);
  const int nblk = vit::gemm_ln_row_blocks(N, C), bm = vit::gemm_ln::block_rows(C);
  vector<double> pw_ref((size_t)nblk * C, 0.0), pb_ref((size_t)nblk * C, 0.0);
  vector<double> tol_pw((size_t)nblk * C, 0.0), tol_pb((size_t)nblk * C, 0.0);
  for (int r = 0; r < N; ++r) {
    const double rs = rd[r];
    double E = 0, mx = 0, mdn = 0, mdnx = 0;
    for (int c = 0; c < C; ++c) {
      const size_t i = (size_t)r * C + c;
      const double xh = (xd[i] - md[r]) * rs;
      E = std::max(E, std::fabs(lw[c]) * (kRelSum * S[i] + 1e-7));
      mx += std::fabs(xh) / C;
      mdn += g[i] * lw[c] / C;
      mdnx += g[i] * lw[c] * xh / C;
    }
    for (int c = 0; c < C; ++c) {
      const size_t i = (size_t)r * C + c;
      const double xh = (xd[i] - md[r]) * rs, eg = kRelSum * S[i] + 1e-7;
      dres_ref[i] = dres0[i] + dx[i];
      const double tdx = 1.1 * rs * E * (2 + std::fabs(xh) * mx) +
                         1e-5 * rs * (std::fabs(g[i] * lw[c]) + std::fabs(mdn) + std::fabs(xh * mdnx)) + 1e-6;
      tol_dres[i] = tdx + std::ldexp(std::fabs(dres_ref[i]), -23);
      const size_t pi = (size_t)(r / bm) * C + c;
      pw_ref[pi] += g[i] * xh;
      pb_ref[pi] += g[i];
      tol_pw[pi] += eg * std::fabs(xh) + 1e-5 * std::fabs(g[i] * xh);
      tol_pb[pi] += eg + 1e-5 * std::fabs(g[i]);
    }
  }
  for (int k = 0; k < nblk; ++k)
    for (int c = 0; c < C; ++c) {
      tol_dw[c] += tol_pw[(size_t)k * C + c] + 1e-6;
      tol_db[c] += tol_pb[(size_t)k * C + c] + 1e-6;
      tol_pw[(size_t)k * C + c] += 1e-7;
      tol_pb[(size_t)k * C + c] += 1e-7;
    }
  const vector<float> m = mask_values(NC, b.p, seed);

  // Device buffers. An aliased mask lies in x's rows: float ld C, bf16 ld 2C.
  const bool alias = b.mask == MaskMode::AliasX;
  const int ld_mask = alias ? (int)(C * sizeof(float) / sizeof(AT)) : C + b.ld_mask_pad;
  Dev<AT> ddy(dya, off), dw_(wa, off);
  Dev<float> dxb(x, off), dmean(mean, off), drstd(rstd, off), dlw(lw, off), ddres(NC, off);
  Dev<AT> dmask(b.mask == MaskMode::Separate ? (size_t)N * ld_mask : 1, off);
  Dev<float> dpart(2 * (size_t)nblk * C, off);
  AT* mask_ptr = b.mask == MaskMode::None ? nullptr
                 : alias ? reinterpret_cast<AT*>(dxb.ptr()) : dmask.ptr();
  BwdResult first;
  vector<AT> first_mask;
  double w_dres = 0, w_part = 0, w_sum = 0;
  auto body = [&](const char* order) {
    SCOPED_TRACE(order);
    for (int run = 0; run < 2; ++run) {
      ddres.upload(dres0);
      if (alias) dxb.upload(x);
      dmask.fill_nan();
      dpart.fill_nan();
      vit::gemm_ln_backward(0, b.prec, ddy.ptr(), lddy, dw_.ptr(), N, K, C, dxb.ptr(), dmean.ptr(),
                            drstd.ptr(), dlw.ptr(), ddres.ptr(), mask_ptr, ld_mask, b.p, seed,
                            kSite, kStep, dpart.ptr());
      BwdResult got{ddres.get(), dpart.get()};
      EXPECT_TRUE(within(got.dres, dres_ref, tol_dres, &w_dres)) << "dres";
      const vector<float> pw(got.partial.begin(), got.partial.begin() + (size_t)nblk * C);
      const vector<float> pb(got.partial.begin() + (size_t)nblk * C, got.partial.end());
      EXPECT_TRUE(within(pw, pw_ref, tol_pw, &w_part)) << "ln_w partials";
      EXPECT_TRUE(within(pb, pb_ref, tol_pb, &w_part)) << "ln_b partials";
      vector<float> sw(C, 0.0f), sb(C, 0.0f);  // the caller's sum, blocks in order
      for (int k = 0; k < nblk; ++k)
        for (int c = 0; c < C; ++c) {
          sw[c] += pw[(size_t)k * C + c];
          sb[c] += pb[(size_t)k * C + c];
        }
      EXPECT_TRUE(within(sw, dw, tol_dw, &w_sum)) << "ln_w grad";
      EXPECT_TRUE(within(sb, db, tol_db, &w_sum)) << "ln_b grad";
      vector<AT> mk;
      if (b.mask != MaskMode::None) {  // bitwise AT(dres * m) of the kernel's own dres
        vector<AT> raw;
        if (alias) {
          const vector<float> xb = dxb.get();
          raw.resize(xb.size() * sizeof(float) / sizeof(AT));
          std::memcpy(static_cast<void*>(raw.data()), xb.data(), xb.size() * sizeof(float));
        } else {
          raw = dmask.get();
        }
        mk.resize(NC);
        vector<AT> want(NC);
        for (int r = 0; r < N; ++r)
          for (int c = 0; c < C; ++c) {
            const size_t i = (size_t)r * C + c;
            mk[i] = raw[(size_t)r * ld_mask + c];
            want[i] = from_float<AT>(got.dres[i] * m[i]);
          }
        EXPECT_TRUE(vit_test::bitwise_equal(as_float(mk), as_float(want))) << "mask_out";
      }
      if (first.dres.empty()) {
        first = got;
        first_mask = mk;
      } else {
        EXPECT_TRUE(vit_test::bitwise_equal(got.dres, first.dres)) << "dres";
        EXPECT_TRUE(vit_test::bitwise_equal(got.partial, first.partial)) << "partial";
        EXPECT_TRUE(vit_test::bitwise_equal(as_float(mk), as_float(first_mask))) << "mask";
      }
    }
  };
  if (b.orders) vit_test::for_each_thread_order(body);
  else body("one order");
  printf("    %s: dres %.3f, partials %.3f, summed %.3f (error / bound)\n", describe(b).c_str(),
         w_dres, w_part, w_sum);
  return first;
}

void backward_all_precisions(BwdCase b) {
  b.prec = Precision::Fp32;
  check_backward<float>(b);
  b.prec = Precision::Tf32;
  check_backward<float>(b);
  b.prec = Precision::Bf16;
  check_backward<bf16>(b);
}

FwdCase fwd(int N, int K, int C) {
  FwdCase f;
  f.prec = Precision::Fp32;
  f.N = N; f.K = K; f.C = C;
  return f;
}
BwdCase bwd(int N, int K, int C) {
  BwdCase b;
  b.prec = Precision::Fp32;
  b.N = N; b.K = K; b.C = C;
  return b;
}

}  // namespace

// ---- forward ---------------------------------------------------------------------------------

TEST(GemmLnForward, BasicShape) {  // 2 images x 65 tokens, hidden 256: proj (K = C) and FC2
  VIT_REQUIRE_GPU();
  forward_all_precisions(fwd(130, 256, 256));
  FwdCase f = fwd(130, 1024, 256);
  f.orders = false;
  forward_all_precisions(f);
}

TEST(GemmLnForward, VitB16Width) {  // hidden 768: two column passes of 384
  VIT_REQUIRE_GPU();
  FwdCase f = fwd(20, 768, 768);
  forward_all_precisions(f);
  f = fwd(20, 3072, 768);
  f.orders = false;
  forward_all_precisions(f);
}

TEST(GemmLnForward, OddShapes) {
  VIT_REQUIRE_GPU();
  forward_all_precisions(fwd(37, 40, 48));   // partial row block, 3 column tiles, K % 32 != 0
  forward_all_precisions(fwd(37, 40, 20));   // C % 16 != 0 (and % 8): padded columns
  forward_all_precisions(fwd(5, 13, 1));     // K % 8 != 0: synchronous loads; one column
  FwdCase f = fwd(20, 24, 1000);             // 16-row blocks, 2 passes, C % 16 != 0
  f.orders = false;
  forward_all_precisions(f);
  f = fwd(17, 16, 1024);                     // the widest
  f.orders = false;
  forward_all_precisions(f);
}

TEST(GemmLnForward, NoDropoutNoLayerNorm) {
  VIT_REQUIRE_GPU();
  FwdCase f = fwd(37, 40, 48);
  f.p = 0.0f;
  forward_all_precisions(f);  // p == 0: out = res + z
  f.p = 0.1f;
  f.ln = false;
  forward_all_precisions(f);  // out only (y, mean, rstd untouched)
  f.ln = true;
  f.bias = false;
  f.stats = false;
  forward_all_precisions(f);  // no bias, no mean/rstd
}

TEST(GemmLnForward, StridesAliasingUnalignedAndGraphStep) {
  VIT_REQUIRE_GPU();
  FwdCase f = fwd(37, 64, 64);
  f.ldx_pad = 8;  // ldx > K, still 16-byte rows: async copies
  f.alias_out = true;
  forward_all_precisions(f);
  f.ldx_pad = 3;  // rows not 16-byte multiples: synchronous loads
  f.alias_out = false;
  f.graph_step = true;
  forward_all_precisions(f);
  f.ldx_pad = 0;  // every pointer one element off: slow paths everywhere
  f.graph_step = false;
  f.unaligned = true;
  forward_all_precisions(f);
  f = fwd(40, 32, 36);  // C % 4 == 0 but not % 8, unaligned
  f.unaligned = true;
  forward_all_precisions(f);
}

TEST(GemmLnForward, MixedOutputTypes) {  // FP32 operands with a BF16 y, and the reverse
  VIT_REQUIRE_GPU();
  FwdCase f = fwd(37, 40, 48);
  f.prec = Precision::Tf32;
  check_forward<float, bf16>(f);
  f.prec = Precision::Bf16;
  check_forward<bf16, float>(f);
}

TEST(GemmLnForward, NaturalWmmaMapping) {
#if defined(VIT_SIMT)
  const simt::WmmaMap map = simt::wmma_map();
  const uint64_t seed = simt::wmma_map_seed();
  simt::set_wmma_map(simt::WmmaMap::Natural);
  FwdCase f = fwd(37, 40, 48);
  f.prec = Precision::Tf32;
  check_forward<float, float>(f);
  f.prec = Precision::Bf16;
  check_forward<bf16, bf16>(f);
  simt::set_wmma_map(map, seed);
#else
  GTEST_SKIP() << "simt only (the GPU has one mapping)";
#endif
}

// ---- backward --------------------------------------------------------------------------------

TEST(GemmLnBackward, BasicShape) {  // FC1's dx (K = 1024) into LN2, QKV's (K = 768) into LN1
  VIT_REQUIRE_GPU();
  backward_all_precisions(bwd(130, 256, 256));
  BwdCase b = bwd(130, 1024, 256);
  b.orders = false;
  backward_all_precisions(b);
}

TEST(GemmLnBackward, VitB16Width) {
  VIT_REQUIRE_GPU();
  BwdCase b = bwd(20, 768, 768);
  b.mask = MaskMode::AliasX;
  backward_all_precisions(b);
  b = bwd(20, 3072, 768);
  b.orders = false;
  backward_all_precisions(b);
}

TEST(GemmLnBackward, OddShapes) {
  VIT_REQUIRE_GPU();
  backward_all_precisions(bwd(37, 40, 48));
  backward_all_precisions(bwd(37, 40, 20));
  backward_all_precisions(bwd(5, 13, 1));
  BwdCase b = bwd(20, 24, 1000);
  b.orders = false;
  backward_all_precisions(b);
  b = bwd(17, 16, 1024);
  b.orders = false;
  backward_all_precisions(b);
}

TEST(GemmLnBackward, MaskModes) {  // none / separate (ld > C) / aliasing x: the same dres, partials
  VIT_REQUIRE_GPU();
  for (Precision prec : {Precision::Fp32, Precision::Tf32, Precision::Bf16}) {
    for (float p : {0.1f, 0.0f}) {
      BwdCase b = bwd(37, 40, 48);
      b.prec = prec;
      b.p = p;
      b.orders = false;
      BwdResult ref;
      for (MaskMode mode : {MaskMode::None, MaskMode::Separate, MaskMode::AliasX}) {
        b.mask = mode;
        b.ld_mask_pad = mode == MaskMode::Separate ? 5 : 0;
        const BwdResult r = prec == Precision::Bf16 ? check_backward<bf16>(b) : check_backward<float>(b);
        if (ref.dres.empty()) {
          ref = r;
        } else {
          EXPECT_TRUE(vit_test::bitwise_equal(r.dres, ref.dres)) << describe(b);
          EXPECT_TRUE(vit_test::bitwise_equal(r.partial, ref.partial)) << describe(b);
        }
      }
    }
  }
}

TEST(GemmLnBackward, StridesAndUnaligned) {
  VIT_REQUIRE_GPU();
  BwdCase b = bwd(37, 64, 64);
  b.lddy_pad = 8;
  b.ld_mask_pad = 4;
  backward_all_precisions(b);
  b.lddy_pad = 3;
  b.ld_mask_pad = 1;
  backward_all_precisions(b);
  b.lddy_pad = 0;
  b.unaligned = true;
  backward_all_precisions(b);
  b.mask = MaskMode::AliasX;  // bf16 mask over x + 1 float: 4-byte aligned rows, scalar stores
  backward_all_precisions(b);
}

// The ln_w / ln_b partials: one row per block of rows, each that block's sums; added in block
// order they are the reference's LN weight gradients; the same bits on every run.
TEST(GemmLnBackward, PartialsSumInBlockOrderDeterministic) {
  VIT_REQUIRE_GPU();
  for (Precision prec : {Precision::Fp32, Precision::Bf16}) {
    BwdCase b = bwd(130, 64, 64);  // 5 blocks of 32 rows, the last with 2
    b.prec = prec;
    EXPECT_EQ(vit::gemm_ln_row_blocks(130, 64), 5);
    // check_backward compares every block's row and the in-order sums with the reference and
    // the outputs of 4 launches (2 runs x 2 thread orders) bitwise.
    const BwdResult r1 = prec == Precision::Bf16 ? check_backward<bf16>(b) : check_backward<float>(b);
    const BwdResult r2 = prec == Precision::Bf16 ? check_backward<bf16>(b) : check_backward<float>(b);
    EXPECT_TRUE(vit_test::bitwise_equal(r1.partial, r2.partial));
    EXPECT_EQ(r1.partial.size(), 2u * 5 * 64);
  }
}

// Launched inside a (thread-local) CUDA graph capture, as the training step is: the first
// launch of an instantiation at a new, larger width raises its shared-memory attribute during
// the capture. The replayed graph gives the eager launch's bits.
TEST(GemmLn, CapturedInGraphMatchesEager) {
  VIT_REQUIRE_GPU();
  const int N = 20, K = 32, C = 776;  // no other test launches <float, bf16> this wide
  const vector<float> x = vit_test::to_float(vit_test::rand_vec((size_t)N * K, 31));
  const vector<float> w = vit_test::to_float(vit_test::rand_vec((size_t)C * K, 32, -0.3, 0.3));
  const vector<float> res = vit_test::to_float(vit_test::rand_vec((size_t)N * C, 33));
  const vector<float> lw(C, 1.0f), lb(C, 0.0f);
  DeviceBuffer<float> dx(x), dw(w), dres(res), dlw(lw), dlb(lb), out((size_t)N * C), mean(N), rstd(N);
  DeviceBuffer<bf16> y((size_t)N * C);
  cudaStream_t st;
  CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  // The uploads ran on the legacy stream, which a non-blocking stream does not wait for (and a
  // pageable H2D copy may still be in flight when cudaMemcpy returns): settle them first.
  CUDA_CHECK(cudaDeviceSynchronize());
  auto issue = [&] {
    vit::gemm_residual_ln_forward<float, bf16>(st, Precision::Tf32, dx, K, dw, nullptr, dres, out,
                                               N, K, C, 0.1f, 9, kSite, kStep, dlw, dlb, 1e-5f, y,
                                               mean, rstd);
  };
  CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  issue();
  cudaGraph_t graph = nullptr;
  CUDA_CHECK(cudaStreamEndCapture(st, &graph));
  cudaGraphExec_t exec = nullptr;
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_CHECK(cudaGraphDestroy(graph));
  CUDA_CHECK(cudaGraphLaunch(exec, st));
  CUDA_CHECK(cudaStreamSynchronize(st));
  const vector<float> g_out = out.download(), g_y = as_float(y.download()), g_rstd = rstd.download();
  CUDA_CHECK(cudaMemsetAsync(out.ptr, 0xFF, out.n * sizeof(float), st));  // on st: ordered
  CUDA_CHECK(cudaMemsetAsync(y.ptr, 0xFF, y.n * sizeof(bf16), st));
  issue();
  CUDA_CHECK(cudaStreamSynchronize(st));
  EXPECT_TRUE(vit_test::bitwise_equal(out.download(), g_out));
  EXPECT_TRUE(vit_test::bitwise_equal(as_float(y.download()), g_y));
  EXPECT_TRUE(vit_test::bitwise_equal(rstd.download(), g_rstd));
  EXPECT_FALSE(std::isnan(g_out[0]) || std::isnan(g_y[(size_t)N * C - 1]));
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaStreamDestroy(st));
}

// ---- interface -------------------------------------------------------------------------------

TEST(GemmLn, SupportedWidthsAndRowBlocks) {
  EXPECT_FALSE(vit::gemm_ln_supports(0));
  for (int C = 1; C <= 1024; ++C) EXPECT_TRUE(vit::gemm_ln_supports(C)) << C;
  EXPECT_FALSE(vit::gemm_ln_supports(1025));
  EXPECT_EQ(vit::gemm_ln_row_blocks(0, 256), 0);
  EXPECT_EQ(vit::gemm_ln_row_blocks(4160, 256), 130);  // basic, batch 64: 32-row blocks
  EXPECT_EQ(vit::gemm_ln_row_blocks(6304, 768), 197);  // vit-b16, batch 32
  EXPECT_EQ(vit::gemm_ln_row_blocks(33, 1024), 3);     // 16-row blocks above C = 768
}

TEST(GemmLn, ZeroRowsLaunchNothing) {
  const uint64_t before = vit::launch_count();
  vit::gemm_residual_ln_forward<float, float>(0, Precision::Fp32, nullptr, 8, nullptr, nullptr,
                                              nullptr, nullptr, 0, 8, 16, 0.1f, 1, kSite, 0,
                                              nullptr, nullptr, 1e-5f, nullptr, nullptr, nullptr);
  vit::gemm_ln_backward<bf16>(0, Precision::Bf16, nullptr, 8, nullptr, 0, 8, 16, nullptr, nullptr,
                              nullptr, nullptr, nullptr, nullptr, 16, 0.1f, 1, kSite, 0, nullptr);
  EXPECT_EQ(vit::launch_count(), before);
}

TEST(GemmLn, BadArgumentsThrow) {
  VIT_REQUIRE_GPU();
  DeviceBuffer<float> f(64 * 64);
  DeviceBuffer<bf16> h(64 * 64);
  float* p = f.ptr;
  auto fwd32 = [&](Precision prec, int N, int K, int C, int ldx, float pd, const float* lw, float* y) {
    vit::gemm_residual_ln_forward<float, float>(0, prec, p, ldx, p, nullptr, p, p, N, K, C, pd, 1,
                                                kSite, 0, lw, p, 1e-5f, y, nullptr, nullptr);
  };
  EXPECT_THROW(fwd32(Precision::Bf16, 4, 8, 8, 8, 0.1f, nullptr, nullptr), vit::Error);  // float operands, bf16 mode
  EXPECT_THROW(fwd32(Precision::Fp32, 4, 8, 0, 8, 0.1f, nullptr, nullptr), vit::Error);  // C = 0
  EXPECT_THROW(fwd32(Precision::Fp32, 4, 8, 1025, 8, 0.1f, nullptr, nullptr), vit::Error);
  EXPECT_THROW(fwd32(Precision::Fp32, 4, 0, 8, 8, 0.1f, nullptr, nullptr), vit::Error);  // K = 0
  EXPECT_THROW(fwd32(Precision::Fp32, -1, 8, 8, 8, 0.1f, nullptr, nullptr), vit::Error);
  EXPECT_THROW(fwd32(Precision::Fp32, 4, 8, 8, 7, 0.1f, nullptr, nullptr), vit::Error);  // ldx < K
  EXPECT_THROW(fwd32(Precision::Fp32, 4, 8, 8, 8, 1.0f, nullptr, nullptr), vit::Error);  // p = 1
  EXPECT_THROW(fwd32(Precision::Fp32, 4, 8, 8, 8, 0.1f, p, nullptr), vit::Error);        // LN without y
  auto fwd16 = [&](Precision prec) {
    vit::gemm_residual_ln_forward<bf16, bf16>(0, prec, h.ptr, 8, h.ptr, nullptr, p, p, 4, 8, 8,
                                              0.0f, 1, kSite, 0, nullptr, nullptr, 1e-5f, nullptr,
                                              nullptr, nullptr);
  };
  EXPECT_THROW(fwd16(Precision::Tf32), vit::Error);  // bf16 operands, tf32 mode
  auto bwd32 = [&](int N, int K, int C, int lddy, float* mask, int ld_mask, float* part) {
    vit::gemm_ln_backward<float>(0, Precision::Fp32, p, lddy, p, N, K, C, p, p, p, p, p, mask,
                                 ld_mask, 0.1f, 1, kSite, 0, part);
  };
  EXPECT_THROW(bwd32(4, 8, 8, 4, nullptr, 8, p), vit::Error);  // lddy < K
  EXPECT_THROW(bwd32(4, 8, 8, 8, p, 4, p), vit::Error);        // ld_mask < C
  EXPECT_THROW(bwd32(4, 8, 8, 8, nullptr, 8, nullptr), vit::Error);  // no partial
  EXPECT_THROW(bwd32(4, 8, 2000, 8, nullptr, 8, p), vit::Error);
  auto bwd16 = [&](Precision prec) {
    vit::gemm_ln_backward<bf16>(0, prec, h.ptr, 8, h.ptr, 4, 8, 8, p, p, p, p, p, nullptr, 8,
                                0.1f, 1, kSite, 0, p);
  };
  EXPECT_THROW(bwd16(Precision::Fp32), vit::Error);  // bf16 operands, fp32 mode
}
