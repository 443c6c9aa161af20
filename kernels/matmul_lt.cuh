// kernels/matmul_lt.cuh — the GEMMs of the transformer blocks through cuBLASLt, in each
// --precision: FP32 operands with FP32 compute (fp32), FP32 operands on TF32 tensor cores (tf32),
// BF16 operands with FP32 accumulation (bf16). One general call (lt_matmul) with the epilogues
// the model uses, and the nn.Linear wrappers that the tests and benchmarks call.
//
//   lt_matmul:  D = epilogue(op(A) op(B) + beta D)   column-major, for each of `batch` matrices
//               (strided batches: the weight gradients of all layers in one call)
//   epilogues:  Bias         D += bias[row]                          (qkv, head)
//               GeluAuxBias  aux = AB + bias; D = gelu_tanh(aux)     (FC1 forward, tanh GELU)
//               Dgelu        D = AB * gelu_tanh'(aux)                (FC2's dx: the GELU backward)
//   The bias and aux have D's type (cuBLASLt's rule for BF16 D; bf16 mode passes the BF16 copy
//   of the bias). cuBLASLt's GELU is the tanh approximation (simt/cublaslt.cpp cites the form):
//   an erf GELU (vit-b16) keeps kernels/gelu.cuh.
//
//   matmul_forward_bf16 / matmul_backward_bf16: nn.Linear in bf16 (FP32 outputs), as before.
//
// Row-major y = x W^T is the column-major D (out x N) = op_T(W as (in x out)) * x as (in x N):
// M = out, K = in (the same mapping as kernels/matmul.cuh).
// Why these epilogues and no others: BIAS / GELU_AUX_BIAS / DGELU compute exactly our ops (bias
// add in FP32 before D is rounded; the tanh GELU and its derivative at the saved pre-activation).
// The *_BGRAD epilogues WRITE the bias gradient while our gradients accumulate (+=) over
// micro-batches, so bias gradients are column sums in kernels/reduce.cuh (fixed order: the same
// bits every run, on every GPU and under simt).
// Algorithms: cuBLASLt's heuristic with no workspace (nothing to plan; a split-K algorithm,
// which would need one, is never picked), queried once per GEMM description and cached (lt_plan).
#pragma once

#include <cublasLt.h>

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "common/error.h"
#include "common/model.h"
#include "kernels/common.cuh"
#include "kernels/matmul.cuh"
#include "kernels/precision.cuh"
#include "kernels/reduce.cuh"

namespace vit {

// ---- cuBLASLt GEMMs ---------------------------------------------------------------------------

enum class LtEpilogue { Default, Bias, GeluAuxBias, Dgelu };

// One cublasLtMatmul, in cuBLASLt's (column-major) terms. A, B: `ab` type; D (and C == D, bias,
// aux): `d` type. Strides in elements between the matrices of a batch.
struct LtCall {
  bool transa = false, transb = false;
  int m = 0, n = 0, k = 0;
  const void* A = nullptr;
  int lda = 0;
  long long stride_a = 0;
  const void* B = nullptr;
  int ldb = 0;
  long long stride_b = 0;
  void* D = nullptr;
  int ldd = 0;
  long long stride_d = 0;
  int batch = 1;
  float beta = 0.0f;
  LtEpilogue epilogue = LtEpilogue::Default;
  const void* bias = nullptr;  // Bias, GeluAuxBias: m values of D's type
  void* aux = nullptr;         // GeluAuxBias (written), Dgelu (read): m x n of D's type, ld ldaux
  int ldaux = 0;
};

template <class T> inline cudaDataType_t lt_type();
template <> inline cudaDataType_t lt_type<float>() { return CUDA_R_32F; }
template <> inline cudaDataType_t lt_type<bf16>() { return CUDA_R_16BF; }

// Alignment of p in bytes, capped at 16 (what vector loads use).
inline uint32_t lt_alignment(const void* p) {
  const uintptr_t a = (uintptr_t)p;
  uint32_t r = 16;
  while (r > 1 && (a % r) != 0) r /= 2;
  return r;
}

// Whether cuBLASLt's GELU_AUX / DGELU epilogues can take an aux matrix of `rows` rows: its
// leading dimension must be a multiple of 8 (cuBLASLt's documented rule). Else the caller uses
// kernels/gelu.cuh.
inline bool lt_gelu_aux_ok(int rows) { return rows % 8 == 0; }

// One GEMM description's cuBLASLt objects and algorithm, made on first use and kept (per
// process): the descriptors, layouts and heuristic query cost tens of microseconds of host time,
// about as much as a small GEMM. The key holds everything the objects and the algorithm depend
// on (precision, types, transposes, shape, leading dimensions, batch and strides, epilogue, and
// the operands' alignment, passed to the heuristic as MIN_ALIGNMENT_*_BYTES so the algorithm
// never assumes more than the pointers have). The bias and aux pointers are set at every call.
struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulAlgo_t algo;
};

inline LtPlan& lt_plan(cublasLtHandle_t lt, Precision prec, cudaDataType_t ab, cudaDataType_t dt,
                       const LtCall& c) {
  typedef std::array<int64_t, 22> Key;
  static std::mutex mu;
  // Kept to the end of the process (a few per layer type), never destructed: the descriptors
  // stay reachable, so LeakSanitizer does not call them leaked at exit.
  static std::map<Key, LtPlan>& plans = *new std::map<Key, LtPlan>;
  const uint32_t align_a = lt_alignment(c.A), align_b = lt_alignment(c.B),
                 align_d = lt_alignment(c.D);
  const Key key = {(int64_t)prec, ab, dt, c.transa, c.transb, c.m, c.n, c.k, c.lda, c.ldb, c.ldd,
                   c.stride_a, c.stride_b, c.stride_d, c.batch, (int64_t)c.epilogue, c.ldaux,
                   align_a, align_b, align_d, c.aux ? lt_alignment(c.aux) : 0,
                   c.bias ? lt_alignment(c.bias) : 0};
  std::lock_guard<std::mutex> lock(mu);
  auto it = plans.find(key);
  if (it != plans.end()) return it->second;
  LtPlan p;
  // TF32 mode: FP32 data, products on TF32 tensor cores; otherwise plain FP32 compute (BF16
  // operands are multiplied exactly and accumulated in FP32).
  const cublasComputeType_t compute =
      prec == Precision::Tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, compute, CUDA_R_32F));
  const cublasOperation_t ta = c.transa ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = c.transb ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  const cublasLtEpilogue_t ep = c.epilogue == LtEpilogue::Bias ? CUBLASLT_EPILOGUE_BIAS
                                : c.epilogue == LtEpilogue::GeluAuxBias
                                    ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS
                                : c.epilogue == LtEpilogue::Dgelu ? CUBLASLT_EPILOGUE_DGELU
                                                                  : CUBLASLT_EPILOGUE_DEFAULT;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
  // (the query checks the epilogue's inputs; every call sets its own pointers)
  if (c.bias)
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &c.bias,
                                                sizeof c.bias));
  if (c.aux) {
    const int64_t ldaux = c.ldaux;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                                &c.aux, sizeof c.aux));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                                                &ldaux, sizeof ldaux));
  }
  // Layouts as stored: op(A) is m x k, so A is (transa ? k x m : m x k).
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.la, ab, c.transa ? c.k : c.m, c.transa ? c.m : c.k, c.lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.lb, ab, c.transb ? c.n : c.k, c.transb ? c.k : c.n, c.ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.ld, dt, c.m, c.n, c.ldd));
  if (c.batch > 1) {
    const int32_t count = c.batch;
    const int64_t sa = c.stride_a, sb = c.stride_b, sd = c.stride_d;
    for (auto [l, s] : {std::make_pair(p.la, sa), std::make_pair(p.lb, sb), std::make_pair(p.ld, sd)}) {
      CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                                    sizeof count));
      CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
          l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &s, sizeof s));
    }
  }
  // No workspace (the preference's default): nothing to plan, and no split-K algorithm.
  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                    &align_a, sizeof align_a));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                    &align_b, sizeof align_b));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                    &align_d, sizeof align_d));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                    &align_d, sizeof align_d));
  cublasLtMatmulHeuristicResult_t res;
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.la, p.lb, p.ld, p.ld, pref, 1, &res,
                                              &found));
  cublasLtMatmulPreferenceDestroy(pref);
  if (found < 1)
    throw Error(std::string("cuBLASLt has no ") + precision_name(prec) + " algorithm for a " +
                std::to_string(c.m) + "x" + std::to_string(c.n) + "x" + std::to_string(c.k) +
                " GEMM on this GPU: try another --precision");
  p.algo = res.algo;
  return plans.emplace(key, p).first->second;
}

// D = epilogue(op(A) op(B) + beta D): A, B of type AB (float or bf16), D of type DT.
template <class AB, class DT>
inline void lt_matmul(cublasLtHandle_t lt, cudaStream_t st, Precision prec, const LtCall& c) {
  if (c.m <= 0 || c.n <= 0 || c.k <= 0 || c.batch < 1)
    throw Error("lt_matmul: bad GEMM shape " + std::to_string(c.m) + "x" + std::to_string(c.n) +
                "x" + std::to_string(c.k) + " (batch " + std::to_string(c.batch) + ")");
  const bool needs_bias = c.epilogue == LtEpilogue::Bias || c.epilogue == LtEpilogue::GeluAuxBias;
  const bool needs_aux = c.epilogue == LtEpilogue::GeluAuxBias || c.epilogue == LtEpilogue::Dgelu;
  if (needs_bias != (c.bias != nullptr) || needs_aux != (c.aux != nullptr))
    throw Error("lt_matmul: the epilogue's bias/aux pointers do not match the epilogue");
  LtPlan& p = lt_plan(lt, prec, lt_type<AB>(), lt_type<DT>(), c);
  if (c.bias)
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &c.bias,
                                                sizeof c.bias));
  if (c.aux)
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                                &c.aux, sizeof c.aux));
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasLtMatmul(lt, p.desc, &alpha, c.A, p.la, c.B, p.lb, &c.beta, c.D, p.ld, c.D,
                              p.ld, &p.algo, nullptr, 0, st));
}

// D (m x n, ld ldd) FP32 = op(A) op(B) + beta D (C == D), A/B BF16 column-major, FP32 compute;
// bias (m) FP32 through the BIAS epilogue when given.
inline void lt_gemm_bf16(cublasLtHandle_t lt, cudaStream_t st, bool transa, bool transb, int m,
                         int n, int k, const bf16* A, int lda, const bf16* B, int ldb, float* D,
                         int ldd, float beta, const float* bias) {
  LtCall c;
  c.transa = transa;
  c.transb = transb;
  c.m = m;
  c.n = n;
  c.k = k;
  c.A = A;
  c.lda = lda;
  c.B = B;
  c.ldb = ldb;
  c.D = D;
  c.ldd = ldd;
  c.beta = beta;
  c.bias = bias;
  c.epilogue = bias ? LtEpilogue::Bias : LtEpilogue::Default;
  lt_matmul<bf16, float>(lt, st, Precision::Bf16, c);
}
// y (N, out) FP32 = x16 (N, in; row stride ldx) w16^T + b. y must not alias x16.
inline void matmul_forward_bf16(cublasLtHandle_t lt, cudaStream_t st, const bf16* x, int ldx,
                                const bf16* w, const float* b, float* y, int N, int in, int out) {
  matmul_check_shapes("matmul_forward_bf16", N, in, out, ldx);
  if (N == 0) return;
  // D = y^T (out x N, ld out) = op_T(W as (in x out), ld in) * x^T (in x N, ld ldx).
  lt_gemm_bf16(lt, st, true, false, out, N, in, w, in, x, ldx, y, out, 0.0f, b);
}

// dx (N, in; row stride lddx) = dy16 w16 (when dx), dw (out, in) += dy16^T x16,
// db (out) += sum_rows dy (when db; dy is the FP32 gradient dy16 was rounded from).
// scratch: matmul_scratch_floats(N, out) floats (only used for db).
inline void matmul_backward_bf16(cublasLtHandle_t lt, cudaStream_t st, const bf16* dy16,
                                 const float* dy, const bf16* x, int ldx, const bf16* w,
                                 float* dx, int lddx, float* dw, float* db, float* scratch, int N,
                                 int in, int out) {
  matmul_check_shapes("matmul_backward_bf16", N, in, out, ldx);
  if (dx && lddx < in) throw Error("matmul_backward_bf16: dx row stride smaller than in");
  if (N == 0) return;
  // dx^T (in x N, ld lddx) = W as stored (in x out, ld in) * dy^T (out x N, ld out).
  if (dx) lt_gemm_bf16(lt, st, false, false, in, N, out, w, in, dy16, out, dx, lddx, 0.0f, nullptr);
  // dw^T (in x out, ld in) += x^T (in x N, ld ldx) * op_T(dy^T (out x N, ld out)).
  lt_gemm_bf16(lt, st, false, true, in, out, N, x, ldx, dy16, out, dw, in, 1.0f, nullptr);
  if (db) column_sum_accumulate(st, dy, N, out, out, db, scratch);
}

}  // namespace vit
