// fuzz/fuzz_weights.cpp — the weight-file loader (common/weights.cpp): detection of the three
// layouts (vit.cu checkpoints, tintn, torchvision; both torchvision MLP namings), the sizes
// inferred from the tensor shapes, __metadata__ overriding the constants, position-embedding
// resampling and --new-head. An input is a whole safetensors file; the first byte of the file
// is also read as a selector of the options, so the resampling and new-head paths are reached
// from the same corpus without changing what the file means.
#include <cstdint>

#include "common/config.h"
#include "common/error.h"
#include "common/weights.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static vit_fuzz::MemFile file("fuzz_weights");
  const std::string& path = file.set(data, size);
  const uint8_t sel = size ? data[0] : 0;  // the low byte of the header length
  vit::LoadOptions opt;
  opt.base = vit::preset("tiny");
  if (sel & 1) {  // --image-size given: resample the position embeddings (16 or 48 px)
    opt.base.image_size = (sel & 2) ? 48 : 16;
    opt.given["image_size"] = std::to_string(opt.base.image_size);
  }
  if (sel & 4) {  // --new-head --classes 7
    opt.new_head = true;
    opt.base.classes = 7;
    opt.given["classes"] = "7";
  }
  try {
    vit::LoadedWeights w = vit::load_weights(path, opt);
    (void)w.summary();
  } catch (const vit::Error&) {
  }
  return 0;
}
