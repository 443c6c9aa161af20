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


// ---- many column sums in one launch (the step's bias and LayerNorm weight gradients) ---------
// The backward keeps every layer's GEMM output gradients (host/cuda_model.cu), so the bias
// gradients of all layers, and the LayerNorm weight/bias gradients from the per-block partials
// of the fused GEMM+LayerNorm backward (kernels/gemm_ln.cuh), are column sums that can all run
// at the end of the backward, in one launch: a job per (matrix, output vector).
// Rows of a job at batch B images: ceil(B * rows_mul / rows_div) + rows_add (the batch is a
// launch argument, the jobs are uploaded once). `shift` moves the start `shift` x rows rows down
// (the second half of a buffer whose halves are `rows` rows each: the LN bias partials).
struct ColSumJob {
  const void* a;  // (rows, cols), row stride ld; float, or bf16 when `bf16`
  float* out;     // (cols) +=
  int ld, cols;
  int rows_mul, rows_div, rows_add, shift;
  int bf16;
};

__host__ __device__ inline int colsum_job_rows(const ColSumJob& j, int B) {
  return (int)(((long long)B * j.rows_mul + j.rows_div - 1) / j.rows_div) + j.rows_add;
}

// Block (32, 8) = 32 columns of job blockIdx.y: thread (tx, ty) adds rows ty, ty+8, ... in order
// (32 consecutive columns per warp: coalesced), then the 8 row-lanes are added in ty order. A
// fixed shape: the same bits every run.
static __global__ void __launch_bounds__(256) colsum_many_kernel(const ColSumJob* __restrict__ jobs,
                                                                 int B) {
  __shared__ float acc[8][33];
  const ColSumJob j = jobs[blockIdx.y];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * 32 + tx;
  const int rows = colsum_job_rows(j, B);
  float s = 0.0f;
  if (c < j.cols) {
    const size_t first = (size_t)j.shift * rows;
    if (j.bf16) {
      const __nv_bfloat16* a = (const __nv_bfloat16*)j.a;
      for (int r = ty; r < rows; r += 8) s += __bfloat162float(a[(first + r) * j.ld + c]);
    } else {
      const float* a = (const float*)j.a;
      for (int r = ty; r < rows; r += 8) s += a[(first + r) * j.ld + c];
    }
  }
  acc[ty][tx] = s;
  __syncthreads();
  if (ty == 0 && c < j.cols) {
    float t = 0.0f;
    for (int k = 0; k < 8; ++k) t += acc[k][tx];
    j.out[c] += t;
  }
}

// Every job's out += its column sums. jobs: device array of njobs (uploaded by the caller);
// max_cols: the widest job. Jobs must not share an `out` element (they run concurrently).
inline void column_sums_many(cudaStream_t st, const ColSumJob* jobs, int njobs, int max_cols,
                             int B) {
  if (njobs <= 0 || max_cols <= 0) return;
  if (njobs > 65535) throw Error("column_sums_many: more than 65535 jobs");
  LAUNCH(colsum_many_kernel, dim3(ceil_div(max_cols, 32), njobs), dim3(32, 8), 0, st, jobs, B);
}

}  // namespace vit
