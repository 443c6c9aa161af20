// tests/test_ref_philox.cpp — common/philox.h against the known-answer vectors of Random123
// (kat_vectors, philox4x32_10), and the uniform / dropout helpers built on it.
#include <gtest/gtest.h>

#include "common/philox.h"

TEST(RefPhilox, Random123KnownAnswers) {
  vit::Philox4 r = vit::philox4x32_10(0, 0, 0, 0, 0, 0);
  EXPECT_EQ(r.v[0], 0x6627e8d5u);
  EXPECT_EQ(r.v[1], 0xe169c58du);
  EXPECT_EQ(r.v[2], 0xbc57ac4cu);
  EXPECT_EQ(r.v[3], 0x9b00dbd8u);
  const uint32_t f = 0xffffffffu;
  r = vit::philox4x32_10(f, f, f, f, f, f);
  EXPECT_EQ(r.v[0], 0x408f276du);
  EXPECT_EQ(r.v[1], 0x41c83b0eu);
  EXPECT_EQ(r.v[2], 0xa20bc7c6u);
  EXPECT_EQ(r.v[3], 0x6d5451fdu);
  // Random123's third vector: counter = pi digits, key = more pi digits
  r = vit::philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(r.v[0], 0xd16cfe09u);
  EXPECT_EQ(r.v[1], 0x94fdccebu);
  EXPECT_EQ(r.v[2], 0x5001e420u);
  EXPECT_EQ(r.v[3], 0x24126ea1u);
}

TEST(RefPhilox, DrawLayout) {
  // counter = (index / 4, site, step lo, step hi), key = (seed lo, seed hi); word index % 4
  const uint64_t seed = 0x0123456789abcdefull, step = 0x1122334455ull;
  vit::Philox4 r = vit::philox4x32_10(5, 9, 0x22334455u, 0x11u, 0x89abcdefu, 0x01234567u);
  for (int k = 0; k < 4; ++k) EXPECT_EQ(vit::philox_u32(seed, 9, step, 20 + k), r.v[k]);
  EXPECT_EQ(vit::philox_uniform(seed, 9, step, 21), (float)(r.v[1] >> 8) / 16777216.0f);
  float lo = 1, hi = 0;
  for (int i = 0; i < 4096; ++i) {
    float u = vit::philox_uniform(1, 2, 3, i);
    lo = std::min(lo, u);
    hi = std::max(hi, u);
  }
  EXPECT_GE(lo, 0.0f);
  EXPECT_LT(hi, 1.0f);
  EXPECT_LT(lo, 0.01f);
  EXPECT_GT(hi, 0.99f);
}
