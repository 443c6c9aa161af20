// kernels/wmma_gemm.cuh — a BF16 tensor-core GEMM written with nvcuda::wmma and pipeline async
// copies, the two APIs the tensor-core kernels use (and simt emulates), as a small real use of
// both:
//
//   C (M, N) = A (M, K) B (N, K)^T [+ bias (N) on every row],   A, B bf16 row-major, C float
//
// i.e. nn.Linear's forward y = x W^T + b with x (M = rows, K = in), W (N = out, K = in) as PyTorch
// stores it. FP32 accumulation; any M, N, K >= 1 (edge tiles are zero-padded in shared memory).
//
// Tiling: a block of 4 warps computes a 64 x 64 tile of C, each warp a 32 x 32 quarter as 2 x 2
// m16n16k16 accumulators. K advances 32 at a time through a double buffer: while tile t is
// multiplied, tile t + 1 is in flight as 16-byte __pipeline_memcpy_async copies (when K % 8 == 0
// and A, B are 16-byte aligned, so every 8-element chunk of a row is one aligned copy; otherwise
// the tiles are loaded synchronously). B's tile is stored as its rows (n, k), which is the
// col_major layout of the K x N operand W^T, so no transpose is needed. The accumulators go
// through shared memory to reach C: a fragment's element-to-lane mapping is unspecified, so the
// bounds checks and the bias need (row, col) positions, which only a stored tile has.
#pragma once

#include <cuda_pipeline.h>
#include <mma.h>

#include <cstdint>
#include <string>

#include "common/error.h"
#include "kernels/common.cuh"

namespace vit {

namespace wmma_gemm {
constexpr int kBM = 64, kBN = 64, kBK = 32;  // block tile of C, and of K per pipeline stage
constexpr int kLd = kBK + 8;                 // smem row pitch of the A/B tiles: 80 bytes
constexpr int kCLd = kBN + 4;                // smem row pitch of the C tile: 272 bytes
constexpr int kThreads = 128;

// Rows [row0, row0 + kBM) x columns [k0, k0 + kBK) of a row-major (rows, K) bf16 matrix into
// dst, zero outside the matrix. vec: 16-byte async copies (K % 8 == 0, src 16-byte aligned, so an
// 8-element chunk is either all inside or all outside); else synchronous element loads.
__device__ inline void load_tile(__nv_bfloat16 (*dst)[kLd], const __nv_bfloat16* __restrict__ src,
                                 int rows, int K, int row0, int k0, bool vec) {
  constexpr int kChunks = kBK / 8;  // 16-byte chunks per tile row
  for (int c = threadIdx.x; c < kBM * kChunks; c += kThreads) {
    const int r = c / kChunks, kc = (c % kChunks) * 8;
    const int gr = row0 + r, gk = k0 + kc;
    if (vec && gr < rows && gk < K) {
      __pipeline_memcpy_async(&dst[r][kc], src + (size_t)gr * K + gk, 16);
    } else {
      for (int j = 0; j < 8; ++j)
        dst[r][kc + j] = gr < rows && gk + j < K ? src[(size_t)gr * K + gk + j] : __float2bfloat16(0.0f);
    }
  }
}
}  // namespace wmma_gemm

template <bool BIAS>
static __global__ void __launch_bounds__(wmma_gemm::kThreads)
    gemm_nt_bf16_wmma_kernel(const __nv_bfloat16* __restrict__ A, const __nv_bfloat16* __restrict__ B,
                             const float* __restrict__ bias, float* __restrict__ C, int M, int N,
                             int K, bool vec) {
  using namespace nvcuda;
  using namespace wmma_gemm;
  __shared__ __align__(32) __nv_bfloat16 As[2][kBM][kLd];  // A rows x k, per stage
  __shared__ __align__(32) __nv_bfloat16 Bs[2][kBN][kLd];  // B rows (= columns of C) x k
  __shared__ __align__(32) float Cs[kBM][kCLd];            // the block's C tile
  const int row0 = blockIdx.y * kBM, col0 = blockIdx.x * kBN;
  const int warp = threadIdx.x / 32, wr = (warp / 2) * 32, wc = (warp % 2) * 32;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  const int tiles = (K + kBK - 1) / kBK;
  load_tile(As[0], A, M, K, row0, 0, vec);
  load_tile(Bs[0], B, N, K, col0, 0, vec);
  __pipeline_commit();
  for (int t = 0; t < tiles; ++t) {
    const int s = t & 1;
    if (t + 1 < tiles) {  // buffer s ^ 1 was released by the barrier that ended iteration t - 1
      load_tile(As[s ^ 1], A, M, K, row0, (t + 1) * kBK, vec);
      load_tile(Bs[s ^ 1], B, N, K, col0, (t + 1) * kBK, vec);
    }
    __pipeline_commit();       // (an empty batch on the last tile keeps the count uniform)
    __pipeline_wait_prior(1);  // this thread's copies of tile t have landed
    __syncthreads();           // ... and everyone else's
    for (int kk = 0; kk < kBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b[2];
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], &As[s][wr + 16 * i][kk], kLd);
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], &Bs[s][wc + 16 * j][kk], kLd);
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    __syncthreads();  // everyone is done with buffer s before iteration t + 1 refills it
  }

  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&Cs[wr + 16 * i][wc + 16 * j], acc[i][j], kCLd, wmma::mem_row_major);
  __syncthreads();
  for (int e = threadIdx.x; e < kBM * kBN; e += kThreads) {
    const int r = e / kBN, c = e % kBN, gr = row0 + r, gc = col0 + c;
    if (gr < M && gc < N) C[(size_t)gr * N + gc] = Cs[r][c] + (BIAS ? bias[gc] : 0.0f);
  }
}

// C (M, N) = A (M, K) B (N, K)^T (+ bias), see the top of the file. Throws vit::Error on bad
// sizes.
inline void gemm_nt_bf16_wmma(const __nv_bfloat16* A, const __nv_bfloat16* B, const float* bias,
                              float* C, int M, int N, int K, cudaStream_t stream) {
  using namespace wmma_gemm;
  if (M < 1 || N < 1 || K < 1 || (M + kBM - 1) / kBM > 65535)  // grid.y = M / 64 <= 65535
    throw Error("gemm_nt_bf16_wmma: sizes M=" + std::to_string(M) + " N=" + std::to_string(N) +
                " K=" + std::to_string(K) + " must be >= 1 with M <= 4194240");
  const bool vec = K % 8 == 0 && reinterpret_cast<uintptr_t>(A) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(B) % 16 == 0;
  const dim3 grid((N + kBN - 1) / kBN, (M + kBM - 1) / kBM);
  if (bias) LAUNCH((gemm_nt_bf16_wmma_kernel<true>), grid, kThreads, 0, stream, A, B, bias, C, M, N, K, vec);
  else LAUNCH((gemm_nt_bf16_wmma_kernel<false>), grid, kThreads, 0, stream, A, B, bias, C, M, N, K, vec);
}

}  // namespace vit
