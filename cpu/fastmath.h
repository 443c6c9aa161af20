// cpu/fastmath.h — an exp that vectorizes, for the float reference's hot elementwise loops
// (GELU, softmax). libm's expf/tanhf are scalar calls (no libmvec without -ffast-math) and were
// the largest single cost of a CPU training step. exp_fast<float> is Cephes' expf: round
// x / ln 2 to n, a degree-7 polynomial on the remainder, times 2^n built from the exponent
// bits; about 1 ulp from the correctly rounded result over the normal range. GCC's vectorizer
// does not take such loops at -O2 (libm calls, cost model), so the hot loops use GCC vector
// extensions explicitly: exp_fast(v4f) is the same arithmetic on 4 lanes (SSE2, the x86-64
// baseline), bitwise equal to 4 scalar calls (no FMA contraction on the baseline), so a
// vectorized loop's scalar tail gives the same numbers as its body. NaN propagates; x > 88.3 gives a large finite value (about 2^127), x < -87.3
// gives about 2^-126 instead of a denormal or 0 — harmless where it is used (1 + e, e * tiny).
// exp_fast<double> is std::exp: the double instantiation is the gradient-check oracle.
#pragma once
#include <cmath>
#include <cstdint>

namespace vit::ref {

typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

inline v4f load4(const float* p) {
  v4f v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void store4(float* p, v4f v) { __builtin_memcpy(p, &v, sizeof v); }

// The body of exp_fast for float (F = float, I = int32_t) and for 4 lanes (F = v4f, I = v4i).
template <class F, class I>
inline F exp_fast_impl(F x) {
  // clamp so that n stays in [-126, 127]; written so that NaN falls through both
  x = x > 88.3f ? 88.3f : x;
  x = x < -87.3f ? -87.3f : x;
  // n = round(x / ln 2) with the 1.5 * 2^23 trick (no floor call, vectorizes on SSE2)
  const float magic = 12582912.0f;
  const F t = x * 1.44269504088896341f + magic;
  const F n = t - magic;
  const I ni = __builtin_bit_cast(I, t) - __builtin_bit_cast(int32_t, magic);
  // r = x - n ln 2 in two parts (Cody-Waite), exact enough for the polynomial
  const F r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  F p = x * 0.0f + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * __builtin_bit_cast(F, (ni + 127) << 23);
}

inline float exp_fast(float x) { return exp_fast_impl<float, int32_t>(x); }
inline v4f exp_fast(v4f x) { return exp_fast_impl<v4f, v4i>(x); }

inline double exp_fast(double x) { return std::exp(x); }

}  // namespace vit::ref
