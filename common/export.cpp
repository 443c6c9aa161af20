#include "common/export.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/cli.h"
#include "common/error.h"

namespace vit {

namespace {

std::string num(float v) {  // shortest text that reads back as the same float
  char b[32];
  for (int prec = 1; prec <= 9; ++prec) {
    snprintf(b, sizeof b, "%.*g", prec, v);
    if (std::strtof(b, nullptr) == v) break;
  }
  return b;
}

std::string triple(const float* v) { return "(" + num(v[0]) + ", " + num(v[1]) + ", " + num(v[2]) + ")"; }

}  // namespace

std::string pytorch_loading_lines(WeightFormat f, const Config& c, const std::string& path) {
  const std::string file = nlohmann::json(path).dump();  // a valid Python string literal
  std::ostringstream o;
  if (f == WeightFormat::Torchvision) {
    o << "import torchvision\n"
      << "from safetensors.torch import load_file\n"
      << "model = torchvision.models.VisionTransformer(image_size=" << c.image_size
      << ", patch_size=" << c.patch_size << ", num_layers=" << c.layers << ", num_heads=" << c.heads
      << ", hidden_dim=" << c.hidden << ", mlp_dim=" << c.mlp << ", dropout=" << num(c.dropout)
      << ", attention_dropout=" << num(c.attn_dropout) << ", num_classes=" << c.classes << ")\n"
      << "model.load_state_dict(load_file(" << file << "))\n";
  } else {
    o << "# tintn's model: vit.py of github.com/tintn/vision-transformer-from-scratch\n"
      << "from vit import ViTForClassfication\n"
      << "from safetensors.torch import load_file\n"
      << "config = {\"patch_size\": " << c.patch_size << ", \"hidden_size\": " << c.hidden
      << ", \"num_hidden_layers\": " << c.layers << ", \"num_attention_heads\": " << c.heads
      << ", \"intermediate_size\": " << c.mlp << ", \"hidden_dropout_prob\": " << num(c.dropout)
      << ", \"attention_probs_dropout_prob\": " << num(c.attn_dropout)
      << ", \"initializer_range\": " << num(c.init_std) << ", \"image_size\": " << c.image_size
      << ", \"num_classes\": " << c.classes << ", \"num_channels\": " << c.channels
      << ", \"qkv_bias\": " << (c.qkv_bias ? "True" : "False")
      << ", \"use_faster_attention\": True}\n"
      << "model = ViTForClassfication(config)\n"
      << "model.load_state_dict(load_file(" << file << "))\n"
      << "# model(x) returns (logits, attention maps)\n";
  }
  o << "# input: RGB scaled to [0, 1], " << c.image_size << "x" << c.image_size
    << ", then torchvision.transforms.Normalize(mean=" << triple(c.mean) << ", std=" << triple(c.std)
    << ")\n";
  return o.str();
}

int export_main(const std::vector<std::string>& args_in, std::ostream& out, std::ostream& err) {
  cli::Parser p("vit_export", "vit_export --weights FILE --format torchvision|tintn -o OUT.safetensors",
                "Write a ViT's weights in a PyTorch layout (model weights only; the architecture and\n"
                "the number of heads in __metadata__) and print the Python lines that load it.");
  std::string weights, format, output;
  int heads = 0;
  p.value("weights", "FILE", "weights to export: a vit.cu checkpoint (or a tintn / torchvision file)",
          [&](const std::string& v) { weights = v; });
  p.value("format", "torchvision|tintn",
          "torchvision's VisionTransformer (erf GELU, LayerNorm eps 1e-6, final LayerNorm) or tintn's "
          "ViTForClassfication (tanh GELU, eps 1e-5, no final LayerNorm); a model with other "
          "constants is refused",
          [&](const std::string& v) { format = cli::parse_choice("--format", v, {"torchvision", "tintn"}); });
  p.value("out", "FILE", "the safetensors file to write (also -o FILE); written atomically",
          [&](const std::string& v) { output = v; });
  p.value("heads", "N", "number of heads, for a PyTorch file that does not record it",
          [&](const std::string& v) { heads = cli::parse_int("--heads", v); });
  // -o is the spelling users know from compilers: the parser has long flags only.
  std::vector<std::string> args;
  for (const auto& a : args_in) args.push_back(a == "-o" ? "--out" : a);

  try {
    const std::vector<std::string> extra = p.parse(args);
    if (p.help_requested()) {
      out << p.usage();
      return 0;
    }
    if (!extra.empty()) throw Error("unexpected argument '" + extra[0] + "' (see --help)");
    if (weights.empty()) throw Error("--weights FILE is required (see --help)");
    if (format.empty()) throw Error("--format torchvision|tintn is required (see --help)");
    if (output.empty()) throw Error("-o OUT.safetensors is required (see --help)");
    std::error_code ec;
    if (std::filesystem::equivalent(weights, output, ec))
      throw Error("-o " + output + " is the input file: write the export under another name");

    LoadOptions lo;
    lo.base = preset("basic");
    if (heads != 0) {
      lo.base.heads = heads;
      lo.given["heads"] = std::to_string(heads);
    }
    const LoadedWeights w = load_weights(weights, lo);
    const WeightFormat f = parse_weight_format(format);
    const Config& c = w.config;
    std::map<std::string, std::string> md;
    if (w.metadata.count("class_names")) md["class_names"] = w.metadata.at("class_names");
    export_weights(output, f, c, w.params.data(), md);

    out << "vit_export: wrote " << output << " (" << weight_format_name(f) << " layout: image "
        << c.image_size << ", patch " << c.patch_size << ", hidden " << c.hidden << ", "
        << c.layers << " layers, " << c.heads << " heads, MLP " << c.mlp << ", " << c.classes
        << " classes)\n"
        << "# PyTorch:\n"
        << pytorch_loading_lines(f, c, output);
    return 0;
  } catch (const Error& e) {
    err << "vit_export: error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace vit
