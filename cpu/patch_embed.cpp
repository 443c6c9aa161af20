#include "cpu/patch_embed.h"

#include <cstddef>

#include "cpu/blas.h"
#include "cpu/scratch.h"

namespace vit::ref {

template <class T>
void im2patch(const T* x, T* cols, int B, int Cin, int H, int p) {
  const int g = H / p, N = g * g, P = Cin * p * p;
#pragma omp parallel for schedule(static) if ((size_t)B * N * P >= kParallelMin)
  for (int bn = 0; bn < B * N; ++bn) {
    const int b = bn / N, n = bn % N, gy = n / g, gx = n % g;
    T* row = cols + (size_t)bn * P;
    for (int c = 0; c < Cin; ++c)
      for (int ky = 0; ky < p; ++ky) {
        const T* src = x + (((size_t)b * Cin + c) * H + (size_t)gy * p + ky) * H + (size_t)gx * p;
        for (int kx = 0; kx < p; ++kx) row[(c * p + ky) * p + kx] = src[kx];
      }
  }
}

template <class T>
void patch_embed_forward(const T* x, const T* w, const T* b, const T* cls, const T* pos, T* out,
                         int B, int Cin, int H, int p, int C) {
  const int g = H / p, N = g * g, Tn = N + 1, P = Cin * p * p;
  T* cols = scratch<T>((size_t)B * N * P);     // (B*N, P)
  T* emb = scratch<T>((size_t)B * N * C, 1);   // (B*N, C)
  im2patch(x, cols, B, Cin, H, p);
  gemm(false, true, B * N, C, P, T(1), cols, P, w, P, T(0), emb, C);
#pragma omp parallel for schedule(static) if ((size_t)B * Tn * C >= kParallelMin)
  for (int bt = 0; bt < B * Tn; ++bt) {
    const int bi = bt / Tn, t = bt % Tn;
    T* o = out + (size_t)bt * C;
    const T* pr = pos + (size_t)t * C;
    if (t == 0) {
      for (int c = 0; c < C; ++c) o[c] = cls[c] + pr[c];
    } else {
      const T* e = emb + ((size_t)bi * N + t - 1) * C;
      for (int c = 0; c < C; ++c) o[c] = e[c] + b[c] + pr[c];
    }
  }
}

template <class T>
void patch_embed_backward(const T* dout, const T* x, const T* w, T* dx, T* dw, T* db, T* dcls,
                          T* dpos, int B, int Cin, int H, int p, int C) {
  const int g = H / p, N = g * g, Tn = N + 1, P = Cin * p * p;
  T* demb = scratch<T>((size_t)B * N * C, 1);  // (B*N, C): dout without the CLS rows
  T* cols = scratch<T>((size_t)B * N * P);     // (B*N, P)
  // Sums over the batch, split over channels: independent of the thread count.
#pragma omp parallel for schedule(static) if ((size_t)B * Tn * C >= kParallelMin)
  for (int c0 = 0; c0 < C; c0 += 64) {
    const int c1 = c0 + 64 < C ? c0 + 64 : C;
    for (int bi = 0; bi < B; ++bi)
      for (int t = 0; t < Tn; ++t) {
        const T* d = dout + ((size_t)bi * Tn + t) * C;
        for (int c = c0; c < c1; ++c) {
          dpos[(size_t)t * C + c] += d[c];
          if (t == 0) dcls[c] += d[c];
          else db[c] += d[c];
        }
      }
  }
#pragma omp parallel for schedule(static) if ((size_t)B * N * C >= kParallelMin)
  for (int bn = 0; bn < B * N; ++bn) {
    const int bi = bn / N, n = bn % N;
    const T* d = dout + ((size_t)bi * Tn + 1 + n) * C;
    for (int c = 0; c < C; ++c) demb[(size_t)bn * C + c] = d[c];
  }
  im2patch(x, cols, B, Cin, H, p);
  gemm(true, false, C, P, B * N, T(1), demb, C, cols, P, T(1), dw, P);  // dw += demb^T cols
  if (dx) {
    if (H % p)  // pixels right of / below the last whole patch get no gradient (Conv2d drops them)
      for (size_t i = 0; i < (size_t)B * Cin * H * H; ++i) dx[i] = T(0);
    gemm(false, false, B * N, P, C, T(1), demb, C, w, P, T(0), cols, P);  // dcols = demb W
    // Patches do not overlap (stride = kernel): scatter back is a plain write.
#pragma omp parallel for schedule(static) if ((size_t)B * N * P >= kParallelMin)
    for (int bn = 0; bn < B * N; ++bn) {
      const int bi = bn / N, n = bn % N, gy = n / g, gx = n % g;
      const T* row = cols + (size_t)bn * P;
      for (int c = 0; c < Cin; ++c)
        for (int ky = 0; ky < p; ++ky) {
          T* dst = dx + (((size_t)bi * Cin + c) * H + (size_t)gy * p + ky) * H + (size_t)gx * p;
          for (int kx = 0; kx < p; ++kx) dst[kx] = row[(c * p + ky) * p + kx];
        }
    }
  }
}

template void im2patch<float>(const float*, float*, int, int, int, int);
template void im2patch<double>(const double*, double*, int, int, int, int);
template void patch_embed_forward<float>(const float*, const float*, const float*, const float*, const float*, float*, int, int, int, int, int);
template void patch_embed_forward<double>(const double*, const double*, const double*, const double*, const double*, double*, int, int, int, int, int);
template void patch_embed_backward<float>(const float*, const float*, const float*, float*, float*, float*, float*, float*, int, int, int, int, int);
template void patch_embed_backward<double>(const double*, const double*, const double*, double*, double*, double*, double*, double*, int, int, int, int, int);

}  // namespace vit::ref
