// common/train_state.h — what a vit_train checkpoint holds beyond the weights, and reading /
// writing it. A training checkpoint is an ordinary vit.cu weight file (common/weights.h:
// every parameter + the config in __metadata__, so vit_predict and --init read it) plus
//   tensors   adam.m, adam.v                  (flat, ParamLayout order)
//   metadata  train.<option>                  the training options (TrainOptions::to_map)
//             run.preset                      the preset name the run was started with
//             state.step, state.micro_step,   optimizer updates / training forwards done
//             state.epoch, state.batch        epochs completed, batches done of the next one
//                                             (the loader position; its order is Philox(seed,
//                                             epoch), the seed is train.seed)
//             state.loss_sum, state.correct,  the partial sums of the epoch in progress, so a
//             state.count, state.seconds,     run resumed mid-epoch writes the same metrics row
//             state.lr
//             state.best_acc, state.best_epoch
//             class_names                     JSON list of the dataset's class names, when it
//                                             has them (vit_predict prints them)
// Numbers are written with 17 significant digits: they read back bit-exactly.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/params.h"

namespace vit {

struct TrainState {
  int64_t step = 0;        // optimizer updates done (Adam's t of the next update is step + 1)
  int64_t micro_step = 0;  // training forwards done (the Philox step of dropout/augmentation)
  int64_t epoch = 0;       // epochs completed
  int64_t batch = 0;       // batches of epoch `epoch` already trained
  double loss_sum = 0;     // that epoch's partial sums
  int64_t correct = 0, count = 0;
  double seconds = 0;      // that epoch's training time so far
  double lr = 0;           // learning rate of the last update
  double best_acc = -1;    // best test accuracy so far and its (1-based) epoch; 0 = none
  int64_t best_epoch = 0;
};

std::map<std::string, std::string> state_to_metadata(const TrainState& s);
// Throws vit::Error naming `path` when a key is missing or malformed.
TrainState state_from_metadata(const std::map<std::string, std::string>& md,
                               const std::string& path);

struct TrainingCheckpoint {
  Config config;
  std::string preset;
  std::map<std::string, std::string> train;  // train.* without the prefix
  TrainState state;
  std::vector<float> params, adam_m, adam_v;  // ParamLayout(config).total each
};

// Loads a checkpoint written by save_training_checkpoint. `given` are the model flags the
// user typed (cli::ModelFlags::overrides): they must agree with the file. A file that is not a
// safetensors file, has the wrong shapes, or has no training state is a one-line vit::Error.
TrainingCheckpoint load_training_checkpoint(const std::string& path,
                                            const std::map<std::string, std::string>& given);

// Writes it atomically (temp file + rename: a failure leaves an existing file intact).
void save_training_checkpoint(const std::string& path, const Config& c, const ParamLayout& layout,
                              const std::string& preset,
                              const std::map<std::string, std::string>& train,
                              const TrainState& s, const std::vector<float>& params,
                              const std::vector<float>& adam_m, const std::vector<float>& adam_v,
                              const std::map<std::string, std::string>& extra_metadata = {});

}  // namespace vit
