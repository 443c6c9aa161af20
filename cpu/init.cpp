// cpu/init.cpp — weight initialisation (declared in common/model.h), shared by both models: the
// CUDA model initialises on the host with this function and uploads, so the two start from the
// same bits.
//   weight matrices and patch_embed.weight  N(0, init_std)
//   biases                                  0
//   LayerNorm weight / bias                 1 / 0
//   cls_token, pos_embed                    N(0, init_std) truncated to +-2 init_std (resampled)
// Tensor number k (its index in ParamLayout::tensors) is the Philox step, so adding a tensor
// does not shift the draws of the ones before it. Normal number i of a tensor is Box-Muller on
// u1 = philox_uniform(seed, SITE_INIT, k, 2i), u2 = ...(2i + 1):
//   z = sqrt(-2 ln(1 - u1)) cos(2 pi u2)     (1 - u1 is in (0, 1], so the log is finite)
// Truncated normals redraw element i with index i + j*numel, j = 1, 2, ... until |z| <= 2.
#include <cmath>
#include <cstring>

#include "common/model.h"
#include "common/philox.h"
#include "cpu/scratch.h"

namespace vit {

static double init_normal(uint64_t seed, uint64_t tensor, uint64_t i) {
  const double u1 = philox_uniform(seed, SITE_INIT, tensor, 2 * i);
  const double u2 = philox_uniform(seed, SITE_INIT, tensor, 2 * i + 1);
  return std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(2.0 * M_PI * u2);
}

void init_params(const Config& c, const ParamLayout& l, uint64_t seed, float* out) {
  std::memset(out, 0, l.total * sizeof(float));  // biases and alignment padding
  const double sd = c.init_std;
  for (size_t k = 0; k < l.tensors.size(); ++k) {
    const ParamTensor& t = l.tensors[k];
    float* p = out + t.offset;
    const std::string& n = t.name;
    const bool is_ln = n.find("ln1.") != std::string::npos || n.find("ln2.") != std::string::npos ||
                       n.rfind("final_ln.", 0) == 0;
    const bool is_weight = n.size() >= 7 && n.compare(n.size() - 7, 7, ".weight") == 0;
    if (is_ln) {
      if (is_weight)
        for (size_t i = 0; i < t.numel; ++i) p[i] = 1.0f;
    } else if (t.offset == l.cls || t.offset == l.pos) {
#pragma omp parallel for schedule(static) if (t.numel >= ref::kParallelMin)
      for (size_t i = 0; i < t.numel; ++i) {
        double z = init_normal(seed, k, i);
        for (uint64_t j = 1; std::fabs(z) > 2.0; ++j) z = init_normal(seed, k, i + j * t.numel);
        p[i] = (float)(sd * z);
      }
    } else if (is_weight) {
#pragma omp parallel for schedule(static) if (t.numel >= ref::kParallelMin)
      for (size_t i = 0; i < t.numel; ++i) p[i] = (float)(sd * init_normal(seed, k, i));
    }
    // else: a bias, already 0
  }
}

}  // namespace vit
