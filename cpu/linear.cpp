#include "cpu/linear.h"
#include "cpu/scratch.h"

#include "cpu/blas.h"

namespace vit::ref {

template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int N, int in, int out) {
  if (N <= 0) return;
  gemm(false, true, N, out, in, T(1), x, in, w, in, T(0), y, out);
  if (b) {
#pragma omp parallel for schedule(static) if ((size_t)N * out >= kParallelMin)
    for (int n = 0; n < N; ++n)
      for (int o = 0; o < out; ++o) y[(size_t)n * out + o] += b[o];
  }
}

template <class T>
void linear_backward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, int N, int in,
                     int out) {
  if (N <= 0) return;
  if (dx) gemm(false, false, N, in, out, T(1), dy, out, w, in, T(0), dx, in);  // dx = dy W
  gemm(true, false, out, in, N, T(1), dy, out, x, in, T(1), dw, in);           // dw += dy^T x
  if (db) {
    // Column sums, split over columns so the result does not depend on the thread count.
#pragma omp parallel for schedule(static) if ((size_t)N * out >= kParallelMin)
    for (int o0 = 0; o0 < out; o0 += 64) {
      const int o1 = o0 + 64 < out ? o0 + 64 : out;
      for (int n = 0; n < N; ++n)
        for (int o = o0; o < o1; ++o) db[o] += dy[(size_t)n * out + o];
    }
  }
}

template void linear_forward<float>(const float*, const float*, const float*, float*, int, int, int);
template void linear_forward<double>(const double*, const double*, const double*, double*, int, int, int);
template void linear_backward<float>(const float*, const float*, const float*, float*, float*, float*, int, int, int);
template void linear_backward<double>(const double*, const double*, const double*, double*, double*, double*, int, int, int);

}  // namespace vit::ref
