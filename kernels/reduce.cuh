// kernels/reduce.cuh — the reductions the layer kernels share: warp sums/max by shuffles, a
// block sum through shared memory, and a deterministic two-stage column sum.
//
// Determinism: every reduction here has a fixed shape. Butterfly (xor) shuffles leave the same
// bits in every lane (float addition is commutative, so lanes l and l^o add the same pair), the
// block sum adds the per-warp results in warp order, and column sums go through per-chunk
// partials in scratch that one final kernel adds in chunk order. No float atomics anywhere, so
// the same inputs give bitwise identical outputs on every run and every GPU.
#pragma once

#include <string>

#include "common/error.h"
#include "kernels/common.cuh"

namespace vit {

static __device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

static __device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum of `v` over the whole block (blockDim.x a multiple of 32, at most 1024), returned to every
// thread. `shared` holds 32 floats. Contains two barriers: every thread of the block must call it.
static __device__ __forceinline__ float block_sum(float v, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float s = 0.0f;
  for (int w = 0; w < nwarps; ++w) s += shared[w];  // same order in every thread
  __syncthreads();  // `shared` may be reused right after
  return s;
}

// ---- deterministic column sums of a row-major (N, C) matrix (row stride ld) ------------------
// Stage 1: block (32, 8) owns 32 columns x COLSUM_ROWS rows; thread (tx, ty) walks rows
// ty, ty+8, ... of its chunk in order (32 consecutive columns per warp: coalesced), then the 8
// row-lanes are added in ty order. partial (nchunks, C) =.
// Stage 2: one thread per column adds the chunks in chunk order into out (+=).
constexpr int COLSUM_ROWS = 128;

inline int colsum_chunks(int N) { return (int)ceil_div((size_t)N, COLSUM_ROWS); }

static __global__ void __launch_bounds__(256) colsum_partial_kernel(const float* __restrict__ a, int N, int C, int ld,
                                      float* __restrict__ partial) {
  __shared__ float acc[8][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * 32 + tx;
  const int r0 = blockIdx.y * COLSUM_ROWS;
  const int r1 = min(r0 + COLSUM_ROWS, N);
  float s = 0.0f;
  if (c < C)
    for (int r = r0 + ty; r < r1; r += 8) s += a[(size_t)r * ld + c];
  acc[ty][tx] = s;
  __syncthreads();
  if (ty == 0 && c < C) {
    float t = 0.0f;
    for (int k = 0; k < 8; ++k) t += acc[k][tx];
    partial[(size_t)blockIdx.y * C + c] = t;
  }
}

static __global__ void __launch_bounds__(256) colsum_final_kernel(const float* __restrict__ partial, int nchunks, int C,
                                    float* __restrict__ out) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.0f;
  for (int k = 0; k < nchunks; ++k) s += partial[(size_t)k * C + c];
  out[c] += s;
}

// out (C) += column sums of a (N, C; row stride ld). scratch: colsum_chunks(N) * C floats.
inline void column_sum_accumulate(cudaStream_t st, const float* a, int N, int C, int ld,
                                  float* out, float* scratch) {
  if (N <= 0 || C <= 0) return;
  if (colsum_chunks(N) > 65535)  // gridDim.y limit
    throw Error("column sum over " + std::to_string(N) + " rows: at most " +
                std::to_string(65535 * COLSUM_ROWS) + " rows supported (lower the batch size)");
  const int nchunks = colsum_chunks(N);
  LAUNCH(colsum_partial_kernel, dim3(ceil_div(C, 32), nchunks), dim3(32, 8), 0, st, a, N, C, ld,
         scratch);
  LAUNCH(colsum_final_kernel, ceil_div(C, 256), 256, 0, st, scratch, nchunks, C, out);
}

// True when p is 16-byte aligned, so float4 loads/stores on it are legal.
inline bool aligned16(const void* p) { return ((uintptr_t)p & 15u) == 0; }

// Blocks for a grid-stride loop over `threads` work items: capped at 65536 blocks (the loop
// covers the rest), at least 1.
inline unsigned grid_stride_blocks(size_t threads, int block) {
  const size_t blocks = (threads + block - 1) / block;
  return (unsigned)(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

// Grid of the elementwise kernels that give each thread 4 consecutive elements.
inline unsigned elementwise_grid(size_t n, int block) {
  return grid_stride_blocks((n + 3) / 4, block);
}

}  // namespace vit
