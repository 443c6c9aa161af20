// kernels/layernorm.cuh — LayerNorm over the last dimension, forward and backward.
//
//   forward:  x (N, C) -> y (N, C) = (x - mean) * rstd * w + b,  w, b (C);
//             mean (N), rstd (N) = 1/sqrt(var + eps) saved for the backward. var is the biased
//             variance (divide by C), as PyTorch. mean/rstd may be nullptr (inference).
//             y is FP32, or BF16 under --precision bf16 (the LN output only feeds GEMMs): the
//             statistics and the normalisation are FP32 either way, y is rounded once.
//   backward: dx (N, C) += rstd * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat)),
//             dnorm = dy * w, xhat = (x - mean) * rstd.  ACCUMULATES into dx: in the transformer
//             the LN input is the residual stream, whose gradient already holds the skip path.
//             dw (C) += sum_rows dy * xhat,  db (C) += sum_rows dy.
//
// Design: one warp per row (rows are 64..768 floats: a warp covers a row in 2..24 coalesced
// steps, and the row statistics are warp shuffles, no shared memory, no barrier). The variance
// is the two-pass sum of (x - mean)^2 over the row (re-read from L1/L2), not E[x^2] - mean^2,
// which cancels badly when |mean| >> std. float4 loads when C % 4 == 0 and the pointers are
// 16-byte aligned, scalar loads otherwise (any C works).
// dw/db are column sums over N rows; to stay deterministic without float atomics they go
// through per-chunk partials: a (32 columns x 8 row-lanes) block walks LN_BWD_ROWS rows of its
// chunk in a fixed order and writes one partial per column into scratch; a final kernel adds
// the chunks in order. Three launches for the backward: dx, partials, final.
#pragma once

#include <string>

#include "common/error.h"
#include "kernels/common.cuh"
#include "kernels/precision.cuh"
#include "kernels/reduce.cuh"

namespace vit {

constexpr int LN_WARPS = 8;         // rows per block in the row kernels (256 threads)
constexpr int LN_BWD_ROWS = 128;    // rows per chunk of the dw/db partial sums

template <bool VEC, class YT>
static __global__ void __launch_bounds__(LN_WARPS * 32) layernorm_forward_kernel(const floatX* __restrict__ x,
                                                const floatX* __restrict__ w,
                                                const floatX* __restrict__ b,
                                                YT* __restrict__ y, float* __restrict__ mean,
                                                float* __restrict__ rstd, int N, int C,
                                                float eps) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * LN_WARPS + threadIdx.x / 32;
  if (row >= N) return;  // the whole warp leaves together
  const floatX* xr = x + (size_t)row * C;
  YT* yr = y + (size_t)row * C;

  float s = 0.0f;
  if (VEC) {
    for (int i = lane * 4; i < C; i += 128) {
      const float4 v = *reinterpret_cast<const float4*>(xr + i);
      s += (v.x + v.y) + (v.z + v.w);
    }
  } else {
    for (int i = lane; i < C; i += 32) s += (float)xr[i];
  }
  const float m = warp_sum(s) / (float)C;

  float ss = 0.0f;
  if (VEC) {
    for (int i = lane * 4; i < C; i += 128) {
      const float4 v = *reinterpret_cast<const float4*>(xr + i);
      const float a = v.x - m, bb = v.y - m, c = v.z - m, d = v.w - m;
      ss += (a * a + bb * bb) + (c * c + d * d);
    }
  } else {
    for (int i = lane; i < C; i += 32) {
      const float d = (float)xr[i] - m;
      ss += d * d;
    }
  }
  const float r = 1.0f / sqrtf(warp_sum(ss) / (float)C + eps);

  if (VEC) {
    for (int i = lane * 4; i < C; i += 128) {
      const float4 v = *reinterpret_cast<const float4*>(xr + i);
      const float4 wv = *reinterpret_cast<const float4*>(w + i);
      const float4 bv = *reinterpret_cast<const float4*>(b + i);
      float4 o;
      o.x = (v.x - m) * r * wv.x + bv.x;
      o.y = (v.y - m) * r * wv.y + bv.y;
      o.z = (v.z - m) * r * wv.z + bv.z;
      o.w = (v.w - m) * r * wv.w + bv.w;
      store4(yr + i, o);
    }
  } else {
    for (int i = lane; i < C; i += 32) store1(yr + i, ((float)xr[i] - m) * r * (float)w[i] + (float)b[i]);
  }
  if (lane == 0) {
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = r;
  }
}

template <bool VEC>
static __global__ void __launch_bounds__(LN_WARPS * 32) layernorm_backward_dx_kernel(const floatX* __restrict__ dy,
                                                    const floatX* __restrict__ x,
                                                    const floatX* __restrict__ w,
                                                    const float* __restrict__ mean,
                                                    const float* __restrict__ rstd,
                                                    floatX* __restrict__ dx, int N, int C) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * LN_WARPS + threadIdx.x / 32;
  if (row >= N) return;
  const floatX* dyr = dy + (size_t)row * C;
  const floatX* xr = x + (size_t)row * C;
  floatX* dxr = dx + (size_t)row * C;
  const float m = mean[row], r = rstd[row];

  // The two row means of the LayerNorm backward: mean(dnorm) and mean(dnorm * xhat).
  float sd = 0.0f, sdx = 0.0f;
  if (VEC) {
    for (int i = lane * 4; i < C; i += 128) {
      const float4 g = *reinterpret_cast<const float4*>(dyr + i);
      const float4 v = *reinterpret_cast<const float4*>(xr + i);
      const float4 wv = *reinterpret_cast<const float4*>(w + i);
      const float d0 = g.x * wv.x, d1 = g.y * wv.y, d2 = g.z * wv.z, d3 = g.w * wv.w;
      sd += (d0 + d1) + (d2 + d3);
      sdx += (d0 * ((v.x - m) * r) + d1 * ((v.y - m) * r)) +
             (d2 * ((v.z - m) * r) + d3 * ((v.w - m) * r));
    }
  } else {
    for (int i = lane; i < C; i += 32) {
      const float d = (float)dyr[i] * (float)w[i];
      sd += d;
      sdx += d * (((float)xr[i] - m) * r);
    }
  }
  const float md = warp_sum(sd) / (float)C;
  const float mdx = warp_sum(sdx) / (float)C;

  if (VEC) {
    for (int i = lane * 4; i < C; i += 128) {
      const float4 g = *reinterpret_cast<const float4*>(dyr + i);
      const float4 v = *reinterpret_cast<const float4*>(xr + i);
      const float4 wv = *reinterpret_cast<const float4*>(w + i);
      float4 o = *reinterpret_cast<const float4*>(dxr + i);
      o.x += r * (g.x * wv.x - md - ((v.x - m) * r) * mdx);
      o.y += r * (g.y * wv.y - md - ((v.y - m) * r) * mdx);
      o.z += r * (g.z * wv.z - md - ((v.z - m) * r) * mdx);
      o.w += r * (g.w * wv.w - md - ((v.w - m) * r) * mdx);
      *reinterpret_cast<float4*>(dxr + i) = o;
    }
  } else {
    for (int i = lane; i < C; i += 32) {
      const float xhat = ((float)xr[i] - m) * r;
      dxr[i] = (float)dxr[i] + r * ((float)dyr[i] * (float)w[i] - md - xhat * mdx);
    }
  }
}

// partial (2, nchunks, C): [0] sums of dy * xhat, [1] sums of dy, over the rows of each chunk.
static __global__ void __launch_bounds__(256) layernorm_backward_dwdb_partial_kernel(const floatX* __restrict__ dy,
                                                              const floatX* __restrict__ x,
                                                              const float* __restrict__ mean,
                                                              const float* __restrict__ rstd,
                                                              float* __restrict__ partial, int N,
                                                              int C) {
  __shared__ float acc_w[8][33], acc_b[8][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * 32 + tx;
  const int r0 = blockIdx.y * LN_BWD_ROWS;
  const int r1 = min(r0 + LN_BWD_ROWS, N);
  float sw = 0.0f, sb = 0.0f;
  if (c < C) {
    for (int r = r0 + ty; r < r1; r += 8) {
      const float g = (float)dy[(size_t)r * C + c];
      sw += g * (((float)x[(size_t)r * C + c] - mean[r]) * rstd[r]);
      sb += g;
    }
  }
  acc_w[ty][tx] = sw;
  acc_b[ty][tx] = sb;
  __syncthreads();
  if (ty == 0 && c < C) {
    float tw = 0.0f, tb = 0.0f;
    for (int k = 0; k < 8; ++k) {
      tw += acc_w[k][tx];
      tb += acc_b[k][tx];
    }
    const size_t nchunks = gridDim.y;
    partial[(size_t)blockIdx.y * C + c] = tw;
    partial[(nchunks + blockIdx.y) * C + c] = tb;
  }
}

static __global__ void __launch_bounds__(256) layernorm_backward_dwdb_final_kernel(const float* __restrict__ partial,
                                                            int nchunks, int C,
                                                            floatX* __restrict__ dw,
                                                            floatX* __restrict__ db) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float tw = 0.0f, tb = 0.0f;
  for (int k = 0; k < nchunks; ++k) {
    tw += partial[(size_t)k * C + c];
    tb += partial[((size_t)nchunks + k) * C + c];
  }
  dw[c] = (float)dw[c] + tw;
  db[c] = (float)db[c] + tb;
}

// ---- launchers ------------------------------------------------------------------------------

inline size_t layernorm_scratch_floats(int N, int C) {
  return 2 * (size_t)ceil_div((size_t)N, LN_BWD_ROWS) * (size_t)C;
}

// y (N, C) =; mean, rstd (N) = (either may be nullptr). y: float, or bf16 (--precision bf16).
template <class YT>
inline void layernorm_forward_t(cudaStream_t st, const float* x, const float* w, const float* b,
                                YT* y, float* mean, float* rstd, int N, int C, float eps) {
  if (N <= 0) return;
  if (C <= 0) throw Error("layernorm_forward: width C must be positive");
  const bool vec = C % 4 == 0 && aligned16(x) && aligned16(w) && aligned16(b) && aligned_store4(y);
  const unsigned grid = ceil_div(N, LN_WARPS);
  if (vec)
    LAUNCH((layernorm_forward_kernel<true, YT>), grid, LN_WARPS * 32, 0, st, x, w, b, y, mean,
           rstd, N, C, eps);
  else
    LAUNCH((layernorm_forward_kernel<false, YT>), grid, LN_WARPS * 32, 0, st, x, w, b, y, mean,
           rstd, N, C, eps);
}
inline void layernorm_forward(cudaStream_t st, const float* x, const float* w, const float* b,
                              float* y, float* mean, float* rstd, int N, int C, float eps) {
  layernorm_forward_t(st, x, w, b, y, mean, rstd, N, C, eps);
}
inline void layernorm_forward(cudaStream_t st, const float* x, const float* w, const float* b,
                              bf16* y, float* mean, float* rstd, int N, int C, float eps) {
  layernorm_forward_t(st, x, w, b, y, mean, rstd, N, C, eps);
}

// dx (N, C) +=, dw (C) +=, db (C) +=. scratch: layernorm_scratch_floats(N, C) floats.
inline void layernorm_backward(cudaStream_t st, const float* dy, const float* x, const float* w,
                               const float* mean, const float* rstd, float* dx, float* dw,
                               float* db, float* scratch, int N, int C) {
  if (N <= 0) return;
  if (C <= 0) throw Error("layernorm_backward: width C must be positive");
  const bool vec =
      C % 4 == 0 && aligned16(dy) && aligned16(x) && aligned16(w) && aligned16(dx);
  const unsigned grid = ceil_div(N, LN_WARPS);
  if (vec)
    LAUNCH(layernorm_backward_dx_kernel<true>, grid, LN_WARPS * 32, 0, st, dy, x, w, mean, rstd,
           dx, N, C);
  else
    LAUNCH(layernorm_backward_dx_kernel<false>, grid, LN_WARPS * 32, 0, st, dy, x, w, mean, rstd,
           dx, N, C);
  const int nchunks = (int)ceil_div(N, LN_BWD_ROWS);
  if (nchunks > 65535)  // gridDim.y limit of the partial-sum kernel
    throw Error("layernorm_backward: " + std::to_string(N) + " rows: at most " +
                std::to_string(65535 * LN_BWD_ROWS) + " supported (lower the batch size)");
  LAUNCH(layernorm_backward_dwdb_partial_kernel, dim3(ceil_div(C, 32), nchunks), dim3(32, 8), 0,
         st, dy, x, mean, rstd, scratch, N, C);
  LAUNCH(layernorm_backward_dwdb_final_kernel, ceil_div(C, 256), 256, 0, st, scratch, nchunks, C,
         dw, db);
}

}  // namespace vit
