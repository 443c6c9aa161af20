#include "cpu/attention.h"

#include <cmath>
#include <cstddef>

#include "cpu/dropout.h"
#include "cpu/scratch.h"

namespace vit::ref {

template <class T>
void attention_forward(const T* qkv, T* out, T* probs, int B, int Tn, int C, int NH, float p_drop,
                       uint64_t seed, uint32_t site, uint64_t step) {
  const int hd = C / NH, C3 = 3 * C;
  const T scale = T(1) / std::sqrt((T)hd);
  const T keep_scale = (T)dropout_scale(p_drop);
#pragma omp parallel for schedule(dynamic) if ((size_t)B * NH * Tn * Tn * hd >= 16 * kParallelMin)
  for (int bh = 0; bh < B * NH; ++bh) {
    const int b = bh / NH, h = bh % NH;
    const T* q = qkv + (size_t)b * Tn * C3 + h * hd;  // row i at q + i*C3
    const T* k = q + C;
    const T* v = q + 2 * C;
    T* P = probs + (size_t)bh * Tn * Tn;               // (T, T)
    T* pd = scratch<T>((size_t)Tn);                    // one dropped row
    for (int i = 0; i < Tn; ++i) {
      T* Pi = P + (size_t)i * Tn;
      const T* qi = q + (size_t)i * C3;
      T mx = -INFINITY;
      for (int j = 0; j < Tn; ++j) {
        const T* kj = k + (size_t)j * C3;
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (int d = 0; d < hd; ++d) s += qi[d] * kj[d];
        Pi[j] = s * scale;
        mx = Pi[j] > mx ? Pi[j] : mx;
      }
      T sum = 0;
      for (int j = 0; j < Tn; ++j) {
        Pi[j] = std::exp(Pi[j] - mx);
        sum += Pi[j];
      }
      const T inv = T(1) / sum;
      for (int j = 0; j < Tn; ++j) Pi[j] *= inv;
      const uint64_t base = ((uint64_t)bh * Tn + i) * Tn;
      if (p_drop == 0.0f) {
        for (int j = 0; j < Tn; ++j) pd[j] = Pi[j];
      } else {
        dropout_mask(seed, site, step, base, Tn, p_drop, keep_scale, pd);
        for (int j = 0; j < Tn; ++j) pd[j] *= Pi[j];
      }
      T* oi = out + ((size_t)b * Tn + i) * C + h * hd;
      for (int d = 0; d < hd; ++d) oi[d] = 0;
      for (int j = 0; j < Tn; ++j) {
        const T* vj = v + (size_t)j * C3;
        const T pj = pd[j];
#pragma omp simd
        for (int d = 0; d < hd; ++d) oi[d] += pj * vj[d];
      }
    }
  }
}

template <class T>
void attention_backward(const T* dout, const T* qkv, const T* probs, T* dqkv, int B, int Tn,
                        int C, int NH, float p_drop, uint64_t seed, uint32_t site, uint64_t step) {
  const int hd = C / NH, C3 = 3 * C;
  const T scale = T(1) / std::sqrt((T)hd);
  const T keep_scale = (T)dropout_scale(p_drop);
#pragma omp parallel for schedule(dynamic) if ((size_t)B * NH * Tn * Tn * hd >= 16 * kParallelMin)
  for (int bh = 0; bh < B * NH; ++bh) {
    const int b = bh / NH, h = bh % NH;
    const size_t row0 = (size_t)b * Tn;
    const T* q = qkv + row0 * C3 + h * hd;
    const T* k = q + C;
    const T* v = q + 2 * C;
    T* dq = dqkv + row0 * C3 + h * hd;
    T* dk = dq + C;
    T* dv = dq + 2 * C;
    const T* P = probs + (size_t)bh * Tn * Tn;
    T* dS = scratch<T>((size_t)Tn);  // one row of d(scores)
    T* pd = scratch<T>((size_t)Tn, 1);
    for (int i = 0; i < Tn; ++i)
      for (int d = 0; d < hd; ++d) dq[(size_t)i * C3 + d] = dk[(size_t)i * C3 + d] = dv[(size_t)i * C3 + d] = 0;
    for (int i = 0; i < Tn; ++i) {
      const T* Pi = P + (size_t)i * Tn;
      const T* doi = dout + (row0 + i) * C + h * hd;
      const uint64_t base = ((uint64_t)bh * Tn + i) * Tn;
      // mask and scale of row i: dropped = P * m
      if (p_drop == 0.0f)
        for (int j = 0; j < Tn; ++j) pd[j] = T(1);
      else
        dropout_mask(seed, site, step, base, Tn, p_drop, keep_scale, pd);
      // dV[j] += dropped[i, j] * dout[i];  d(dropped)[i, j] = dout[i] . v[j];  dP = d(dropped) * m
      T dot = 0;  // sum_j dP[i, j] P[i, j]
      for (int j = 0; j < Tn; ++j) {
        const T* vj = v + (size_t)j * C3;
        T* dvj = dv + (size_t)j * C3;
        const T pdj = Pi[j] * pd[j];
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (int d = 0; d < hd; ++d) {
          s += doi[d] * vj[d];
          dvj[d] += pdj * doi[d];
        }
        dS[j] = s * pd[j];
        dot += dS[j] * Pi[j];
      }
      // softmax backward: dS = P * (dP - sum_j dP P), then the 1/sqrt(hd) scale
      const T* qi = q + (size_t)i * C3;
      T* dqi = dq + (size_t)i * C3;
      for (int j = 0; j < Tn; ++j) {
        const T g = Pi[j] * (dS[j] - dot) * scale;
        const T* kj = k + (size_t)j * C3;
        T* dkj = dk + (size_t)j * C3;
#pragma omp simd
        for (int d = 0; d < hd; ++d) {
          dqi[d] += g * kj[d];
          dkj[d] += g * qi[d];
        }
      }
    }
  }
}

template void attention_forward<float>(const float*, float*, float*, int, int, int, int, float, uint64_t, uint32_t, uint64_t);
template void attention_forward<double>(const double*, double*, double*, int, int, int, int, float, uint64_t, uint32_t, uint64_t);
template void attention_backward<float>(const float*, const float*, const float*, float*, int, int, int, int, float, uint64_t, uint32_t, uint64_t);
template void attention_backward<double>(const double*, const double*, const double*, double*, int, int, int, int, float, uint64_t, uint32_t, uint64_t);

}  // namespace vit::ref
