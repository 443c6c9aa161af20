// common/weights.h — weight files: vit.cu's own checkpoints and the two PyTorch layouts of
// shared/weights.md (tintn's ViTForClassfication, torchvision's VisionTransformer), mapped onto
// the one flat parameter buffer of common/params.h and back.
//
// Loading a file:
//   * the layout is detected from the tensor names (cls_token | embedding.cls_token |
//     class_token); torchvision's two MLP namings (mlp.0/mlp.3, mlp.linear_1/linear_2) both load;
//   * the sizes come from the tensor shapes (patch, hidden, layers, MLP, classes, image size =
//     patch * sqrt(position rows - 1), qkv bias, final LayerNorm) and the layout fixes the
//     constants (GELU, LayerNorm eps, normalisation); a file's `__metadata__` (our checkpoints,
//     tools/export_torchvision.py) overrides the constants and supplies the number of heads,
//     which no shape tells. What neither the shapes nor the metadata say (heads of a bare
//     PyTorch file, dropout, init std) comes from the caller's config (preset + flags);
//   * a flag the user typed (LoadOptions::given) that contradicts the file is an error, with two
//     exceptions that are the point of fine-tuning: a different --image-size resamples the
//     position embeddings (bicubic over the patch grid, CLS row kept), and --new-head replaces
//     the classifier with a fresh one of base.classes outputs (init_params semantics);
//   * every tensor's shape is checked; a missing tensor, an unexpected one (PyTorch layouts)
//     or a wrong shape is one vit::Error naming the file and the tensor.
// Tensors may be F32, F16 or BF16 (converted to float).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/params.h"

namespace vit {

enum class WeightFormat { Ours, Tintn, Torchvision };
const char* weight_format_name(WeightFormat f);  // "vit.cu" | "tintn" | "torchvision"
WeightFormat parse_weight_format(const std::string& s);  // the names above; throws vit::Error

// One parameter tensor as a file of format `f` names and shapes it, and where it lives in the
// flat buffer of ParamLayout(c). The memory order is the same in every layout (PyTorch's conv
// weight [H,3,p,p] is our (H, 3*p*p) in (c,ky,kx) order), so a tensor copies as one block.
struct MappedTensor {
  std::string name;
  std::vector<int64_t> shape;
  size_t offset, numel;
  std::string ours;  // our name (common/params.h)
};
// Every parameter of ParamLayout(c), in layout order. Torchvision names its MLP mlp.0/mlp.3, or
// mlp.linear_1/mlp.linear_2 with `tv_linear_names`.
std::vector<MappedTensor> tensor_map(const Config& c, WeightFormat f, bool tv_linear_names = false);

struct LoadOptions {
  Config base;  // preset + flags: supplies what the file does not say (see above)
  // Fields the user typed, keyed as config_to_metadata() (cli::ModelFlags::overrides). These
  // must agree with the file, except image_size (position embeddings are resampled) and
  // classes (needs new_head).
  std::map<std::string, std::string> given;
  bool new_head = false;  // replace the head with a fresh one of base.classes outputs
  uint64_t head_seed = 0; // seed of that head (init_params(config, layout, head_seed, ...))
};

struct LoadedWeights {
  WeightFormat format;
  Config file_config;          // the model the file holds
  Config config;               // the model to build (file_config + resampling / new head / flags)
  std::vector<float> params;   // ParamLayout(config).total floats
  std::map<std::string, std::string> metadata;  // the file's __metadata__
  // Tensors of our checkpoints that are not parameters (adam.m, adam.v, ...), as stored: they
  // belong to file_config's layout.
  std::map<std::string, std::vector<float>> extra;
  bool head_replaced = false;  // head freshly initialised (new_head)
  bool pos_resampled = false;  // position embeddings resampled to config.image_size
  std::string summary() const; // one line for logs: layout, sizes, what was changed
};

LoadedWeights load_weights(const std::string& path, const LoadOptions& opt);

// Our checkpoint: every parameter under its common/params.h name, the config in __metadata__
// (config_to_metadata, plus "format": "vit.cu"), `extra_metadata` (training state: step, epoch,
// ...) and `extra_tensors` as flat 1-D tensors (Adam moments: "adam.m", "adam.v"). Written
// atomically (write_safetensors). Loads back with load_weights(path, {}) and no flags.
// `layout` must be ParamLayout(c) (it is passed so callers holding a Model can hand over
// model.layout() as is; a mismatch is a logic error).
void save_checkpoint(const std::string& path, const Config& c, const ParamLayout& layout,
                     const float* params,
                     const std::map<std::string, std::vector<float>>& extra_tensors = {},
                     const std::map<std::string, std::string>& extra_metadata = {});

// The parameters in a PyTorch layout (to go back to PyTorch: load_state_dict on the original
// module after reading the file with safetensors; vit_export is the command). The config goes
// into __metadata__ too (heads included: no shape tells them), and `extra_metadata` (class
// names, ...). Torchvision always has a qkv bias (written as zeros when the model has none).
// Written atomically (write_safetensors: temporary file + rename).
// The architecture constants of each PyTorch original are fixed in its code, not in its
// weights, so a model whose constants differ would load there and compute something else:
//   tintn:       tanh GELU, LayerNorm eps 1e-5, no final LayerNorm
//   torchvision: erf GELU, LayerNorm eps 1e-6, a final LayerNorm (encoder.ln), 3 input channels
// export_weights refuses such a model (vit::Error, one line naming each difference and the
// format that fits, if one does).
void export_weights(const std::string& path, WeightFormat f, const Config& c, const float* params,
                    const std::map<std::string, std::string>& extra_metadata = {});
// Empty when `c` can be written in PyTorch layout `f` (above), else the reason, one line.
std::string export_problem(WeightFormat f, const Config& c);

// Bicubic resize of planes (P, H, W) -> (P, OH, OW) exactly as PyTorch's
// interpolate(mode='bicubic', align_corners=False) (A = -0.75, source index
// (dst + 0.5) * in/out - 0.5, taps clamped to the border). Computed in double.
void resize_bicubic(const float* in, int P, int H, int W, int OH, int OW, float* out);

// Position table (1 + g*g, C) -> (1 + G*G, C): CLS row copied, the g x g grid resized bicubically.
std::vector<float> resample_pos_embed(const float* pos, int g, int G, int C);

}  // namespace vit
