#include "cpu/dropout.h"

#include "common/philox.h"

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
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) y[i] = dropout_keep(seed, site, step, i, p) ? x[i] * s : T(0);
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
