// tests/test_export.cpp — vit_export end to end (export_main, what the program runs): a vit.cu
// checkpoint (with Adam state and class names) written in each PyTorch layout loads back with
// identical weights and config, holds the layout's tensor names and nothing else, records its
// heads, and the printed Python names the model's sizes; a model whose GELU / LayerNorm eps /
// final LayerNorm contradict the layout is refused in one line and no file is written.
// (tools/check_export.py checks the same files against PyTorch itself.)
#include <gtest/gtest.h>

#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/export.h"
#include "common/model.h"
#include "common/params.h"
#include "common/philox.h"
#include "common/safetensors.h"
#include "common/weights.h"
#include "tests/test_fs.h"

namespace {

using vit::Config;
using vit::WeightFormat;
using vit_test::fs::TempDir;

struct ExportRun {
  int status;
  std::string out, err;
};
ExportRun run_export(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  const int st = vit::export_main(args, out, err);
  return {st, out.str(), err.str()};
}

// Odd sizes (3 heads, MLP 40, 7 classes, 20x20 in patches of 5) so a swapped dimension shows.
Config torchvision_like() {
  Config c = vit::preset("vit-b16");
  c.image_size = 20; c.patch_size = 5; c.classes = 7; c.hidden = 24; c.layers = 2; c.heads = 3;
  c.mlp = 40; c.dropout = 0.05f; c.attn_dropout = 0.0f;
  return c;  // erf GELU, eps 1e-6, final LN, ImageNet mean/std
}
Config tintn_like() {
  Config c = vit::preset("basic");
  c.image_size = 16; c.patch_size = 4; c.classes = 5; c.hidden = 32; c.layers = 3; c.heads = 2;
  c.mlp = 48; c.qkv_bias = false;
  return c;  // tanh GELU, eps 1e-5, no final LN, mean/std 0.5
}

std::vector<float> random_params(const Config& c, uint64_t seed) {
  const vit::ParamLayout l(c);
  std::vector<float> p(l.total, 0.0f);
  vit::init_params(c, l, seed, p.data());
  for (const auto& t : l.tensors)
    for (size_t i = 0; i < t.numel; ++i) p[t.offset + i] += vit::philox_uniform(seed, 7, 0, t.offset + i) - 0.5f;
  return p;
}

// A training checkpoint: parameters, Adam moments (not model weights: must not be exported),
// the step, class names.
std::string save(const TempDir& d, const Config& c, const std::vector<float>& p) {
  const std::string path = d.path("last.safetensors");
  const vit::ParamLayout l(c);
  std::vector<float> m(l.total, 0.25f);
  vit::save_checkpoint(path, c, l, p.data(), {{"adam.m", m}, {"adam.v", m}},
                       {{"step", "12"}, {"class_names", R"(["a","b","c","d","e","f","g"])"}});
  return path;
}

void expect_round_trip(const Config& c, WeightFormat f, const std::string& fmt) {
  TempDir d;
  const std::vector<float> p = random_params(c, 3);
  const std::string ckpt = save(d, c, p), out = d.path("export.safetensors");
  const ExportRun r = run_export({"--weights", ckpt, "--format", fmt, "-o", out});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");

  // Loads back without flags: the same model, bit-identical weights.
  const vit::LoadedWeights w = vit::load_weights(out, {});
  EXPECT_EQ(w.format, f);
  EXPECT_EQ(vit::config_to_metadata(w.config), vit::config_to_metadata(c));
  EXPECT_EQ(w.params, p);
  EXPECT_TRUE(w.extra.empty());

  // Exactly the layout's tensors (no Adam state), under its names, with its shapes.
  vit::SafeTensorsFile sf(out);
  std::set<std::string> want, got;
  for (const auto& m : vit::tensor_map(c, f)) {
    want.insert(m.name);
    const vit::StTensorInfo* t = sf.find(m.name);
    ASSERT_NE(t, nullptr) << m.name;
    EXPECT_EQ(t->shape, m.shape) << m.name;
  }
  for (const auto& t : sf.tensors()) got.insert(t.name);
  if (f == WeightFormat::Torchvision && !c.qkv_bias)  // torchvision always has in_proj_bias
    for (int l = 0; l < c.layers; ++l)
      want.insert("encoder.layers.encoder_layer_" + std::to_string(l) + ".self_attention.in_proj_bias");
  EXPECT_EQ(got, want);
  EXPECT_EQ(sf.metadata().at("heads"), std::to_string(c.heads));
  EXPECT_EQ(sf.metadata().at("format"), fmt);
  EXPECT_EQ(sf.metadata().at("class_names"), R"(["a","b","c","d","e","f","g"])");
  EXPECT_EQ(sf.metadata().count("step"), 0u) << "training state is not part of an export";
  EXPECT_EQ(vit_test::fs::list_dir(d.dir()), (std::vector<std::string>{"export.safetensors", "last.safetensors"}));

  // The Python lines name the model's sizes and the file.
  EXPECT_NE(r.out.find("load_state_dict(load_file(\"" + out + "\"))"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(vit::pytorch_loading_lines(f, c, out)), std::string::npos) << r.out;

  // Exporting the export again (a PyTorch file in, heads from its metadata) changes nothing.
  const std::string again = d.path("again.safetensors");
  ASSERT_EQ(run_export({"--weights", out, "--format", fmt, "--out", again}).status, 0);
  EXPECT_EQ(vit::load_weights(again, {}).params, p);
}

TEST(Export, TorchvisionRoundTrip) {
  Config c = torchvision_like();
  expect_round_trip(c, WeightFormat::Torchvision, "torchvision");
  const std::string py = vit::pytorch_loading_lines(WeightFormat::Torchvision, c, "m.safetensors");
  EXPECT_NE(py.find("torchvision.models.VisionTransformer(image_size=20, patch_size=5, num_layers=2, "
                    "num_heads=3, hidden_dim=24, mlp_dim=40, dropout=0.05, attention_dropout=0, "
                    "num_classes=7)"),
            std::string::npos) << py;
  EXPECT_NE(py.find("Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))"), std::string::npos) << py;
}

TEST(Export, TorchvisionRoundTripWithoutQkvBias) {
  Config c = torchvision_like();
  c.qkv_bias = false;  // written as zeros; loads back as a (zero) bias
  TempDir d;
  const std::vector<float> p = random_params(c, 4);
  const std::string ckpt = save(d, c, p), out = d.path("e.safetensors");
  ASSERT_EQ(run_export({"--weights", ckpt, "--format", "torchvision", "-o", out}).status, 0);
  const vit::LoadedWeights w = vit::load_weights(out, {});
  EXPECT_TRUE(w.config.qkv_bias);
  const vit::ParamLayout lw(w.config), lc(c);
  for (const auto& t : lc.tensors) {
    const auto* u = lw.find(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(std::vector<float>(w.params.begin() + u->offset, w.params.begin() + u->offset + u->numel),
              std::vector<float>(p.begin() + t.offset, p.begin() + t.offset + t.numel)) << t.name;
  }
  for (int l = 0; l < c.layers; ++l)
    for (size_t i = 0; i < (size_t)3 * c.hidden; ++i) ASSERT_EQ(w.params[lw.blocks[l].qkv_b + i], 0.0f);
}

TEST(Export, TintnRoundTrip) {
  Config c = tintn_like();
  expect_round_trip(c, WeightFormat::Tintn, "tintn");
  const std::string py = vit::pytorch_loading_lines(WeightFormat::Tintn, c, "m.safetensors");
  EXPECT_NE(py.find("\"num_attention_heads\": 2"), std::string::npos) << py;
  EXPECT_NE(py.find("\"qkv_bias\": False"), std::string::npos) << py;
  EXPECT_NE(py.find("ViTForClassfication(config)"), std::string::npos) << py;
}

// A bare PyTorch state dict (tintn's, no __metadata__) needs --heads; the export then records
// them, so it loads with no flags, holding the fixture's weights.
TEST(Export, BarePyTorchFileWithHeadsFlag) {
  TempDir d;
  const std::string fx = vit_test::fs::fixture("tintn_weights.safetensors"), out = d.path("t.safetensors");
  ASSERT_EQ(run_export({"--weights", fx, "--format", "tintn", "--heads", "3", "-o", out}).status, 0);
  vit::LoadOptions lo;
  lo.base = vit::preset("basic");
  lo.base.heads = 3;
  lo.given["heads"] = "3";
  const vit::LoadedWeights want = vit::load_weights(fx, lo), got = vit::load_weights(out, {});
  EXPECT_EQ(got.config.heads, 3);
  EXPECT_EQ(vit::config_to_metadata(got.config), vit::config_to_metadata(want.config));
  EXPECT_EQ(got.params, want.params);
  // Recorded: no shape tells the heads (hidden 48 splits into the basic preset's 4 as well).
  EXPECT_EQ(vit::SafeTensorsFile(out).metadata().at("heads"), "3");
}

TEST(Export, ContradictingFormatIsOneLineAndWritesNothing) {
  TempDir d;
  const Config b16 = torchvision_like(), basic = tintn_like();
  const std::string tv = d.path("tv.safetensors"), tn = d.path("tn.safetensors");
  vit::save_checkpoint(tv, b16, vit::ParamLayout(b16), random_params(b16, 1).data());
  vit::save_checkpoint(tn, basic, vit::ParamLayout(basic), random_params(basic, 2).data());
  auto check = [&](const std::vector<std::string>& args, const std::vector<std::string>& parts) {
    const ExportRun r = run_export(args);
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err.rfind("vit_export: error: ", 0), 0u) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;
    for (const auto& p : parts) EXPECT_NE(r.err.find(p), std::string::npos) << "'" << p << "' not in: " << r.err;
  };
  // A vit-b16 model is not tintn's, and a basic model is not torchvision's.
  check({"--weights", tv, "--format", "tintn", "-o", d.path("x.safetensors")},
        {"tintn", "tanh GELU, this model erf", "eps 1e-05, this model 1e-06", "no final LayerNorm",
         "export it as torchvision"});
  check({"--weights", tn, "--format", "torchvision", "-o", d.path("x.safetensors")},
        {"torchvision", "erf GELU, this model tanh", "a final LayerNorm, this model none", "export it as tintn"});
  EXPECT_EQ(vit_test::fs::list_dir(d.dir()), (std::vector<std::string>{"tn.safetensors", "tv.safetensors"}));
  // Flags.
  check({"--format", "tintn", "-o", d.path("x.safetensors")}, {"--weights FILE is required"});
  check({"--weights", tn, "-o", d.path("x.safetensors")}, {"--format"});
  check({"--weights", tn, "--format", "tintn"}, {"-o OUT.safetensors is required"});
  check({"--weights", tn, "--format", "onnx", "-o", d.path("x")}, {"--format: 'onnx'"});
  check({"--weights", tn, "--format", "tintn", "-o", tn}, {"is the input file"});
  check({"--weights", d.path("none.safetensors"), "--format", "tintn", "-o", d.path("x")}, {"none.safetensors"});
  check({"--weights", tn, "--format", "tintn", "-o", d.path("x"), "extra"}, {"unexpected argument 'extra'"});
  check({"--weights", tn, "--format", "tintn", "-o", d.path("x"), "--heads", "4"}, {"--heads"});
  EXPECT_EQ(vit_test::fs::list_dir(d.dir()), (std::vector<std::string>{"tn.safetensors", "tv.safetensors"}));
  EXPECT_EQ(run_export({"--help"}).status, 0);
}

}  // namespace
