// kernels/matmul.cuh — nn.Linear on rows, forward and backward, GEMMs by cuBLAS.
//
//   forward:  y (N, out) = x (N, in; row stride ldx) W^T + b,   W (out, in) as PyTorch, b (out)
//             or nullptr. With pre_act != nullptr the bias + GELU epilogue is fused:
//             pre_act (N, out) = x W^T + b (saved for the backward), y = gelu(pre_act).
//   backward: dx (N, in; row stride lddx) = dy W          (=, skipped when dx == nullptr)
//             dw (out, in) += dy^T x                      (+=, beta = 1 in the GEMM)
//             db (out)     += column sums of dy           (+=, skipped when db == nullptr)
//
// cuBLAS is column-major: a row-major (R, K) matrix with row stride ld is, to cuBLAS, a (K, R)
// matrix with leading dimension ld. So the row-major y = x W^T is the column-major
// y^T = W x^T with W read transposed; each call below spells its operands out.
// The GEMMs are cublasSgemm: the handle's math mode decides FP32 or TF32 tensor cores (the model
// sets CUBLAS_TF32_TENSOR_OP_MATH unless --no-tf32; tests leave the default FP32).
// ldx lets the head read only the CLS rows of the (B, T, C) residual stream (ldx = T*C) and
// lddx write their gradient back in place.
// Design: the bias (+GELU) epilogue is a separate elementwise pass over y (one read + one or two
// writes of N*out floats, memory bound and small next to the GEMM), a thread per 4 outputs with
// float4 when out % 4 == 0. db is a deterministic two-stage column sum (kernels/reduce.cuh):
// no float atomics, bitwise reproducible.
#pragma once

#include <string>

#include "common/config.h"
#include "common/error.h"
#include "kernels/common.cuh"
#include "kernels/gelu.cuh"
#include "kernels/reduce.cuh"

namespace vit {

// y (N, out) += b; with pre_act: pre_act = y + b, y = gelu(pre_act).
template <bool VEC>
static __global__ void __launch_bounds__(256) bias_gelu_epilogue_kernel(floatX* y, const floatX* __restrict__ b,
                                                 floatX* pre_act, int N, int out, bool gelu,
                                                 Gelu g) {
  const size_t n = (size_t)N * out;
  const size_t groups = (n + 3) / 4;
  for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < groups;
       q += (size_t)gridDim.x * blockDim.x) {
    const size_t i = q * 4;
    if (VEC && i + 4 <= n) {  // out % 4 == 0: the 4 columns are in one row
      float4 v = *reinterpret_cast<const float4*>(y + i);
      if (b) {
        const float4 bv = *reinterpret_cast<const float4*>(b + (int)(i % out));
        v.x += bv.x; v.y += bv.y; v.z += bv.z; v.w += bv.w;
      }
      if (gelu) {
        *reinterpret_cast<float4*>(pre_act + i) = v;
        v.x = gelu_fwd(v.x, g); v.y = gelu_fwd(v.y, g);
        v.z = gelu_fwd(v.z, g); v.w = gelu_fwd(v.w, g);
      }
      *reinterpret_cast<float4*>(y + i) = v;
    } else {
      for (size_t j = i; j < i + 4 && j < n; ++j) {
        float v = (float)y[j];
        if (b) v += (float)b[j % out];
        if (gelu) {
          pre_act[j] = v;
          v = gelu_fwd(v, g);
        }
        y[j] = v;
      }
    }
  }
}

inline void matmul_check_shapes(const char* who, int N, int in, int out, int ldx) {
  if (N < 0 || in <= 0 || out <= 0 || ldx < in)
    throw Error(std::string(who) + ": bad shape (N " + std::to_string(N) + ", in " +
                std::to_string(in) + ", out " + std::to_string(out) + ", row stride " +
                std::to_string(ldx) + "): need in, out > 0 and row stride >= in");
}

inline size_t matmul_scratch_floats(int N, int out) {
  return (size_t)colsum_chunks(N) * (size_t)out;
}

// y (N, out) =; pre_act (N, out) = when given (then y = gelu(pre_act)). y must not alias x.
inline void matmul_forward(cublasHandle_t h, cudaStream_t st, const float* x, int ldx,
                           const float* w, const float* b, float* y, int N, int in, int out,
                           float* pre_act = nullptr, Gelu g = Gelu::Tanh) {
  matmul_check_shapes("matmul_forward", N, in, out, ldx);
  if (N == 0) return;
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublasSetStream(h, st));
  // Column-major: y^T (out x N, ld out) = op(W) (out x in) * x^T (in x N, ld ldx), where W
  // stored row-major (out, in) is column-major (in x out, ld in), hence op = T.
  CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, out, N, in, &one, w, in, x, ldx, &zero, y,
                           out));
  if (b || pre_act) {
    const size_t n = (size_t)N * out;
    const bool vec = out % 4 == 0 && aligned16(y) && (!b || aligned16(b)) &&
                     (!pre_act || aligned16(pre_act));
    if (vec)
      LAUNCH(bias_gelu_epilogue_kernel<true>, elementwise_grid(n, 256), 256, 0, st, y, b, pre_act,
             N, out, pre_act != nullptr, g);
    else
      LAUNCH(bias_gelu_epilogue_kernel<false>, elementwise_grid(n, 256), 256, 0, st, y, b,
             pre_act, N, out, pre_act != nullptr, g);
  }
}

// dx (N, in; row stride lddx) = dy W (when dx), dw (out, in) += dy^T x, db (out) += sum_rows dy
// (when db). scratch: matmul_scratch_floats(N, out) floats (only used for db).
inline void matmul_backward(cublasHandle_t h, cudaStream_t st, const float* dy, const float* x,
                            int ldx, const float* w, float* dx, int lddx, float* dw, float* db,
                            float* scratch, int N, int in, int out) {
  matmul_check_shapes("matmul_backward", N, in, out, ldx);
  if (dx && lddx < in) throw Error("matmul_backward: dx row stride smaller than in");
  if (N == 0) return;
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublasSetStream(h, st));
  if (dx) {
    // dx^T (in x N, ld lddx) = W-as-stored (in x out, ld in) * dy^T (out x N, ld out).
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, in, N, out, &one, w, in, dy, out, &zero,
                             dx, lddx));
  }
  // dw^T (in x out, ld in) += x^T (in x N, ld ldx) * dy (N x out) = op_T(dy^T (out x N, ld out)).
  CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, in, out, N, &one, x, ldx, dy, out, &one, dw,
                           in));
  if (db) column_sum_accumulate(st, dy, N, out, out, db, scratch);
}

}  // namespace vit
