// common/image.h — image files for vit_predict: decoding with stb_image (libstb-dev) and the
// conversion to the model's normalised input.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"

namespace vit {

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // (height, width, 3) interleaved, as decoded
};

// The most pixels an image file may claim (8192 x 8192 = 2^26): decoding allocates the whole
// image (3 bytes a pixel, more inside the decoder) before it reads the pixels, so a header's
// claim is checked against this first; larger claims are one vit::Error, nothing allocated.
constexpr uint64_t kMaxImagePixels = (uint64_t)1 << 26;

// PNG, JPEG or BMP. Grey and grey+alpha are replicated to RGB; an alpha channel is dropped (the
// colour of transparent pixels is kept as stored). 16-bit PNGs are reduced to 8 bits.
// Throws vit::Error "FILE: cannot read image: <reason>".
Image load_image(const std::string& path);
// The same checks from the file header alone (no decoding; the pixel limit and the JPEG
// checks of common/jpeg_check.h included): for validating every argument before any work.
void check_image(const std::string& path);

// The model input of one image: out (3, S, S) planar, S = c.image_size:
//   pixels / 255, resized bilinearly to S x S (half-pixel centres, PyTorch
//   interpolate(align_corners=False) without antialiasing, the reference pipeline's resize;
//   the identity at equal size), then (x - mean[c]) / std[c].
void image_to_input(const Image& img, const Config& c, float* out);

}  // namespace vit
