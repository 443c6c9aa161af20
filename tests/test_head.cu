// tests/test_head.cu — kernels/head.cuh head_backward<OutT> (the classifier head's backward fused
// with the top layer's dropout backward) against the CPU reference: vit::ref::linear_backward on
// the CLS rows (dx = dlogits W, dW += dlogits^T x) and vit::ref::dropout_backward on the flat
// (B*T, C) gradient.
//   dres (B*T, C): the CLS rows within rtol 1e-5, atol 1e-6 of the reference (K-term FP32 dot
//                  products of O(0.1) values, summed in another order than BLAS), every other
//                  row exactly 0 (the kernel writes them: the buffer starts NaN under simt);
//   out:           bitwise drop(dres) of the kernel's own dres (the same float multiply by the
//                  same mask as the reference), rounded once for bf16 (__float2bfloat16); rows
//                  ld apart (float: ld C; bf16: ld 2C, the model's layout), the rest of each bf16
//                  row untouched;
//   dW (K, C) +=:  onto a nonzero start, within rtol 1e-5, atol 1e-6 (B-term sums).
// The model stores `out` over the residual stream the CLS rows x are read from: the aliased call
// must give bitwise the non-aliased call's dres, dW and out, and leave the bytes of each row past
// the bf16 out elements as they were. Both calls under both thread orders, bitwise identical.
// Shapes: (B, T, C, K) = (3, 5, 48, 10) and the basic preset's (2, 65, 256, 10); p = 0 and 0.1.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "common/philox.h"
#include "cpu/dropout.h"
#include "cpu/linear.h"
#include "kernels/head.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_ref_util.h"
#include "tests/test_util.h"

using vit_test::DeviceBuffer;
using std::vector;
using vit::bf16;

namespace {

const double RTOL = 1e-5, ATOL = 1e-6;

inline float as_float(float v) { return v; }
inline float as_float(bf16 v) { return __bfloat162float(v); }
template <class T> T from_float(float v);
template <> float from_float<float>(float v) { return v; }
template <> bf16 from_float<bf16>(float v) { return __float2bfloat16(v); }

// out's first C elements of each of R rows (ld apart), as floats.
template <class OutT>
vector<float> rows_of(const vector<OutT>& out, size_t R, int C, size_t ld) {
  vector<float> v(R * C);
  for (size_t r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) v[r * C + c] = as_float(out[r * ld + c]);
  return v;
}

template <class OutT>
void check_head(int B, int T, int C, int K, float p) {
  const char* type = sizeof(OutT) == 4 ? "float" : "bf16";
  SCOPED_TRACE("B=" + std::to_string(B) + " T=" + std::to_string(T) + " C=" + std::to_string(C) +
               " K=" + std::to_string(K) + " p=" + std::to_string(p) + " out " + type);
  const size_t ld = (size_t)C * (sizeof(float) / sizeof(OutT));  // the model's grad_ld
  const size_t R = (size_t)B * T, n = R * C;
  const uint64_t seed = 17, step = 6;
  const uint32_t site = vit::layer_site(11, 2);
  const vector<float> dlogits = vit_test::to_float(vit_test::rand_vec((size_t)B * K, 91, -0.5, 0.5));
  const vector<float> W = vit_test::to_float(vit_test::rand_vec((size_t)K * C, 92, -0.5, 0.5));
  const vector<float> res = vit_test::to_float(vit_test::rand_vec(n, 93));  // (B, T, C)
  const vector<float> dW0 = vit_test::to_float(vit_test::rand_vec((size_t)K * C, 94));

  // Reference: the CLS rows' dx and dW, then the dropout backward of the whole (B*T, C).
  vector<float> xcls((size_t)B * C), dx((size_t)B * C), rdW = dW0, rdres(n, 0.0f), rout(n);
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < C; ++c) xcls[(size_t)b * C + c] = res[(size_t)b * T * C + c];
  vit::ref::linear_backward(dlogits.data(), xcls.data(), W.data(), dx.data(), rdW.data(),
                            (float*)nullptr, B, C, K);
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < C; ++c) rdres[(size_t)b * T * C + c] = dx[(size_t)b * C + c];
  vit::ref::dropout_backward(rdres.data(), rout.data(), n, p, seed, site, step);

  // A sentinel in out's padding (bf16: elements C..2C-1 of each row) shows stray writes.
  const OutT pad = from_float<OutT>(-777.0f);
  const vector<OutT> out0(R * ld, pad);
  DeviceBuffer<float> d_dlogits(dlogits), d_W(W), d_x(res), d_res(n);
  DeviceBuffer<float> d_dres(n), d_dW((size_t)K * C), a_dres(n), a_dW((size_t)K * C);
  DeviceBuffer<OutT> d_out(out0.size());

  vector<vector<float>> first;
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    for (int run = 0; run < 2; ++run) {
      // 1. out in its own buffer.
      d_out.upload(out0);
      d_dW.upload(dW0);
      vit::head_backward<OutT>(0, d_dlogits, d_W, d_x, d_dres, d_out.ptr, ld, d_dW, B, T, C, K, p,
                               seed, site, step);
      const vector<float> dres = d_dres.download(), dW = d_dW.download();
      const vector<OutT> out = d_out.download();
      EXPECT_TRUE(vit_test::allclose(dres, rdres, RTOL, ATOL)) << "dres";
      size_t nonzero = 0, dropped = 0;
      for (size_t r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) {
          if (r % T != 0) nonzero += dres[r * C + c] != 0.0f || std::signbit(dres[r * C + c]);
          else dropped += dres[r * C + c] != 0.0f && as_float(out[r * ld + c]) == 0.0f;
        }
      EXPECT_EQ(nonzero, 0u) << "non-CLS rows of dres not +0";
      if (p > 0) {
        EXPECT_GT(dropped, 0u) << "no CLS element dropped";
      } else {
        EXPECT_EQ(dropped, 0u);
      }
      EXPECT_TRUE(vit_test::allclose(dW, rdW, RTOL, ATOL)) << "dW";
      vector<float> want(n);
      vit::ref::dropout_backward(dres.data(), want.data(), n, p, seed, site, step);
      for (float& v : want) v = as_float(from_float<OutT>(v));
      const vector<float> got = rows_of(out, R, C, ld);
      EXPECT_TRUE(vit_test::bitwise_equal(got, want)) << "out vs drop(dres)";
      EXPECT_TRUE(vit_test::allclose(got, rout, sizeof(OutT) == 4 ? RTOL : 1.0 / 256 + RTOL, ATOL))
          << "out vs reference";
      size_t stray = 0;
      for (size_t r = 0; r < R; ++r)
        for (size_t c = C; c < ld; ++c) stray += memcmp(&out[r * ld + c], &pad, sizeof pad) != 0;
      EXPECT_EQ(stray, 0u) << "out written past C";

      // 2. The model's layout: x the CLS rows of res, out stored over res (row r of out in the
      // bytes of row r of res).
      d_res.upload(res);
      a_dW.upload(dW0);
      vit::head_backward<OutT>(0, d_dlogits, d_W, d_res, a_dres, (OutT*)d_res.ptr, ld, a_dW, B, T,
                               C, K, p, seed, site, step);
      const vector<float> res_after = d_res.download();
      vector<OutT> aout(R * ld);
      memcpy((void*)aout.data(), res_after.data(), n * sizeof(float));
      EXPECT_TRUE(vit_test::bitwise_equal(a_dres.download(), dres)) << "aliased dres";
      EXPECT_TRUE(vit_test::bitwise_equal(a_dW.download(), dW)) << "aliased dW";
      EXPECT_TRUE(vit_test::bitwise_equal(rows_of(aout, R, C, ld), got)) << "aliased out";
      // bf16: floats C/2..C-1 of every row are not out's; they keep res (x in the CLS rows).
      size_t changed = 0;
      for (size_t r = 0; r < R; ++r)
        for (size_t c = (size_t)C * sizeof(OutT) / sizeof(float); c < (size_t)C; ++c)
          changed += memcmp(&res_after[r * C + c], &res[r * C + c], sizeof(float)) != 0;
      EXPECT_EQ(changed, 0u) << "aliased: bytes past out's row changed";

      vector<vector<float>> o = {dres, dW, got};
      if (first.empty()) first = o;
      for (size_t k = 0; k < o.size(); ++k)
        EXPECT_TRUE(vit_test::bitwise_equal(o[k], first[k])) << "output " << k;
    }
  });
}

}  // namespace

TEST(HeadBackward, SmallFloat) {
  VIT_REQUIRE_GPU();
  check_head<float>(3, 5, 48, 10, 0.0f);
  check_head<float>(3, 5, 48, 10, 0.1f);
}

TEST(HeadBackward, SmallBf16) {
  VIT_REQUIRE_GPU();
  check_head<bf16>(3, 5, 48, 10, 0.0f);
  check_head<bf16>(3, 5, 48, 10, 0.1f);
}

TEST(HeadBackward, BasicShapeFloat) {  // B=2, T=65, C=256, K=10
  VIT_REQUIRE_GPU();
  check_head<float>(2, 65, 256, 10, 0.0f);
  check_head<float>(2, 65, 256, 10, 0.1f);
}

TEST(HeadBackward, BasicShapeBf16) {
  VIT_REQUIRE_GPU();
  check_head<bf16>(2, 65, 256, 10, 0.0f);
  check_head<bf16>(2, 65, 256, 10, 0.1f);
}

TEST(HeadBackward, BadArgumentsThrow) {
  VIT_REQUIRE_GPU();
  EXPECT_THROW(vit::head_backward<float>(0, nullptr, nullptr, nullptr, nullptr, nullptr, 47, nullptr,
                                         2, 5, 48, 10, 0.0f, 1, 2, 3),
               vit::Error);  // row stride < C
  EXPECT_THROW(vit::head_backward<float>(0, nullptr, nullptr, nullptr, nullptr, nullptr, 48, nullptr,
                                         2, 5, 48, 10, 1.0f, 1, 2, 3),
               vit::Error);  // p = 1
}
