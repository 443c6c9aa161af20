#include "common/image.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/error.h"
#include "cpu/input.h"  // vit::ref::resize_bilinear: the same resize as the training input path

// stb_image is compiled here and only here. PNG, JPEG and BMP only: less decoder code to trust
// with files from anywhere.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC  // private to this file: no clash with another copy in the program
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_FAILURE_USERMSG
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

namespace vit {

namespace {

// stb reports "can't fopen" for a missing file: say why in the system's words instead.
[[noreturn]] void fail(const std::string& path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot read image: " + strerror(errno));
  fclose(f);
  const char* why = stbi_failure_reason();
  throw Error(path + ": cannot read image: " + (why ? why : "unknown error") +
              " (PNG, JPEG and BMP are supported)");
}

}  // namespace

void check_image(const std::string& path) {
  int w, h, n;
  if (!stbi_info(path.c_str(), &w, &h, &n)) fail(path);
  if (w <= 0 || h <= 0) throw Error(path + ": cannot read image: empty image");
}

Image load_image(const std::string& path) {
  int w, h, n;
  unsigned char* px = stbi_load(path.c_str(), &w, &h, &n, 3);  // 3: convert to RGB
  if (!px) fail(path);
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.assign(px, px + (size_t)w * h * 3);
  stbi_image_free(px);
  return img;
}

void image_to_input(const Image& img, const Config& c, float* out) {
  const int S = c.image_size, W = img.width, H = img.height;
  std::vector<float> plane((size_t)W * H);
  for (int ch = 0; ch < 3; ++ch) {
    for (size_t i = 0; i < plane.size(); ++i) plane[i] = img.rgb[3 * i + ch] / 255.0f;
    float* o = out + (size_t)ch * S * S;
    ref::resize_bilinear(plane.data(), H, W, o, S, S);
    for (size_t i = 0; i < (size_t)S * S; ++i) o[i] = (o[i] - c.mean[ch]) / c.std[ch];
  }
}

}  // namespace vit
