// kernels/precision.cuh — the storage types of --precision bf16 and the conversions between
// them: FP32 (master weights, gradients, statistics, anything that is summed) and BF16 (the
// operands of the GEMMs: the weight copy and the activations that feed a GEMM).
//
//   to_bf16:  y16 (N, C; row stride ldy) = round-to-nearest-even(x (N, C; row stride ldx)).
//   store4 / load4: 4 consecutive floats to / from a float or a bf16 row (one 16- or 8-byte
//             access), so a kernel templated on its storage type keeps one body.
// Rounding is __float2bfloat16 (round to nearest, ties to even; NaN stays NaN, overflow goes to
// Inf): one rounding from FP32, on the GPU, under simt and in the tests' references alike.
#pragma once

#include <string>

#include "common/error.h"
#include "kernels/common.cuh"
#include "kernels/reduce.cuh"

namespace vit {

typedef __nv_bfloat16 bf16;

struct alignas(8) bf16x4 {
  bf16 v[4];
};

static __device__ __forceinline__ void store4(float* p, float4 v) {
  *reinterpret_cast<float4*>(p) = v;
}
static __device__ __forceinline__ void store4(bf16* p, float4 v) {
  bf16x4 o;
  o.v[0] = __float2bfloat16(v.x);
  o.v[1] = __float2bfloat16(v.y);
  o.v[2] = __float2bfloat16(v.z);
  o.v[3] = __float2bfloat16(v.w);
  *reinterpret_cast<bf16x4*>(p) = o;
}
static __device__ __forceinline__ float4 load4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}
static __device__ __forceinline__ float4 load4(const bf16* p) {
  const bf16x4 v = *reinterpret_cast<const bf16x4*>(p);
  return make_float4(__bfloat162float(v.v[0]), __bfloat162float(v.v[1]),
                     __bfloat162float(v.v[2]), __bfloat162float(v.v[3]));
}
static __device__ __forceinline__ void store1(float* p, float v) { *p = v; }
static __device__ __forceinline__ void store1(bf16* p, float v) { *p = __float2bfloat16(v); }

// Alignment a VEC (store4 / load4) path needs on a row: 16 bytes for float, 8 for bf16.
inline bool aligned_store4(const float* p) { return aligned16(p); }
inline bool aligned_store4(const bf16* p) { return ((uintptr_t)p & 7u) == 0; }

// ---- FP32 -> BF16 conversion ------------------------------------------------------------------
// A thread per 4 consecutive elements of a row: float4 loads and one 8-byte store when the row
// width and both strides allow it, else element by element.

template <bool VEC>
static __global__ void __launch_bounds__(256) to_bf16_kernel(const float* __restrict__ x, size_t ldx,
                                                             bf16* __restrict__ y, size_t ldy,
                                                             size_t N, size_t C) {
  const size_t gpr = (C + 3) / 4;  // groups per row
  const size_t groups = N * gpr;
  for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < groups;
       q += (size_t)gridDim.x * blockDim.x) {
    const size_t r = q / gpr, c = (q % gpr) * 4;
    const float* xr = x + r * ldx;
    bf16* yr = y + r * ldy;
    if (VEC && c + 4 <= C) {
      store4(yr + c, *reinterpret_cast<const float4*>(xr + c));
    } else {
      for (size_t j = c; j < c + 4 && j < C; ++j) yr[j] = __float2bfloat16(xr[j]);
    }
  }
}

// y16 (N, C; row stride ldy) = bf16(x (N, C; row stride ldx)), round to nearest even.
inline void to_bf16(cudaStream_t st, const float* x, size_t ldx, bf16* y, size_t ldy, size_t N,
                    size_t C) {
  if (N == 0 || C == 0) return;
  if (ldx < C || ldy < C) throw Error("to_bf16: row stride smaller than the row");
  const bool vec = ldx % 4 == 0 && ldy % 4 == 0 && aligned16(x) && aligned_store4(y);
  const unsigned grid = grid_stride_blocks(N * ((C + 3) / 4), 256);
  if (vec) LAUNCH(to_bf16_kernel<true>, grid, 256, 0, st, x, ldx, y, ldy, N, C);
  else LAUNCH(to_bf16_kernel<false>, grid, 256, 0, st, x, ldx, y, ldy, N, C);
}
// Contiguous n elements.
inline void to_bf16(cudaStream_t st, const float* x, bf16* y, size_t n) {
  to_bf16(st, x, n, y, n, n ? 1 : 0, n);
}

// ---- BF16 -> FP32 (exact) --------------------------------------------------------------------
static __global__ void __launch_bounds__(256) from_bf16_kernel(const bf16* __restrict__ x,
                                                               float* __restrict__ y, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    y[i] = __bfloat162float(x[i]);
}
// y (n) = x (n) widened to FP32: every BF16 value is a float, so this is exact.
inline void from_bf16(cudaStream_t st, const bf16* x, float* y, size_t n) {
  if (n == 0) return;
  LAUNCH(from_bf16_kernel, grid_stride_blocks(n, 256), 256, 0, st, x, y, n);
}

}  // namespace vit
