// common/philox.h — the counter-based generator behind every random draw in vit.cu.
//
// Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the
// generator of cuRAND and PyTorch's CUDA backend. A draw is a pure function of
// (seed, site, step, index): the CPU reference, simt and the GPU produce identical dropout
// masks and augmentations, any thread can draw its own element without shared state, and a
// resumed run draws exactly what the uninterrupted run would have.
//
//   key     = (seed lo, seed hi)
//   counter = (index / 4, site, step lo, step hi)   -> 4 words; element `index` takes word index % 4
//
// `site` names the place in the model that draws (see the Site enum) so two dropouts in the same
// step never share a mask.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define VIT_HD __host__ __device__ __forceinline__
#else
#define VIT_HD inline
#endif

namespace vit {

struct Philox4 {
  uint32_t v[4];
};

VIT_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                             uint32_t k1) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = (uint64_t)M0 * c0, p1 = (uint64_t)M1 * c2;
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 += W0; k1 += W1;
  }
  Philox4 out = {{c0, c1, c2, c3}};
  return out;
}

// The 32 random bits for element `index` of draw `site` at training step `step`.
VIT_HD uint32_t philox_u32(uint64_t seed, uint32_t site, uint64_t step, uint64_t index) {
  Philox4 r = philox4x32_10((uint32_t)(index >> 2), site, (uint32_t)step, (uint32_t)(step >> 32),
                            (uint32_t)seed, (uint32_t)(seed >> 32));
  // Word index % 4 by selects, not r.v[index & 3]: a runtime index into the result would put
  // it in local memory (a 16-byte stack frame in every kernel that draws one element).
  const uint32_t w = (uint32_t)(index & 3);
  const uint32_t lo = w & 1 ? r.v[1] : r.v[0], hi = w & 1 ? r.v[3] : r.v[2];
  return w & 2 ? hi : lo;
}

// Uniform in [0, 1) with 24 bits: exactly representable in float, identical on every device.
VIT_HD float philox_uniform(uint64_t seed, uint32_t site, uint64_t step, uint64_t index) {
  return (float)(philox_u32(seed, site, step, index) >> 8) * (1.0f / 16777216.0f);
}

// Where in the model a draw happens. Per-layer sites are SITE_LAYER0 + layer * SITES_PER_LAYER + k.
enum Site : uint32_t {
  SITE_INIT = 0,          // weight initialisation (step = tensor number)
  SITE_SHUFFLE = 1,       // per-epoch permutation of the training set (step = epoch)
  SITE_AUGMENT = 2,       // crop offsets, flips, random-resized-crop boxes (index = image * 8 + k)
  SITE_EMBED_DROPOUT = 3, // dropout after patch + position embedding
  SITE_LAYER0 = 16,
  SITES_PER_LAYER = 4,    // + 0 attention-probability dropout, + 1 attention output dropout,
                          // + 2 MLP output dropout
};

VIT_HD uint32_t layer_site(int layer, int k) {
  return SITE_LAYER0 + (uint32_t)layer * SITES_PER_LAYER + (uint32_t)k;
}

// Dropout decision for one element: keep (and scale by 1/(1-p)) when uniform >= p.
VIT_HD bool dropout_keep(uint64_t seed, uint32_t site, uint64_t step, uint64_t index, float p) {
  return philox_uniform(seed, site, step, index) >= p;
}

}  // namespace vit
