// cpu/layernorm.h — reference LayerNorm over the last dimension, as torch.nn.LayerNorm:
// y = (x - mean) * rstd * w + b with the biased variance, rstd = 1 / sqrt(var + eps).
// Statistics are computed in double whatever T is, so the float reference is as exact as it
// can be; mean and rstd are saved for backward.
#pragma once

namespace vit::ref {

// x (N, C), w (C), b (C) -> y (N, C) (=), mean (N), rstd (N) (=)
template <class T>
void layernorm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int N, int C,
                       double eps);

// dy (N, C) -> dx (N, C) (=), dw (C) (+=), db (C) (+=)
template <class T>
void layernorm_backward(const T* dy, const T* x, const T* w, const T* mean, const T* rstd, T* dx,
                        T* dw, T* db, int N, int C);

}  // namespace vit::ref
