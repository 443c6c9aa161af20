// tests/test_finetune.cu — the ViT-B/16 fine-tuning path (issue 6) end to end, small:
//   - the torchvision-layout fixture model (a real torchvision VisionTransformer, image 32,
//     patch 8) fine-tuned by vit_train --preset vit-b16 --init ... --new-head at --image-size 48
//     (position embeddings resampled 4x4 -> 6x6; the 32 -> 48 resize makes the model input FP16)
//     for one epoch of two steps on a toy dataset: --device cuda (simt, or a GPU) gives the
//     metrics row and the parameters of --device cpu;
//   - --freeze-backbone on both devices: only final_ln.* and head.* move, everything else keeps
//     the loaded bits, even with AdamW weight decay;
//   - --preset vit-b16 defaults to batch 32 (the reference's), unless --batch-size is given;
//   - the memory plan: FP16 input saves exactly the input's half; the out-of-memory error;
//   - vit_predict --device cuda prints the probabilities of --device cpu.
// The torchvision logits themselves are checked against PyTorch's in tests/test_parity.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "common/image.h"
#include "common/params.h"
#include "common/philox.h"
#include "common/predict.h"
#include "common/train_state.h"
#include "common/weights.h"
#include "host/cuda_model.h"
#include "host/train.h"
#include "tests/test_fs.h"
#include "tests/test_util.h"
#include "tests/toy_cifar.h"
#include "tests/train_runner.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

using vit_test::fs::fixture;

namespace {

using Out = vit_test::TrainRun;
using vit_test::run_train;
const auto metrics = vit_test::metrics_rows;

const std::string TV = "torchvision_weights.safetensors";

// vit_train flags of the small fine-tuning run: 16 train images, batch 8 = 2 steps = 1 epoch.
std::vector<std::string> finetune_args(const std::string& device, const std::string& data,
                                       const std::string& out) {
  return {"--device", device, "--preset", "vit-b16", "--init", fixture(TV), "--new-head",
          "--image-size", "48", "--data", data, "--out", out, "--epochs", "1",
          "--batch-size", "8", "--accum-steps", "2", "--lr", "1e-3", "--augment", "crop-flip",
          "--seed", "3", "--no-tf32"};
}

// The weights vit_train starts from with those flags (head fresh, seed 3).
vit::LoadedWeights initial_weights() {
  vit::LoadOptions lo;
  lo.base = vit::preset("vit-b16");
  lo.given = {{"image_size", "48"}};
  lo.new_head = true;
  lo.head_seed = 3;
  return vit::load_weights(fixture(TV), lo);
}

bool trained_under_freeze(const std::string& name) {
  return name.rfind("head.", 0) == 0 || name.rfind("final_ln.", 0) == 0;
}

}  // namespace

TEST(Finetune, TorchvisionModelTwoStepsCudaMatchesCpu) {
  VIT_REQUIRE_GPU();
  vit_test::TempDir d;
  vit_test::make_toy_cifar(d / "data", 16, 8);
  const Out cpu = run_train(finetune_args("cpu", d / "data", d / "cpu"));
  ASSERT_EQ(cpu.rc, 0) << cpu.err;
  const Out gpu = run_train(finetune_args("cuda", d / "data", d / "cuda"));
  ASSERT_EQ(gpu.rc, 0) << gpu.err;
  // The torchvision file was recognised, its positions resampled, the input stored in FP16.
  EXPECT_NE(cpu.out.find("resampled 32 -> 48"), std::string::npos) << cpu.out;
  EXPECT_NE(gpu.out.find("FP16 input"), std::string::npos) << gpu.out;

  const auto a = metrics(d / "cpu/metrics.csv"), b = metrics(d / "cuda/metrics.csv");
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0][0], 1);
  EXPECT_NEAR(b[0][1], a[0][1], 1e-5 * a[0][1]) << "train loss";
  EXPECT_NEAR(b[0][3], a[0][3], 1e-5 * a[0][3]) << "test loss";
  EXPECT_NEAR(b[0][2], a[0][2], 1.0 / 16 + 1e-9) << "train acc (one image of 16 may flip a tie)";
  EXPECT_NEAR(b[0][4], a[0][4], 1.0 / 8 + 1e-9) << "test acc";
  EXPECT_DOUBLE_EQ(b[0][5], a[0][5]) << "lr";

  const vit::TrainingCheckpoint ca = vit::load_training_checkpoint(d / "cpu/last.safetensors", {});
  const vit::TrainingCheckpoint cb = vit::load_training_checkpoint(d / "cuda/last.safetensors", {});
  EXPECT_EQ(ca.state.step, 2);
  EXPECT_EQ(cb.state.step, 2);
  EXPECT_EQ(ca.config.image_size, 48);
  EXPECT_TRUE(ca.config.final_ln);
  EXPECT_EQ(ca.config.gelu, vit::Gelu::Erf);
  // Key bias: an exactly-zero gradient, so each model's Adam step there follows its own rounding
  // noise (up to lr per step, test_train_cuda.cu explains): atol lr * steps; the rest strictly.
  const vit::ParamLayout L(ca.config);
  std::vector<float> pa = ca.params, pb = cb.params;
  const int C = ca.config.hidden;
  for (const auto& blk : L.blocks)
    for (int i = C; i < 2 * C; ++i) {
      EXPECT_NEAR(pb[blk.qkv_b + i], pa[blk.qkv_b + i], 1e-3 * 2) << "key bias " << i;
      pa[blk.qkv_b + i] = pb[blk.qkv_b + i] = 0;
    }
  EXPECT_TRUE(vit_test::allclose(pb, pa, 1e-3, 1e-5));
  // And training moved the weights away from the loaded ones.
  const vit::LoadedWeights w0 = initial_weights();
  ASSERT_EQ(w0.params.size(), pa.size());
  EXPECT_FALSE(vit_test::allclose(pa, w0.params, 0, 1e-6));
}

TEST(Finetune, FreezeBackboneTrainsOnlyHeadAndFinalLn) {
  VIT_REQUIRE_GPU();
  vit_test::TempDir d;
  vit_test::make_toy_cifar(d / "data", 16, 8);
  const vit::LoadedWeights w0 = initial_weights();
  const vit::ParamLayout L(w0.config);
  ASSERT_TRUE(L.find("final_ln.weight"));
  std::vector<std::vector<float>> trained;
  for (const char* device : {"cpu", "cuda"}) {
    SCOPED_TRACE(device);
    std::vector<std::string> args = finetune_args(device, d / "data", d / device);
    for (const char* a : {"--freeze-backbone", "--optimizer", "adamw", "--weight-decay", "0.1"})
      args.push_back(a);
    const Out r = run_train(args);
    ASSERT_EQ(r.rc, 0) << r.err;
    // head (10 x 32 + 10) + final LN (2 x 32) of the 32-wide fixture model.
    EXPECT_NE(r.out.find("--freeze-backbone: training 394 of "), std::string::npos) << r.out;
    const vit::TrainingCheckpoint ck =
        vit::load_training_checkpoint(d / (std::string(device) + "/last.safetensors"), {});
    ASSERT_EQ(ck.params.size(), w0.params.size());
    EXPECT_EQ(ck.train.at("freeze_backbone"), "true");
    int moved = 0;
    for (const vit::ParamTensor& t : L.tensors) {
      const float* now = ck.params.data() + t.offset;
      const float* was = w0.params.data() + t.offset;
      if (trained_under_freeze(t.name)) {
        moved += !vit_test::allclose(now, was, t.numel, 0, 1e-6);
        EXPECT_FALSE(vit_test::allclose(now, was, t.numel, 0, 1e-6)) << t.name << " did not train";
      } else {
        EXPECT_EQ(std::memcmp(now, was, t.numel * sizeof(float)), 0) << t.name << " changed";
        // Their Adam moments stay 0: the optimizer never touched them.
        EXPECT_TRUE(vit_test::allclose(ck.adam_v.data() + t.offset, std::vector<float>(t.numel, 0).data(),
                                       t.numel, 0, 0)) << t.name;
      }
    }
    EXPECT_EQ(moved, 4);  // final_ln.weight/.bias, head.weight/.bias
    trained.push_back(ck.params);
  }
  EXPECT_TRUE(vit_test::allclose(trained[1], trained[0], 1e-4, 1e-6)) << "cuda vs cpu";
}

TEST(Finetune, VitB16PresetDefaultsToBatch32) {
  vit_test::TempDir d;
  vit_test::make_toy_cifar(d / "data", 40, 8);
  auto batch_of = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> args = {"--device", "cpu", "--preset", "vit-b16", "--init", fixture(TV),
                                     "--new-head", "--data", d / "data", "--out", d / out,
                                     "--epochs", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    const Out r = run_train(args);
    EXPECT_EQ(r.rc, 0) << r.err;
    nlohmann::json j;
    std::ifstream(d / (out + "/config.json")) >> j;
    return j["train"]["batch_size"].get<int>();  // a number in config.json
  };
  EXPECT_EQ(batch_of("default", {}), 32);
  EXPECT_EQ(batch_of("given", {"--batch-size", "16"}), 16);
  // Without --preset vit-b16 the default stays the basic reference's 64.
  const Out r = run_train({"--device", "cpu", "--preset", "tiny", "--data", d / "data", "--out",
                           d / "tiny", "--epochs", "0"});
  ASSERT_EQ(r.rc, 0) << r.err;
  nlohmann::json j;
  std::ifstream(d / "tiny/config.json") >> j;
  EXPECT_EQ(j["train"]["batch_size"], 64);
}

TEST(Finetune, MemoryPlanOfVitB16) {
  // The table of docs/finetune.md comes from here (printed); the assertions check the plan's
  // own arithmetic: FP16 input saves exactly half of the (B, 3, 224, 224) input buffer.
  vit::Config c = vit::preset("vit-b16");
  c.classes = 10;
  EXPECT_EQ(vit::ParamLayout(c).count(), 85806346u);  // vit_b_16 with a 10-class head
  for (int B : {8, 16, 32, 64}) {
    vit::ModelOptions o;
    o.max_batch = B;
    o.fp16_input = vit::Fp16Input::Off;
    const vit::CudaMemoryPlan f32 = vit::cuda_memory_plan(c, o);
    o.fp16_input = vit::Fp16Input::Auto;  // 32 -> 224: on
    const vit::CudaMemoryPlan f16 = vit::cuda_memory_plan(c, o);
    EXPECT_FALSE(f32.fp16_input);
    EXPECT_TRUE(f16.fp16_input);
    const size_t input = (size_t)B * 3 * 224 * 224;
    EXPECT_EQ(f32.input_bytes, input * 4);
    EXPECT_EQ(f16.input_bytes, input * 2);
    EXPECT_EQ(f32.activation_bytes - f16.activation_bytes, input * 2);
    EXPECT_EQ(f16.param_bytes, f32.param_bytes);
    printf("  vit-b16 224, micro-batch %2d: total %.2f GiB (FP16 input) / %.2f GiB (FP32 input); "
           "activations %.0f / %.0f MiB, input %.1f / %.1f MiB\n  %s\n",
           B, f16.total_bytes() / 1073741824.0, f32.total_bytes() / 1073741824.0,
           f16.activation_bytes / 1048576.0, f32.activation_bytes / 1048576.0,
           f16.input_bytes / 1048576.0, f32.input_bytes / 1048576.0, f16.describe().c_str());
  }
  // --precision bf16 at batch 32: the plan adds the BF16 weight copy (2 bytes per parameter
  // float) and stores ln1, qkv, att, ln2 and both FC1 activations in BF16, which are 87% of a
  // layer's saved bytes ((6C + 2M) of 8C + 2M per token), so the saved activations shrink to
  // ~56%; the FP32 rest (one layer's activation gradients, the im2col, scratch) is not halved.
  // Measured: 2388 of 3911 MiB (61%); asserted: between 50% and 65%.
  {
    vit::ModelOptions o;
    o.max_batch = 32;
    const vit::CudaMemoryPlan t = vit::cuda_memory_plan(c, o);
    o.precision = vit::Precision::Bf16;
    const vit::CudaMemoryPlan b = vit::cuda_memory_plan(c, o);
    EXPECT_EQ(b.param_bytes, t.param_bytes + vit::ParamLayout(c).total * 2);
    EXPECT_LT(b.activation_bytes, 0.65 * t.activation_bytes);
    EXPECT_GT(b.activation_bytes, 0.5 * t.activation_bytes);
    printf("  bf16, micro-batch 32: total %.2f GiB, activations %.0f MiB (tf32: %.0f MiB)\n  %s\n",
           b.total_bytes() / 1073741824.0, b.activation_bytes / 1048576.0,
           t.activation_bytes / 1048576.0, b.describe().c_str());
  }
  // No resize (image 224 from 224 sources, e.g. vit_predict): FP32.
  vit::ModelOptions o;
  o.input.src_size = 224;
  EXPECT_FALSE(vit::cuda_memory_plan(c, o).fp16_input);
}

TEST(Finetune, OutOfMemorySaysWhatWasAskedAndWhatToLower) {
  vit::CudaMemoryPlan p;
  p.max_batch = 32;
  p.param_bytes = (size_t)1 << 30;
  p.activation_bytes = (size_t)3 << 30;
  const std::string m = vit::out_of_memory_message(p, (size_t)2 << 30);
  for (const char* part : {"needs 4.00 GiB", "1.00 GiB parameters", "3.00 GiB activations",
                           "micro-batch of 32", "only 2.00 GiB is free", "--batch-size",
                           "--accum-steps"})
    EXPECT_NE(m.find(part), std::string::npos) << "'" << part << "' not in: " << m;
}

TEST(Finetune, OutOfMemoryBeforeAllocating) {
  VIT_REQUIRE_GPU();
  // Terabytes: more than any GPU (and simt's fake 80 GiB) has free. The model refuses in its
  // constructor, before the first cudaMalloc.
  vit::Config c = vit::preset("tiny");
  c.hidden = 65536;
  c.heads = 64;
  c.mlp = 4 * 65536;
  c.layers = 64;
  vit::ModelOptions o;
  o.max_batch = 8;
  try {
    vit::make_cuda_model(c, o);
    ADD_FAILURE() << "no error";
  } catch (const vit::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("of GPU memory"), std::string::npos) << m;
    EXPECT_NE(m.find("is free"), std::string::npos) << m;
    EXPECT_NE(m.find("--batch-size"), std::string::npos) << m;
  }
}

TEST(Finetune, PredictOnCudaGivesTheCpuProbabilities) {
  VIT_REQUIRE_GPU();
  vit_test::fs::TempDir d;
  vit::Config c = vit::preset("tiny");
  c.image_size = 16; c.patch_size = 4; c.hidden = 32; c.heads = 2; c.layers = 1; c.mlp = 32;  // head dim 16: the CUDA attention kernel's smallest
  c.classes = 10; c.dropout = c.attn_dropout = 0.0f;
  const vit::ParamLayout L(c);
  std::vector<float> params(L.total);
  vit::init_params(c, L, 5, params.data());
  for (size_t i = 0; i < params.size(); ++i) params[i] += vit::philox_uniform(9, 0, 0, i) - 0.5f;
  const std::string w = d.path("model.safetensors");
  vit::save_checkpoint(w, c, L, params.data());
  std::vector<std::string> images;
  for (int k = 0; k < 3; ++k) {
    const int side = k == 2 ? 40 : 16;  // one image resized on the host
    std::vector<uint8_t> px((size_t)side * side * 3);
    for (size_t i = 0; i < px.size(); ++i) px[i] = (uint8_t)(vit::philox_u32(k, 1, 2, i) & 255);
    images.push_back(d.path("img" + std::to_string(k) + ".png"));
    ASSERT_TRUE(stbi_write_png(images.back().c_str(), side, side, 3, px.data(), side * 3));
  }
  auto factory = [](const std::string& device, const vit::Config& cc, const vit::ModelOptions& o) {
    EXPECT_EQ(o.precision, vit::Precision::Fp32) << "vit_predict runs the CUDA model in full FP32";
    return device == "cuda" ? vit::make_cuda_model(cc, o) : vit::make_cpu_model(cc, o);
  };
  auto probs = [&](const std::string& device) {
    std::vector<std::string> args = {"--weights", w, "--json", "--device", device};
    args.insert(args.end(), images.begin(), images.end());
    std::ostringstream out, err;
    EXPECT_EQ(vit::predict_main(args, out, err, factory), 0) << err.str();
    std::vector<double> all;
    std::istringstream in(out.str());
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json j = nlohmann::json::parse(line);
      for (double p : j.at("probs")) all.push_back(p);
    }
    return all;
  };
  const std::vector<double> cpu = probs("cpu"), gpu = probs("cuda");
  ASSERT_EQ(cpu.size(), 30u);
  EXPECT_TRUE(vit_test::allclose(gpu, cpu, 1e-5, 1e-7));
}

// vit_predict --attention on --device cuda (the probabilities recomputed by attention_probs)
// draws the pictures of --device cpu: decoded back, every pixel within 1 of the CPU's (the maps
// agree to float rounding; a colour may round to the neighbouring integer).
TEST(Finetune, PredictAttentionOnCudaDrawsTheCpuPictures) {
  VIT_REQUIRE_GPU();
  vit_test::fs::TempDir d;
  vit::Config c = vit::preset("tiny");
  c.image_size = 16; c.patch_size = 4; c.hidden = 32; c.heads = 2; c.layers = 2; c.mlp = 32;
  c.classes = 10;
  const vit::ParamLayout L(c);
  std::vector<float> params(L.total);
  vit::init_params(c, L, 6, params.data());
  for (size_t i = 0; i < params.size(); ++i) params[i] += vit::philox_uniform(10, 0, 0, i) - 0.5f;
  const std::string w = d.path("model.safetensors");
  vit::save_checkpoint(w, c, L, params.data());
  std::vector<std::string> images;
  for (int k = 0; k < 2; ++k) {
    const int side = k == 1 ? 24 : 16;
    std::vector<uint8_t> px((size_t)side * side * 3);
    for (size_t i = 0; i < px.size(); ++i) px[i] = (uint8_t)(vit::philox_u32(k, 3, 2, i) & 255);
    images.push_back(d.path("img" + std::to_string(k) + ".png"));
    ASSERT_TRUE(stbi_write_png(images.back().c_str(), side, side, 3, px.data(), side * 3));
  }
  auto factory = [](const std::string& device, const vit::Config& cc, const vit::ModelOptions& o) {
    return device == "cuda" ? vit::make_cuda_model(cc, o) : vit::make_cpu_model(cc, o);
  };
  for (const char* device : {"cpu", "cuda"}) {
    std::vector<std::string> args = {"--weights", w, "--device", device, "--attention",
                                     d.path(device), "--attention-layer", "1"};
    args.insert(args.end(), images.begin(), images.end());
    std::ostringstream out, err;
    ASSERT_EQ(vit::predict_main(args, out, err, factory), 0) << err.str();
  }
  for (const char* pic : {"img0.rollout.png", "img0.layer1.png", "img1.rollout.png", "img1.layer1.png"}) {
    SCOPED_TRACE(pic);
    const vit::Image a = vit::load_image(d.path("cpu") + "/" + pic), b = vit::load_image(d.path("cuda") + "/" + pic);
    ASSERT_EQ(a.width, b.width);
    ASSERT_EQ(a.height, b.height);
    ASSERT_EQ(a.rgb.size(), b.rgb.size());
    int worst = 0;
    for (size_t i = 0; i < a.rgb.size(); ++i) worst = std::max(worst, std::abs(a.rgb[i] - b.rgb[i]));
    EXPECT_LE(worst, 1);
    EXPECT_NE(*std::min_element(a.rgb.begin(), a.rgb.end()), *std::max_element(a.rgb.begin(), a.rgb.end()));
  }
}
