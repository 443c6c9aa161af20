// cpu/optim.h — reference Adam / AdamW and global-norm gradient clipping, as PyTorch's
// torch.optim.Adam / AdamW and torch.nn.utils.clip_grad_norm_. Float only: the optimizer state
// is the model's flat float arrays.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/model.h"

namespace vit::ref {

// One update of the flat range p, g, m, v (n floats) at 1-based step t:
//   g' = g * grad_scale * clip_coef
//   Adam:  g' += wd * p (when decay);   AdamW: p -= lr * wd * p (when decay), before the update
//   m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2
//   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// p, m, v updated in place; g is read only.
void adam_update(float* p, const float* g, float* m, float* v, size_t n, const OptimConfig& o,
                 float lr, int64_t t, float grad_scale, float clip_coef, bool decay);

// sqrt(sum (g * grad_scale)^2), accumulated in double.
double global_grad_norm(const float* g, size_t n, float grad_scale);

// clip > 0 && norm > clip ? clip / (norm + 1e-6) : 1    (torch.nn.utils.clip_grad_norm_)
float clip_coefficient(double norm, float clip);

// Learning-rate schedules. Constant: lr. Warmup + cosine: linear from lr/warmup to lr over the
// first `warmup` updates (t = 1..warmup), then cosine from lr to min_lr at t = total.
float lr_constant(float lr, int64_t t);
float lr_warmup_cosine(float lr, float min_lr, int64_t warmup, int64_t total, int64_t t);

}  // namespace vit::ref
