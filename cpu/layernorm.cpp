#include "cpu/layernorm.h"
#include "cpu/scratch.h"

#include <cmath>
#include <cstddef>

namespace vit::ref {

template <class T>
void layernorm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int N, int C,
                       double eps) {
#pragma omp parallel for schedule(static) if ((size_t)N * C >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* xr = x + (size_t)n * C;
    T* yr = y + (size_t)n * C;
    double s = 0;
    for (int c = 0; c < C; ++c) s += xr[c];
    const double m = s / C;
    double v = 0;
    for (int c = 0; c < C; ++c) v += ((double)xr[c] - m) * ((double)xr[c] - m);
    const double r = 1.0 / std::sqrt(v / C + eps);
    for (int c = 0; c < C; ++c) yr[c] = (T)(((double)xr[c] - m) * r) * w[c] + b[c];
    mean[n] = (T)m;
    rstd[n] = (T)r;
  }
}

template <class T>
void layernorm_backward(const T* dy, const T* x, const T* w, const T* mean, const T* rstd, T* dx,
                        T* dw, T* db, int N, int C) {
  // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w, xhat = (x - mean) * rstd.
#pragma omp parallel for schedule(static) if ((size_t)N * C >= kParallelMin)
  for (int n = 0; n < N; ++n) {
    const T* dyr = dy + (size_t)n * C;
    const T* xr = x + (size_t)n * C;
    T* dxr = dx + (size_t)n * C;
    const T m = mean[n], r = rstd[n];
    double sg = 0, sgx = 0;
    for (int c = 0; c < C; ++c) {
      const T g = dyr[c] * w[c];
      sg += g;
      sgx += g * ((xr[c] - m) * r);
    }
    const T mg = (T)(sg / C), mgx = (T)(sgx / C);
    for (int c = 0; c < C; ++c) {
      const T xhat = (xr[c] - m) * r;
      dxr[c] = r * (dyr[c] * w[c] - mg - xhat * mgx);
    }
  }
  // Parameter gradients: sums over rows, split over columns (thread-count independent).
#pragma omp parallel for schedule(static) if ((size_t)N * C >= kParallelMin)
  for (int c0 = 0; c0 < C; c0 += 64) {
    const int c1 = c0 + 64 < C ? c0 + 64 : C;
    for (int n = 0; n < N; ++n) {
      const T* dyr = dy + (size_t)n * C;
      const T* xr = x + (size_t)n * C;
      const T m = mean[n], r = rstd[n];
      for (int c = c0; c < c1; ++c) {
        dw[c] += dyr[c] * ((xr[c] - m) * r);
        db[c] += dyr[c];
      }
    }
  }
}

template void layernorm_forward<float>(const float*, const float*, const float*, float*, float*, float*, int, int, double);
template void layernorm_forward<double>(const double*, const double*, const double*, double*, double*, double*, int, int, double);
template void layernorm_backward<float>(const float*, const float*, const float*, const float*, const float*, float*, float*, float*, int, int);
template void layernorm_backward<double>(const double*, const double*, const double*, const double*, const double*, double*, double*, double*, int, int);

}  // namespace vit::ref
