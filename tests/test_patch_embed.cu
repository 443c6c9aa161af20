// tests/test_patch_embed.cu — kernels/patch_embed.cuh against vit::ref::im2patch,
// patch_embed_forward and patch_embed_backward (float): cols (exactly: a gather), out (B, T, C),
// and dw, db, dcls, dpos (all +=, starting from random values in both), at the basic (32/4,
// C=256), vit-b16 (224/16, C=768, B=1) and odd shapes (T=17 with C=24; 1 channel, C=50), two
// thread orders, bitwise identical across runs. Tolerances rtol 1e-5, atol 1e-5 (the GEMM sums
// K = Cin*p*p products of O(1) pixels and 0.05 weights; dw sums over B*N rows).
// The fused forward (patch_embed_forward_ln) and the BF16-dout backward: further down.
#include <gtest/gtest.h>

#include <vector>

#include "cpu/dropout.h"
#include "cpu/layernorm.h"
#include "cpu/patch_embed.h"
#include "kernels/patch_embed.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_ref_util.h"
#include "tests/test_util.h"

using vit_test::DeviceBuffer;
using std::vector;
using vit::bf16;

namespace {

const double RTOL = 1e-5, ATOL = 1e-5;

void check_patch_embed(int B, int Cin, int H, int p, int C) {
  SCOPED_TRACE("B=" + std::to_string(B) + " Cin=" + std::to_string(Cin) + " H=" +
               std::to_string(H) + " p=" + std::to_string(p) + " C=" + std::to_string(C));
  const int G = H / p, N = G * G, T = N + 1, K = Cin * p * p;
  const vector<float> x = vit_test::to_float(vit_test::rand_vec((size_t)B * Cin * H * H, 71));
  const vector<float> w = vit_test::to_float(vit_test::rand_vec((size_t)C * K, 72, -0.05, 0.05));
  const vector<float> b = vit_test::to_float(vit_test::rand_vec(C, 73));
  const vector<float> cls = vit_test::to_float(vit_test::rand_vec(C, 74));
  const vector<float> pos = vit_test::to_float(vit_test::rand_vec((size_t)T * C, 75));
  const vector<float> dout = vit_test::to_float(vit_test::rand_vec((size_t)B * T * C, 76));
  const vector<float> dw0 = vit_test::to_float(vit_test::rand_vec((size_t)C * K, 77));
  const vector<float> db0 = vit_test::to_float(vit_test::rand_vec(C, 78));
  const vector<float> dcls0 = vit_test::to_float(vit_test::rand_vec(C, 79));
  const vector<float> dpos0 = vit_test::to_float(vit_test::rand_vec((size_t)T * C, 80));

  vector<float> rcols((size_t)B * N * K), rout((size_t)B * T * C);
  vector<float> rdw = dw0, rdb = db0, rdcls = dcls0, rdpos = dpos0;
  vit::ref::im2patch(x.data(), rcols.data(), B, Cin, H, p);
  vit::ref::patch_embed_forward(x.data(), w.data(), b.data(), cls.data(), pos.data(), rout.data(),
                                B, Cin, H, p, C);
  vit::ref::patch_embed_backward(dout.data(), x.data(), w.data(), (float*)nullptr, rdw.data(),
                                 rdb.data(), rdcls.data(), rdpos.data(), B, Cin, H, p, C);

  cublasHandle_t h;
  CUBLAS_CHECK(cublasCreate(&h));
  DeviceBuffer<float> d_x(x), d_w(w), d_b(b), d_cls(cls), d_pos(pos), d_dout(dout);
  DeviceBuffer<float> d_cols(rcols.size()), d_out(rout.size()), d_dw(dw0.size()), d_db(C),
      d_dcls(C), d_dpos(dpos0.size());
  DeviceBuffer<float> scratch(vit::patch_embed_scratch_floats(B, Cin, H, p, C));
  vector<vector<float>> first;
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    for (int run = 0; run < 2; ++run) {
      d_dw.upload(dw0);
      d_db.upload(db0);
      d_dcls.upload(dcls0);
      d_dpos.upload(dpos0);
      vit::patch_embed_forward(h, 0, d_x, d_w, d_b, d_cls, d_pos, d_cols, d_out, B, Cin, H, p, C);
      vit::patch_embed_backward(h, 0, d_dout, d_cols, d_dw, d_db, d_dcls, d_dpos, scratch, B, Cin,
                                H, p, C);
      vector<vector<float>> o = {d_cols.download(), d_out.download(), d_dw.download(),
                                 d_db.download(), d_dcls.download(), d_dpos.download()};
      EXPECT_TRUE(vit_test::bitwise_equal(o[0], rcols)) << "cols";
      EXPECT_TRUE(vit_test::allclose(o[1], rout, RTOL, ATOL)) << "out";
      EXPECT_TRUE(vit_test::allclose(o[2], rdw, RTOL, ATOL)) << "dw";
      EXPECT_TRUE(vit_test::allclose(o[3], rdb, RTOL, ATOL)) << "db";
      EXPECT_TRUE(vit_test::allclose(o[4], rdcls, RTOL, ATOL)) << "dcls";
      EXPECT_TRUE(vit_test::allclose(o[5], rdpos, RTOL, ATOL)) << "dpos";
      if (first.empty()) first = o;
      for (size_t k = 0; k < o.size(); ++k)
        EXPECT_TRUE(vit_test::bitwise_equal(o[k], first[k])) << "output " << k;
    }
  });
  CUBLAS_CHECK(cublasDestroy(h));
}

}  // namespace

TEST(PatchEmbedKernel, BasicShape) {
  VIT_REQUIRE_GPU();
  check_patch_embed(2, 3, 32, 4, 256);
}

TEST(PatchEmbedKernel, VitB16Shape) {
  VIT_REQUIRE_GPU();
  check_patch_embed(1, 3, 224, 16, 768);
}

TEST(PatchEmbedKernel, OddShapes) {
  VIT_REQUIRE_GPU();
  check_patch_embed(3, 3, 12, 3, 24);  // N = 16, T = 17
  check_patch_embed(2, 1, 10, 5, 50);  // one channel, N = 4
  check_patch_embed(5, 3, 8, 8, 13);   // one patch per image
}

TEST(PatchEmbedKernel, ImageNotMultipleOfPatchThrows) {
  VIT_REQUIRE_GPU();
  cublasHandle_t h = nullptr;
  EXPECT_THROW(vit::patch_embed_forward(h, 0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                        nullptr, 2, 3, 30, 4, 64),
               vit::Error);
}

// ---- patch_embed_forward_ln: the embedding + its dropout + layer 0's LayerNorm, fused -----------
// Against ref::patch_embed_forward, then ref::dropout_forward (the embedding dropout: seed, site,
// step given; flat index over (B, T, C)), then ref::layernorm_forward. Float and __half images
// (the reference reads the same half values as floats), p = 0 and 0.1.
//   cols: bitwise ref::im2patch. out (B, T, C): rtol/atol 1e-5 (as above; the mask is the
//   reference's, so a wrong index shows as whole dropped elements).
//   y, mean, rstd: against ref::layernorm_forward of the kernel's own out, so only the LayerNorm's
//   arithmetic differs (float row statistics vs the reference's double): rtol/atol 1e-5, the
//   tolerance of tests/test_layernorm.cu.
//   bf16 y: bitwise __float2bfloat16 of the float-y call's y (one rounding of the same FP32
//   value), mean/rstd/out bitwise that call's.
namespace {

template <class XT> XT image_value(float v);
template <> float image_value<float>(float v) { return v; }
template <> __half image_value<__half>(float v) { return __float2half_rn(v); }
inline float image_float(float v) { return v; }
inline float image_float(__half v) { return __half2float(v); }

template <class XT>
void check_patch_embed_ln(int B, int Cin, int H, int p, int C, float p_drop, float eps) {
  SCOPED_TRACE("B=" + std::to_string(B) + " Cin=" + std::to_string(Cin) + " H=" +
               std::to_string(H) + " p=" + std::to_string(p) + " C=" + std::to_string(C) +
               " p_drop=" + std::to_string(p_drop) + (sizeof(XT) == 2 ? " half" : " float") +
               " images");
  const int G = H / p, N = G * G, T = N + 1, K = Cin * p * p;
  const size_t R = (size_t)B * T, n = R * C;
  const uint64_t seed = 21, step = 4;
  const uint32_t site = vit::SITE_EMBED_DROPOUT;
  const vector<float> x0 = vit_test::to_float(vit_test::rand_vec((size_t)B * Cin * H * H, 81));
  vector<XT> xt(x0.size());
  vector<float> x(x0.size());
  for (size_t i = 0; i < x.size(); ++i) {
    xt[i] = image_value<XT>(x0[i]);
    x[i] = image_float(xt[i]);
  }
  const vector<float> w = vit_test::to_float(vit_test::rand_vec((size_t)C * K, 82, -0.05, 0.05));
  const vector<float> b = vit_test::to_float(vit_test::rand_vec(C, 83));
  const vector<float> cls = vit_test::to_float(vit_test::rand_vec(C, 84));
  const vector<float> pos = vit_test::to_float(vit_test::rand_vec((size_t)T * C, 85));
  const vector<float> lnw = vit_test::to_float(vit_test::rand_vec(C, 86, 0.5, 1.5));
  const vector<float> lnb = vit_test::to_float(vit_test::rand_vec(C, 87, -0.5, 0.5));

  vector<float> rcols((size_t)B * N * K), rout(n);
  vit::ref::im2patch(x.data(), rcols.data(), B, Cin, H, p);
  vit::ref::patch_embed_forward(x.data(), w.data(), b.data(), cls.data(), pos.data(), rout.data(),
                                B, Cin, H, p, C);
  vit::ref::dropout_forward(rout.data(), rout.data(), n, p_drop, seed, site, step);
  size_t dropped = 0;
  for (float v : rout) dropped += v == 0.0f;
  if (p_drop > 0) {
    EXPECT_GT(dropped, n * p_drop * 0.5);
  }

  cublasHandle_t h;
  CUBLAS_CHECK(cublasCreate(&h));
  DeviceBuffer<XT> d_x(xt);
  DeviceBuffer<float> d_w(w), d_b(b), d_cls(cls), d_pos(pos), d_lnw(lnw), d_lnb(lnb);
  DeviceBuffer<float> d_cols(rcols.size()), d_out(n), d_y(n), d_mean(R), d_rstd(R);
  DeviceBuffer<bf16> d_y16(n);
  vector<vector<float>> first;
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    for (int run = 0; run < 2; ++run) {
      vit::patch_embed_forward_ln<XT, float>(h, 0, d_x, d_w, d_b, d_cls, d_pos, d_cols, d_out, B,
                                             Cin, H, p, C, p_drop, seed, site, step, d_lnw, d_lnb,
                                             eps, d_y.ptr, d_mean, d_rstd);
      vector<vector<float>> o = {d_cols.download(), d_out.download(), d_y.download(),
                                 d_mean.download(), d_rstd.download()};
      EXPECT_TRUE(vit_test::bitwise_equal(o[0], rcols)) << "cols";
      EXPECT_TRUE(vit_test::allclose(o[1], rout, RTOL, ATOL)) << "out";
      vector<float> ry(n), rmean(R), rrstd(R);
      vit::ref::layernorm_forward(o[1].data(), lnw.data(), lnb.data(), ry.data(), rmean.data(),
                                  rrstd.data(), (int)R, C, (double)eps);
      EXPECT_TRUE(vit_test::allclose(o[2], ry, RTOL, ATOL)) << "y";
      EXPECT_TRUE(vit_test::allclose(o[3], rmean, RTOL, ATOL)) << "mean";
      EXPECT_TRUE(vit_test::allclose(o[4], rrstd, RTOL, ATOL)) << "rstd";

      // BF16 y: the same FP32 statistics, y rounded once.
      vit::patch_embed_forward_ln<XT, bf16>(h, 0, d_x, d_w, d_b, d_cls, d_pos, d_cols, d_out, B,
                                            Cin, H, p, C, p_drop, seed, site, step, d_lnw, d_lnb,
                                            eps, d_y16.ptr, d_mean, d_rstd);
      const vector<bf16> y16 = d_y16.download();
      vector<float> y16f(n), want(n);
      for (size_t i = 0; i < n; ++i) {
        y16f[i] = __bfloat162float(y16[i]);
        want[i] = __bfloat162float(__float2bfloat16(o[2][i]));
      }
      EXPECT_TRUE(vit_test::bitwise_equal(y16f, want)) << "bf16 y";
      EXPECT_TRUE(vit_test::bitwise_equal(d_out.download(), o[1])) << "bf16 call's out";
      EXPECT_TRUE(vit_test::bitwise_equal(d_mean.download(), o[3])) << "bf16 call's mean";
      EXPECT_TRUE(vit_test::bitwise_equal(d_rstd.download(), o[4])) << "bf16 call's rstd";
      o.push_back(y16f);
      if (first.empty()) first = o;
      for (size_t k = 0; k < o.size(); ++k)
        EXPECT_TRUE(vit_test::bitwise_equal(o[k], first[k])) << "output " << k;
    }
  });
  CUBLAS_CHECK(cublasDestroy(h));
}

}  // namespace

TEST(PatchEmbedKernel, ForwardLnFloatImages) {
  VIT_REQUIRE_GPU();
  check_patch_embed_ln<float>(2, 3, 32, 4, 256, 0.0f, 1e-5f);  // basic
  check_patch_embed_ln<float>(2, 3, 32, 4, 256, 0.1f, 1e-5f);
  check_patch_embed_ln<float>(3, 3, 12, 3, 24, 0.1f, 1e-6f);   // C < 32: idle lanes; T = 17
  check_patch_embed_ln<float>(2, 1, 10, 5, 50, 0.0f, 1e-6f);
}

TEST(PatchEmbedKernel, ForwardLnHalfImages) {
  VIT_REQUIRE_GPU();
  check_patch_embed_ln<__half>(2, 3, 32, 4, 256, 0.0f, 1e-5f);
  check_patch_embed_ln<__half>(2, 3, 32, 4, 256, 0.1f, 1e-5f);
  check_patch_embed_ln<__half>(3, 3, 12, 3, 24, 0.1f, 1e-6f);
}

TEST(PatchEmbedKernel, ForwardLnBadDropoutThrows) {
  VIT_REQUIRE_GPU();
  cublasHandle_t h = nullptr;
  EXPECT_THROW((vit::patch_embed_forward_ln<float, float>(
                   h, 0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 2, 3, 32,
                   4, 64, 1.0f, 0, 0, 0, nullptr, nullptr, 1e-5f, (float*)nullptr, nullptr,
                   nullptr)),
               vit::Error);
}

// ---- patch_embed_backward_t: a BF16 dout at row stride 2C, and db == nullptr --------------------
// dout's values are BF16-representable, so the BF16 path (each element widened exactly) must give
// bitwise the float path's dw, db, dcls, dpos (same sums in the same order); both within rtol/atol
// 1e-5 of ref::patch_embed_backward. The padding of each BF16 row (elements C..2C-1) is NaN, so a
// read of it shows. With db == nullptr, dw/dcls/dpos are unchanged, db is not touched, and the
// scratch starts with the per-position sums S (T, C) = sum_b dout[b, t, c] (patch_embed_possum):
// bitwise the float sums in b order, and db (with db) = db0 + the sum of rows 1..T-1 of S in t
// order, bitwise.
static void check_patch_embed_backward_bf16(int B, int Cin, int H, int p, int C) {
  SCOPED_TRACE("B=" + std::to_string(B) + " Cin=" + std::to_string(Cin) + " H=" +
               std::to_string(H) + " p=" + std::to_string(p) + " C=" + std::to_string(C));
  const int G = H / p, N = G * G, T = N + 1, K = Cin * p * p;
  const size_t R = (size_t)B * T;
  const vector<float> x = vit_test::to_float(vit_test::rand_vec((size_t)B * Cin * H * H, 71));
  const vector<float> w = vit_test::to_float(vit_test::rand_vec((size_t)C * K, 72, -0.05, 0.05));
  vector<float> dout = vit_test::to_float(vit_test::rand_vec(R * C, 76));
  vector<bf16> dout16(R * 2 * C, __float2bfloat16(NAN));
  for (size_t r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      dout16[r * 2 * C + c] = __float2bfloat16(dout[r * C + c]);
      dout[r * C + c] = __bfloat162float(dout16[r * 2 * C + c]);
    }
  const vector<float> dw0 = vit_test::to_float(vit_test::rand_vec((size_t)C * K, 77));
  const vector<float> db0 = vit_test::to_float(vit_test::rand_vec(C, 78));
  const vector<float> dcls0 = vit_test::to_float(vit_test::rand_vec(C, 79));
  const vector<float> dpos0 = vit_test::to_float(vit_test::rand_vec((size_t)T * C, 80));
  vector<float> cols((size_t)B * N * K), rdw = dw0, rdb = db0, rdcls = dcls0, rdpos = dpos0;
  vit::ref::im2patch(x.data(), cols.data(), B, Cin, H, p);
  vit::ref::patch_embed_backward(dout.data(), x.data(), w.data(), (float*)nullptr, rdw.data(),
                                 rdb.data(), rdcls.data(), rdpos.data(), B, Cin, H, p, C);
  // S in b order, in float, and db = db0 + sum_{t >= 1} S[t] in t order.
  vector<float> S((size_t)T * C, 0.0f), db_want = db0;
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < C; ++c)
      for (int b = 0; b < B; ++b) S[(size_t)t * C + c] += dout[((size_t)b * T + t) * C + c];
  for (int c = 0; c < C; ++c) {
    float s = 0.0f;
    for (int t = 1; t < T; ++t) s += S[(size_t)t * C + c];
    db_want[c] += s;
  }

  cublasHandle_t h;
  CUBLAS_CHECK(cublasCreate(&h));
  DeviceBuffer<float> d_dout(dout), d_cols(cols);
  DeviceBuffer<bf16> d_dout16(dout16);
  DeviceBuffer<float> d_dw(dw0.size()), d_db(C), d_dcls(C), d_dpos(dpos0.size());
  const size_t ns = vit::patch_embed_scratch_floats(B, Cin, H, p, C);
  DeviceBuffer<float> scratch(ns);
  auto run = [&](bool bf16_dout, bool with_db) {
    d_dw.upload(dw0);
    d_db.upload(db0);
    d_dcls.upload(dcls0);
    d_dpos.upload(dpos0);
    float* db = with_db ? d_db.ptr : nullptr;
    if (bf16_dout)
      vit::patch_embed_backward_t<bf16>(h, 0, d_dout16, 2 * C, d_cols, d_dw, db, d_dcls, d_dpos,
                                        scratch, B, Cin, H, p, C);
    else
      vit::patch_embed_backward_t<float>(h, 0, d_dout, C, d_cols, d_dw, db, d_dcls, d_dpos,
                                         scratch, B, Cin, H, p, C);
    const vector<float> s = scratch.download();
    return vector<vector<float>>{d_dw.download(), d_db.download(), d_dcls.download(),
                                 d_dpos.download(), vector<float>(s.begin(), s.begin() + T * C)};
  };
  const char* names[] = {"dw", "db", "dcls", "dpos", "possum"};
  vector<vector<float>> first;
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    const vector<vector<float>> f = run(false, true), g = run(true, true);
    EXPECT_TRUE(vit_test::allclose(g[0], rdw, RTOL, ATOL)) << "dw";
    EXPECT_TRUE(vit_test::allclose(g[1], rdb, RTOL, ATOL)) << "db";
    EXPECT_TRUE(vit_test::allclose(g[2], rdcls, RTOL, ATOL)) << "dcls";
    EXPECT_TRUE(vit_test::allclose(g[3], rdpos, RTOL, ATOL)) << "dpos";
    EXPECT_TRUE(vit_test::bitwise_equal(g[1], db_want)) << "db from the position sums";
    for (int k = 0; k < 5; ++k)
      EXPECT_TRUE(vit_test::bitwise_equal(g[k], f[k])) << "bf16 vs float dout: " << names[k];
    EXPECT_TRUE(vit_test::bitwise_equal(g[4], S)) << "possum";
    for (bool bf : {false, true}) {
      SCOPED_TRACE(bf ? "db == nullptr, bf16 dout" : "db == nullptr, float dout");
      const vector<vector<float>> z = run(bf, false);
      EXPECT_TRUE(vit_test::bitwise_equal(z[1], db0)) << "db touched";
      for (int k : {0, 2, 3, 4})
        EXPECT_TRUE(vit_test::bitwise_equal(z[k], f[k])) << names[k];
    }
    if (first.empty()) first = g;
    for (int k = 0; k < 5; ++k) EXPECT_TRUE(vit_test::bitwise_equal(g[k], first[k])) << names[k];
  });
  CUBLAS_CHECK(cublasDestroy(h));
}

TEST(PatchEmbedKernel, BackwardBf16DoutAndPositionSums) {
  VIT_REQUIRE_GPU();
  check_patch_embed_backward_bf16(2, 3, 32, 4, 256);  // basic
  check_patch_embed_backward_bf16(3, 3, 12, 3, 24);   // T = 17, C not a multiple of 32
}
