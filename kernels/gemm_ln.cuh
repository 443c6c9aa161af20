// kernels/gemm_ln.cuh — a GEMM whose block owns whole output rows, so the row-wise work that
// follows it in a transformer layer (bias, dropout, residual add, LayerNorm forward / backward)
// runs in the GEMM's epilogue: one launch instead of a GEMM and two or three row kernels.
//
//   forward (after attention-proj and after FC2):
//     z (N, C) = x (N, K; row stride ldx) W^T + bias,   W (C, K) = nn.Linear.weight (out C, in K)
//     out (N, C) FP32 = res + dropout(z)                 (=; out may alias res)
//     if ln_w: y (N, C) YT = LayerNorm(out) * ln_w + ln_b (=), mean, rstd (N) (=, may be null)
//   backward (FC1's dx GEMM + LN2 backward; QKV's dx GEMM + LN1 backward):
//     g (N, C) = dy (N, K; row stride lddy) W,           W (K, C) = nn.Linear.weight (out K, in C)
//     dx = LayerNorm backward of g (the gradient of the LN output) at the LN input x (N, C)
//     dres (N, C) += dx                                  (+=: the residual-stream gradient)
//     if mask_out: mask_out (N, C; row stride ld_mask) AT = dropout_backward(new dres) (=)
//     partial (2, row_blocks, C) = per block of rows: sums of g * xhat (ln_w grad), of g (ln_b)
//
// The dropout mask of element (r, c) is that of flat index r*C + c, exactly as
// dropout_residual_forward / dropout_backward (kernels/dropout.cuh) draw it: one Philox call
// per 4 consecutive flat indices, keep when uniform >= p, kept values multiplied by
// scale = 1/(1-p) (float, as vit::ref::dropout_scale). p == 0 draws nothing.
//
// Precision: Fp32 multiplies on FP32 FMAs (exact products, FP32 sums in k order); Tf32 on
// WMMA m16n16k8 tensor cores with the operands rounded by wmma::__float_to_tf32; Bf16 on WMMA
// m16n16k16 with BF16 operands. FP32 accumulation always; everything after the GEMM in FP32;
// a BF16 y / mask_out is rounded once at the store (round to nearest even).
//
// Design. A block of 8 warps owns BM rows (32, or 16 when C > 768 so that shared memory fits
// an A100's 163 KiB) and ALL C columns (C padded to Cp, a multiple of 16, in shared memory):
// the row statistics of the LayerNorm then never leave the block. Column tiles (16 wide) are
// split among the warps; a warp holds at most 2 x 4 accumulator tiles (64 floats per lane), so
// wide rows are done in `passes` column passes (C = 768: 2 passes of 384 columns), each
// re-streaming the block's A rows (small) against its slice of W. K advances BK (64 bytes of
// K) at a time through a double buffer: tile s + 1 is in flight as 16-byte
// __pipeline_memcpy_async copies (when the strides and pointers allow it; otherwise
// synchronous loads, zero outside the matrices) while tile s is multiplied; the (pass, k-tile)
// steps form one sequence, so the pipeline does not drain between passes. Each pass ends by
// storing its accumulators into the block's C tile in shared memory (BM x Cp floats): the
// epilogue needs (row, col) positions, which a fragment's unspecified element-to-lane mapping
// does not give. With a single pass the C tile reuses the staging buffers' memory.
// Epilogues: forward — a warp per row, each lane owning whole groups of 4 flat indices (one
// Philox call per group), the row's sums by warp shuffles: out, then the two-pass variance on
// the out values kept in the C tile, then y. Backward — (1) a warp per row: the two row means
// of the LN backward, mean(dn) and mean(dn * xhat); (2) a thread per column walking the block's
// rows in order: the ln_w / ln_b partial sums (deterministic, no atomics) and dx, written over
// g in the C tile; (3) after a barrier — x is no longer read, so mask_out may overwrite it — a
// warp per row: dres += dx and the dropout of the new dres into mask_out.
// Costs: W is streamed once per row block (N/BM times): for C up to 768 that is the price of
// owning full rows; it is what buys the fused epilogue.
// Shared memory: at most 165,376 bytes (C in 513..768, forward), within an A100's and an H100's
// opt-in limit; parts with 99 KiB (sm_86, sm_89) take C <= 512, and a launch that does not fit
// the device throws vit::Error naming the bytes.
#pragma once

#include <cuda_pipeline.h>
#include <mma.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>

#include "common/error.h"
#include "common/model.h"
#include "common/philox.h"
#include "kernels/common.cuh"
#include "kernels/precision.cuh"
#include "kernels/reduce.cuh"

namespace vit {

constexpr int GEMM_LN_THREADS = 256;  // 8 warps per block
constexpr int GEMM_LN_MAX_C = 1024;

namespace gemm_ln {

constexpr int kWarps = GEMM_LN_THREADS / 32;
constexpr int kMaxTp = 4;  // column tiles per warp per pass (x 2 row tiles: 8 accumulators)
enum Mode { kFp32 = 0, kTf32 = 1, kBf16 = 2 };

// Staging tiles of operand type AT: V elements per 16-byte chunk, BK = 4 chunks of K per
// pipeline stage (32 bf16 / 16 floats), LDK = the pitch of a k-contiguous tile row (80 bytes:
// a multiple of 16 as WMMA and the async copies need, and rows 4 banks apart), PADN = the pad
// of an n-contiguous row (the backward's W tile).
template <class AT>
struct Tile {
  static constexpr int V = 16 / (int)sizeof(AT);
  static constexpr int BK = 4 * V;
  static constexpr int LDK = BK + V;
  static constexpr int PADN = V;
};

// Shape of one launch, computed on the host, passed by value to the kernel.
struct Geometry {
  int bm, mt;       // rows per block (16 * mt), row tiles
  int cp, tiles;    // C padded to 16, its column tiles
  int tp, passes;   // column tiles per warp per pass, number of passes
  int pc;           // columns per pass (kWarps * tp * 16)
  int ldc;          // pitch of the C tile, cp + 4 floats
  int ldb;          // pitch of the W staging tile (LDK forward, pc + PADN backward)
  int b_offset;     // bytes from a stage's A tile to its W tile
  int stage_bytes;  // one pipeline stage (A + W tiles)
  int cs_offset;    // bytes from the start of shared memory to the C tile
  int extra_offset; // bytes to the per-row scratch of the backward (4 * bm floats)
  int smem;         // dynamic shared memory of the launch
};

inline int round128(int b) { return (b + 127) / 128 * 128; }
inline int block_rows(int C) { return C <= 768 ? 32 : 16; }

template <class AT>
inline Geometry geometry(int C, bool backward) {
  using T = Tile<AT>;
  Geometry g;
  g.bm = block_rows(C);
  g.mt = g.bm / 16;
  g.cp = (C + 15) / 16 * 16;
  g.tiles = g.cp / 16;
  const int per_warp = (g.tiles + kWarps - 1) / kWarps;  // column tiles per warp, all passes
  g.passes = (per_warp + kMaxTp - 1) / kMaxTp;
  g.tp = (per_warp + g.passes - 1) / g.passes;           // balanced over the passes
  g.pc = kWarps * g.tp * 16;
  g.ldc = g.cp + 4;
  g.ldb = backward ? g.pc + T::PADN : T::LDK;
  const int a_bytes = g.bm * T::LDK * (int)sizeof(AT);                       // (bm, BK)
  const int b_bytes = (backward ? T::BK * g.ldb : g.pc * T::LDK) * (int)sizeof(AT);  // W tile
  g.b_offset = round128(a_bytes);
  g.stage_bytes = g.b_offset + round128(b_bytes);
  const int staging = 2 * g.stage_bytes, cs_bytes = g.bm * g.ldc * 4;        // (bm, cp) floats
  g.cs_offset = g.passes == 1 ? 0 : staging;  // one pass: the C tile reuses the staging memory
  const int main_bytes = g.passes == 1 ? (staging > cs_bytes ? staging : cs_bytes) : staging + cs_bytes;
  g.extra_offset = round128(main_bytes);
  g.smem = g.extra_offset + (backward ? 4 * g.bm * 4 : 0);
  return g;
}

// The kernels' dynamic shared memory, declared 128-byte aligned (WMMA needs 32; kernels/
// common.cuh's VIT_DYNAMIC_SMEM promises 16); simt's dynamic shared memory is 256-byte aligned.
#if defined(__CUDACC__)
#define GEMM_LN_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#else
#define GEMM_LN_SMEM(name) VIT_DYNAMIC_SMEM(unsigned char, name)
#endif

// Unrolling keeps the accumulator arrays in registers under nvcc (their indices become
// constants); g++ (simt) does not know the pragma and would warn.
#if defined(__CUDACC__)
#define GEMM_LN_UNROLL _Pragma("unroll")
#else
#define GEMM_LN_UNROLL
#endif

// dst (nrows, ncols; pitch ldd) = the window of a row-major matrix at src (row stride lds) with
// rows < rv and columns < cv valid, zero elsewhere. ncols is a multiple of V. vec: 16-byte async
// copies (src 16-byte aligned, lds and cv multiples of V, so a chunk is all inside or all
// outside); else synchronous element loads.
template <class AT>
static __device__ __forceinline__ void copy_tile(AT* dst, int ldd, const AT* __restrict__ src,
                                                 size_t lds, int nrows, int ncols, int rv, int cv,
                                                 bool vec) {
  constexpr int V = Tile<AT>::V;
  const int cpr = ncols / V;  // chunks per row
  for (int q = threadIdx.x; q < nrows * cpr; q += GEMM_LN_THREADS) {
    const int r = q / cpr, c = (q % cpr) * V;
    AT* d = dst + r * ldd + c;
    if (vec && r < rv && c < cv) {
      __pipeline_memcpy_async(d, src + (size_t)r * lds + c, 16);
    } else {
      for (int j = 0; j < V; ++j) {
        if (r < rv && c + j < cv) d[j] = src[(size_t)r * lds + c + j];
        else store1(d + j, 0.0f);
      }
    }
  }
}

// The block's GEMM into the C tile: Cs (bm, cp) = A rows [row0, row0 + bm) (row stride lda,
// K columns) times W^T (forward, W (C, K)) or W (backward, W (K, C)). Rows >= N and columns
// >= C of Cs hold zeros. Ends with a barrier: Cs is complete for every thread.
template <int MODE, bool BWD, class AT>
static __device__ __forceinline__ void gemm_block(const Geometry& g, const AT* __restrict__ A,
                                                  size_t lda, const AT* __restrict__ W, int N,
                                                  int K, int C, int row0, bool vec_a, bool vec_b,
                                                  unsigned char* smem, float* Cs) {
  using T = Tile<AT>;
  const int kt = (K + T::BK - 1) / T::BK;  // k tiles per pass
  const int steps = g.passes * kt;
  const int warp = threadIdx.x / 32;
  auto stage_a = [&](int s) { return reinterpret_cast<AT*>(smem + (s & 1) * g.stage_bytes); };
  auto stage_b = [&](int s) {
    return reinterpret_cast<AT*>(smem + (s & 1) * g.stage_bytes + g.b_offset);
  };
  // Step s = (pass s / kt, k tile s % kt): A (bm, BK) and the pass's W slice.
  auto issue = [&](int s) {
    const int k0 = (s % kt) * T::BK, c0 = (s / kt) * g.pc;
    const int ncols = min(g.pc, g.cp - c0);  // columns of this pass, a multiple of 16
    copy_tile(stage_a(s), T::LDK, A + (size_t)row0 * lda + k0, lda, g.bm, T::BK, N - row0, K - k0,
              vec_a);
    if (!BWD)  // W rows = output columns c0.., k contiguous: (ncols, BK)
      copy_tile(stage_b(s), T::LDK, W + (size_t)c0 * K + k0, (size_t)K, ncols, T::BK, C - c0,
                K - k0, vec_b);
    else       // W rows = k0.., output columns contiguous: (BK, ncols)
      copy_tile(stage_b(s), g.ldb, W + (size_t)k0 * C + c0, (size_t)C, T::BK, ncols, K - k0,
                C - c0, vec_b);
  };

  issue(0);
  __pipeline_commit();
  if constexpr (MODE == kFp32) {
    // Thread (rg, cg): rows rg + 8i (i < 2 mt), columns cg + 32j (j < 4 tp) of the pass. A warp
    // spans 4 consecutive row groups x 8 consecutive column groups, so each smem read of a k
    // step touches 4 distinct A rows and 8 distinct W rows/columns, in distinct banks.
    const int lane = threadIdx.x % 32;
    const int rg = (warp / 4) * 4 + lane / 8, cg = (warp % 4) * 8 + lane % 8;
    float acc[4][16];
GEMM_LN_UNROLL
    for (int i = 0; i < 4; ++i)
GEMM_LN_UNROLL
      for (int j = 0; j < 16; ++j) acc[i][j] = 0.0f;
    for (int s = 0; s < steps; ++s) {
      if (s + 1 < steps) issue(s + 1);  // its buffer was released by the barrier ending s - 1
      __pipeline_commit();              // (an empty batch on the last step keeps the count)
      __pipeline_wait_prior(1);         // this thread's copies of step s have landed
      __syncthreads();                  // ... and everyone else's
      const float* As = reinterpret_cast<const float*>(stage_a(s));
      const float* Bs = reinterpret_cast<const float*>(stage_b(s));
      const int c0 = (s / kt) * g.pc, ncols = min(g.pc, g.cp - c0);
      for (int kk = 0; kk < T::BK; ++kk) {
        float a[4];
GEMM_LN_UNROLL
        for (int i = 0; i < 4; ++i) a[i] = i < 2 * g.mt ? As[(rg + 8 * i) * T::LDK + kk] : 0.0f;
GEMM_LN_UNROLL
        for (int j = 0; j < 16; ++j) {
          const int col = cg + 32 * j;
          if (j < 4 * g.tp && col < ncols) {
            const float b = BWD ? Bs[kk * g.ldb + col] : Bs[col * T::LDK + kk];
GEMM_LN_UNROLL
            for (int i = 0; i < 4; ++i) acc[i][j] = fmaf(a[i], b, acc[i][j]);
          }
        }
      }
      __syncthreads();  // everyone is done with this buffer before step s + 2 refills it
      if (s % kt == kt - 1) {  // end of a pass: its columns to the C tile
GEMM_LN_UNROLL
        for (int i = 0; i < 4; ++i)
GEMM_LN_UNROLL
          for (int j = 0; j < 16; ++j) {
            const int col = cg + 32 * j;
            if (i < 2 * g.mt && j < 4 * g.tp && col < ncols)
              Cs[(rg + 8 * i) * g.ldc + c0 + col] = acc[i][j];
            acc[i][j] = 0.0f;
          }
      }
    }
  } else {
    using namespace nvcuda;
    constexpr int KS = MODE == kBf16 ? 16 : 8;  // k of one mma
    using InT = typename std::conditional<MODE == kBf16, __nv_bfloat16, wmma::precision::tf32>::type;
    using LayoutB = typename std::conditional<BWD, wmma::row_major, wmma::col_major>::type;
    using FragA = wmma::fragment<wmma::matrix_a, 16, 16, KS, InT, wmma::row_major>;
    using FragB = wmma::fragment<wmma::matrix_b, 16, 16, KS, InT, LayoutB>;
    using FragC = wmma::fragment<wmma::accumulator, 16, 16, KS, float>;
    FragC acc[2][kMaxTp];
GEMM_LN_UNROLL
    for (int i = 0; i < 2; ++i)
GEMM_LN_UNROLL
      for (int j = 0; j < kMaxTp; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
    for (int s = 0; s < steps; ++s) {
      if (s + 1 < steps) issue(s + 1);
      __pipeline_commit();
      __pipeline_wait_prior(1);
      __syncthreads();
      const AT* As = stage_a(s);
      const AT* Bs = stage_b(s);
      const int c0 = (s / kt) * g.pc, ncols = min(g.pc, g.cp - c0);
GEMM_LN_UNROLL
      for (int kk = 0; kk < T::BK; kk += KS) {
        FragA a[2];
GEMM_LN_UNROLL
        for (int i = 0; i < 2; ++i)
          if (i < g.mt) {
            wmma::load_matrix_sync(a[i], As + 16 * i * T::LDK + kk, T::LDK);
            if constexpr (MODE == kTf32)
              for (int e = 0; e < a[i].num_elements; ++e) a[i].x[e] = wmma::__float_to_tf32(a[i].x[e]);
          }
GEMM_LN_UNROLL
        for (int j = 0; j < kMaxTp; ++j) {
          const int col = 16 * (warp * g.tp + j);  // the warp's j-th tile of the pass
          if (j < g.tp && col < ncols) {            // warp-uniform
            FragB b;
            wmma::load_matrix_sync(b, BWD ? Bs + kk * g.ldb + col : Bs + col * T::LDK + kk,
                                   BWD ? g.ldb : T::LDK);
            if constexpr (MODE == kTf32)
              for (int e = 0; e < b.num_elements; ++e) b.x[e] = wmma::__float_to_tf32(b.x[e]);
GEMM_LN_UNROLL
            for (int i = 0; i < 2; ++i)
              if (i < g.mt) wmma::mma_sync(acc[i][j], a[i], b, acc[i][j]);
          }
        }
      }
      __syncthreads();
      if (s % kt == kt - 1) {
GEMM_LN_UNROLL
        for (int j = 0; j < kMaxTp; ++j) {
          const int col = 16 * (warp * g.tp + j);
          if (j < g.tp && col < ncols)
GEMM_LN_UNROLL
            for (int i = 0; i < 2; ++i)
              if (i < g.mt)
                wmma::store_matrix_sync(Cs + 16 * i * g.ldc + c0 + col, acc[i][j], g.ldc,
                                        wmma::mem_row_major);
GEMM_LN_UNROLL
          for (int i = 0; i < 2; ++i) wmma::fill_fragment(acc[i][j], 0.0f);
        }
      }
    }
  }
  __syncthreads();  // the C tile is complete
}

// The 4 dropout multipliers of flat group q (indices 4q .. 4q+3): = dropout_kernel's draw.
static __device__ __forceinline__ void dropout_group(uint64_t q, float p, float scale,
                                                     uint64_t seed, uint32_t site, uint64_t step,
                                                     float m[4]) {
  const Philox4 r = philox4x32_10((uint32_t)q, site, (uint32_t)step, (uint32_t)(step >> 32),
                                  (uint32_t)seed, (uint32_t)(seed >> 32));
GEMM_LN_UNROLL
  for (int k = 0; k < 4; ++k) m[k] = (float)(r.v[k] >> 8) * (1.0f / 16777216.0f) >= p ? scale : 0.0f;
}

template <class AT, class YT>
struct FwdArgs {
  const AT* x;          // (N, K; row stride ldx)
  size_t ldx;
  const AT* W;          // (C, K)
  const float* bias;    // (C) or null
  const float* res;     // (N, C)
  float* out;           // (N, C), may be res
  int N, K, C;
  float p, scale;       // dropout probability, 1 / (1 - p)
  uint64_t seed;
  uint32_t site;
  DevStep step;
  const float* ln_w;    // (C) or null: no LayerNorm
  const float* ln_b;    // (C)
  float eps;
  YT* y;                // (N, C)
  float* mean;          // (N) or null
  float* rstd;          // (N) or null
  bool vec_a, vec_b;    // async copies of x / W
  bool vec_out;         // float4 on res, out, bias (C % 4 == 0, 16-byte aligned)
  bool vec_y;           // float4 on ln_w, ln_b and 4-wide stores of y
};

template <int MODE, class AT, class YT>
static __global__ void __launch_bounds__(GEMM_LN_THREADS)
    gemm_residual_ln_forward_kernel(const Geometry g, const FwdArgs<AT, YT> a) {
  GEMM_LN_SMEM(smem);
  float* Cs = reinterpret_cast<float*>(smem + g.cs_offset);  // (bm, ldc): z, then out
  const int row0 = blockIdx.x * g.bm;
  gemm_block<MODE, false, AT>(g, a.x, a.ldx, a.W, a.N, a.K, a.C, row0, a.vec_a, a.vec_b, smem, Cs);

  const uint64_t step = a.p > 0.0f ? (uint64_t)a.step : 0;  // read once (a graph's step)
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, C = a.C;
  for (int rr = warp; rr < g.bm; rr += kWarps) {
    const int gr = row0 + rr;
    if (gr >= a.N) break;  // warp-uniform
    float* crow = Cs + rr * g.ldc;
    const size_t i0 = (size_t)gr * C, i1 = i0 + C;  // the row's flat indices [i0, i1)
    // Lane owns the flat groups q = i0/4 + lane + 32k (indices 4q..4q+3 inside the row): one
    // Philox call each, and the same elements in every pass below (no exchange through smem).
    const uint64_t q0 = i0 / 4, q1 = (i1 + 3) / 4;
    float s = 0.0f;
    for (uint64_t q = q0 + lane; q < q1; q += 32) {
      float m[4] = {1.0f, 1.0f, 1.0f, 1.0f};
      if (a.p > 0.0f) dropout_group(q, a.p, a.scale, a.seed, a.site, step, m);
      const size_t i = 4 * q;
      if (a.vec_out) {  // C % 4 == 0: the group is 4 columns of this row
        const int c = (int)(i - i0);
        float4 v = *reinterpret_cast<const float4*>(crow + c);
        if (a.bias) {
          const float4 b = *reinterpret_cast<const float4*>(a.bias + c);
          v.x += b.x; v.y += b.y; v.z += b.z; v.w += b.w;
        }
        if (a.p > 0.0f) { v.x *= m[0]; v.y *= m[1]; v.z *= m[2]; v.w *= m[3]; }
        const float4 r = *reinterpret_cast<const float4*>(a.res + i);
        v.x += r.x; v.y += r.y; v.z += r.z; v.w += r.w;
        *reinterpret_cast<float4*>(a.out + i) = v;
        *reinterpret_cast<float4*>(crow + c) = v;
        s += (v.x + v.y) + (v.z + v.w);
      } else {
        for (int k = 0; k < 4; ++k) {
          if (i + k < i0 || i + k >= i1) continue;
          const int c = (int)(i + k - i0);
          float v = crow[c] + (a.bias ? a.bias[c] : 0.0f);
          if (a.p > 0.0f) v *= m[k];
          v = a.res[i + k] + v;
          a.out[i + k] = v;
          crow[c] = v;
          s += v;
        }
      }
    }
    if (!a.ln_w) continue;
    const float mu = warp_sum(s) / (float)C;
    float ss = 0.0f;  // two-pass variance over the out values this lane kept in crow
    for (uint64_t q = q0 + lane; q < q1; q += 32)
      for (int k = 0; k < 4; ++k) {
        const size_t i = 4 * q + k;
        if (i < i0 || i >= i1) continue;
        const float d = crow[i - i0] - mu;
        ss += d * d;
      }
    const float rs = 1.0f / sqrtf(warp_sum(ss) / (float)C + a.eps);
    for (uint64_t q = q0 + lane; q < q1; q += 32) {
      const size_t i = 4 * q;
      if (a.vec_y) {
        const int c = (int)(i - i0);
        const float4 v = *reinterpret_cast<const float4*>(crow + c);
        const float4 w = *reinterpret_cast<const float4*>(a.ln_w + c);
        const float4 b = *reinterpret_cast<const float4*>(a.ln_b + c);
        store4(a.y + i, make_float4((v.x - mu) * rs * w.x + b.x, (v.y - mu) * rs * w.y + b.y,
                                    (v.z - mu) * rs * w.z + b.z, (v.w - mu) * rs * w.w + b.w));
      } else {
        for (int k = 0; k < 4; ++k) {
          if (i + k < i0 || i + k >= i1) continue;
          const int c = (int)(i + k - i0);
          store1(a.y + i + k, (crow[c] - mu) * rs * a.ln_w[c] + a.ln_b[c]);
        }
      }
    }
    if (lane == 0) {
      if (a.mean) a.mean[gr] = mu;
      if (a.rstd) a.rstd[gr] = rs;
    }
  }
}

template <class AT>
struct BwdArgs {
  const AT* dy;         // (N, K; row stride lddy)
  size_t lddy;
  const AT* W;          // (K, C)
  int N, K, C;
  const float* x;       // (N, C): the LN input
  const float* mean;    // (N)
  const float* rstd;    // (N)
  const float* ln_w;    // (C)
  float* dres;          // (N, C) +=
  AT* mask_out;         // (N, C; row stride ld_mask) or null; may lie inside x's rows
  size_t ld_mask;
  float p, scale;
  uint64_t seed;
  uint32_t site;
  DevStep step;
  float* partial;       // (2, gridDim.x, C)
  bool vec_a, vec_b;    // async copies of dy / W
  bool vec_out;         // float4 on dres, 4-wide stores of mask_out
};

template <int MODE, class AT>
static __global__ void __launch_bounds__(GEMM_LN_THREADS)
    gemm_ln_backward_kernel(const Geometry g, const BwdArgs<AT> a) {
  GEMM_LN_SMEM(smem);
  float* Cs = reinterpret_cast<float*>(smem + g.cs_offset);  // (bm, ldc): g, then dx
  float* s_mean = reinterpret_cast<float*>(smem + g.extra_offset);  // (bm) each
  float* s_rstd = s_mean + g.bm;
  float* s_md = s_rstd + g.bm;   // mean over the row of dn = g * ln_w
  float* s_mdx = s_md + g.bm;    // mean over the row of dn * xhat
  const int row0 = blockIdx.x * g.bm;
  gemm_block<MODE, true, AT>(g, a.dy, a.lddy, a.W, a.N, a.K, a.C, row0, a.vec_a, a.vec_b, smem, Cs);

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, C = a.C;
  const int rows = min(g.bm, a.N - row0);
  // (1) a warp per row: the two row means.
  for (int rr = warp; rr < rows; rr += kWarps) {
    const int gr = row0 + rr;
    const float* crow = Cs + rr * g.ldc;
    const float* xr = a.x + (size_t)gr * C;
    const float mu = a.mean[gr], rs = a.rstd[gr];
    float sd = 0.0f, sdx = 0.0f;
    for (int c = lane; c < C; c += 32) {
      const float dn = crow[c] * a.ln_w[c];
      sd += dn;
      sdx += dn * ((xr[c] - mu) * rs);
    }
    sd = warp_sum(sd);
    sdx = warp_sum(sdx);
    if (lane == 0) {
      s_mean[rr] = mu;
      s_rstd[rr] = rs;
      s_md[rr] = sd / (float)C;
      s_mdx[rr] = sdx / (float)C;
    }
  }
  __syncthreads();
  // (2) a thread per column, the block's rows in order: the parameter-gradient partials, and
  // dx = rstd * (dn - mean(dn) - xhat * mean(dn * xhat)) over g in the C tile.
  const size_t nblk = gridDim.x;
  for (int c = threadIdx.x; c < C; c += GEMM_LN_THREADS) {
    const float w = a.ln_w[c];
    float pw = 0.0f, pb = 0.0f;
    for (int rr = 0; rr < rows; ++rr) {
      const float gv = Cs[rr * g.ldc + c];
      const float xh = (a.x[(size_t)(row0 + rr) * C + c] - s_mean[rr]) * s_rstd[rr];
      pw += gv * xh;
      pb += gv;
      Cs[rr * g.ldc + c] = s_rstd[rr] * (gv * w - s_md[rr] - xh * s_mdx[rr]);
    }
    a.partial[(size_t)blockIdx.x * C + c] = pw;
    a.partial[(nblk + blockIdx.x) * C + c] = pb;
  }
  __syncthreads();  // the block's x rows are read for the last time: mask_out may overwrite them
  // (3) a warp per row, flat groups of 4 (one Philox call each): dres += dx, mask_out.
  const uint64_t step = a.mask_out && a.p > 0.0f ? (uint64_t)a.step : 0;
  for (int rr = warp; rr < rows; rr += kWarps) {
    const int gr = row0 + rr;
    const float* crow = Cs + rr * g.ldc;
    const size_t i0 = (size_t)gr * C, i1 = i0 + C;
    AT* mrow = a.mask_out ? a.mask_out + (size_t)gr * a.ld_mask : nullptr;
    for (uint64_t q = i0 / 4 + lane; q < (i1 + 3) / 4; q += 32) {
      float m[4] = {1.0f, 1.0f, 1.0f, 1.0f};
      if (mrow && a.p > 0.0f) dropout_group(q, a.p, a.scale, a.seed, a.site, step, m);
      const size_t i = 4 * q;
      if (a.vec_out) {
        const int c = (int)(i - i0);
        const float4 dx = *reinterpret_cast<const float4*>(crow + c);
        float4 d = *reinterpret_cast<const float4*>(a.dres + i);
        d.x += dx.x; d.y += dx.y; d.z += dx.z; d.w += dx.w;
        *reinterpret_cast<float4*>(a.dres + i) = d;
        if (mrow) store4(mrow + c, make_float4(d.x * m[0], d.y * m[1], d.z * m[2], d.w * m[3]));
      } else {
        for (int k = 0; k < 4; ++k) {
          if (i + k < i0 || i + k >= i1) continue;
          const int c = (int)(i + k - i0);
          const float d = a.dres[i + k] + crow[c];
          a.dres[i + k] = d;
          if (mrow) store1(mrow + c, d * m[k]);
        }
      }
    }
  }
}

// Dynamic shared memory above 48 KiB needs the kernel's opt-in; raised once per kernel to the
// largest size launched so far (a no-op afterwards, so a CUDA-graph capture may call it).
inline void opt_in_smem(const void* kernel, int bytes, const char* fn, int C) {
  static std::mutex mu;
  static std::map<const void*, int> opted;
  std::lock_guard<std::mutex> lock(mu);
  int& cur = opted[kernel];
  if (bytes <= cur) return;
  int dev = 0, limit = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (bytes > limit)
    throw Error(std::string(fn) + ": C=" + std::to_string(C) + " needs " + std::to_string(bytes) +
                " bytes of shared memory per block, this GPU allows " + std::to_string(limit));
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  cur = bytes;
}

template <class AT>
inline void check_precision(const char* fn, Precision prec) {
  const bool bf = std::is_same<AT, __nv_bfloat16>::value;
  if (bf != (prec == Precision::Bf16))
    throw Error(std::string(fn) + ": precision " + precision_name(prec) + " takes " +
                (prec == Precision::Bf16 ? "bf16" : "float") + " operands");
}

inline void check_sizes(const char* fn, int N, int K, int C) {
  if (N < 0 || K < 1 || C < 1 || C > GEMM_LN_MAX_C)
    throw Error(std::string(fn) + ": sizes N=" + std::to_string(N) + " K=" + std::to_string(K) +
                " C=" + std::to_string(C) + ": need N >= 0, K >= 1, 1 <= C <= " +
                std::to_string(GEMM_LN_MAX_C));
}

template <class T>
inline bool aligned_rows(const T* p, size_t ld) {  // 16-byte chunks of every row aligned
  return aligned16(p) && (ld * sizeof(T)) % 16 == 0;
}

}  // namespace gemm_ln

// ---- launchers ------------------------------------------------------------------------------

// Widths the fused kernels take: every C in 1..1024 (padded to 16 in shared memory).
inline bool gemm_ln_supports(int C) { return C >= 1 && C <= GEMM_LN_MAX_C; }

// Dynamic shared memory per block the fused kernels need at width C (the larger of the forward's
// and the backward's), and whether the current GPU's opt-in limit takes it: sm_80 / sm_90 (163 /
// 227 KiB) take every supported width, the 99 KiB parts (sm_86, sm_89) C <= 512. The CUDA
// model takes the unfused path where it does not fit (host/cuda_model.cu).
template <class AT>
inline int gemm_ln_smem_bytes(int C) {
  const int f = gemm_ln::geometry<AT>(C, false).smem, b = gemm_ln::geometry<AT>(C, true).smem;
  return f > b ? f : b;
}
template <class AT>
inline bool gemm_ln_fits_device(int C) {
  int dev = 0, limit = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
    cudaGetLastError();  // no device to ask (planning without a GPU): assume it fits
    return true;
  }
  return gemm_ln_smem_bytes<AT>(C) <= limit;
}

// Row blocks of a launch over N rows (the rows of gemm_ln_backward's partials): BM = 32 rows
// per block for C <= 768, 16 above.
inline int gemm_ln_row_blocks(int N, int C) {
  const int bm = gemm_ln::block_rows(C);
  return N <= 0 ? 0 : (N + bm - 1) / bm;
}

// z = x W^T + bias; out = res + dropout(z); y, mean, rstd = LayerNorm(out) when ln_w is given.
// See the top of the file. AT: float (Fp32, Tf32) or __nv_bfloat16 (Bf16); YT: float or bf16.
template <class AT, class YT>
void gemm_residual_ln_forward(cudaStream_t st, Precision prec, const AT* x, int ldx, const AT* W,
                              const float* bias, const float* res, float* out, int N, int K,
                              int C, float p, uint64_t seed, uint32_t site, DevStep step,
                              const float* ln_w, const float* ln_b, float eps, YT* y, float* mean,
                              float* rstd) {
  using namespace gemm_ln;
  const char* fn = "gemm_residual_ln_forward";
  check_precision<AT>(fn, prec);
  check_sizes(fn, N, K, C);
  if (ldx < K) throw Error(std::string(fn) + ": row stride ldx=" + std::to_string(ldx) + " < K=" + std::to_string(K));
  if (!(p >= 0.0f && p < 1.0f)) throw Error(std::string(fn) + ": dropout probability " + std::to_string(p) + " outside [0, 1)");
  if (N == 0) return;
  if (!x || !W || !res || !out) throw Error(std::string(fn) + ": x, W, res and out must be given");
  if (ln_w && (!ln_b || !y)) throw Error(std::string(fn) + ": LayerNorm needs ln_w, ln_b and y");
  if ((size_t)gemm_ln_row_blocks(N, C) > 0x7fffffffu) throw Error(std::string(fn) + ": too many rows");
  constexpr int V = Tile<AT>::V;
  const Geometry g = geometry<AT>(C, false);
  FwdArgs<AT, YT> a;
  a.x = x; a.ldx = (size_t)ldx; a.W = W; a.bias = bias; a.res = res; a.out = out;
  a.N = N; a.K = K; a.C = C; a.p = p; a.scale = 1.0f / (1.0f - p);  // = vit::ref::dropout_scale
  a.seed = seed; a.site = site; a.step = step;
  a.ln_w = ln_w; a.ln_b = ln_b; a.eps = eps; a.y = y; a.mean = mean; a.rstd = rstd;
  a.vec_a = K % V == 0 && aligned_rows(x, (size_t)ldx);
  a.vec_b = K % V == 0 && aligned_rows(W, (size_t)K);
  a.vec_out = C % 4 == 0 && aligned16(res) && aligned16(out) && (!bias || aligned16(bias));
  a.vec_y = ln_w && C % 4 == 0 && aligned16(ln_w) && aligned16(ln_b) && aligned_store4(y);
  const unsigned grid = (unsigned)gemm_ln_row_blocks(N, C);
  if constexpr (std::is_same<AT, __nv_bfloat16>::value) {
    opt_in_smem((const void*)gemm_residual_ln_forward_kernel<kBf16, AT, YT>, g.smem, fn, C);
    LAUNCH((gemm_residual_ln_forward_kernel<kBf16, AT, YT>), grid, GEMM_LN_THREADS, g.smem, st, g, a);
  } else if (prec == Precision::Tf32) {
    opt_in_smem((const void*)gemm_residual_ln_forward_kernel<kTf32, AT, YT>, g.smem, fn, C);
    LAUNCH((gemm_residual_ln_forward_kernel<kTf32, AT, YT>), grid, GEMM_LN_THREADS, g.smem, st, g, a);
  } else {
    opt_in_smem((const void*)gemm_residual_ln_forward_kernel<kFp32, AT, YT>, g.smem, fn, C);
    LAUNCH((gemm_residual_ln_forward_kernel<kFp32, AT, YT>), grid, GEMM_LN_THREADS, g.smem, st, g, a);
  }
}

// g = dy W; dres += LayerNorm backward of g at x; mask_out = dropout(dres) when given;
// partial (2 * gemm_ln_row_blocks(N, C) * C floats) = per row block sums of g * xhat (first
// half) and g (second half), to be added in block order by the caller. See the top of the file.
template <class AT>
void gemm_ln_backward(cudaStream_t st, Precision prec, const AT* dy, int lddy, const AT* W, int N,
                      int K, int C, const float* x, const float* mean, const float* rstd,
                      const float* ln_w, float* dres, AT* mask_out, int ld_mask, float p,
                      uint64_t seed, uint32_t site, DevStep step, float* partial) {
  using namespace gemm_ln;
  const char* fn = "gemm_ln_backward";
  check_precision<AT>(fn, prec);
  check_sizes(fn, N, K, C);
  if (lddy < K) throw Error(std::string(fn) + ": row stride lddy=" + std::to_string(lddy) + " < K=" + std::to_string(K));
  if (mask_out && ld_mask < C) throw Error(std::string(fn) + ": row stride ld_mask=" + std::to_string(ld_mask) + " < C=" + std::to_string(C));
  if (!(p >= 0.0f && p < 1.0f)) throw Error(std::string(fn) + ": dropout probability " + std::to_string(p) + " outside [0, 1)");
  if (N == 0) return;
  if (!dy || !W || !x || !mean || !rstd || !ln_w || !dres || !partial)
    throw Error(std::string(fn) + ": dy, W, x, mean, rstd, ln_w, dres and partial must be given");
  if ((size_t)gemm_ln_row_blocks(N, C) > 0x7fffffffu) throw Error(std::string(fn) + ": too many rows");
  constexpr int V = Tile<AT>::V;
  const Geometry g = geometry<AT>(C, true);
  BwdArgs<AT> a;
  a.dy = dy; a.lddy = (size_t)lddy; a.W = W; a.N = N; a.K = K; a.C = C;
  a.x = x; a.mean = mean; a.rstd = rstd; a.ln_w = ln_w; a.dres = dres;
  a.mask_out = mask_out; a.ld_mask = mask_out ? (size_t)ld_mask : 0;
  a.p = p; a.scale = 1.0f / (1.0f - p); a.seed = seed; a.site = site; a.step = step;
  a.partial = partial;
  a.vec_a = K % V == 0 && aligned_rows(dy, (size_t)lddy);
  a.vec_b = C % V == 0 && aligned_rows(W, (size_t)C);
  a.vec_out = C % 4 == 0 && aligned16(dres) &&
              (!mask_out || (aligned_store4(mask_out) && ld_mask % 4 == 0));
  const unsigned grid = (unsigned)gemm_ln_row_blocks(N, C);
  if constexpr (std::is_same<AT, __nv_bfloat16>::value) {
    opt_in_smem((const void*)gemm_ln_backward_kernel<kBf16, AT>, g.smem, fn, C);
    LAUNCH((gemm_ln_backward_kernel<kBf16, AT>), grid, GEMM_LN_THREADS, g.smem, st, g, a);
  } else if (prec == Precision::Tf32) {
    opt_in_smem((const void*)gemm_ln_backward_kernel<kTf32, AT>, g.smem, fn, C);
    LAUNCH((gemm_ln_backward_kernel<kTf32, AT>), grid, GEMM_LN_THREADS, g.smem, st, g, a);
  } else {
    opt_in_smem((const void*)gemm_ln_backward_kernel<kFp32, AT>, g.smem, fn, C);
    LAUNCH((gemm_ln_backward_kernel<kFp32, AT>), grid, GEMM_LN_THREADS, g.smem, st, g, a);
  }
}

}  // namespace vit
