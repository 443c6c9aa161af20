// cpu/dropout.h — reference inverted dropout with the Philox mask of common/philox.h:
//   y[i] = keep(i) ? x[i] / (1 - p) : 0,  keep(i) = vit::dropout_keep(seed, site, step, i, p),
// i the flat index of the element. The mask is a pure function of (seed, site, step, i), so the
// CUDA kernels draw the same one and backward needs no saved mask. p == 0 copies.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/philox.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace vit::ref {

template <class T>
void dropout_forward(const T* x, T* y, size_t n, float p, uint64_t seed, uint32_t site,
                     uint64_t step);  // y (=), may alias x
template <class T>
void dropout_backward(const T* dy, T* dx, size_t n, float p, uint64_t seed, uint32_t site,
                      uint64_t step);  // dx (=), the same mask and scale applied to dy

// The scale of a kept element, 1 / (1 - p), computed in float as the CUDA kernels do.
inline float dropout_scale(float p) { return 1.0f / (1.0f - p); }

// out[k] = dropout_keep(seed, site, step, first + k, p) ? scale : 0 for k < n: the mask of a run
// of consecutive elements, with one Philox call per 4 elements instead of one per element
// (each call yields the 4 words of indices 4m .. 4m+3). Same decisions as dropout_keep.
// On x86-64 the aligned middle of the run goes 16 elements (4 Philox blocks) at a time through
// philox16_sse2, the generator on 4 counters in SSE2 lanes: same words, ~4x fewer instructions.
#if defined(__SSE2__)
// The 16 words of Philox blocks m0 .. m0+3 (same key and upper counter words), as
// out[4 * (m - m0) + w] = philox4x32_10(m, c1, c2, c3, k0, k1).v[w].
inline void philox16_sse2(uint32_t m0, uint32_t c1s, uint32_t c2s, uint32_t c3s, uint32_t k0s,
                          uint32_t k1s, uint32_t* out) {
  const __m128i M0 = _mm_set1_epi32((int)0xD2511F53u), M1 = _mm_set1_epi32((int)0xCD9E8D57u);
  const __m128i W0 = _mm_set1_epi32((int)0x9E3779B9u), W1 = _mm_set1_epi32((int)0xBB67AE85u);
  __m128i c0 = _mm_add_epi32(_mm_set1_epi32((int)m0), _mm_setr_epi32(0, 1, 2, 3));
  __m128i c1 = _mm_set1_epi32((int)c1s), c2 = _mm_set1_epi32((int)c2s), c3 = _mm_set1_epi32((int)c3s);
  __m128i k0 = _mm_set1_epi32((int)k0s), k1 = _mm_set1_epi32((int)k1s);
  // lo and hi 32 bits of the 4 products a * M (unsigned 32 x 32 -> 64)
  auto mul = [](__m128i a, __m128i M, __m128i& lo, __m128i& hi) {
    const __m128i p02 = _mm_mul_epu32(a, M);                                       // lanes 0, 2
    const __m128i p13 = _mm_mul_epu32(_mm_srli_epi64(a, 32), _mm_srli_epi64(M, 32)); // lanes 1, 3
    lo = _mm_unpacklo_epi32(_mm_shuffle_epi32(p02, _MM_SHUFFLE(0, 0, 2, 0)),
                            _mm_shuffle_epi32(p13, _MM_SHUFFLE(0, 0, 2, 0)));
    hi = _mm_unpacklo_epi32(_mm_shuffle_epi32(p02, _MM_SHUFFLE(0, 0, 3, 1)),
                            _mm_shuffle_epi32(p13, _MM_SHUFFLE(0, 0, 3, 1)));
  };
  for (int r = 0; r < 10; ++r) {
    __m128i lo0, hi0, lo1, hi1;
    mul(c0, M0, lo0, hi0);
    mul(c2, M1, lo1, hi1);
    const __m128i n0 = _mm_xor_si128(_mm_xor_si128(hi1, c1), k0);
    const __m128i n2 = _mm_xor_si128(_mm_xor_si128(hi0, c3), k1);
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 = _mm_add_epi32(k0, W0);
    k1 = _mm_add_epi32(k1, W1);
  }
  // transpose: lane m of (c0, c1, c2, c3) is block m's words 0..3
  const __m128i t0 = _mm_unpacklo_epi32(c0, c1), t1 = _mm_unpacklo_epi32(c2, c3);
  const __m128i t2 = _mm_unpackhi_epi32(c0, c1), t3 = _mm_unpackhi_epi32(c2, c3);
  _mm_storeu_si128((__m128i*)out + 0, _mm_unpacklo_epi64(t0, t1));
  _mm_storeu_si128((__m128i*)out + 1, _mm_unpackhi_epi64(t0, t1));
  _mm_storeu_si128((__m128i*)out + 2, _mm_unpacklo_epi64(t2, t3));
  _mm_storeu_si128((__m128i*)out + 3, _mm_unpackhi_epi64(t2, t3));
}
#endif

template <class T>
inline void dropout_mask(uint64_t seed, uint32_t site, uint64_t step, uint64_t first, size_t n,
                         float p, T scale, T* out) {
  Philox4 r = {{0, 0, 0, 0}};
  uint64_t block = ~(uint64_t)0;
  auto one = [&](uint64_t idx) {
    if ((idx >> 2) != block) {
      block = idx >> 2;
      r = philox4x32_10((uint32_t)block, site, (uint32_t)step, (uint32_t)(step >> 32),
                        (uint32_t)seed, (uint32_t)(seed >> 32));
    }
    const float u = (float)(r.v[idx & 3] >> 8) * (1.0f / 16777216.0f);  // = philox_uniform
    return u >= p ? scale : T(0);
  };
  size_t k = 0;
#if defined(__SSE2__)
  // Scalar up to a multiple of 16, then 16 at a time. The block counter is 32 bits as in
  // philox_u32 (index >> 2, truncated); lane m adds m modulo 2^32, the same truncation.
  for (; k < n && ((first + k) & 15) != 0; ++k) out[k] = one(first + k);
  uint32_t words[16];
  for (; k + 16 <= n; k += 16) {
    philox16_sse2((uint32_t)((first + k) >> 2), site, (uint32_t)step, (uint32_t)(step >> 32),
                  (uint32_t)seed, (uint32_t)(seed >> 32), words);
    for (int w = 0; w < 16; ++w)
      out[k + w] = (float)(words[w] >> 8) * (1.0f / 16777216.0f) >= p ? scale : T(0);
  }
#endif
  for (; k < n; ++k) out[k] = one(first + k);
}

}  // namespace vit::ref
