// tests/test_patch_embed.cu — kernels/patch_embed.cuh against vit::ref::im2patch,
// patch_embed_forward and patch_embed_backward (float): cols (exactly: a gather), out (B, T, C),
// and dw, db, dcls, dpos (all +=, starting from random values in both), at the basic (32/4,
// C=256), vit-b16 (224/16, C=768, B=1) and odd shapes (T=17 with C=24; 1 channel, C=50), two
// thread orders, bitwise identical across runs. Tolerances rtol 1e-5, atol 1e-5 (the GEMM sums
// K = Cin*p*p products of O(1) pixels and 0.05 weights; dw sums over B*N rows).
#include <gtest/gtest.h>

#include <vector>

#include "cpu/patch_embed.h"
#include "kernels/patch_embed.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_ref_util.h"
#include "tests/test_util.h"

using vit_test::DeviceBuffer;
using std::vector;

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
