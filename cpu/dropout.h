// cpu/dropout.h — reference inverted dropout with the Philox mask of common/philox.h:
//   y[i] = keep(i) ? x[i] / (1 - p) : 0,  keep(i) = vit::dropout_keep(seed, site, step, i, p),
// i the flat index of the element. The mask is a pure function of (seed, site, step, i), so the
// CUDA kernels draw the same one and backward needs no saved mask. p == 0 copies.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/philox.h"

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
template <class T>
inline void dropout_mask(uint64_t seed, uint32_t site, uint64_t step, uint64_t first, size_t n,
                         float p, T scale, T* out) {
  Philox4 r = {{0, 0, 0, 0}};
  uint64_t block = ~(uint64_t)0;
  for (size_t k = 0; k < n; ++k) {
    const uint64_t idx = first + k;
    if ((idx >> 2) != block) {
      block = idx >> 2;
      r = philox4x32_10((uint32_t)block, site, (uint32_t)step, (uint32_t)(step >> 32),
                        (uint32_t)seed, (uint32_t)(seed >> 32));
    }
    const float u = (float)(r.v[idx & 3] >> 8) * (1.0f / 16777216.0f);  // = philox_uniform
    out[k] = u >= p ? scale : T(0);
  }
}

}  // namespace vit::ref
