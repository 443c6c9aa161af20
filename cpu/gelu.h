// cpu/gelu.h — reference GELU, both variants of torch.nn.GELU(approximate=...):
//   tanh: y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))    (tintn ViT, preset basic)
//   erf:  y = 0.5 x (1 + erf(x / sqrt(2)))                         (torchvision, preset vit-b16)
#pragma once
#include <cstddef>

#include "common/config.h"

namespace vit::ref {

template <class T>
void gelu_forward(const T* x, T* y, size_t n, Gelu g);                // y (=)
template <class T>
void gelu_backward(const T* dy, const T* x, T* dx, size_t n, Gelu g);  // dx = dy * gelu'(x) (=)
// y = gelu(x) and slope = gelu'(x) (both =) in one pass: the model's backward needs both (y for
// fc2's weight gradient, the slope after fc2's input gradient) and recomputes them from fc1.
template <class T>
void gelu_forward_slope(const T* x, T* y, T* slope, size_t n, Gelu g);

}  // namespace vit::ref
