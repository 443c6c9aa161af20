// tests/test_layernorm.cu — kernels/layernorm.cuh against the CPU reference (vit::ref, float):
// y, mean, rstd of the forward; dx, dw, db of the backward, at the basic (C=256), vit-b16
// (C=768, T=197) and odd shapes (C=24, 50, 3; N not a multiple of 8 or 32), under two thread
// orders, and bitwise identical across two runs.
// The kernel's dx ACCUMULATES while the reference's writes: dx starts at random values d0 and the
// expectation is d0 + ref dx. dw/db accumulate in both: both start from the same random values.
// Tolerances: the reference computes row statistics in double, the kernel in float; dw/db are
// sums over up to 394 rows, summed sequentially in float by the reference and in chunks here.
// Measured under simt: y, dx within ~3e-7 relative; dw/db up to ~3e-6 relative (sums of terms
// that cancel). rtol 1e-5, atol 1e-5 on O(1..30) values (atol covers entries near zero).
// BF16 output (--precision bf16): the same FP32 statistics and arithmetic, y rounded once, so y16
// must be bitwise __float2bfloat16 of the FP32 kernel's y (and mean/rstd bitwise the same), and
// within one BF16 rounding of the reference: |y16 - y_ref| <= 2^-8 |y_ref| + 1e-5 (unit roundoff
// of 8 significant bits; measured under simt: worst ratio to that bound 0.85..0.995, printed:
// the bound is tight, a rounding reaches almost half an ulp).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "cpu/layernorm.h"
#include "kernels/layernorm.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_ref_util.h"
#include "tests/test_util.h"

using vit_test::DeviceBuffer;
using std::vector;

namespace {

const double RTOL = 1e-5, ATOL = 1e-5;

void check_layernorm(int N, int C, float eps) {
  SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C));
  // x with an offset mean (0.5) so the two-pass variance matters; w around 1, b small.
  const vector<float> x = vit_test::to_float(vit_test::rand_vec((size_t)N * C, 1, -0.5, 1.5));
  const vector<float> w = vit_test::to_float(vit_test::rand_vec(C, 2, 0.5, 1.5));
  const vector<float> b = vit_test::to_float(vit_test::rand_vec(C, 3, -0.2, 0.2));
  const vector<float> dy = vit_test::to_float(vit_test::rand_vec((size_t)N * C, 4));
  const vector<float> dx0 = vit_test::to_float(vit_test::rand_vec((size_t)N * C, 5));
  const vector<float> dw0 = vit_test::to_float(vit_test::rand_vec(C, 6));
  const vector<float> db0 = vit_test::to_float(vit_test::rand_vec(C, 7));

  // Reference.
  vector<float> ry((size_t)N * C), rmean(N), rrstd(N), rdx((size_t)N * C), rdw = dw0, rdb = db0;
  vit::ref::layernorm_forward(x.data(), w.data(), b.data(), ry.data(), rmean.data(), rrstd.data(),
                              N, C, (double)eps);
  vit::ref::layernorm_backward(dy.data(), x.data(), w.data(), rmean.data(), rrstd.data(),
                               rdx.data(), rdw.data(), rdb.data(), N, C);
  for (size_t i = 0; i < rdx.size(); ++i) rdx[i] += dx0[i];  // the kernel accumulates

  DeviceBuffer<float> d_x(x), d_w(w), d_b(b), d_dy(dy), d_y((size_t)N * C), d_mean(N), d_rstd(N);
  DeviceBuffer<float> scratch(vit::layernorm_scratch_floats(N, C));
  DeviceBuffer<float> d_dx((size_t)N * C), d_dw(C), d_db(C);
  DeviceBuffer<__nv_bfloat16> d_y16((size_t)N * C);
  DeviceBuffer<float> d_mean16(N), d_rstd16(N);

  vector<vector<float>> first;  // outputs of the first run, for the determinism check
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    for (int run = 0; run < 2; ++run) {
      d_dx.upload(dx0);
      d_dw.upload(dw0);
      d_db.upload(db0);
      vit::layernorm_forward(0, d_x, d_w, d_b, d_y, d_mean, d_rstd, N, C, eps);
      vit::layernorm_backward(0, d_dy, d_x, d_w, d_mean, d_rstd, d_dx, d_dw, d_db, scratch, N, C);
      vector<vector<float>> out = {d_y.download(), d_mean.download(), d_rstd.download(),
                                   d_dx.download(), d_dw.download(), d_db.download()};
      EXPECT_TRUE(vit_test::allclose(out[0], ry, RTOL, ATOL)) << "y";
      EXPECT_TRUE(vit_test::allclose(out[1], rmean, RTOL, 1e-6)) << "mean";
      EXPECT_TRUE(vit_test::allclose(out[2], rrstd, RTOL, 1e-6)) << "rstd";
      EXPECT_TRUE(vit_test::allclose(out[3], rdx, RTOL, ATOL)) << "dx";
      EXPECT_TRUE(vit_test::allclose(out[4], rdw, RTOL, ATOL)) << "dw";
      EXPECT_TRUE(vit_test::allclose(out[5], rdb, RTOL, ATOL)) << "db";
      vit::layernorm_forward(0, d_x.get(), d_w.get(), d_b.get(), d_y16.get(), d_mean16.get(),
                             d_rstd16.get(), N, C, eps);
      const vector<__nv_bfloat16> y16 = d_y16.download();
      size_t differ = 0;
      double worst = 0;
      for (size_t i = 0; i < y16.size(); ++i) {
        const float v = __bfloat162float(y16[i]);
        differ += v != __bfloat162float(__float2bfloat16(out[0][i]));
        worst = std::max(worst, std::fabs(v - ry[i]) / (std::fabs(ry[i]) / 256 + 1e-5));
      }
      EXPECT_EQ(differ, 0u) << "y16 is not bf16(y)";
      EXPECT_LE(worst, 1.0) << "y16 vs the reference";
      EXPECT_TRUE(vit_test::bitwise_equal(d_mean16.download(), out[1])) << "mean (bf16 y)";
      EXPECT_TRUE(vit_test::bitwise_equal(d_rstd16.download(), out[2])) << "rstd (bf16 y)";
      if (first.empty()) printf("    N=%d C=%d: bf16 y error / bound %.3f\n", N, C, worst);
      if (first.empty()) {
        first = out;
      } else {  // every run and every thread order: the same bits
        for (size_t k = 0; k < out.size(); ++k)
          EXPECT_TRUE(vit_test::bitwise_equal(out[k], first[k])) << "output " << k;
      }
    }
  });
}

}  // namespace

TEST(LayerNormKernel, BasicShape) {  // B=2, T=65, C=256: the float4 path
  VIT_REQUIRE_GPU();
  check_layernorm(2 * 65, 256, 1e-5f);
}

TEST(LayerNormKernel, VitB16Shape) {  // B=2, T=197, C=768
  VIT_REQUIRE_GPU();
  check_layernorm(2 * 197, 768, 1e-6f);
}

TEST(LayerNormKernel, OddShapes) {  // scalar path (C % 4 != 0), partial warps/blocks/chunks
  VIT_REQUIRE_GPU();
  check_layernorm(17, 24, 1e-5f);    // C % 4 == 0 but N = 17 rows: a partial block
  check_layernorm(3 * 17, 50, 1e-5f);
  check_layernorm(5, 3, 1e-5f);      // narrower than a warp
  check_layernorm(300, 36, 1e-5f);   // 3 chunks of the dw/db partial sums, the last partial
}

TEST(LayerNormKernel, UnalignedViewTakesScalarPath) {
  VIT_REQUIRE_GPU();
  // Rows of a buffer that starts one float past a 16-byte boundary: C % 4 == 0 but float4 would
  // be misaligned, so the launcher must pick the scalar kernel and still be right.
  const int N = 9, C = 64;
  const vector<float> x = vit_test::to_float(vit_test::rand_vec((size_t)N * C, 11));
  const vector<float> w = vit_test::to_float(vit_test::rand_vec(C, 12, 0.5, 1.5));
  const vector<float> b = vit_test::to_float(vit_test::rand_vec(C, 13));
  vector<float> ry((size_t)N * C), rm(N), rr(N);
  vit::ref::layernorm_forward(x.data(), w.data(), b.data(), ry.data(), rm.data(), rr.data(), N, C,
                              1e-5);
  vector<float> xp(1 + x.size());
  std::copy(x.begin(), x.end(), xp.begin() + 1);
  DeviceBuffer<float> d_x(xp), d_w(w), d_b(b), d_y(1 + (size_t)N * C), d_mean(N), d_rstd(N);
  vit::layernorm_forward(0, d_x.get() + 1, d_w, d_b, d_y.get() + 1, d_mean, d_rstd, N, C, 1e-5f);
  vector<float> out = d_y.download();
  EXPECT_TRUE(vit_test::allclose(out.data() + 1, ry.data(), ry.size(), RTOL, ATOL));
}
