// kernels/input.cuh — the input pipeline on the GPU: uint8 images -> normalised float model input,
// augmentation included, one launch per batch.
//
//   img (B, Ch, S, S) uint8 planar (CIFAR-10 records without the label byte), S = in.src_size
//   out (B, Ch, R, R) float or __half (=), R = c.image_size
// Per image b (common/model.h has the exact text; vit::ref::preprocess / augment_box are the
// reference): a box in source coordinates — the whole image (eval, None, Flip), an S x S window
// shifted into the zero padding (CropFlip), or a random-resized-crop w x h box (RrcFlip) — read
// mirrored when flipped, scaled /255 and normalised per channel, then resampled bilinearly (half-
// pixel centres, PyTorch align_corners=False) to R x R when the box is not already R x R.
// The draws u_k = philox_uniform(seed, SITE_AUGMENT, step, b*8 + k) are the reference's.
// resize_bilinear: the same interpolation on float planes (planes, sh, sw) -> (planes, dh, dw).
// FP16 output (the vit-b16 path: 32 -> 224 makes the model input 49x the uint8 batch): every
// value is computed in float exactly as for float output, then rounded once to the nearest half
// (__float2half_rn) on the store. So the FP16 output is the float output rounded — the CPU
// reference rounds its float output the same way (vit::ref::round_to_half).
//
// Design: grid (pixel tiles, channel, image): every block works on one image, so thread 0
// derives that image's box once (Philox draws, and for RrcFlip exp/log/sqrt in double, as the
// reference, so the integer box is the same) and shares it through shared memory; then a thread
// per output pixel gathers its 1 or 4 source pixels and normalises them on the fly — the padded
// or cropped intermediate image never exists in memory. Source coordinates are computed with
// __fmul_rn/__fadd_rn so nvcc cannot contract them into an FMA: the interpolation taps are
// chosen exactly as the reference's float arithmetic chooses them.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>

#include "common/config.h"
#include "common/error.h"
#include "common/model.h"
#include "common/philox.h"
#include "kernels/common.cuh"

namespace vit {

constexpr int INPUT_THREADS = 256;  // output pixels per block

struct InputKernelArgs {
  int B, Ch, S, R;
  int augment;  // Augment as int (None, Flip, CropFlip, RrcFlip); ignored when !train
  int crop_pad;
  bool train;
  uint64_t seed;
  DevStep step;  // a value, or in a graph the device counter (kernels/common.cuh)
  float mean[3], sd[3];
};

struct InputBox {
  int x0, y0, w, h;  // window in source coordinates (may reach into the zero padding)
  int flip;
};

// = vit::ref::augment_box (cpu/input.cpp), expression for expression.
static __device__ __forceinline__ InputBox input_box(const InputKernelArgs& a, int b) {
  const int S = a.S;
  InputBox box = {0, 0, S, S, 0};
  if (!a.train || a.augment == (int)Augment::None) return box;
  float u[8];
  for (int k = 0; k < 8; ++k) u[k] = philox_uniform(a.seed, SITE_AUGMENT, a.step, (uint64_t)b * 8 + k);
  box.flip = u[0] < 0.5f;
  if (a.augment == (int)Augment::CropFlip) {
    const int pad = a.crop_pad, n = 2 * pad + 1;
    box.x0 = min((int)floorf(__fmul_rn(u[1], (float)n)), n - 1) - pad;
    box.y0 = min((int)floorf(__fmul_rn(u[2], (float)n)), n - 1) - pad;
  } else if (a.augment == (int)Augment::RrcFlip) {
    const double area = 0.08 + 0.92 * (double)u[3];
    const double r = exp(log(3.0 / 4.0) + (double)u[4] * log(16.0 / 9.0));
    box.w = min(max((int)llround(S * sqrt(area * r)), 1), S);
    box.h = min(max((int)llround(S * sqrt(area / r)), 1), S);
    box.x0 = min((int)floorf(__fmul_rn(u[5], (float)(S - box.w + 1))), S - box.w);
    box.y0 = min((int)floorf(__fmul_rn(u[6], (float)(S - box.h + 1))), S - box.h);
  }
  return box;
}

// Pixel (y, x) of the box, flipped if so, /255 and normalised; 0 (black) outside the source.
static __device__ __forceinline__ float input_box_pixel(const uint8_t* __restrict__ plane,
                                                        const InputBox& box, int S, int y, int x,
                                                        float mean, float sd) {
  const int xs = box.x0 + (box.flip ? box.w - 1 - x : x), ys = box.y0 + y;
  const uint8_t v = (xs >= 0 && xs < S && ys >= 0 && ys < S) ? plane[(size_t)ys * S + xs] : 0;
  return ((float)v / 255.0f - mean) / sd;
}

// The two source taps and the weight of the second for output coordinate `o` of a bilinear
// resize in -> out (vit::ref::resize_bilinear = PyTorch align_corners=False): scale in/out in
// float, s = max((o + 0.5) * scale - 0.5, 0), i0 = floor(s), i1 = min(i0 + 1, in - 1).
struct BilinearTap {
  int i0, i1;
  float l;  // weight of i1; i0 gets 1 - l
};
static __device__ __forceinline__ BilinearTap bilinear_tap(int o, int in, int out) {
  const float scale = (float)in / (float)out;
  const float s = fmaxf(__fadd_rn(__fmul_rn((float)o + 0.5f, scale), -0.5f), 0.0f);
  BilinearTap t;
  t.i0 = min((int)s, in - 1);
  t.i1 = min(t.i0 + 1, in - 1);
  t.l = s - (float)t.i0;
  return t;
}

// hy (hx v00 + lx v01) + ly (hx v10 + lx v11), the reference's order.
template <class Fetch>
static __device__ __forceinline__ float bilinear_sample(const Fetch& at, int y, int x, int ih,
                                                        int iw, int oh, int ow) {
  const BilinearTap ty = bilinear_tap(y, ih, oh), tx = bilinear_tap(x, iw, ow);
  const float hy = 1.0f - ty.l, hx = 1.0f - tx.l;
  return hy * (hx * at(ty.i0, tx.i0) + tx.l * at(ty.i0, tx.i1)) +
         ty.l * (hx * at(ty.i1, tx.i0) + tx.l * at(ty.i1, tx.i1));
}

// The one store of a float result into the output type: exact for float, round-to-nearest-even
// for __half.
static __device__ __forceinline__ void input_store(float* p, float v) { *p = v; }
static __device__ __forceinline__ void input_store(__half* p, float v) { *p = __float2half_rn(v); }

template <class OutT>
static __global__ void __launch_bounds__(INPUT_THREADS) input_forward_kernel(const uint8_t* __restrict__ img,
                                            OutT* __restrict__ out, InputKernelArgs a) {
  __shared__ InputBox s_box;
  const int b = blockIdx.z, ch = blockIdx.y;
  if (threadIdx.x == 0) s_box = input_box(a, b);
  __syncthreads();
  const InputBox box = s_box;
  const int S = a.S, R = a.R;
  const int pix = blockIdx.x * blockDim.x + threadIdx.x;
  if (pix >= R * R) return;
  const int y = pix / R, x = pix % R;
  const uint8_t* plane = img + ((size_t)b * a.Ch + ch) * S * S;
  // Selected, not indexed: a runtime index into the parameter struct would copy it to local
  // memory (a 72-byte stack frame per thread, per ptxas). Ch <= 3 is checked by the launcher.
  const float mean = ch == 0 ? a.mean[0] : ch == 1 ? a.mean[1] : a.mean[2];
  const float sd = ch == 0 ? a.sd[0] : ch == 1 ? a.sd[1] : a.sd[2];
  float v;
  if (box.w == R && box.h == R) {
    v = input_box_pixel(plane, box, S, y, x, mean, sd);
  } else {
    auto at = [&](int yy, int xx) { return input_box_pixel(plane, box, S, yy, xx, mean, sd); };
    v = bilinear_sample(at, y, x, box.h, box.w, R, R);
  }
  input_store(&out[(((size_t)b * a.Ch + ch) * R + y) * R + x], v);
}

// dst (planes, dh, dw) = bilinear resize of src (planes, sh, sw): a thread per output pixel.
template <class OutT>
static __global__ void __launch_bounds__(256) resize_bilinear_kernel(const float* __restrict__ src, int planes, int sh,
                                              int sw, OutT* __restrict__ dst, int dh, int dw) {
  const size_t total = (size_t)planes * dh * dw;
  for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
       idx += (size_t)gridDim.x * blockDim.x) {
    const int x = (int)(idx % dw), y = (int)((idx / dw) % dh);
    const float* plane = src + (idx / ((size_t)dh * dw)) * sh * sw;
    auto at = [&](int yy, int xx) { return plane[(size_t)yy * sw + xx]; };
    input_store(&dst[idx],
                (sh == dh && sw == dw) ? at(y, x) : bilinear_sample(at, y, x, sh, sw, dh, dw));
  }
}

// dst (planes, dh, dw) = vit::ref::resize_bilinear of each plane of src (planes, sh, sw) (=).
// The same interpolation as input_forward; for float images (vit_predict) and the PyTorch
// fixture test. OutT = float, or __half (each value rounded once from the float result).
template <class OutT>
inline void resize_bilinear_to(cudaStream_t st, const float* src, int planes, int sh, int sw,
                               OutT* dst, int dh, int dw) {
  if (planes <= 0) return;
  if (sh < 1 || sw < 1 || dh < 1 || dw < 1) throw Error("resize_bilinear: sizes must be positive");
  const size_t total = (size_t)planes * dh * dw;
  const unsigned grid = (unsigned)std::min<size_t>((total + 255) / 256, 65536);
  LAUNCH(resize_bilinear_kernel<OutT>, grid, 256, 0, st, src, planes, sh, sw, dst, dh, dw);
}
inline void resize_bilinear(cudaStream_t st, const float* src, int planes, int sh, int sw,
                            float* dst, int dh, int dw) {
  resize_bilinear_to(st, src, planes, sh, sw, dst, dh, dw);
}
inline void resize_bilinear(cudaStream_t st, const float* src, int planes, int sh, int sw,
                            __half* dst, int dh, int dw) {
  resize_bilinear_to(st, src, planes, sh, sw, dst, dh, dw);
}

// out (B, c.channels, R, R) = preprocess(img), R = c.image_size. img (B, c.channels, S, S) uint8,
// S = in.src_size, device memory. train=false: no augmentation (scale, normalise, resize only).
// OutT = float, or __half: the float result rounded once (= vit::ref::round_to_half of it).
template <class OutT>
inline void input_forward_to(cudaStream_t st, const uint8_t* img, int B, const InputSpec& in,
                             const Config& c, bool train, uint64_t seed, DevStep step, OutT* out) {
  if (B <= 0) return;
  if (c.channels < 1 || c.channels > 3)
    throw Error("input_forward: " + std::to_string(c.channels) + " channels: 1 to 3 supported");
  if (in.src_size < 1 || c.image_size < 1)
    throw Error("input_forward: image sizes must be positive");
  if (B > 65535) throw Error("input_forward: batch " + std::to_string(B) + " > 65535");
  if (train && in.augment == Augment::CropFlip && in.crop_pad < 0)
    throw Error("input_forward: negative crop padding");
  InputKernelArgs a;
  a.B = B;
  a.Ch = c.channels;
  a.S = in.src_size;
  a.R = c.image_size;
  a.augment = (int)in.augment;
  a.crop_pad = in.crop_pad;
  a.train = train;
  a.seed = seed;
  a.step = step;
  for (int k = 0; k < 3; ++k) {
    a.mean[k] = c.mean[k];
    a.sd[k] = c.std[k];
  }
  const int threads = INPUT_THREADS;
  const dim3 grid(ceil_div((size_t)a.R * a.R, threads), a.Ch, B);
  LAUNCH(input_forward_kernel<OutT>, grid, threads, 0, st, img, out, a);
}

inline void input_forward(cudaStream_t st, const uint8_t* img, int B, const InputSpec& in,
                          const Config& c, bool train, uint64_t seed, DevStep step, float* out) {
  input_forward_to(st, img, B, in, c, train, seed, step, out);
}
inline void input_forward(cudaStream_t st, const uint8_t* img, int B, const InputSpec& in,
                          const Config& c, bool train, uint64_t seed, DevStep step, __half* out) {
  input_forward_to(st, img, B, in, c, train, seed, step, out);
}

}  // namespace vit
