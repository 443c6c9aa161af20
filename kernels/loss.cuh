// kernels/loss.cuh — softmax cross-entropy with label smoothing, fused with its gradient and the
// running metrics, one launch per batch.
//
//   logits (B, K), labels (B) in [0, K). target t = (1 - eps) * onehot(label) + eps / K (PyTorch
//   CrossEntropyLoss(label_smoothing=eps)).
//   losses (B)      = -sum_k t_k log softmax(z)_k                      (=, may be nullptr)
//   dlogits (B, K)  = (softmax(z) - t) * grad_scale                    (=, when not nullptr;
//                     grad_scale = 1/B for the mean loss)
//   metrics (2)     += [sum over the batch of losses, number of rows with argmax(z) == label]
//                     (may be nullptr). argmax takes the first index of the maximum. Double:
//                     the batch sums are floats, and a double sum of floats whose exponents
//                     span fewer than 29 bits is exact, so the running totals do not depend on
//                     when the host reads them (the trainer reads them only at log lines).
// A label outside [0, K) gives a NaN loss and NaN gradient row: training stops on it loudly.
//
// Design: ONE block (16 warps), a warp per row, rows w, w+16, ... for warp w. The head has
// K = 10 (or 1000) classes and B <= a few hundred rows, so this is microseconds whatever the
// shape; in exchange the batch sums for the metrics are formed in a fixed order (each warp its
// rows in order, then the warps in order) inside the same launch — deterministic with no float
// atomics and no second kernel. log softmax is computed as (z - max) - log(sum exp(z - max)),
// so a confident row's tiny loss does not drown in the cancellation of two large numbers.
#pragma once

#include <cmath>

#include "common/error.h"
#include "kernels/common.cuh"
#include "kernels/reduce.cuh"

namespace vit {

constexpr int XENT_WARPS = 16;

// The first step with a NaN/Inf loss since the last reset (below: track_nonfinite; the
// cross-entropy kernel keeps the same record when given one).
struct NonFiniteRecord {
  long long step;  // -1: every loss finite since the last reset
  float loss;
};

static __global__ void __launch_bounds__(XENT_WARPS * 32) xent_forward_backward_kernel(const floatX* __restrict__ logits,
                                                    const int32_t* __restrict__ labels,
                                                    float* __restrict__ losses,
                                                    floatX* __restrict__ dlogits,
                                                    double* __restrict__ metrics, int B, int K,
                                                    float smoothing, float grad_scale,
                                                    NonFiniteRecord* __restrict__ rec,
                                                    DevStep step) {
  __shared__ float s_loss[XENT_WARPS], s_correct[XENT_WARPS];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float loss_sum = 0.0f, correct_sum = 0.0f;  // this warp's rows, in row order

  for (int row = warp; row < B; row += XENT_WARPS) {
    const floatX* z = logits + (size_t)row * K;
    const int y = labels[row];
    const bool valid = y >= 0 && y < K;

    // Max and its first index: per lane over its strided columns, then across the warp,
    // preferring the smaller index on ties (the same answer in every lane).
    float mx = -INFINITY;
    int am = K;
    for (int k = lane; k < K; k += 32) {
      const float v = (float)z[k];
      if (v > mx) { mx = v; am = k; }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float omx = __shfl_xor_sync(0xffffffffu, mx, o);
      const int oam = __shfl_xor_sync(0xffffffffu, am, o);
      if (omx > mx || (omx == mx && oam < am)) { mx = omx; am = oam; }
    }

    float se = 0.0f, sz = 0.0f;  // sum exp(z - max), sum (z - max)
    for (int k = lane; k < K; k += 32) {
      const float d = (float)z[k] - mx;
      se += expf(d);
      sz += d;
    }
    se = warp_sum(se);
    sz = warp_sum(sz);
    const float log_se = logf(se);
    const float zy = valid ? (float)z[y] - mx : NAN;
    // -sum_k t_k log p_k with log p_k = (z_k - max) - log_se and sum_k t_k = 1.
    const float loss = (1.0f - smoothing) * (log_se - zy) + smoothing * log_se -
                       (smoothing / (float)K) * sz;

    if (dlogits) {
      floatX* dz = dlogits + (size_t)row * K;
      const float off = smoothing / (float)K;
      for (int k = lane; k < K; k += 32) {
        const float p = expf((float)z[k] - mx) / se;
        const float t = (k == y ? 1.0f - smoothing : 0.0f) + off;
        dz[k] = valid ? (p - t) * grad_scale : NAN;
      }
    }
    if (losses && lane == 0) losses[row] = loss;
    loss_sum += loss;
    correct_sum += (am == y) ? 1.0f : 0.0f;
  }

  // uniform across the block: no barrier is skipped by some
  if (metrics == nullptr && rec == nullptr) return;
  if (lane == 0) {
    s_loss[warp] = loss_sum;
    s_correct[warp] = correct_sum;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float l = 0.0f, c = 0.0f;
    for (int w = 0; w < XENT_WARPS; ++w) {
      l += s_loss[w];
      c += s_correct[w];
    }
    if (metrics) {
      metrics[0] += (double)l;
      metrics[1] += (double)c;
    }
    // The batch's loss sum is not finite when any image's loss is NaN/Inf: record the first
    // such step (track_nonfinite's rule, without its launch).
    if (rec && !isfinite(l) && rec->step < 0) {
      rec->step = (long long)(uint64_t)step;
      rec->loss = l;
    }
  }
}

// losses (B) =, dlogits (B, K) = (when not nullptr), metrics (2) += (when not nullptr), rec as
// track_nonfinite(losses, B, step, rec) would leave it (when not nullptr).
inline void xent_forward_backward(cudaStream_t st, const float* logits, const int32_t* labels,
                                  float* losses, float* dlogits, double* metrics, int B, int K,
                                  float smoothing, float grad_scale,
                                  NonFiniteRecord* rec = nullptr, DevStep step = DevStep()) {
  if (B <= 0) return;
  if (K <= 0) throw Error("xent_forward_backward: number of classes must be positive");
  LAUNCH(xent_forward_backward_kernel, 1, XENT_WARPS * 32, 0, st, logits, labels, losses, dlogits,
         metrics, B, K, smoothing, grad_scale, rec, step);
}

// ---- non-finite loss tracking ----------------------------------------------------------------
// The trainer must stop on the first NaN/Inf loss and name its step, without reading the loss
// back every step. After each forward, one warp sums the batch's losses (NaN or Inf in any
// image makes the sum non-finite) and, if the sum is not finite and nothing was recorded yet,
// records the step and the sum. Reset by setting step to -1 (memset 0xFF).

static __global__ void __launch_bounds__(32) track_nonfinite_kernel(const float* __restrict__ losses, int B, DevStep step,
                                       NonFiniteRecord* rec) {
  float s = 0.0f;
  for (int i = threadIdx.x; i < B; i += 32) s += losses[i];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (threadIdx.x == 0 && !isfinite(s) && rec->step < 0) {
    rec->step = (long long)(uint64_t)step;
    rec->loss = s;
  }
}

// rec (device, 1) updated as described above; losses (B) as written by xent_forward_backward.
inline void track_nonfinite(cudaStream_t st, const float* losses, int B, DevStep step,
                            NonFiniteRecord* rec) {
  if (B <= 0) return;
  LAUNCH(track_nonfinite_kernel, 1, 32, 0, st, losses, B, step, rec);
}

}  // namespace vit
