// cpu/blas.h — row-major GEMM for the reference model, float or double, through CBLAS
// (OpenBLAS). C (M,N) = alpha * op(A) (M,K) * op(B) (K,N) + beta * C; op = transpose when the flag
// is set. Leading dimensions are in elements of the stored (untransposed) row-major matrix.
// OpenBLAS threads large calls itself; the small per-(b, h) calls of cpu/attention.cpp run on the
// calling thread (OpenBLAS goes single-threaded below ~256K multiply-adds) and may come from
// inside an OpenMP loop.
#pragma once
#include <cblas.h>

namespace vit::ref {

inline void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(bool ta, bool tb, int M, int N, int K, double alpha, const double* A, int lda,
                 const double* B, int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
              K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace vit::ref
