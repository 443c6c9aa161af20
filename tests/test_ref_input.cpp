// tests/test_ref_input.cpp — the reference input pipeline (cpu/input.h) against the contract of
// common/model.h: bilinear resize checked on examples worked out by hand (and confirmed with
// torch.nn.functional.interpolate(align_corners=False)), normalisation, crop / flip / RRC boxes
// recomputed here from the Philox draws.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/philox.h"
#include "cpu/input.h"
#include "tests/test_util.h"

using namespace vit::ref;
using std::vector;

TEST(RefResize, Upsample2x2To4x4ByHand) {
  // Half-pixel centres, scale 1/2: output column x samples sx = max((x+0.5)/2 - 0.5, 0)
  // = 0, 0.25, 0.75, 1.25 -> weight toward column 1: 0, 0.25, 0.75, 1 (x1 clamps at 1). Rows
  // likewise. With src [[0, 10], [20, 40]], f = (1-ly)(10 lx) + ly(20 + 20 lx):
  const double src[4] = {0, 10, 20, 40};
  const vector<double> expect = {0, 2.5, 7.5, 10,          // ly = 0
                                 5, 8.125, 14.375, 17.5,   // ly = 0.25: 5 + 12.5 lx
                                 15, 19.375, 28.125, 32.5, // ly = 0.75: 15 + 17.5 lx
                                 20, 25, 35, 40};          // ly = 1:    20 + 20 lx
  vector<double> dst(16);
  resize_bilinear(src, 2, 2, dst.data(), 4, 4);
  EXPECT_TRUE(vit_test::allclose(dst, expect, 0, 1e-12));
  vector<float> srcf(src, src + 4), dstf(16);
  resize_bilinear(srcf.data(), 2, 2, dstf.data(), 4, 4);
  EXPECT_TRUE(vit_test::allclose(dstf, expect, 0, 1e-5));
}

TEST(RefResize, DownsampleAndNonIntegerScale) {
  vector<double> src(16);
  for (int i = 0; i < 16; ++i) src[i] = i;
  // 4x4 -> 2x2, scale 2: sx = 0.5, 2.5: the mean of each 2x2 block
  vector<double> dst(4);
  resize_bilinear(src.data(), 4, 4, dst.data(), 2, 2);
  EXPECT_TRUE(vit_test::allclose(dst, vector<double>{2.5, 4.5, 10.5, 12.5}, 0, 1e-12));
  // 4x4 -> 3x5 (torch.nn.functional.interpolate, float64); scales are float in PyTorch too
  const vector<double> torch_ref = {0.6666666666666665, 1.3666666666666665, 2.1666666666666665, 2.966666666666667, 3.666666666666666,
                                    6.0, 6.7, 7.5, 8.3, 9.0,
                                    11.333333333333332, 12.033333333333331, 12.833333333333332, 13.633333333333333, 14.333333333333332};
  dst.resize(15);
  resize_bilinear(src.data(), 4, 4, dst.data(), 3, 5);
  EXPECT_TRUE(vit_test::allclose(dst, torch_ref, 1e-6, 1e-6));
  // equal sizes: identity
  dst.resize(16);
  resize_bilinear(src.data(), 4, 4, dst.data(), 4, 4);
  EXPECT_TRUE(vit_test::allclose(dst.data(), src.data(), 16, 0, 0));
}

static vector<uint8_t> test_images(int B, int S) {
  vector<uint8_t> img((size_t)B * 3 * S * S);
  for (size_t i = 0; i < img.size(); ++i) img[i] = (uint8_t)(vit::philox_u32(5, 99, 0, i) & 255);
  return img;
}

TEST(RefPreprocess, EvalScalesAndNormalises) {
  vit::Config c = vit::preset("tiny");
  c.mean[0] = 0.4f; c.mean[1] = 0.5f; c.mean[2] = 0.6f;
  c.std[0] = 0.2f; c.std[1] = 0.25f; c.std[2] = 0.3f;
  vit::InputSpec in;
  in.augment = vit::Augment::CropFlip;  // ignored when train = false
  const int B = 3, S = 32;
  auto img = test_images(B, S);
  vector<double> out((size_t)B * 3 * S * S);
  preprocess(img.data(), B, in, c, false, 1, 2, out.data());
  for (size_t i = 0; i < out.size(); ++i) {
    const int ch = (int)(i / (S * S)) % 3;
    ASSERT_NEAR(out[i], (img[i] / 255.0 - c.mean[ch]) / c.std[ch], 1e-12) << i;
  }
}

TEST(RefPreprocess, CropFlipFromPhiloxDraws) {
  vit::Config c = vit::preset("tiny");
  vit::InputSpec in;
  in.augment = vit::Augment::CropFlip;
  in.crop_pad = 4;
  const int B = 16, S = 32;
  const uint64_t seed = 42, step = 7;
  auto img = test_images(B, S);
  vector<double> out((size_t)B * 3 * S * S);
  preprocess(img.data(), B, in, c, true, seed, step, out.data());
  int flips = 0, moved = 0;
  for (int b = 0; b < B; ++b) {
    auto u = [&](int k) { return vit::philox_uniform(seed, vit::SITE_AUGMENT, step, b * 8 + k); };
    const bool flip = u(0) < 0.5f;
    const int dx = (int)std::floor(u(1) * 9), dy = (int)std::floor(u(2) * 9);
    flips += flip;
    moved += dx != 4 || dy != 4;
    for (int ch = 0; ch < 3; ++ch)
      for (int y = 0; y < S; ++y)
        for (int x = 0; x < S; ++x) {
          const int xc = flip ? S - 1 - x : x;  // flip after crop: out(y,x) = crop(y, S-1-x)
          const int sy = y + dy - 4, sx = xc + dx - 4;
          const int v = (sy >= 0 && sy < S && sx >= 0 && sx < S) ? img[(((size_t)b * 3 + ch) * S + sy) * S + sx] : 0;
          ASSERT_NEAR(out[(((size_t)b * 3 + ch) * S + y) * S + x], (v / 255.0 - 0.5) / 0.5, 1e-12)
              << "image " << b << " ch " << ch << " y " << y << " x " << x;
        }
  }
  EXPECT_GT(flips, 0);  // the draws exercise both branches (16 images)
  EXPECT_LT(flips, B);
  EXPECT_GT(moved, 0);
  // another step: other draws
  vector<double> out2(out.size());
  preprocess(img.data(), B, in, c, true, seed, step + 1, out2.data());
  EXPECT_NE(out, out2);
}

TEST(RefPreprocess, RandomResizedCropBoxAndResize) {
  vit::Config c = vit::preset("tiny");
  c.image_size = 24;  // the box is resampled to the model size
  vit::InputSpec in;
  in.augment = vit::Augment::RrcFlip;
  const int B = 6, S = 32, O = c.image_size;
  const uint64_t seed = 3, step = 11;
  auto img = test_images(B, S);
  vector<double> out((size_t)B * 3 * O * O);
  preprocess(img.data(), B, in, c, true, seed, step, out.data());
  for (int b = 0; b < B; ++b) {
    auto u = [&](int k) { return (double)vit::philox_uniform(seed, vit::SITE_AUGMENT, step, b * 8 + k); };
    const double a = 0.08 + 0.92 * u(3), r = std::exp(std::log(0.75) + u(4) * std::log(16.0 / 9.0));
    const int w = std::max(1, std::min(S, (int)std::lround(S * std::sqrt(a * r))));
    const int h = std::max(1, std::min(S, (int)std::lround(S * std::sqrt(a / r))));
    const int x0 = (int)std::floor(u(5) * (S - w + 1)), y0 = (int)std::floor(u(6) * (S - h + 1));
    const bool flip = u(0) < 0.5;
    AugmentBox box = augment_box(in, true, seed, step, b);
    EXPECT_EQ(box.w, w); EXPECT_EQ(box.h, h); EXPECT_EQ(box.x0, x0); EXPECT_EQ(box.y0, y0);
    EXPECT_EQ(box.flip, flip);
    for (int ch = 0; ch < 3; ++ch) {
      vector<double> plane((size_t)w * h), expect((size_t)O * O);
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
          const int xs = x0 + (flip ? w - 1 - x : x);
          plane[y * w + x] = (img[(((size_t)b * 3 + ch) * S + y0 + y) * S + xs] / 255.0 - 0.5) / 0.5;
        }
      resize_bilinear(plane.data(), h, w, expect.data(), O, O);  // checked by hand above
      EXPECT_TRUE(vit_test::allclose(&out[((size_t)b * 3 + ch) * O * O], expect.data(), expect.size(), 1e-12, 1e-12));
    }
  }
}

TEST(RefPreprocess, EvalResizesToModelSize) {
  vit::Config c = vit::preset("tiny");
  c.image_size = 48;
  vit::InputSpec in;
  const int B = 2, S = 32, O = 48;
  auto img = test_images(B, S);
  vector<float> out((size_t)B * 3 * O * O);
  preprocess(img.data(), B, in, c, false, 0, 0, out.data());
  for (int p = 0; p < B * 3; ++p) {
    vector<double> plane(S * S), expect(O * O);
    for (int i = 0; i < S * S; ++i) plane[i] = (img[(size_t)p * S * S + i] / 255.0 - 0.5) / 0.5;
    resize_bilinear(plane.data(), S, S, expect.data(), O, O);
    // float pipeline vs double: source coordinates carry ~32 * 6e-8 error, pixels span ~2
    EXPECT_TRUE(vit_test::allclose(&out[(size_t)p * O * O], expect.data(), expect.size(), 1e-5, 1e-5));
  }
}
