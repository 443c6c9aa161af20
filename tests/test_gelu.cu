// tests/test_gelu.cu — kernels/gelu.cuh against vit::ref::gelu_forward/backward (float): both
// variants (tanh, erf), n not a multiple of 4 (the scalar tail), views that are not 16-byte
// aligned (the scalar kernel), in place; two thread orders, bitwise identical across runs.
// Inputs cover [-6, 6] (both tails and the curved middle). Both sides evaluate the same float
// formula with libm-class tanhf/erff/expf; measured differences are a few ulp. rtol 1e-5,
// atol 1e-6.
// BF16 output (--precision bf16, the FC2 GEMM's operand): the same FP32 formula rounded once, so
// y16 must be bitwise __float2bfloat16 of the FP32 kernel's y, and within one BF16 rounding of
// the reference: |y16 - y_ref| <= 2^-8 |y_ref| + 1e-6 (8 significant bits). The saved BF16
// pre-activation is bitwise __float2bfloat16(x), and the backward from it equals the
// reference's backward on those rounded inputs (same formula: rtol 1e-5, atol 1e-6).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "cpu/gelu.h"
#include "kernels/gelu.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_ref_util.h"
#include "tests/test_util.h"

using vit_test::DeviceBuffer;
using std::vector;

namespace {

const double RTOL = 1e-5, ATOL = 1e-6;

// offset: elements skipped at the start of the device buffers (1 -> unaligned, scalar kernel).
void check_gelu(size_t n, vit::Gelu g, size_t offset) {
  SCOPED_TRACE("n=" + std::to_string(n) + " gelu=" + vit::gelu_name(g) +
               " offset=" + std::to_string(offset));
  vector<float> x = vit_test::to_float(vit_test::rand_vec(n + offset, 31, -6, 6));
  vector<float> dy = vit_test::to_float(vit_test::rand_vec(n + offset, 32));
  vector<float> ry(n), rdx(n);
  vit::ref::gelu_forward(x.data() + offset, ry.data(), n, g);
  vit::ref::gelu_backward(dy.data() + offset, x.data() + offset, rdx.data(), n, g);

  DeviceBuffer<float> d_x(x), d_dy(dy), d_y(n + offset), d_dx(n + offset);
  DeviceBuffer<__nv_bfloat16> d_y16(n + offset), d_pre16(n + offset);
  vector<float> xr(x.begin() + offset, x.end());
  for (float& v : xr) v = __bfloat162float(__float2bfloat16(v));
  vector<float> rdx16(n);
  vit::ref::gelu_backward(dy.data() + offset, xr.data(), rdx16.data(), n, g);
  vector<vector<float>> first;
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    for (int run = 0; run < 2; ++run) {
      vit::gelu_forward(0, d_x.get() + offset, d_y.get() + offset, n, g);
      vit::gelu_backward(0, d_dy.get() + offset, d_x.get() + offset, d_dx.get() + offset, n, g);
      vector<vector<float>> o = {d_y.download(), d_dx.download()};
      EXPECT_TRUE(vit_test::allclose(o[0].data() + offset, ry.data(), n, RTOL, ATOL)) << "y";
      EXPECT_TRUE(vit_test::allclose(o[1].data() + offset, rdx.data(), n, RTOL, ATOL)) << "dx";
      vit::gelu_forward(0, d_x.get() + offset, d_y16.get() + offset, n, g, d_pre16.get() + offset);
      const vector<__nv_bfloat16> y16 = d_y16.download(), pre16 = d_pre16.download();
      for (size_t i = 0; i < n; ++i)
        if (__bfloat162float(pre16[offset + i]) != xr[i]) {
          ADD_FAILURE() << "pre16[" << i << "] is not bf16(x)";
          break;
        }
      vit::gelu_backward(0, d_dy.get() + offset, d_pre16.get() + offset, d_dx.get() + offset, n, g);
      const vector<float> dx16 = d_dx.download();
      EXPECT_TRUE(vit_test::allclose(dx16.data() + offset, rdx16.data(), n, RTOL, ATOL))
          << "dx from the BF16 pre-activation";
      size_t differ = 0, outside = 0;
      for (size_t i = 0; i < n; ++i) {
        const float v = __bfloat162float(y16[offset + i]);
        differ += v != __bfloat162float(__float2bfloat16(o[0][offset + i]));
        outside += !(std::fabs(v - ry[i]) <= std::fabs(ry[i]) / 256 + 1e-6);
      }
      EXPECT_EQ(differ, 0u) << "y16 is not bf16(y)";
      EXPECT_EQ(outside, 0u) << "y16 further than one BF16 rounding from the reference";
      if (first.empty()) first = o;
      for (size_t k = 0; k < o.size(); ++k)  // (compares only the written part: offset.. )
        EXPECT_TRUE(vit_test::bitwise_equal(vector<float>(o[k].begin() + offset, o[k].end()),
                                            vector<float>(first[k].begin() + offset, first[k].end())));
    }
  });

  // In place: y overwrites x, dx overwrites dy.
  vit::gelu_backward(0, d_dy.get() + offset, d_x.get() + offset, d_dy.get() + offset, n, g);
  vector<float> ip = d_dy.download();
  EXPECT_TRUE(vit_test::allclose(ip.data() + offset, rdx.data(), n, RTOL, ATOL)) << "in place dx";
  DeviceBuffer<float> d_x2(x);
  vit::gelu_forward(0, d_x2.get() + offset, d_x2.get() + offset, n, g);
  vector<float> ipy = d_x2.download();
  EXPECT_TRUE(vit_test::allclose(ipy.data() + offset, ry.data(), n, RTOL, ATOL)) << "in place y";
}

}  // namespace

TEST(GeluKernel, TanhAndErf) {
  VIT_REQUIRE_GPU();
  for (vit::Gelu g : {vit::Gelu::Tanh, vit::Gelu::Erf}) {
    check_gelu(130 * 1024, g, 0);  // basic fc1 activations, B=2 (float4 path)
    check_gelu(1003, g, 0);        // tail of 3
    check_gelu(1001, g, 1);        // unaligned: scalar kernel
    check_gelu(2, g, 0);           // shorter than one group
  }
}
