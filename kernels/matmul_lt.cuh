// kernels/matmul_lt.cuh — nn.Linear in BF16 mixed precision (--precision bf16): cuBLASLt GEMMs
// on BF16 operands with FP32 compute and FP32 outputs (the FP32 -> BF16 conversion of what
// feeds them is kernels/precision.cuh's). The FP32 twins are kernels/matmul.cuh's.
//
//   forward:  y (N, out) FP32 = x16 (N, in; row stride ldx) W16^T + b      (=)
//             x16, W16 (out, in) BF16; b (out) FP32 or nullptr, added by cuBLASLt's BIAS
//             epilogue (in FP32, before D is stored; the bias must have D's type: FP32).
//   backward: dx (N, in; row stride lddx) FP32 = dy16 W16                  (=, when dx)
//             dw (out, in) FP32 += dy16^T x16                             (+=, C == D, beta 1)
//             db (out) FP32 += column sums of dy (the FP32 gradient)      (+=, when db)
//
// Same column-major mapping as kernels/matmul.cuh: the row-major y = x W^T is the column-major
// D (out x N) = op_T(W as (in x out)) * x as (in x N); M = out, K = in.
// Why FP32 outputs: the GEMM results feed FP32 consumers (residual adds, attention's FP32 math,
// LayerNorm/GELU backward), so one rounding to BF16 would only lose bits; the BF16 savings are
// in the operands, which every GEMM reads (and the backward reads again).
// Which epilogues: BIAS in the forward (cuBLASLt adds exactly b[row] in FP32: our op). The
// *_BGRAD epilogues WRITE the bias gradient and our parameter gradients accumulate (+=), so db
// stays kernels/reduce.cuh's deterministic two-stage column sum (fixed chunks added in a fixed
// order, no float atomics: the same bits every run, on every GPU and under simt) over the FP32
// dy; GELU stays a handwritten kernel (cuBLASLt's GELU is the tanh form, which vit-b16's erf
// GELU cannot use, and simt's tanh emulation is not yet confirmed on hardware: docs/simt.md).
// Algorithms: cuBLASLt's heuristic with no workspace (nothing to plan; a split-K algorithm,
// which would need one, is never picked), queried once per GEMM shape and cached (lt_plan).
#pragma once

#include <cublasLt.h>

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "common/error.h"
#include "kernels/common.cuh"
#include "kernels/matmul.cuh"
#include "kernels/precision.cuh"
#include "kernels/reduce.cuh"

namespace vit {

// ---- cuBLASLt GEMMs ---------------------------------------------------------------------------

// One GEMM shape's cuBLASLt objects and algorithm, made on first use and kept (per process):
// the descriptors, layouts and heuristic query cost tens of microseconds of host time, about
// as much as a small GEMM, and a step makes ~12 GEMM calls per layer. The key holds everything
// the objects and the algorithm depend on: transposes, shape, leading dimensions, whether a
// bias epilogue runs, and the operands' alignment (passed to the heuristic as
// MIN_ALIGNMENT_*_BYTES, so the algorithm never assumes more than the pointers have). The bias
// pointer is set on the descriptor at every call.
struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulAlgo_t algo;
};

// Alignment of p in bytes, capped at 16 (what vector loads use).
inline uint32_t lt_alignment(const void* p) {
  const uintptr_t a = (uintptr_t)p;
  uint32_t r = 16;
  while (r > 1 && (a % r) != 0) r /= 2;
  return r;
}

inline LtPlan& lt_plan(cublasLtHandle_t lt, bool transa, bool transb, int m, int n, int k,
                       int lda, int ldb, int ldd, const float* bias, uint32_t align_a,
                       uint32_t align_b, uint32_t align_d) {
  typedef std::array<int64_t, 12> Key;
  static std::mutex mu;
  // Kept to the end of the process (a few per layer type), never destructed: the descriptors
  // stay reachable, so LeakSanitizer does not call them leaked at exit.
  static std::map<Key, LtPlan>& plans = *new std::map<Key, LtPlan>;
  const Key key = {transa, transb, m, n, k, lda, ldb, ldd, bias != nullptr, align_a, align_b,
                   align_d};
  std::lock_guard<std::mutex> lock(mu);
  auto it = plans.find(key);
  if (it != plans.end()) return it->second;
  LtPlan p;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = transa ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  const cublasLtEpilogue_t ep = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
  if (bias)  // (the query checks the epilogue's inputs; every call sets its own pointer)
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                sizeof bias));
  // Layouts as stored: op(A) is m x k, so A is (transa ? k x m : m x k).
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.la, CUDA_R_16BF, transa ? k : m, transa ? m : k, lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.lb, CUDA_R_16BF, transb ? n : k, transb ? k : n, ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.ld, CUDA_R_32F, m, n, ldd));
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
    throw Error("cuBLASLt has no BF16 algorithm for a " + std::to_string(m) + "x" +
                std::to_string(n) + "x" + std::to_string(k) +
                " GEMM on this GPU: use --precision tf32");
  p.algo = res.algo;
  return plans.emplace(key, p).first->second;
}

// D (m x n, ld ldd) FP32 = alpha op(A) op(B) + beta D (C == D), A/B BF16 column-major,
// FP32 compute; bias (m) FP32 through the BIAS epilogue when given.
inline void lt_gemm_bf16(cublasLtHandle_t lt, cudaStream_t st, bool transa, bool transb, int m,
                         int n, int k, const bf16* A, int lda, const bf16* B, int ldb, float* D,
                         int ldd, float beta, const float* bias) {
  LtPlan& p = lt_plan(lt, transa, transb, m, n, k, lda, ldb, ldd, bias, lt_alignment(A),
                      lt_alignment(B), lt_alignment(D));
  if (bias)
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                sizeof bias));
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasLtMatmul(lt, p.desc, &alpha, A, p.la, B, p.lb, &beta, D, p.ld, D, p.ld,
                              &p.algo, nullptr, 0, st));
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
