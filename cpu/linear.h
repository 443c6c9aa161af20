// cpu/linear.h — reference fully connected layer, y = x W^T + b, W stored (out, in) as
// PyTorch's nn.Linear. The matmuls go through CPU BLAS over all N rows at once.
#pragma once

namespace vit::ref {

// x (N, in), w (out, in), b (out) or nullptr  ->  y (N, out)   (=)
template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int N, int in, int out);

// dy (N, out) -> dx (N, in) (=, skipped when nullptr), dw (out, in) (+=), db (out) (+=, skipped
// when nullptr).
template <class T>
void linear_backward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, int N, int in,
                     int out);

}  // namespace vit::ref
