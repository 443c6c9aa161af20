#include "common/predict.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <numeric>

#include "common/attention_map.h"
#include "common/cli.h"
#include "common/error.h"
#include "common/image.h"
#include "common/weights.h"

namespace vit {

namespace {

// The attention pictures of one image (see --help): probs (L, NH, T, T), img its decoded pixels.
// Returns the paths written: the rollout, then (layer >= 0) the per-head grid of that layer.
std::vector<std::string> write_attention_maps(const std::string& stem, const Image& img,
                                              const Config& c, const float* probs, int layer) {
  const int L = c.layers, NH = c.heads, T = c.tokens(), g = c.grid(), S = c.image_size;
  const std::vector<uint8_t> shown = resize_rgb(img.rgb.data(), img.width, img.height, S);
  std::vector<std::string> paths;
  std::vector<float> roll = attention_rollout(probs, L, NH, T);
  normalise01(roll.data(), roll.size());
  paths.push_back(stem + ".rollout.png");
  write_png(paths.back(), heat_overlay(shown.data(), S, roll.data(), g).data(), S, S);
  if (layer >= 0) {
    std::vector<float> heads = cls_attention(probs, L, NH, T, layer);
    std::vector<std::vector<uint8_t>> tiles;
    for (int h = 0; h < NH; ++h) {  // each head normalised on its own: where *it* looks
      float* m = heads.data() + (size_t)h * (T - 1);
      normalise01(m, (size_t)T - 1);
      tiles.push_back(heat_overlay(shown.data(), S, m, g));
    }
    int w = 0, hgt = 0;
    const std::vector<uint8_t> grid = tile_images(tiles, S, std::max(1, S / 32), &w, &hgt);
    paths.push_back(stem + ".layer" + std::to_string(layer) + ".png");
    write_png(paths.back(), grid.data(), w, hgt);
  }
  return paths;
}

}  // namespace

std::vector<std::string> class_names(int classes, const std::map<std::string, std::string>& md) {
  auto it = md.find("class_names");
  if (it != md.end()) {
    try {
      nlohmann::json j = nlohmann::json::parse(it->second);
      if (j.is_array() && (int)j.size() == classes) {
        std::vector<std::string> names;
        for (const auto& n : j)
          if (n.is_string()) names.push_back(n.get<std::string>());
        if ((int)names.size() == classes) return names;
      }
    } catch (const nlohmann::json::exception&) {
      // not usable: fall through to the defaults
    }
  }
  if (classes == 10)
    return {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  std::vector<std::string> names;
  for (int i = 0; i < classes; ++i) names.push_back("class " + std::to_string(i));
  return names;
}

int predict_main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
                 const ModelFactory& make_model) {
  cli::Parser p("vit_predict", "vit_predict --weights FILE [flags] IMAGE...",
                "Classify images (PNG, JPEG, BMP) with a ViT: vit.cu checkpoints and the tintn and\n"
                "torchvision PyTorch layouts load without model flags (see README).");
  std::string weights, device = "cpu", attention_dir;
  int top_k = 5, attention_layer = -1;
  bool have_layer = false;
  bool json = false;
  cli::ModelFlags model;
  p.section("Prediction");
  p.value("weights", "FILE", "safetensors weights (required)", [&](const std::string& v) { weights = v; });
  p.value("device", "cpu|cuda", "where the model runs (default cpu)",
          [&](const std::string& v) { device = cli::parse_choice("--device", v, {"cpu", "cuda"}); });
  p.value("top-k", "K", "classes printed per image (default 5)",
          [&](const std::string& v) { top_k = cli::parse_int("--top-k", v); });
  p.flag("json", "one JSON object per image and line: image, logits and probs (all classes), top",
         [&] { json = true; });
  p.value("attention", "DIR",
          "also write attention pictures into DIR (created if missing): per image DIR/NAME.rollout.png, the attention rollout (Abnar & Zuidema 2020) of the CLS token over the patches as a heat map on the resized image",
          [&](const std::string& v) { attention_dir = v; });
  p.value("attention-layer", "L",
          "with --attention: also DIR/NAME.layerL.png, layer L's (0 = first) CLS-to-patch attention, one heat map per head in a grid",
          [&](const std::string& v) {
            attention_layer = cli::parse_int("--attention-layer", v);
            have_layer = true;
          });
  model.add_to(p);

  try {
    const std::vector<std::string> images = p.parse(args);
    if (p.help_requested()) {
      out << p.usage();
      return 0;
    }
    if (weights.empty()) throw Error("--weights FILE is required (see --help)");
    if (images.empty()) throw Error("no images given (see --help)");
    if (top_k < 1) throw Error("--top-k must be at least 1 (got " + std::to_string(top_k) + ")");
    for (const auto& im : images) check_image(im);  // fail before any work, not half way
    if (have_layer && attention_dir.empty())
      throw Error("--attention-layer needs --attention DIR (where to write the pictures)");
    std::vector<std::string> stems;  // DIR/NAME per image, NAME = file name without extension
    if (!attention_dir.empty()) {
      namespace fs = std::filesystem;
      std::set<std::string> seen;
      for (const auto& im : images) {
        stems.push_back((fs::path(attention_dir) / fs::path(im).stem()).string());
        if (!seen.insert(stems.back()).second)
          throw Error("two images are named '" + fs::path(im).stem().string() +
                      "': their attention pictures would overwrite each other in " + attention_dir);
      }
    }

    LoadOptions lo;
    lo.base = model.unvalidated("basic");
    lo.given = model.overrides;
    const LoadedWeights w = load_weights(weights, lo);
    const Config& c = w.config;
    const std::vector<std::string> names = class_names(c.classes, w.metadata);
    const int K = c.classes, S = c.image_size, k = std::min(top_k, K);
    if (have_layer && (attention_layer < 0 || attention_layer >= c.layers))
      throw Error("--attention-layer " + std::to_string(attention_layer) + ": the model has " +
                  std::to_string(c.layers) + " layers (0.." + std::to_string(c.layers - 1) + ")");
    if (!attention_dir.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(attention_dir, ec);
      if (ec || !std::filesystem::is_directory(attention_dir))
        throw Error("--attention " + attention_dir + ": cannot create the directory" +
                    (ec ? ": " + ec.message() : std::string()));
    }
    const bool maps = !attention_dir.empty();
    const size_t probs_per_image = (size_t)c.layers * c.heads * c.tokens() * c.tokens();

    ModelOptions mo;
    // Attention maps: (L, NH, T, T) floats per image (22 MB for vit-b16), so fewer at a time.
    mo.max_batch = (int)std::min<size_t>(images.size(), maps ? 4 : 16);
    // infer() gets float images resized on the host: FP16 storage would only round them.
    mo.fp16_input = Fp16Input::Off;
    // A few images: speed does not matter, so --device cuda computes in full FP32 (no TF32
    // GEMMs) and prints the probabilities of --device cpu.
    mo.precision = Precision::Fp32;
    std::unique_ptr<Model> m = make_model(device, c, mo);
    m->set_params(w.params.data());

    std::vector<float> x((size_t)mo.max_batch * 3 * S * S), logits((size_t)mo.max_batch * K);
    std::vector<float> probs(maps ? (size_t)mo.max_batch * probs_per_image : 0);  // (B, L, NH, T, T)
    std::vector<Image> decoded(mo.max_batch);  // the batch's pixels, to draw the maps on
    for (size_t b0 = 0; b0 < images.size(); b0 += (size_t)mo.max_batch) {
      const int B = (int)std::min(images.size() - b0, (size_t)mo.max_batch);
      for (int b = 0; b < B; ++b) {
        decoded[b] = load_image(images[b0 + b]);
        image_to_input(decoded[b], c, x.data() + (size_t)b * 3 * S * S);
      }
      if (maps)
        m->infer_attention(x.data(), B, logits.data(), probs.data());
      else
        m->infer(x.data(), B, logits.data());
      for (int b = 0; b < B; ++b) {
        // Softmax in double: the probabilities printed sum to 1 to the digits shown.
        const float* l = logits.data() + (size_t)b * K;
        const double mx = *std::max_element(l, l + K);
        std::vector<double> prob(K);
        double sum = 0;
        for (int i = 0; i < K; ++i) sum += prob[i] = std::exp((double)l[i] - mx);
        for (double& q : prob) q /= sum;
        std::vector<int> order(K);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int z) { return prob[a] > prob[z]; });
        const std::string& path = images[b0 + b];
        std::vector<std::string> pictures;
        if (maps)
          pictures = write_attention_maps(stems[b0 + b], decoded[b], c,
                                          probs.data() + (size_t)b * probs_per_image,
                                          attention_layer);
        if (json) {
          nlohmann::json j;
          j["image"] = path;
          j["logits"] = std::vector<float>(l, l + K);  // for tools/check_export.py
          j["probs"] = prob;
          j["top"] = nlohmann::json::array();
          for (int i = 0; i < k; ++i)
            j["top"].push_back({{"class", order[i]}, {"name", names[order[i]]}, {"prob", prob[order[i]]}});
          if (maps) j["attention"] = pictures;
          out << j.dump() << "\n";
        } else {
          out << path << "\n";
          for (int i = 0; i < k; ++i) {
            char line[64];
            snprintf(line, sizeof line, "  %6.2f%%  ", 100.0 * prob[order[i]]);
            out << line << names[order[i]] << "\n";
          }
          for (const auto& pic : pictures) out << "  attention: " << pic << "\n";
        }
      }
      out.flush();
    }
    return 0;
  } catch (const Error& e) {
    err << "vit_predict: error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace vit
