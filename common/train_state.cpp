#include "common/train_state.h"

#include <cstdio>
#include <cstdlib>

#include "common/error.h"
#include "common/weights.h"

namespace vit {

static std::string num(double v) {
  char b[40];
  snprintf(b, sizeof b, "%.17g", v);
  return b;
}

std::map<std::string, std::string> state_to_metadata(const TrainState& s) {
  return {{"state.step", std::to_string(s.step)},
          {"state.micro_step", std::to_string(s.micro_step)},
          {"state.epoch", std::to_string(s.epoch)},
          {"state.batch", std::to_string(s.batch)},
          {"state.loss_sum", num(s.loss_sum)},
          {"state.correct", std::to_string(s.correct)},
          {"state.count", std::to_string(s.count)},
          {"state.seconds", num(s.seconds)},
          {"state.lr", num(s.lr)},
          {"state.best_acc", num(s.best_acc)},
          {"state.best_epoch", std::to_string(s.best_epoch)}};
}

TrainState state_from_metadata(const std::map<std::string, std::string>& md,
                               const std::string& path) {
  auto get = [&](const char* k) -> const std::string& {
    auto it = md.find(k);
    if (it == md.end())
      throw Error("'" + path + "' is not a vit_train checkpoint (no '" + k +
                  "' in its metadata): to start from its weights use --init");
    return it->second;
  };
  auto i64 = [&](const char* k) {
    const std::string& v = get(k);
    char* end = nullptr;
    long long x = strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end || x < 0)
      throw Error("'" + path + "': metadata '" + k + "' is not a count: '" + v + "'");
    return (int64_t)x;
  };
  auto f64 = [&](const char* k) {
    const std::string& v = get(k);
    char* end = nullptr;
    double x = strtod(v.c_str(), &end);
    if (v.empty() || *end)
      throw Error("'" + path + "': metadata '" + k + "' is not a number: '" + v + "'");
    return x;
  };
  TrainState s;
  s.step = i64("state.step");
  s.micro_step = i64("state.micro_step");
  s.epoch = i64("state.epoch");
  s.batch = i64("state.batch");
  s.loss_sum = f64("state.loss_sum");
  s.correct = i64("state.correct");
  s.count = i64("state.count");
  s.seconds = f64("state.seconds");
  s.lr = f64("state.lr");
  s.best_acc = f64("state.best_acc");
  s.best_epoch = i64("state.best_epoch");
  return s;
}

TrainingCheckpoint load_training_checkpoint(const std::string& path,
                                            const std::map<std::string, std::string>& given) {
  LoadOptions lo;
  lo.given = given;
  LoadedWeights w = load_weights(path, lo);
  if (w.format != WeightFormat::Ours)
    throw Error("'" + path + "' is a " + weight_format_name(w.format) +
                " weight file, not a vit_train checkpoint: to start from its weights use --init");
  TrainingCheckpoint ck;
  ck.state = state_from_metadata(w.metadata, path);  // first: says "not a checkpoint" clearly
  ck.config = w.config;
  ck.params = std::move(w.params);
  const size_t total = ParamLayout(ck.config).total;
  for (const char* name : {"adam.m", "adam.v"}) {
    auto it = w.extra.find(name);
    if (it == w.extra.end())
      throw Error("'" + path + "' has no optimizer state (tensor '" + name +
                  "'): to start from its weights use --init");
    if (it->second.size() != total)
      throw Error("'" + path + "': tensor '" + name + "' has " +
                  std::to_string(it->second.size()) + " elements, the model needs " +
                  std::to_string(total));
  }
  ck.adam_m = std::move(w.extra["adam.m"]);
  ck.adam_v = std::move(w.extra["adam.v"]);
  for (const auto& [k, v] : w.metadata) {
    if (k.rfind("train.", 0) == 0) ck.train[k.substr(6)] = v;
    if (k == "run.preset") ck.preset = v;
  }
  if (ck.preset.empty()) ck.preset = "basic";
  return ck;
}

void save_training_checkpoint(const std::string& path, const Config& c, const ParamLayout& layout,
                              const std::string& preset,
                              const std::map<std::string, std::string>& train,
                              const TrainState& s, const std::vector<float>& params,
                              const std::vector<float>& adam_m, const std::vector<float>& adam_v,
                              const std::map<std::string, std::string>& extra_metadata) {
  std::map<std::string, std::string> md = extra_metadata;
  for (const auto& [k, v] : state_to_metadata(s)) md[k] = v;
  for (const auto& [k, v] : train) md["train." + k] = v;
  md["run.preset"] = preset;
  save_checkpoint(path, c, layout, params.data(), {{"adam.m", adam_m}, {"adam.v", adam_v}}, md);
}

}  // namespace vit
