#include "cpu/dropout.h"
#include "cpu/scratch.h"


namespace vit::ref {

template <class T>
void dropout_forward(const T* x, T* y, size_t n, float p, uint64_t seed, uint32_t site,
                     uint64_t step) {
  if (p == 0.0f) {
    if (y != x)
      for (size_t i = 0; i < n; ++i) y[i] = x[i];
    return;
  }
  const T s = (T)dropout_scale(p);
  const size_t chunk = 1024;  // a multiple of 4: one Philox call per 4 elements
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (size_t c0 = 0; c0 < n; c0 += chunk) {
    T m[chunk];
    const size_t len = c0 + chunk < n ? chunk : n - c0;
    dropout_mask(seed, site, step, c0, len, p, s, m);
    // y = x * mask (mask 0 or 1/(1-p)), as PyTorch: a dropped negative element is -0. The
    // kernels do the same, so outputs compare bitwise.
    for (size_t i = 0; i < len; ++i) y[c0 + i] = x[c0 + i] * m[i];
  }
}

template <class T>
void dropout_backward(const T* dy, T* dx, size_t n, float p, uint64_t seed, uint32_t site,
                      uint64_t step) {
  dropout_forward(dy, dx, n, p, seed, site, step);  // the map is linear and diagonal
}

template void dropout_forward<float>(const float*, float*, size_t, float, uint64_t, uint32_t, uint64_t);
template void dropout_forward<double>(const double*, double*, size_t, float, uint64_t, uint32_t, uint64_t);
template void dropout_backward<float>(const float*, float*, size_t, float, uint64_t, uint32_t, uint64_t);
template void dropout_backward<double>(const double*, double*, size_t, float, uint64_t, uint32_t, uint64_t);

}  // namespace vit::ref
