#include "cpu/attention.h"

#include <cmath>
#include <cstddef>
#include <type_traits>

#include "cpu/blas.h"
#include "cpu/dropout.h"
#include "cpu/fastmath.h"
#include "cpu/scratch.h"

// Each (b, h) pair is four (forward) or five (backward) small GEMMs through BLAS on strided
// views of qkv (row stride 3C) plus row-wise softmax work on its (T, T) block. Per (b, h):
//   forward:  S = scale Q K^T;  P = softmax(S) (saved);  Pd = P * mask;  O = Pd V
//   backward: Pd = P * mask;  dV = Pd^T dO;  dPd = dO V^T;  dP = dPd * mask;
//             dS = scale P (dP - rowsum(dP P));  dQ = dS K;  dK = dS^T Q
// The dropout mask of a (b, h) block is one run of T*T consecutive flat indices
// ((b*NH + h)*T + i)*T + j, drawn at once.

namespace vit::ref {

namespace {

// row (n) = exp(row - max(row)) / sum, in place. The exps are vectorized for float (exp_fast on
// 4 lanes); the sum stays a sequential left-to-right sum in T.
template <class T>
void softmax_row(T* row, int n) {
  T mx = -INFINITY;
  for (int j = 0; j < n; ++j) mx = row[j] > mx ? row[j] : mx;
  int j0 = 0;
  if constexpr (std::is_same_v<T, float>) {
    for (; j0 + 4 <= n; j0 += 4) store4(row + j0, exp_fast(load4(row + j0) - mx));
  }
  for (int j = j0; j < n; ++j) row[j] = exp_fast(row[j] - mx);
  T sum = 0;
  for (int j = 0; j < n; ++j) sum += row[j];
  const T inv = T(1) / sum;
  for (int j = 0; j < n; ++j) row[j] *= inv;
}

}  // namespace

template <class T>
void attention_forward(const T* qkv, T* out, T* probs, int B, int Tn, int C, int NH, float p_drop,
                       uint64_t seed, uint32_t site, uint64_t step) {
  const int hd = C / NH, C3 = 3 * C;
  const size_t TT = (size_t)Tn * Tn;
  const T scale = T(1) / std::sqrt((T)hd);
  const T keep_scale = (T)dropout_scale(p_drop);
#pragma omp parallel for schedule(static) if ((size_t)B * NH * TT * hd >= 16 * kParallelMin)
  for (int bh = 0; bh < B * NH; ++bh) {
    const int b = bh / NH, h = bh % NH;
    const T* q = qkv + (size_t)b * Tn * C3 + h * hd;  // (T, hd), row stride 3C
    const T* k = q + C;
    const T* v = q + 2 * C;
    T* P = probs + (size_t)bh * TT;  // (T, T)
    gemm(false, true, Tn, Tn, hd, scale, q, C3, k, C3, T(0), P, Tn);
    for (int i = 0; i < Tn; ++i) softmax_row(P + (size_t)i * Tn, Tn);
    const T* Pd = P;
    if (p_drop != 0.0f) {
      T* pd = scratch<T>(TT);  // (T, T) dropped probabilities
      dropout_mask(seed, site, step, (uint64_t)bh * TT, TT, p_drop, keep_scale, pd);
      for (size_t e = 0; e < TT; ++e) pd[e] *= P[e];
      Pd = pd;
    }
    gemm(false, false, Tn, hd, Tn, T(1), Pd, Tn, v, C3, T(0), out + (size_t)b * Tn * C + h * hd, C);
  }
}

template <class T>
void attention_backward(const T* dout, const T* qkv, const T* probs, T* dqkv, int B, int Tn,
                        int C, int NH, float p_drop, uint64_t seed, uint32_t site, uint64_t step) {
  const int hd = C / NH, C3 = 3 * C;
  const size_t TT = (size_t)Tn * Tn;
  const T scale = T(1) / std::sqrt((T)hd);
  const T keep_scale = (T)dropout_scale(p_drop);
#pragma omp parallel for schedule(static) if ((size_t)B * NH * TT * hd >= 16 * kParallelMin)
  for (int bh = 0; bh < B * NH; ++bh) {
    const int b = bh / NH, h = bh % NH;
    const size_t row0 = (size_t)b * Tn;
    const T* q = qkv + row0 * C3 + h * hd;  // (T, hd) views, row stride 3C
    const T* k = q + C;
    const T* v = q + 2 * C;
    T* dq = dqkv + row0 * C3 + h * hd;
    T* dk = dq + C;
    T* dv = dq + 2 * C;
    const T* dO = dout + row0 * C + h * hd;  // (T, hd), row stride C
    const T* P = probs + (size_t)bh * TT;    // (T, T) pre-dropout
    T* dS = scratch<T>(TT);                  // (T, T) d(dropped probs), then d(scores)
    const T* Pd = P;
    T* mask = nullptr;
    if (p_drop != 0.0f) {
      mask = scratch<T>(TT, 1);  // (T, T) 0 or 1/(1-p)
      T* pd = scratch<T>(TT, 2);
      dropout_mask(seed, site, step, (uint64_t)bh * TT, TT, p_drop, keep_scale, mask);
      for (size_t e = 0; e < TT; ++e) pd[e] = mask[e] * P[e];
      Pd = pd;
    }
    gemm(true, false, Tn, hd, Tn, T(1), Pd, Tn, dO, C, T(0), dv, C3);   // dV = Pd^T dO
    gemm(false, true, Tn, Tn, hd, T(1), dO, C, v, C3, T(0), dS, Tn);    // dPd = dO V^T
    for (int i = 0; i < Tn; ++i) {
      T* r = dS + (size_t)i * Tn;
      const T* Pi = P + (size_t)i * Tn;
      if (mask)
        for (int j = 0; j < Tn; ++j) r[j] *= mask[(size_t)i * Tn + j];
      T dot = 0;  // sum_j dP[i, j] P[i, j]
      for (int j = 0; j < Tn; ++j) dot += r[j] * Pi[j];
      for (int j = 0; j < Tn; ++j) r[j] = Pi[j] * (r[j] - dot) * scale;
    }
    gemm(false, false, Tn, hd, Tn, T(1), dS, Tn, k, C3, T(0), dq, C3);  // dQ = dS K
    gemm(true, false, Tn, hd, Tn, T(1), dS, Tn, q, C3, T(0), dk, C3);   // dK = dS^T Q
  }
}

template void attention_forward<float>(const float*, float*, float*, int, int, int, int, float, uint64_t, uint32_t, uint64_t);
template void attention_forward<double>(const double*, double*, double*, int, int, int, int, float, uint64_t, uint32_t, uint64_t);
template void attention_backward<float>(const float*, const float*, const float*, float*, int, int, int, int, float, uint64_t, uint32_t, uint64_t);
template void attention_backward<double>(const double*, const double*, const double*, double*, int, int, int, int, float, uint64_t, uint32_t, uint64_t);

}  // namespace vit::ref
