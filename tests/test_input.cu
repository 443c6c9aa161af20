// tests/test_input.cu — kernels/input.cuh against vit::ref::preprocess (float): every augment
// mode (None, Flip, CropFlip, RrcFlip), train and eval, output size 32 from 32 (no resize except
// for random-resized crops), 32 -> 56, and 32 -> 224 for one image (vit-b16's normalisation);
// and sources of other sizes, as image folders store them (--store-size): 20 -> 16 (shrinking),
// 13 -> 16 (odd size), 48 -> 32 with crop padding 6.
// The crop boxes and flips must be the reference's exactly (an off-by-one box moves whole
// pixels: O(1) errors); the values are the same float formula, interpolated with FMAs on a GPU:
// rtol 1e-5, atol 1e-5 on values in about [-2.2, 2.7]. Two thread orders; bitwise across runs.
// resize_bilinear (the same interpolation on float planes) is checked against PyTorch's
// F.interpolate(bilinear, align_corners=False) 8 -> 56 from tests/fixtures/resize_bilinear.
// safetensors (tools/make_fixtures.py), rtol 1e-5, atol 1e-5.
#include <gtest/gtest.h>

#include <fstream>
#include <vector>

#include "common/config.h"
#include "common/philox.h"
#include "common/safetensors.h"
#include "cpu/input.h"
#include "kernels/input.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_util.h"

using vit_test::DeviceBuffer;
using std::vector;

namespace {

const double RTOL = 1e-5, ATOL = 1e-5;

vector<uint8_t> random_images(int B, int S) {
  vector<uint8_t> img((size_t)B * 3 * S * S);
  for (size_t i = 0; i < img.size(); ++i) img[i] = (uint8_t)(vit::philox_u32(5, 6, 7, i) & 255);
  return img;
}

const char* augment_name(vit::Augment a) {
  switch (a) {
    case vit::Augment::None: return "None";
    case vit::Augment::Flip: return "Flip";
    case vit::Augment::CropFlip: return "CropFlip";
    case vit::Augment::RrcFlip: return "RrcFlip";
  }
  return "?";
}

void check_input(const char* preset, int B, int R, vit::Augment aug, bool train, uint64_t step,
                 int S = 32, int pad = 4) {
  SCOPED_TRACE(std::string(preset) + " B=" + std::to_string(B) + " S=" + std::to_string(S) +
               " pad=" + std::to_string(pad) + " R=" + std::to_string(R) +
               " augment=" + augment_name(aug) + (train ? " train" : " eval") +
               " step=" + std::to_string(step));
  vit::Config c = vit::preset(preset);
  c.image_size = R;
  vit::InputSpec in;
  in.src_size = S;
  in.augment = aug;
  in.crop_pad = pad;
  const uint64_t seed = 1234;
  const vector<uint8_t> img = random_images(B, in.src_size);
  const size_t n = (size_t)B * 3 * R * R;
  vector<float> ref(n);
  vit::ref::preprocess(img.data(), B, in, c, train, seed, step, ref.data());

  DeviceBuffer<uint8_t> d_img(img);
  DeviceBuffer<float> d_out(n);
  vector<float> first;
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    for (int run = 0; run < 2; ++run) {
      vit::input_forward(0, d_img, B, in, c, train, seed, step, d_out);
      vector<float> out = d_out.download();
      EXPECT_TRUE(vit_test::allclose(out, ref, RTOL, ATOL));
      if (first.empty()) first = out;
      EXPECT_TRUE(vit_test::bitwise_equal(out, first));
    }
  });
}

const vit::Augment MODES[] = {vit::Augment::None, vit::Augment::Flip, vit::Augment::CropFlip,
                              vit::Augment::RrcFlip};

}  // namespace

TEST(InputKernel, Size32EveryMode) {
  VIT_REQUIRE_GPU();
  for (vit::Augment a : MODES) {
    check_input("basic", 8, 32, a, true, 0);
    check_input("basic", 8, 32, a, true, 17);
    check_input("basic", 8, 32, a, false, 0);
  }
}

TEST(InputKernel, Resize32To56EveryMode) {
  VIT_REQUIRE_GPU();
  for (vit::Augment a : MODES) {
    check_input("basic", 4, 56, a, true, 3);
    check_input("basic", 2, 56, a, false, 3);
  }
}

TEST(InputKernel, OtherSourceSizesEveryMode) {
  VIT_REQUIRE_GPU();
  for (vit::Augment a : MODES) {
    check_input("tiny", 4, 16, a, true, 2, /*S=*/20, /*pad=*/3);
    check_input("tiny", 3, 16, a, true, 9, /*S=*/13, /*pad=*/2);
    check_input("basic", 2, 32, a, true, 4, /*S=*/48, /*pad=*/6);
  }
  check_input("tiny", 4, 16, vit::Augment::None, false, 0, 20, 3);
}

TEST(InputKernel, Resize32To224) {
  VIT_REQUIRE_GPU();
  check_input("vit-b16", 1, 224, vit::Augment::CropFlip, true, 5);
  check_input("vit-b16", 1, 224, vit::Augment::None, false, 5);
}

TEST(InputKernel, AugmentationChangesTrainingInput) {
  VIT_REQUIRE_GPU();
  // Guards against a kernel that ignores `train`: with CropFlip over 8 images, the training
  // input differs from the evaluation input (the reference says which boxes are not identity).
  vit::InputSpec in;
  in.augment = vit::Augment::CropFlip;
  int moved = 0;
  for (int b = 0; b < 8; ++b) {
    const vit::ref::AugmentBox box = vit::ref::augment_box(in, true, 1234, 0, b);
    moved += box.flip || box.x0 != 0 || box.y0 != 0;
  }
  ASSERT_GT(moved, 0);
  const vit::Config c = vit::preset("basic");
  const vector<uint8_t> img = random_images(8, 32);
  DeviceBuffer<uint8_t> d_img(img);
  DeviceBuffer<float> d_train(8 * 3 * 32 * 32), d_eval(8 * 3 * 32 * 32);
  vit::input_forward(0, d_img, 8, in, c, true, 1234, 0, d_train);
  vit::input_forward(0, d_img, 8, in, c, false, 1234, 0, d_eval);
  EXPECT_FALSE(vit_test::bitwise_equal(d_train.download(), d_eval.download()));
}

TEST(InputKernel, ResizeBilinearMatchesPyTorchFixture) {
  VIT_REQUIRE_GPU();
  const std::string path = "tests/fixtures/resize_bilinear.safetensors";
  if (!std::ifstream(path).good()) GTEST_SKIP() << path << " not found (run from the repo root)";
  const vit::SafeTensorsFile f(path);
  const vector<float> in = f.read("input"), expect = f.read("output_f32");
  ASSERT_EQ(in.size(), 3u * 8 * 8);
  ASSERT_EQ(expect.size(), 3u * 56 * 56);
  DeviceBuffer<float> d_in(in), d_out(expect.size());
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    vit::resize_bilinear(0, d_in, 3, 8, 8, d_out, 56, 56);
    EXPECT_TRUE(vit_test::allclose(d_out.download(), expect, RTOL, ATOL));
  });
  // And against the reference, which the input pipeline test relies on.
  vector<float> ref(expect.size());
  for (int c = 0; c < 3; ++c)
    vit::ref::resize_bilinear(in.data() + c * 64, 8, 8, ref.data() + c * 56 * 56, 56, 56);
  EXPECT_TRUE(vit_test::allclose(ref, expect, RTOL, ATOL));
}

TEST(InputKernel, ResizeBilinearMatchesReference) {
  VIT_REQUIRE_GPU();
  // Up, down, non-square and identity.
  const int shapes[][4] = {{32, 32, 224, 224}, {17, 9, 5, 32}, {7, 7, 7, 7}, {30, 20, 32, 32}};
  for (const auto& s : shapes) {
    SCOPED_TRACE(std::to_string(s[0]) + "x" + std::to_string(s[1]) + " -> " + std::to_string(s[2]) +
                 "x" + std::to_string(s[3]));
    const int planes = 2;
    vector<float> src((size_t)planes * s[0] * s[1]);
    for (size_t i = 0; i < src.size(); ++i) src[i] = vit::philox_uniform(3, 4, 5, i) * 4 - 2;
    vector<float> ref((size_t)planes * s[2] * s[3]);
    for (int p = 0; p < planes; ++p)
      vit::ref::resize_bilinear(src.data() + (size_t)p * s[0] * s[1], s[0], s[1],
                                ref.data() + (size_t)p * s[2] * s[3], s[2], s[3]);
    DeviceBuffer<float> d_src(src), d_dst(ref.size());
    vit::resize_bilinear(0, d_src, planes, s[0], s[1], d_dst, s[2], s[3]);
    EXPECT_TRUE(vit_test::allclose(d_dst.download(), ref, RTOL, ATOL));
  }
}
