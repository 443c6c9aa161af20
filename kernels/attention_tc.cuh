// kernels/attention_tc.cuh — fused multi-head attention on tensor cores (FlashAttention-2 style),
// forward and backward, BF16 operands with FP32 accumulation, head dims 32 and 64. Written with
// nvcuda::wmma only (no inline PTX), so simt runs every line in the tests. The FP32-FMA kernels
// of kernels/attention.cuh stay the `--precision fp32` path; these are for BF16 storage.
//
// Contract (the same math and dropout keying as kernels/attention.cuh and cpu/attention.cpp):
//   qkv  (B, T, 3C) bf16: q = [..., 0:C], k = [..., C:2C], v = [..., 2C:3C]; head h uses features
//                    h*hd .. h*hd+hd-1 of each (hd = C / NH: 32 or 64; both presets: 64).
//   S    = q k^T / sqrt(hd) (per (b, h): T x T, never in global memory), P = softmax(S) over keys,
//   P'   = P * M / (1 - p) with M_ij = vit::dropout_keep(seed, site, step, ((b*NH + h)*T + i)*T + j, p)
//   out  (B, T, C) OutT (float or bf16)   = P' v, heads concatenated                    (=)
//   lse  (B, NH, T) float                 = natural-log row log-sum-exp of S            (=)
//   dqkv (B, T, 3C) OutT                  = gradient w.r.t. qkv, every element          (=)
//   scratch: attention_tc_scratch_floats() = B*NH*T floats (D_i = dO_i . O_i)
// Rounding (what differs from the FP32 reference on the same bf16 inputs): P' is rounded to bf16
// before P'V and P'^T dO, dS before dS K / dS^T Q, dO to bf16 as an operand (exact when OutT is
// bf16); out / dqkv are rounded once to OutT. Everything else (scores, exponentials, row sums,
// lse, D) is FP32.
//
// Work split. A warp owns 16 rows (query rows in the forward and the dQ kernel, key rows in the
// dK/dV kernel) of one (b, h); a block is W warps on consecutive 16-row tiles of the same (b, h),
// sized per launch so that T is padded only up to a multiple of 16: W = ceil(tiles / nblocks),
// nblocks = ceil(tiles / kTcMaxWarps*) with tiles = ceil(T/16) (T=65: 1 block of 5 warps;
// T=197: 2 blocks of 7 warps, 14 tiles for 13). The streamed operand (K,V or Q,dO) goes through
// shared memory in chunks of kTcChunk = 64 rows, shared by the block's warps; a chunk is cut to
// the 16-row sub-tiles that hold rows < T (T=65: 64 + 16 keys, not 128).
// Element positions: a fragment's element-to-lane mapping is unspecified (simt scrambles it), so
// every step that needs (row, col) — masking columns past T, the row max / row sum of the online
// softmax, the rescaling of O's rows, dropout by flat index — stores the tile to shared memory
// (store_matrix_sync), works there with a known lane -> element mapping, and reloads the result
// (load_matrix_sync: P' as the A operand of P'V, O as an accumulator). See docs/attention.md.
// Dropout: a lane walks its elements along consecutive flat indices (keys j in the forward / dQ
// kernel, where a row's keys are consecutive; the 16 keys of one query column in dK/dV) and
// draws one Philox call per aligned group of 4 indices (common/philox.h's word index % 4), so
// ~one call per four values and each element's decision equals dropout_keep (dropout_run).
// Determinism: no atomics; every output element is written by one lane after a fixed loop order.
#pragma once

#include <mma.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "common/error.h"
#include "common/philox.h"
#include "kernels/common.cuh"

namespace vit {
namespace attn_tc {

constexpr int kTcChunk = 64;         // rows of the streamed operand per shared-memory chunk
constexpr int kTcLdf = kTcChunk + 4; // float tile pitch: 272 bytes (scores: 64 columns; O, dq,
                                     // dk, dv: HD <= 64 columns)
constexpr int kTcMaxWarpsFwd = 8;    // warps per block, forward
constexpr int kTcMaxWarpsBwd = 4;    // warps per block, both backward kernels
constexpr unsigned kTcFull = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Bytes of the shared-memory pieces: all multiples of 32, so on a 128-byte aligned dynamic
// region (TC_SMEM) every tile keeps the 32-byte alignment WMMA pointers need.
// Per head dim HD (32 or 64): bf16 tiles have a pitch of HD + 8 elements (HD=64: 144 bytes,
// a multiple of 16 as WMMA needs, and rows 16 bytes apart in banks: fewer load conflicts).
template <int HD>
struct TcDims {
  static constexpr int Ldh = HD + 8;               // bf16 tile pitch
  static constexpr int KS = HD / 16;               // k-steps over the head dim / O fragments
  static constexpr int TileH = kTcChunk * Ldh * 2; // (64, HD+8) bf16 chunk: 9216 at HD=64
};
// Per-warp bf16 tiles hold P' or dS: 16 rows x 64 columns (a chunk), pitch kTcLdp; they first
// stage the warp's own (16, HD) Q, dO, K or V rows at pitch HD + 8, which fits.
constexpr int kTcLdp = kTcChunk + 8;
constexpr int kWarpH = 16 * kTcLdp * 2;             // (16, 72) bf16 per-warp tile: 2304
constexpr int kWarpF = 16 * kTcLdf * 4;            // (16, 68) float per-warp tile: 4352
template <int HD>
constexpr size_t fwd_smem(int warps) {
  return 2 * TcDims<HD>::TileH + (size_t)warps * (kWarpF + kWarpH);
}
template <int HD>
constexpr size_t dq_smem(int warps) {
  return 2 * TcDims<HD>::TileH + (size_t)warps * (2 * kWarpF + kWarpH);
}
template <int HD>
constexpr size_t dkdv_smem(int warps) {
  return 2 * TcDims<HD>::TileH + 2 * kTcChunk * 4 + (size_t)warps * (2 * kWarpF + 2 * kWarpH);
}

// The kernels' dynamic shared memory, declared 128-byte aligned (kernels/common.cuh's
// VIT_DYNAMIC_SMEM promises 16); simt's dynamic shared memory is 256-byte aligned.
#if defined(__CUDACC__)
#define TC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#else
#define TC_SMEM(name) VIT_DYNAMIC_SMEM(unsigned char, name)
#endif

using namespace nvcuda;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragBr = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragBc = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

__host__ __device__ __forceinline__ float to_float(float x) { return x; }
__host__ __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T> __host__ __device__ __forceinline__ T from_float(float x);
template <> __host__ __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __host__ __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}

// Dropout on a run of n consecutive flat indices first .. first+n-1: f(k, keep) for k = 0 .. n-1
// in order, keep = dropout_keep(seed, site, step, first + k, p). One Philox call per aligned
// group of 4 indices (common/philox.h: the call for index >> 2 gives the words of indices
// 4m .. 4m+3), so a run costs at most n/4 + 2 calls; the 64-bit index is formed once per run,
// and the four words of a call are used by an unrolled loop (fixed word positions, so they
// stay in registers; f is inlined four times).
// Unrolling matters for nvcc; g++ (simt) does not know the pragma and would warn.
#if defined(__CUDACC__)
#define TC_UNROLL _Pragma("unroll")
#else
#define TC_UNROLL
#endif
template <class F>
__device__ __forceinline__ void dropout_run(uint64_t seed, uint32_t site, uint64_t step, float p,
                                            uint64_t first, int n, F&& f) {
  int k = 0, w0 = (int)(first & 3);
  while (k < n) {
    const Philox4 r = philox4x32_10((uint32_t)((first + k) >> 2), site, (uint32_t)step,
                                    (uint32_t)(step >> 32), (uint32_t)seed, (uint32_t)(seed >> 32));
TC_UNROLL
    for (int w = 0; w < 4; ++w)
      if (w >= w0 && k < n) {
        f(k, (float)(r.v[w] >> 8) * (1.0f / 16777216.0f) >= p);  // = philox_uniform >= p
        ++k;
      }
    w0 = 0;
  }
}

__device__ __forceinline__ int clampi(int x, int lo, int hi) { return x < lo ? lo : x > hi ? hi : x; }

// Rows [r0, r0 + n) of one head's HD bf16 features (rows `ld` elements apart, 16-byte aligned)
// into a (n, HD+8) shared tile, rows >= T zero. Threads `tid` of `nt` cooperate; 16-byte loads.
template <int HD>
__device__ __forceinline__ void load_rows(__nv_bfloat16* dst, const __nv_bfloat16* src, size_t ld,
                                          int r0, int n, int T, int tid, int nt) {
  constexpr int V = HD / 8;  // 16-byte vectors per row
  for (int c = tid; c < n * V; c += nt) {
    const int r = c / V, k = (c % V) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r0 + r < T) v = *reinterpret_cast<const uint4*>(src + (size_t)(r0 + r) * ld + k);
    *reinterpret_cast<uint4*>(dst + r * TcDims<HD>::Ldh + k) = v;
  }
}

// The HD/16 A fragments (k = 0, 16, ...) of a (16, HD) bf16 tile in shared memory.
template <int HD>
__device__ __forceinline__ void load_a(FragA (&a)[HD / 16], const __nv_bfloat16* tile) {
  for (int k = 0; k < HD / 16; ++k) wmma::load_matrix_sync(a[k], tile + 16 * k, TcDims<HD>::Ldh);
}

// acc (16 x 16) = A (16 x HD, HD/16 k fragments) x B^T where B's 16 rows (x HD) start at brow of
// a (., HD+8) bf16 tile: B^T is the col_major layout of those rows.
template <int HD>
__device__ __forceinline__ void mma_abt(FragC& acc, const FragA (&a)[HD / 16], const __nv_bfloat16* brow) {
  wmma::fill_fragment(acc, 0.0f);
  for (int k = 0; k < HD / 16; ++k) {
    FragBc b;
    wmma::load_matrix_sync(b, brow + 16 * k, TcDims<HD>::Ldh);
    wmma::mma_sync(acc, a[k], b, acc);
  }
}

// Writes the (16, HD) float tile `f` (pitch kTcLdf) of a warp as rows row0.. of a (rows, ld)
// OutT matrix, times mul, rows >= T skipped. Lane -> columns lane, lane + 32 (< HD) of every
// row: each store instruction covers consecutive elements of one row (coalesced), and the
// shared reads of a row are conflict-free.
template <int HD, class OutT>
__device__ __forceinline__ void write_rows(OutT* dst, size_t ld, const float* f, int row0, int T,
                                           float mul, int lane) {
  for (int r = 0; r < 16 && row0 + r < T; ++r) {
    OutT* d = dst + (size_t)(row0 + r) * ld;
    for (int c = lane; c < HD; c += 32) d[c] = from_float<OutT>(f[r * kTcLdf + c] * mul);
  }
}

// Launch geometry: blocks per (b, h) and warps per block for T rows in 16-row tiles.
struct Geometry {
  int blocks, warps;
};
inline Geometry geometry(int T, int max_warps) {
  const int tiles = (T + 15) / 16;
  const int blocks = (tiles + max_warps - 1) / max_warps;
  return Geometry{blocks, (tiles + blocks - 1) / blocks};
}

// ---------------------------------------------------------------------------------------------
// Forward: grid (blocks, NH, B), block 32*W. Warp w owns query rows i0 = (blockIdx.x*W + w)*16 ..
template <class OutT, int HD>
__global__ void __launch_bounds__(32 * kTcMaxWarpsFwd)
    attention_tc_forward_kernel(const __nv_bfloat16* __restrict__ qkv, OutT* __restrict__ out,
                                float* __restrict__ lse, int T, int C, int NH, float scale_log2,
                                float p_drop, float keep_scale, uint64_t seed, uint32_t site,
                                DevStep step_arg) {
  const uint64_t step = step_arg;  // a graph replay reads this step's value here
  TC_SMEM(smem);
  constexpr int Ldh = TcDims<HD>::Ldh, KS = TcDims<HD>::KS, TileH = TcDims<HD>::TileH;
  const int W = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __nv_bfloat16* Ks = reinterpret_cast<__nv_bfloat16*>(smem);            // (64, 72) keys
  __nv_bfloat16* Vs = reinterpret_cast<__nv_bfloat16*>(smem + TileH);   // (64, 72) values
  unsigned char* wbase = smem + 2 * TileH + (size_t)warp * (kWarpF + kWarpH);
  float* Sf = reinterpret_cast<float*>(wbase);                           // (16, 68) scores / O
  __nv_bfloat16* Pb = reinterpret_cast<__nv_bfloat16*>(wbase + kWarpF);  // (16, 72) Q, then P'

  const int b = blockIdx.z, h = blockIdx.y;
  const int i0 = (blockIdx.x * W + warp) * 16;  // this warp's first query row
  const bool active = i0 < T;                   // warp-uniform; idle warps only help load
  const size_t C3 = 3 * (size_t)C, bh = (size_t)b * NH + h;
  const __nv_bfloat16* qh = qkv + (size_t)b * T * C3 + (size_t)h * HD;  // q of row 0, head h
  const int r = lane >> 1, half = lane & 1;   // softmax mapping: row r, half the columns
  const int i = i0 + r;                       // this lane's query row
  const bool drop = p_drop > 0.0f;

  FragA qa[KS];
  FragC o[KS];
  if (active) {
    load_rows<HD>(Pb, qh, C3, i0, 16, T, lane, 32);
    __syncwarp();
    load_a<HD>(qa, Pb);
    for (int d = 0; d < KS; ++d) wmma::fill_fragment(o[d], 0.0f);
  }
  float m = -INFINITY, l = 0.0f;  // row i: running max of s = S*log2(e), sum of exp2(s - m)

  for (int j0 = 0; j0 < T; j0 += kTcChunk) {
    __syncthreads();  // every warp is done with the previous chunk
    const int nsub = min(kTcChunk, T - j0 + 15) / 16;  // 16-key sub-tiles holding keys < T
    load_rows<HD>(Ks, qh + C, C3, j0, nsub * 16, T, threadIdx.x, blockDim.x);
    load_rows<HD>(Vs, qh + 2 * (size_t)C, C3, j0, nsub * 16, T, threadIdx.x, blockDim.x);
    __syncthreads();
    if (!active) continue;

    for (int n = 0; n < nsub; ++n) {  // S (16 x 16n) = Q K^T
      FragC s;
      mma_abt<HD>(s, qa, Ks + 16 * n * Ldh);
      wmma::store_matrix_sync(Sf + 16 * n, s, kTcLdf, wmma::mem_row_major);
    }
    __syncwarp();
    // Online softmax of row i over columns [c0, c1) of this chunk (the two lanes of a row split
    // the chunk's width; keys >= T are skipped and get P' = 0). Tiles hold raw q.k; s = q.k *
    // scale_log2 = S * log2(e).
    const int hw = nsub * 8, c0 = half * hw, c1 = c0 + hw;
    const int ce = clampi(T - j0, c0, c1);  // this lane's columns [c0, ce) hold keys < T
    float* srow = Sf + r * kTcLdf;
    float smax = -INFINITY;  // of the raw scores: the scale is positive, so it commutes with max
    for (int c = c0; c < ce; ++c) smax = fmaxf(smax, srow[c]);
    float mt = fmaxf(m, smax * scale_log2);
    mt = fmaxf(mt, __shfl_xor_sync(kTcFull, mt, 1));  // finite: column 0 (key j0 < T) is lane 2r's
    const float alpha = exp2f(m - mt);                 // 0 on the first chunk
    float sum = 0.0f;
    __nv_bfloat16* prow = Pb + r * kTcLdp;
    if (drop && i < T) {
      dropout_run(seed, site, step, p_drop, (bh * T + i) * (uint64_t)T + j0 + c0, ce - c0,
                  [&](int k, bool keep) {  // flat index of (i, j0 + c0 + k)
                    const float p = exp2f(fmaf(srow[c0 + k], scale_log2, -mt));
                    sum += p;
                    prow[c0 + k] = __float2bfloat16(keep ? p : 0.0f);
                  });
    } else {
      for (int c = c0; c < ce; ++c) {
        const float p = exp2f(fmaf(srow[c], scale_log2, -mt));
        sum += p;
        prow[c] = __float2bfloat16(p);
      }
    }
    for (int c = ce; c < c1; ++c) prow[c] = __float2bfloat16(0.0f);  // keys past T
    sum += __shfl_xor_sync(kTcFull, sum, 1);
    l = l * alpha + sum;
    m = mt;
    __syncwarp();  // Sf read, Pb written by every lane
    // Rescale O's rows by alpha through shared memory (only when some row's max moved).
    if (j0 > 0 && __any_sync(kTcFull, alpha != 1.0f)) {
      for (int d = 0; d < KS; ++d) wmma::store_matrix_sync(Sf + 16 * d, o[d], kTcLdf, wmma::mem_row_major);
      __syncwarp();
      for (int c = half * (HD / 2); c < (half + 1) * (HD / 2); ++c) srow[c] *= alpha;
      __syncwarp();
      for (int d = 0; d < KS; ++d) wmma::load_matrix_sync(o[d], Sf + 16 * d, kTcLdf, wmma::mem_row_major);
    }
    for (int kk = 0; kk < nsub; ++kk) {  // O += P' V
      FragA pa;
      wmma::load_matrix_sync(pa, Pb + 16 * kk, kTcLdp);
      for (int d = 0; d < KS; ++d) {
        FragBr vb;
        wmma::load_matrix_sync(vb, Vs + 16 * kk * Ldh + 16 * d, Ldh);
        wmma::mma_sync(o[d], pa, vb, o[d]);
      }
    }
    __syncwarp();  // done reading Sf (rescale) before the next chunk's scores land there
  }
  if (!active) return;
  for (int d = 0; d < KS; ++d) wmma::store_matrix_sync(Sf + 16 * d, o[d], kTcLdf, wmma::mem_row_major);
  __syncwarp();
  {  // row i's normalisation (the lane pair of row r), then coalesced writes of all 16 rows
    const float inv = keep_scale / l;
    float* orow = Sf + r * kTcLdf;
    for (int c = half * (HD / 2); c < (half + 1) * (HD / 2); ++c) orow[c] *= inv;
  }
  __syncwarp();
  write_rows<HD>(out + (size_t)b * T * C + (size_t)h * HD, (size_t)C, Sf, i0, T, 1.0f, lane);
  if (half == 0 && i < T) lse[bh * T + i] = (m + log2f(l)) * kLn2;
}

// ---------------------------------------------------------------------------------------------
// Backward 1: D_i = dO_i . O_i (to Dbuf) and dq_i. grid (blocks, NH, B), block 32*W; warp w owns
// query rows i0 .. i0+15 and streams K/V chunks.
//   dP'_ij = dO_i . v_j, dP_ij = dP'_ij M_ij/(1-p), dS_ij = P_ij (dP_ij - D_i), dq_i = sum_j dS_ij k_j / sqrt(hd)
template <class OutT, int HD>
__global__ void __launch_bounds__(32 * kTcMaxWarpsBwd)
    attention_tc_backward_dq_kernel(const OutT* __restrict__ dout, const __nv_bfloat16* __restrict__ qkv,
                                    const OutT* __restrict__ out, const float* __restrict__ lse,
                                    float* __restrict__ Dbuf, OutT* __restrict__ dqkv, int T,
                                    int C, int NH, float scale, float scale_log2, float p_drop,
                                    float keep_scale, uint64_t seed, uint32_t site, DevStep step_arg) {
  const uint64_t step = step_arg;  // a graph replay reads this step's value here
  TC_SMEM(smem);
  constexpr int Ldh = TcDims<HD>::Ldh, KS = TcDims<HD>::KS, TileH = TcDims<HD>::TileH;
  const int W = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __nv_bfloat16* Ks = reinterpret_cast<__nv_bfloat16*>(smem);
  __nv_bfloat16* Vs = reinterpret_cast<__nv_bfloat16*>(smem + TileH);
  unsigned char* wbase = smem + 2 * TileH + (size_t)warp * (2 * kWarpF + kWarpH);
  float* Sf = reinterpret_cast<float*>(wbase);                                // (16, 68) S, then dq
  float* dPf = reinterpret_cast<float*>(wbase + kWarpF);                      // (16, 68) dP'
  __nv_bfloat16* dSb = reinterpret_cast<__nv_bfloat16*>(wbase + 2 * kWarpF);  // (16, 72) Q, dO, dS

  const int b = blockIdx.z, h = blockIdx.y;
  const int i0 = (blockIdx.x * W + warp) * 16;
  const bool active = i0 < T;
  const size_t C3 = 3 * (size_t)C, bh = (size_t)b * NH + h;
  const __nv_bfloat16* qh = qkv + (size_t)b * T * C3 + (size_t)h * HD;
  const size_t ohead = (size_t)b * T * C + (size_t)h * HD;  // out / dout of row 0, head h
  const int r = lane >> 1, half = lane & 1;
  const int i = i0 + r;
  const bool row_ok = i < T;
  const bool drop = p_drop > 0.0f;

  FragA qa[KS], da[KS];
  FragC dq[KS];
  float Di = 0.0f, lse2 = 0.0f;  // D_i, and lse_i in log2 units
  if (active) {
    load_rows<HD>(dSb, qh, C3, i0, 16, T, lane, 32);
    __syncwarp();
    load_a<HD>(qa, dSb);
    __syncwarp();  // every lane has its Q fragments before dO overwrites the tile
    // dO rows as bf16 operands (exact when OutT is bf16), and D_i in FP32 from OutT values.
    for (int c = half * (HD / 2); c < (half + 1) * (HD / 2); ++c) {
      const float g = row_ok ? to_float(dout[ohead + (size_t)i * C + c]) : 0.0f;
      const float y = row_ok ? to_float(out[ohead + (size_t)i * C + c]) : 0.0f;
      Di = fmaf(g, y, Di);
      dSb[r * Ldh + c] = __float2bfloat16(g);
    }
    Di += __shfl_xor_sync(kTcFull, Di, 1);
    if (row_ok && half == 0) Dbuf[bh * T + i] = Di;
    if (row_ok) lse2 = lse[bh * T + i] * kLog2e;
    __syncwarp();
    load_a<HD>(da, dSb);
    for (int d = 0; d < KS; ++d) wmma::fill_fragment(dq[d], 0.0f);
  }

  for (int j0 = 0; j0 < T; j0 += kTcChunk) {
    __syncthreads();
    const int nsub = min(kTcChunk, T - j0 + 15) / 16;
    load_rows<HD>(Ks, qh + C, C3, j0, nsub * 16, T, threadIdx.x, blockDim.x);
    load_rows<HD>(Vs, qh + 2 * (size_t)C, C3, j0, nsub * 16, T, threadIdx.x, blockDim.x);
    __syncthreads();
    if (!active) continue;

    for (int n = 0; n < nsub; ++n) {
      FragC s;
      mma_abt<HD>(s, qa, Ks + 16 * n * Ldh);  // S = Q K^T
      wmma::store_matrix_sync(Sf + 16 * n, s, kTcLdf, wmma::mem_row_major);
      mma_abt<HD>(s, da, Vs + 16 * n * Ldh);  // dP' = dO V^T
      wmma::store_matrix_sync(dPf + 16 * n, s, kTcLdf, wmma::mem_row_major);
    }
    __syncwarp();  // (also: every lane is done reading dSb from the previous chunk's dS K)
    const int hw = nsub * 8, c0 = half * hw, c1 = c0 + hw;
    const int ce = row_ok ? clampi(T - j0, c0, c1) : c0;  // columns [c0, ce): keys < T, row < T
    const float* srow = Sf + r * kTcLdf;
    const float* dprow = dPf + r * kTcLdf;
    __nv_bfloat16* dsrow = dSb + r * kTcLdp;
    if (drop && ce > c0) {
      dropout_run(seed, site, step, p_drop, (bh * T + i) * (uint64_t)T + j0 + c0, ce - c0,
                  [&](int k, bool keep) {
                    const int c = c0 + k;
                    const float p = exp2f(fmaf(srow[c], scale_log2, -lse2));  // P_ij
                    const float dP = keep ? dprow[c] * keep_scale : 0.0f;
                    dsrow[c] = __float2bfloat16(p * (dP - Di));
                  });
    } else {
      for (int c = c0; c < ce; ++c) {
        const float p = exp2f(fmaf(srow[c], scale_log2, -lse2));
        dsrow[c] = __float2bfloat16(p * (dprow[c] * keep_scale - Di));
      }
    }
    for (int c = ce; c < c1; ++c) dsrow[c] = __float2bfloat16(0.0f);
    __syncwarp();
    for (int kk = 0; kk < nsub; ++kk) {  // dq += dS K
      FragA sa;
      wmma::load_matrix_sync(sa, dSb + 16 * kk, kTcLdp);
      for (int d = 0; d < KS; ++d) {
        FragBr kb;
        wmma::load_matrix_sync(kb, Ks + 16 * kk * Ldh + 16 * d, Ldh);
        wmma::mma_sync(dq[d], sa, kb, dq[d]);
      }
    }
  }
  if (!active) return;
  __syncwarp();
  for (int d = 0; d < KS; ++d) wmma::store_matrix_sync(Sf + 16 * d, dq[d], kTcLdf, wmma::mem_row_major);
  __syncwarp();
  write_rows<HD>(dqkv + (size_t)b * T * C3 + (size_t)h * HD, C3, Sf, i0, T, scale, lane);
}

// ---------------------------------------------------------------------------------------------
// Backward 2: dk_j and dv_j. grid (blocks, NH, B), block 32*W; warp w owns key rows j0 .. j0+15
// and streams Q/dO/lse/D chunks. Works on transposed tiles (rows = keys, columns = queries):
//   S^T = K Q^T, dP'^T = V dO^T;  dv_j = sum_i P'_ij dO_i,  dk_j = sum_i dS_ij q_i / sqrt(hd).
template <class OutT, int HD>
__global__ void __launch_bounds__(32 * kTcMaxWarpsBwd)
    attention_tc_backward_dkdv_kernel(const OutT* __restrict__ dout, const __nv_bfloat16* __restrict__ qkv,
                                      const float* __restrict__ lse, const float* __restrict__ Dbuf,
                                      OutT* __restrict__ dqkv, int T, int C, int NH, float scale,
                                      float scale_log2, float p_drop, float keep_scale,
                                      uint64_t seed, uint32_t site, DevStep step_arg) {
  const uint64_t step = step_arg;  // a graph replay reads this step's value here
  TC_SMEM(smem);
  constexpr int Ldh = TcDims<HD>::Ldh, KS = TcDims<HD>::KS, TileH = TcDims<HD>::TileH;
  const int W = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(smem);            // (64, 72) queries
  __nv_bfloat16* dOs = reinterpret_cast<__nv_bfloat16*>(smem + TileH);  // (64, 72) dout rows
  float* Ls = reinterpret_cast<float*>(smem + 2 * TileH);               // (64) lse * log2(e)
  float* Ds = Ls + kTcChunk;                                             // (64) D
  unsigned char* wbase = smem + 2 * TileH + 2 * kTcChunk * 4 + (size_t)warp * (2 * kWarpF + 2 * kWarpH);
  float* Sf = reinterpret_cast<float*>(wbase);                           // (16, 68) S^T, then dk/dv
  float* dPf = reinterpret_cast<float*>(wbase + kWarpF);                 // (16, 68) dP'^T
  __nv_bfloat16* Pb = reinterpret_cast<__nv_bfloat16*>(wbase + 2 * kWarpF);            // P'^T; K, V
  __nv_bfloat16* dSb = reinterpret_cast<__nv_bfloat16*>(wbase + 2 * kWarpF + kWarpH);  // dS^T

  const int b = blockIdx.z, h = blockIdx.y;
  const int j0 = (blockIdx.x * W + warp) * 16;  // this warp's first key row
  const bool active = j0 < T;
  const size_t C3 = 3 * (size_t)C, bh = (size_t)b * NH + h;
  const __nv_bfloat16* qh = qkv + (size_t)b * T * C3 + (size_t)h * HD;
  const OutT* doh = dout + (size_t)b * T * C + (size_t)h * HD;
  const bool drop = p_drop > 0.0f;

  FragA ka[KS], va[KS];
  FragC dk[KS], dv[KS];
  if (active) {
    load_rows<HD>(Pb, qh + C, C3, j0, 16, T, lane, 32);
    load_rows<HD>(dSb, qh + 2 * (size_t)C, C3, j0, 16, T, lane, 32);
    __syncwarp();
    load_a<HD>(ka, Pb);
    load_a<HD>(va, dSb);
    for (int d = 0; d < KS; ++d) {
      wmma::fill_fragment(dk[d], 0.0f);
      wmma::fill_fragment(dv[d], 0.0f);
    }
  }

  for (int q0 = 0; q0 < T; q0 += kTcChunk) {
    __syncthreads();
    const int nsub = min(kTcChunk, T - q0 + 15) / 16;
    load_rows<HD>(Qs, qh, C3, q0, nsub * 16, T, threadIdx.x, blockDim.x);
    if constexpr (std::is_same<OutT, __nv_bfloat16>::value) {  // dO rows as they are, 16-byte loads
      load_rows<HD>(dOs, doh, (size_t)C, q0, nsub * 16, T, threadIdx.x, blockDim.x);
    } else {  // rounded to bf16 operands
      for (int e = threadIdx.x; e < nsub * 16 * HD; e += blockDim.x) {
        const int rr = e / HD, cc = e % HD;
        dOs[rr * Ldh + cc] = __float2bfloat16(q0 + rr < T ? to_float(doh[(size_t)(q0 + rr) * C + cc]) : 0.0f);
      }
    }
    for (int e = threadIdx.x; e < kTcChunk; e += blockDim.x) {
      Ls[e] = q0 + e < T ? lse[bh * T + q0 + e] * kLog2e : 0.0f;
      Ds[e] = q0 + e < T ? Dbuf[bh * T + q0 + e] : 0.0f;
    }
    __syncthreads();
    if (!active) continue;

    __syncwarp();  // every lane is done with Pb/dSb (first chunk: the K/V staging) before rewriting
    for (int n = 0; n < nsub; ++n) {
      FragC s;
      mma_abt<HD>(s, ka, Qs + 16 * n * Ldh);   // S^T = K Q^T
      wmma::store_matrix_sync(Sf + 16 * n, s, kTcLdf, wmma::mem_row_major);
      mma_abt<HD>(s, va, dOs + 16 * n * Ldh);  // dP'^T = V dO^T
      wmma::store_matrix_sync(dPf + 16 * n, s, kTcLdf, wmma::mem_row_major);
    }
    __syncwarp();
    // Lane -> query column c (and c + 32), walking the 16 keys of that column: consecutive flat
    // indices ((bh*T + i)*T + j), so the Philox groups of 4 are shared along the walk.
    for (int c = lane; c < nsub * 16; c += 32) {
      const int iq = q0 + c;
      const int re = iq < T ? (T - j0 < 16 ? T - j0 : 16) : 0;  // rows [0, re): keys < T
      const float l2 = Ls[c], Dc = Ds[c];
      if (drop && re > 0) {
        dropout_run(seed, site, step, p_drop, (bh * T + iq) * (uint64_t)T + j0, re,
                    [&](int rr, bool keep) {  // flat index of (iq, j0 + rr)
                      const float p = exp2f(fmaf(Sf[rr * kTcLdf + c], scale_log2, -l2));
                      const float dP = keep ? dPf[rr * kTcLdf + c] * keep_scale : 0.0f;
                      Pb[rr * kTcLdp + c] = __float2bfloat16(keep ? p * keep_scale : 0.0f);
                      dSb[rr * kTcLdp + c] = __float2bfloat16(p * (dP - Dc));
                    });
      } else {
        for (int rr = 0; rr < re; ++rr) {
          const float p = exp2f(fmaf(Sf[rr * kTcLdf + c], scale_log2, -l2));
          Pb[rr * kTcLdp + c] = __float2bfloat16(p * keep_scale);
          dSb[rr * kTcLdp + c] = __float2bfloat16(p * (dPf[rr * kTcLdf + c] * keep_scale - Dc));
        }
      }
      for (int rr = re; rr < 16; ++rr) {
        Pb[rr * kTcLdp + c] = __float2bfloat16(0.0f);
        dSb[rr * kTcLdp + c] = __float2bfloat16(0.0f);
      }
    }
    __syncwarp();
    for (int kk = 0; kk < nsub; ++kk) {
      FragA pa, sa;
      wmma::load_matrix_sync(pa, Pb + 16 * kk, kTcLdp);
      wmma::load_matrix_sync(sa, dSb + 16 * kk, kTcLdp);
      for (int d = 0; d < KS; ++d) {
        FragBr ob, qb;
        wmma::load_matrix_sync(ob, dOs + 16 * kk * Ldh + 16 * d, Ldh);
        wmma::mma_sync(dv[d], pa, ob, dv[d]);  // dv += P'^T dO
        wmma::load_matrix_sync(qb, Qs + 16 * kk * Ldh + 16 * d, Ldh);
        wmma::mma_sync(dk[d], sa, qb, dk[d]);  // dk += dS^T Q
      }
    }
  }
  if (!active) return;
  OutT* drow = dqkv + (size_t)b * T * C3 + (size_t)h * HD;
  __syncwarp();
  for (int d = 0; d < KS; ++d) wmma::store_matrix_sync(Sf + 16 * d, dk[d], kTcLdf, wmma::mem_row_major);
  for (int d = 0; d < KS; ++d) wmma::store_matrix_sync(dPf + 16 * d, dv[d], kTcLdf, wmma::mem_row_major);
  __syncwarp();
  write_rows<HD>(drow + C, C3, Sf, j0, T, scale, lane);
  write_rows<HD>(drow + 2 * (size_t)C, C3, dPf, j0, T, 1.0f, lane);
}

// Head dims the kernels are instantiated for.
// (16 is left out: its forward spills at the registers ptxas picks, and no preset uses it.)
inline bool head_dim_ok(int hd) { return hd == 32 || hd == 64; }

// The head dim of a supported shape; throws vit::Error naming the shape otherwise.
inline int check_shape(const char* fn, int B, int T, int C, int NH, float p_drop) {
  auto fail = [&](const std::string& why) {
    throw Error(std::string(fn) + ": " + why + " (B=" + std::to_string(B) + ", T=" +
                std::to_string(T) + ", C=" + std::to_string(C) + ", heads=" + std::to_string(NH) +
                ")");
  };
  if (B < 0 || T < 1 || C < 1 || NH < 1) fail("sizes must be positive");
  if (C % NH != 0) fail("hidden size is not divisible by the number of heads");
  if (!head_dim_ok(C / NH))
    fail("head dim " + std::to_string(C / NH) +
         " is not supported by the tensor-core attention kernel (supported: 32, 64)");
  if (NH > 65535 || B > 65535) fail("batch size and heads must be at most 65535");
  if (!(p_drop >= 0.0f && p_drop < 1.0f)) fail("attention dropout must be in [0, 1)");
  return C / NH;
}

inline void check_aligned(const char* fn, const void* p, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
    throw Error(std::string(fn) + ": " + what + " must be 16-byte aligned (cudaMalloc'd)");
}

// Dynamic shared memory above 48 KiB needs the kernel's opt-in, once per kernel.
template <class K>
inline void allow_smem(K kernel, size_t bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

template <int HD, class OutT>
inline void forward_launch(cudaStream_t st, const __nv_bfloat16* qkv, OutT* out, float* lse, int B,
                           int T, int C, int NH, float p_drop, uint64_t seed, uint32_t site,
                           DevStep step) {
  const Geometry g = geometry(T, kTcMaxWarpsFwd);
  static const bool opted =
      (allow_smem(attention_tc_forward_kernel<OutT, HD>, fwd_smem<HD>(kTcMaxWarpsFwd)), true);
  (void)opted;
  const float scale_log2 = kLog2e / std::sqrt((float)HD), keep_scale = 1.0f / (1.0f - p_drop);
  LAUNCH((attention_tc_forward_kernel<OutT, HD>), dim3(g.blocks, NH, B), 32 * g.warps,
         fwd_smem<HD>(g.warps), st, qkv, out, lse, T, C, NH, scale_log2, p_drop, keep_scale, seed,
         site, step);
}

template <int HD, class OutT>
inline void backward_launch(cudaStream_t st, const OutT* dout, const __nv_bfloat16* qkv,
                            const OutT* out, const float* lse, OutT* dqkv, float* scratch, int B,
                            int T, int C, int NH, float p_drop, uint64_t seed, uint32_t site,
                            DevStep step) {
  const Geometry g = geometry(T, kTcMaxWarpsBwd);
  static const bool opted =
      (allow_smem(attention_tc_backward_dq_kernel<OutT, HD>, dq_smem<HD>(kTcMaxWarpsBwd)),
       allow_smem(attention_tc_backward_dkdv_kernel<OutT, HD>, dkdv_smem<HD>(kTcMaxWarpsBwd)), true);
  (void)opted;
  const float scale = 1.0f / std::sqrt((float)HD), scale_log2 = kLog2e * scale;
  const float keep_scale = 1.0f / (1.0f - p_drop);
  const dim3 grid(g.blocks, NH, B);
  LAUNCH((attention_tc_backward_dq_kernel<OutT, HD>), grid, 32 * g.warps, dq_smem<HD>(g.warps), st,
         dout, qkv, out, lse, scratch, dqkv, T, C, NH, scale, scale_log2, p_drop, keep_scale, seed,
         site, step);
  LAUNCH((attention_tc_backward_dkdv_kernel<OutT, HD>), grid, 32 * g.warps, dkdv_smem<HD>(g.warps),
         st, dout, qkv, lse, (const float*)scratch, dqkv, T, C, NH, scale, scale_log2, p_drop,
         keep_scale, seed, site, step);
}

}  // namespace attn_tc

// ---- launchers (the contract with host/: see the top of the file) -----------------------------

// Whether attention_forward_tc / attention_backward_tc support head dim hd (32, 64); other
// shapes go to the FP32 kernels of kernels/attention.cuh.
inline bool attention_tc_supports_head_dim(int hd) { return attn_tc::head_dim_ok(hd); }

// qkv (B,T,3C) bf16 -> out (B,T,C) OutT (=), lse (B,NH,T) float (=). OutT: float or __nv_bfloat16.
// Head dims 32 and 64; vit::Error names the shape otherwise. qkv must be 16-byte aligned.
template <class OutT>
inline void attention_forward_tc(cudaStream_t st, const __nv_bfloat16* qkv, OutT* out, float* lse,
                                 int B, int T, int C, int NH, float p_drop, uint64_t seed,
                                 uint32_t site, DevStep step) {
  using namespace attn_tc;
  const int hd = check_shape("attention_forward_tc", B, T, C, NH, p_drop);
  if (B == 0) return;
  check_aligned("attention_forward_tc", qkv, "qkv");
  switch (hd) {
    case 32: forward_launch<32>(st, qkv, out, lse, B, T, C, NH, p_drop, seed, site, step); break;
    default: forward_launch<64>(st, qkv, out, lse, B, T, C, NH, p_drop, seed, site, step); break;
  }
}

// Floats of device scratch attention_backward_tc needs: D (B, NH, T).
inline size_t attention_tc_scratch_floats(int B, int T, int C, int NH) { return (size_t)B * NH * T; }

// dout (B,T,C) OutT, qkv (bf16), out and lse from attention_forward_tc (same p_drop/seed/site/
// step) -> dqkv (B,T,3C) OutT (=, every element). scratch: attention_tc_scratch_floats() floats.
// qkv and dout must be 16-byte aligned.
template <class OutT>
inline void attention_backward_tc(cudaStream_t st, const OutT* dout, const __nv_bfloat16* qkv,
                                  const OutT* out, const float* lse, OutT* dqkv, float* scratch,
                                  int B, int T, int C, int NH, float p_drop, uint64_t seed,
                                  uint32_t site, DevStep step) {
  using namespace attn_tc;
  const int hd = check_shape("attention_backward_tc", B, T, C, NH, p_drop);
  if (B == 0) return;
  check_aligned("attention_backward_tc", qkv, "qkv");
  check_aligned("attention_backward_tc", dout, "dout");
  switch (hd) {
    case 32: backward_launch<32>(st, dout, qkv, out, lse, dqkv, scratch, B, T, C, NH, p_drop, seed, site, step); break;
    default: backward_launch<64>(st, dout, qkv, out, lse, dqkv, scratch, B, T, C, NH, p_drop, seed, site, step); break;
  }
}

}  // namespace vit

#undef TC_UNROLL
#undef TC_SMEM
