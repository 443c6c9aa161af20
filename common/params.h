// common/params.h — where every parameter lives in the one flat buffer.
//
// Both models (CPU reference and CUDA) keep all parameters in one contiguous float array, and
// gradients and Adam moments in arrays of the same layout, so the optimizer is a single pass
// (one launch on the GPU) and a checkpoint is the same list of tensors on either device.
// Matrices are stored as PyTorch's nn.Linear does: weight (out, in), row-major, y = x W^T + b.
//
// Tensor names are vit.cu's own checkpoint layout (the PyTorch layouts map onto these, see
// host/weights): in order
//   patch_embed.weight (C, channels*p*p)  patch_embed.bias (C)  cls_token (C)  pos_embed (T, C)
//   blocks.{i}.ln1.weight/.bias (C)  blocks.{i}.attn.qkv.weight (3C, C)  .qkv.bias (3C)
//   blocks.{i}.attn.proj.weight (C, C)  .proj.bias (C)  blocks.{i}.ln2.weight/.bias (C)
//   blocks.{i}.mlp.fc1.weight (M, C)  .fc1.bias (M)  blocks.{i}.mlp.fc2.weight (C, M)  .fc2.bias (C)
//   final_ln.weight/.bias (C)  [only when config.final_ln]
//   head.weight (K, C)  head.bias (K)
// qkv.bias is absent when config.qkv_bias is false (its offset is then NONE).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "common/config.h"

namespace vit {

struct ParamTensor {
  std::string name;
  std::vector<int> shape;
  size_t offset;  // in floats, from the start of the flat buffer; a multiple of 4 (16 bytes)
  size_t numel;
  bool decay;     // weight decay applies (weight matrices) or not (biases, LN, cls, pos)
};

struct ParamLayout {
  static constexpr size_t NONE = (size_t)-1;
  struct Block {
    size_t ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
  };

  std::vector<ParamTensor> tensors;
  size_t total = 0;  // floats in the flat buffer, including alignment padding
  size_t patch_w, patch_b, cls, pos;
  std::vector<Block> blocks;
  size_t lnf_w = NONE, lnf_b = NONE;
  size_t head_w, head_b;

  explicit ParamLayout(const Config& c);
  size_t count() const;  // number of parameters, padding excluded
  const ParamTensor* find(const std::string& name) const;  // nullptr when absent
};

}  // namespace vit
