// tests/test_fp16_input.cu — the FP16 model input of the vit-b16 path (ModelOptions::fp16_input):
//   - vit::ref::round_to_half (the CPU reference's float -> half -> float) against CUDA's own
//     __float2half_rn on normals, subnormals, ties, the overflow edge and specials: bitwise;
//   - resize_bilinear writing __half against PyTorch's F.interpolate(bilinear) 8 -> 56 cast to
//     F16 (tests/fixtures/resize_bilinear.safetensors "output_f16"): within 1 half ulp (the
//     float results differ in the last float bits, which may move a value across a rounding
//     boundary of half), and against round_to_half of the float reference likewise;
//   - input_forward writing __half against round_to_half(vit::ref::preprocess): within 1 half
//     ulp, every augment mode, 32 -> 56 and one image 32 -> 224;
//   - patch_embed_forward reading __half images against the reference on the same (rounded)
//     values: cols exactly, out rtol/atol 1e-5 (test_patch_embed.cu's tolerances).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <vector>

#include "common/config.h"
#include "common/philox.h"
#include "common/safetensors.h"
#include "cpu/input.h"
#include "cpu/patch_embed.h"
#include "kernels/input.cuh"
#include "kernels/patch_embed.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_fs.h"
#include "tests/test_util.h"

using std::vector;
using vit_test::DeviceBuffer;

namespace {

float cuda_round(float x) { return __half2float(__float2half_rn(x)); }

// The spacing of half values at |x| (x itself a half value): 2^(e - 10) for normals, 2^-24
// below 2^-14.
double half_ulp(double x) {
  x = std::fabs(x);
  if (x < 6.103515625e-05) return std::ldexp(1.0, -24);
  return std::ldexp(1.0, (int)std::floor(std::log2(x)) - 10);
}

// a and b (half values as floats) are equal or neighbours.
::testing::AssertionResult within_one_half_ulp(const vector<float>& a, const vector<float>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << a.size() << " vs " << b.size();
  size_t bad = 0, worst = 0, exact = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs((double)a[i] - b[i]);
    exact += d == 0;
    if (!(d <= half_ulp(std::max(std::fabs(a[i]), std::fabs(b[i]))))) {
      if (!bad) worst = i;
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess() << exact << " of " << a.size() << " exact";
  return ::testing::AssertionFailure() << bad << " of " << a.size() << " differ by more than one half ulp; first ["
                                       << worst << "] " << a[worst] << " vs " << b[worst];
}

vector<float> to_float(const vector<__half>& h) {
  vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = __half2float(h[i]);
  return f;
}

}  // namespace

TEST(Fp16Input, RoundToHalfIsCudasFloat2HalfRn) {
  vector<float> xs = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.99f, 65520.0f, -65520.0f, 1e6f,
                      6.103515625e-05f, 6.1e-05f, 5.96046448e-08f, 2.98023224e-08f,
                      2.98023254e-08f, 1e-10f, 1.00048828125f /* tie, rounds to even 1 */,
                      1.00146484375f /* tie, rounds up to 1.001953125 */, 2049.0f, 2051.0f,
                      std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()};
  // Plus many values across the whole range, normal and subnormal, and exact ties.
  for (int i = 0; i < 200000; ++i) {
    const float u = vit::philox_uniform(11, 0, 0, i), s = vit::philox_uniform(11, 0, 1, i);
    const float x = std::ldexp(1.0f + u, (int)(s * 44) - 28) * (i % 2 ? -1.0f : 1.0f);
    xs.push_back(x);
  }
  for (int e = -24; e < 16; ++e)
    for (int m = 0; m < 64; ++m)  // odd multiples of half an ulp: ties
      xs.push_back(std::ldexp(1.0f + (2 * m + 1) / 2048.0f, e));
  size_t bad = 0;
  for (float x : xs) {
    const float want = cuda_round(x), got = vit::ref::round_to_half(x);
    if (std::memcmp(&want, &got, 4) != 0 && bad++ < 5)
      ADD_FAILURE() << "round_to_half(" << x << ") = " << got << ", __float2half_rn: " << want;
  }
  EXPECT_EQ(bad, 0u);
  EXPECT_TRUE(std::isnan(vit::ref::round_to_half(std::nanf(""))));
}

TEST(Fp16Input, ResizeBilinearToHalfMatchesPyTorchFixture) {
  VIT_REQUIRE_GPU();
  const vit::SafeTensorsFile f(vit_test::fs::fixture("resize_bilinear.safetensors"));
  const vector<float> in = f.read("input"), expect = f.read("output_f16");
  ASSERT_EQ(in.size(), 3u * 8 * 8);
  ASSERT_EQ(expect.size(), 3u * 56 * 56);
  vector<float> ref(expect.size());
  for (int c = 0; c < 3; ++c)
    vit::ref::resize_bilinear(in.data() + c * 64, 8, 8, ref.data() + c * 56 * 56, 56, 56);
  vit::ref::round_to_half(ref.data(), ref.size());
  EXPECT_TRUE(within_one_half_ulp(ref, expect)) << "reference vs PyTorch";
  DeviceBuffer<float> d_in(in);
  DeviceBuffer<__half> d_out(expect.size());
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    vit::resize_bilinear(0, d_in, 3, 8, 8, (__half*)d_out, 56, 56);
    const vector<float> got = to_float(d_out.download());
    EXPECT_TRUE(within_one_half_ulp(got, expect)) << "kernel vs PyTorch";
    EXPECT_TRUE(within_one_half_ulp(got, ref)) << "kernel vs reference";
  });
}

TEST(Fp16Input, InputKernelToHalfMatchesReference) {
  VIT_REQUIRE_GPU();
  struct Case {
    const char* preset;
    int B, R;
    vit::Augment aug;
    bool train;
  };
  const Case cases[] = {{"basic", 4, 56, vit::Augment::None, true},
                        {"basic", 4, 56, vit::Augment::Flip, true},
                        {"basic", 4, 56, vit::Augment::CropFlip, true},
                        {"basic", 4, 56, vit::Augment::RrcFlip, true},
                        {"basic", 3, 56, vit::Augment::CropFlip, false},
                        {"vit-b16", 1, 224, vit::Augment::CropFlip, true}};
  for (const Case& k : cases) {
    SCOPED_TRACE(std::string(k.preset) + " R=" + std::to_string(k.R) + " augment " +
                 std::to_string((int)k.aug) + (k.train ? " train" : " eval"));
    vit::Config c = vit::preset(k.preset);
    c.image_size = k.R;
    vit::InputSpec in;
    in.augment = k.aug;
    vector<uint8_t> img((size_t)k.B * 3 * 32 * 32);
    for (size_t i = 0; i < img.size(); ++i) img[i] = (uint8_t)(vit::philox_u32(5, 6, 8, i) & 255);
    const size_t n = (size_t)k.B * 3 * k.R * k.R;
    vector<float> ref(n);
    vit::ref::preprocess(img.data(), k.B, in, c, k.train, 77, 4, ref.data());
    vit::ref::round_to_half(ref.data(), n);
    DeviceBuffer<uint8_t> d_img(img);
    DeviceBuffer<__half> d_out(n);
    vit_test::for_each_thread_order([&](const char* order) {
      SCOPED_TRACE(order);
      vit::input_forward(0, d_img, k.B, in, c, k.train, 77, 4, (__half*)d_out);
      EXPECT_TRUE(within_one_half_ulp(to_float(d_out.download()), ref));
    });
  }
}

TEST(Fp16Input, PatchEmbeddingReadsHalfImages) {
  VIT_REQUIRE_GPU();
  const int B = 2, Cin = 3, H = 24, p = 8, C = 20;
  const int G = H / p, N = G * G, T = N + 1, K = Cin * p * p;
  vector<float> x((size_t)B * Cin * H * H);
  for (size_t i = 0; i < x.size(); ++i) x[i] = vit::philox_uniform(21, 0, 0, i) * 5 - 2.5f;
  vit::ref::round_to_half(x.data(), x.size());  // the values an FP16 input holds
  vector<__half> xh(x.size());
  for (size_t i = 0; i < x.size(); ++i) xh[i] = __float2half_rn(x[i]);
  auto rnd = [](size_t n, uint64_t s, float scale) {
    vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = (vit::philox_uniform(s, 0, 0, i) - 0.5f) * scale;
    return v;
  };
  const vector<float> w = rnd((size_t)C * K, 22, 0.1f), b = rnd(C, 23, 1), cls = rnd(C, 24, 1),
                      pos = rnd((size_t)T * C, 25, 1);
  vector<float> rcols((size_t)B * N * K), rout((size_t)B * T * C);
  vit::ref::im2patch(x.data(), rcols.data(), B, Cin, H, p);
  vit::ref::patch_embed_forward(x.data(), w.data(), b.data(), cls.data(), pos.data(), rout.data(),
                                B, Cin, H, p, C);
  cublasHandle_t h;
  CUBLAS_CHECK(cublasCreate(&h));
  CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  DeviceBuffer<__half> d_x(xh);
  DeviceBuffer<float> d_w(w), d_b(b), d_cls(cls), d_pos(pos), d_cols(rcols.size()), d_out(rout.size());
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    vit::patch_embed_forward(h, 0, (const __half*)d_x, d_w, d_b, d_cls, d_pos, d_cols, d_out, B,
                             Cin, H, p, C);
    EXPECT_EQ(d_cols.download(), rcols) << "cols: half -> float is exact";
    EXPECT_TRUE(vit_test::allclose(d_out.download(), rout, 1e-5, 1e-5)) << "out";
  });
  CUBLAS_CHECK(cublasDestroy(h));
}
