#include "cpu/loss.h"

#include <cmath>
#include <cstddef>
#include <string>

#include "common/error.h"

namespace vit::ref {

template <class T>
T xent_forward(const T* logits, const int32_t* labels, T* losses, T* probs, int B, int K,
               float smoothing) {
  for (int b = 0; b < B; ++b)
    if (labels[b] < 0 || labels[b] >= K)
      throw Error("label " + std::to_string(labels[b]) + " of image " + std::to_string(b) +
                  " is outside [0, " + std::to_string(K) + ")");
  const T eps = (T)smoothing;
  for (int b = 0; b < B; ++b) {
    const T* z = logits + (size_t)b * K;
    T* pr = probs + (size_t)b * K;
    T mx = z[0];
    for (int k = 1; k < K; ++k) mx = z[k] > mx ? z[k] : mx;
    T sum = 0;
    for (int k = 0; k < K; ++k) sum += std::exp(z[k] - mx);
    const T lse = mx + std::log(sum);
    T loss = 0;
    for (int k = 0; k < K; ++k) {
      const T logp = z[k] - lse;
      pr[k] = std::exp(logp);
      const T target = (k == labels[b] ? T(1) - eps : T(0)) + eps / (T)K;
      loss -= target * logp;
    }
    losses[b] = loss;
  }
  T mean = 0;
  for (int b = 0; b < B; ++b) mean += losses[b];
  return B > 0 ? mean / (T)B : T(0);
}

template <class T>
void xent_backward(const T* probs, const int32_t* labels, T* dlogits, int B, int K,
                   float smoothing, T scale) {
  const T eps = (T)smoothing;
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < K; ++k) {
      const T target = (k == labels[b] ? T(1) - eps : T(0)) + eps / (T)K;
      dlogits[(size_t)b * K + k] = (probs[(size_t)b * K + k] - target) * scale;
    }
}

template float xent_forward<float>(const float*, const int32_t*, float*, float*, int, int, float);
template double xent_forward<double>(const double*, const int32_t*, double*, double*, int, int, float);
template void xent_backward<float>(const float*, const int32_t*, float*, int, int, float, float);
template void xent_backward<double>(const double*, const int32_t*, double*, int, int, float, double);

}  // namespace vit::ref
