// kernels/head.cuh — the classifier head's backward in one launch (configs without a final
// LayerNorm: the basic preset).
//
// The head is logits (B, K) = x W^T + b on the CLS rows x (row b = row 0 of image b of the
// residual stream leaving the encoder, rows T*C apart). Its backward, given dlogits (B, K):
//   dres (B*T, C) FP32 =  the gradient of the residual stream: row (b, 0) = dlogits[b] W, every
//                          other row 0 (no memset: this kernel writes every element)
//   out (B*T, C; row stride ld) OutT = drop(dres) with the mask (p, seed, site, step) of flat
//                          index r*C + c: the dy of the last layer's FC2 (its dropout's backward)
//   dW (K, C) FP32 += dlogits^T x  (sum over b in b order)
// The head's bias gradient is a column sum of dlogits (kernels/reduce.cuh column_sums_many).
//
// Design: K is 10..1000 and B*C a few hundred thousand, so every output is a short dot product
// (K terms for a dres element, B terms for a dW element) in FP32 on CUDA cores, in a fixed order
// (deterministic). One grid-stride kernel: a thread per column c does that column of dW (reading
// the CLS rows' x[., c]) and then the CLS rows' dres/out elements stored in x[., c]'s bytes —
// `out` is stored over the residual stream that x is (row for row), so the reads must come
// first, in the same thread; the other B*(T-1)*C elements are 0 and need no input. Replaces a memset, two GEMMs and
// a dropout kernel.
#pragma once

#include <string>

#include "common/error.h"
#include "common/philox.h"
#include "kernels/common.cuh"
#include "kernels/precision.cuh"
#include "kernels/reduce.cuh"

namespace vit {

template <class OutT>
static __global__ void __launch_bounds__(256) head_backward_kernel(
    const float* __restrict__ dlogits, const float* __restrict__ W, const float* x,
    float* __restrict__ dres, OutT* out, size_t ld, float* __restrict__ dW, int B, int T, int C,
    int K, float p, float scale, uint64_t seed, uint32_t site, DevStep step_arg) {
  const uint64_t step = step_arg;
  const size_t nzero = (size_t)B * (T - 1) * C, total = (size_t)C + nzero;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x) {
    if (i < (size_t)C) {
      const int c = (int)i;
      for (int k = 0; k < K; ++k) {
        float s = 0.0f;
        for (int b = 0; b < B; ++b) s += dlogits[(size_t)b * K + k] * x[(size_t)b * T * C + c];
        dW[(size_t)k * C + c] += s;
      }
      // x[., c] is not read again: now out may overwrite it. out's rows lie over x's rows (bf16
      // out: ld 2C, two elements per float of x), so this thread writes exactly the out elements
      // stored in x[., c]'s bytes: columns c (float) or 2c, 2c+1 (bf16); no other thread reads
      // or writes those bytes.
      constexpr int per = (int)(sizeof(float) / sizeof(OutT));
      for (int oc = c * per; oc < c * per + per && oc < C; ++oc)
        for (int b = 0; b < B; ++b) {
          const float* dz = dlogits + (size_t)b * K;
          float v = 0.0f;
          for (int k = 0; k < K; ++k) v += dz[k] * W[(size_t)k * C + oc];
          const size_t r = (size_t)b * T, e = r * C + oc;
          dres[e] = v;
          if (p > 0.0f) v *= dropout_keep(seed, site, step, e, p) ? scale : 0.0f;
          store1(out + r * ld + oc, v);
        }
    } else {
      // element j of the non-CLS rows: image b, token t >= 1, column c
      const size_t j = i - C, per = (size_t)(T - 1) * C;
      const size_t b = j / per, rest = j % per;
      const size_t r = b * T + 1 + rest / C, c = rest % C;
      dres[r * C + c] = 0.0f;
      store1(out + r * ld + c, 0.0f);  // drop(0) = 0 whatever the mask
    }
  }
}

// dlogits (B, K), W (K, C), x: the CLS rows (B rows, T*C apart) -> dres (B, T, C) =, out
// (B*T rows, row stride ld) = drop(dres), dW (K, C) +=. p in [0, 1).
template <class OutT>
inline void head_backward(cudaStream_t st, const float* dlogits, const float* W, const float* x,
                          float* dres, OutT* out, size_t ld, float* dW, int B, int T, int C, int K,
                          float p, uint64_t seed, uint32_t site, DevStep step) {
  if (B <= 0) return;
  if (T < 1 || C < 1 || K < 1 || ld < (size_t)C)
    throw Error("head_backward: bad shape (T " + std::to_string(T) + ", C " + std::to_string(C) +
                ", K " + std::to_string(K) + ", row stride " + std::to_string(ld) + ")");
  if (!(p >= 0.0f && p < 1.0f))
    throw Error("head_backward: dropout probability " + std::to_string(p) + " outside [0, 1)");
  const size_t total = (size_t)C + (size_t)B * (T - 1) * C;
  LAUNCH(head_backward_kernel<OutT>, grid_stride_blocks(total, 256), 256, 0, st, dlogits, W, x,
         dres, out, ld, dW, B, T, C, K, p, 1.0f / (1.0f - p), seed, site, step);
}

}  // namespace vit
