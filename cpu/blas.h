// cpu/blas.h — row-major GEMM for the reference model, float or double, through CBLAS
// (OpenBLAS). C (M,N) = alpha * op(A) (M,K) * op(B) (K,N) + beta * C; op = transpose when the flag
// is set. Leading dimensions are in elements of the stored (untransposed) row-major matrix.
//
// Threads: OpenBLAS is kept single-threaded and large products are split here, into blocks of
// C, over the OpenMP threads. Two thread pools (OpenBLAS's pthreads and OpenMP's), each spinning
// while the other works, made a 2-thread step up to 10x slower than a 1-thread one on a busy
// 2-core machine. Each row block is an independent cblas call, so results do not depend on
// scheduling; called inside an OpenMP loop (the per-(b, h) products of cpu/attention.cpp) it
// runs on the calling thread.
#pragma once
#include <cblas.h>
#include <omp.h>

#include <cstddef>

namespace vit::ref {

namespace detail {
inline void cblas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
                       const float* A, int lda, const float* B, int ldb, float beta, float* C,
                       int ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void cblas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, double alpha,
                       const double* A, int lda, const double* B, int ldb, double beta, double* C,
                       int ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
// OpenBLAS to one thread, once per process (also what simt's cuBLAS gets: same machine).
inline void blas_single_threaded() {
  static const bool done = (openblas_set_num_threads(1), true);
  (void)done;
}
}  // namespace detail

// Products below this many multiply-adds run as one call: splitting costs more than it saves.
constexpr double kGemmSplitMin = 4e6;

template <class T>
void gemm(bool ta, bool tb, int M, int N, int K, T alpha, const T* A, int lda, const T* B, int ldb,
          T beta, T* C, int ldc) {
  detail::blas_single_threaded();
  const CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
  // Blocks of C whose size depends on the shape only (not on the thread count): OpenBLAS's result
  // for an element can depend on the block it is computed in, so this keeps the model's results
  // identical for any number of threads. Rows of C when there are many, else columns.
  const bool by_rows = M >= 128, by_cols = !by_rows && N >= 128;
  if (omp_in_parallel() || (double)M * N * K < kGemmSplitMin || (!by_rows && !by_cols)) {
    detail::cblas_gemm(opa, opb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const int len = by_rows ? M : N, blk = len >= 1024 ? 256 : 64, nblk = (len + blk - 1) / blk;
#pragma omp parallel for schedule(dynamic)
  for (int i = 0; i < nblk; ++i) {
    const int o = i * blk, n = o + blk < len ? blk : len - o;
    if (by_rows)  // op(A) rows o.. start at A + o * lda (stored (M, K)) or A + o (stored (K, M))
      detail::cblas_gemm(opa, opb, n, N, K, alpha, A + (ta ? (size_t)o : (size_t)o * lda), lda, B,
                         ldb, beta, C + (size_t)o * ldc, ldc);
    else  // op(B) columns o.. start at B + o (stored (K, N)) or B + o * ldb (stored (N, K))
      detail::cblas_gemm(opa, opb, M, n, K, alpha, A, lda, B + (tb ? (size_t)o * ldb : (size_t)o),
                         ldb, beta, C + o, ldc);
  }
}

}  // namespace vit::ref
