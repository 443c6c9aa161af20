// kernels/adam.cuh — global gradient norm + clipping, and the fused Adam/AdamW update over the
// whole flat parameter buffer (common/params.h), one launch each step.
//
//   grad_norm_clip: norm_coef (2) = [ ||g * grad_scale||_2 , clip coefficient ]   (=)
//                   coef = clip > 0 && norm > clip ? clip / (norm + 1e-6) : 1
//                   (torch.nn.utils.clip_grad_norm_). Two launches: per-block partial sums of
//                   squares into scratch, then one block adds them in block order — the same
//                   bits every run, no float atomics.
//   adam_update:    for every element of every span (p, g, m, v all (n), flat layout):
//                   g' = g * grad_scale * coef; Adam: g' += wd * p on decaying spans;
//                   AdamW: p -= lr * wd * p on decaying spans; m = b1 m + (1-b1) g';
//                   v = b2 v + (1-b2) g'^2; p -= lr * (m / bc1) / (sqrt(v / bc2) + eps) with
//                   bc1 = 1 - b1^t, bc2 = 1 - b2^t (t 1-based): vit::ref::adam_update, in its
//                   order of operations (PyTorch's: p - (lr/bc1) m / (sqrt(v)/sqrt(bc2) + eps)).
//                   Then g = 0 (the update consumes the gradient: zero_grad needs no memset
//                   before the next accumulation; common/model.h). Elements outside every span
//                   (alignment padding between tensors) are left untouched. coef is read from device memory (norm_coef[1]), so clipping never
//                   needs the host to wait for the norm.
//                   --precision bf16: p16 (n) != nullptr also gets bf16(p) (round to nearest
//                   even) of every updated element, the copy the BF16 GEMMs read; p, g, m, v
//                   stay FP32 (master weights). No loss scaling: BF16 has FP32's exponent range.
//
// Design: a thread per group of 4 consecutive elements. The thread finds the span holding its
// first element by binary search over the spans (about 150 for a 12-layer model, a few cached
// loads), and when the whole group lies in that span uses float4 loads/stores; groups that
// straddle a tensor end (numel not a multiple of 4) or padding go element by element. The
// partial-sum grid of the norm depends only on n (never on the GPU), so the summation order —
// and the result — is the same on every device and under simt.
#pragma once

#include <cmath>
#include <string>

#include "common/error.h"
#include "common/model.h"
#include "kernels/common.cuh"
#include "kernels/reduce.cuh"

namespace vit {

struct TensorSpan {
  uint64_t offset, numel;  // a range of the flat buffer, in floats
  int decay;               // weight decay applies to this range (ParamTensor::decay)
};

constexpr int NORM_THREADS = 256;
constexpr int NORM_MAX_BLOCKS = 1024;

inline int grad_norm_blocks(size_t n) {
  const size_t per_block = (size_t)NORM_THREADS * 16;  // at least 16 elements per thread
  const size_t b = (n + per_block - 1) / per_block;
  return (int)(b < 1 ? 1 : (b > NORM_MAX_BLOCKS ? NORM_MAX_BLOCKS : b));
}

inline size_t grad_norm_scratch_floats(size_t n) { return (size_t)grad_norm_blocks(n); }

template <bool VEC>
static __global__ void __launch_bounds__(NORM_THREADS) grad_sumsq_partial_kernel(const floatX* __restrict__ g, size_t n,
                                                 float grad_scale, float* __restrict__ partial) {
  __shared__ float red[32];
  const size_t groups = (n + 3) / 4;
  float s = 0.0f;
  for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < groups;
       q += (size_t)gridDim.x * blockDim.x) {
    const size_t i = q * 4;
    if (VEC && i + 4 <= n) {
      const float4 v = *reinterpret_cast<const float4*>(g + i);
      const float a = v.x * grad_scale, b = v.y * grad_scale, c = v.z * grad_scale,
                  d = v.w * grad_scale;
      s += (a * a + b * b) + (c * c + d * d);
    } else {
      for (size_t j = i; j < i + 4 && j < n; ++j) {
        const float a = (float)g[j] * grad_scale;
        s += a * a;
      }
    }
  }
  s = block_sum(s, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

static __global__ void __launch_bounds__(NORM_THREADS) grad_norm_final_kernel(const float* __restrict__ partial, int nblocks,
                                              float clip, float* __restrict__ norm_coef) {
  __shared__ float red[32];
  float s = 0.0f;
  for (int k = threadIdx.x; k < nblocks; k += blockDim.x) s += partial[k];
  s = block_sum(s, red);
  if (threadIdx.x == 0) {
    const float norm = sqrtf(s);
    norm_coef[0] = norm;
    norm_coef[1] = (clip > 0.0f && norm > clip) ? clip / (norm + 1e-6f) : 1.0f;
  }
}

// norm_coef (device, 2 floats) = [norm of g * grad_scale, clip coefficient]. clip <= 0: no
// clipping (coef 1), the norm is still computed. scratch: grad_norm_scratch_floats(n) floats.
inline void grad_norm_clip(cudaStream_t st, const float* g, size_t n, float grad_scale, float clip,
                           float* norm_coef, float* scratch) {
  const int nb = grad_norm_blocks(n);
  if (aligned16(g))
    LAUNCH(grad_sumsq_partial_kernel<true>, nb, NORM_THREADS, 0, st, g, n, grad_scale, scratch);
  else
    LAUNCH(grad_sumsq_partial_kernel<false>, nb, NORM_THREADS, 0, st, g, n, grad_scale, scratch);
  LAUNCH(grad_norm_final_kernel, 1, NORM_THREADS, 0, st, scratch, nb, clip, norm_coef);
}

// Index of the span holding element e (spans sorted by offset, disjoint), or -1.
static __device__ __forceinline__ int find_span(const TensorSpan* spans, int nspans, uint64_t e) {
  int lo = 0, hi = nspans;  // first span with offset > e
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (spans[mid].offset <= e) lo = mid + 1; else hi = mid;
  }
  const int s = lo - 1;
  return (s >= 0 && e < spans[s].offset + spans[s].numel) ? s : -1;
}

struct AdamArgs {
  float beta1, beta2, eps;
  float step_size;   // lr / (1 - beta1^t)
  float bc2_sqrt;    // sqrt(1 - beta2^t)
  float l2;          // Adam: weight decay added to the gradient (0 for AdamW)
  float decoupled;   // AdamW: 1 - lr * wd, the factor decaying parameters are multiplied by
  float grad_scale;
};

// The values of AdamArgs that change every step. A CUDA graph's adam_update reads them from
// device memory (uploaded by the step's first node); they are computed by the same host code
// as an eager launch's, so both give the same bits.
struct AdamStepArgs {
  float step_size, bc2_sqrt, decoupled;
};
inline AdamStepArgs adam_step_args(const OptimConfig& o, float lr, int64_t t) {
  if (t < 1) throw Error("adam_update: step t must be >= 1 (1-based), got " + std::to_string(t));
  // Bias corrections in double, as the reference: beta^t for large t loses nothing that way.
  const float bc1 = (float)(1.0 - std::pow((double)o.beta1, (double)t));
  AdamStepArgs d;
  d.step_size = lr / bc1;
  d.bc2_sqrt = (float)std::sqrt(1.0 - std::pow((double)o.beta2, (double)t));
  d.decoupled = o.kind == OptimConfig::AdamW ? 1.0f - lr * o.weight_decay : 1.0f;
  return d;
}

// One element, in the reference's order of operations (cpu/optim.cpp = torch.optim.Adam(W)).
static __device__ __forceinline__ void adam_element(float& p, float g, float& m, float& v,
                                                    bool decay, float gs, const AdamArgs& a) {
  g = g * gs;
  if (decay) {
    g += a.l2 * p;
    p *= a.decoupled;
  }
  m = a.beta1 * m + (1.0f - a.beta1) * g;
  v = a.beta2 * v + (1.0f - a.beta2) * g * g;
  p = p - a.step_size * m / (sqrtf(v) / a.bc2_sqrt + a.eps);
}

template <bool VEC>
static __global__ void __launch_bounds__(256) adam_update_kernel(floatX* __restrict__ p, floatX* __restrict__ g,
                                          float* __restrict__ m, float* __restrict__ v, size_t n,
                                          const TensorSpan* __restrict__ spans, int nspans,
                                          AdamArgs a, const float* __restrict__ norm_coef,
                                          __nv_bfloat16* __restrict__ p16,
                                          const AdamStepArgs* __restrict__ dyn) {
  if (dyn) {  // a graph's step: this step's lr and bias corrections from device memory
    a.step_size = dyn->step_size;
    a.bc2_sqrt = dyn->bc2_sqrt;
    a.decoupled = dyn->decoupled;
  }
  const float gs = a.grad_scale * (norm_coef ? norm_coef[1] : 1.0f);  // g' = g * gs
  // The loop steps the element index i itself (i = 4 q; i < n <=> q < ceil(n / 4): the same
  // groups in the same order as a loop over q). A loop over q with i = q * 4 made the
  // compiler's loop strength reduction keep three more 64-bit induction values (4 q0, 4 q0 - n
  // and an iteration count) live across the whole body; with dyn and p16 that passed the 48
  // registers ptxas settles on for this kernel on sm_80, and ptxas spilled those three to the
  // stack (make resources). Stepping i: 45 registers, no spill, on sm_80 and sm_90.
  const size_t stride = (size_t)gridDim.x * blockDim.x * 4;
  for (size_t i = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) * 4; i < n; i += stride) {
    int s = find_span(spans, nspans, i);
    if (VEC && s >= 0 && i + 4 <= spans[s].offset + spans[s].numel && i + 4 <= n) {
      const bool decay = spans[s].decay != 0;
      float4 pv = *reinterpret_cast<const float4*>(p + i);
      const float4 gv = *reinterpret_cast<const float4*>(g + i);
      float4 mv = *reinterpret_cast<const float4*>(m + i);
      float4 vv = *reinterpret_cast<const float4*>(v + i);
      adam_element(pv.x, gv.x, mv.x, vv.x, decay, gs, a);
      adam_element(pv.y, gv.y, mv.y, vv.y, decay, gs, a);
      adam_element(pv.z, gv.z, mv.z, vv.z, decay, gs, a);
      adam_element(pv.w, gv.w, mv.w, vv.w, decay, gs, a);
      *reinterpret_cast<float4*>(p + i) = pv;
      *reinterpret_cast<float4*>(m + i) = mv;
      *reinterpret_cast<float4*>(v + i) = vv;
      if (p16) {
        p16[i] = __float2bfloat16(pv.x);
        p16[i + 1] = __float2bfloat16(pv.y);
        p16[i + 2] = __float2bfloat16(pv.z);
        p16[i + 3] = __float2bfloat16(pv.w);
      }
      *reinterpret_cast<float4*>(g + i) = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    } else {
      for (size_t j = i; j < i + 4 && j < n; ++j) {
        if (s < 0 || j >= spans[s].offset + spans[s].numel) s = find_span(spans, nspans, j);
        if (s < 0) continue;  // padding between tensors
        float pj = p[j], mj = m[j], vj = v[j];
        adam_element(pj, (float)g[j], mj, vj, spans[s].decay != 0, gs, a);
        p[j] = pj;
        m[j] = mj;
        v[j] = vj;
        if (p16) p16[j] = __float2bfloat16(pj);
        g[j] = 0.0f;
      }
    }
  }
}

// p, m, v (n) updated in place over the spans (device array, sorted by offset, disjoint), and g
// zeroed over them; norm_coef: grad_norm_clip's output, or nullptr for coef 1. lr and t are host
// values; or, with dyn (device memory, a graph's step), lr and t are not used and dyn holds
// adam_step_args(o, lr, t) at the time the kernel runs.
// p16 (n): when given, bf16(p) of every updated element (--precision bf16).
inline void adam_update(cudaStream_t st, float* p, float* g, float* m, float* v, size_t n,
                        const TensorSpan* spans, int nspans, const OptimConfig& o, float lr,
                        int64_t t, float grad_scale, const float* norm_coef,
                        __nv_bfloat16* p16 = nullptr, const AdamStepArgs* dyn = nullptr) {
  if (n == 0 || nspans <= 0) return;
  const AdamStepArgs d = dyn ? AdamStepArgs{0.0f, 1.0f, 1.0f} : adam_step_args(o, lr, t);
  AdamArgs a;
  a.beta1 = o.beta1;
  a.beta2 = o.beta2;
  a.eps = o.eps;
  a.step_size = d.step_size;
  a.bc2_sqrt = d.bc2_sqrt;
  a.l2 = o.kind == OptimConfig::AdamW ? 0.0f : o.weight_decay;
  a.decoupled = d.decoupled;
  a.grad_scale = grad_scale;
  const unsigned grid = elementwise_grid(n, 256);
  if (aligned16(p) && aligned16(g) && aligned16(m) && aligned16(v))
    LAUNCH(adam_update_kernel<true>, grid, 256, 0, st, p, g, m, v, n, spans, nspans, a, norm_coef,
           p16, dyn);
  else
    LAUNCH(adam_update_kernel<false>, grid, 256, 0, st, p, g, m, v, n, spans, nspans, a,
           norm_coef, p16, dyn);
}

}  // namespace vit
