// common/config.h — the model configuration shared by the CPU reference, the CUDA model, the
// weight files and the command line. One struct; presets name the two models of the PyTorch
// reference (see README) and a tiny one for tests.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace vit {

enum class Gelu { Tanh, Erf };  // tanh approximation (tintn ViT) | exact erf (torchvision)

struct Config {
  int image_size = 32;    // the model's input resolution (square)
  int patch_size = 4;
  int channels = 3;
  int classes = 10;
  int hidden = 256;       // C
  int layers = 12;
  int heads = 4;
  int mlp = 1024;         // MLP inner size
  float dropout = 0.1f;       // hidden dropout: after embedding, attention projection, MLP
  float attn_dropout = 0.1f;  // on attention probabilities
  float init_std = 0.02f;
  bool qkv_bias = true;
  Gelu gelu = Gelu::Tanh;
  float ln_eps = 1e-5f;
  bool final_ln = false;  // LayerNorm before the head (torchvision's encoder.ln)
  float mean[3] = {0.5f, 0.5f, 0.5f};  // input normalisation, per channel, on [0,1] pixels
  float std[3] = {0.5f, 0.5f, 0.5f};

  // Derived sizes.
  int grid() const { return image_size / patch_size; }  // patches per side
  int patches() const { return grid() * grid(); }       // N
  int tokens() const { return patches() + 1; }          // T = N + CLS
  int head_dim() const { return hidden / heads; }       // hd
  int patch_dim() const { return channels * patch_size * patch_size; }  // (c, ky, kx) flattened
};

// "basic" | "vit-b16" | "tiny"; throws vit::Error naming the known presets otherwise.
Config preset(const std::string& name);
std::vector<std::string> preset_names();

// Empty when the config can work, else one line saying which values conflict.
std::string config_problem(const Config& c);
// Throws vit::Error(config_problem(c)) when there is one.
void validate(const Config& c);

const char* gelu_name(Gelu g);           // "tanh" | "erf"
Gelu parse_gelu(const std::string& s);   // throws vit::Error

// The config as string pairs, for a safetensors `__metadata__` and config.json, and back.
std::map<std::string, std::string> config_to_metadata(const Config& c);
// Fields missing from `md` keep the values of `base`; malformed values throw vit::Error.
Config config_from_metadata(const std::map<std::string, std::string>& md, const Config& base);

}  // namespace vit
