// tests/test_dropout.cu — kernels/dropout.cuh against vit::ref::dropout_forward/backward: the
// mask must be the reference's exactly (same Philox draw per flat index), so plain dropout and
// its backward are compared BITWISE (both compute x * (1/(1-p)) in float). The fused residual
// variant out = res + drop(x) is compared with rtol 1e-6 (nvcc may fuse it into one FMA).
// Shapes: n a multiple of 4 and not (tails), unaligned views (scalar kernel), in place, p = 0
// (copy / add) and p = 0.1, 0.5; several sites/steps so masks differ; two thread orders.
// dropout_backward_rows (FP32 or BF16 rows at a row stride): at the end of the file.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "common/philox.h"
#include "cpu/dropout.h"
#include "kernels/dropout.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_ref_util.h"
#include "tests/test_util.h"

using vit_test::DeviceBuffer;
using std::vector;

namespace {

void check_dropout(size_t n, float p, size_t offset, uint64_t seed, uint32_t site, uint64_t step) {
  SCOPED_TRACE("n=" + std::to_string(n) + " p=" + std::to_string(p) + " offset=" +
               std::to_string(offset) + " site=" + std::to_string(site) + " step=" +
               std::to_string(step));
  const vector<float> x = vit_test::to_float(vit_test::rand_vec(n + offset, 41));
  const vector<float> res = vit_test::to_float(vit_test::rand_vec(n + offset, 42));
  vector<float> ry(n), rdx(n), rout(n);
  vit::ref::dropout_forward(x.data() + offset, ry.data(), n, p, seed, site, step);
  vit::ref::dropout_backward(res.data() + offset, rdx.data(), n, p, seed, site, step);
  for (size_t i = 0; i < n; ++i) rout[i] = res[offset + i] + ry[i];

  // The mask is not trivial: with p > 0 some elements are dropped, most kept.
  if (p > 0 && n >= 1000) {
    size_t dropped = 0;
    for (size_t i = 0; i < n; ++i) dropped += ry[i] == 0.0f;
    EXPECT_GT(dropped, n * p * 0.5);
    EXPECT_LT(dropped, n * p * 1.5 + 1);
  }

  DeviceBuffer<float> d_x(x), d_res(res), d_y(n + offset), d_dx(n + offset), d_out(n + offset);
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    vit::dropout_forward(0, d_x.get() + offset, d_y.get() + offset, n, p, seed, site, step);
    vit::dropout_backward(0, d_res.get() + offset, d_dx.get() + offset, n, p, seed, site, step);
    vit::dropout_residual_forward(0, d_res.get() + offset, d_x.get() + offset,
                                  d_out.get() + offset, n, p, seed, site, step);
    vector<float> y = d_y.download(), dx = d_dx.download(), out = d_out.download();
    EXPECT_TRUE(vit_test::bitwise_equal(vector<float>(y.begin() + offset, y.end()), ry)) << "y";
    EXPECT_TRUE(vit_test::bitwise_equal(vector<float>(dx.begin() + offset, dx.end()), rdx)) << "dx";
    EXPECT_TRUE(vit_test::allclose(out.data() + offset, rout.data(), n, 1e-6, 1e-7)) << "res + drop";
  });

  // In place: y = drop(y); out = out + drop(x) with out aliasing res.
  DeviceBuffer<float> d_ip(x), d_ipres(res);
  vit::dropout_forward(0, d_ip.get() + offset, d_ip.get() + offset, n, p, seed, site, step);
  vit::dropout_residual_forward(0, d_ipres.get() + offset, d_x.get() + offset,
                                d_ipres.get() + offset, n, p, seed, site, step);
  vector<float> ip = d_ip.download(), ipres = d_ipres.download();
  EXPECT_TRUE(vit_test::bitwise_equal(vector<float>(ip.begin() + offset, ip.end()), ry)) << "in place";
  EXPECT_TRUE(vit_test::allclose(ipres.data() + offset, rout.data(), n, 1e-6, 1e-7)) << "in place res";
}

}  // namespace

TEST(DropoutKernel, MatchesReferenceMask) {
  VIT_REQUIRE_GPU();
  check_dropout(130 * 256, 0.1f, 0, 7, vit::SITE_EMBED_DROPOUT, 3);  // basic (B=2, T=65, C=256)
  check_dropout(1003, 0.1f, 0, 7, vit::layer_site(2, 1), 5);         // tail of 3
  check_dropout(1001, 0.5f, 1, 9, vit::layer_site(0, 2), 1ull << 33); // unaligned, 64-bit step
  check_dropout(3, 0.5f, 0, 1, vit::layer_site(1, 2), 0);
}

TEST(DropoutKernel, ZeroProbabilityCopiesAndAdds) {
  VIT_REQUIRE_GPU();
  check_dropout(1003, 0.0f, 0, 7, vit::SITE_EMBED_DROPOUT, 3);
  check_dropout(1001, 0.0f, 1, 7, vit::SITE_EMBED_DROPOUT, 3);
}

TEST(DropoutKernel, BadProbabilityThrows) {
  VIT_REQUIRE_GPU();
  EXPECT_THROW(vit::dropout_forward(0, nullptr, nullptr, 4, 1.0f, 0, 0, 0), vit::Error);
  EXPECT_THROW(vit::dropout_forward(0, nullptr, nullptr, 4, -0.1f, 0, 0, 0), vit::Error);
}

// dropout_backward_rows<OutT> (the backward's stored output gradients): dx (N, C; row stride ld)
// OutT = drop(dy (N, C) contiguous) with the mask of flat index r * C + c. Against
// ref::dropout_backward on the flat N*C buffer: bitwise for float (the same multiply), and bitwise
// its __float2bfloat16 for bf16 (one rounding of the FP32 value). ld > C (and the model's 2C for
// bf16): the padding keeps a sentinel. p = 0 (a copy, no draws) and 0.3; two thread orders.
namespace {

inline float to_f(float v) { return v; }
inline float to_f(vit::bf16 v) { return __bfloat162float(v); }
template <class T> T of_f(float v);
template <> float of_f<float>(float v) { return v; }
template <> vit::bf16 of_f<vit::bf16>(float v) { return __float2bfloat16(v); }

template <class OutT>
void check_dropout_rows(size_t N, int C, size_t ld, float p) {
  SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C) + " ld=" + std::to_string(ld) +
               " p=" + std::to_string(p) + (sizeof(OutT) == 4 ? " float" : " bf16"));
  const uint64_t seed = 5, step = 12;
  const uint32_t site = vit::layer_site(3, 1);
  const size_t n = N * C;
  const vector<float> dy = vit_test::to_float(vit_test::rand_vec(n, 43));
  vector<float> ref(n);
  vit::ref::dropout_backward(dy.data(), ref.data(), n, p, seed, site, step);
  size_t dropped = 0;
  for (size_t i = 0; i < n; ++i) dropped += ref[i] == 0.0f;
  if (p > 0) {  // the mask is not trivial
    EXPECT_GT(dropped, n * p * 0.5);
    EXPECT_LT(dropped, n * p * 1.5);
  }
  const OutT pad = of_f<OutT>(-99.0f);
  const vector<OutT> dx0(N * ld, pad);
  DeviceBuffer<float> d_dy(dy);
  DeviceBuffer<OutT> d_dx(dx0.size());
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    d_dx.upload(dx0);
    vit::dropout_backward_rows<OutT>(0, d_dy, d_dx.ptr, N, C, ld, p, seed, site, step);
    const vector<OutT> dx = d_dx.download();
    vector<float> got(n), want(n);
    size_t stray = 0;
    for (size_t r = 0; r < N; ++r) {
      for (int c = 0; c < C; ++c) {
        got[r * C + c] = to_f(dx[r * ld + c]);
        want[r * C + c] = to_f(of_f<OutT>(ref[r * C + c]));
      }
      for (size_t c = C; c < ld; ++c) stray += memcmp(&dx[r * ld + c], &pad, sizeof pad) != 0;
    }
    EXPECT_TRUE(vit_test::bitwise_equal(got, want)) << "dx";
    EXPECT_EQ(stray, 0u) << "written past C";
  });
}

}  // namespace

TEST(DropoutKernel, BackwardRowsFloat) {
  VIT_REQUIRE_GPU();
  check_dropout_rows<float>(130, 256, 259, 0.3f);  // basic's B*T rows, ld > C
  check_dropout_rows<float>(37, 50, 64, 0.0f);     // a copy
  check_dropout_rows<float>(37, 50, 50, 0.3f);
}

TEST(DropoutKernel, BackwardRowsBf16) {
  VIT_REQUIRE_GPU();
  check_dropout_rows<vit::bf16>(130, 256, 512, 0.3f);  // the model's ld 2C
  check_dropout_rows<vit::bf16>(37, 50, 100, 0.0f);
  check_dropout_rows<vit::bf16>(37, 50, 53, 0.3f);
}

TEST(DropoutKernel, BackwardRowsBadArgumentsThrow) {
  VIT_REQUIRE_GPU();
  EXPECT_THROW(vit::dropout_backward_rows<float>(0, nullptr, nullptr, 4, 8, 7, 0.1f, 0, 0, 0),
               vit::Error);  // ld < C
  EXPECT_THROW(vit::dropout_backward_rows<float>(0, nullptr, nullptr, 4, 8, 8, 1.0f, 0, 0, 0),
               vit::Error);
}
