// host/train.h — vit_train: the training program as a library function, so the tests run it
// in-process (build/test_simt, where --device cuda is the CUDA model under simt) and the real
// binary (host/vit_train.cu) is a two-line main().
//
// The loop drives a vit::Model (common/model.h) and knows nothing of the device:
//   for each epoch: [train: loader batch -> accum_steps micro-batches of forward + backward ->
//   optimizer_step(lr(step))] -> evaluate the test split -> metrics.csv row, last/best
//   checkpoints, curves.png.
// Randomness: every draw is Philox keyed by --seed: init (SITE_INIT), the epoch order
// (SITE_SHUFFLE, step = epoch), dropout and augmentation (step = micro-batch number). So the
// state of a run is (params, Adam m/v, step, micro-step, epoch, batch within the epoch, the
// epoch's partial sums), all of which a checkpoint stores: resuming reproduces the
// uninterrupted run exactly.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "common/model.h"
#include "host/dist.h"

namespace vit {

// The training flags (the model flags are common/cli.h's). Defaults reproduce the reference's
// basic.py run: Adam, lr 1e-4, batch 64, 50 epochs, no augmentation; with --preset vit-b16 the
// batch defaults to 32 (the reference's vit-b16 fine-tuning: Adam, lr 1e-4, batch 32).
struct TrainOptions {
  std::string device = "cuda";                   // cuda | cpu
  std::string data = "data/cifar-10-batches-bin";  // any format of common/dataset.h
  int epochs = 50;
  int batch_size = 64;                           // images per optimizer step
  int accum_steps = 1;                           // micro-batches per step (batch_size / accum each),
                                                 // over all ranks: --gpus N runs accum/N per rank
  float lr = 1e-4f;                              // peak learning rate
  std::string optimizer = "adam";                // adam | adamw
  float weight_decay = 0.0f;
  std::string schedule = "constant";             // constant | cosine
  float warmup_epochs = 0.0f;                    // linear warmup (either schedule)
  float label_smoothing = 0.0f;
  float clip_grad = 0.0f;                        // global grad-norm clip; 0 = off
  std::string augment = "none";                  // none | flip | crop-flip | rrc-flip
  uint64_t seed = 42;
  // auto | bf16 | tf32 | fp32. train_main resolves auto before training (bf16 on a GPU of
  // compute capability >= 8.0, else tf32; fp32 with --device cpu, which ignores the flag), so
  // config.json and checkpoints record what ran. --tf32 / --no-tf32 (and a checkpoint's "tf32"
  // key, from before --precision) are aliases for tf32 / fp32.
  std::string precision = "auto";
  bool freeze_backbone = false;                  // linear probe: train only head (+ final LN)
  int64_t max_steps = 0;                         // stop (and save) after this many steps; 0 = off
  int log_every = 0;                             // steps between plain log lines; 0 = ~10/epoch
  int store_size = 0;                            // image folders: stored size; 0 = the model's

  // As string pairs (checkpoint metadata "train.*", where floats are written with 9 digits so
  // they read back bit-exactly), and back: one key per flag, named as the flag without "--"
  // ("batch-size" -> "batch_size").
  std::map<std::string, std::string> to_map() const;
  // The same keys with typed values for config.json: numbers, booleans, strings; a float is
  // its shortest round-trip form (1e-3, not 0.00100000005).
  nlohmann::json to_json() const;
  // Sets one option from its key and text value; throws vit::Error on an unknown key or a
  // value that cannot work (each error names the flag).
  void set(const std::string& key, const std::string& value);
  // Throws vit::Error when values conflict (e.g. batch-size not divisible by accum-steps).
  void validate() const;
};

// The model config as typed JSON (config.json "model"; same keys as config_to_metadata;
// mean and std as arrays of three numbers).
nlohmann::json config_to_json(const Config& c);

// Learning rate of update number `step` (0-based): linear warmup from lr/W to lr over
// W = warmup_epochs * steps_per_epoch updates, then constant, or cosine from lr to 0 at the
// last update of the run (epochs * steps_per_epoch).
double learning_rate(const TrainOptions& o, int64_t step, int64_t steps_per_epoch);

// Test seams: a different model factory (e.g. a fake model) and a callback after every
// optimizer step (e.g. to raise SIGINT at a chosen step). Empty members are not used.
struct TrainHooks {
  std::function<std::unique_ptr<Model>(const std::string& device, const Config&,
                                       const ModelOptions&)> make_model;
  std::function<void(int64_t step)> after_step;
  // --gpus N: the command that starts one rank with these arguments (default: this executable;
  // tests start the test binary instead).
  std::function<RankCommand(const std::vector<std::string>& args)> rank_command;
};

// The whole program: parses argv (argv[0] is the program name), trains, returns the exit
// status: 0 done, 1 error (one line on stderr, "vit_train: error: ..."), 2 bad usage,
// 130 / 143 stopped by SIGINT / SIGTERM (last.safetensors saved). Never calls exit().
int train_main(int argc, char** argv, const TrainHooks* hooks = nullptr);

}  // namespace vit
