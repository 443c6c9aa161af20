// cpu/patch_embed.h — reference patch embedding: the stride-p, kernel-p Conv2d of ViT as one
// matmul over flattened patches, plus the CLS token and the learned position embeddings.
//   out[b, 0]     = cls + pos[0]
//   out[b, 1 + n] = W · patch(b, n) + bias + pos[1 + n]
// Patches n in row-major order over the (H/p, W/p) grid; a patch's pixels flattened in
// (c, ky, kx) order, which is Conv2d's weight (C, Cin, p, p) read as (C, Cin*p*p). Square
// images (W = H). T = (H/p)^2 + 1.
#pragma once

namespace vit::ref {

// x (B, Cin, H, H), w (C, Cin*p*p), b (C), cls (C), pos (T, C) -> out (B, T, C) (=)
template <class T>
void patch_embed_forward(const T* x, const T* w, const T* b, const T* cls, const T* pos, T* out,
                         int B, int Cin, int H, int p, int C);

// dout (B, T, C) -> dx (B, Cin, H, H) (=, skipped when nullptr), dw, db, dcls, dpos (+=)
template <class T>
void patch_embed_backward(const T* dout, const T* x, const T* w, T* dx, T* dw, T* db, T* dcls,
                          T* dpos, int B, int Cin, int H, int p, int C);

// Gathers the patches of x into rows: cols (B*N, Cin*p*p). Exposed for tests and the CUDA side.
template <class T>
void im2patch(const T* x, T* cols, int B, int Cin, int H, int p);

}  // namespace vit::ref
