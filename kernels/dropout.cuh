// kernels/dropout.cuh — inverted dropout, elementwise over n floats, with the residual add fused.
//
//   dropout_forward:          y = x * m(i)          (=, in place ok)
//   dropout_residual_forward: out = res + x * m(i)  (=, out may be res)
//   dropout_backward:         dx = dy * m(i)        (=, the same mask)
// with m(i) = keep(i) ? 1/(1 - p) : 0 (a multiply, as PyTorch and the reference: a dropped
// negative value is -0, bit for bit the reference's).
// keep(i) = vit::dropout_keep(seed, site, step, i, p) with i the flat element index: the mask is
// a pure function of (seed, site, step, i), identical to cpu/dropout, never stored — the
// backward recomputes it. p == 0 is a plain copy / add (no draws).
//
// Design: a thread per group of 4 consecutive elements 4q..4q+3. Philox4x32 returns 4 words per
// counter and element i uses word i % 4 of counter i / 4 (common/philox.h), so one Philox call
// gives the thread its whole group's mask. float4 loads/stores when every pointer is 16-byte
// aligned, scalar for the last partial group or unaligned views. Grid-stride, any n.
#pragma once

#include <string>

#include "common/error.h"
#include "common/philox.h"
#include "kernels/common.cuh"
#include "kernels/precision.cuh"
#include "kernels/reduce.cuh"

namespace vit {

// Kept elements are multiplied by scale = 1/(1 - p) computed in float on the host, exactly as
// the reference (vit::ref::dropout_scale), so the two agree bitwise.
template <bool VEC, bool RESIDUAL>
static __global__ void __launch_bounds__(256) dropout_kernel(const floatX* res, const floatX* x, floatX* y, size_t n,
                                      float p, float scale, uint64_t seed, uint32_t site, DevStep step_arg) {
  const uint64_t step = step_arg;  // read once (a graph step lives in device memory)
  const size_t groups = (n + 3) / 4;
  for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < groups;
       q += (size_t)gridDim.x * blockDim.x) {
    const size_t i = q * 4;
    float m[4] = {1.0f, 1.0f, 1.0f, 1.0f};  // p == 0: plain copy / add
    if (p > 0.0f) {
      // = philox_u32(seed, site, step, i + k) for k = 0..3, in one call.
      const Philox4 r = philox4x32_10((uint32_t)q, site, (uint32_t)step, (uint32_t)(step >> 32),
                                      (uint32_t)seed, (uint32_t)(seed >> 32));
      for (int k = 0; k < 4; ++k)  // keep when philox_uniform >= p
        m[k] = (float)(r.v[k] >> 8) * (1.0f / 16777216.0f) >= p ? scale : 0.0f;
    }
    float v[4];
    const bool full = VEC && i + 4 <= n;
    if (full) {
      const float4 a = *reinterpret_cast<const float4*>(x + i);
      v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    } else {
      for (int k = 0; k < 4; ++k) v[k] = i + k < n ? (float)x[i + k] : 0.0f;
    }
    if (p > 0.0f)
      for (int k = 0; k < 4; ++k) v[k] *= m[k];
    if (RESIDUAL) {
      if (full) {
        const float4 a = *reinterpret_cast<const float4*>(res + i);
        v[0] += a.x; v[1] += a.y; v[2] += a.z; v[3] += a.w;
      } else {
        for (int k = 0; k < 4; ++k)
          if (i + k < n) v[k] += (float)res[i + k];
      }
    }
    if (full) {
      *reinterpret_cast<float4*>(y + i) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
      for (int k = 0; k < 4; ++k)
        if (i + k < n) y[i + k] = v[k];
    }
  }
}

inline void dropout_launch(cudaStream_t st, const float* res, const float* x, float* y, size_t n,
                           float p, uint64_t seed, uint32_t site, DevStep step) {
  if (n == 0) return;
  if (!(p >= 0.0f && p < 1.0f))
    throw Error("dropout: probability " + std::to_string(p) + " outside [0, 1)");
  const bool vec = aligned16(x) && aligned16(y) && (!res || aligned16(res));
  const float scale = 1.0f / (1.0f - p);  // = vit::ref::dropout_scale(p)
  const unsigned grid = elementwise_grid(n, 256);
  if (res) {
    if (vec)
      LAUNCH((dropout_kernel<true, true>), grid, 256, 0, st, res, x, y, n, p, scale, seed, site, step);
    else
      LAUNCH((dropout_kernel<false, true>), grid, 256, 0, st, res, x, y, n, p, scale, seed, site, step);
  } else {
    if (vec)
      LAUNCH((dropout_kernel<true, false>), grid, 256, 0, st, res, x, y, n, p, scale, seed, site, step);
    else
      LAUNCH((dropout_kernel<false, false>), grid, 256, 0, st, res, x, y, n, p, scale, seed, site, step);
  }
}

// y (n) = drop(x) (=). In place ok.
inline void dropout_forward(cudaStream_t st, const float* x, float* y, size_t n, float p,
                            uint64_t seed, uint32_t site, DevStep step) {
  dropout_launch(st, nullptr, x, y, n, p, seed, site, step);
}

// out (n) = res + drop(x) (=). out may alias res or x.
inline void dropout_residual_forward(cudaStream_t st, const float* res, const float* x, float* out,
                                     size_t n, float p, uint64_t seed, uint32_t site,
                                     DevStep step) {
  dropout_launch(st, res, x, out, n, p, seed, site, step);
}

// dx (n) = drop(dy) with the forward's mask (=). In place ok.
inline void dropout_backward(cudaStream_t st, const float* dy, float* dx, size_t n, float p,
                             uint64_t seed, uint32_t site, DevStep step) {
  dropout_launch(st, nullptr, dy, dx, n, p, seed, site, step);
}


// ---- the backward's stored output gradients --------------------------------------------------
// dx (N, C; row stride ld) OutT = drop(dy (N, C) contiguous) with the forward's mask of flat
// index r * C + c. OutT: float, or bf16 (bf16 mode: the GEMMs' operand, rounded once). The
// backward keeps these per layer for the weight-gradient GEMMs (host/cuda_model.cu), in the
// storage of a dead FP32 activation of the same rows (a bf16 row then uses ld = 2C, so row r
// stays inside the float row r). dx must not alias dy.
// A thread per element (grid-stride); one Philox call per element (these run once or twice per
// step: the top layer's and, without the fused LayerNorm backward, per layer).
template <class OutT>
static __global__ void __launch_bounds__(256) dropout_backward_rows_kernel(
    const float* __restrict__ dy, OutT* __restrict__ dx, size_t N, int C, size_t ld, float p,
    float scale, uint64_t seed, uint32_t site, DevStep step_arg) {
  const uint64_t step = step_arg;
  const size_t n = N * (size_t)C;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    const size_t r = i / C, c = i % C;
    float v = dy[i];
    if (p > 0.0f) v *= dropout_keep(seed, site, step, i, p) ? scale : 0.0f;
    store1(dx + r * ld + c, v);
  }
}

template <class OutT>
inline void dropout_backward_rows(cudaStream_t st, const float* dy, OutT* dx, size_t N, int C,
                                  size_t ld, float p, uint64_t seed, uint32_t site, DevStep step) {
  if (N == 0 || C <= 0) return;
  if (!(p >= 0.0f && p < 1.0f))
    throw Error("dropout: probability " + std::to_string(p) + " outside [0, 1)");
  if (ld < (size_t)C) throw Error("dropout_backward_rows: row stride smaller than the width");
  LAUNCH(dropout_backward_rows_kernel<OutT>, grid_stride_blocks(N * C, 256), 256, 0, st, dy, dx,
         N, C, ld, p, 1.0f / (1.0f - p), seed, site, step);
}

}  // namespace vit
