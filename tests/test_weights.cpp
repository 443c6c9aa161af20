// tests/test_weights.cpp — common/weights: our checkpoints round trip with no flags; the tintn
// and torchvision fixtures (written by PyTorch, tools/make_fixtures.py) load with the right
// config and the right tensors in the right places (both torchvision MLP namings); flags that
// contradict a file, missing / extra / misshapen tensors are one-line errors naming them;
// --new-head; bicubic position resampling against PyTorch's interpolate.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/error.h"
#include "common/model.h"
#include "common/params.h"
#include "common/philox.h"
#include "common/safetensors.h"
#include "common/weights.h"
#include "tests/test_fs.h"
#include "tests/test_util.h"

using vit::Config;
using vit::LoadOptions;
using vit::ParamLayout;
using vit::SafeTensorsFile;
using vit::WeightFormat;
using vit_test::fs::fixture;
using vit_test::fs::TempDir;

namespace {

// A small config that differs from every preset in every field.
Config odd_config() {
  Config c = vit::preset("tiny");
  c.image_size = 20; c.patch_size = 5; c.classes = 7; c.hidden = 24; c.layers = 2; c.heads = 3;
  c.mlp = 40; c.dropout = 0.05f; c.attn_dropout = 0.0f; c.init_std = 0.03f; c.qkv_bias = false;
  c.gelu = vit::Gelu::Erf; c.ln_eps = 1e-6f; c.final_ln = true;
  c.mean[0] = 0.1f; c.mean[1] = 0.2f; c.mean[2] = 0.3f;
  c.std[0] = 0.4f; c.std[1] = 0.5f; c.std[2] = 0.6f;
  return c;
}

std::vector<float> random_params(const Config& c, uint64_t seed) {
  ParamLayout l(c);
  std::vector<float> p(l.total, 0.0f);
  for (const auto& t : l.tensors)
    for (size_t i = 0; i < t.numel; ++i)
      p[t.offset + i] = vit::philox_uniform(seed, 99, 0, t.offset + i) * 2.0f - 1.0f;
  return p;
}

void expect_same_config(const Config& a, const Config& b) {
  EXPECT_EQ(vit::config_to_metadata(a), vit::config_to_metadata(b));
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const vit::Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    for (const auto& p : parts) EXPECT_NE(m.find(p), std::string::npos) << "'" << p << "' not in: " << m;
    return;
  }
  ADD_FAILURE() << "no vit::Error thrown";
}

// A copy of safetensors file `src` at `dst` (as F32), passed through `edit` first: it may
// rename, drop, add or reshape tensors and change the metadata.
struct Tensors {
  std::vector<std::string> order;
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> t;
  std::map<std::string, std::string> md;
  void rename(const std::string& from, const std::string& to) {
    t[to] = t.at(from);
    t.erase(from);
    for (auto& n : order) if (n == from) n = to;
  }
  void drop(const std::string& n) {
    t.erase(n);
    order.erase(std::find(order.begin(), order.end(), n));
  }
  void add(const std::string& n, std::vector<int64_t> shape) {
    size_t k = 1;
    for (auto d : shape) k *= (size_t)d;
    t[n] = {shape, std::vector<float>(k, 0.5f)};
    order.push_back(n);
  }
};
void rewrite(const std::string& src, const std::string& dst, const std::function<void(Tensors&)>& edit) {
  SafeTensorsFile f(src);
  Tensors ts;
  ts.md = f.metadata();
  for (const auto& i : f.tensors()) {
    ts.order.push_back(i.name);
    ts.t[i.name] = {i.shape, f.read(i.name)};
  }
  edit(ts);
  std::vector<vit::StTensorOut> out;
  for (const auto& n : ts.order) out.push_back({n, ts.t.at(n).first, ts.t.at(n).second.data()});
  vit::write_safetensors(dst, out, ts.md);
}

LoadOptions with_flags(std::map<std::string, std::string> given, const std::string& preset = "basic") {
  LoadOptions o;
  o.given = given;
  o.base = vit::config_from_metadata(given, vit::preset(preset));  // what cli::ModelFlags builds
  return o;
}

// The flat parameter named `ours` equals file tensor `theirs` element for element.
void expect_tensor(const vit::LoadedWeights& w, const std::string& ours, const SafeTensorsFile& f,
                   const std::string& theirs) {
  ParamLayout l(w.config);
  const vit::ParamTensor* t = l.find(ours);
  ASSERT_NE(t, nullptr) << ours;
  std::vector<float> ref = f.read(theirs);
  ASSERT_EQ(ref.size(), t->numel) << ours << " vs " << theirs;
  EXPECT_TRUE(vit_test::allclose(w.params.data() + t->offset, ref.data(), ref.size(), 0, 0))
      << ours << " vs " << theirs;
}

}  // namespace

TEST(Weights, OurCheckpointRoundTripsWithNoFlags) {
  TempDir d;
  const Config c = odd_config();
  const ParamLayout l(c);
  const std::vector<float> p = random_params(c, 1);
  std::vector<float> m(l.total, 0.25f), v(l.total, 0.125f);
  const std::string path = d.path("ckpt.safetensors");
  vit::save_checkpoint(path, c, l, p.data(), {{"adam.m", m}, {"adam.v", v}},
                       {{"step", "1234"}, {"hidden", "999"}});
  vit::LoadedWeights w = vit::load_weights(path, {});  // base = basic preset: nothing of it used
  EXPECT_EQ(w.format, WeightFormat::Ours);
  expect_same_config(w.config, c);
  expect_same_config(w.file_config, c);
  EXPECT_EQ(w.params, p);  // bit-exact, padding included (zeros)
  EXPECT_EQ(w.extra.at("adam.m"), m);
  EXPECT_EQ(w.extra.at("adam.v"), v);
  EXPECT_EQ(w.metadata.at("step"), "1234");
  EXPECT_EQ(w.metadata.at("hidden"), "24");  // the config wins over extra metadata
  EXPECT_FALSE(w.head_replaced);
  EXPECT_FALSE(w.pos_resampled);

  // Flags that do not change the architecture apply; flags that agree are fine.
  vit::LoadedWeights w2 = vit::load_weights(path, with_flags({{"dropout", "0.3"}, {"hidden", "24"},
                                                              {"mean", "0,0,0"}}));
  EXPECT_FLOAT_EQ(w2.config.dropout, 0.3f);
  EXPECT_EQ(w2.config.mean[1], 0.0f);
  EXPECT_EQ(w2.params, p);
}

TEST(Weights, FlagsThatContradictTheFile) {
  TempDir d;
  const Config c = odd_config();
  const std::vector<float> p = random_params(c, 2);
  const std::string path = d.path("c.safetensors");
  vit::save_checkpoint(path, c, ParamLayout(c), p.data());
  auto load = [&](std::map<std::string, std::string> g) { return [=] { vit::load_weights(path, with_flags(g)); }; };
  expect_error(load({{"hidden", "32"}}), {path, "--hidden 24", "--hidden 32"});
  expect_error(load({{"layers", "3"}}), {path, "--layers"});
  expect_error(load({{"heads", "4"}}), {path, "--heads 3", "--heads 4"});
  expect_error(load({{"mlp", "41"}}), {path, "--mlp"});
  expect_error(load({{"gelu", "tanh"}}), {path, "--gelu erf"});
  expect_error(load({{"final_ln", "false"}}), {path, "--no-final-ln"});
  expect_error(load({{"qkv_bias", "true"}}), {path, "--qkv-bias"});
  expect_error(load({{"patch_size", "4"}}), {path, "patch size is 5", "--patch-size 4"});
  expect_error(load({{"classes", "10"}}), {path, "7 classes", "--new-head"});
  expect_error(load({{"image_size", "22"}}), {path, "not divisible"});
}

TEST(Weights, NewHeadKeepsEverythingElse) {
  TempDir d;
  const Config c = odd_config();
  const std::vector<float> p = random_params(c, 3);
  const std::string path = d.path("c.safetensors");
  vit::save_checkpoint(path, c, ParamLayout(c), p.data());
  LoadOptions o = with_flags({{"classes", "10"}});
  o.new_head = true;
  o.head_seed = 77;
  vit::LoadedWeights w = vit::load_weights(path, o);
  EXPECT_TRUE(w.head_replaced);
  EXPECT_EQ(w.config.classes, 10);
  EXPECT_EQ(w.file_config.classes, 7);
  const ParamLayout lo(w.config), li(c);
  ASSERT_EQ(w.params.size(), lo.total);
  // The head is the one a fresh model of the new config starts with ...
  std::vector<float> fresh(lo.total);
  vit::init_params(w.config, lo, 77, fresh.data());
  for (const char* n : {"head.weight", "head.bias"}) {
    const auto* t = lo.find(n);
    EXPECT_TRUE(vit_test::allclose(w.params.data() + t->offset, fresh.data() + t->offset, t->numel, 0, 0)) << n;
  }
  double ss = 0;
  for (size_t i = 0; i < (size_t)10 * c.hidden; ++i) ss += (double)w.params[lo.head_w + i] * w.params[lo.head_w + i];
  EXPECT_NEAR(std::sqrt(ss / (10.0 * c.hidden)), c.init_std, 0.3 * c.init_std);  // N(0, init_std)
  // ... and every other tensor is the file's.
  for (const auto& t : li.tensors) {
    if (t.name.rfind("head.", 0) == 0) continue;
    const auto* u = lo.find(t.name);
    EXPECT_TRUE(vit_test::allclose(w.params.data() + u->offset, p.data() + t.offset, t.numel, 0, 0)) << t.name;
  }
  // Without --classes, --new-head takes the preset's class count (vit_train's "--preset vit-b16
  // --init FILE --new-head").
  LoadOptions o2 = with_flags({}, "vit-b16");
  o2.new_head = true;
  EXPECT_EQ(vit::load_weights(path, o2).config.classes, 10);
}

TEST(Weights, ExportToPyTorchLayoutsAndBack) {
  TempDir d;
  Config c = odd_config();
  c.qkv_bias = true;
  const std::vector<float> p = random_params(c, 4);
  const std::string tv = d.path("tv.safetensors");
  vit::export_weights(tv, WeightFormat::Torchvision, c, p.data());
  vit::LoadedWeights w = vit::load_weights(tv, {});
  EXPECT_EQ(w.format, WeightFormat::Torchvision);
  expect_same_config(w.config, c);
  EXPECT_EQ(w.params, p);
  SafeTensorsFile f(tv);
  EXPECT_EQ(f.at("conv_proj.weight").shape, (std::vector<int64_t>{24, 3, 5, 5}));
  EXPECT_EQ(f.at("class_token").shape, (std::vector<int64_t>{1, 1, 24}));
  EXPECT_EQ(f.at("encoder.pos_embedding").shape, (std::vector<int64_t>{1, 17, 24}));
  EXPECT_EQ(f.metadata().at("heads"), "3");

  // Each PyTorch original fixes GELU, LayerNorm eps and the final LayerNorm in its code: a
  // torchvision-like model (erf, 1e-6, final LN) is not a tintn model, and the one line says
  // every difference and the layout that fits.
  expect_error([&] { vit::export_weights(d.path("x.safetensors"), WeightFormat::Tintn, c, p.data()); },
               {"x.safetensors", "tintn", "tanh GELU, this model erf", "LayerNorm eps 1e-05, this model 1e-06",
                "no final LayerNorm, this model has one", "export it as torchvision"});
  c.final_ln = false;
  c.qkv_bias = false;
  const std::vector<float> q = random_params(c, 5);
  expect_error([&] { vit::export_weights(d.path("x.safetensors"), WeightFormat::Torchvision, c, q.data()); },
               {"a final LayerNorm, this model none", "neither PyTorch layout fits"});
  expect_error([&] { vit::export_weights(d.path("x.safetensors"), WeightFormat::Tintn, c, q.data()); },
               {"tanh GELU"});
  EXPECT_TRUE(vit_test::fs::list_dir(d.dir()) == std::vector<std::string>{"tv.safetensors"})
      << "a refused export writes nothing";
  c.gelu = vit::Gelu::Tanh;  // now tintn's architecture (eps 1e-5 still missing)
  EXPECT_NE(vit::export_problem(WeightFormat::Tintn, c).find("eps"), std::string::npos);
  c.ln_eps = 1e-5f;
  EXPECT_EQ(vit::export_problem(WeightFormat::Tintn, c), "");
  const std::vector<float> q2 = random_params(c, 5);
  const std::string tn = d.path("tintn.safetensors");
  vit::export_weights(tn, WeightFormat::Tintn, c, q2.data());
  vit::LoadedWeights w2 = vit::load_weights(tn, {});
  EXPECT_EQ(w2.format, WeightFormat::Tintn);
  expect_same_config(w2.config, c);  // heads, dropout, mean/std: from the metadata
  EXPECT_EQ(w2.params, q2);
  EXPECT_EQ(SafeTensorsFile(tn).find("encoder.blocks.0.attention.qkv_projection.bias"), nullptr);
}

// The tintn fixture is a state dict of PyTorch's ViTForClassfication with no metadata: sizes
// from the shapes, constants from the layout, heads from the flags.
TEST(Weights, LoadsTintnFixture) {
  const std::string path = fixture("tintn_weights.safetensors");
  vit::LoadedWeights w = vit::load_weights(path, with_flags({{"heads", "3"}}));
  EXPECT_EQ(w.format, WeightFormat::Tintn);
  const Config& c = w.config;
  EXPECT_EQ(c.image_size, 32);
  EXPECT_EQ(c.patch_size, 4);
  EXPECT_EQ(c.hidden, 48);
  EXPECT_EQ(c.layers, 2);
  EXPECT_EQ(c.heads, 3);
  EXPECT_EQ(c.mlp, 64);
  EXPECT_EQ(c.classes, 10);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.final_ln);
  EXPECT_EQ(c.gelu, vit::Gelu::Tanh);
  EXPECT_FLOAT_EQ(c.ln_eps, 1e-5f);
  EXPECT_EQ(c.mean[0], 0.5f);
  EXPECT_EQ(c.std[2], 0.5f);
  EXPECT_FLOAT_EQ(c.dropout, vit::preset("basic").dropout);  // not in the file: the preset's
  SafeTensorsFile f(path);
  // Spelled out by hand (not through tensor_map): where each PyTorch tensor must land.
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"patch_embed.weight", "embedding.patch_embeddings.projection.weight"},
      {"patch_embed.bias", "embedding.patch_embeddings.projection.bias"},
      {"cls_token", "embedding.cls_token"},
      {"pos_embed", "embedding.position_embeddings"},
      {"blocks.0.ln1.weight", "encoder.blocks.0.layernorm_1.weight"},
      {"blocks.0.attn.qkv.weight", "encoder.blocks.0.attention.qkv_projection.weight"},
      {"blocks.0.attn.qkv.bias", "encoder.blocks.0.attention.qkv_projection.bias"},
      {"blocks.1.attn.proj.weight", "encoder.blocks.1.attention.output_projection.weight"},
      {"blocks.1.attn.proj.bias", "encoder.blocks.1.attention.output_projection.bias"},
      {"blocks.1.ln2.bias", "encoder.blocks.1.layernorm_2.bias"},
      {"blocks.1.mlp.fc1.weight", "encoder.blocks.1.mlp.dense_1.weight"},
      {"blocks.1.mlp.fc2.bias", "encoder.blocks.1.mlp.dense_2.bias"},
      {"head.weight", "classifier.weight"},
      {"head.bias", "classifier.bias"}};
  for (const auto& [ours, theirs] : pairs) expect_tensor(w, ours, f, theirs);
  // The conv weight [H,3,p,p] is our (H, 3*p*p) in (c, ky, kx) order: element (h=5, c=2, ky=1,
  // kx=3) of the conv is column 2*16 + 1*4 + 3 of row 5.
  std::vector<float> conv = f.read("embedding.patch_embeddings.projection.weight");
  EXPECT_EQ(w.params[ParamLayout(c).patch_w + 5 * 48 + 2 * 16 + 1 * 4 + 3],
            conv[((5 * 3 + 2) * 4 + 1) * 4 + 3]);

  // Without --heads the number comes from the preset (basic: 4 heads; 48 / 4 works).
  EXPECT_EQ(vit::load_weights(path, with_flags({})).config.heads, 4);
  // A flag that contradicts the tensors fails; one that is impossible for the file says why.
  expect_error([&] { vit::load_weights(path, with_flags({{"hidden", "256"}})); }, {path, "--hidden 48"});
  expect_error([&] { vit::load_weights(path, with_flags({{"heads", "5"}})); },
               {path, "not divisible by --heads 5", "pass --heads"});
  expect_error([&] { vit::load_weights(path, with_flags({{"final_ln", "true"}})); }, {path, "--final-ln"});
}

TEST(Weights, LoadsTorchvisionFixtureInBothMlpNamings) {
  TempDir d;
  const std::string path = fixture("torchvision_weights.safetensors");
  // No flags at all; the preset given (basic: 4 heads, tanh, 1e-5, mean 0.5) must not leak in.
  vit::LoadedWeights w = vit::load_weights(path, with_flags({}));
  EXPECT_EQ(w.format, WeightFormat::Torchvision);
  const Config& c = w.config;
  EXPECT_EQ(c.image_size, 32);
  EXPECT_EQ(c.patch_size, 8);
  EXPECT_EQ(c.hidden, 32);
  EXPECT_EQ(c.layers, 2);
  EXPECT_EQ(c.heads, 2);  // from __metadata__
  EXPECT_EQ(c.mlp, 64);
  EXPECT_EQ(c.classes, 10);
  EXPECT_TRUE(c.final_ln);
  EXPECT_EQ(c.gelu, vit::Gelu::Erf);
  EXPECT_FLOAT_EQ(c.ln_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c.mean[0], 0.485f);
  EXPECT_FLOAT_EQ(c.std[2], 0.225f);
  SafeTensorsFile f(path);
  const std::string b = "encoder.layers.encoder_layer_1.";
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"patch_embed.weight", "conv_proj.weight"},
      {"cls_token", "class_token"},
      {"pos_embed", "encoder.pos_embedding"},
      {"blocks.1.ln1.weight", b + "ln_1.weight"},
      {"blocks.1.attn.qkv.weight", b + "self_attention.in_proj_weight"},
      {"blocks.1.attn.qkv.bias", b + "self_attention.in_proj_bias"},
      {"blocks.1.attn.proj.weight", b + "self_attention.out_proj.weight"},
      {"blocks.1.ln2.weight", b + "ln_2.weight"},
      {"blocks.1.mlp.fc1.weight", b + "mlp.0.weight"},
      {"blocks.1.mlp.fc1.bias", b + "mlp.0.bias"},
      {"blocks.1.mlp.fc2.weight", b + "mlp.3.weight"},
      {"blocks.1.mlp.fc2.bias", b + "mlp.3.bias"},
      {"final_ln.weight", "encoder.ln.weight"},
      {"final_ln.bias", "encoder.ln.bias"},
      {"head.weight", "heads.head.weight"},
      {"head.bias", "heads.head.bias"}};
  for (const auto& [ours, theirs] : pairs) expect_tensor(w, ours, f, theirs);
  EXPECT_NE(w.summary().find("torchvision layout"), std::string::npos) << w.summary();

  // Older torchvision's mlp.linear_1 / mlp.linear_2 names, and no metadata (heads by flag).
  const std::string old = d.path("old.safetensors");
  rewrite(path, old, [](Tensors& t) {
    for (int l = 0; l < 2; ++l)
      for (const char* s : {"weight", "bias"}) {
        const std::string p = "encoder.layers.encoder_layer_" + std::to_string(l) + ".mlp.";
        t.rename(p + "0." + s, p + "linear_1." + s);
        t.rename(p + "3." + s, p + "linear_2." + s);
      }
    t.md.clear();
  });
  vit::LoadedWeights w2 = vit::load_weights(old, with_flags({{"heads", "2"}}));
  Config a = w2.config;
  EXPECT_FLOAT_EQ(a.dropout, 0.1f);  // not in the file any more: the preset's
  a.dropout = a.attn_dropout = 0.0f;
  expect_same_config(a, w.config);
  EXPECT_EQ(w2.params, w.params);
}

TEST(Weights, BadFilesNameTheTensor) {
  TempDir d;
  const std::string src = fixture("torchvision_weights.safetensors");
  int k = 0;
  auto check = [&](const std::function<void(Tensors&)>& edit, std::vector<std::string> parts) {
    const std::string p = d.path("bad" + std::to_string(k++) + ".safetensors");
    rewrite(src, p, edit);
    parts.push_back(p);
    expect_error([&] { vit::load_weights(p, with_flags({})); }, parts);
  };
  const std::string b0 = "encoder.layers.encoder_layer_0.";
  check([&](Tensors& t) { t.drop(b0 + "ln_2.bias"); }, {"missing tensor '" + b0 + "ln_2.bias'"});
  check([&](Tensors& t) { t.drop("heads.head.bias"); }, {"missing tensor 'heads.head.bias'"});
  check([&](Tensors& t) { t.add("heads.pre_logits.weight", {32, 32}); },
        {"unexpected tensor 'heads.pre_logits.weight'"});
  check([&](Tensors& t) { t.drop(b0 + "ln_1.weight"); },  // layer 0 gone: no blocks found
        {"'" + b0 + "ln_1.weight'"});
  check([&](Tensors& t) { t.t[b0 + "mlp.3.weight"].first = {32, 32}; t.t[b0 + "mlp.3.weight"].second.resize(1024); },
        {"tensor '" + b0 + "mlp.3.weight' has shape [32, 32], expected [32, 64]"});
  check([&](Tensors& t) { t.t["encoder.pos_embedding"].first = {1, 16, 32}; t.t["encoder.pos_embedding"].second.resize(512); },
        {"'encoder.pos_embedding'", "16 rows"});
  check([&](Tensors& t) { t.t["class_token"].first = {32}; }, {"'class_token'", "3 dimensions"});
  check([&](Tensors& t) { t.md["hidden"] = "64"; }, {"__metadata__ says hidden = 64", "32"});
  check([&](Tensors& t) { t.md["heads"] = "x"; }, {"'heads'", "not an integer"});
  check([&](Tensors& t) { t.rename("class_token", "cls"); }, {"not a ViT weight file"});
  // The file's heads (metadata) against a contradicting flag.
  expect_error([&] { vit::load_weights(src, with_flags({{"heads", "4"}})); }, {src, "--heads 2", "--heads 4"});
  // Not a safetensors file at all.
  const std::string junk = d.path("junk.safetensors");
  vit_test::fs::write_file(junk, "this is not a checkpoint");
  expect_error([&] { vit::load_weights(junk, {}); }, {junk});
}

TEST(Weights, BicubicResampleMatchesPyTorch) {
  SafeTensorsFile f(fixture("pos_bicubic.safetensors"));
  const std::vector<float> pos = f.read("pos");  // (1, 17, 8): CLS + 4x4
  for (int g : {6, 7, 3}) {
    const std::vector<float> ref = f.read("to" + std::to_string(g));
    const std::vector<float> got = vit::resample_pos_embed(pos.data(), 4, g, 8);
    EXPECT_TRUE(vit_test::allclose(got, ref, 1e-5, 1e-6)) << "4x4 -> " << g << "x" << g;
  }
  // Same size: the identity.
  const std::vector<float> same = vit::resample_pos_embed(pos.data(), 4, 4, 8);
  EXPECT_TRUE(vit_test::allclose(same, pos, 0, 1e-7));
}

TEST(Weights, ImageSizeFlagResamplesPositions) {
  const std::string path = fixture("torchvision_weights.safetensors");
  vit::LoadedWeights w0 = vit::load_weights(path, with_flags({}));
  vit::LoadedWeights w = vit::load_weights(path, with_flags({{"image_size", "48"}}));
  EXPECT_TRUE(w.pos_resampled);
  EXPECT_EQ(w.config.image_size, 48);
  EXPECT_EQ(w.file_config.image_size, 32);
  EXPECT_NE(w.summary().find("resampled 32 -> 48"), std::string::npos) << w.summary();
  const ParamLayout l0(w0.config), l(w.config);
  ASSERT_EQ(l.find("pos_embed")->numel, (size_t)(1 + 36) * 32);
  const std::vector<float> want = vit::resample_pos_embed(w0.params.data() + l0.pos, 4, 6, 32);
  EXPECT_TRUE(vit_test::allclose(w.params.data() + l.pos, want.data(), want.size(), 0, 0));
  for (const auto& t : l0.tensors) {
    if (t.name == "pos_embed") continue;
    EXPECT_TRUE(vit_test::allclose(w.params.data() + l.find(t.name)->offset, w0.params.data() + t.offset,
                                   t.numel, 0, 0)) << t.name;
  }
  expect_error([&] { vit::load_weights(path, with_flags({{"image_size", "48"}, {"patch_size", "6"}})); },
               {"patch size is 8", "--patch-size 6"});
}
