// kernels/patch_embed.cuh — patch embedding (stride-p Conv2d as a GEMM) + CLS token + position
// embeddings, forward and backward.
//
//   x (B, Cin, H, H) images, float or __half (the FP16 input of the vit-b16 resize path);
//                   G = H / p patches per side, N = G*G, T = N + 1, K = Cin*p*p.
//   cols (B*N, K) = im2col(x): row b*N + n is patch n = gy*G + gx (row-major grid order), its
//                   pixels flattened in (c, ky, kx) order — the Conv2d weight's order. (=, kept
//                   for the backward's dw)
//   out (B, T, C):  out[b, 0] = cls + pos[0];  out[b, 1+n] = W cols[b*N+n] + bias + pos[1+n]  (=)
//   backward: dw (C, K) += dout_patches^T cols, db (C) += sum_{b,n} dout[b, 1+n],
//             dcls (C) += sum_b dout[b, 0], dpos (T, C) += sum_b dout[b, :]. No dx: the
//             images are not trained.
//
// FP16 input: only im2col reads x, converting each element to float as it gathers it; cols and
// everything after stay float, so FP16 input costs no precision beyond the input's own rounding.
//
// Design: the projection is one strided-batched GEMM whose output stride per image is T*C, so
// it writes the patch rows straight into (B, T, C) around the CLS rows (no copy); a small
// epilogue adds bias and position (and writes the CLS rows). In the backward, one kernel with a
// thread per (t, c) walks the batch in order: it sums dout over b for dpos/dcls (the same bits
// every run) and, on the way, gathers the patch rows of dout into a contiguous (B*N, C) scratch so
// dw is a single GEMM over all B*N rows (beta = 1 accumulates). db is then the fixed-order sum
// over t >= 1 of those per-position sums.
#pragma once

#include <string>
#include <type_traits>

#include "common/error.h"
#include "common/philox.h"
#include "kernels/common.cuh"
#include "kernels/precision.cuh"
#include "kernels/reduce.cuh"

namespace vit {

static __device__ __forceinline__ float im2col_load(float v) { return v; }
static __device__ __forceinline__ float im2col_load(__half v) { return __half2float(v); }

// cols (B*N, K) = im2col(x). A thread per element of cols: writes coalesced, reads p-long runs.
template <class XT>
static __global__ void __launch_bounds__(256) im2col_kernel(const XT* __restrict__ x, floatX* __restrict__ cols,
                                     int B, int Cin, int H, int p) {
  const int G = H / p, N = G * G, K = Cin * p * p;
  const size_t total = (size_t)B * N * K;
  for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
       idx += (size_t)gridDim.x * blockDim.x) {
    const int k = (int)(idx % K);
    const size_t row = idx / K;
    const int n = (int)(row % N), b = (int)(row / N);
    const int c = k / (p * p), ky = (k / p) % p, kx = k % p;
    const int yy = (n / G) * p + ky, xx = (n % G) * p + kx;
    cols[idx] = im2col_load(x[(((size_t)b * Cin + c) * H + yy) * H + xx]);
  }
}

// out (B, T, C): CLS rows = cls + pos[0]; patch rows (GEMM result) += bias, += pos[t].
static __global__ void __launch_bounds__(256) patch_embed_epilogue_kernel(floatX* __restrict__ out,
                                                   const floatX* __restrict__ bias,
                                                   const floatX* __restrict__ cls,
                                                   const floatX* __restrict__ pos, int B, int T,
                                                   int C) {
  const size_t total = (size_t)B * T * C;
  for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
       idx += (size_t)gridDim.x * blockDim.x) {
    const int c = (int)(idx % C);
    const int t = (int)((idx / C) % T);
    if (t == 0) out[idx] = (float)cls[c] + (float)pos[c];
    else out[idx] = ((float)out[idx] + (float)bias[c]) + (float)pos[(size_t)t * C + c];
  }
}

// The epilogue above, then the embedding dropout (mask of flat index i, kernels/dropout.cuh;
// p == 0: none) in place, then the first layer's LayerNorm of each row: y (B*T, C) YT, mean /
// rstd (B*T). One warp per row (a row is 64..768 floats): the LayerNorm's row statistics are
// warp shuffles, two-pass as kernels/layernorm.cuh; each lane re-reads only what it wrote.
template <class YT>
static __global__ void __launch_bounds__(256) patch_embed_epilogue_ln_kernel(
    float* __restrict__ out, const float* __restrict__ bias, const float* __restrict__ cls,
    const float* __restrict__ pos, int B, int T, int C, float p, float scale, uint64_t seed,
    uint32_t site, DevStep step_arg, const float* __restrict__ w, const float* __restrict__ b,
    float eps, YT* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd) {
  const uint64_t step = step_arg;
  const int lane = threadIdx.x % 32;
  const size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
  if (row >= (size_t)B * T) return;  // the whole warp leaves together
  const int t = (int)(row % T);
  float* xr = out + row * C;
  float s = 0.0f;
  for (int c = lane; c < C; c += 32) {
    float v = t == 0 ? cls[c] + pos[c] : (xr[c] + bias[c]) + pos[(size_t)t * C + c];
    if (p > 0.0f) v *= dropout_keep(seed, site, step, row * C + c, p) ? scale : 0.0f;
    xr[c] = v;
    s += v;
  }
  const float m = warp_sum(s) / (float)C;
  float ss = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float d = xr[c] - m;
    ss += d * d;
  }
  const float r = 1.0f / sqrtf(warp_sum(ss) / (float)C + eps);
  YT* yr = y + row * C;
  for (int c = lane; c < C; c += 32) store1(yr + c, (xr[c] - m) * r * w[c] + b[c]);
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

// A thread per (t, c): S = sum_b dout[b, t, c] in b order; dpos[t, c] += S; dcls[c] += S for
// t = 0; possum (T, C) = S; gathered (B*N, C) = dout's patch rows, contiguous. dout: float or
// bf16 (bf16 mode's stored gradient), rows ld elements apart.
template <class DT>
static __global__ void __launch_bounds__(256) patch_embed_bwd_sum_kernel(const DT* __restrict__ dout,
                                                  int ld, floatX* __restrict__ dpos,
                                                  floatX* __restrict__ dcls,
                                                  float* __restrict__ possum,
                                                  float* __restrict__ gathered, int B, int T,
                                                  int C) {
  const int N = T - 1;
  const size_t tc = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (tc >= (size_t)T * C) return;
  const int t = (int)(tc / C), c = (int)(tc % C);
  float s = 0.0f;
  for (int b = 0; b < B; ++b) {
    const float v = (float)dout[((size_t)b * T + t) * ld + c];
    s += v;
    if (t > 0) gathered[((size_t)b * N + (t - 1)) * C + c] = v;
  }
  possum[tc] = s;
  dpos[tc] = (float)dpos[tc] + s;
  if (t == 0) dcls[c] = (float)dcls[c] + s;
}

// db[c] += sum_{t=1..T-1} possum[t, c], in t order.
static __global__ void __launch_bounds__(256) patch_embed_bwd_bias_kernel(const float* __restrict__ possum,
                                                   floatX* __restrict__ db, int T, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.0f;
  for (int t = 1; t < T; ++t) s += possum[(size_t)t * C + c];
  db[c] = (float)db[c] + s;
}

inline void patch_embed_check(const char* who, int B, int Cin, int H, int p, int C) {
  if (B < 0 || Cin <= 0 || C <= 0 || p <= 0 || H <= 0 || H % p != 0)
    throw Error(std::string(who) + ": image size " + std::to_string(H) +
                " is not a positive multiple of the patch size " + std::to_string(p) +
                " (or channels/width not positive)");
}

inline size_t patch_embed_scratch_floats(int B, int Cin, int H, int p, int C) {
  const size_t G = (size_t)(H / p), N = G * G, T = N + 1;
  return (size_t)B * N * C + T * C;  // gathered dout patch rows (B*N, C) + per-position sums (T, C)
}

// The two launches both forward paths share: cols = im2col(x), then the patch rows of out
// (B, T, C) = W cols^T (the CLS rows are left for the epilogue).
template <class XT>
inline void patch_embed_gemm(cublasHandle_t h, cudaStream_t st, const XT* x, const float* w,
                             float* cols, float* out, int B, int Cin, int H, int p, int C) {
  const int G = H / p, N = G * G, T = N + 1, K = Cin * p * p;
  LAUNCH(im2col_kernel<XT>, grid_stride_blocks((size_t)B * N * K, 256), 256, 0, st, x, cols, B, Cin,
         H, p);
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublasSetStream(h, st));
  // Per image b, column-major: out_b^T (C x N, ld C) = W (stored (C, K) row-major = (K x C)
  // column-major, op T) * cols_b^T (K x N, ld K). W shared (stride 0), out stride T*C skips
  // the CLS row of each image.
  CUBLAS_CHECK(cublasSgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, C, N, K, &one, w, K, 0, cols,
                                         K, (long long)N * K, &zero, out + C, C,
                                         (long long)T * C, B));
}

// cols (B*N, Cin*p*p) =, out (B, T, C) =. XT: float or __half images.
template <class XT>
inline void patch_embed_forward_from(cublasHandle_t h, cudaStream_t st, const XT* x, const float* w,
                                const float* b, const float* cls, const float* pos, float* cols,
                                float* out, int B, int Cin, int H, int p, int C) {
  patch_embed_check("patch_embed_forward", B, Cin, H, p, C);
  if (B == 0) return;
  const int T = (H / p) * (H / p) + 1;
  patch_embed_gemm(h, st, x, w, cols, out, B, Cin, H, p, C);
  LAUNCH(patch_embed_epilogue_kernel, grid_stride_blocks((size_t)B * T * C, 256), 256, 0, st,
         out, b, cls, pos, B, T, C);
}

inline void patch_embed_forward(cublasHandle_t h, cudaStream_t st, const float* x, const float* w,
                                const float* b, const float* cls, const float* pos, float* cols,
                                float* out, int B, int Cin, int H, int p, int C) {
  patch_embed_forward_from(h, st, x, w, b, cls, pos, cols, out, B, Cin, H, p, C);
}
// FP16 images. A template that only __half matches (rather than a plain overload), so that a
// literal nullptr for x still picks the float overload above.
template <class XT, typename std::enable_if<std::is_same<XT, __half>::value, int>::type = 0>
inline void patch_embed_forward(cublasHandle_t h, cudaStream_t st, const XT* x, const float* w,
                                const float* b, const float* cls, const float* pos, float* cols,
                                float* out, int B, int Cin, int H, int p, int C) {
  patch_embed_forward_from(h, st, x, w, b, cls, pos, cols, out, B, Cin, H, p, C);
}

// The embedding and everything up to the first layer's LayerNorm in three launches: im2col, the
// GEMM, and one row kernel for the bias/CLS/position epilogue + dropout (p, seed, site, step) +
// LayerNorm (w, b, eps) -> out (B, T, C) = the residual stream entering layer 0, y (B, T, C) YT
// its LayerNorm, mean/rstd (B*T). XT: float or __half images.
template <class XT, class YT>
inline void patch_embed_forward_ln(cublasHandle_t h, cudaStream_t st, const XT* x, const float* w,
                                   const float* bias, const float* cls, const float* pos,
                                   float* cols, float* out, int B, int Cin, int H, int p, int C,
                                   float p_drop, uint64_t seed, uint32_t site, DevStep step,
                                   const float* ln_w, const float* ln_b, float eps, YT* y,
                                   float* mean, float* rstd) {
  patch_embed_check("patch_embed_forward", B, Cin, H, p, C);
  if (B == 0) return;
  if (!(p_drop >= 0.0f && p_drop < 1.0f))
    throw Error("patch_embed_forward: dropout probability " + std::to_string(p_drop) +
                " outside [0, 1)");
  const int T = (H / p) * (H / p) + 1;
  patch_embed_gemm(h, st, x, w, cols, out, B, Cin, H, p, C);
  const size_t rows = (size_t)B * T;
  LAUNCH(patch_embed_epilogue_ln_kernel<YT>, ceil_div(rows, 8), 256, 0, st, out, bias, cls, pos, B,
         T, C, p_drop, 1.0f / (1.0f - p_drop), seed, site, step, ln_w, ln_b, eps, y, mean, rstd);
}

// The per-position sums S (T, C) patch_embed_backward leaves at the start of its scratch: with
// db == nullptr the caller adds rows 1..T-1 into the bias gradient itself (the CUDA model does it
// with every other bias gradient, in one launch: kernels/reduce.cuh column_sums_many).
inline float* patch_embed_possum(float* scratch) { return scratch; }

// dw (C, K) +=, db (C) += (when not nullptr), dcls (C) +=, dpos (T, C) +=. dout (B, T, C) rows
// ld_dout elements apart (float, or bf16). scratch: patch_embed_scratch_floats(B, Cin, H, p, C).
template <class DT>
inline void patch_embed_backward_t(cublasHandle_t h, cudaStream_t st, const DT* dout, int ld_dout,
                                   const float* cols, float* dw, float* db, float* dcls,
                                   float* dpos, float* scratch, int B, int Cin, int H, int p,
                                   int C) {
  patch_embed_check("patch_embed_backward", B, Cin, H, p, C);
  if (B == 0) return;
  if (ld_dout < C) throw Error("patch_embed_backward: dout row stride smaller than the width");
  const int G = H / p, N = G * G, T = N + 1, K = Cin * p * p;
  float* possum = patch_embed_possum(scratch);  // (T, C)
  float* gathered = scratch + (size_t)T * C;    // (B*N, C)
  LAUNCH(patch_embed_bwd_sum_kernel<DT>, ceil_div((size_t)T * C, 256), 256, 0, st, dout, ld_dout,
         dpos, dcls, possum, gathered, B, T, C);
  if (db) LAUNCH(patch_embed_bwd_bias_kernel, ceil_div(C, 256), 256, 0, st, possum, db, T, C);
  const float one = 1.0f;
  CUBLAS_CHECK(cublasSetStream(h, st));
  // dw^T (K x C, ld K) += cols^T (K x B*N, ld K) * gathered (B*N x C) = op_T(gathered^T (C x B*N,
  // ld C)).
  CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, K, C, B * N, &one, cols, K, gathered, C,
                           &one, dw, K));
}
inline void patch_embed_backward(cublasHandle_t h, cudaStream_t st, const float* dout,
                                 const float* cols, float* dw, float* db, float* dcls, float* dpos,
                                 float* scratch, int B, int Cin, int H, int p, int C) {
  patch_embed_backward_t(h, st, dout, C, cols, dw, db, dcls, dpos, scratch, B, Cin, H, p, C);
}

}  // namespace vit
