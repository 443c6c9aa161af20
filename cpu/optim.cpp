#include "cpu/optim.h"

#include <cmath>

#include "cpu/scratch.h"

namespace vit::ref {

void adam_update(float* p, const float* g, float* m, float* v, size_t n, const OptimConfig& o,
                 float lr, int64_t t, float grad_scale, float clip_coef, bool decay) {
  const float b1 = o.beta1, b2 = o.beta2;
  // Bias corrections in double: b^t for large t loses nothing that way.
  const float bc1 = (float)(1.0 - std::pow((double)b1, (double)t));
  const float bc2_sqrt = (float)std::sqrt(1.0 - std::pow((double)b2, (double)t));
  const float gs = grad_scale * clip_coef;
  const bool l2 = decay && o.kind == OptimConfig::Adam && o.weight_decay != 0.0f;
  const bool decoupled = decay && o.kind == OptimConfig::AdamW && o.weight_decay != 0.0f;
  const float step_size = lr / bc1;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (size_t i = 0; i < n; ++i) {
    float gi = g[i] * gs;
    float pi = p[i];
    if (l2) gi += o.weight_decay * pi;
    if (decoupled) pi *= 1.0f - lr * o.weight_decay;
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - step_size * mi / (std::sqrt(vi) / bc2_sqrt + o.eps);
  }
}

double global_grad_norm(const float* g, size_t n, float grad_scale) {
  // Fixed chunks summed in order: the result does not depend on the thread count.
  const size_t chunk = 1 << 16, nchunks = (n + chunk - 1) / chunk;
  double* part = scratch<double>(nchunks);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (size_t c = 0; c < nchunks; ++c) {
    const size_t end = (c + 1) * chunk < n ? (c + 1) * chunk : n;
    double s = 0;
    for (size_t i = c * chunk; i < end; ++i) {
      const double x = (double)g[i] * grad_scale;
      s += x * x;
    }
    part[c] = s;
  }
  double s = 0;
  for (size_t c = 0; c < nchunks; ++c) s += part[c];
  return std::sqrt(s);
}

float clip_coefficient(double norm, float clip) {
  return clip > 0.0f && norm > clip ? (float)(clip / (norm + 1e-6)) : 1.0f;
}

float lr_constant(float lr, int64_t) { return lr; }

float lr_warmup_cosine(float lr, float min_lr, int64_t warmup, int64_t total, int64_t t) {
  if (warmup > 0 && t <= warmup) return lr * (float)t / (float)warmup;
  if (t >= total) return min_lr;
  const double progress = (double)(t - warmup) / (double)(total - warmup);
  return (float)(min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace vit::ref
