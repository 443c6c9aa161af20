// tests/test_matmul_lt.cu — kernels/matmul_lt.cuh (--precision bf16: cuBLASLt GEMMs on BF16
// operands, FP32 compute and outputs, BIAS epilogue, deterministic db; the FP32 -> BF16
// conversion) against the CPU reference vit::ref::linear_* at the basic, vit-b16 and odd shapes,
// with the head's row strides, under two thread orders, bitwise identical across runs.
//
// Two comparisons, two tolerances:
//   1. With the reference fed the same BF16-rounded x, W, dy: every product of two BF16 numbers
//      (8-bit significands) is exact in FP32 (24 bits), so only the FP32 summation order differs
//      from the FP32 reference: the FP32 GEMM tolerance of tests/test_matmul.cu, rtol/atol 1e-5.
//   2. With the unrounded FP32 reference (what --precision bf16 changes for a user): rounding an
//      operand to BF16 (8 significant bits, unit roundoff u = 2^-8: half an ulp of 2^-7 relative
//      spacing) moves it by at most 2^-8 of itself, so a product moves by at most
//      (1 + 2^-8)^2 - 1 = 2^-7 + 2^-16 of |x||w|, and elementwise
//      |y - y_ref| <= (2^-7 + 2^-16) * sum_k |x_k| |w_k| + 1e-5 (checked per output against
//      that sum of absolute products, computed by the reference). The worst ratio of error to
//      bound is printed per shape; measured under simt: 0.03..0.16 at the model shapes (errors
//      of independent signs cancel over k = 130..3072 terms), up to 0.52 at k = 3..7. The bound
//      is not tight but it fails for operands rounded twice or to fewer bits, a missing bias or
//      a transposed operand (errors of the size of the values).
// The general call lt_matmul (each precision, the Bias / GeluAuxBias / Dgelu epilogues, strided
// batches, argument checks): at the end of the file.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/gelu.h"
#include "cpu/linear.h"
#include "kernels/matmul_lt.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_ref_util.h"
#include "tests/test_util.h"

using vit_test::DeviceBuffer;
using std::vector;
using vit::bf16;

namespace {

const double RTOL = 1e-5, ATOL = 1e-5;
const double BF16_PRODUCT = 1.0 / 128 + 1.0 / 65536;  // (1 + 2^-8)^2 - 1

float round_bf16(float x) { return __bfloat162float(__float2bfloat16(x)); }
vector<float> rounded(vector<float> v) {
  for (float& x : v) x = round_bf16(x);
  return v;
}
vector<bf16> to_bf16_host(const vector<float>& v) {
  vector<bf16> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = __float2bfloat16(v[i]);
  return o;
}
vector<float> strided(const vector<float>& dense, int N, int in, int ld, float pad = 1e30f) {
  vector<float> s((size_t)N * ld, pad);
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < in; ++i) s[(size_t)n * ld + i] = dense[(size_t)n * in + i];
  return s;
}
vector<float> abs_of(vector<float> v) {
  for (float& x : v) x = std::fabs(x);
  return v;
}

// max over i of |a_i - b_i| / (BF16_PRODUCT * s_i + 1e-5): <= 1 means inside the bound.
double worst_ratio(const vector<float>& a, const vector<float>& b, const vector<float>& s) {
  double w = 0;
  for (size_t i = 0; i < a.size(); ++i)
    w = std::max(w, std::fabs((double)a[i] - b[i]) / (BF16_PRODUCT * s[i] + 1e-5));
  return w;
}

struct Case {
  int N, in, out, ldx, lddx;
  bool bias;
};

void check(const Case& c) {
  char label[128];
  snprintf(label, sizeof label, "N=%d in=%d out=%d ldx=%d lddx=%d bias=%d", c.N, c.in, c.out,
           c.ldx, c.lddx, c.bias);
  SCOPED_TRACE(label);
  const int N = c.N, in = c.in, out = c.out;
  const vector<float> x = vit_test::to_float(vit_test::rand_vec((size_t)N * in, 31));
  const vector<float> w = vit_test::to_float(vit_test::rand_vec((size_t)out * in, 32, -0.05, 0.05));
  const vector<float> b = vit_test::to_float(vit_test::rand_vec(out, 33, -0.5, 0.5));
  const vector<float> dy = vit_test::to_float(vit_test::rand_vec((size_t)N * out, 34));
  const vector<float> dw0 = vit_test::to_float(vit_test::rand_vec((size_t)out * in, 35));
  const vector<float> db0 = vit_test::to_float(vit_test::rand_vec(out, 36));
  const vector<float> xr = rounded(x), wr = rounded(w), dyr = rounded(dy);

  // 1. Reference on the BF16-rounded operands (db from the FP32 dy, as the kernel).
  vector<float> ry((size_t)N * out), rdx((size_t)N * in), rdw = dw0;
  vit::ref::linear_forward(xr.data(), wr.data(), c.bias ? b.data() : nullptr, ry.data(), N, in, out);
  vit::ref::linear_backward(dyr.data(), xr.data(), wr.data(), rdx.data(), rdw.data(), (float*)nullptr, N,
                            in, out);
  vector<double> db_exact(db0.begin(), db0.end());
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < out; ++o) db_exact[o] += dy[(size_t)n * out + o];
  // 2. The unrounded FP32 reference and the sums of absolute products that bound the error.
  vector<float> fy((size_t)N * out), fdx((size_t)N * in), fdw = dw0;
  vit::ref::linear_forward(x.data(), w.data(), c.bias ? b.data() : nullptr, fy.data(), N, in, out);
  vit::ref::linear_backward(dy.data(), x.data(), w.data(), fdx.data(), fdw.data(), (float*)nullptr, N, in,
                            out);
  const vector<float> ax = abs_of(x), aw = abs_of(w), ady = abs_of(dy);
  vector<float> sy((size_t)N * out), sdx((size_t)N * in), sdw((size_t)out * in, 0.0f);
  vit::ref::linear_forward(ax.data(), aw.data(), (const float*)nullptr, sy.data(), N, in, out);
  vit::ref::linear_backward(ady.data(), ax.data(), aw.data(), sdx.data(), sdw.data(), (float*)nullptr, N,
                            in, out);

  cublasLtHandle_t lt;
  CUBLAS_CHECK(cublasLtCreate(&lt));
  // x in FP32 with row stride ldx, converted on the device (the model's path); the padding of
  // the BF16 copy is left as cudaMalloc gives it (NaN under simt), so reading it is caught.
  DeviceBuffer<float> d_x32(strided(x, N, in, c.ldx)), d_w32(w), d_b(b), d_dy(dy);
  DeviceBuffer<bf16> d_x((size_t)N * c.ldx), d_w(w.size()), d_dy16(dy.size());
  DeviceBuffer<float> d_y((size_t)N * out), d_dw(dw0.size()), d_db(out);
  const vector<float> dx_init((size_t)N * c.lddx, 7.0f);
  DeviceBuffer<float> d_dx(dx_init.size());
  DeviceBuffer<float> scratch(vit::matmul_scratch_floats(N, out));

  vector<vector<float>> first;
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    for (int run = 0; run < 2; ++run) {
      d_dw.upload(dw0);
      d_db.upload(db0);
      d_dx.upload(dx_init);
      vit::to_bf16(0, d_x32, c.ldx, d_x, c.ldx, N, in);
      vit::to_bf16(0, d_w32, d_w, w.size());
      vit::to_bf16(0, d_dy, d_dy16, dy.size());
      vit::matmul_forward_bf16(lt, 0, d_x, c.ldx, d_w, c.bias ? d_b.get() : nullptr, d_y, N, in, out);
      vit::matmul_backward_bf16(lt, 0, d_dy16, d_dy, d_x, c.ldx, d_w, d_dx, c.lddx, d_dw, d_db,
                                scratch, N, in, out);
      vector<vector<float>> o = {d_y.download(), d_dw.download(), d_db.download(), d_dx.download()};
      // The conversion is round-to-nearest-even, as the host's __float2bfloat16.
      const vector<bf16> w16 = d_w.download();
      const vector<bf16> w16_host = to_bf16_host(w);
      bool same = true;
      for (size_t i = 0; i < w16.size(); ++i)
        same = same && __bfloat162float(w16[i]) == __bfloat162float(w16_host[i]);
      EXPECT_TRUE(same) << "to_bf16 differs from __float2bfloat16";
      vector<float> dx_dense((size_t)N * in);
      for (int n = 0; n < N; ++n) {
        for (int i = 0; i < in; ++i) dx_dense[(size_t)n * in + i] = o[3][(size_t)n * c.lddx + i];
        for (int i = in; i < c.lddx; ++i)
          EXPECT_EQ(o[3][(size_t)n * c.lddx + i], 7.0f) << "dx padding written";
      }
      EXPECT_TRUE(vit_test::allclose(o[0], ry, RTOL, ATOL)) << "y";
      EXPECT_TRUE(vit_test::allclose(o[1], rdw, RTOL, ATOL)) << "dw";
      EXPECT_TRUE(vit_test::allclose(o[2], db_exact, RTOL, ATOL)) << "db";
      EXPECT_TRUE(vit_test::allclose(dx_dense, rdx, RTOL, ATOL)) << "dx";
      // Against FP32 (dw: the bound applies to the increment dy^T x, dw0 is exact).
      vector<float> inc(o[1].size()), finc(o[1].size());
      for (size_t i = 0; i < inc.size(); ++i) {
        inc[i] = o[1][i] - dw0[i];
        finc[i] = fdw[i] - dw0[i];
      }
      const double ry_ratio = worst_ratio(o[0], fy, sy), rdx_ratio = worst_ratio(dx_dense, fdx, sdx),
                   rdw_ratio = worst_ratio(inc, finc, sdw);
      EXPECT_LE(ry_ratio, 1.0) << "y vs FP32";
      EXPECT_LE(rdx_ratio, 1.0) << "dx vs FP32";
      EXPECT_LE(rdw_ratio, 1.0) << "dw vs FP32";
      if (first.empty()) {
        printf("    %s: error / BF16 bound vs FP32: y %.3f dx %.3f dw %.3f\n", label, ry_ratio,
               rdx_ratio, rdw_ratio);
        first = o;
      } else {
        for (size_t k = 0; k < o.size(); ++k)
          EXPECT_TRUE(vit_test::bitwise_equal(o[k], first[k])) << "output " << k;
      }
    }
  });
  CUBLAS_CHECK(cublasLtDestroy(lt));
}

}  // namespace

TEST(MatmulBf16, BasicShapes) {  // B=2, T=65, C=256, MLP 1024
  VIT_REQUIRE_GPU();
  check({130, 256, 768, 256, 256, true});    // qkv
  check({130, 1024, 256, 1024, 1024, true}); // fc2
}

TEST(MatmulBf16, VitB16Shapes) {  // B=1, T=197, C=768, MLP 3072
  VIT_REQUIRE_GPU();
  check({197, 768, 3072, 768, 768, true});
}

TEST(MatmulBf16, OddShapes) {
  VIT_REQUIRE_GPU();
  check({17, 24, 50, 24, 24, true});     // out % 4 != 0
  check({51, 50, 24, 50, 50, false});    // in % 4 != 0, no bias
  check({3, 7, 5, 7, 7, true});
  check({300, 24, 10, 24, 24, true});    // 3 db chunks
}

TEST(MatmulBf16, RowStrides) {  // the head on CLS rows: x rows T*C apart, dx written in place
  VIT_REQUIRE_GPU();
  check({3, 24, 10, 17 * 24, 17 * 24, true});
  check({5, 50, 13, 53, 51, true});
}

TEST(MatmulBf16, ToBf16RoundsToNearestEvenAtRowStrides) {
  VIT_REQUIRE_GPU();
  // Hand-picked values: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 (even: 1); 1 + 3*2^-8 is a
  // tie between 1 + 2^-7 and 1 + 2^-6 (even: 1 + 2^-6); 1 + 2^-8 + 2^-20 rounds up.
  const vector<float> x = {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, 1.0f + 1.0f / 256 + 1.0f / 1048576,
                           -2.5f, 3.0e38f, -0.0f};
  const vector<float> want = {1.0f, 1.0f + 1.0f / 64, 1.0f + 1.0f / 128, -2.5f,
                              round_bf16(3.0e38f), -0.0f};
  // Two rows of 6 at row stride 9 (source) and 8 (destination).
  vector<float> two = strided(x, 1, 6, 9, 5.0f);
  two.insert(two.end(), x.begin(), x.end());
  DeviceBuffer<float> d_two(two);
  DeviceBuffer<bf16> d_y(16);
  d_y.upload(to_bf16_host(vector<float>(16, 9.0f)));
  vit::to_bf16(0, d_two, 9, d_y, 8, 2, 6);
  const vector<bf16> y = d_y.download();
  for (int r = 0; r < 2; ++r) {
    for (int i = 0; i < 6; ++i) EXPECT_EQ(__bfloat162float(y[r * 8 + i]), want[i]) << r << "," << i;
    for (int i = 6; i < 8; ++i) EXPECT_EQ(__bfloat162float(y[r * 8 + i]), 9.0f) << "padding written";
  }
}

// The cuBLASLt objects and algorithm are cached per GEMM shape (kernels/matmul_lt.cuh lt_plan):
// a second call of the same shape with another bias (each layer's own) and other operands must
// use them, not the first call's.
TEST(MatmulBf16, CachedPlanTakesEachCallsBiasAndOperands) {
  VIT_REQUIRE_GPU();
  const int N = 9, in = 16, out = 24;
  cublasLtHandle_t lt;
  CUBLAS_CHECK(cublasLtCreate(&lt));
  vector<DeviceBuffer<float>> keep;  // every call's buffers stay allocated: distinct pointers
  for (int call = 0; call < 3; ++call) {
    SCOPED_TRACE(call);
    const vector<float> x = rounded(vit_test::to_float(vit_test::rand_vec((size_t)N * in, 40 + call)));
    const vector<float> w = rounded(vit_test::to_float(vit_test::rand_vec((size_t)out * in, 50 + call)));
    const vector<float> b = vit_test::to_float(vit_test::rand_vec(out, 60 + call, -5, 5));
    vector<float> ry((size_t)N * out);
    vit::ref::linear_forward(x.data(), w.data(), b.data(), ry.data(), N, in, out);
    DeviceBuffer<bf16> d_x(to_bf16_host(x)), d_w(to_bf16_host(w));
    DeviceBuffer<float> d_b(b), d_y((size_t)N * out);
    vit::matmul_forward_bf16(lt, 0, d_x, in, d_w, d_b, d_y, N, in, out);
    EXPECT_TRUE(vit_test::allclose(d_y.download(), ry, RTOL, ATOL));
    keep.push_back(std::move(d_b));
    keep.push_back(std::move(d_y));
  }
  CUBLAS_CHECK(cublasLtDestroy(lt));
}

// ---- lt_matmul: the general call, its precisions and epilogues -----------------------------------
// lt_matmul<AB, DT> (LtCall, LtEpilogue) as the CUDA model calls it (host/cuda_model.cu gemm_xwT,
// gemm_dyW, gemm_dw), against the reference in double (vit::ref::linear_*, gelu_*<double>):
//   Bias         y (N, out; row stride ldy) = x W^T + bias
//   GeluAuxBias  aux (N, out) = x W^T + bias, y = gelu_tanh(aux)   (cpu/gelu.h's tanh GELU)
//   Dgelu        dx (N, in; row stride lddx) = (dy W) * gelu_tanh'(aux), aux (N, in) given
//   Default      a strided-batched dW_i (out, in) += dy_i^T x_i, batch 3, beta 1 onto nonzero
//                values, slots further apart than the matrices (the gaps must keep a sentinel)
// in Precision::Fp32 (FP32 operands and compute), Tf32 (FP32 operands on TF32 tensor cores) and
// Bf16 (BF16 operands, FP32 compute; D FP32 or BF16 with the bias and aux in D's type).
// Per-element bounds, S = sum_k |a_k| |b_k| + |bias| (+ |D0| with beta 1) from the reference on
// absolute values:
//   FP32 compute:  |AB - exact| <= 1e-5 S (recursive summation: k * 2^-24 S, k <= 64 here, with
//                  a margin for cuBLAS's order); BF16 operands are compared with the exact result
//                  on the same BF16 values (their products are exact in FP32);
//   TF32:          + (2^-9 + 2^-20) S (each operand loses < 2^-10 of itself even truncated to
//                  TF32's 11 significant bits, a product < (1 + 2^-10)^2 - 1);
//   GELU:          1.2 x the pre-activation's error (|gelu_tanh'| <= 1.13) + the evaluation's
//                  GELU_EVAL (|y| + 0.1) (simt: 1e-5, std::tanh in float; a GPU: 1e-3, as
//                  tests/test_simt_cublaslt.cu: the hardware's tanh approximation is not
//                  documented); Dgelu: |gelu'(aux)| x the GEMM's error + GELU_EVAL (|dx| +
//                  0.1 |dy W| + 0.1) (the slope's evaluation error scales with what it multiplies);
//   BF16 D / aux:  (1 + 2^-8) x that + 2^-8 |exact| (one rounding, unit roundoff 2^-8).
// The worst error / bound is printed per case. A wrong operand, a missing bias, a transposed
// matrix, a wrong ld or stride give errors of the size of the values (ratios >> 1).
namespace {

using vit::LtCall;
using vit::LtEpilogue;
using vit::Precision;

#if defined(__CUDACC__)
const double GELU_EVAL = 1e-3;
#else
const double GELU_EVAL = 1e-5;
#endif

template <class T> T cast_to(float v);
template <> float cast_to<float>(float v) { return v; }
template <> bf16 cast_to<bf16>(float v) { return __float2bfloat16(v); }
inline double widen(float v) { return v; }
inline double widen(bf16 v) { return __bfloat162float(v); }

// (rows, cols) values into a rows x ld buffer of T, `pad` elsewhere; `exact` gets the stored
// values (after rounding to T) densely, as doubles.
template <class T>
vector<T> store(const vector<float>& dense, size_t rows, size_t cols, size_t ld, float pad,
                vector<double>& exact) {
  vector<T> s(rows * ld, cast_to<T>(pad));
  exact.resize(rows * cols);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) {
      s[r * ld + c] = cast_to<T>(dense[r * cols + c]);
      exact[r * cols + c] = widen(s[r * ld + c]);
    }
  return s;
}
vector<double> abs_d(vector<double> v) {
  for (double& x : v) x = std::fabs(x);
  return v;
}
vector<double> transpose(const vector<double>& a, int rows, int cols) {
  vector<double> t(a.size());
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) t[(size_t)c * rows + r] = a[(size_t)r * cols + c];
  return t;
}

double gemm_rel_bound(Precision prec) {
  return 1e-5 + (prec == Precision::Tf32 ? 1.0 / 512 + 1.0 / 1048576 : 0.0);
}
template <class DT> double out_round() { return sizeof(DT) == 2 ? 1.0 / 256 : 0.0; }

// got (rows x cols at row stride ld, D's type) vs exact (dense) within bound (dense); the padding
// of each row (cols..ld-1) must still hold `pad`. Returns the worst error / bound.
template <class DT>
double expect_within(const vector<DT>& got, size_t rows, size_t cols, size_t ld,
                     const vector<double>& exact, const vector<double>& bound, float pad,
                     const char* what) {
  size_t bad = 0, stray = 0, worst = 0;
  double worst_ratio = 0;
  const DT p = cast_to<DT>(pad);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      const size_t i = r * cols + c;
      const double ratio = std::fabs(widen(got[r * ld + c]) - exact[i]) / bound[i];
      if (!(ratio <= 1)) ++bad;
      if (!(ratio <= worst_ratio)) { worst_ratio = ratio; worst = i; }
    }
    for (size_t c = cols; c < ld; ++c) stray += memcmp(&got[r * ld + c], &p, sizeof p) != 0;
  }
  EXPECT_EQ(bad, 0u) << what << ": worst [" << worst / cols << ", " << worst % cols << "] "
                     << widen(got[worst / cols * ld + worst % cols]) << " vs " << exact[worst]
                     << " (error / bound " << worst_ratio << ")";
  EXPECT_EQ(stray, 0u) << what << ": written past the row";
  return worst_ratio;
}

const char* prec_label(Precision p) { return vit::precision_name(p); }

// y (N, out; ldy) = epilogue(x (N, in; ldx) W^T + bias): Bias or GeluAuxBias (aux (N, out)).
template <class AB, class DT>
void check_lt_forward(Precision prec, LtEpilogue ep) {
  const bool gelu = ep == LtEpilogue::GeluAuxBias;
  char label[96];
  snprintf(label, sizeof label, "%s %s AB %s D %s", prec_label(prec), gelu ? "GeluAuxBias" : "Bias",
           sizeof(AB) == 2 ? "bf16" : "float", sizeof(DT) == 2 ? "bf16" : "float");
  SCOPED_TRACE(label);
  const int N = 37, in = 48, out = 64, ldx = 56, ldy = 72;  // out % 8 == 0: the aux's ld
  const float PAD = -555.0f;
  vector<double> x, w, b, dummy;
  const vector<AB> hx = store<AB>(vit_test::to_float(vit_test::rand_vec((size_t)N * in, 301)), N,
                                  in, ldx, NAN, x);
  const vector<AB> hw = store<AB>(
      vit_test::to_float(vit_test::rand_vec((size_t)out * in, 302, -0.3, 0.3)), out, in, in, 0, w);
  const vector<DT> hb =
      store<DT>(vit_test::to_float(vit_test::rand_vec(out, 303, -0.5, 0.5)), 1, out, out, 0, b);
  vector<double> pre((size_t)N * out), S((size_t)N * out);
  vit::ref::linear_forward(x.data(), w.data(), b.data(), pre.data(), N, in, out);
  const vector<double> ax = abs_d(x), aw = abs_d(w), ab = abs_d(b);
  vit::ref::linear_forward(ax.data(), aw.data(), ab.data(), S.data(), N, in, out);
  const double rd = out_round<DT>();
  vector<double> e_pre(S.size()), b_pre(S.size());
  for (size_t i = 0; i < S.size(); ++i) {
    e_pre[i] = gemm_rel_bound(prec) * S[i] + 1e-7;
    b_pre[i] = (1 + rd) * e_pre[i] + rd * std::fabs(pre[i]);
  }
  vector<double> y = pre, b_y = b_pre;
  if (gelu) {
    vit::ref::gelu_forward(pre.data(), y.data(), y.size(), vit::Gelu::Tanh);
    for (size_t i = 0; i < y.size(); ++i)
      b_y[i] = (1 + rd) * (1.2 * e_pre[i] + GELU_EVAL * (std::fabs(y[i]) + 0.1)) +
               rd * std::fabs(y[i]);
  }

  cublasLtHandle_t lt;
  CUBLAS_CHECK(cublasLtCreate(&lt));
  DeviceBuffer<AB> d_x(hx), d_w(hw);
  DeviceBuffer<DT> d_b(hb), d_y((size_t)N * ldy), d_aux((size_t)N * out);
  const vector<DT> y0((size_t)N * ldy, cast_to<DT>(PAD));
  vector<vector<DT>> first;
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    for (int run = 0; run < 2; ++run) {
      d_y.upload(y0);
      LtCall c;  // column-major y^T (out x N) = op_T(W as (in x out)) * x^T (in x N)
      c.transa = true;
      c.m = out;
      c.n = N;
      c.k = in;
      c.A = d_w.ptr;
      c.lda = in;
      c.B = d_x.ptr;
      c.ldb = ldx;
      c.D = d_y.ptr;
      c.ldd = ldy;
      c.epilogue = ep;
      c.bias = d_b.ptr;
      if (gelu) {
        c.aux = d_aux.ptr;
        c.ldaux = out;
      }
      vit::lt_matmul<AB, DT>(lt, 0, prec, c);
      vector<vector<DT>> o = {d_y.download()};
      const double ry = expect_within(o[0], N, out, ldy, y, b_y, PAD, "y");
      double raux = 0;
      if (gelu) {
        o.push_back(d_aux.download());
        raux = expect_within(o[1], N, out, out, pre, b_pre, PAD, "aux");
      }
      if (first.empty()) {
        printf("    %s: error / bound: y %.3g aux %.3g\n", label, ry, raux);
        first = o;
      }
      for (size_t k = 0; k < o.size(); ++k) {
        vector<float> a(o[k].size()), f(o[k].size());
        for (size_t i = 0; i < a.size(); ++i) {
          a[i] = (float)widen(o[k][i]);
          f[i] = (float)widen(first[k][i]);
        }
        EXPECT_TRUE(vit_test::bitwise_equal(a, f)) << "output " << k;
      }
    }
  });
  CUBLAS_CHECK(cublasLtDestroy(lt));
}

// dx (N, in; lddx) = (dy (N, out; lddy) W) * gelu_tanh'(aux (N, in)): the Dgelu epilogue.
template <class AB, class DT>
void check_lt_dgelu(Precision prec) {
  char label[96];
  snprintf(label, sizeof label, "%s Dgelu AB %s D %s", prec_label(prec),
           sizeof(AB) == 2 ? "bf16" : "float", sizeof(DT) == 2 ? "bf16" : "float");
  SCOPED_TRACE(label);
  const int N = 37, in = 48, out = 64, lddy = 72, lddx = 56;  // in % 8 == 0: the aux's ld
  const float PAD = -555.0f;
  vector<double> dy, w, aux;
  const vector<AB> hdy = store<AB>(vit_test::to_float(vit_test::rand_vec((size_t)N * out, 311)),
                                   N, out, lddy, NAN, dy);
  const vector<AB> hw = store<AB>(
      vit_test::to_float(vit_test::rand_vec((size_t)out * in, 312, -0.3, 0.3)), out, in, in, 0, w);
  const vector<DT> haux = store<DT>(
      vit_test::to_float(vit_test::rand_vec((size_t)N * in, 313, -3, 3)), N, in, in, 0, aux);
  // dy W = linear_forward(dy, W^T as (in, out)).
  const vector<double> wt = transpose(w, out, in), awt = abs_d(wt), ady = abs_d(dy);
  vector<double> g((size_t)N * in), S((size_t)N * in), want((size_t)N * in),
      slope((size_t)N * in), ones((size_t)N * in, 1.0);
  vit::ref::linear_forward(dy.data(), wt.data(), (const double*)nullptr, g.data(), N, out, in);
  vit::ref::linear_forward(ady.data(), awt.data(), (const double*)nullptr, S.data(), N, out, in);
  vit::ref::gelu_backward(g.data(), aux.data(), want.data(), want.size(), vit::Gelu::Tanh);
  vit::ref::gelu_backward(ones.data(), aux.data(), slope.data(), slope.size(), vit::Gelu::Tanh);
  const double rd = out_round<DT>();
  vector<double> bound(want.size());
  for (size_t i = 0; i < want.size(); ++i)
    bound[i] = (1 + rd) * (std::fabs(slope[i]) * (gemm_rel_bound(prec) * S[i] + 1e-7) +
                           GELU_EVAL * (std::fabs(want[i]) + 0.1 * std::fabs(g[i]) + 0.1)) +
               rd * std::fabs(want[i]);

  cublasLtHandle_t lt;
  CUBLAS_CHECK(cublasLtCreate(&lt));
  DeviceBuffer<AB> d_dy(hdy), d_w(hw);
  DeviceBuffer<DT> d_aux(haux), d_dx((size_t)N * lddx);
  const vector<DT> dx0((size_t)N * lddx, cast_to<DT>(PAD));
  vector<float> first;
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    for (int run = 0; run < 2; ++run) {
      d_dx.upload(dx0);
      LtCall c;  // dx^T (in x N) = W as stored (in x out) * dy^T (out x N)
      c.m = in;
      c.n = N;
      c.k = out;
      c.A = d_w.ptr;
      c.lda = in;
      c.B = d_dy.ptr;
      c.ldb = lddy;
      c.D = d_dx.ptr;
      c.ldd = lddx;
      c.epilogue = LtEpilogue::Dgelu;
      c.aux = d_aux.ptr;
      c.ldaux = in;
      vit::lt_matmul<AB, DT>(lt, 0, prec, c);
      const vector<DT> dx = d_dx.download();
      const double r = expect_within(dx, N, in, lddx, want, bound, PAD, "dx");
      vector<float> f(dx.size());
      for (size_t i = 0; i < f.size(); ++i) f[i] = (float)widen(dx[i]);
      if (first.empty()) {
        printf("    %s: error / bound %.3g\n", label, r);
        first = f;
      }
      EXPECT_TRUE(vit_test::bitwise_equal(f, first));
    }
  });
  CUBLAS_CHECK(cublasLtDestroy(lt));
}

// dW_i (out, in) += dy_i^T x_i, i < 3: one strided-batched call with beta 1 (gemm_dw).
template <class AB>
void check_lt_dw_batched(Precision prec) {
  char label[64];
  snprintf(label, sizeof label, "%s batched dW AB %s", prec_label(prec),
           sizeof(AB) == 2 ? "bf16" : "float");
  SCOPED_TRACE(label);
  const int batch = 3, N = 37, in = 48, out = 24, ldx = 56, lddy = 32;
  const long long sx = (long long)N * ldx + 40, sdy = (long long)N * lddy + 16,
                  sw = (long long)out * in + 24;  // slots further apart than the matrices
  const float PAD = -555.0f;
  vector<AB> hx(batch * sx, cast_to<AB>(NAN)), hdy(batch * sdy, cast_to<AB>(NAN));
  vector<float> hw(batch * sw, PAD);
  vector<double> want((size_t)batch * out * in), bound(want.size());
  for (int i = 0; i < batch; ++i) {
    vector<double> x, dy;
    const vector<AB> xi = store<AB>(
        vit_test::to_float(vit_test::rand_vec((size_t)N * in, 320 + i)), N, in, ldx, NAN, x);
    const vector<AB> dyi = store<AB>(
        vit_test::to_float(vit_test::rand_vec((size_t)N * out, 330 + i)), N, out, lddy, NAN, dy);
    std::copy(xi.begin(), xi.end(), hx.begin() + i * sx);
    std::copy(dyi.begin(), dyi.end(), hdy.begin() + i * sdy);
    const vector<float> w0 = vit_test::to_float(vit_test::rand_vec((size_t)out * in, 340 + i));
    std::copy(w0.begin(), w0.end(), hw.begin() + i * sw);
    vector<double> dw(w0.begin(), w0.end()), S = abs_d(dw);
    const vector<double> ax = abs_d(x), ady = abs_d(dy);
    vit::ref::linear_backward(dy.data(), x.data(), (const double*)nullptr, (double*)nullptr,
                              dw.data(), (double*)nullptr, N, in, out);
    vit::ref::linear_backward(ady.data(), ax.data(), (const double*)nullptr, (double*)nullptr,
                              S.data(), (double*)nullptr, N, in, out);
    for (size_t e = 0; e < dw.size(); ++e) {
      want[i * dw.size() + e] = dw[e];
      bound[i * dw.size() + e] = gemm_rel_bound(prec) * S[e] + 1e-7;
    }
  }

  cublasLtHandle_t lt;
  CUBLAS_CHECK(cublasLtCreate(&lt));
  DeviceBuffer<AB> d_x(hx), d_dy(hdy);
  DeviceBuffer<float> d_w(hw.size());
  vector<float> first;
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    for (int run = 0; run < 2; ++run) {
      d_w.upload(hw);
      LtCall c;  // dW^T (in x out) += x^T (in x N) * op_T(dy^T (out x N))
      c.transb = true;
      c.m = in;
      c.n = out;
      c.k = N;
      c.A = d_x.ptr;
      c.lda = ldx;
      c.stride_a = sx;
      c.B = d_dy.ptr;
      c.ldb = lddy;
      c.stride_b = sdy;
      c.D = d_w.ptr;
      c.ldd = in;
      c.stride_d = sw;
      c.batch = batch;
      c.beta = 1.0f;
      vit::lt_matmul<AB, float>(lt, 0, prec, c);
      const vector<float> got = d_w.download();
      // Each slot as a (out, in + gap) "row": the gap after matrix i holds PAD. The last slot's
      // gap is past what the call may write too.
      double worst = 0;
      for (int i = 0; i < batch; ++i) {
        SCOPED_TRACE("matrix " + std::to_string(i));
        const vector<float> slot(got.begin() + i * sw, got.begin() + (i + 1) * sw);
        const vector<double> wi(want.begin() + (size_t)i * out * in,
                                want.begin() + (size_t)(i + 1) * out * in);
        const vector<double> bi(bound.begin() + (size_t)i * out * in,
                                bound.begin() + (size_t)(i + 1) * out * in);
        worst = std::max(worst, expect_within(slot, 1, (size_t)out * in, sw, wi, bi, PAD, "dW"));
      }
      if (first.empty()) {
        printf("    %s: error / bound %.3g\n", label, worst);
        first = got;
      }
      EXPECT_TRUE(vit_test::bitwise_equal(got, first));
    }
  });
  CUBLAS_CHECK(cublasLtDestroy(lt));
}

}  // namespace

TEST(LtMatmul, BiasEpilogue) {
  VIT_REQUIRE_GPU();
  check_lt_forward<float, float>(Precision::Fp32, LtEpilogue::Bias);
  check_lt_forward<float, float>(Precision::Tf32, LtEpilogue::Bias);
  check_lt_forward<bf16, float>(Precision::Bf16, LtEpilogue::Bias);
  check_lt_forward<bf16, bf16>(Precision::Bf16, LtEpilogue::Bias);
}

TEST(LtMatmul, GeluAuxBiasEpilogue) {
  VIT_REQUIRE_GPU();
  check_lt_forward<float, float>(Precision::Fp32, LtEpilogue::GeluAuxBias);
  check_lt_forward<float, float>(Precision::Tf32, LtEpilogue::GeluAuxBias);
  check_lt_forward<bf16, float>(Precision::Bf16, LtEpilogue::GeluAuxBias);
  check_lt_forward<bf16, bf16>(Precision::Bf16, LtEpilogue::GeluAuxBias);
}

TEST(LtMatmul, DgeluEpilogue) {
  VIT_REQUIRE_GPU();
  check_lt_dgelu<float, float>(Precision::Fp32);
  check_lt_dgelu<float, float>(Precision::Tf32);
  check_lt_dgelu<bf16, float>(Precision::Bf16);
  check_lt_dgelu<bf16, bf16>(Precision::Bf16);
}

TEST(LtMatmul, StridedBatchedWeightGradient) {
  VIT_REQUIRE_GPU();
  check_lt_dw_batched<float>(Precision::Fp32);
  check_lt_dw_batched<float>(Precision::Tf32);
  check_lt_dw_batched<bf16>(Precision::Bf16);
}

#if defined(VIT_SIMT)
// Tf32 really computes in TF32 (the precision reaches the compute type): on data whose low
// mantissa bits matter it differs from Fp32. simt only: on a GPU cuBLASLt may pick a non-tensor-
// core kernel for a GEMM this small, which the bounds above allow.
TEST(LtMatmul, Tf32IsNotFp32) {
  const int m = 16, n = 8, k = 32;
  const vector<float> a = vit_test::to_float(vit_test::rand_vec((size_t)m * k, 350));
  const vector<float> b = vit_test::to_float(vit_test::rand_vec((size_t)k * n, 351));
  cublasLtHandle_t lt;
  CUBLAS_CHECK(cublasLtCreate(&lt));
  DeviceBuffer<float> d_a(a), d_b(b), d_d32((size_t)m * n), d_tf((size_t)m * n);
  LtCall c;
  c.m = m;
  c.n = n;
  c.k = k;
  c.A = d_a.ptr;
  c.lda = m;
  c.B = d_b.ptr;
  c.ldb = k;
  c.ldd = m;
  c.D = d_d32.ptr;
  vit::lt_matmul<float, float>(lt, 0, Precision::Fp32, c);
  c.D = d_tf.ptr;
  vit::lt_matmul<float, float>(lt, 0, Precision::Tf32, c);
  const vector<float> f = d_d32.download(), t = d_tf.download();
  size_t differ = 0;
  for (size_t i = 0; i < f.size(); ++i) differ += f[i] != t[i];
  EXPECT_GT(differ, f.size() / 2);
  CUBLAS_CHECK(cublasLtDestroy(lt));
}
#endif

TEST(LtMatmul, MismatchedEpilogueOrShapeThrows) {
  VIT_REQUIRE_GPU();
  cublasLtHandle_t lt = nullptr;  // never reached: the checks come first
  float dummy[4];
  LtCall c;
  c.m = c.n = c.k = 8;
  c.lda = c.ldb = c.ldd = c.ldaux = 8;
  c.A = c.B = dummy;
  c.D = dummy;
  auto expect_throw = [&](LtEpilogue ep, bool bias, bool aux, const char* what) {
    LtCall d = c;
    d.epilogue = ep;
    d.bias = bias ? dummy : nullptr;
    d.aux = aux ? dummy : nullptr;
    EXPECT_THROW((vit::lt_matmul<float, float>(lt, 0, Precision::Fp32, d)), vit::Error) << what;
  };
  expect_throw(LtEpilogue::Bias, false, false, "Bias without a bias");
  expect_throw(LtEpilogue::Bias, true, true, "Bias with an aux");
  expect_throw(LtEpilogue::Default, true, false, "Default with a bias");
  expect_throw(LtEpilogue::Default, false, true, "Default with an aux");
  expect_throw(LtEpilogue::GeluAuxBias, true, false, "GeluAuxBias without an aux");
  expect_throw(LtEpilogue::GeluAuxBias, false, true, "GeluAuxBias without a bias");
  expect_throw(LtEpilogue::Dgelu, false, false, "Dgelu without an aux");
  expect_throw(LtEpilogue::Dgelu, true, true, "Dgelu with a bias");
  LtCall s = c;
  s.m = 0;
  EXPECT_THROW((vit::lt_matmul<float, float>(lt, 0, Precision::Fp32, s)), vit::Error) << "m = 0";
  s = c;
  s.batch = 0;
  EXPECT_THROW((vit::lt_matmul<bf16, bf16>(lt, 0, Precision::Bf16, s)), vit::Error) << "batch 0";
}
