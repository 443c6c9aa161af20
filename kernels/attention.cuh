// kernels/attention.cuh — fused multi-head softmax attention (flash-attention style), forward and
// backward, on the packed qkv projection.
//
//   qkv  (B, T, 3C): q = [..., 0:C], k = [..., C:2C], v = [..., 2C:3C]; head h uses features
//                    h*hd .. (h+1)*hd of each (hd = C / NH).
//   S    = q k^T / sqrt(hd)          (per (b, h): T x T, never stored in global memory)
//   P    = softmax(S) over keys;  P' = P * M / (1 - p)  with the dropout mask
//          M_ij = vit::dropout_keep(seed, site, step, ((b*NH + h)*T + i)*T + j, p)
//   out  (B, T, C)  = P' v, heads concatenated                                 (=)
//   lse  (B, NH, T) = log sum_j exp(S_ij): natural-log row log-sum-exp of the scaled scores,
//                     saved so the backward recomputes P_ij = exp(S_ij - lse_i) exactly.   (=)
//   dqkv (B, T, 3C) = gradient w.r.t. qkv (written, every element, =).
//   scratch: attention_scratch_floats() = B*NH*T floats (D_i below).
//
// Backward (see docs/attention.md for the derivation):
//   dP'_ij = dO_i . v_j ;  dP_ij = dP'_ij * M_ij / (1 - p)
//   D_i    = sum_j P_ij dP_ij = dO_i . O_i   (because O_i = sum_j P'_ij v_j — dropout included)
//   dS_ij  = P_ij (dP_ij - D_i)
//   dq_i = scale sum_j dS_ij k_j ;  dk_j = scale sum_i dS_ij q_i ;  dv_j = sum_i P'_ij dO_i
// Two kernels, each element of dqkv written by exactly one thread with a fixed loop order, so the
// result is deterministic (no atomics):
//   1. dQ kernel, parallel over query tiles: computes D_i = dO_i . O_i for its rows (written to
//      scratch), then streams K/V tiles through shared memory accumulating dq_i.
//   2. dK/dV kernel, parallel over key tiles: streams Q/dO/lse/D tiles through shared memory
//      accumulating dk_j and dv_j. It runs after kernel 1 on the same stream (reads D).
// P and the dropout mask are recomputed from q, k, lse and Philox in every kernel.
//
// Tiling (why this shape). A block owns kRows = 32 rows (query rows in the forward and dQ
// kernels, key rows in dK/dV) of one (b, h); each row is handled by a group of G = hd/16 adjacent
// lanes, each lane owning 16 features of the head (float4 chunks g, g+G, ...): the row's q, o / dq
// (or k, v, dk, dv) stay in registers (16 floats each) for any supported head dim, and the dot
// products need only log2(G) <= 2 butterfly shuffles. Blocks are 32*G threads (32, 64, 128).
// The streamed operand (K/V in forward and dQ; Q/dO in dK/dV) goes through shared memory in tiles
// of TILE rows, loaded with consecutive threads on consecutive features (coalesced; a head row is
// hd contiguous floats), stored contiguously (conflict-free stores). In the inner loops every row
// group of a warp reads the same shared row at the same time, so shared reads are broadcasts:
// no bank conflicts, no padding needed. Scores of a whole tile are kept in registers (s[TILE])
// so the online-softmax rescale of o happens once per tile, not once per key; the backward needs
// no running max (P = exp(S - lse)) and handles one streamed row at a time, which keeps it at
// ~100-130 registers without spills (ptxas, sm_90). The grid is
// (ceil(T/32), NH, B): basic (B=64, NH=4, T=65) launches 768 blocks, vit-b16 (B=32, NH=12,
// T=197) 2688, enough to fill an H100's 132 SMs several times over. Shared memory is
// 2*TILE*hd floats (16 KiB at hd=64, TILE=32), below the 48 KiB default: no opt-in needed.
// Dropout bits: for a tile, lane g of a group draws the Philox bits of rows/keys g, g+G, ...
// and the group ORs them together with shuffles, so each element's bits are drawn once per kernel.
//
// Tails: rows >= T and tile rows past T are zero-filled and masked (score -inf / P = 0); threads
// of such rows still take part in every barrier and shuffle (full-warp masks are valid).
// Supported head dims: 16, 32, 64 (template); others fail with a vit::Error naming the shape.
//
// Probabilities for attention maps (inference only, vit_predict --attention): the fused forward
// never stores P, so attention_probs() recomputes it from the saved qkv and lse in a separate,
// deliberately simple kernel: one thread per (b, h, i, j), P_ij = exp(q_i . k_j * scale - lse_i)
// — the same formula the backward uses, so the maps are the probabilities the forward used
// (before dropout). It writes a (B, NH, T, T) tensor, which is why training never calls it.
//
// Storage of qkv and out (template QT): FP32, or BF16 under --precision bf16 (both saved for
// the backward at half the bytes; out is the proj GEMM's operand). BF16 values are converted to
// FP32 as they are loaded (load_row, load_tile) and out is rounded once as it is stored; the
// math, lse and dqkv stay FP32. So the BF16 forward gives bitwise bf16(the FP32 forward on the
// BF16-rounded qkv), and the BF16 backward bitwise the FP32 backward on the rounded qkv and out.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "common/error.h"
#include "common/philox.h"
#include "kernels/common.cuh"
#include "kernels/precision.cuh"

// Loop unrolling matters for nvcc (per-tile score arrays must live in registers); g++ (simt)
// does not know the pragma and would warn.
#if defined(__CUDACC__)
#define ATTN_UNROLL _Pragma("unroll")
#define ATTN_UNROLL4 _Pragma("unroll 4")
#else
#define ATTN_UNROLL
#define ATTN_UNROLL4
#endif

namespace vit {
namespace attn_detail {

constexpr int kRows = 32;      // rows owned by one block
constexpr int kFeat = 16;      // features of a head per thread (4 float4 chunks)
constexpr int kChunks = kFeat / 4;
constexpr int kFwdTile = 32;   // keys per shared-memory tile in the forward
constexpr int kBwdTile = 32;   // rows (keys or queries) per shared-memory tile in the backward
constexpr unsigned kFull = 0xffffffffu;
static_assert(kFwdTile <= 32 && kBwdTile <= 32, "dropout bits of a tile live in one uint32_t");
static_assert(kRows % 32 == 0, "blocks of kRows*G threads must be whole warps (full-mask shuffles)");

// Feature index of lane g's chunk c (c < kChunks) for a group of G lanes: chunks interleave so
// the G lanes of a group read one contiguous 16*G-byte span at each step.
template <int G>
__device__ __forceinline__ int chunk_feat(int g, int c) { return 4 * (g + G * c); }

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }

// Lane g's 16 features of a global row (scalar loads: the row need not be 16-byte aligned);
// zeros when !ok. The row is float or bf16 (converted on load; selecting before the conversion
// keeps the bf16 forward at hd 16 free of spills on sm_80, ptxas 13).
template <int G, class ST>
__device__ __forceinline__ void load_row(float (&r)[kFeat], const ST* row, int g, bool ok) {
ATTN_UNROLL
  for (int c = 0; c < kChunks; ++c)
ATTN_UNROLL
    for (int e = 0; e < 4; ++e) r[4 * c + e] = to_float(ok ? row[chunk_feat<G>(g, c) + e] : ST(0.0f));
}

template <int G, class ST>
__device__ __forceinline__ void store_row(ST* row, const float (&r)[kFeat], int g, float mul) {
ATTN_UNROLL
  for (int c = 0; c < kChunks; ++c)
ATTN_UNROLL
    for (int e = 0; e < 4; ++e) store1(row + chunk_feat<G>(g, c) + e, r[4 * c + e] * mul);
}

// Partial dot product of lane g's features of `a` (registers) with a shared-memory row.
template <int G>
__device__ __forceinline__ float dot_partial(const float (&a)[kFeat], const float* srow, int g) {
  float acc = 0.0f;
ATTN_UNROLL
  for (int c = 0; c < kChunks; ++c) {
    const float4 x = *reinterpret_cast<const float4*>(srow + chunk_feat<G>(g, c));
    acc = fmaf(a[4 * c + 0], x.x, acc);
    acc = fmaf(a[4 * c + 1], x.y, acc);
    acc = fmaf(a[4 * c + 2], x.z, acc);
    acc = fmaf(a[4 * c + 3], x.w, acc);
  }
  return acc;
}

// acc += w * (lane g's features of a shared-memory row)
template <int G>
__device__ __forceinline__ void axpy_row(float (&acc)[kFeat], float w, const float* srow, int g) {
ATTN_UNROLL
  for (int c = 0; c < kChunks; ++c) {
    const float4 x = *reinterpret_cast<const float4*>(srow + chunk_feat<G>(g, c));
    acc[4 * c + 0] = fmaf(w, x.x, acc[4 * c + 0]);
    acc[4 * c + 1] = fmaf(w, x.y, acc[4 * c + 1]);
    acc[4 * c + 2] = fmaf(w, x.z, acc[4 * c + 2]);
    acc[4 * c + 3] = fmaf(w, x.w, acc[4 * c + 3]);
  }
}

// Sum over the G lanes of a group (butterfly: every lane gets the bitwise-same sum, since
// float addition is commutative and each level adds the same two partials).
template <int G>
__device__ __forceinline__ float group_sum(float v) {
ATTN_UNROLL
  for (int off = G / 2; off > 0; off >>= 1) v += __shfl_xor_sync(kFull, v, off);
  return v;
}
template <int G>
__device__ __forceinline__ uint32_t group_or(uint32_t v) {
ATTN_UNROLL
  for (int off = G / 2; off > 0; off >>= 1) v |= __shfl_xor_sync(kFull, v, off);
  return v;
}

// Copy rows [r0, r0 + N) of one head's q, k or v (or dout) into shared memory (N, HD),
// zero-filling rows >= T. `src` points at feature 0 of the head in row 0; rows are `ld` apart.
template <int HD, int N, int NT, class ST>
__device__ __forceinline__ void load_tile(float* dst, const ST* src, size_t ld, int r0, int T) {
  for (int idx = threadIdx.x; idx < N * HD; idx += NT) {
    const int r = idx / HD, d = idx % HD;
    dst[idx] = r0 + r < T ? to_float(src[(size_t)(r0 + r) * ld + d]) : 0.0f;
  }
}

// ---------------------------------------------------------------------------------------------
// Forward: grid (ceil(T/32), NH, B), block 32*G. Online softmax over key tiles.
template <int HD, class QT>
__global__ void __launch_bounds__(kRows * (HD / kFeat)) attention_forward_kernel(const QT* __restrict__ qkv, QT* __restrict__ out,
                                         float* __restrict__ lse, int T, int C, int NH,
                                         float scale, float p_drop, float keep_scale,
                                         uint64_t seed, uint32_t site, DevStep step_arg) {
  const uint64_t step = step_arg;  // read once (a graph step lives in device memory)
  constexpr int G = HD / kFeat, NT = kRows * G, TILE = kFwdTile;
  VIT_DYNAMIC_SMEM(float, smem);
  float* Ks = smem;              // (TILE, HD)
  float* Vs = smem + TILE * HD;  // (TILE, HD)

  const int g = threadIdx.x % G;
  const int b = blockIdx.z, h = blockIdx.y;
  const int i = blockIdx.x * kRows + threadIdx.x / G;  // this group's query row
  const bool row_ok = i < T;
  const size_t C3 = 3 * (size_t)C;
  const QT* qh = qkv + (size_t)b * T * C3 + (size_t)h * HD;  // head h's q of row 0
  const size_t bh = (size_t)b * NH + h;
  const uint64_t drop_base = ((uint64_t)bh * T + (row_ok ? i : 0)) * T;  // flat index of (i, 0)
  const bool drop = p_drop > 0.0f;

  float q[kFeat], o[kFeat];  // q_i, unnormalised sum_j exp(S_ij - m) M_ij v_j
  load_row<G>(q, qh + (size_t)i * C3, g, row_ok);
ATTN_UNROLL
  for (int e = 0; e < kFeat; ++e) o[e] = 0.0f;
  float m = -INFINITY, l = 0.0f;  // running max and sum of exp(S - m) (undropped)

  for (int j0 = 0; j0 < T; j0 += TILE) {
    __syncthreads();  // the previous tile has been consumed by every thread
    load_tile<HD, TILE, NT>(Ks, qh + C, C3, j0, T);
    load_tile<HD, TILE, NT>(Vs, qh + 2 * (size_t)C, C3, j0, T);
    __syncthreads();

    float s[TILE];
ATTN_UNROLL
    for (int jj = 0; jj < TILE; ++jj) s[jj] = dot_partial<G>(q, Ks + jj * HD, g);
    float mt = m;
ATTN_UNROLL
    for (int jj = 0; jj < TILE; ++jj) {
      s[jj] = j0 + jj < T ? group_sum<G>(s[jj]) * scale : -INFINITY;
      mt = fmaxf(mt, s[jj]);
    }
    uint32_t keep = kFull;
    if (drop) {
      keep = 0;
      for (int jj = g; jj < TILE; jj += G)
        if (row_ok && j0 + jj < T && dropout_keep(seed, site, step, drop_base + j0 + jj, p_drop))
          keep |= 1u << jj;
      keep = group_or<G>(keep);
    }
    const float alpha = expf(m - mt);  // 0 on the first tile (m = -inf, mt finite)
    l *= alpha;
ATTN_UNROLL
    for (int e = 0; e < kFeat; ++e) o[e] *= alpha;
ATTN_UNROLL
    for (int jj = 0; jj < TILE; ++jj) {
      const float p = expf(s[jj] - mt);  // 0 for keys past T
      l += p;
      axpy_row<G>(o, (keep >> jj) & 1u ? p : 0.0f, Vs + jj * HD, g);
    }
    m = mt;
  }
  if (row_ok) {
    store_row<G>(out + ((size_t)b * T + i) * C + (size_t)h * HD, o, g, keep_scale / l);
    if (g == 0) lse[bh * T + i] = m + logf(l);
  }
}


// ---------------------------------------------------------------------------------------------
// Backward 1: D_i = dO_i . O_i (to scratch) and dq_i. grid (ceil(T/32), NH, B), block 32*G.
template <int HD, class QT>
__global__ void __launch_bounds__(kRows * (HD / kFeat)) attention_backward_dq_kernel(const float* __restrict__ dout,
                                             const QT* __restrict__ qkv,
                                             const QT* __restrict__ out,
                                             const float* __restrict__ lse,
                                             float* __restrict__ Dbuf, float* __restrict__ dqkv,
                                             int T, int C, int NH, float scale, float p_drop,
                                             float keep_scale, uint64_t seed, uint32_t site,
                                             DevStep step_arg) {
  const uint64_t step = step_arg;  // read once (a graph step lives in device memory)
  constexpr int G = HD / kFeat, NT = kRows * G, TILE = kBwdTile;
  VIT_DYNAMIC_SMEM(float, smem);
  float* Ks = smem;              // (TILE, HD)
  float* Vs = smem + TILE * HD;  // (TILE, HD)

  const int g = threadIdx.x % G;
  const int b = blockIdx.z, h = blockIdx.y;
  const int i = blockIdx.x * kRows + threadIdx.x / G;  // this group's query row
  const bool row_ok = i < T;
  const size_t C3 = 3 * (size_t)C;
  const QT* qh = qkv + (size_t)b * T * C3 + (size_t)h * HD;     // head h's q of row 0
  const size_t orow = ((size_t)b * T + i) * C + (size_t)h * HD;    // row i, head h in (B,T,C)
  const size_t bh = (size_t)b * NH + h;
  const uint64_t drop_base = ((uint64_t)bh * T + (row_ok ? i : 0)) * T;
  const bool drop = p_drop > 0.0f;

  float q[kFeat], dO[kFeat], dq[kFeat];
  load_row<G>(q, qh + (size_t)i * C3, g, row_ok);
  load_row<G>(dO, dout + orow, g, row_ok);
  float Di;  // sum_j P_ij dP_ij = dO_i . O_i
  {
    float o[kFeat];
    load_row<G>(o, out + orow, g, row_ok);
    Di = 0.0f;
ATTN_UNROLL
    for (int e = 0; e < kFeat; ++e) Di = fmaf(dO[e], o[e], Di);
    Di = group_sum<G>(Di);
  }
  if (row_ok && g == 0) Dbuf[bh * T + i] = Di;
  const float lse_i = row_ok ? lse[bh * T + i] : 0.0f;
ATTN_UNROLL
  for (int e = 0; e < kFeat; ++e) dq[e] = 0.0f;

  for (int j0 = 0; j0 < T; j0 += TILE) {
    __syncthreads();
    load_tile<HD, TILE, NT>(Ks, qh + C, C3, j0, T);
    load_tile<HD, TILE, NT>(Vs, qh + 2 * (size_t)C, C3, j0, T);
    __syncthreads();

    uint32_t keep = kFull;
    if (drop) {
      keep = 0;
      for (int jj = g; jj < TILE; jj += G)
        if (row_ok && j0 + jj < T && dropout_keep(seed, site, step, drop_base + j0 + jj, p_drop))
          keep |= 1u << jj;
      keep = group_or<G>(keep);
    }
    // No tile-wide score array here (unlike the forward, P_ij = exp(S_ij - lse_i) needs no
    // running max): one key at a time keeps register pressure low.
ATTN_UNROLL4
    for (int jj = 0; jj < TILE; ++jj) {
      const float sj = group_sum<G>(dot_partial<G>(q, Ks + jj * HD, g)) * scale;    // S_ij
      const float dpj = group_sum<G>(dot_partial<G>(dO, Vs + jj * HD, g));          // dP'_ij
      const float p = j0 + jj < T ? expf(sj - lse_i) : 0.0f;
      const float dP = (keep >> jj) & 1u ? dpj * keep_scale : 0.0f;
      axpy_row<G>(dq, p * (dP - Di), Ks + jj * HD, g);  // dS_ij k_j
    }
  }
  if (row_ok) store_row<G>(dqkv + ((size_t)b * T + i) * C3 + (size_t)h * HD, dq, g, scale);
}

// ---------------------------------------------------------------------------------------------
// Backward 2: dk_j and dv_j. grid (ceil(T/32), NH, B), block 32*G; reads D from backward 1.
template <int HD, class QT>
__global__ void __launch_bounds__(kRows * (HD / kFeat)) attention_backward_dkdv_kernel(const float* __restrict__ dout,
                                               const QT* __restrict__ qkv,
                                               const float* __restrict__ lse,
                                               const float* __restrict__ Dbuf,
                                               float* __restrict__ dqkv, int T, int C, int NH,
                                               float scale, float p_drop, float keep_scale,
                                               uint64_t seed, uint32_t site, DevStep step_arg) {
  const uint64_t step = step_arg;  // read once (a graph step lives in device memory)
  constexpr int G = HD / kFeat, NT = kRows * G, TILE = kBwdTile;
  VIT_DYNAMIC_SMEM(float, smem);
  float* Qs = smem;                    // (TILE, HD) q rows of the query tile
  float* dOs = smem + TILE * HD;       // (TILE, HD) dout rows
  float* Ls = smem + 2 * TILE * HD;    // (TILE) lse
  float* Ds = Ls + TILE;               // (TILE) D

  const int g = threadIdx.x % G;
  const int b = blockIdx.z, h = blockIdx.y;
  const int j = blockIdx.x * kRows + threadIdx.x / G;  // this group's key row
  const bool key_ok = j < T;
  const size_t C3 = 3 * (size_t)C;
  const QT* qh = qkv + (size_t)b * T * C3 + (size_t)h * HD;   // head h's q of row 0
  const float* doh = dout + (size_t)b * T * C + (size_t)h * HD;  // head h's dout of row 0
  const size_t bh = (size_t)b * NH + h;
  const bool drop = p_drop > 0.0f;

  float k[kFeat], v[kFeat], dk[kFeat], dv[kFeat];
  load_row<G>(k, qh + (size_t)j * C3 + C, g, key_ok);
  load_row<G>(v, qh + (size_t)j * C3 + 2 * (size_t)C, g, key_ok);
ATTN_UNROLL
  for (int e = 0; e < kFeat; ++e) dk[e] = dv[e] = 0.0f;

  for (int i0 = 0; i0 < T; i0 += TILE) {
    __syncthreads();
    load_tile<HD, TILE, NT>(Qs, qh, C3, i0, T);
    load_tile<HD, TILE, NT>(dOs, doh, (size_t)C, i0, T);
    for (int r = threadIdx.x; r < TILE; r += NT) {
      Ls[r] = i0 + r < T ? lse[bh * T + i0 + r] : 0.0f;
      Ds[r] = i0 + r < T ? Dbuf[bh * T + i0 + r] : 0.0f;
    }
    __syncthreads();

    uint32_t keep = kFull;
    if (drop) {
      keep = 0;
      for (int ii = g; ii < TILE; ii += G)
        if (key_ok && i0 + ii < T &&
            dropout_keep(seed, site, step, ((uint64_t)bh * T + i0 + ii) * T + j, p_drop))
          keep |= 1u << ii;
      keep = group_or<G>(keep);
    }
ATTN_UNROLL4
    for (int ii = 0; ii < TILE; ++ii) {
      const float si = group_sum<G>(dot_partial<G>(k, Qs + ii * HD, g)) * scale;   // S_ij
      const float dpi = group_sum<G>(dot_partial<G>(v, dOs + ii * HD, g));         // dP'_ij
      const float p = i0 + ii < T ? expf(si - Ls[ii]) : 0.0f;
      const bool kept = (keep >> ii) & 1u;
      const float dP = kept ? dpi * keep_scale : 0.0f;
      axpy_row<G>(dv, kept ? p * keep_scale : 0.0f, dOs + ii * HD, g);  // P'_ij dO_i
      axpy_row<G>(dk, p * (dP - Ds[ii]), Qs + ii * HD, g);            // dS_ij q_i
    }
  }
  if (key_ok) {
    float* drow = dqkv + ((size_t)b * T + j) * C3 + (size_t)h * HD;
    store_row<G>(drow + C, dk, g, scale);
    store_row<G>(drow + 2 * (size_t)C, dv, g, 1.0f);
  }
}

// P (B, NH, T, T) from qkv (B, T, 3C) and lse (B, NH, T). grid (ceil(T/128), T, B*NH): thread
// x of block (jx, i, bh) owns key j = jx*128 + x of query row i; consecutive threads read
// consecutive k rows (a head row is hd contiguous floats) and write consecutive P_ij.
constexpr int kProbThreads = 128;
static __global__ void __launch_bounds__(kProbThreads)
    attention_probs_kernel(const float* __restrict__ qkv, const float* __restrict__ lse,
                           float* __restrict__ probs, int T, int C, int NH, int hd, float scale) {
  const int j = blockIdx.x * kProbThreads + threadIdx.x, i = blockIdx.y, bh = blockIdx.z;
  if (j >= T) return;
  const int b = bh / NH, h = bh % NH;
  const size_t C3 = 3 * (size_t)C;
  const float* q = qkv + ((size_t)b * T + i) * C3 + (size_t)h * hd;
  const float* k = qkv + ((size_t)b * T + j) * C3 + C + (size_t)h * hd;
  float s = 0.0f;
  for (int d = 0; d < hd; ++d) s = fmaf(q[d], k[d], s);
  probs[((size_t)bh * T + i) * T + j] = expf(s * scale - lse[(size_t)bh * T + i]);
}

// Head dim of a supported shape; throws vit::Error otherwise.
inline int check_shape(const char* fn, int B, int T, int C, int NH, float p_drop) {
  auto fail = [&](const std::string& why) {
    throw Error(std::string(fn) + ": " + why + " (B=" + std::to_string(B) + ", T=" +
                std::to_string(T) + ", C=" + std::to_string(C) + ", heads=" + std::to_string(NH) +
                ")");
  };
  if (B < 0 || T < 1 || C < 1 || NH < 1) fail("sizes must be positive");
  if (C % NH != 0) fail("hidden size is not divisible by the number of heads");
  const int hd = C / NH;
  if (hd != 16 && hd != 32 && hd != 64)
    fail("head dim " + std::to_string(hd) +
         " is not supported by the CUDA attention kernel (supported: 16, 32, 64; choose hidden "
         "and heads accordingly)");
  if (NH > 65535 || B > 65535) fail("batch size and heads must be at most 65535");
  if (!(p_drop >= 0.0f && p_drop < 1.0f)) fail("attention dropout must be in [0, 1)");
  return hd;
}

template <int HD, class QT>
inline void forward_launch(cudaStream_t st, const QT* qkv, QT* out, float* lse, int B, int T,
                           int C, int NH, float p_drop, uint64_t seed, uint32_t site,
                           DevStep step) {
  const dim3 grid(ceil_div(T, kRows), NH, B);
  const float scale = 1.0f / std::sqrt((float)HD), keep_scale = 1.0f / (1.0f - p_drop);
  LAUNCH((attention_forward_kernel<HD, QT>), grid, kRows * (HD / kFeat),
         2 * kFwdTile * HD * sizeof(float), st, qkv, out, lse, T, C, NH, scale, p_drop,
         keep_scale, seed, site, step);
}

template <int HD, class QT>
inline void backward_launch(cudaStream_t st, const float* dout, const QT* qkv, const QT* out,
                            const float* lse, float* dqkv, float* Dbuf, int B, int T, int C,
                            int NH, float p_drop, uint64_t seed, uint32_t site, DevStep step) {
  const dim3 grid(ceil_div(T, kRows), NH, B);
  const int threads = kRows * (HD / kFeat);
  const float scale = 1.0f / std::sqrt((float)HD), keep_scale = 1.0f / (1.0f - p_drop);
  LAUNCH((attention_backward_dq_kernel<HD, QT>), grid, threads, 2 * kBwdTile * HD * sizeof(float), st,
         dout, qkv, out, lse, Dbuf, dqkv, T, C, NH, scale, p_drop, keep_scale, seed, site, step);
  LAUNCH((attention_backward_dkdv_kernel<HD, QT>), grid, threads,
         (2 * kBwdTile * HD + 2 * kBwdTile) * sizeof(float), st, dout, qkv, lse,
         (const float*)Dbuf, dqkv, T, C, NH, scale, p_drop, keep_scale, seed, site, step);
}

}  // namespace attn_detail

// ---- launchers (the contract with host/) ------------------------------------------------------

namespace attn_detail {
template <class QT>
inline void attention_forward_t(cudaStream_t st, const QT* qkv, QT* out, float* lse, int B,
                                int T, int C, int NH, float p_drop, uint64_t seed, uint32_t site,
                                DevStep step) {
  const int hd = attn_detail::check_shape("attention_forward", B, T, C, NH, p_drop);
  if (B == 0) return;
  switch (hd) {
    case 16: attn_detail::forward_launch<16>(st, qkv, out, lse, B, T, C, NH, p_drop, seed, site, step); break;
    case 32: attn_detail::forward_launch<32>(st, qkv, out, lse, B, T, C, NH, p_drop, seed, site, step); break;
    default: attn_detail::forward_launch<64>(st, qkv, out, lse, B, T, C, NH, p_drop, seed, site, step); break;
  }
}
}  // namespace attn_detail

// qkv (B,T,3C) -> out (B,T,C) (=), both FP32 or both BF16; lse (B,NH,T) FP32 (=). Dropout
// p_drop on the probabilities.
inline void attention_forward(cudaStream_t st, const float* qkv, float* out, float* lse, int B,
                              int T, int C, int NH, float p_drop, uint64_t seed, uint32_t site,
                              DevStep step) {
  attn_detail::attention_forward_t(st, qkv, out, lse, B, T, C, NH, p_drop, seed, site, step);
}
// (The BF16 overload is a template so that a nullptr qkv still picks the float one.)
template <class QT, typename = typename std::enable_if<std::is_same<QT, bf16>::value>::type>
inline void attention_forward(cudaStream_t st, const QT* qkv, QT* out, float* lse, int B,
                              int T, int C, int NH, float p_drop, uint64_t seed, uint32_t site,
                              DevStep step) {
  attn_detail::attention_forward_t(st, qkv, out, lse, B, T, C, NH, p_drop, seed, site, step);
}

// qkv (B,T,3C) and lse (B,NH,T) of an attention_forward -> probs (B,NH,T,T) (=): the softmax
// probabilities before dropout. For attention maps at inference (see the top of this file).
inline void attention_probs(cudaStream_t st, const float* qkv, const float* lse, float* probs,
                            int B, int T, int C, int NH) {
  const int hd = attn_detail::check_shape("attention_probs", B, T, C, NH, 0.0f);
  if ((size_t)B * NH > 65535 || T > 65535)
    throw Error("attention_probs: batch x heads and tokens must be at most 65535 (B=" +
                std::to_string(B) + ", heads=" + std::to_string(NH) + ", T=" + std::to_string(T) + ")");
  if (B == 0) return;
  const dim3 grid(ceil_div(T, attn_detail::kProbThreads), T, B * NH);
  LAUNCH(attn_detail::attention_probs_kernel, grid, attn_detail::kProbThreads, 0, st, qkv, lse,
         probs, T, C, NH, hd, 1.0f / std::sqrt((float)hd));
}

// Floats of device scratch attention_backward needs: D (B, NH, T).
inline size_t attention_scratch_floats(int B, int T, int C, int NH) {
  return (size_t)B * NH * T;
}

namespace attn_detail {
template <class QT>
inline void attention_backward_t(cudaStream_t st, const float* dout, const QT* qkv,
                                 const QT* out, const float* lse, float* dqkv, float* scratch,
                                 int B, int T, int C, int NH, float p_drop, uint64_t seed,
                                 uint32_t site, DevStep step) {
  const int hd = attn_detail::check_shape("attention_backward", B, T, C, NH, p_drop);
  if (B == 0) return;
  switch (hd) {
    case 16: attn_detail::backward_launch<16>(st, dout, qkv, out, lse, dqkv, scratch, B, T, C, NH, p_drop, seed, site, step); break;
    case 32: attn_detail::backward_launch<32>(st, dout, qkv, out, lse, dqkv, scratch, B, T, C, NH, p_drop, seed, site, step); break;
    default: attn_detail::backward_launch<64>(st, dout, qkv, out, lse, dqkv, scratch, B, T, C, NH, p_drop, seed, site, step); break;
  }
}
}  // namespace attn_detail

// dout (B,T,C) FP32, qkv and out (both FP32 or both BF16) and lse from the forward (same
// p_drop/seed/site/step) -> dqkv (B,T,3C) FP32 (=, every element). scratch: attention_scratch_floats(B, T, C, NH)
// floats.
inline void attention_backward(cudaStream_t st, const float* dout, const float* qkv,
                               const float* out, const float* lse, float* dqkv, float* scratch,
                               int B, int T, int C, int NH, float p_drop, uint64_t seed,
                               uint32_t site, DevStep step) {
  attn_detail::attention_backward_t(st, dout, qkv, out, lse, dqkv, scratch, B, T, C, NH, p_drop,
                                    seed, site, step);
}
template <class QT, typename = typename std::enable_if<std::is_same<QT, bf16>::value>::type>
inline void attention_backward(cudaStream_t st, const float* dout, const QT* qkv,
                               const QT* out, const float* lse, float* dqkv, float* scratch,
                               int B, int T, int C, int NH, float p_drop, uint64_t seed,
                               uint32_t site, DevStep step) {
  attn_detail::attention_backward_t(st, dout, qkv, out, lse, dqkv, scratch, B, T, C, NH, p_drop,
                                    seed, site, step);
}

}  // namespace vit

#undef ATTN_UNROLL
#undef ATTN_UNROLL4
