#include "common/predict.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "common/cli.h"
#include "common/error.h"
#include "common/image.h"
#include "common/weights.h"

namespace vit {

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
  std::string weights, device = "cpu";
  int top_k = 5;
  bool json = false;
  cli::ModelFlags model;
  p.section("Prediction");
  p.value("weights", "FILE", "safetensors weights (required)", [&](const std::string& v) { weights = v; });
  p.value("device", "cpu|cuda", "where the model runs (default cpu)",
          [&](const std::string& v) { device = cli::parse_choice("--device", v, {"cpu", "cuda"}); });
  p.value("top-k", "K", "classes printed per image (default 5)",
          [&](const std::string& v) { top_k = cli::parse_int("--top-k", v); });
  p.flag("json", "one JSON object per image and line: image, probs (all classes), top",
         [&] { json = true; });
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

    LoadOptions lo;
    lo.base = model.unvalidated("basic");
    lo.given = model.overrides;
    const LoadedWeights w = load_weights(weights, lo);
    const Config& c = w.config;
    const std::vector<std::string> names = class_names(c.classes, w.metadata);
    const int K = c.classes, S = c.image_size, k = std::min(top_k, K);

    ModelOptions mo;
    mo.max_batch = (int)std::min<size_t>(images.size(), 16);
    // infer() gets float images resized on the host: FP16 storage would only round them.
    mo.fp16_input = Fp16Input::Off;
    // A few images: speed does not matter, so --device cuda computes in full FP32 (no TF32
    // GEMMs) and prints the probabilities of --device cpu.
    mo.precision = Precision::Fp32;
    std::unique_ptr<Model> m = make_model(device, c, mo);
    m->set_params(w.params.data());

    std::vector<float> x((size_t)mo.max_batch * 3 * S * S), logits((size_t)mo.max_batch * K);
    for (size_t b0 = 0; b0 < images.size(); b0 += (size_t)mo.max_batch) {
      const int B = (int)std::min(images.size() - b0, (size_t)mo.max_batch);
      for (int b = 0; b < B; ++b)
        image_to_input(load_image(images[b0 + b]), c, x.data() + (size_t)b * 3 * S * S);
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
        if (json) {
          nlohmann::json j;
          j["image"] = path;
          j["probs"] = prob;
          j["top"] = nlohmann::json::array();
          for (int i = 0; i < k; ++i)
            j["top"].push_back({{"class", order[i]}, {"name", names[order[i]]}, {"prob", prob[order[i]]}});
          out << j.dump() << "\n";
        } else {
          out << path << "\n";
          for (int i = 0; i < k; ++i) {
            char line[64];
            snprintf(line, sizeof line, "  %6.2f%%  ", 100.0 * prob[order[i]]);
            out << line << names[order[i]] << "\n";
          }
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
