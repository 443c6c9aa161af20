// cpu/dropout.h — reference inverted dropout with the Philox mask of common/philox.h:
//   y[i] = keep(i) ? x[i] / (1 - p) : 0,  keep(i) = vit::dropout_keep(seed, site, step, i, p),
// i the flat index of the element. The mask is a pure function of (seed, site, step, i), so the
// CUDA kernels draw the same one and backward needs no saved mask. p == 0 copies.
#pragma once
#include <cstddef>
#include <cstdint>

namespace vit::ref {

template <class T>
void dropout_forward(const T* x, T* y, size_t n, float p, uint64_t seed, uint32_t site,
                     uint64_t step);  // y (=), may alias x
template <class T>
void dropout_backward(const T* dy, T* dx, size_t n, float p, uint64_t seed, uint32_t site,
                      uint64_t step);  // dx (=), the same mask and scale applied to dy

// The scale of a kept element, 1 / (1 - p), computed in float as the CUDA kernels do.
inline float dropout_scale(float p) { return 1.0f / (1.0f - p); }

}  // namespace vit::ref
