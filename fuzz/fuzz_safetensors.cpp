// fuzz/fuzz_safetensors.cpp — the safetensors reader (common/safetensors.cpp): the 8-byte header
// length, the header JSON (dtypes, shapes, data_offsets, __metadata__) and the tiling checks.
// An input is a whole file. Every tensor the reader accepts is read back, so the offsets it
// validated are also the ones it seeks to. Contract: vit::Error or success, nothing else (no
// crash, no other exception, no allocation the file size does not justify).
#include <cstdint>

#include "common/error.h"
#include "common/safetensors.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static vit_fuzz::MemFile file("fuzz_safetensors");
  const std::string& path = file.set(data, size);
  try {
    vit::SafeTensorsFile f(path);
    size_t total = 0;
    for (const vit::StTensorInfo& t : f.tensors()) {
      std::vector<float> v = f.read(t.name);
      // Accepted tensors tile the data section, so their floats are bounded by the file.
      if (v.size() * vit::st_dtype_size(t.dtype) > size) abort();
      total += v.size() * vit::st_dtype_size(t.dtype);
      if (f.find(t.name) != &t) abort();
    }
    if (total > size) abort();
  } catch (const vit::Error&) {
  }
  return 0;
}
