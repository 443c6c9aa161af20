#include "common/attention_map.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "common/error.h"
#include "cpu/input.h"  // vit::ref::resize_bilinear: the model input's resize

// stb_image_write is compiled here for the program (the tests have their own static copies).
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

namespace vit {

std::vector<float> attention_rollout(const float* probs, int L, int NH, int T) {
  // v = e_0^T, then v <- v Â_l for l = L-1 .. 0, so v = e_0^T Â_{L-1} ... Â_0 = row 0 of R.
  std::vector<double> v(T, 0.0), nv(T), a((size_t)T * T);
  v[0] = 1.0;
  for (int l = L - 1; l >= 0; --l) {
    // Â_l (T, T): head mean, + I, rows renormalised.
    std::fill(a.begin(), a.end(), 0.0);
    for (int h = 0; h < NH; ++h) {
      const float* p = probs + ((size_t)l * NH + h) * T * T;
      for (size_t e = 0; e < (size_t)T * T; ++e) a[e] += p[e];
    }
    for (int i = 0; i < T; ++i) {
      double* row = a.data() + (size_t)i * T;
      double sum = 0.0;
      for (int j = 0; j < T; ++j) sum += row[j] = row[j] / NH + (i == j ? 1.0 : 0.0);
      for (int j = 0; j < T; ++j) row[j] /= sum;
    }
    std::fill(nv.begin(), nv.end(), 0.0);
    for (int i = 0; i < T; ++i)
      for (int j = 0; j < T; ++j) nv[j] += v[i] * a[(size_t)i * T + j];
    v.swap(nv);
  }
  return std::vector<float>(v.begin() + 1, v.end());
}

std::vector<float> cls_attention(const float* probs, int L, int NH, int T, int layer) {
  if (layer < 0 || layer >= L)
    throw Error("attention layer " + std::to_string(layer) + " does not exist (the model has " +
                std::to_string(L) + " layers: 0.." + std::to_string(L - 1) + ")");
  std::vector<float> out((size_t)NH * (T - 1));
  for (int h = 0; h < NH; ++h) {
    const float* row0 = probs + ((size_t)layer * NH + h) * T * T;  // query = CLS
    std::copy(row0 + 1, row0 + T, out.begin() + (size_t)h * (T - 1));
  }
  return out;
}

void normalise01(float* x, size_t n) {
  if (n == 0) return;
  float lo = x[0], hi = x[0];
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) throw Error("attention map has a non-finite value");
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  const double range = (double)hi - lo;
  for (size_t i = 0; i < n; ++i) x[i] = range > 0 ? (float)((x[i] - (double)lo) / range) : 0.0f;
}

std::vector<uint8_t> resize_rgb(const uint8_t* rgb, int w, int h, int S) {
  std::vector<float> plane((size_t)w * h), out((size_t)S * S);
  std::vector<uint8_t> res((size_t)S * S * 3);
  for (int ch = 0; ch < 3; ++ch) {
    for (size_t i = 0; i < plane.size(); ++i) plane[i] = rgb[3 * i + ch];
    ref::resize_bilinear(plane.data(), h, w, out.data(), S, S);
    for (size_t i = 0; i < out.size(); ++i)
      res[3 * i + ch] = (uint8_t)std::lround(std::min(255.0f, std::max(0.0f, out[i])));
  }
  return res;
}

namespace {
// One channel of matplotlib's jet: piecewise linear through (x, y) knots.
float ramp(float v, const float (*k)[2], int n) {
  if (v <= k[0][0]) return k[0][1];
  for (int i = 1; i < n; ++i)
    if (v <= k[i][0]) return k[i - 1][1] + (v - k[i - 1][0]) / (k[i][0] - k[i - 1][0]) * (k[i][1] - k[i - 1][1]);
  return k[n - 1][1];
}
}  // namespace

void jet_colour(float v, uint8_t rgb[3]) {
  static const float r[][2] = {{0, 0}, {0.35f, 0}, {0.66f, 1}, {0.89f, 1}, {1, 0.5f}};
  static const float g[][2] = {{0, 0}, {0.125f, 0}, {0.375f, 1}, {0.64f, 1}, {0.91f, 0}, {1, 0}};
  static const float b[][2] = {{0, 0.5f}, {0.11f, 1}, {0.34f, 1}, {0.65f, 0}, {1, 0}};
  v = std::isfinite(v) ? std::min(1.0f, std::max(0.0f, v)) : 0.0f;
  rgb[0] = (uint8_t)std::lround(255.0f * ramp(v, r, 5));
  rgb[1] = (uint8_t)std::lround(255.0f * ramp(v, g, 6));
  rgb[2] = (uint8_t)std::lround(255.0f * ramp(v, b, 5));
}

std::vector<uint8_t> heat_overlay(const uint8_t* img, int S, const float* map01, int g,
                                  float alpha) {
  std::vector<float> up((size_t)S * S);
  ref::resize_bilinear(map01, g, g, up.data(), S, S);
  std::vector<uint8_t> out((size_t)S * S * 3);
  for (size_t i = 0; i < up.size(); ++i) {
    uint8_t c[3];
    jet_colour(up[i], c);
    for (int ch = 0; ch < 3; ++ch)
      out[3 * i + ch] = (uint8_t)std::lround((1.0f - alpha) * img[3 * i + ch] + alpha * c[ch]);
  }
  return out;
}

std::vector<uint8_t> tile_images(const std::vector<std::vector<uint8_t>>& tiles, int S, int gap,
                                 int* w, int* h) {
  const int n = (int)tiles.size();
  int cols = 1;
  while (cols * cols < n) ++cols;
  const int rows = n == 0 ? 0 : (n + cols - 1) / cols;
  *w = cols * S + (cols + 1) * gap;
  *h = rows * S + (rows + 1) * gap;
  std::vector<uint8_t> out((size_t)*w * *h * 3, 255);
  for (int t = 0; t < n; ++t) {
    const int x0 = gap + (t % cols) * (S + gap), y0 = gap + (t / cols) * (S + gap);
    for (int y = 0; y < S; ++y)
      std::copy(tiles[t].begin() + (size_t)y * S * 3, tiles[t].begin() + (size_t)(y + 1) * S * 3,
                out.begin() + ((size_t)(y0 + y) * *w + x0) * 3);
  }
  return out;
}

void write_png(const std::string& path, const uint8_t* rgb, int w, int h) {
  const std::string tmp = path + ".tmp." + std::to_string((long)getpid());
  if (!stbi_write_png(tmp.c_str(), w, h, 3, rgb, w * 3)) {
    const int e = errno;
    unlink(tmp.c_str());
    throw Error(path + ": cannot write PNG" + (e ? std::string(": ") + strerror(e) : std::string()));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    unlink(tmp.c_str());
    throw Error(path + ": cannot write PNG: " + strerror(e));
  }
}

}  // namespace vit
