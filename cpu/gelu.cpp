#include "cpu/gelu.h"
#include "cpu/scratch.h"

#include <cmath>

namespace vit::ref {

template <class T>
void gelu_forward(const T* x, T* y, size_t n, Gelu g) {
  const T k = (T)0.7978845608028654;  // sqrt(2/pi)
  const T r2 = (T)0.7071067811865476; // 1/sqrt(2)
  if (g == Gelu::Tanh) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (size_t i = 0; i < n; ++i) {
      const T v = x[i];
      y[i] = T(0.5) * v * (T(1) + std::tanh(k * (v + T(0.044715) * v * v * v)));
    }
  } else {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (size_t i = 0; i < n; ++i) y[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * r2));
  }
}

template <class T>
void gelu_backward(const T* dy, const T* x, T* dx, size_t n, Gelu g) {
  const T k = (T)0.7978845608028654;
  const T r2 = (T)0.7071067811865476;
  const T inv_sqrt_2pi = (T)0.3989422804014327;
  if (g == Gelu::Tanh) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (size_t i = 0; i < n; ++i) {
      const T v = x[i];
      const T t = std::tanh(k * (v + T(0.044715) * v * v * v));
      // d/dx [0.5 x (1 + t)] = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2)
      const T d = T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * k * (T(1) + T(0.134145) * v * v);
      dx[i] = dy[i] * d;
    }
  } else {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (size_t i = 0; i < n; ++i) {
      const T v = x[i];
      // d/dx [x Phi(x)] = Phi(x) + x phi(x)
      const T d = T(0.5) * (T(1) + std::erf(v * r2)) + v * inv_sqrt_2pi * std::exp(T(-0.5) * v * v);
      dx[i] = dy[i] * d;
    }
  }
}

template void gelu_forward<float>(const float*, float*, size_t, Gelu);
template void gelu_forward<double>(const double*, double*, size_t, Gelu);
template void gelu_backward<float>(const float*, const float*, float*, size_t, Gelu);
template void gelu_backward<double>(const double*, const double*, double*, size_t, Gelu);

}  // namespace vit::ref
