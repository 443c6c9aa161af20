#include "cpu/input.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>

#include "common/philox.h"
#include "cpu/scratch.h"

namespace vit::ref {

template <class T>
void resize_bilinear(const T* src, int sh, int sw, T* dst, int dh, int dw) {
  if (sh == dh && sw == dw) {
    std::copy(src, src + (size_t)sh * sw, dst);
    return;
  }
  // Scales as PyTorch computes them (in float: area_pixel_compute_scale), then the source
  // coordinate in T.
  const T scale_y = (T)((float)sh / (float)dh), scale_x = (T)((float)sw / (float)dw);
  for (int y = 0; y < dh; ++y) {
    T sy = std::max((T)((y + T(0.5)) * scale_y - T(0.5)), T(0));
    int y0 = std::min((int)sy, sh - 1);
    const int y1 = std::min(y0 + 1, sh - 1);
    const T ly = sy - (T)y0, hy = T(1) - ly;
    for (int x = 0; x < dw; ++x) {
      T sx = std::max((T)((x + T(0.5)) * scale_x - T(0.5)), T(0));
      int x0 = std::min((int)sx, sw - 1);
      const int x1 = std::min(x0 + 1, sw - 1);
      const T lx = sx - (T)x0, hx = T(1) - lx;
      dst[(size_t)y * dw + x] =
          hy * (hx * src[(size_t)y0 * sw + x0] + lx * src[(size_t)y0 * sw + x1]) +
          ly * (hx * src[(size_t)y1 * sw + x0] + lx * src[(size_t)y1 * sw + x1]);
    }
  }
}

float round_to_half(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = u & 0x80000000u;
  uint32_t a = u ^ sign;                    // |f|
  if (a >= 0x7f800000u) return f;           // inf, NaN
  float af;
  std::memcpy(&af, &a, 4);
  float r;
  if (af >= 65520.0f) {
    r = INFINITY;  // 65520 is halfway between the largest half (65504) and 2^16: even is 2^16
  } else if (af < 6.103515625e-05f) {
    // Below the smallest normal half (2^-14) halves are multiples of 2^-24: scale (exact, a
    // power of two), round to an integer to nearest-even (the default rounding mode), unscale.
    r = std::nearbyint(af * 16777216.0f) / 16777216.0f;
  } else {
    // Normal: keep 10 of float's 23 mantissa bits, round-to-nearest-even on the 13 dropped
    // (a carry into the exponent is the correct rounding up to the next binade).
    a += 0xfffu + ((a >> 13) & 1u);
    a &= ~0x1fffu;
    std::memcpy(&r, &a, 4);
  }
  return sign ? -r : r;
}

void round_to_half(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = round_to_half(x[i]);
}

AugmentBox augment_box(const InputSpec& in, bool train, uint64_t seed, uint64_t step, int b) {
  const int S = in.src_size;
  AugmentBox box = {0, 0, S, S, false};
  if (!train || in.augment == Augment::None) return box;
  auto u = [&](int k) { return philox_uniform(seed, SITE_AUGMENT, step, (uint64_t)b * 8 + k); };
  box.flip = u(0) < 0.5f;
  if (in.augment == Augment::CropFlip) {
    const int pad = in.crop_pad, n = 2 * pad + 1;
    box.x0 = std::min((int)std::floor(u(1) * n), n - 1) - pad;
    box.y0 = std::min((int)std::floor(u(2) * n), n - 1) - pad;
  } else if (in.augment == Augment::RrcFlip) {
    const double a = 0.08 + 0.92 * (double)u(3);
    const double r = std::exp(std::log(3.0 / 4.0) + (double)u(4) * std::log(16.0 / 9.0));
    box.w = std::clamp((int)std::lround(S * std::sqrt(a * r)), 1, S);
    box.h = std::clamp((int)std::lround(S * std::sqrt(a / r)), 1, S);
    box.x0 = std::min((int)std::floor(u(5) * (S - box.w + 1)), S - box.w);
    box.y0 = std::min((int)std::floor(u(6) * (S - box.h + 1)), S - box.h);
  }
  return box;
}

template <class T>
void preprocess(const uint8_t* img, int B, const InputSpec& in, const Config& c, bool train,
                uint64_t seed, uint64_t step, T* out) {
  const int S = in.src_size, O = c.image_size, Ch = c.channels;
#pragma omp parallel for schedule(static) if ((size_t)B * Ch * O * O >= kParallelMin)
  for (int b = 0; b < B; ++b) {
    const AugmentBox box = augment_box(in, train, seed, step, b);
    T* plane = scratch<T>((size_t)box.w * box.h);  // one channel of the box, normalised
    for (int ch = 0; ch < Ch; ++ch) {
      const uint8_t* src = img + ((size_t)b * Ch + ch) * S * S;
      const T mean = (T)c.mean[ch], sd = (T)c.std[ch];
      for (int y = 0; y < box.h; ++y)
        for (int x = 0; x < box.w; ++x) {
          const int xs = box.x0 + (box.flip ? box.w - 1 - x : x), ys = box.y0 + y;
          const uint8_t v = (xs >= 0 && xs < S && ys >= 0 && ys < S) ? src[(size_t)ys * S + xs] : 0;
          plane[(size_t)y * box.w + x] = ((T)v / T(255) - mean) / sd;
        }
      resize_bilinear(plane, box.h, box.w, out + ((size_t)b * Ch + ch) * O * O, O, O);
    }
  }
}

template void resize_bilinear<float>(const float*, int, int, float*, int, int);
template void resize_bilinear<double>(const double*, int, int, double*, int, int);
template void preprocess<float>(const uint8_t*, int, const InputSpec&, const Config&, bool, uint64_t, uint64_t, float*);
template void preprocess<double>(const uint8_t*, int, const InputSpec&, const Config&, bool, uint64_t, uint64_t, double*);

}  // namespace vit::ref
