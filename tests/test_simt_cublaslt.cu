// tests/test_simt_cublaslt.cu — cublasLtMatmul (simt/cublaslt.cpp under simt, the real cuBLASLt
// on a GPU) against hand-derived results and the CPU reference ops, written from NVIDIA's
// cuBLASLt documentation: D = epilogue(alpha op(A) op(B) + beta C), column-major (and
// CUBLASLT_ORDER_ROW), transposes, leading dimensions, strided batches, C == D in place, the
// epilogues a transformer uses (bias + GELU/ReLU forward with the aux output, DGELU/DRELU + bias
// gradient backward, BGRADA/BGRADB) against vit::ref::linear_* / gelu_* (tanh form), FP32, TF32,
// FP16 and BF16 data, heuristics and workspace rules, pointer modes and argument errors.
//
// The transformer mapping (row-major activations, PyTorch (out, in) weights, cuBLASLt column-major):
//   y = x W^T + b      D (out x T) = op(A) op(B), A = W as (in x out) with TRANSA = T, B = x as
//                       (in x T): M = out, N = tokens, K = in; the bias has M = out elements.
//   dh = dy W          D (in x T), A = W as (in x out), B = dy as (out x T): M = in, K = out.
//   dW = dy^T x        D (in x out) with BGRADB (B = dy, TRANSB = T): db = sum over k (tokens).
// Tolerances: FP32 rtol 1e-5 / atol 1e-5 (OpenBLAS vs the reference's BLAS, different summation
// orders). GELU epilogues on a GPU: 1e-3, because the hardware evaluates tanh with an approximation
// whose error is not documented (simt uses std::tanh, and matches to 1e-5). BF16 outputs: one
// rounding to 8 significant bits, |err| <= 2^-8 |value| (plus the FP32 accumulation's 1e-5).
#include <gtest/gtest.h>

#include "kernels/common.cuh"

#include <cublasLt.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/gelu.h"
#include "cpu/linear.h"
#include "tests/cuda_buffer.h"
#include "tests/test_ref_util.h"
#include "tests/test_util.h"

using std::vector;
using vit_test::DeviceBuffer;

namespace {

#if defined(__CUDACC__)
const double GELU_TOL = 1e-3;
#else
const double GELU_TOL = 1e-5;
#endif
const double BF16_RTOL = 1.0 / 256 + 1e-6;  // 2^-8: half an ulp of an 8-significant-bit number

// Statuses the documentation does not pin down exactly: simt's choice is asserted under simt;
// on a GPU the call must at least be refused.
#if defined(__CUDACC__)
#define EXPECT_REFUSED(call, status) EXPECT_NE((call), CUBLAS_STATUS_SUCCESS)
#else
#define EXPECT_REFUSED(call, status) EXPECT_EQ((call), (status))
#endif

vector<float> rnd(size_t n, uint32_t stream, double lo = -1, double hi = 1) {
  return vit_test::to_float(vit_test::rand_vec(n, stream, lo, hi));
}
// Values exactly representable in bfloat16 (so the reference sees what the GPU multiplies).
vector<float> bf16_exact(vector<float> v) {
  for (float& x : v) x = __bfloat162float(__float2bfloat16(x));
  return v;
}
vector<__nv_bfloat16> to_bf16(const vector<float>& v) {
  vector<__nv_bfloat16> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = __float2bfloat16(v[i]);
  return o;
}
vector<float> from_bf16(const vector<__nv_bfloat16>& v) {
  vector<float> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = __bfloat162float(v[i]);
  return o;
}
double gelu_tanh(double x) { return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
double gelu_erf(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }

// A (rows x cols) matrix stored with leading dimension ld (column- or row-major); the padding
// holds a huge value so that reading it is caught.
struct Stored {
  int rows, cols;
  int64_t ld;
  bool row_major;
  vector<float> v;
  Stored(int r, int c, int64_t ld_, bool rm, const vector<float>& dense_colmajor, float pad = 1e30f)
      : rows(r), cols(c), ld(ld_), row_major(rm), v(size(), pad) {
    for (int j = 0; j < c; ++j)
      for (int i = 0; i < r; ++i) at(i, j) = dense_colmajor[(size_t)j * r + i];
  }
  size_t size() const { return row_major ? (size_t)rows * ld : (size_t)cols * ld; }
  float& at(int i, int j) { return v[row_major ? (size_t)i * ld + j : (size_t)j * ld + i]; }
  float at(int i, int j) const { return v[row_major ? (size_t)i * ld + j : (size_t)j * ld + i]; }
};

// Owns the four layouts and the matmul descriptor of one problem.
struct LtGemm {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  LtGemm(cublasComputeType_t compute, bool ta, bool tb, int m, int n, int k, int64_t lda, int64_t ldb,
         int64_t ldc, cudaDataType abt = CUDA_R_32F, cudaDataType cdt = CUDA_R_32F, bool row = false) {
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, compute, CUDA_R_32F));
    const cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    set(CUBLASLT_MATMUL_DESC_TRANSA, (int32_t)oa);
    set(CUBLASLT_MATMUL_DESC_TRANSB, (int32_t)ob);
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a, abt, ta ? k : m, ta ? m : k, lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b, abt, tb ? n : k, tb ? k : n, ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c, cdt, m, n, ldc));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d, cdt, m, n, ldc));
    if (row) {
      const int32_t order = CUBLASLT_ORDER_ROW;
      for (cublasLtMatrixLayout_t l : {a, b, c, d})
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof order));
    }
  }
  ~LtGemm() {
    cublasLtMatmulDescDestroy(op);
    for (cublasLtMatrixLayout_t l : {a, b, c, d}) cublasLtMatrixLayoutDestroy(l);
  }
  template <class T>
  void set(cublasLtMatmulDescAttributes_t attr, T v) {
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, attr, &v, sizeof v));
  }
  void epilogue(cublasLtEpilogue_t e) { set(CUBLASLT_MATMUL_DESC_EPILOGUE, (uint32_t)e); }
  void batch(int count, int64_t sa, int64_t sb, int64_t sc) {
    const int64_t s[4] = {sa, sb, sc, sc};
    cublasLtMatrixLayout_t l[4] = {a, b, c, d};
    for (int i = 0; i < 4; ++i) {
      CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
      CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &s[i], sizeof s[i]));
    }
  }
  cublasStatus_t run(cublasLtHandle_t h, float alpha, const void* A, const void* B, float beta, const void* C,
                     void* D, const cublasLtMatmulAlgo_t* algo = nullptr, void* ws = nullptr, size_t ws_bytes = 0) {
    return cublasLtMatmul(h, op, &alpha, A, a, B, b, &beta, C, c, D, d, algo, ws, ws_bytes, 0);
  }
};

// D = alpha op(A) op(B) + beta C in double, dense column-major m x n.
vector<double> ref_gemm(bool ta, bool tb, int m, int n, int k, double alpha, const Stored& A, const Stored& B,
                        double beta, const Stored* C) {
  vector<double> d((size_t)m * n);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double s = 0;
      for (int kk = 0; kk < k; ++kk) s += (double)(ta ? A.at(kk, i) : A.at(i, kk)) * (tb ? B.at(j, kk) : B.at(kk, j));
      d[(size_t)j * m + i] = alpha * s + (beta != 0 ? beta * C->at(i, j) : 0.0);
    }
  return d;
}

class SimtCublasLt : public ::testing::Test {
 protected:
  void SetUp() override {
    VIT_REQUIRE_GPU();
    CUBLAS_CHECK(cublasLtCreate(&lt));
  }
  void TearDown() override {
    if (lt) CUBLAS_CHECK(cublasLtDestroy(lt));
  }
  cublasLtHandle_t lt = nullptr;
};

TEST_F(SimtCublasLt, VersionStatusAndDescriptorAttributes) {
  VIT_REQUIRE_GPU();
  EXPECT_GE(cublasLtGetVersion(), (size_t)CUBLAS_VER_MAJOR * 10000);
  EXPECT_STREQ(cublasLtGetStatusName(CUBLAS_STATUS_NOT_SUPPORTED), "CUBLAS_STATUS_NOT_SUPPORTED");

  // Defaults documented in cublasLt.h, attribute sizes checked both ways, size queries.
  cublasLtMatrixLayout_t l;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, CUDA_R_16BF, 17, 65, 24));
  int32_t order = -1, count = -1;
  int64_t ld = 0, stride = -1;
  uint64_t rows = 0;
  uint32_t type = 0;
  size_t written = 0;
  CUBLAS_CHECK(cublasLtMatrixLayoutGetAttribute(l, CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof order, &written));
  EXPECT_EQ(order, CUBLASLT_ORDER_COL);
  EXPECT_EQ(written, sizeof order);
  CUBLAS_CHECK(cublasLtMatrixLayoutGetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count, nullptr));
  EXPECT_EQ(count, 1);
  CUBLAS_CHECK(cublasLtMatrixLayoutGetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride, nullptr));
  EXPECT_EQ(stride, 0);
  CUBLAS_CHECK(cublasLtMatrixLayoutGetAttribute(l, CUBLASLT_MATRIX_LAYOUT_LD, &ld, sizeof ld, nullptr));
  EXPECT_EQ(ld, 24);
  CUBLAS_CHECK(cublasLtMatrixLayoutGetAttribute(l, CUBLASLT_MATRIX_LAYOUT_ROWS, &rows, sizeof rows, nullptr));
  EXPECT_EQ(rows, 17u);
  CUBLAS_CHECK(cublasLtMatrixLayoutGetAttribute(l, CUBLASLT_MATRIX_LAYOUT_TYPE, &type, sizeof type, nullptr));
  EXPECT_EQ(type, (uint32_t)CUDA_R_16BF);
  // sizeInBytes 0 asks for the size; a wrong size or a NULL buffer is refused.
  CUBLAS_CHECK(cublasLtMatrixLayoutGetAttribute(l, CUBLASLT_MATRIX_LAYOUT_LD, nullptr, 0, &written));
  EXPECT_EQ(written, sizeof(int64_t));
  EXPECT_EQ(cublasLtMatrixLayoutGetAttribute(l, CUBLASLT_MATRIX_LAYOUT_LD, nullptr, 0, nullptr), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_LD, &order, sizeof order), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_LD, nullptr, sizeof ld), CUBLAS_STATUS_INVALID_VALUE);
  ld = 32;
  CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_LD, &ld, sizeof ld));
  ld = 0;
  CUBLAS_CHECK(cublasLtMatrixLayoutGetAttribute(l, CUBLASLT_MATRIX_LAYOUT_LD, &ld, sizeof ld, nullptr));
  EXPECT_EQ(ld, 32);
  CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(l));

  cublasLtMatmulDesc_t op;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  uint32_t epi = 0;
  int32_t trans = -1, compute = 0;
  const void* bias = &epi;
  CUBLAS_CHECK(cublasLtMatmulDescGetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi, nullptr));
  EXPECT_EQ(epi, (uint32_t)CUBLASLT_EPILOGUE_DEFAULT);
  CUBLAS_CHECK(cublasLtMatmulDescGetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof trans, nullptr));
  EXPECT_EQ(trans, CUBLAS_OP_N);
  CUBLAS_CHECK(cublasLtMatmulDescGetAttribute(op, CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, &compute, sizeof compute, nullptr));
  EXPECT_EQ(compute, CUBLAS_COMPUTE_32F);
  CUBLAS_CHECK(cublasLtMatmulDescGetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias, nullptr));
  EXPECT_EQ(bias, nullptr);
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, 8), CUBLAS_STATUS_INVALID_VALUE);
  CUBLAS_CHECK(cublasLtMatmulDescDestroy(op));

  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  uint64_t ws = 1;
  uint32_t align = 0;
  CUBLAS_CHECK(cublasLtMatmulPreferenceGetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws, nullptr));
  EXPECT_EQ(ws, 0u);  // "default: 0 - no workspace allowed"
  CUBLAS_CHECK(cublasLtMatmulPreferenceGetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align, sizeof align, nullptr));
  EXPECT_EQ(align, 256u);
  EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &align, sizeof align),
            CUBLAS_STATUS_INVALID_VALUE);  // uint64_t, not uint32_t
  CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
}

// The default epilogue: all four transpose combinations, odd shapes (M=17, N=65, K=31), padded
// leading dimensions, alpha/beta, beta = 0 ignoring NaN in C, and the same through ORDER_ROW.
TEST_F(SimtCublasLt, DefaultEpilogueTransposesOddShapesLeadingDims) {
  VIT_REQUIRE_GPU();
  const int m = 17, n = 65, k = 31;
  for (int row = 0; row < 2; ++row)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (float beta : {0.0f, 0.5f}) {
          SCOPED_TRACE(testing::Message() << "row " << row << " ta " << ta << " tb " << tb << " beta " << beta);
          const int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
          const int64_t lda = (row ? ac : ar) + 3, ldb = (row ? bc : br) + 1, ldc = (row ? n : m) + 2;
          const Stored A(ar, ac, lda, row, rnd((size_t)ar * ac, 1)), B(br, bc, ldb, row, rnd((size_t)br * bc, 2));
          const Stored C(m, n, ldc, row, beta == 0 ? vector<float>((size_t)m * n, NAN) : rnd((size_t)m * n, 3), 7.0f);
          const vector<double> ref = ref_gemm(ta, tb, m, n, k, 1.5, A, B, beta, &C);
          DeviceBuffer<float> dA(A.v), dB(B.v), dC(C.v), dD(C.v);
          LtGemm g(CUBLAS_COMPUTE_32F, ta, tb, m, n, k, lda, ldb, ldc, CUDA_R_32F, CUDA_R_32F, row);
          CUBLAS_CHECK(g.run(lt, 1.5f, dA, dB, beta, dC, dD));
          Stored D = C;
          D.v = dD.download();
          for (int j = 0; j < n; ++j)
            for (int i = 0; i < m; ++i) {
              const double r = ref[(size_t)j * m + i];
              ASSERT_NEAR(D.at(i, j), r, 1e-5 + 1e-5 * std::fabs(r)) << "(" << i << "," << j << ")";
            }
          for (size_t i = 0; i < D.v.size(); ++i)  // D's padding untouched (C's copy held 7)
            if (!(row ? (int64_t)(i % ldc) < n : (int64_t)(i % ldc) < m)) {
              ASSERT_EQ(D.v[i], 7.0f) << i;
            }
        }
}

// Strided batches: A with padding between matrices, one B for every batch (stride 0), C and D
// apart, and the bias of each batch BIAS_BATCH_STRIDE elements after the previous one.
TEST_F(SimtCublasLt, StridedBatchesWithBiasBatchStride) {
  VIT_REQUIRE_GPU();
  const int m = 9, n = 6, k = 11, batch = 3;
  const int64_t lda = m + 1, sa = lda * k + 7, ldb = k, ldc = m + 2, sc = ldc * n + 3, sbias = m + 5;
  const vector<float> A = rnd(sa * batch, 11), B = rnd(ldb * n, 12), bias = rnd(sbias * batch, 13);
  LtGemm g(CUBLAS_COMPUTE_32F, false, false, m, n, k, lda, ldb, ldc);
  g.batch(batch, sa, 0, sc);
  DeviceBuffer<float> dA(A), dB(B), dBias(bias), dD(sc * batch);
  g.epilogue(CUBLASLT_EPILOGUE_BIAS);
  g.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (const void*)dBias.get());
  g.set(CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, sbias);
  CUBLAS_CHECK(g.run(lt, 1.0f, dA, dB, 0.0f, dD, dD));
  const vector<float> D = dD.download();
  for (int b = 0; b < batch; ++b)
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        double s = bias[b * sbias + i];
        for (int kk = 0; kk < k; ++kk) s += (double)A[b * sa + kk * lda + i] * B[j * ldb + kk];
        ASSERT_NEAR(D[b * sc + j * ldc + i], s, 1e-5 + 1e-5 * std::fabs(s)) << b << " (" << i << "," << j << ")";
      }
}

// In place: C == D with beta = 1 accumulates into D (what a gradient += needs); C == D with a
// different D layout is refused.
TEST_F(SimtCublasLt, InPlaceCEqualsD) {
  VIT_REQUIRE_GPU();
  const int m = 8, n = 5, k = 7;
  const vector<float> A = rnd(m * k, 21), B = rnd(k * n, 22), C0 = rnd(m * n, 23);
  DeviceBuffer<float> dA(A), dB(B), dC(C0);
  LtGemm g(CUBLAS_COMPUTE_32F, false, false, m, n, k, m, k, m);
  CUBLAS_CHECK(g.run(lt, 1.0f, dA, dB, 1.0f, dC, dC));
  CUBLAS_CHECK(g.run(lt, 1.0f, dA, dB, 1.0f, dC, dC));
  const vector<float> D = dC.download();
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double s = 0;
      for (int kk = 0; kk < k; ++kk) s += (double)A[kk * m + i] * B[j * k + kk];
      EXPECT_NEAR(D[j * m + i], C0[j * m + i] + 2 * s, 1e-5);
    }
  DeviceBuffer<float> big(2 * m * n);
  cublasLtMatrixLayout_t wide;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&wide, CUDA_R_32F, m, n, 2 * m));
  const float one = 1.0f;
  EXPECT_REFUSED(cublasLtMatmul(lt, g.op, &one, dA, g.a, dB, g.b, &one, big, g.c, big, wide, nullptr, nullptr, 0, 0),
                 CUBLAS_STATUS_INVALID_VALUE);
  CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(wide));
}

// ---- forward epilogues against vit::ref::linear_forward + gelu_forward (tanh) -----------------
struct Lin {
  int T, in, out;  // tokens, input and output features
};

// y = act(x W^T + b) through one cublasLtMatmul with `epi`, FP32; aux (pre-activation) with its
// ld padded to a multiple of 8, D rows `ldd` apart.
void check_forward(cublasLtHandle_t lt, Lin s, cublasLtEpilogue_t epi) {
  SCOPED_TRACE(testing::Message() << "T " << s.T << " in " << s.in << " out " << s.out << " epilogue " << epi);
  const bool bias = epi == CUBLASLT_EPILOGUE_BIAS || epi == CUBLASLT_EPILOGUE_RELU_BIAS ||
                    epi == CUBLASLT_EPILOGUE_GELU_BIAS || epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  const bool gelu = epi == CUBLASLT_EPILOGUE_GELU || epi == CUBLASLT_EPILOGUE_GELU_BIAS ||
                    epi == CUBLASLT_EPILOGUE_GELU_AUX || epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  const bool relu = epi == CUBLASLT_EPILOGUE_RELU || epi == CUBLASLT_EPILOGUE_RELU_BIAS;
  const bool aux = epi == CUBLASLT_EPILOGUE_GELU_AUX || epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  const vector<float> x = rnd((size_t)s.T * s.in, 31), w = rnd((size_t)s.out * s.in, 32, -0.1, 0.1),
                      b = rnd(s.out, 33, -0.5, 0.5);
  vector<float> pre((size_t)s.T * s.out), y((size_t)s.T * s.out);
  vit::ref::linear_forward(x.data(), w.data(), bias ? b.data() : nullptr, pre.data(), s.T, s.in, s.out);
  if (gelu) vit::ref::gelu_forward(pre.data(), y.data(), y.size(), vit::Gelu::Tanh);
  else if (relu) for (size_t i = 0; i < y.size(); ++i) y[i] = pre[i] > 0 ? pre[i] : 0.0f;
  else y = pre;

  const int64_t ldd = s.out + 3, ldaux = (s.out + 7) / 8 * 8;
  DeviceBuffer<float> dx(x), dw(w), db(b), dy((size_t)s.T * ldd), daux((size_t)s.T * ldaux);
  LtGemm g(CUBLAS_COMPUTE_32F, true, false, s.out, s.T, s.in, s.in, s.in, ldd);
  g.epilogue(epi);
  if (bias) g.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (const void*)db.get());
  if (aux) {
    g.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, (void*)daux.get());
    g.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, ldaux);
  }
  CUBLAS_CHECK(g.run(lt, 1.0f, dw, dx, 0.0f, dy, dy));
  const vector<float> got = dy.download(), got_aux = daux.download();
  vector<float> yd((size_t)s.T * s.out), auxd((size_t)s.T * s.out);
  for (int t = 0; t < s.T; ++t)
    for (int o = 0; o < s.out; ++o) {
      yd[(size_t)t * s.out + o] = got[t * ldd + o];
      auxd[(size_t)t * s.out + o] = got_aux[t * ldaux + o];
    }
  const double tol = gelu ? GELU_TOL : 1e-5;
  EXPECT_TRUE(vit_test::allclose(yd, y, tol, tol)) << "D";
  if (aux) {
    EXPECT_TRUE(vit_test::allclose(auxd, pre, 1e-5, 1e-5)) << "aux (the GELU input)";
  }
}

TEST_F(SimtCublasLt, ForwardEpiloguesMatchReferenceLinearAndGelu) {
  VIT_REQUIRE_GPU();
  for (cublasLtEpilogue_t e : {CUBLASLT_EPILOGUE_DEFAULT, CUBLASLT_EPILOGUE_BIAS, CUBLASLT_EPILOGUE_RELU,
                               CUBLASLT_EPILOGUE_RELU_BIAS, CUBLASLT_EPILOGUE_GELU, CUBLASLT_EPILOGUE_GELU_BIAS,
                               CUBLASLT_EPILOGUE_GELU_AUX, CUBLASLT_EPILOGUE_GELU_AUX_BIAS})
    check_forward(lt, {65, 31, 17}, e);  // odd: M = 17, N = 65, K = 31
  check_forward(lt, {130, 256, 1024}, CUBLASLT_EPILOGUE_GELU_AUX_BIAS);  // basic fc1
  check_forward(lt, {130, 256, 768}, CUBLASLT_EPILOGUE_BIAS);            // basic qkv
  check_forward(lt, {197, 768, 3072}, CUBLASLT_EPILOGUE_GELU_AUX_BIAS);  // vit-b16 fc1 shape (tanh form)
}

// cuBLASLt's GELU is the tanh approximation, not erf: at these inputs the two differ by 1.5e-4 to
// 4.4e-4, which the result (within 5e-5 of the tanh form) must resolve.
TEST_F(SimtCublasLt, GeluEpilogueIsTheTanhForm) {
  VIT_REQUIRE_GPU();
  const vector<float> xs = {-3.0f, -2.5f, -2.2f, -1.5f, -1.0f, 1.0f, 1.5f, 2.2f, 2.5f, 3.0f};
  const int m = (int)xs.size();
  // D (m x 1) = A (m x 1) * B (1 x 1) with B = 1: the epilogue sees exactly x.
  DeviceBuffer<float> dA(xs), dB(vector<float>{1.0f}), dD(m);
  LtGemm g(CUBLAS_COMPUTE_32F, false, false, m, 1, 1, m, 1, m);
  g.epilogue(CUBLASLT_EPILOGUE_GELU);
  CUBLAS_CHECK(g.run(lt, 1.0f, dA, dB, 0.0f, dD, dD));
  const vector<float> d = dD.download();
  for (int i = 0; i < m; ++i) {
    ASSERT_GT(std::fabs(gelu_tanh(xs[i]) - gelu_erf(xs[i])), 1e-4) << xs[i];  // the forms do differ here
    EXPECT_NEAR(d[i], gelu_tanh(xs[i]), 5e-5) << "x = " << xs[i];
  }
}

// ---- backward epilogues --------------------------------------------------------------------
// fc1's backward after fc2's: dh = dy2 W2 (T x hidden), dpre = dh * gelu'(pre), db1 = sum over
// tokens of dpre: one DGELU_BGRAD GEMM with aux = pre, against the reference ops.
void check_dgelu(cublasLtHandle_t lt, Lin s /* in = hidden, out = fc2 outputs */, bool bgrad) {
  SCOPED_TRACE(testing::Message() << "T " << s.T << " hidden " << s.in << " out " << s.out << " bgrad " << bgrad);
  const int H = s.in;
  const vector<float> dy2 = rnd((size_t)s.T * s.out, 41), w2 = rnd((size_t)s.out * H, 42, -0.1, 0.1),
                      pre = rnd((size_t)s.T * H, 43, -3, 3);
  vector<float> dh((size_t)s.T * H), dw(w2.size(), 0.0f), dpre(dh.size());
  vit::ref::linear_backward(dy2.data(), pre.data() /* x: unused for dx */, w2.data(), dh.data(), dw.data(), (float*)nullptr,
                            s.T, H, s.out);
  vit::ref::gelu_backward(dh.data(), pre.data(), dpre.data(), dh.size(), vit::Gelu::Tanh);
  vector<double> db(H, 0.0);
  for (int t = 0; t < s.T; ++t)
    for (int h = 0; h < H; ++h) db[h] += dpre[(size_t)t * H + h];

  const int64_t ldaux = (H + 7) / 8 * 8;
  vector<float> aux((size_t)s.T * ldaux, 1e30f);
  for (int t = 0; t < s.T; ++t)
    for (int h = 0; h < H; ++h) aux[t * ldaux + h] = pre[(size_t)t * H + h];
  DeviceBuffer<float> ddy(dy2), dw2(w2), daux(aux), dD((size_t)s.T * H), dbias(H);
  LtGemm g(CUBLAS_COMPUTE_32F, false, false, H, s.T, s.out, H, s.out, H);
  g.epilogue(bgrad ? CUBLASLT_EPILOGUE_DGELU_BGRAD : CUBLASLT_EPILOGUE_DGELU);
  g.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, (void*)daux.get());
  g.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, ldaux);
  if (bgrad) g.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void*)dbias.get());
  CUBLAS_CHECK(g.run(lt, 1.0f, dw2, ddy, 0.0f, dD, dD));
  EXPECT_TRUE(vit_test::allclose(dD.download(), dpre, GELU_TOL, GELU_TOL)) << "dpre";
  if (bgrad) {
    EXPECT_TRUE(vit_test::allclose(dbias.download(), db, GELU_TOL, 1e-4)) << "db (bias gradient)";
  }
}

TEST_F(SimtCublasLt, DgeluBgradMatchesReferenceBackward) {
  VIT_REQUIRE_GPU();
  check_dgelu(lt, {65, 17, 31}, false);    // odd: M = 17 (aux ld 24), N = 65, K = 31
  check_dgelu(lt, {65, 17, 31}, true);
  check_dgelu(lt, {130, 1024, 256}, true); // basic
  check_dgelu(lt, {197, 3072, 768}, true); // vit-b16 shape
}

// RELU_AUX_BIAS writes its bit mask (ld in bits, a multiple of 128); DRELU_BGRAD reads it back:
// the gradient passes where the forward's input was > 0.
TEST_F(SimtCublasLt, ReluAuxMaskRoundTripsThroughDreluBgrad) {
  VIT_REQUIRE_GPU();
  const int T = 65, in = 31, H = 17, out = 29;
  const vector<float> x = rnd((size_t)T * in, 51), w1 = rnd((size_t)H * in, 52, -0.3, 0.3), b1 = rnd(H, 53, -0.3, 0.3),
                      dy2 = rnd((size_t)T * out, 54), w2 = rnd((size_t)out * H, 55, -0.3, 0.3);
  vector<float> pre((size_t)T * H), dh((size_t)T * H), dw(w2.size(), 0.0f);
  vit::ref::linear_forward(x.data(), w1.data(), b1.data(), pre.data(), T, in, H);
  vit::ref::linear_backward(dy2.data(), pre.data(), w2.data(), dh.data(), dw.data(), (float*)nullptr, T, H, out);
  vector<float> relu(pre.size()), dpre(pre.size());
  vector<double> db(H, 0.0);
  for (size_t i = 0; i < pre.size(); ++i) {
    relu[i] = pre[i] > 0 ? pre[i] : 0.0f;
    dpre[i] = pre[i] > 0 ? dh[i] : 0.0f;
    db[i % H] += dpre[i];
  }
  const int64_t ldmask = 128;  // bits per column
  DeviceBuffer<float> dx(x), dw1(w1), db1(b1), dy(pre.size()), ddy2(dy2), dw2(w2), dD(pre.size()), dbias(H);
  DeviceBuffer<unsigned char> mask(ldmask / 8 * T);
  for (bool with_bias : {true, false}) {
    SCOPED_TRACE(with_bias ? "RELU_AUX_BIAS / DRELU_BGRAD" : "RELU_AUX (bias added by hand) / DRELU");
    LtGemm f(CUBLAS_COMPUTE_32F, true, false, H, T, in, in, in, H);
    f.epilogue(with_bias ? CUBLASLT_EPILOGUE_RELU_AUX_BIAS : CUBLASLT_EPILOGUE_RELU_AUX);
    if (with_bias) f.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (const void*)db1.get());
    f.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, (void*)mask.get());
    f.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, ldmask);
    // Without the bias epilogue, C = the broadcast bias with beta = 1 gives the same input.
    vector<float> bias_mat((size_t)T * H);
    for (size_t i = 0; i < bias_mat.size(); ++i) bias_mat[i] = b1[i % H];
    DeviceBuffer<float> dC(bias_mat);
    CUBLAS_CHECK(f.run(lt, 1.0f, dw1, dx, with_bias ? 0.0f : 1.0f, with_bias ? dy.get() : dC.get(), dy));
    EXPECT_TRUE(vit_test::allclose(dy.download(), relu, 1e-5, 1e-5)) << "relu(x W1^T + b1)";
    LtGemm bw(CUBLAS_COMPUTE_32F, false, false, H, T, out, H, out, H);
    bw.epilogue(with_bias ? CUBLASLT_EPILOGUE_DRELU_BGRAD : CUBLASLT_EPILOGUE_DRELU);
    if (with_bias) bw.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void*)dbias.get());
    bw.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, (void*)mask.get());
    bw.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, ldmask);
    CUBLAS_CHECK(bw.run(lt, 1.0f, dw2, ddy2, 0.0f, dD, dD));
    EXPECT_TRUE(vit_test::allclose(dD.download(), dpre, 1e-5, 1e-5)) << "dpre";
    if (with_bias) {
      EXPECT_TRUE(vit_test::allclose(dbias.download(), db, 1e-5, 1e-5)) << "db";
    }
  }
}

// Batched epilogues (e.g. per-head GEMMs): batch b reads bias + b * BIAS_BATCH_STRIDE and writes
// aux + b * EPILOGUE_AUX_BATCH_STRIDE; the backward reads that aux and writes each batch's bias
// gradient BIAS_BATCH_STRIDE apart.
TEST_F(SimtCublasLt, BatchedGeluAuxAndDgeluBgradStrides) {
  VIT_REQUIRE_GPU();
  const int m = 12, n = 9, k = 7, batch = 3;
  const int64_t sa = m * k + 5, sb = k * n, sd = m * n + 4, ldaux = 16, saux = ldaux * n + 8, sbias = m + 3;
  const vector<float> A = rnd(sa * batch, 131), B = rnd(sb * batch, 132), bias = rnd(sbias * batch, 133, -0.5, 0.5);
  DeviceBuffer<float> dA(A), dB(B), dbias(bias), dD(sd * batch), daux(saux * batch), dD2(sd * batch), dbg(sbias * batch);
  LtGemm f(CUBLAS_COMPUTE_32F, false, false, m, n, k, m, k, m);
  f.batch(batch, sa, sb, sd);
  f.epilogue(CUBLASLT_EPILOGUE_GELU_AUX_BIAS);
  f.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (const void*)dbias.get());
  f.set(CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, sbias);
  f.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, (void*)daux.get());
  f.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, ldaux);
  f.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, saux);
  CUBLAS_CHECK(f.run(lt, 1.0f, dA, dB, 0.0f, dD, dD));
  // Backward: the same GEMM shape, its result times gelu'(aux of the same batch).
  LtGemm g(CUBLAS_COMPUTE_32F, false, false, m, n, k, m, k, m);
  g.batch(batch, sa, sb, sd);
  g.epilogue(CUBLASLT_EPILOGUE_DGELU_BGRAD);
  g.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void*)dbg.get());
  g.set(CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, sbias);
  g.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, (void*)daux.get());
  g.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, ldaux);
  g.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, saux);
  CUBLAS_CHECK(g.run(lt, 1.0f, dA, dB, 0.0f, dD2, dD2));
  const vector<float> D = dD.download(), aux = daux.download(), D2 = dD2.download(), bg = dbg.download();
  for (int b = 0; b < batch; ++b)
    for (int i = 0; i < m; ++i) {
      double sum = 0;
      for (int j = 0; j < n; ++j) {
        double ab = 0;
        for (int kk = 0; kk < k; ++kk) ab += (double)A[b * sa + kk * m + i] * B[b * sb + j * k + kk];
        const double pre = ab + bias[b * sbias + i];
        const double h = 1e-4, slope = (gelu_tanh(pre + h) - gelu_tanh(pre - h)) / (2 * h);
        ASSERT_NEAR(aux[b * saux + j * ldaux + i], pre, 1e-5) << b << " (" << i << "," << j << ")";
        ASSERT_NEAR(D[b * sd + j * m + i], gelu_tanh(pre), GELU_TOL) << b << " (" << i << "," << j << ")";
        ASSERT_NEAR(D2[b * sd + j * m + i], ab * slope, GELU_TOL) << b << " (" << i << "," << j << ")";
        sum += ab * slope;
      }
      ASSERT_NEAR(bg[b * sbias + i], sum, 10 * GELU_TOL) << "bias gradient, batch " << b << " row " << i;
    }
}

// The weight gradient dW = dy^T x with the bias gradient db = sum over tokens of dy fused: the
// tokens are the GEMM's k. BGRADB reduces op(B) (N values), BGRADA op(A) (M values).
TEST_F(SimtCublasLt, BgradaAndBgradbMatchReferenceLinearBackward) {
  VIT_REQUIRE_GPU();
  for (Lin s : {Lin{65, 31, 17}, Lin{130, 256, 768}}) {
    SCOPED_TRACE(testing::Message() << "T " << s.T << " in " << s.in << " out " << s.out);
    const vector<float> x = rnd((size_t)s.T * s.in, 61), dy = rnd((size_t)s.T * s.out, 62);
    vector<float> dw((size_t)s.out * s.in, 0.0f), db(s.out, 0.0f);
    vit::ref::linear_backward(dy.data(), x.data(), (const float*)nullptr, (float*)nullptr, dw.data(), db.data(), s.T,
                              s.in, s.out);
    DeviceBuffer<float> dx(x), ddy(dy), dD(dw.size()), dbias(s.out);
    // BGRADB: D (in x out) = x^T-as-(in x T) * (dy as (out x T))^T: D column-major = dW row-major.
    LtGemm gb(CUBLAS_COMPUTE_32F, false, true, s.in, s.out, s.T, s.in, s.out, s.in);
    gb.epilogue(CUBLASLT_EPILOGUE_BGRADB);
    gb.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void*)dbias.get());
    CUBLAS_CHECK(gb.run(lt, 1.0f, dx, ddy, 0.0f, dD, dD));
    EXPECT_TRUE(vit_test::allclose(dD.download(), dw, 1e-5, 1e-5)) << "BGRADB: dW";
    EXPECT_TRUE(vit_test::allclose(dbias.download(), db, 1e-5, 1e-5)) << "BGRADB: db";
    // BGRADA: D (out x in) = (dy as (out x T)) * (x as (in x T))^T: D column-major = dW^T.
    DeviceBuffer<float> dbias2(s.out);
    LtGemm ga(CUBLAS_COMPUTE_32F, false, true, s.out, s.in, s.T, s.out, s.in, s.out);
    ga.epilogue(CUBLASLT_EPILOGUE_BGRADA);
    ga.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void*)dbias2.get());
    CUBLAS_CHECK(ga.run(lt, 1.0f, ddy, dx, 0.0f, dD, dD));
    const vector<float> d = dD.download();
    vector<float> dwt(d.size());
    for (int o = 0; o < s.out; ++o)
      for (int i = 0; i < s.in; ++i) dwt[(size_t)o * s.in + i] = d[(size_t)i * s.out + o];
    EXPECT_TRUE(vit_test::allclose(dwt, dw, 1e-5, 1e-5)) << "BGRADA: dW";
    EXPECT_TRUE(vit_test::allclose(dbias2.download(), db, 1e-5, 1e-5)) << "BGRADA: db";
    // BGRADA with A = dy as stored, (T x out) row-major, and TRANSA = T: op(A) is the same
    // (out x T), so the same sums.
    DeviceBuffer<float> dbias3(s.out), dD3(dw.size());
    LtGemm gt(CUBLAS_COMPUTE_32F, true, true, s.out, s.in, s.T, s.out, s.in, s.out);
    const int32_t row = CUBLASLT_ORDER_ROW;
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(gt.a, CUBLASLT_MATRIX_LAYOUT_ORDER, &row, sizeof row));
    gt.epilogue(CUBLASLT_EPILOGUE_BGRADA);
    gt.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void*)dbias3.get());
    CUBLAS_CHECK(gt.run(lt, 1.0f, ddy, dx, 0.0f, dD3, dD3));
    EXPECT_TRUE(vit_test::allclose(dD3.download(), d, 1e-5, 1e-5)) << "BGRADA, row-major transposed A: dW^T";
    EXPECT_TRUE(vit_test::allclose(dbias3.download(), db, 1e-5, 1e-5)) << "BGRADA, row-major transposed A: db";
  }
}

// ---- reduced precision ---------------------------------------------------------------------
// BF16 A, B, C, D, bias and aux with FP32 compute: fc1 forward (GELU_AUX_BIAS) and its backward
// (DGELU_BGRAD). Inputs are BF16 values, the reference uses the same values in double, so the
// only errors are the FP32 accumulation (~1e-6) and one rounding of each output to BF16:
// |err| <= 2^-8 |value| + 1e-5 (2^-8 = 0.00391). Measured under simt (relative, over |value| >
// 1e-3), odd / basic shapes: D 0.00373 / 0.00389, aux 0.00378 / 0.00389, dpre 0.00384 / 0.00389,
// db 0.00339 / 0.00386: one rounding, nothing beyond it.
double max_rel_excess(const vector<float>& got, const vector<double>& ref, double rtol, double atol) {
  double worst = -1;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(got[i] - ref[i]) - (atol + rtol * std::fabs(ref[i])));
  return worst;
}
void check_bf16(cublasLtHandle_t lt, Lin s) {
  SCOPED_TRACE(testing::Message() << "BF16 T " << s.T << " in " << s.in << " out " << s.out);
  const vector<float> x = bf16_exact(rnd((size_t)s.T * s.in, 71)), w = bf16_exact(rnd((size_t)s.out * s.in, 72, -0.1, 0.1)),
                      b = bf16_exact(rnd(s.out, 73, -0.5, 0.5));
  vector<double> pre((size_t)s.T * s.out), y(pre.size());
  for (int t = 0; t < s.T; ++t)
    for (int o = 0; o < s.out; ++o) {
      double v = b[o];
      for (int i = 0; i < s.in; ++i) v += (double)x[(size_t)t * s.in + i] * w[(size_t)o * s.in + i];
      pre[(size_t)t * s.out + o] = v;
      y[(size_t)t * s.out + o] = gelu_tanh(v);
    }
  const int64_t ldaux = (s.out + 7) / 8 * 8;
  DeviceBuffer<__nv_bfloat16> dx(to_bf16(x)), dw(to_bf16(w)), db(to_bf16(b)), dy(pre.size()), daux((size_t)s.T * ldaux);
  LtGemm g(CUBLAS_COMPUTE_32F, true, false, s.out, s.T, s.in, s.in, s.in, s.out, CUDA_R_16BF, CUDA_R_16BF);
  g.epilogue(CUBLASLT_EPILOGUE_GELU_AUX_BIAS);
  g.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (const void*)db.get());
  g.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, (void*)daux.get());
  g.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, ldaux);
  CUBLAS_CHECK(g.run(lt, 1.0f, dw, dx, 0.0f, dy, dy));
  const vector<float> got = from_bf16(dy.download()), aux_s = from_bf16(daux.download());
  vector<float> aux(pre.size());
  for (int t = 0; t < s.T; ++t)
    for (int o = 0; o < s.out; ++o) aux[(size_t)t * s.out + o] = aux_s[t * ldaux + o];
  const double gelu_rtol = BF16_RTOL + (GELU_TOL > 1e-5 ? GELU_TOL : 0);
  EXPECT_TRUE(vit_test::allclose(got, y, gelu_rtol, 1e-5)) << "D = gelu(pre), BF16";
  EXPECT_TRUE(vit_test::allclose(aux, pre, BF16_RTOL, 1e-5)) << "aux = pre, BF16";
  EXPECT_LE(max_rel_excess(got, y, gelu_rtol, 1e-5), 0.0);

  // Backward through the same layer: dpre = (dY W2-like GEMM) * gelu'(aux), with the BF16 aux
  // just written as the saved pre-activation, and db = sum over tokens.
  const int H = s.out, O = s.in;  // reuse: hidden = out features, fc2 outputs = in
  const vector<float> dy2 = bf16_exact(rnd((size_t)s.T * O, 74)), w2 = bf16_exact(rnd((size_t)O * H, 75, -0.1, 0.1));
  vector<double> dpre((size_t)s.T * H), dbias(H, 0.0);
  for (int t = 0; t < s.T; ++t)
    for (int h = 0; h < H; ++h) {
      double v = 0;
      for (int o = 0; o < O; ++o) v += (double)dy2[(size_t)t * O + o] * w2[(size_t)o * H + h];
      const double a = aux[(size_t)t * H + h];  // the BF16 pre-activation the epilogue reads
      const double th = std::tanh(0.7978845608028654 * (a + 0.044715 * a * a * a));
      const double grad = 0.5 * (1 + th) + 0.5 * a * (1 - th * th) * 0.7978845608028654 * (1 + 3 * 0.044715 * a * a);
      dpre[(size_t)t * H + h] = v * grad;
      dbias[h] += v * grad;
    }
  DeviceBuffer<__nv_bfloat16> ddy2(to_bf16(dy2)), dw2(to_bf16(w2)), dD(dpre.size()), dbg(H);
  LtGemm bw(CUBLAS_COMPUTE_32F, false, false, H, s.T, O, H, O, H, CUDA_R_16BF, CUDA_R_16BF);
  bw.epilogue(CUBLASLT_EPILOGUE_DGELU_BGRAD);
  bw.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, (void*)daux.get());
  bw.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, ldaux);
  bw.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (void*)dbg.get());
  CUBLAS_CHECK(bw.run(lt, 1.0f, dw2, ddy2, 0.0f, dD, dD));
  EXPECT_TRUE(vit_test::allclose(from_bf16(dD.download()), dpre, gelu_rtol, 1e-5)) << "dpre, BF16";
  // The bias gradient sums FP32 values and rounds once: 2^-8 of the sum, plus FP32 summation error.
  EXPECT_TRUE(vit_test::allclose(from_bf16(dbg.download()), dbias, gelu_rtol, 1e-4)) << "db, BF16";
}

TEST_F(SimtCublasLt, Bf16InputsAndOutputsWithinOneRounding) {
  VIT_REQUIRE_GPU();
  check_bf16(lt, {65, 31, 17});
  check_bf16(lt, {130, 256, 1024});
}

// FP16 and BF16 inputs with FP32 C/D: exact inputs, FP32 accumulation, so FP32 accuracy; and FP16
// in, FP16 out.
TEST_F(SimtCublasLt, HalfAndBf16InputsFp32Output) {
  VIT_REQUIRE_GPU();
  const int m = 13, n = 7, k = 21;
  for (cudaDataType t : {CUDA_R_16F, CUDA_R_16BF}) {
    const vector<float> A = bf16_exact(rnd(m * k, 81)), B = bf16_exact(rnd(k * n, 82));  // exact in both
    const Stored sA(m, k, m, false, A), sB(k, n, k, false, B);
    const vector<double> ref = ref_gemm(false, false, m, n, k, 1.0, sA, sB, 0.0, nullptr);
    vector<uint16_t> hA(A.size()), hB(B.size());
    for (size_t i = 0; i < A.size(); ++i) {
      if (t == CUDA_R_16F) {
        __half h = __float2half(A[i]);
        memcpy(&hA[i], &h, 2);
      } else {
        __nv_bfloat16 h = __float2bfloat16(A[i]);
        memcpy(&hA[i], &h, 2);
      }
    }
    for (size_t i = 0; i < B.size(); ++i) {
      if (t == CUDA_R_16F) {
        __half h = __float2half(B[i]);
        memcpy(&hB[i], &h, 2);
      } else {
        __nv_bfloat16 h = __float2bfloat16(B[i]);
        memcpy(&hB[i], &h, 2);
      }
    }
    DeviceBuffer<uint16_t> dA(hA), dB(hB);
    DeviceBuffer<float> dD(m * n);
    LtGemm g(CUBLAS_COMPUTE_32F, false, false, m, n, k, m, k, m, t, CUDA_R_32F);
    CUBLAS_CHECK(g.run(lt, 1.0f, dA, dB, 0.0f, dD, dD));
    EXPECT_TRUE(vit_test::allclose(dD.download(), ref, 1e-5, 1e-6)) << (t == CUDA_R_16F ? "FP16" : "BF16");
    if (t == CUDA_R_16F) {
      // FP16 C/D: one rounding to 11 significant bits, |err| <= 2^-11 |value| (+ accumulation).
      DeviceBuffer<__half> dH(m * n);
      LtGemm h(CUBLAS_COMPUTE_32F, false, false, m, n, k, m, k, m, CUDA_R_16F, CUDA_R_16F);
      CUBLAS_CHECK(h.run(lt, 1.0f, dA, dB, 0.0f, dH, dH));
      const vector<__half> got = dH.download();
      vector<float> gf(got.size());
      for (size_t i = 0; i < got.size(); ++i) gf[i] = __half2float(got[i]);
      EXPECT_TRUE(vit_test::allclose(gf, ref, 1.0 / 2048 + 1e-6, 1e-5)) << "FP16 output";
    }
  }
}

// CUBLAS_COMPUTE_32F_FAST_TF32 on FP32 data: within TF32's 2^-11 relative input rounding of the
// FP32 result (|err| <= sum_k |a||b| 2 * 2^-11); under simt exactly the GEMM of the TF32-rounded
// inputs, which differs visibly from the FP32 one.
TEST_F(SimtCublasLt, Tf32ComputeRoundsInputs) {
  VIT_REQUIRE_GPU();
  const int m = 16, n = 8, k = 64;
  const vector<float> A = rnd(m * k, 91), B = rnd(k * n, 92);
  const Stored sA(m, k, m, false, A), sB(k, n, k, false, B);
  const vector<double> ref = ref_gemm(false, false, m, n, k, 1.0, sA, sB, 0.0, nullptr);
  DeviceBuffer<float> dA(A), dB(B), dD(m * n);
  LtGemm g(CUBLAS_COMPUTE_32F_FAST_TF32, false, false, m, n, k, m, k, m);
  CUBLAS_CHECK(g.run(lt, 1.0f, dA, dB, 0.0f, dD, dD));
  const vector<float> d = dD.download();
  EXPECT_TRUE(vit_test::allclose(d, ref, 0.0, k * 2.0 / 2048)) << "within TF32 rounding of FP32";
#if defined(VIT_SIMT)
  auto tf32 = [](float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x1000u) & 0xffffe000u;
    memcpy(&x, &u, 4);
    return x;
  };
  vector<float> At = A, Bt = B;
  for (float& x : At) x = tf32(x);
  for (float& x : Bt) x = tf32(x);
  const vector<double> ref_t = ref_gemm(false, false, m, n, k, 1.0, Stored(m, k, m, false, At),
                                        Stored(k, n, k, false, Bt), 0.0, nullptr);
  EXPECT_TRUE(vit_test::allclose(d, ref_t, 1e-5, 1e-5)) << "the GEMM of the TF32-rounded inputs";
  EXPECT_FALSE(vit_test::allclose(d, ref, 1e-5, 1e-5)) << "TF32 rounding must be visible";
#endif
}

// ---- heuristics and workspace ----------------------------------------------------------------
TEST_F(SimtCublasLt, HeuristicsRespectWorkspacePreference) {
  VIT_REQUIRE_GPU();
  const int m = 64, n = 48, k = 512;
  const vector<float> A = rnd(m * k, 101), B = rnd(k * n, 102);
  const Stored sA(m, k, m, false, A), sB(k, n, k, false, B);
  const vector<double> ref = ref_gemm(false, false, m, n, k, 1.0, sA, sB, 0.0, nullptr);
  DeviceBuffer<float> dA(A), dB(B), dD(m * n);
  const size_t max_ws = 4 << 20;
  DeviceBuffer<unsigned char> ws(max_ws);
  ws.zero();  // (simt fills fresh memory with 0xFF: start from zeros so the check below can fail)
  LtGemm g(CUBLAS_COMPUTE_32F, false, false, m, n, k, m, k, m);
  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  cublasLtMatmulHeuristicResult_t res[8];
  int count = -1;
  // No workspace allowed (the default): every algorithm needs none.
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, g.op, g.a, g.b, g.c, g.d, pref, 8, res, &count));
  ASSERT_GE(count, 1);
  for (int i = 0; i < count; ++i) EXPECT_EQ(res[i].workspaceSize, 0u) << i;
  // With 4 MiB allowed: none needs more; each runs with exactly what it asked for.
  const uint64_t lim = max_ws;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &lim, sizeof lim));
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, g.op, g.a, g.b, g.c, g.d, pref, 8, res, &count));
  ASSERT_GE(count, 1);
  ASSERT_LE(count, 8);
  int with_workspace = 0;
  for (int i = 0; i < count; ++i) {
    EXPECT_EQ(res[i].state, CUBLAS_STATUS_SUCCESS);
    EXPECT_LE(res[i].workspaceSize, max_ws);
    EXPECT_GT(res[i].wavesCount, 0.0f);
    CUBLAS_CHECK(g.run(lt, 1.0f, dA, dB, 0.0f, dD, dD, &res[i].algo, ws, res[i].workspaceSize));
    EXPECT_TRUE(vit_test::allclose(dD.download(), ref, 1e-5, 1e-5)) << "algo " << i;
    if (res[i].workspaceSize > 0) {
      ++with_workspace;
#if defined(VIT_SIMT)
      // simt leaves NaN bytes in the workspace an algorithm used: nothing may be kept there.
      const vector<unsigned char> w = ws.download();
      for (size_t b = 0; b < res[i].workspaceSize; ++b) ASSERT_EQ(w[b], 0xff) << "workspace byte " << b;
      ws.zero();
#endif
      // Less workspace than the algorithm needs: refused ("workspaceSizeInBytes is less than
      // workspace required by configured algo").
      EXPECT_EQ(g.run(lt, 1.0f, dA, dB, 0.0f, dD, dD, &res[i].algo, ws, res[i].workspaceSize - 1),
                CUBLAS_STATUS_INVALID_VALUE);
    }
  }
#if defined(VIT_SIMT)
  EXPECT_GE(with_workspace, 1) << "simt offers a split-K algorithm for k = 512 when workspace is allowed";
  // A workspace not 256-byte aligned is refused.
  EXPECT_EQ(g.run(lt, 1.0f, dA, dB, 0.0f, dD, dD, nullptr, ws.get() + 16, 1024), CUBLAS_STATUS_INVALID_VALUE);
#else
  RecordProperty("algorithms_with_workspace", with_workspace);
#endif
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(lt, g.op, g.a, g.b, g.c, g.d, pref, 0, res, &count), CUBLAS_STATUS_INVALID_VALUE);
  CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
}

TEST_F(SimtCublasLt, HeuristicsRefuseUnsupportedTypes) {
  VIT_REQUIRE_GPU();
  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  cublasLtMatmulHeuristicResult_t res[4];
  int count = -1;
  // FP32 A/B with a BF16 D is not in cuBLASLt's table.
  LtGemm g(CUBLAS_COMPUTE_32F, false, false, 16, 16, 16, 16, 16, 16, CUDA_R_32F, CUDA_R_16BF);
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(lt, g.op, g.a, g.b, g.c, g.d, pref, 4, res, &count), CUBLAS_STATUS_NOT_SUPPORTED);
  // The _FAST_TF32 compute type takes FP32 data only.
  LtGemm h(CUBLAS_COMPUTE_32F_FAST_TF32, false, false, 16, 16, 16, 16, 16, 16, CUDA_R_16BF, CUDA_R_16BF);
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(lt, h.op, h.a, h.b, h.c, h.d, pref, 4, res, &count), CUBLAS_STATUS_NOT_SUPPORTED);
  CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
}

// ---- pointer modes ---------------------------------------------------------------------------
TEST_F(SimtCublasLt, DeviceScalarsAndAlphaVector) {
  VIT_REQUIRE_GPU();
  const int m = 6, n = 4, k = 5;
  const vector<float> A = rnd(m * k, 111), B = rnd(k * n, 112), C = rnd(m * n, 113), alpha = rnd(m, 114);
  const Stored sA(m, k, m, false, A), sB(k, n, k, false, B), sC(m, n, m, false, C);
  DeviceBuffer<float> dA(A), dB(B), dC(C), dD(m * n), dalpha(alpha), dscal(vector<float>{2.0f, -1.0f});
  LtGemm g(CUBLAS_COMPUTE_32F, false, false, m, n, k, m, k, m);
  g.set(CUBLASLT_MATMUL_DESC_POINTER_MODE, (int32_t)CUBLASLT_POINTER_MODE_DEVICE);
  CUBLAS_CHECK(cublasLtMatmul(lt, g.op, dscal.get(), dA, g.a, dB, g.b, dscal.get() + 1, dC, g.c, dD, g.d, nullptr,
                              nullptr, 0, 0));
  EXPECT_TRUE(vit_test::allclose(dD.download(), ref_gemm(false, false, m, n, k, 2.0, sA, sB, -1.0, &sC), 1e-5, 1e-5))
      << "device alpha/beta";
  // Row i of D scaled by alpha[i]; beta a host scalar.
  g.set(CUBLASLT_MATMUL_DESC_POINTER_MODE, (int32_t)CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST);
  const float beta = 0.5f;
  CUBLAS_CHECK(cublasLtMatmul(lt, g.op, dalpha.get(), dA, g.a, dB, g.b, &beta, dC, g.c, dD, g.d, nullptr, nullptr, 0, 0));
  const vector<double> ab = ref_gemm(false, false, m, n, k, 1.0, sA, sB, 0.0, nullptr);
  vector<double> expect(m * n);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) expect[j * m + i] = alpha[i] * ab[j * m + i] + 0.5 * C[j * m + i];
  EXPECT_TRUE(vit_test::allclose(dD.download(), expect, 1e-5, 1e-5)) << "alpha vector";
}

// ---- argument errors -------------------------------------------------------------------------
TEST_F(SimtCublasLt, ArgumentErrors) {
  VIT_REQUIRE_GPU();
  const int m = 17, n = 8, k = 8;
  DeviceBuffer<float> a(256), b(256), d(256), bias(32), aux(512);
  const float one = 1.0f, zero = 0.0f;
  LtGemm g(CUBLAS_COMPUTE_32F, false, false, m, n, k, m, k, m);
  // No handle (documented: NOT_INITIALIZED).
  EXPECT_EQ(cublasLtMatmul(nullptr, g.op, &one, a, g.a, b, g.b, &zero, d, g.c, d, g.d, nullptr, nullptr, 0, 0),
            CUBLAS_STATUS_NOT_INITIALIZED);
  // Shapes that do not chain: A is 17 x 8, B 9 x 8.
  cublasLtMatrixLayout_t b9;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b9, CUDA_R_32F, 9, n, 9));
  EXPECT_REFUSED(cublasLtMatmul(lt, g.op, &one, a, g.a, b, b9, &zero, d, g.c, d, g.d, nullptr, nullptr, 0, 0),
                 CUBLAS_STATUS_INVALID_VALUE);
  CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(b9));
  // An epilogue without the pointer it needs.
  g.epilogue(CUBLASLT_EPILOGUE_BIAS);
  EXPECT_REFUSED(g.run(lt, 1.0f, a, b, 0.0f, d, d), CUBLAS_STATUS_INVALID_VALUE);
  g.epilogue(CUBLASLT_EPILOGUE_GELU_AUX);
  EXPECT_REFUSED(g.run(lt, 1.0f, a, b, 0.0f, d, d), CUBLAS_STATUS_INVALID_VALUE);
  // GELU aux ld must be a multiple of 8 and >= the rows of D (17).
  g.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, (void*)aux.get());
  g.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, (int64_t)20);
  EXPECT_REFUSED(g.run(lt, 1.0f, a, b, 0.0f, d, d), CUBLAS_STATUS_INVALID_VALUE);
  g.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, (int64_t)16);
  EXPECT_REFUSED(g.run(lt, 1.0f, a, b, 0.0f, d, d), CUBLAS_STATUS_INVALID_VALUE);
  g.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, (int64_t)24);
  CUBLAS_CHECK(g.run(lt, 1.0f, a, b, 0.0f, d, d));
  // The ReLU bit mask's ld is in bits, a multiple of 128.
  g.epilogue(CUBLASLT_EPILOGUE_RELU_AUX);
  EXPECT_REFUSED(g.run(lt, 1.0f, a, b, 0.0f, d, d), CUBLAS_STATUS_INVALID_VALUE);
  g.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, (int64_t)128);
  CUBLAS_CHECK(g.run(lt, 1.0f, a, b, 0.0f, d, d));
  // A bias-gradient epilogue without its output.
  g.epilogue(CUBLASLT_EPILOGUE_BGRADB);
  EXPECT_REFUSED(g.run(lt, 1.0f, a, b, 0.0f, d, d), CUBLAS_STATUS_INVALID_VALUE);
  // ld below the rows of a column-major matrix: refused when the layout is made or when used.
  cublasLtMatrixLayout_t bad;
  g.epilogue(CUBLASLT_EPILOGUE_DEFAULT);
  if (cublasLtMatrixLayoutCreate(&bad, CUDA_R_32F, m, k, m - 1) == CUBLAS_STATUS_SUCCESS) {
    EXPECT_REFUSED(cublasLtMatmul(lt, g.op, &one, a, bad, b, g.b, &zero, d, g.c, d, g.d, nullptr, nullptr, 0, 0),
                   CUBLAS_STATUS_INVALID_VALUE);
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(bad));
  }
#if defined(VIT_SIMT)
  // simt: the bias must have D's type (cublasLt.h: "Bias vector elements are the same type as the
  // elements of output matrix (Dtype)", exceptions only for INT8/FP8).
  g.epilogue(CUBLASLT_EPILOGUE_BIAS);
  g.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (const void*)bias.get());
  g.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, (int32_t)CUDA_R_16BF);
  EXPECT_EQ(g.run(lt, 1.0f, a, b, 0.0f, d, d), CUBLAS_STATUS_NOT_SUPPORTED);
#endif
}

// A matrix that starts 4 bytes into an allocation runs when the heuristic is told so
// (MIN_ALIGNMENT_A_BYTES = 4): the algorithm it returns does not assume more.
TEST_F(SimtCublasLt, AlignmentPreferenceAdmitsOffsetPointers) {
  VIT_REQUIRE_GPU();
  const int m = 16, n = 16, k = 16;
  const vector<float> A = rnd(m * k + 1, 121), B = rnd(k * n, 122);
  const Stored sA(m, k, m, false, vector<float>(A.begin() + 1, A.end())), sB(k, n, k, false, B);
  DeviceBuffer<float> dA(A), dB(B), dD(m * n);
  LtGemm g(CUBLAS_COMPUTE_32F, false, false, m, n, k, m, k, m);
  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint32_t four = 4;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &four, sizeof four));
  cublasLtMatmulHeuristicResult_t res;
  int count = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, g.op, g.a, g.b, g.c, g.d, pref, 1, &res, &count));
  ASSERT_EQ(count, 1);
  CUBLAS_CHECK(g.run(lt, 1.0f, dA.get() + 1, dB, 0.0f, dD, dD, &res.algo, nullptr, 0));
  EXPECT_TRUE(vit_test::allclose(dD.download(), ref_gemm(false, false, m, n, k, 1.0, sA, sB, 0.0, nullptr), 1e-5, 1e-5));
  CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
}

#if defined(VIT_SIMT)
// A pointer less aligned than the algorithm's vector accesses: a misaligned-address fault on a
// GPU, an abort naming the matrix here.
void misaligned_matmul() {
  cublasLtHandle_t lt;
  CUBLAS_CHECK(cublasLtCreate(&lt));
  DeviceBuffer<float> a(1024), b(1024), d(1024);
  a.upload(vector<float>(1024, 1.0f));
  b.upload(vector<float>(1024, 1.0f));
  LtGemm g(CUBLAS_COMPUTE_32F, false, false, 16, 16, 16, 16, 16, 16);
  (void)g.run(lt, 1.0f, a.get() + 1, b, 0.0f, d, d);  // ld 16 floats: 16-byte vectors assumed
}
TEST(SimtCublasLtDeath, MisalignedMatrixAborts) {
  EXPECT_DEATH(misaligned_matmul(), "cublasLtMatmul: matrix A of batch 0 .* is not 16-byte aligned");
}
// The bias has one element per row of D (M = 24 here): a bias of N = 8 elements is read past its
// end, which aborts naming it (on a GPU: garbage added, or an illegal address).
void short_bias_matmul() {
  cublasLtHandle_t lt;
  CUBLAS_CHECK(cublasLtCreate(&lt));
  DeviceBuffer<float> a(24 * 4), b(4 * 8), d(24 * 8), bias(8);
  LtGemm g(CUBLAS_COMPUTE_32F, false, false, 24, 8, 4, 24, 4, 24);
  g.epilogue(CUBLASLT_EPILOGUE_BIAS);
  g.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, (const void*)bias.get());
  (void)g.run(lt, 1.0f, a, b, 0.0f, d, d);
}
TEST(SimtCublasLtDeath, BiasShorterThanRowsOfDAborts) {
  EXPECT_DEATH(short_bias_matmul(), "cublasLtMatmul: the bias vector \\(24 elements\\) overruns");
}
#endif

}  // namespace
