// kernels/gelu.cuh — GELU, forward and backward, elementwise over n floats.
//
//   tanh: gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (tintn ViT, GELU(approximate='tanh'))
//   erf:  gelu(x) = 0.5 x (1 + erf(x / sqrt(2)))                      (torchvision, exact GELU)
//   forward:  y = gelu(x)                         (=, in place allowed; y FP32, or BF16 under
//                                                 --precision bf16: the GELU output only feeds
//                                                 the FC2 GEMM. x stays FP32 for the backward)
//             bf16 mode also saves bf16(x) into pre16 (the BF16 copy of the FC1 output that
//             the backward reads: half the bytes of the largest saved activation but qkv)
//   backward: dx = dy * gelu'(pre_act)            (=, dx may alias dy; pre_act FP32 or BF16)
//
// The device functions gelu_fwd / gelu_grad are also the epilogue of kernels/matmul.cuh (bias +
// GELU fused after the FC1 GEMM). Precise tanhf/erff/expf, not the __ intrinsics: the 1e-5
// comparison with the reference needs them and this kernel is memory bound anyway.
// Design: a thread per 4 consecutive elements, float4 loads/stores when every pointer is 16-byte
// aligned, the last partial group (n % 4) scalar; grid-stride so any n works with a bounded grid.
#pragma once

#include "common/config.h"
#include "kernels/common.cuh"
#include "kernels/precision.cuh"
#include "kernels/reduce.cuh"

namespace vit {

static __device__ __forceinline__ float gelu_fwd(float x, Gelu g) {
  if (g == Gelu::Tanh) {
    const float k = 0.7978845608028654f;  // sqrt(2/pi)
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
  }
  return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
}

// d gelu(x) / dx
static __device__ __forceinline__ float gelu_grad(float x, Gelu g) {
  if (g == Gelu::Tanh) {
    const float k = 0.7978845608028654f;
    const float t = tanhf(k * (x + 0.044715f * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * 0.044715f * x * x);
  }
  // Phi(x) + x phi(x), phi the standard normal density.
  return 0.5f * (1.0f + erff(x * 0.7071067811865476f)) +
         x * 0.3989422804014327f * expf(-0.5f * x * x);
}

template <bool VEC, class YT, class PT>
static __global__ void __launch_bounds__(256) gelu_forward_kernel(const floatX* x, YT* y, size_t n, Gelu g,
                                                                  PT* pre16) {
  const size_t groups = (n + 3) / 4;
  for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < groups;
       q += (size_t)gridDim.x * blockDim.x) {
    const size_t i = q * 4;
    if (VEC && i + 4 <= n) {
      float4 v = *reinterpret_cast<const float4*>(x + i);
      if (pre16) store4(pre16 + i, v);
      v.x = gelu_fwd(v.x, g);
      v.y = gelu_fwd(v.y, g);
      v.z = gelu_fwd(v.z, g);
      v.w = gelu_fwd(v.w, g);
      store4(y + i, v);
    } else {
      for (size_t j = i; j < i + 4 && j < n; ++j) {
        const float v = x[j];  // read before y[j] is written (y may be x)
        if (pre16) store1(pre16 + j, v);
        store1(y + j, gelu_fwd(v, g));
      }
    }
  }
}

template <bool VEC, class PT, class DT>
static __global__ void __launch_bounds__(256) gelu_backward_kernel(const floatX* dy, const PT* pre, DT* dx,
                                            size_t n, Gelu g) {
  const size_t groups = (n + 3) / 4;
  for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < groups;
       q += (size_t)gridDim.x * blockDim.x) {
    const size_t i = q * 4;
    if (VEC && i + 4 <= n) {
      const float4 d = *reinterpret_cast<const float4*>(dy + i);
      const float4 p = load4(pre + i);
      float4 o;
      o.x = d.x * gelu_grad(p.x, g);
      o.y = d.y * gelu_grad(p.y, g);
      o.z = d.z * gelu_grad(p.z, g);
      o.w = d.w * gelu_grad(p.w, g);
      store4(dx + i, o);
    } else {
      for (size_t j = i; j < i + 4 && j < n; ++j)
        store1(dx + j, (float)dy[j] * gelu_grad((float)pre[j], g));
    }
  }
}

// y (n) = gelu(x) (=). In place (y == x) is fine. y: float, or bf16 (--precision bf16), and
// optionally pre16 (n) = x stored in y's type (=; must not alias x): the saved pre-activation.
template <class YT>
inline void gelu_forward_t(cudaStream_t st, const float* x, YT* y, size_t n, Gelu g, YT* pre16) {
  if (n == 0) return;
  if (aligned16(x) && aligned_store4(y) && (!pre16 || aligned_store4(pre16)))
    LAUNCH((gelu_forward_kernel<true, YT, YT>), elementwise_grid(n, 256), 256, 0, st, x, y, n, g,
           pre16);
  else
    LAUNCH((gelu_forward_kernel<false, YT, YT>), elementwise_grid(n, 256), 256, 0, st, x, y, n, g,
           pre16);
}
inline void gelu_forward(cudaStream_t st, const float* x, float* y, size_t n, Gelu g,
                         float* pre = nullptr) {
  gelu_forward_t(st, x, y, n, g, pre);
}
inline void gelu_forward(cudaStream_t st, const float* x, bf16* y, size_t n, Gelu g,
                         bf16* pre16 = nullptr) {
  gelu_forward_t(st, x, y, n, g, pre16);
}

// dx (n) = dy * gelu'(pre_act) (=). dx may alias dy. pre_act: float, or bf16 (bf16 mode); dx:
// float, or bf16 (bf16 mode: the FC1 output gradient the GEMMs read, rounded once).
template <class PT, class DT = float>
inline void gelu_backward_t(cudaStream_t st, const float* dy, const PT* pre_act, DT* dx,
                            size_t n, Gelu g) {
  if (n == 0) return;
  if (aligned16(dy) && aligned_store4(pre_act) && aligned_store4(dx))
    LAUNCH((gelu_backward_kernel<true, PT, DT>), elementwise_grid(n, 256), 256, 0, st, dy,
           pre_act, dx, n, g);
  else
    LAUNCH((gelu_backward_kernel<false, PT, DT>), elementwise_grid(n, 256), 256, 0, st, dy,
           pre_act, dx, n, g);
}
inline void gelu_backward(cudaStream_t st, const float* dy, const float* pre_act, float* dx,
                          size_t n, Gelu g) {
  gelu_backward_t(st, dy, pre_act, dx, n, g);
}
inline void gelu_backward(cudaStream_t st, const float* dy, const bf16* pre_act, float* dx,
                          size_t n, Gelu g) {
  gelu_backward_t(st, dy, pre_act, dx, n, g);
}
inline void gelu_backward(cudaStream_t st, const float* dy, const bf16* pre_act, bf16* dx,
                          size_t n, Gelu g) {
  gelu_backward_t(st, dy, pre_act, dx, n, g);
}

}  // namespace vit
