// tests/test_predict.cpp — vit_predict end to end (predict_main, what the program runs): PNGs
// written here with stb_image_write and a saved random model; the printed probabilities must be
// those of Model::infer on the same pixels, the JSON lines must have their keys, and every
// mistake is one "vit_predict: error:" line with exit status 1.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/attention_map.h"
#include "common/error.h"
#include "common/image.h"
#include "common/model.h"
#include "common/params.h"
#include "common/philox.h"
#include "common/predict.h"
#include "common/safetensors.h"
#include "common/weights.h"
#include "cpu/input.h"
#include "tests/test_fs.h"
#include "tests/test_util.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

using vit_test::fs::TempDir;

namespace {

vit::Config small_config() {
  vit::Config c = vit::preset("tiny");
  c.image_size = 16; c.patch_size = 4; c.hidden = 16; c.heads = 2; c.layers = 1; c.mlp = 32;
  c.classes = 10; c.dropout = c.attn_dropout = 0.0f;
  c.mean[0] = 0.4f; c.mean[1] = 0.5f; c.mean[2] = 0.6f;
  c.std[0] = 0.2f; c.std[1] = 0.25f; c.std[2] = 0.3f;
  return c;
}

// Random parameters large enough that the classes get clearly different probabilities.
std::vector<float> big_params(const vit::Config& c) {
  vit::ParamLayout l(c);
  std::vector<float> p(l.total);
  vit::init_params(c, l, 5, p.data());
  for (size_t i = 0; i < p.size(); ++i) p[i] += 1.0f * (vit::philox_uniform(9, 0, 0, i) - 0.5f);
  return p;
}

std::unique_ptr<vit::Model> cpu_factory(const std::string& device, const vit::Config& c,
                                        const vit::ModelOptions& o) {
  if (device != "cpu") throw vit::Error("--device " + device + ": not in this test");
  return vit::make_cpu_model(c, o);
}

struct PredictRun {
  int status;
  std::string out, err;
};
PredictRun predict(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  int st = vit::predict_main(args, out, err, cpu_factory);
  return {st, out.str(), err.str()};
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

// Pixels (h, w, n) interleaved, deterministic.
std::vector<uint8_t> pixels(int w, int h, int n, uint64_t seed) {
  std::vector<uint8_t> px((size_t)w * h * n);
  for (size_t i = 0; i < px.size(); ++i) px[i] = (uint8_t)(vit::philox_u32(seed, 0, 0, i) & 0xff);
  return px;
}

// The model input the test expects for RGB pixels (h, w, 3) of the model's size (no resize).
std::vector<float> expected_input(const std::vector<uint8_t>& rgb, const vit::Config& c) {
  const int S = c.image_size;
  std::vector<float> x((size_t)3 * S * S);
  for (int ch = 0; ch < 3; ++ch)
    for (int i = 0; i < S * S; ++i)
      x[(size_t)ch * S * S + i] = (rgb[(size_t)3 * i + ch] / 255.0f - c.mean[ch]) / c.std[ch];
  return x;
}

std::vector<double> softmax_of_infer(const vit::Config& c, const std::vector<float>& params,
                                     const std::vector<float>& x) {
  vit::ModelOptions o;
  o.max_batch = 1;
  o.fp16_input = vit::Fp16Input::Off;  // as predict_main: the float input is not rounded to half
  auto m = vit::make_cpu_model(c, o);
  m->set_params(params.data());
  std::vector<float> logits(c.classes);
  m->infer(x.data(), 1, logits.data());
  double mx = -1e30, sum = 0;
  for (float l : logits) mx = std::max(mx, (double)l);
  std::vector<double> p(c.classes);
  for (int i = 0; i < c.classes; ++i) sum += p[i] = std::exp(logits[i] - mx);
  for (double& q : p) q /= sum;
  return p;
}

}  // namespace

TEST(Predict, JsonMatchesModelInferOnTheSamePixels) {
  TempDir d;
  const vit::Config c = small_config();
  const std::vector<float> params = big_params(c);
  const std::string w = d.path("model.safetensors");
  vit::save_checkpoint(w, c, vit::ParamLayout(c), params.data());

  const std::vector<uint8_t> rgb = pixels(16, 16, 3, 1), grey = pixels(16, 16, 1, 2),
                             rgba = pixels(16, 16, 4, 3), big = pixels(40, 24, 3, 4);
  const std::string p_rgb = d.path("rgb.png"), p_grey = d.path("grey.png"), p_rgba = d.path("rgba.png"),
                    p_big = d.path("big.bmp");
  ASSERT_TRUE(stbi_write_png(p_rgb.c_str(), 16, 16, 3, rgb.data(), 16 * 3));
  ASSERT_TRUE(stbi_write_png(p_grey.c_str(), 16, 16, 1, grey.data(), 16));
  ASSERT_TRUE(stbi_write_png(p_rgba.c_str(), 16, 16, 4, rgba.data(), 16 * 4));
  ASSERT_TRUE(stbi_write_bmp(p_big.c_str(), 40, 24, 3, big.data()));

  PredictRun r = predict({"--weights", w, "--json", "--top-k", "3", p_rgb, p_grey, p_rgba, p_big});
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<std::string> ls = lines(r.out);
  ASSERT_EQ(ls.size(), 4u) << r.out;

  // What each image must have become: RGB as is, grey replicated, alpha dropped, and the
  // 40x24 image resized by the reference pipeline's bilinear resize.
  std::vector<uint8_t> grey3, rgba3;
  for (uint8_t g : grey) grey3.insert(grey3.end(), {g, g, g});
  for (size_t i = 0; i < rgba.size(); i += 4) rgba3.insert(rgba3.end(), {rgba[i], rgba[i + 1], rgba[i + 2]});
  std::vector<float> xbig((size_t)3 * 16 * 16);
  for (int ch = 0; ch < 3; ++ch) {
    std::vector<float> plane((size_t)40 * 24);
    for (size_t i = 0; i < plane.size(); ++i) plane[i] = big[3 * i + ch] / 255.0f;
    vit::ref::resize_bilinear(plane.data(), 24, 40, xbig.data() + (size_t)ch * 256, 16, 16);
    for (int i = 0; i < 256; ++i) xbig[(size_t)ch * 256 + i] = (xbig[(size_t)ch * 256 + i] - c.mean[ch]) / c.std[ch];
  }
  const std::vector<std::vector<float>> inputs = {expected_input(rgb, c), expected_input(grey3, c),
                                                  expected_input(rgba3, c), xbig};
  const std::vector<std::string> paths = {p_rgb, p_grey, p_rgba, p_big};
  const std::vector<std::string> cifar = {"airplane", "automobile", "bird", "cat", "deer",
                                          "dog", "frog", "horse", "ship", "truck"};
  for (size_t i = 0; i < 4; ++i) {
    SCOPED_TRACE(paths[i]);
    nlohmann::json j = nlohmann::json::parse(ls[i]);
    ASSERT_TRUE(j.contains("image") && j.contains("probs") && j.contains("top")) << ls[i];
    EXPECT_EQ(j["image"], paths[i]);
    std::vector<double> probs = j["probs"].get<std::vector<double>>();
    ASSERT_EQ(probs.size(), 10u);
    const std::vector<double> want = softmax_of_infer(c, params, inputs[i]);
    EXPECT_TRUE(vit_test::allclose(probs, want, 1e-4, 1e-6));
    int argmax = (int)(std::max_element(want.begin(), want.end()) - want.begin());
    ASSERT_EQ(j["top"].size(), 3u);
    EXPECT_EQ(j["top"][0]["class"], argmax);
    EXPECT_EQ(j["top"][0]["name"], cifar[argmax]);
    EXPECT_NEAR(j["top"][0]["prob"].get<double>(), want[argmax], 1e-5);
    EXPECT_GE(j["top"][0]["prob"].get<double>(), j["top"][1]["prob"].get<double>());
    EXPECT_GE(j["top"][1]["prob"].get<double>(), j["top"][2]["prob"].get<double>());
  }
  // The four inputs are different images: their probabilities must differ too.
  EXPECT_NE(lines(r.out)[0].substr(30), lines(r.out)[1].substr(30));

  // Plain text: the path, then top-5 lines "  xx.xx%  name".
  PredictRun t = predict({p_rgb, "--weights=" + w});
  ASSERT_EQ(t.status, 0) << t.err;
  const std::vector<std::string> tl = lines(t.out);
  ASSERT_EQ(tl.size(), 6u) << t.out;
  EXPECT_EQ(tl[0], p_rgb);
  const std::vector<double> want = softmax_of_infer(c, params, inputs[0]);
  const int argmax = (int)(std::max_element(want.begin(), want.end()) - want.begin());
  char first[64];
  snprintf(first, sizeof first, "  %6.2f%%  ", 100.0 * want[argmax]);
  EXPECT_EQ(tl[1], first + cifar[argmax]);
}

TEST(Predict, ErrorsAreOneLineAndExitOne) {
  TempDir d;
  const vit::Config c = small_config();
  const std::vector<float> params = big_params(c);
  const std::string w = d.path("model.safetensors"), png = d.path("a.png"), junk = d.path("junk.png");
  vit::save_checkpoint(w, c, vit::ParamLayout(c), params.data());
  const std::vector<uint8_t> rgb = pixels(16, 16, 3, 1);
  ASSERT_TRUE(stbi_write_png(png.c_str(), 16, 16, 3, rgb.data(), 48));
  vit_test::fs::write_file(junk, "not an image");

  auto check = [](const std::vector<std::string>& args, const std::string& part) {
    PredictRun r = predict(args);
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.out, "");  // nothing printed for the good images before the failure
    EXPECT_EQ(r.err.rfind("vit_predict: error: ", 0), 0u) << r.err;
    EXPECT_EQ(lines(r.err).size(), 1u) << r.err;
    EXPECT_NE(r.err.find(part), std::string::npos) << "'" << part << "' not in: " << r.err;
  };
  check({"--weights", w, png, junk}, junk);
  check({"--weights", w, png, d.path("missing.png")}, "missing.png");
  check({"--weights", d.path("nope.safetensors"), png}, "nope.safetensors");
  check({"--weights", junk, png}, junk);
  check({png}, "--weights FILE is required");
  check({"--weights", w}, "no images");
  check({"--weights", w, "--top-k", "0", png}, "--top-k");
  check({"--weights", w, "--top-k", "x", png}, "--top-k: 'x'");
  check({"--weights", w, "--colour", png}, "--colour");
  check({"--weights", w, "--device", "tpu", png}, "--device: 'tpu'");
  check({"--weights", w, "--device", "cuda", png}, "--device cuda");
  check({"--weights", w, "--hidden", "32", png}, "--hidden 16");

  PredictRun h = predict({"--help"});
  EXPECT_EQ(h.status, 0);
  EXPECT_NE(h.out.find("usage: vit_predict"), std::string::npos);
  EXPECT_NE(h.out.find("--top-k K"), std::string::npos);
  EXPECT_NE(h.out.find("--heads N"), std::string::npos);
}

// --attention DIR [--attention-layer L]: per image a rollout PNG of the model's size and, for
// the layer, a grid of one heat map per head; decoded back, they are the sizes promised, not
// constant, and the rollout picture is exactly the overlay of the CPU model's rollout.
TEST(Predict, AttentionPicturesAreWritten) {
  TempDir d;
  vit::Config c = small_config();  // 16x16, patch 4: a 4x4 grid, 2 heads, 1 layer
  c.layers = 2;
  const std::vector<float> params = big_params(c);
  const std::string w = d.path("model.safetensors");
  vit::save_checkpoint(w, c, vit::ParamLayout(c), params.data());
  const std::vector<uint8_t> a = pixels(16, 16, 3, 1), b = pixels(24, 20, 3, 2);
  const std::string pa = d.path("a.png"), pb = d.path("b.png"), out = d.path("maps/sub");
  ASSERT_TRUE(stbi_write_png(pa.c_str(), 16, 16, 3, a.data(), 16 * 3));
  ASSERT_TRUE(stbi_write_png(pb.c_str(), 24, 20, 3, b.data(), 24 * 3));

  PredictRun r = predict({"--weights", w, "--json", "--attention", out, "--attention-layer", "1", pa, pb});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(vit_test::fs::list_dir(out),
            (std::vector<std::string>{"a.layer1.png", "a.rollout.png", "b.layer1.png", "b.rollout.png"}));
  const std::vector<std::string> ls = lines(r.out);
  ASSERT_EQ(ls.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(ls[0])["attention"],
            (std::vector<std::string>{out + "/a.rollout.png", out + "/a.layer1.png"}));
  for (const char* name : {"a", "b"}) {
    SCOPED_TRACE(name);
    const vit::Image roll = vit::load_image(out + "/" + name + ".rollout.png");
    EXPECT_EQ(roll.width, 16);
    EXPECT_EQ(roll.height, 16);
    EXPECT_NE(*std::min_element(roll.rgb.begin(), roll.rgb.end()),
              *std::max_element(roll.rgb.begin(), roll.rgb.end()));
    const vit::Image grid = vit::load_image(out + "/" + name + ".layer1.png");
    EXPECT_EQ(grid.width, 2 * 16 + 3);  // 2 heads side by side, 1-pixel gaps (S/32 -> 1)
    EXPECT_EQ(grid.height, 16 + 2);
  }
  // a.png is of the model's size: its rollout picture is the overlay of the CPU model's
  // rollout of exactly this input over exactly these pixels.
  {
    vit::ModelOptions o;
    o.max_batch = 1;
    o.fp16_input = vit::Fp16Input::Off;
    auto m = vit::make_cpu_model(c, o);
    m->set_params(params.data());
    const std::vector<float> x = expected_input(a, c);
    std::vector<float> logits(c.classes), probs((size_t)c.layers * c.heads * c.tokens() * c.tokens());
    m->infer_attention(x.data(), 1, logits.data(), probs.data());
    std::vector<float> roll = vit::attention_rollout(probs.data(), c.layers, c.heads, c.tokens());
    vit::normalise01(roll.data(), roll.size());
    EXPECT_EQ(vit::load_image(out + "/a.rollout.png").rgb, vit::heat_overlay(a.data(), 16, roll.data(), 4));
  }
  // Plain text names the pictures under the image's classes.
  PredictRun t = predict({"--weights", w, "--top-k", "1", "--attention", out, pa});
  ASSERT_EQ(t.status, 0) << t.err;
  EXPECT_EQ(lines(t.out), (std::vector<std::string>{pa, lines(t.out)[1], "  attention: " + out + "/a.rollout.png"}));

  auto check = [](const std::vector<std::string>& args, const std::string& part) {
    PredictRun e = predict(args);
    EXPECT_EQ(e.status, 1);
    EXPECT_EQ(e.out, "");
    EXPECT_EQ(lines(e.err).size(), 1u) << e.err;
    EXPECT_NE(e.err.find(part), std::string::npos) << "'" << part << "' not in: " << e.err;
  };
  check({"--weights", w, "--attention-layer", "0", pa}, "--attention-layer needs --attention");
  check({"--weights", w, "--attention", out, "--attention-layer", "2", pa}, "the model has 2 layers");
  check({"--weights", w, "--attention", out, pa, pa}, "two images are named 'a'");
  vit_test::fs::write_file(d.path("file"), "x");
  check({"--weights", w, "--attention", d.path("file"), pa}, "cannot create the directory");
}

TEST(Predict, ClassNames) {
  EXPECT_EQ(vit::class_names(10, {})[3], "cat");
  EXPECT_EQ(vit::class_names(3, {})[2], "class 2");
  EXPECT_EQ(vit::class_names(2, {{"class_names", R"(["tench", "goldfish"])"}})[1], "goldfish");
  EXPECT_EQ(vit::class_names(3, {{"class_names", R"(["tench", "goldfish"])"}})[1], "class 1");
  EXPECT_EQ(vit::class_names(2, {{"class_names", "[not json"}})[0], "class 0");
}

// The bilinear resize behind vit_predict against PyTorch's F.interpolate(align_corners=False)
// (fixture from tools/make_fixtures.py: 8x8 -> 56x56), through image_to_input's plumbing.
TEST(Predict, ResizeMatchesPyTorchBilinear) {
  vit::SafeTensorsFile f(vit_test::fs::fixture("resize_bilinear.safetensors"));
  const std::vector<float> in = f.read("input"), want = f.read("output_f32");
  std::vector<float> got((size_t)3 * 56 * 56);
  for (int ch = 0; ch < 3; ++ch)
    vit::ref::resize_bilinear(in.data() + ch * 64, 8, 8, got.data() + (size_t)ch * 56 * 56, 56, 56);
  EXPECT_TRUE(vit_test::allclose(got, want, 1e-5, 1e-6));
}
