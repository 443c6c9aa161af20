#include "common/params.h"

namespace vit {

ParamLayout::ParamLayout(const Config& c) {
  const int C = c.hidden, M = c.mlp, K = c.classes, T = c.tokens();
  auto add = [&](const std::string& name, std::vector<int> shape, bool decay) {
    size_t n = 1;
    for (int d : shape) n *= (size_t)d;
    size_t off = (total + 3) & ~(size_t)3;
    tensors.push_back({name, shape, off, n, decay});
    total = off + n;
    return off;
  };
  patch_w = add("patch_embed.weight", {C, c.patch_dim()}, true);
  patch_b = add("patch_embed.bias", {C}, false);
  cls = add("cls_token", {C}, false);
  pos = add("pos_embed", {T, C}, false);
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    Block b;
    b.ln1_w = add(p + "ln1.weight", {C}, false);
    b.ln1_b = add(p + "ln1.bias", {C}, false);
    b.qkv_w = add(p + "attn.qkv.weight", {3 * C, C}, true);
    b.qkv_b = c.qkv_bias ? add(p + "attn.qkv.bias", {3 * C}, false) : NONE;
    b.proj_w = add(p + "attn.proj.weight", {C, C}, true);
    b.proj_b = add(p + "attn.proj.bias", {C}, false);
    b.ln2_w = add(p + "ln2.weight", {C}, false);
    b.ln2_b = add(p + "ln2.bias", {C}, false);
    b.fc1_w = add(p + "mlp.fc1.weight", {M, C}, true);
    b.fc1_b = add(p + "mlp.fc1.bias", {M}, false);
    b.fc2_w = add(p + "mlp.fc2.weight", {C, M}, true);
    b.fc2_b = add(p + "mlp.fc2.bias", {C}, false);
    blocks.push_back(b);
  }
  if (c.final_ln) {
    lnf_w = add("final_ln.weight", {C}, false);
    lnf_b = add("final_ln.bias", {C}, false);
  }
  head_w = add("head.weight", {K, C}, true);
  head_b = add("head.bias", {K}, false);
  total = (total + 3) & ~(size_t)3;
}

size_t ParamLayout::count() const {
  size_t n = 0;
  for (const auto& t : tensors) n += t.numel;
  return n;
}

const ParamTensor* ParamLayout::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace vit
