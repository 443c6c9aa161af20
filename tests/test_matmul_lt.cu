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
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

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
