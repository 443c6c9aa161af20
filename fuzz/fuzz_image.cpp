// fuzz/fuzz_image.cpp — the image loader (common/image.cpp: stb_image's PNG, JPEG and BMP
// decoders behind our wrapper): check_image (header only), load_image and image_to_input.
// An input is a whole image file. Contract: vit::Error or an image whose size check_image
// agreed with, never a crash or a decode larger than the pixel limit.
#include <cstdint>

#include "common/config.h"
#include "common/error.h"
#include "common/image.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static vit_fuzz::MemFile file("fuzz_image");
  const std::string& path = file.set(data, size);
  bool header_ok = true;
  try {
    vit::check_image(path);
  } catch (const vit::Error&) {
    header_ok = false;
  }
  try {
    vit::Image img = vit::load_image(path);
    if (!header_ok) abort();  // a file check_image rejects must not decode
    if (img.width <= 0 || img.height <= 0 ||
        img.rgb.size() != (size_t)img.width * img.height * 3)
      abort();
    vit::Config c = vit::preset("tiny");
    std::vector<float> in((size_t)3 * c.image_size * c.image_size);
    vit::image_to_input(img, c, in.data());
  } catch (const vit::Error&) {
  }
  return 0;
}
