// cpu/attention.h — reference multi-head self-attention core (the part between the qkv and the
// output projections), on the packed projection qkv (B, T, 3C):
//   q = qkv[..., 0:C], k = qkv[..., C:2C], v = qkv[..., 2C:3C]; head h uses features
//   h*hd .. (h+1)*hd of each (hd = C / NH), as tintn's and torchvision's in-proj packing.
//   probs (B, NH, T, T) = softmax(q k^T / sqrt(hd)) over the last axis, saved BEFORE dropout;
//   dropout on probs with flat index ((b*NH + h)*T + i)*T + j at `site`;
//   out (B, T, C) = dropped_probs @ v, heads concatenated along C.
// One (b, h) pair per OpenMP iteration, its products as small BLAS GEMMs on strided views; the
// mask is recomputed in backward from (seed, site, step).
#pragma once
#include <cstdint>

namespace vit::ref {

// qkv (B, T, 3C) -> out (B, T, C) (=), probs (B, NH, T, T) (=)
template <class T>
void attention_forward(const T* qkv, T* out, T* probs, int B, int Tn, int C, int NH, float p_drop,
                       uint64_t seed, uint32_t site, uint64_t step);

// dout (B, T, C), qkv, probs (pre-dropout, from forward) -> dqkv (B, T, 3C) (=)
template <class T>
void attention_backward(const T* dout, const T* qkv, const T* probs, T* dqkv, int B, int Tn,
                        int C, int NH, float p_drop, uint64_t seed, uint32_t site, uint64_t step);

}  // namespace vit::ref
