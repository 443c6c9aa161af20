// tests/test_attention_map.cpp — attention maps (common/attention_map.h, Model::infer_attention
// of the CPU model): the rollout against hand-derived values (uniform attention, a 2-layer case
// worked on paper) and against the matrix-product definition on a real model's probabilities;
// the per-head CLS rows; the heat-map colours and blending; PNGs written and decoded back.
// (CPU vs CUDA maps: tests/test_cuda_model.cu; vit_predict --attention: tests/test_predict.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "common/attention_map.h"
#include "common/config.h"
#include "common/error.h"
#include "common/image.h"
#include "common/model.h"
#include "common/params.h"
#include "common/philox.h"
#include "tests/test_fs.h"
#include "tests/test_util.h"

namespace {

using vit_test::fs::TempDir;

// Row 0 of R = Â_{L-1} ... Â_0 by the definition, as full (T, T) matrix products in double,
// multiplied in the order of Abnar & Zuidema's reference code (result = Â_l @ result, l = 0..L-1).
std::vector<double> rollout_by_products(const std::vector<float>& probs, int L, int NH, int T) {
  auto ahat = [&](int l) {
    std::vector<double> a((size_t)T * T, 0.0);
    for (int h = 0; h < NH; ++h)
      for (size_t e = 0; e < a.size(); ++e) a[e] += probs[((size_t)l * NH + h) * T * T + e] / NH;
    for (int i = 0; i < T; ++i) {
      a[(size_t)i * T + i] += 1.0;
      double s = 0;
      for (int j = 0; j < T; ++j) s += a[(size_t)i * T + j];
      for (int j = 0; j < T; ++j) a[(size_t)i * T + j] /= s;
    }
    return a;
  };
  std::vector<double> r = ahat(0);
  for (int l = 1; l < L; ++l) {
    const std::vector<double> a = ahat(l);
    std::vector<double> n((size_t)T * T, 0.0);
    for (int i = 0; i < T; ++i)
      for (int k = 0; k < T; ++k)
        for (int j = 0; j < T; ++j) n[(size_t)i * T + j] += a[(size_t)i * T + k] * r[(size_t)k * T + j];
    r.swap(n);
  }
  return std::vector<double>(r.begin() + 1, r.begin() + T);
}

TEST(AttentionMap, UniformAttentionGivesAUniformMap) {
  // Every probability 1/T: Â = (J/T + I)/2, and the CLS row's patch entries after L layers are
  // v_L = 1/(2T) + v_{L-1}/2 with v_0 = 0, i.e. (1 - 2^-L) / T — all equal.
  const int NH = 3, T = 5;
  for (int L : {1, 2, 4}) {
    std::vector<float> probs((size_t)L * NH * T * T, 1.0f / T);
    std::vector<float> r = vit::attention_rollout(probs.data(), L, NH, T);
    ASSERT_EQ(r.size(), (size_t)T - 1);
    for (float v : r) EXPECT_NEAR(v, (1.0 - std::ldexp(1.0, -L)) / T, 1e-7) << "L=" << L;
    vit::normalise01(r.data(), r.size());  // nothing stands out: all 0
    for (float v : r) EXPECT_EQ(v, 0.0f);
  }
}

TEST(AttentionMap, RolloutOfATwoLayerCaseWorkedByHand) {
  // T = 3 (CLS + 2 patches), 2 heads. Layer 0: row 0 of the head mean is (0.25, 0.5, 0.25)
  // (head 0 (0, 1, 0), head 1 (0.5, 0, 0.5)), rows 1 and 2 attend to themselves:
  //   Â_0 = [[.625, .25, .125], [0, 1, 0], [0, 0, 1]].
  // Layer 1: both heads' row 0 is (0, 0, 1): Â_1 row 0 = (.5, 0, .5); rows 1, 2 uniform (they
  // cannot matter: only row 0 of Â_1 reaches the CLS row).
  //   e_0 Â_1 Â_0 = .5 * (.625, .25, .125) + .5 * (0, 0, 1) = (.3125, .125, .5625).
  const int L = 2, NH = 2, T = 3;
  const float third = 1.0f / 3;
  const std::vector<float> probs = {
      // layer 0, head 0
      0, 1, 0,   0, 1, 0,   0, 0, 1,
      // layer 0, head 1
      .5f, 0, .5f,   0, 1, 0,   0, 0, 1,
      // layer 1, head 0
      0, 0, 1,   third, third, third,   third, third, third,
      // layer 1, head 1
      0, 0, 1,   third, third, third,   third, third, third};
  std::vector<float> r = vit::attention_rollout(probs.data(), L, NH, T);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_NEAR(r[0], 0.125, 1e-7);
  EXPECT_NEAR(r[1], 0.5625, 1e-7);
  // One layer alone: (.625, .25, .125) -> patches (.25, .125).
  std::vector<float> r1 = vit::attention_rollout(probs.data(), 1, NH, T);
  EXPECT_NEAR(r1[0], 0.25, 1e-7);
  EXPECT_NEAR(r1[1], 0.125, 1e-7);
  vit::normalise01(r.data(), r.size());
  EXPECT_EQ(r[0], 0.0f);
  EXPECT_EQ(r[1], 1.0f);

  // Layer 0's CLS row per head, patches only.
  const std::vector<float> h0 = vit::cls_attention(probs.data(), L, NH, T, 0);
  EXPECT_EQ(h0, (std::vector<float>{1, 0, 0, .5f}));
  const std::vector<float> h1 = vit::cls_attention(probs.data(), L, NH, T, 1);
  EXPECT_EQ(h1, (std::vector<float>{0, 1, 0, 1}));
  EXPECT_THROW(vit::cls_attention(probs.data(), L, NH, T, 2), vit::Error);
  EXPECT_THROW(vit::cls_attention(probs.data(), L, NH, T, -1), vit::Error);
}

TEST(AttentionMap, RolloutOfTheCpuModelEqualsTheMatrixProducts) {
  // A 2-layer tiny model (T = 17, 2 heads) with random weights: the probabilities it returns
  // are softmax rows, its logits are infer()'s, and the rollout of each image is the
  // matrix-product definition applied to them.
  vit::Config c = vit::preset("tiny");
  c.dropout = c.attn_dropout = 0.3f;  // must not matter: inference has no dropout
  const vit::ParamLayout lay(c);
  std::vector<float> params(lay.total);
  vit::init_params(c, lay, 3, params.data());
  for (size_t i = 0; i < params.size(); ++i) params[i] += 0.5f * (vit::philox_uniform(4, 0, 0, i) - 0.5f);
  vit::ModelOptions o;
  o.max_batch = 2;
  o.fp16_input = vit::Fp16Input::Off;
  auto m = vit::make_cpu_model(c, o);
  m->set_params(params.data());
  const int B = 3, L = c.layers, NH = c.heads, T = c.tokens(), K = c.classes;
  const size_t img = (size_t)3 * c.image_size * c.image_size, per = (size_t)L * NH * T * T;
  std::vector<float> x(B * img);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 2.0f * vit::philox_uniform(5, 0, 0, i) - 1.0f;
  std::vector<float> logits(B * K), logits2(B * K), probs(B * per);
  m->infer_attention(x.data(), B, logits.data(), probs.data());  // 3 images, chunks of 2
  m->infer(x.data(), B, logits2.data());
  EXPECT_EQ(logits, logits2);
  for (size_t r = 0; r < probs.size() / T; ++r) {
    double s = 0;
    for (int j = 0; j < T; ++j) s += probs[r * T + j];
    ASSERT_NEAR(s, 1.0, 1e-5) << "row " << r;
  }
  std::vector<float> maps[B];
  for (int b = 0; b < B; ++b) {
    const std::vector<float> pb(probs.begin() + b * per, probs.begin() + (b + 1) * per);
    maps[b] = vit::attention_rollout(pb.data(), L, NH, T);
    EXPECT_TRUE(vit_test::allclose(maps[b], rollout_by_products(pb, L, NH, T), 1e-6, 1e-8)) << b;
  }
  // Different images attend differently (the test would pass on a constant map otherwise).
  EXPECT_NE(maps[0], maps[1]);
  EXPECT_NE(maps[1], maps[2]);
}

TEST(AttentionMap, JetColoursAndBlending) {
  uint8_t c[3];
  vit::jet_colour(0.0f, c);  // dark blue
  EXPECT_EQ(c[0], 0); EXPECT_EQ(c[1], 0); EXPECT_EQ(c[2], 128);
  vit::jet_colour(1.0f, c);  // dark red
  EXPECT_EQ(c[0], 128); EXPECT_EQ(c[1], 0); EXPECT_EQ(c[2], 0);
  vit::jet_colour(0.5f, c);  // r = (.5-.35)/.31, g = 1, b = (.65-.5)/.31 of 255
  EXPECT_EQ(c[0], 123); EXPECT_EQ(c[1], 255); EXPECT_EQ(c[2], 123);
  vit::jet_colour(7.0f, c);  // clamped
  EXPECT_EQ(c[0], 128);

  // A 2x2 map on a 4x4 grey image: the map's corners reach the image's corners unchanged
  // (bilinear, half-pixel centres), blended half and half with grey 100.
  const int S = 4;
  std::vector<uint8_t> grey(S * S * 3, 100);
  const float map[4] = {0, 1, 1, 0};
  std::vector<uint8_t> o = vit::heat_overlay(grey.data(), S, map, 2);
  ASSERT_EQ(o.size(), (size_t)S * S * 3);
  EXPECT_EQ(o[0], 50); EXPECT_EQ(o[1], 50); EXPECT_EQ(o[2], 114);    // (0,0): map 0, (0,0,128)
  const size_t tr = 3 * (S - 1);                                      // (0,3): map 1, (128,0,0)
  EXPECT_EQ(o[tr], 114); EXPECT_EQ(o[tr + 1], 50); EXPECT_EQ(o[tr + 2], 50);

  int w = 0, h = 0;
  std::vector<std::vector<uint8_t>> tiles(3, std::vector<uint8_t>(S * S * 3, 7));
  std::vector<uint8_t> g = vit::tile_images(tiles, S, 1, &w, &h);
  EXPECT_EQ(w, 2 * S + 3);  // 3 tiles: 2 columns, 2 rows
  EXPECT_EQ(h, 2 * S + 3);
  EXPECT_EQ(g[0], 255);                             // the gap
  EXPECT_EQ(g[((size_t)1 * w + 1) * 3], 7);         // tile 0's first pixel
  EXPECT_EQ(g[((size_t)(S + 2) * w + S + 2) * 3], 255);  // the empty 4th cell
}

TEST(AttentionMap, PngRoundTripsAndLeavesNoTemporaryFile) {
  TempDir d;
  const int w = 5, h = 3;
  std::vector<uint8_t> rgb(w * h * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = (uint8_t)(i * 17);
  vit::write_png(d.path("a.png"), rgb.data(), w, h);
  const vit::Image back = vit::load_image(d.path("a.png"));
  EXPECT_EQ(back.width, w);
  EXPECT_EQ(back.height, h);
  EXPECT_EQ(back.rgb, rgb);
  EXPECT_EQ(vit_test::fs::list_dir(d.dir()), std::vector<std::string>{"a.png"});
  EXPECT_THROW(vit::write_png(d.path("no/such/dir/b.png"), rgb.data(), w, h), vit::Error);
  EXPECT_EQ(vit_test::fs::list_dir(d.dir()), std::vector<std::string>{"a.png"});

  // The image to draw on: resized like the model input (identity at the same size).
  EXPECT_EQ(vit::resize_rgb(rgb.data(), w, h, 0 + 5).size(), (size_t)5 * 5 * 3);
  std::vector<uint8_t> sq(4 * 4 * 3);
  for (size_t i = 0; i < sq.size(); ++i) sq[i] = (uint8_t)(i * 5);
  EXPECT_EQ(vit::resize_rgb(sq.data(), 4, 4, 4), sq);
}

}  // namespace
