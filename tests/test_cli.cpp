// tests/test_cli.cpp — common/cli: flag spellings, model flags -> Config (preset first, then
// overrides, then validation), and the one-line errors.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/cli.h"
#include "common/error.h"

using vit::cli::ModelFlags;
using vit::cli::Parser;

namespace {

// Parses `args` with the model flags plus a few program flags of each kind.
struct Prog {
  Parser p{"prog", "prog [flags] FILE..."};
  ModelFlags model;
  std::string weights;
  bool json = false;
  bool shuffle = true;
  int top_k = 5;
  std::vector<std::string> positional;
  Prog() {
    p.section("Program");
    p.value("weights", "FILE", "weights", [this](const std::string& v) { weights = v; });
    p.value("top-k", "K", "how many", [this](const std::string& v) { top_k = vit::cli::parse_int("--top-k", v); });
    p.flag("json", "JSON lines", [this] { json = true; });
    p.boolean("shuffle", "shuffle", [this](bool b) { shuffle = b; });
    model.add_to(p);
  }
  Prog& run(const std::vector<std::string>& args) {
    positional = p.parse(args);
    return *this;
  }
};

std::string error_of(const std::vector<std::string>& args) {
  try {
    Prog().run(args).model.config();
  } catch (const vit::Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    return m;
  }
  ADD_FAILURE() << "no vit::Error";
  return "";
}

}  // namespace

TEST(Cli, SpellingsAndPositionals) {
  Prog g;
  g.run({"a.png", "--weights", "w.safetensors", "--top-k=3", "--json", "b.jpg", "--no-shuffle",
         "--", "--not-a-flag.png"});
  EXPECT_EQ(g.weights, "w.safetensors");
  EXPECT_EQ(g.top_k, 3);
  EXPECT_TRUE(g.json);
  EXPECT_FALSE(g.shuffle);
  EXPECT_EQ(g.positional, (std::vector<std::string>{"a.png", "b.jpg", "--not-a-flag.png"}));
  EXPECT_FALSE(g.p.help_requested());

  Prog h;
  h.run({"--shuffle=false", "-h", "-", "--shuffle"});
  EXPECT_TRUE(h.shuffle);  // the last one wins
  EXPECT_TRUE(h.p.help_requested());
  EXPECT_EQ(h.positional, std::vector<std::string>{"-"});  // "-" is a name, not a flag
  Prog n;
  n.run({"--top-k", "-1"});  // negative numbers are values
  EXPECT_EQ(n.top_k, -1);
}

TEST(Cli, ModelFlagsOverrideThePresetInAnyOrder) {
  Prog g;
  g.run({"--hidden", "96", "--preset", "tiny", "--heads=3", "--gelu", "erf", "--final-ln",
         "--no-qkv-bias", "--mean", "0.1,0.2,0.3", "--std=1,2,4", "--ln-eps", "1e-6",
         "--dropout", "0", "--attn-dropout=0.25", "--init-std", "0.05", "--image-size", "48",
         "--patch-size", "6", "--classes", "100", "--layers", "3", "--mlp", "200"});
  vit::Config c = g.model.config();
  vit::Config tiny = vit::preset("tiny");
  EXPECT_EQ(g.model.preset_name, "tiny");
  EXPECT_EQ(c.hidden, 96);
  EXPECT_EQ(c.heads, 3);
  EXPECT_EQ(c.gelu, vit::Gelu::Erf);
  EXPECT_TRUE(c.final_ln);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FLOAT_EQ(c.mean[1], 0.2f);
  EXPECT_FLOAT_EQ(c.std[2], 4.0f);
  EXPECT_FLOAT_EQ(c.ln_eps, 1e-6f);
  EXPECT_EQ(c.dropout, 0.0f);
  EXPECT_FLOAT_EQ(c.attn_dropout, 0.25f);
  EXPECT_FLOAT_EQ(c.init_std, 0.05f);
  EXPECT_EQ(c.image_size, 48);
  EXPECT_EQ(c.patch_size, 6);
  EXPECT_EQ(c.classes, 100);
  EXPECT_EQ(c.layers, 3);
  EXPECT_EQ(c.mlp, 200);
  EXPECT_EQ(c.channels, tiny.channels);
  EXPECT_TRUE(g.model.given("hidden"));
  EXPECT_FALSE(g.model.given("channels"));

  // Without --preset: the caller's default; untouched fields keep the preset's values.
  Prog d;
  d.run({"--classes", "100"});
  vit::Config b = d.model.config("vit-b16");
  EXPECT_EQ(b.hidden, 768);
  EXPECT_EQ(b.classes, 100);
  EXPECT_EQ(b.gelu, vit::Gelu::Erf);
  EXPECT_TRUE(Prog().run({}).model.overrides.empty());
  EXPECT_EQ(Prog().run({}).model.config().hidden, vit::preset("basic").hidden);
}

TEST(Cli, Errors) {
  EXPECT_NE(error_of({"--hiden", "3"}).find("--hiden"), std::string::npos);
  EXPECT_NE(error_of({"-x"}).find("-x"), std::string::npos);
  EXPECT_NE(error_of({"--no-json"}).find("--no-json"), std::string::npos);  // a switch, not a boolean
  EXPECT_NE(error_of({"--hidden"}).find("--hidden needs a value"), std::string::npos);
  EXPECT_NE(error_of({"--weights", "--json"}).find("--weights needs a value"), std::string::npos);
  EXPECT_NE(error_of({"--hidden", "12x"}).find("--hidden: '12x' is not an integer"), std::string::npos);
  EXPECT_NE(error_of({"--hidden", "99999999999"}).find("--hidden"), std::string::npos);
  EXPECT_NE(error_of({"--dropout", "abc"}).find("--dropout: 'abc'"), std::string::npos);
  EXPECT_NE(error_of({"--dropout", "nan"}).find("--dropout"), std::string::npos);
  EXPECT_NE(error_of({"--mean", "0.5,0.5"}).find("--mean"), std::string::npos);
  EXPECT_NE(error_of({"--mean", "0.5,x,0.5"}).find("--mean: 'x'"), std::string::npos);
  EXPECT_NE(error_of({"--gelu", "relu"}).find("--gelu: 'relu' is not one of tanh, erf"), std::string::npos);
  EXPECT_NE(error_of({"--preset", "huge"}).find("--preset: unknown preset 'huge'"), std::string::npos);
  EXPECT_NE(error_of({"--json=1"}).find("--json takes no value"), std::string::npos);
  EXPECT_NE(error_of({"--final-ln=maybe"}).find("--final-ln: 'maybe'"), std::string::npos);
  EXPECT_NE(error_of({"--no-final-ln=1"}).find("--no-final-ln takes no value"), std::string::npos);
  // Parsed fine, but the config cannot work: validate() says which values conflict.
  std::string e = error_of({"--hidden", "100", "--heads", "3"});
  EXPECT_NE(e.find("--hidden 100 is not divisible by --heads 3"), std::string::npos) << e;
  e = error_of({"--preset", "tiny", "--image-size", "30"});
  EXPECT_NE(e.find("--image-size 30 is not divisible by --patch-size 8"), std::string::npos) << e;
  EXPECT_NE(error_of({"--layers", "0"}).find("--layers must be positive"), std::string::npos);
}

TEST(Cli, UsageListsEveryFlag) {
  Prog g;
  std::string u = g.p.usage();
  EXPECT_EQ(u.rfind("usage: prog [flags] FILE...\n", 0), 0u) << u;
  for (const char* f : {"--weights FILE", "--top-k K", "--json", "--[no-]shuffle", "--preset NAME",
                        "--image-size N", "--patch-size N", "--classes N", "--hidden N",
                        "--layers N", "--heads N", "--mlp N", "--dropout P", "--attn-dropout P",
                        "--init-std S", "--gelu tanh|erf", "--ln-eps EPS", "--[no-]final-ln",
                        "--[no-]qkv-bias", "--mean R,G,B", "--std R,G,B", "--help", "Program:",
                        "Model"})
    EXPECT_NE(u.find(f), std::string::npos) << f << " missing from:\n" << u;
}
