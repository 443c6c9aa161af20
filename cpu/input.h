// cpu/input.h — reference input pipeline: uint8 images -> normalised float model input, exactly
// as specified in common/model.h (augment, /255, normalise, bilinear resize with half-pixel
// centres). The CUDA preprocessing kernel is compared against this.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/config.h"
#include "common/model.h"

namespace vit::ref {

// img (B, 3, S, S) uint8 planar, S = in.src_size -> out (B, 3, c.image_size, c.image_size) (=).
// train=true applies in.augment with the draws philox_uniform(seed, SITE_AUGMENT, step, b*8 + k).
template <class T>
void preprocess(const uint8_t* img, int B, const InputSpec& in, const Config& c, bool train,
                uint64_t seed, uint64_t step, T* out);

// One plane src (sh, sw) -> dst (dh, dw) (=), bilinear, PyTorch interpolate(align_corners=False,
// antialias=False) / OpenCV INTER_LINEAR: sx = max((x + 0.5) * sw/dw - 0.5, 0), x0 = floor(sx),
// x1 = min(x0 + 1, sw - 1), likewise in y. Identity when the sizes are equal.
template <class T>
void resize_bilinear(const T* src, int sh, int sw, T* dst, int dh, int dw);

// x rounded to the nearest IEEE binary16 value (round-to-nearest-even, as __float2half_rn;
// beyond the half range +-inf; NaN stays NaN), returned as float. The FP16 model input
// (ModelOptions::fp16_input) is the float preprocessing output rounded by this.
float round_to_half(float x);
void round_to_half(float* x, size_t n);  // in place

// The crop / flip decisions of one image, for tests and for the CUDA kernel's comparison.
struct AugmentBox {
  int x0, y0, w, h;  // window in source coordinates (may reach into the zero padding for CropFlip)
  bool flip;
};
AugmentBox augment_box(const InputSpec& in, bool train, uint64_t seed, uint64_t step, int b);

}  // namespace vit::ref
