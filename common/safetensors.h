// common/safetensors.h — read and write the safetensors format (huggingface/safetensors):
//
//   8 bytes     N, little-endian uint64: length of the JSON header
//   N bytes     {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//                "__metadata__": {"key": "value", ...}}   (may be padded with spaces)
//   the rest    the data section: each tensor's raw little-endian row-major bytes at
//               [begin, end) relative to the start of the data section
//
// Reading accepts F32, F16 and BF16 and hands out float; writing writes F32. A file is
// validated completely when it is opened (before any tensor is read), so a truncated or
// inconsistent file is one vit::Error naming the file and the tensor, never a crash or
// garbage parameters: tensors must tile the data section exactly (no overlap, no hole, no
// trailing bytes) and each tensor's byte size must be its shape's element count times the
// dtype size.
//
// Tensor data is read on demand (seek + read), so opening a 350 MB ViT-B/16 file costs one
// header parse and each tensor is converted straight into the caller's buffer.
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace vit {

enum class StDtype { F32, F16, BF16 };
const char* st_dtype_name(StDtype d);  // "F32" | "F16" | "BF16"
size_t st_dtype_size(StDtype d);       // bytes per element

struct StTensorInfo {
  std::string name;
  StDtype dtype;
  std::vector<int64_t> shape;  // empty = scalar (1 element)
  uint64_t begin, end;         // byte range in the data section
  size_t numel() const;
};

// "[3, 32, 32]"
std::string shape_str(const std::vector<int64_t>& shape);

class SafeTensorsFile {
 public:
  // Opens and validates `path`; throws vit::Error ("FILE: ..." one line) on any problem.
  explicit SafeTensorsFile(const std::string& path);
  SafeTensorsFile(SafeTensorsFile&&) = default;
  SafeTensorsFile& operator=(SafeTensorsFile&&) = default;

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Every tensor, in data-section order.
  const std::vector<StTensorInfo>& tensors() const { return tensors_; }
  const StTensorInfo* find(const std::string& name) const;  // nullptr when absent
  const StTensorInfo& at(const std::string& name) const;    // throws naming file and tensor

  // The tensor converted to float.
  std::vector<float> read(const std::string& name) const;
  // Same into out[0..n): n must equal the tensor's element count (else vit::Error).
  void read_into(const std::string& name, float* out, size_t n) const;

 private:
  struct Closer { void operator()(FILE* f) const { if (f) fclose(f); } };
  std::string path_;
  std::unique_ptr<FILE, Closer> file_;
  uint64_t data_start_ = 0;  // 8 + N
  std::map<std::string, std::string> metadata_;
  std::vector<StTensorInfo> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
};

// One tensor to write: `data` holds product(shape) floats (not copied; must outlive the call).
struct StTensorOut {
  std::string name;
  std::vector<int64_t> shape;
  const float* data;
};

// Writes an F32 safetensors file atomically: the bytes go to `path.tmp.<pid>`, which is
// fsync'ed and then renamed over `path`, so a crash or a failed write (disk full, ...) leaves
// any previous file at `path` intact; on failure the temporary file is removed and a
// vit::Error naming the file is thrown. Tensors are stored in the given order; the header is
// padded with spaces so the data section starts 8-byte aligned. Names must be unique and not
// "__metadata__".
void write_safetensors(const std::string& path, const std::vector<StTensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// IEEE half / bfloat16 bits -> float (exact; subnormals, inf and NaN included).
float f16_to_float(uint16_t h);
float bf16_to_float(uint16_t b);

}  // namespace vit
