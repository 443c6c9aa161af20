#include "cpu/gelu.h"

#include <cmath>
#include <type_traits>

#include "cpu/fastmath.h"
#include "cpu/scratch.h"

namespace vit::ref {

// The tanh variant is evaluated as a sigmoid: 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u)), so
//   gelu(x) = x s,  s = 1 / (1 + exp(-2u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   gelu'(x) = s + x * 2 s (1 - s) * sqrt(2/pi) (1 + 3 * 0.044715 x^2)
// The same function as the tanh form, without its cancellation in 1 + tanh(u) for negative x,
// and one exp_fast (vectorized) instead of a scalar libm tanh per element.
namespace {
constexpr double kSqrt2OverPi = 0.7978845608028654, kInvSqrt2 = 0.7071067811865476,
                 kInvSqrt2Pi = 0.3989422804014327;

// V is float, double or v4f (4 float lanes, cpu/fastmath.h); constants are cast to the scalar
// type S so the float and the v4f versions do the same float arithmetic.
template <class V, class S = V>
inline V tanh_gate(V v) {  // s of the comment above
  const V u = (S)kSqrt2OverPi * (v + (S)0.044715 * v * v * v);
  return (S)1 / ((S)1 + exp_fast((S)-2 * u));
}
template <class V, class S = V>
inline V tanh_slope(V v, V s) {  // gelu'(v) given s = tanh_gate(v)
  return s + v * (S)2 * s * ((S)1 - s) * (S)kSqrt2OverPi * ((S)1 + (S)0.134145 * v * v);
}
template <class T>
inline T erf_slope(T v) {  // d/dx [x Phi(x)] = Phi(x) + x phi(x)
  return T(0.5) * (T(1) + std::erf(v * (T)kInvSqrt2)) +
         v * (T)kInvSqrt2Pi * std::exp(T(-0.5) * v * v);
}
}  // namespace

template <class T>
void gelu_forward(const T* x, T* y, size_t n, Gelu g) {
  if (g == Gelu::Tanh) {
    if constexpr (std::is_same_v<T, float>) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
      for (size_t i = 0; i < n / 4 * 4; i += 4) {
        const v4f v = load4(x + i);
        store4(y + i, v * tanh_gate<v4f, float>(v));
      }
    }
    for (size_t i = std::is_same_v<T, float> ? n / 4 * 4 : 0; i < n; ++i) y[i] = x[i] * tanh_gate(x[i]);
  } else {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (size_t i = 0; i < n; ++i) y[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * (T)kInvSqrt2));
  }
}

template <class T>
void gelu_backward(const T* dy, const T* x, T* dx, size_t n, Gelu g) {
  if (g == Gelu::Tanh) {
    if constexpr (std::is_same_v<T, float>) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
      for (size_t i = 0; i < n / 4 * 4; i += 4) {
        const v4f v = load4(x + i);
        store4(dx + i, load4(dy + i) * tanh_slope<v4f, float>(v, tanh_gate<v4f, float>(v)));
      }
    }
    for (size_t i = std::is_same_v<T, float> ? n / 4 * 4 : 0; i < n; ++i)
      dx[i] = dy[i] * tanh_slope(x[i], tanh_gate(x[i]));
  } else {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (size_t i = 0; i < n; ++i) dx[i] = dy[i] * erf_slope(x[i]);
  }
}

template <class T>
void gelu_forward_slope(const T* x, T* y, T* slope, size_t n, Gelu g) {
  if (g == Gelu::Tanh) {
    if constexpr (std::is_same_v<T, float>) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
      for (size_t i = 0; i < n / 4 * 4; i += 4) {
        const v4f v = load4(x + i), s = tanh_gate<v4f, float>(v);
        store4(y + i, v * s);
        store4(slope + i, tanh_slope<v4f, float>(v, s));
      }
    }
    for (size_t i = std::is_same_v<T, float> ? n / 4 * 4 : 0; i < n; ++i) {
      const T v = x[i], s = tanh_gate(v);
      y[i] = v * s;
      slope[i] = tanh_slope(v, s);
    }
  } else {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (size_t i = 0; i < n; ++i) {
      const T v = x[i], phi = T(0.5) * (T(1) + std::erf(v * (T)kInvSqrt2));
      y[i] = v * phi;
      slope[i] = phi + v * (T)kInvSqrt2Pi * std::exp(T(-0.5) * v * v);
    }
  }
}

template void gelu_forward<float>(const float*, float*, size_t, Gelu);
template void gelu_forward<double>(const double*, double*, size_t, Gelu);
template void gelu_backward<float>(const float*, const float*, float*, size_t, Gelu);
template void gelu_backward<double>(const double*, const double*, double*, size_t, Gelu);
template void gelu_forward_slope<float>(const float*, float*, float*, size_t, Gelu);
template void gelu_forward_slope<double>(const double*, double*, double*, size_t, Gelu);

}  // namespace vit::ref
