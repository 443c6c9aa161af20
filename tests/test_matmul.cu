// tests/test_matmul.cu — kernels/matmul.cuh (cuBLAS GEMMs + bias/GELU epilogue + deterministic
// db) against the CPU reference vit::ref::linear_* and gelu_* (float), forward and backward:
// y, pre_act, dx (=), dw (+=), db (+=), with and without bias / GELU / dx / db, row strides
// larger than the width (the head reads the CLS rows with ldx = T*C), at the basic, vit-b16
// and odd shapes, under two thread orders, bitwise identical across runs.
// Inputs are scaled like a real layer (weights ~0.05, activations ~1) so outputs are O(0.1..1).
// The reference GEMM is OpenBLAS in float; cuBLAS (or simt's) sums in another order, db is a
// chunked column sum here and a sequential one in the reference: measured differences up to
// ~1e-6 relative. Tolerance rtol 1e-5, atol 1e-5. The handle keeps cuBLAS's default math mode
// (FP32, no TF32).
#include <gtest/gtest.h>

#include <vector>

#include "cpu/gelu.h"
#include "cpu/linear.h"
#include "kernels/matmul.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_ref_util.h"
#include "tests/test_util.h"

using vit_test::DeviceBuffer;
using std::vector;

namespace {

const double RTOL = 1e-5, ATOL = 1e-5;

struct Case {
  int N, in, out;
  int ldx, lddx;   // row strides of x and dx (>= in)
  bool bias, gelu, want_dx, want_db;
  vit::Gelu g;
};

std::string name(const Case& c) {
  char buf[160];
  snprintf(buf, sizeof buf, "N=%d in=%d out=%d ldx=%d lddx=%d bias=%d gelu=%d dx=%d db=%d", c.N,
           c.in, c.out, c.ldx, c.lddx, c.bias, c.gelu, c.want_dx, c.want_db);
  return buf;
}

// Rows of a (N, in) matrix stored with row stride ld, the padding filled with a huge value so a
// kernel that reads it is caught.
vector<float> strided(const vector<float>& dense, int N, int in, int ld) {
  vector<float> s((size_t)N * ld, 1e30f);
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < in; ++i) s[(size_t)n * ld + i] = dense[(size_t)n * in + i];
  return s;
}

void check_matmul(const Case& c) {
  SCOPED_TRACE(name(c));
  const int N = c.N, in = c.in, out = c.out;
  const vector<float> x = vit_test::to_float(vit_test::rand_vec((size_t)N * in, 21));
  const vector<float> w = vit_test::to_float(vit_test::rand_vec((size_t)out * in, 22, -0.05, 0.05));
  const vector<float> b = vit_test::to_float(vit_test::rand_vec(out, 23, -0.5, 0.5));
  const vector<float> dy = vit_test::to_float(vit_test::rand_vec((size_t)N * out, 24));
  const vector<float> dw0 = vit_test::to_float(vit_test::rand_vec((size_t)out * in, 25));
  const vector<float> db0 = vit_test::to_float(vit_test::rand_vec(out, 26));

  // Reference: pre = x W^T + b; y = gelu(pre) or pre; dx = dy W; dw += dy^T x; db += sum dy.
  vector<float> rpre((size_t)N * out), ry((size_t)N * out), rdx((size_t)N * in), rdw = dw0, rdb = db0;
  vit::ref::linear_forward(x.data(), w.data(), c.bias ? b.data() : nullptr, rpre.data(), N, in, out);
  if (c.gelu) vit::ref::gelu_forward(rpre.data(), ry.data(), ry.size(), c.g);
  else ry = rpre;
  vit::ref::linear_backward(dy.data(), x.data(), w.data(), rdx.data(), rdw.data(),
                            c.want_db ? rdb.data() : nullptr, N, in, out);

  cublasHandle_t h;
  CUBLAS_CHECK(cublasCreate(&h));
  DeviceBuffer<float> d_x(strided(x, N, in, c.ldx)), d_w(w), d_b(b), d_dy(dy);
  DeviceBuffer<float> d_y((size_t)N * out), d_pre((size_t)N * out), d_dw(dw0.size()), d_db(out);
  const vector<float> dx_init((size_t)N * c.lddx, 7.0f);  // padding of dx must stay 7
  DeviceBuffer<float> d_dx(dx_init.size());
  DeviceBuffer<float> scratch(vit::matmul_scratch_floats(N, out));

  vector<vector<float>> first;
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    for (int run = 0; run < 2; ++run) {
      d_dw.upload(dw0);
      d_db.upload(db0);
      d_dx.upload(dx_init);
      vit::matmul_forward(h, 0, d_x, c.ldx, d_w, c.bias ? d_b.get() : nullptr, d_y, N, in, out,
                          c.gelu ? d_pre.get() : nullptr, c.g);
      vit::matmul_backward(h, 0, d_dy, d_x, c.ldx, d_w, c.want_dx ? d_dx.get() : nullptr, c.lddx,
                           d_dw, c.want_db ? d_db.get() : nullptr, scratch, N, in, out);
      vector<vector<float>> o = {d_y.download(), d_dw.download(), d_db.download(), d_dx.download()};
      EXPECT_TRUE(vit_test::allclose(o[0], ry, RTOL, ATOL)) << "y";
      if (c.gelu) {
        vector<float> pre = d_pre.download();
        EXPECT_TRUE(vit_test::allclose(pre, rpre, RTOL, ATOL)) << "pre_act";
      }
      EXPECT_TRUE(vit_test::allclose(o[1], rdw, RTOL, ATOL)) << "dw";
      EXPECT_TRUE(vit_test::allclose(o[2], c.want_db ? rdb : db0, RTOL, ATOL)) << "db";
      // dx rows at stride lddx; the columns in..lddx untouched (and dx untouched when skipped).
      vector<float> rdx_s = c.want_dx ? rdx : vector<float>((size_t)N * in, 7.0f);
      vector<float> expect = strided(rdx_s, N, in, c.lddx);
      for (int n = 0; n < N; ++n)
        for (int i = in; i < c.lddx; ++i) expect[(size_t)n * c.lddx + i] = 7.0f;
      EXPECT_TRUE(vit_test::allclose(o[3], expect, RTOL, ATOL)) << "dx";
      if (first.empty()) {
        first = o;
      } else {
        for (size_t k = 0; k < o.size(); ++k)
          EXPECT_TRUE(vit_test::bitwise_equal(o[k], first[k])) << "output " << k;
      }
    }
  });
  CUBLAS_CHECK(cublasDestroy(h));
}

}  // namespace

using vit::Gelu;

TEST(MatmulKernel, BasicShapes) {  // B=2, T=65, C=256, MLP 1024
  VIT_REQUIRE_GPU();
  check_matmul({130, 256, 768, 256, 256, true, false, true, true, Gelu::Tanh});   // qkv
  check_matmul({130, 256, 1024, 256, 256, true, true, true, true, Gelu::Tanh});   // fc1 + GELU
  check_matmul({130, 1024, 256, 1024, 1024, true, false, true, true, Gelu::Tanh}); // fc2
}

TEST(MatmulKernel, VitB16Shapes) {  // B=1, T=197, C=768, MLP 3072, erf GELU
  VIT_REQUIRE_GPU();
  check_matmul({197, 768, 3072, 768, 768, true, true, true, true, Gelu::Erf});
  check_matmul({197, 768, 768, 768, 768, true, false, true, true, Gelu::Erf});
}

TEST(MatmulKernel, OddShapes) {
  VIT_REQUIRE_GPU();
  check_matmul({17, 24, 50, 24, 24, true, true, true, true, Gelu::Tanh});    // out % 4 != 0
  check_matmul({51, 50, 24, 50, 50, true, true, true, true, Gelu::Erf});     // in % 4 != 0
  check_matmul({3, 7, 5, 7, 7, true, false, true, true, Gelu::Tanh});
  check_matmul({300, 24, 10, 24, 24, true, false, true, true, Gelu::Tanh});  // 3 db chunks
}

TEST(MatmulKernel, OptionalOutputs) {
  VIT_REQUIRE_GPU();
  check_matmul({17, 24, 50, 24, 24, false, false, true, true, Gelu::Tanh});   // no bias
  check_matmul({17, 24, 50, 24, 24, false, true, true, true, Gelu::Erf});     // GELU, no bias
  check_matmul({17, 24, 50, 24, 24, true, false, false, true, Gelu::Tanh});   // no dx
  check_matmul({17, 24, 50, 24, 24, false, false, true, false, Gelu::Tanh});  // no db
}

TEST(MatmulKernel, RowStrides) {  // the head on CLS rows: x rows T*C apart, dx written in place
  VIT_REQUIRE_GPU();
  check_matmul({3, 24, 10, 17 * 24, 17 * 24, true, false, true, true, Gelu::Tanh});
  check_matmul({2, 256, 10, 65 * 256, 65 * 256, true, false, true, true, Gelu::Tanh});
  check_matmul({5, 50, 13, 53, 51, true, true, true, true, Gelu::Tanh});
}

TEST(MatmulKernel, BadShapeThrows) {
  VIT_REQUIRE_GPU();
  cublasHandle_t h;
  CUBLAS_CHECK(cublasCreate(&h));
  EXPECT_THROW(vit::matmul_forward(h, 0, nullptr, 3, nullptr, nullptr, nullptr, 2, 4, 5),
               vit::Error);  // ldx < in
  EXPECT_THROW(vit::matmul_forward(h, 0, nullptr, 4, nullptr, nullptr, nullptr, 2, 4, 0),
               vit::Error);
  CUBLAS_CHECK(cublasDestroy(h));
}
