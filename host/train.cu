// host/train.cu — see train.h. The training loop, evaluation, outputs (metrics.csv,
// config.json, checkpoints, curves.png), progress display and signal handling of vit_train.
// Device-agnostic: the model is a vit::Model, made by make_cuda_model or make_cpu_model.
#include "host/train.h"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/cifar.h"
#include "common/cli.h"
#include "common/error.h"
#include "common/params.h"
#include "common/curves.h"
#include "common/dataset.h"
#include "common/train_state.h"
#include "common/weights.h"
#include "host/cuda_model.h"
#include "host/dist.h"
#include "host/loader.h"
#include "kernels/common.cuh"

namespace vit {

// ---- options ------------------------------------------------------------------------------------

static std::string fmt_g(double v, int digits = 9) {
  char b[48];
  snprintf(b, sizeof b, "%.*g", digits, v);
  return b;
}

// A float as the double whose shortest decimal form is the float's shortest round-trip form
// (1e-3f -> 0.001, not 0.0010000000474974513): what a person typed, for config.json readers.
static double clean(float v) {
  if (!std::isfinite(v)) return (double)v;
  char b[32];
  auto r = std::to_chars(b, b + sizeof b - 1, v);
  *r.ptr = 0;
  return strtod(b, nullptr);
}

nlohmann::json TrainOptions::to_json() const {
  return {{"device", device},
          {"data", data},
          {"epochs", epochs},
          {"batch_size", batch_size},
          {"accum_steps", accum_steps},
          {"lr", clean(lr)},
          {"optimizer", optimizer},
          {"weight_decay", clean(weight_decay)},
          {"schedule", schedule},
          {"warmup_epochs", clean(warmup_epochs)},
          {"label_smoothing", clean(label_smoothing)},
          {"clip_grad", clean(clip_grad)},
          {"augment", augment},
          {"seed", seed},
          {"precision", precision},
          {"freeze_backbone", freeze_backbone},
          {"max_steps", max_steps},
          {"log_every", log_every},
          {"store_size", store_size}};
}

nlohmann::json config_to_json(const Config& c) {
  return {{"image_size", c.image_size},
          {"patch_size", c.patch_size},
          {"channels", c.channels},
          {"classes", c.classes},
          {"hidden", c.hidden},
          {"layers", c.layers},
          {"heads", c.heads},
          {"mlp", c.mlp},
          {"dropout", clean(c.dropout)},
          {"attn_dropout", clean(c.attn_dropout)},
          {"init_std", clean(c.init_std)},
          {"qkv_bias", c.qkv_bias},
          {"gelu", gelu_name(c.gelu)},
          {"ln_eps", clean(c.ln_eps)},
          {"final_ln", c.final_ln},
          {"mean", {clean(c.mean[0]), clean(c.mean[1]), clean(c.mean[2])}},
          {"std", {clean(c.std[0]), clean(c.std[1]), clean(c.std[2])}}};
}

std::map<std::string, std::string> TrainOptions::to_map() const {
  std::map<std::string, std::string> m;
  m["device"] = device;
  m["data"] = data;
  m["epochs"] = std::to_string(epochs);
  m["batch_size"] = std::to_string(batch_size);
  m["accum_steps"] = std::to_string(accum_steps);
  m["lr"] = fmt_g(lr);
  m["optimizer"] = optimizer;
  m["weight_decay"] = fmt_g(weight_decay);
  m["schedule"] = schedule;
  m["warmup_epochs"] = fmt_g(warmup_epochs);
  m["label_smoothing"] = fmt_g(label_smoothing);
  m["clip_grad"] = fmt_g(clip_grad);
  m["augment"] = augment;
  m["seed"] = std::to_string(seed);
  m["precision"] = precision;
  m["freeze_backbone"] = freeze_backbone ? "true" : "false";
  m["max_steps"] = std::to_string(max_steps);
  m["log_every"] = std::to_string(log_every);
  m["store_size"] = std::to_string(store_size);
  return m;
}

void TrainOptions::set(const std::string& key, const std::string& v) {
  std::string flag = "--" + key;
  for (char& ch : flag) if (ch == '_') ch = '-';
  auto non_negative = [&](double x) {
    if (!(x >= 0) || !std::isfinite(x)) throw Error(flag + " must be >= 0 (got " + v + ")");
  };
  auto positive = [&](double x) {
    if (!(x > 0) || !std::isfinite(x)) throw Error(flag + " must be positive (got " + v + ")");
  };
  if (key == "device") device = cli::parse_choice(flag, v, {"cuda", "cpu"});
  else if (key == "data") data = v;
  else if (key == "epochs") { epochs = cli::parse_int(flag, v); non_negative(epochs); }
  else if (key == "batch_size") { batch_size = cli::parse_int(flag, v); positive(batch_size); }
  else if (key == "accum_steps") { accum_steps = cli::parse_int(flag, v); positive(accum_steps); }
  else if (key == "lr") { lr = cli::parse_float(flag, v); positive(lr); }
  else if (key == "optimizer") optimizer = cli::parse_choice(flag, v, {"adam", "adamw"});
  else if (key == "weight_decay") { weight_decay = cli::parse_float(flag, v); non_negative(weight_decay); }
  else if (key == "schedule") schedule = cli::parse_choice(flag, v, {"constant", "cosine"});
  else if (key == "warmup_epochs") { warmup_epochs = cli::parse_float(flag, v); non_negative(warmup_epochs); }
  else if (key == "label_smoothing") {
    label_smoothing = cli::parse_float(flag, v);
    if (!(label_smoothing >= 0 && label_smoothing < 1))
      throw Error(flag + " must be in [0, 1) (got " + v + ")");
  }
  else if (key == "clip_grad") { clip_grad = cli::parse_float(flag, v); non_negative(clip_grad); }
  else if (key == "augment") augment = cli::parse_choice(flag, v, {"none", "flip", "crop-flip", "rrc-flip"});
  else if (key == "seed") {
    int64_t s = cli::parse_int64(flag, v);
    non_negative((double)s);
    seed = (uint64_t)s;
  }
  else if (key == "precision") precision = cli::parse_choice(flag, v, {"auto", "bf16", "tf32", "fp32"});
  else if (key == "tf32") precision = cli::parse_bool(flag, v) ? "tf32" : "fp32";
  else if (key == "freeze_backbone") freeze_backbone = cli::parse_bool(flag, v);
  else if (key == "max_steps") { max_steps = cli::parse_int64(flag, v); non_negative((double)max_steps); }
  else if (key == "log_every") { log_every = cli::parse_int(flag, v); non_negative(log_every); }
  else if (key == "store_size") { store_size = cli::parse_int(flag, v); non_negative(store_size); }
  else throw Error("unknown training option '" + key + "'");
}

void TrainOptions::validate() const {
  if (batch_size % accum_steps != 0)
    throw Error("--batch-size " + std::to_string(batch_size) + " is not divisible by --accum-steps " +
                std::to_string(accum_steps));
  if (warmup_epochs > epochs && epochs > 0)
    throw Error("--warmup-epochs " + fmt_g(warmup_epochs) + " is longer than --epochs " +
                std::to_string(epochs));
}

double learning_rate(const TrainOptions& o, int64_t step, int64_t steps_per_epoch) {
  const double pi = 3.14159265358979323846;
  int64_t warmup = (int64_t)std::llround((double)o.warmup_epochs * steps_per_epoch);
  if (step < warmup) return o.lr * (double)(step + 1) / (double)warmup;
  if (o.schedule == "constant") return o.lr;
  int64_t total = (int64_t)o.epochs * steps_per_epoch;
  double progress = (double)(step - warmup) / (double)std::max<int64_t>(1, total - warmup);
  progress = std::min(1.0, std::max(0.0, progress));
  return o.lr * 0.5 * (1.0 + std::cos(pi * progress));
}

// ---- small helpers ------------------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

volatile sig_atomic_t g_signal = 0;
void on_stop_signal(int sig) {
  if (!g_signal) g_signal = sig;
}

// Installs the SIGINT/SIGTERM handlers for the duration of a run and restores the previous
// ones afterwards (train_main also runs inside the test binary). SA_RESETHAND: a second
// Ctrl-C gets the default action, so a user who really wants out is never stuck.
struct SignalScope {
  struct sigaction old_int, old_term;
  SignalScope() {
    g_signal = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
  }
  ~SignalScope() {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
  }
};

namespace fs = std::filesystem;

// The directory part of a path ("." for a bare file name).
std::string parent_dir(const std::string& path) {
  const fs::path d = fs::path(path).parent_path();
  return d.empty() ? "." : d.string();
}
bool is_dir(const std::string& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}
bool is_file(const std::string& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}
void make_dirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec || !is_dir(path))
    throw Error("cannot create the output directory '" + path + "': " +
                (ec ? ec.message() : "a file of that name exists"));
}

// The dataset: when the default-style directory (".../cifar-10-batches-bin") is missing, fetch
// it with data/get_cifar10.sh (found next to the working directory or the executable).
void ensure_dataset(const std::string& dir) {
  fs::path p(dir);
  if (!p.has_filename()) p = p.parent_path();  // "data/cifar-10-batches-bin/"
  if (is_dir(dir) || p.filename() != "cifar-10-batches-bin") return;
  std::vector<std::string> candidates = {"data/get_cifar10.sh"};
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back((exe.parent_path() / "data/get_cifar10.sh").string());
  std::string script;
  for (const std::string& c : candidates)
    if (is_file(c)) { script = c; break; }
  if (script.empty())
    throw Error("CIFAR-10 not found in '" + dir +
                "': download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and unpack "
                "it there (make data does this from the source tree)");
  printf("CIFAR-10 not found in %s: fetching it with %s\n", dir.c_str(), script.c_str());
  fflush(stdout);
  std::string cmd = "bash '" + script + "' '" + parent_dir(dir) + "'";
  if (system(cmd.c_str()) != 0 || !is_dir(dir))
    throw Error("could not fetch CIFAR-10 into '" + dir + "' (see the message above)");
}

std::string timestamp() {
  time_t t = time(nullptr);
  struct tm tmv;
  localtime_r(&t, &tmv);
  char b[32];
  strftime(b, sizeof b, "%Y%m%d-%H%M%S", &tmv);
  return b;
}

std::string hms(double s) {
  if (!std::isfinite(s) || s < 0) s = 0;
  long t = (long)(s + 0.5);
  char b[32];
  if (t >= 3600) snprintf(b, sizeof b, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else snprintf(b, sizeof b, "%ld:%02ld", t / 60, t % 60);
  return b;
}

Augment parse_augment(const std::string& s) {
  if (s == "flip") return Augment::Flip;
  if (s == "crop-flip") return Augment::CropFlip;
  if (s == "rrc-flip") return Augment::RrcFlip;
  return Augment::None;
}

const char* METRICS_HEADER =
    "epoch,train_loss,train_acc,test_loss,test_acc,lr,seconds,images_per_s";

// metrics.csv of a resumed run: keep the header and the rows of epochs <= `epochs_done`.
void prepare_metrics(const std::string& path, int64_t epochs_done) {
  std::vector<std::string> keep;
  std::ifstream in(path);
  std::string line;
  if (in && std::getline(in, line) && line == METRICS_HEADER) {
    while (std::getline(in, line)) {
      long e = strtol(line.c_str(), nullptr, 10);
      if (e >= 1 && e <= epochs_done) keep.push_back(line);
    }
  }
  in.close();
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << METRICS_HEADER << "\n";
    for (const std::string& l : keep) out << l << "\n";
    if (!out) throw Error("cannot write '" + tmp + "'");
  }
  if (rename(tmp.c_str(), path.c_str()) != 0)
    throw Error("cannot write '" + path + "': " + strerror(errno));
}

void append_line(const std::string& path, const std::string& line) {
  FILE* f = fopen(path.c_str(), "a");
  if (!f) throw Error("cannot append to '" + path + "': " + strerror(errno));
  fputs(line.c_str(), f);
  fputc('\n', f);
  fclose(f);
}

// Per-epoch accumulators (double on the host, added once per micro-batch in a fixed order so
// a resumed epoch sums exactly like an uninterrupted one).
struct Sums {
  double loss = 0;
  int64_t correct = 0, count = 0;
  void add(const Metrics& m) { loss += m.loss_sum; correct += m.correct; count += m.count; }
  double mean_loss() const { return count ? loss / count : 0.0; }
  double acc() const { return count ? (double)correct / count : 0.0; }
};

// Several ranks: the metrics of every rank summed (exact: see Metrics), the first non-finite
// step the earliest of any rank. Every rank gets the same result.
Metrics reduce_metrics(Metrics m, Communicator* comm) {
  if (!comm) return m;
  double loss = m.loss_sum;
  int64_t n[2] = {m.correct, m.count};
  comm->sum(&loss, 1);
  comm->sum(n, 2);
  const int64_t none = INT64_MAX;
  const int64_t first = comm->min(m.first_nonfinite_step >= 0 ? m.first_nonfinite_step : none);
  double bad = m.first_nonfinite_step >= 0 && m.first_nonfinite_step == first ? m.first_nonfinite_loss : 0;
  comm->sum(&bad, 1);
  m.loss_sum = loss;
  m.correct = n[0];
  m.count = n[1];
  m.first_nonfinite_step = first == none ? -1 : first;
  m.first_nonfinite_loss = (float)bad;
  return m;
}

// The test split; with several ranks, rank r evaluates batches r, r + W, ... and the sums are
// reduced (the same totals as one rank's).
Sums evaluate(Model& model, Loader& test, int batch, int64_t step, Communicator* comm) {
  model.take_metrics();  // nothing of training may leak into the evaluation
  test.start_epoch(0, batch, /*shuffle=*/false);
  const int W = comm ? comm->world() : 1, rank = comm ? comm->rank() : 0;
  int64_t i = 0;
  for (Batch b = test.next(); b.count > 0; b = test.next(), ++i)
    if (i % W == rank) model.forward(b.images, b.labels, b.count, /*train=*/false, step);
  Sums s;
  s.add(reduce_metrics(model.take_metrics(), comm));
  return s;
}

}  // namespace

// ---- the program --------------------------------------------------------------------------------

static std::unique_ptr<Model> make_model(const std::string& device, const Config& c,
                                         const ModelOptions& mo, const TrainHooks* hooks,
                                         bool quiet) {
  if (hooks && hooks->make_model) return hooks->make_model(device, c, mo);
  if (device == "cpu") return make_cpu_model(c, mo);
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    std::string why = e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device";
    cudaGetLastError();
    throw Error("no usable CUDA GPU (" + why +
                "): train on the CPU with --device cpu (the reference path; slow)");
  }
  // Before allocating: an out-of-memory failure then has the plan right above it.
  if (!quiet) printf("%s\n", cuda_memory_plan(c, mo).describe().c_str());
  fflush(stdout);
  return make_cuda_model(c, mo);
}

// The precision that runs (config.json and checkpoints record it, never "auto"): the CPU
// reference is FP32 whatever was asked; auto is bf16 on compute capability >= 8.0 (BF16 tensor
// cores; simt's device is an sm_90), else tf32.
static std::string resolve_precision(const TrainOptions& o, bool typed) {
  if (o.device == "cpu") {
    if (typed && o.precision != "fp32")
      printf("note: --device cpu ignores --precision %s (the CPU reference computes in FP32)\n",
             o.precision.c_str());
    return "fp32";
  }
  if (o.precision != "auto") return o.precision;
  int n = 0, major = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0 ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess) {
    cudaGetLastError();  // no GPU: make_model reports it
    return "tf32";
  }
  return major >= 8 ? "bf16" : "tf32";
}

namespace {

struct Run {
  TrainOptions opt;
  Config cfg;
  std::string preset = "basic";
  std::string out;
  std::string resume, init;
  bool new_head = false, eval_only = false;
  bool strict = false;   // --strict: an unreadable image stops the run
  bool tty = false;
  DatasetInfo ds;        // what --data holds (format, class count and names)
  TrainingCheckpoint ck;  // --resume: the checkpoint
  LoadedWeights init_w;   // --init: the weights
  int gpus = 0;           // --gpus N (0: not given)
  // --no-graph: eager steps. Not a training option (the results are the same bits either way),
  // so neither checkpoints nor config.json record it.
  bool graph = true;
  DistConfig dist;        // this process's rank (world 1 unless run as one of several ranks)
};

int run_training(Run& r, const std::string& command, const TrainHooks* hooks);

}  // namespace

static int g_rank = 0;  // this process's rank, for its error lines

int train_main(int argc, char** argv, const TrainHooks* hooks) {
  const char* prog = "vit_train";
  g_rank = 0;
  try {
    Run r;
    cli::Parser p(prog, "vit_train [flags]",
                  "Train a Vision Transformer on CIFAR-10 (defaults: the reference's basic ViT, "
                  "Adam, lr 1e-4, batch 64, 50 epochs, no augmentation).");
    cli::ModelFlags mf;
    mf.add_to(p);
    std::map<std::string, std::string> given;  // training options typed on the command line
    auto opt = [&](const std::string& name, const std::string& metavar, const std::string& help) {
      std::string key = name;
      for (char& ch : key) if (ch == '-') ch = '_';
      p.value(name, metavar, help, [&given, key](const std::string& v) { given[key] = v; });
    };
    p.section("Training");
    opt("device", "cuda|cpu", "where to train (default cuda; cpu = the reference model, slow)");
    opt("data", "DIR", "CIFAR-10 or CIFAR-100 binary directory, or an image folder DIR/{train,val}/<class>/ "
        "(default data/cifar-10-batches-bin; fetched when missing)");
    opt("store-size", "N", "image folders: resize each image once to N x N at load (default: the model's "
        "--image-size; larger gives rrc-flip crops headroom)");
    p.flag("strict", "image folders: stop at an unreadable image instead of skipping it",
           [&] { r.strict = true; });
    opt("epochs", "N", "epochs to train (default 50)");
    opt("batch-size", "N", "images per optimizer step (default 64; 32 with --preset vit-b16)");
    opt("accum-steps", "N", "split each batch into N micro-batches (gradient accumulation; default 1)");
    opt("lr", "X", "peak learning rate (default 1e-4)");
    opt("optimizer", "adam|adamw", "default adam (weight decay as L2); adamw decouples it");
    opt("weight-decay", "X", "on weight matrices only (default 0)");
    opt("schedule", "constant|cosine", "learning-rate schedule, per step (default constant)");
    opt("warmup-epochs", "X", "linear warmup from 0 before the schedule (default 0)");
    opt("label-smoothing", "X", "cross-entropy label smoothing (default 0)");
    opt("clip-grad", "X", "clip the global gradient norm (default 0 = off)");
    opt("augment", "none|flip|crop-flip|rrc-flip", "training augmentation (default none)");
    opt("seed", "N", "seed of every random draw: init, order, dropout, augmentation (default 42)");
    opt("max-steps", "N", "stop after N optimizer steps in all, saving last.safetensors (0 = off)");
    opt("log-every", "N", "steps between log lines when not on a terminal (0 = ~10 per epoch)");
    opt("precision", "bf16|tf32|fp32",
        "GPU precision: bf16 = BF16 GEMMs/activations, FP32 master weights (default on compute "
        "capability >= 8.0), tf32 = FP32 storage + TF32 GEMMs (default before 8.0), fp32 = full "
        "FP32 (matches --device cpu)");
    p.boolean("tf32", "alias: --tf32 = --precision tf32, --no-tf32 = --precision fp32",
              [&given](bool b) { given["tf32"] = b ? "true" : "false"; });
    p.boolean("graph", "run each training step as one CUDA graph (default on; --no-graph launches "
              "eagerly, for debugging: the same results)",
              [&r](bool b) { r.graph = b; });
    p.flag("freeze-backbone",
           "linear probe: train only the head (and the final LayerNorm); the rest keeps its weights",
           [&given] { given["freeze_backbone"] = "true"; });
    p.section("Several GPUs (data parallel, NCCL)");
    p.value("gpus", "N", "start N ranks on this machine, one per GPU; the batch is split among them "
            "(under torchrun/mpirun leave it out: RANK/WORLD_SIZE or OMPI_COMM_WORLD_* are read)",
            [&](const std::string& v) {
              r.gpus = (int)cli::parse_int64("--gpus", v);
              if (r.gpus < 1 || r.gpus > 4096) throw Error("--gpus must be in 1..4096 (got " + v + ")");
            });
    p.value("rendezvous", "FILE", "ranks exchange NCCL's id through this shared file instead of TCP "
            "at MASTER_ADDR:MASTER_PORT (a new path per run)",
            [&](const std::string& v) { r.dist.rendezvous_file = v; });
    p.value("dist-timeout", "S", "seconds a rank waits for the others to join (default 300)",
            [&](const std::string& v) {
              r.dist.timeout_s = std::atof(v.c_str());
              if (!(r.dist.timeout_s > 0)) throw Error("--dist-timeout must be a positive number of seconds (got " + v + ")");
            });
    p.section("Output and checkpoints");
    p.value("out", "DIR", "output directory (default runs/<preset>-<time>; with --resume: the checkpoint's)",
            [&](const std::string& v) { r.out = v; });
    p.value("resume", "FILE", "continue a run exactly from its last.safetensors",
            [&](const std::string& v) { r.resume = v; });
    p.value("init", "FILE", "start from these weights (ours, tintn or torchvision layout)",
            [&](const std::string& v) { r.init = v; });
    p.flag("new-head", "with --init: a fresh classifier when the class count differs",
           [&] { r.new_head = true; });
    p.flag("eval-only", "with --init: evaluate on the test split and exit",
           [&] { r.eval_only = true; });
    std::vector<std::string> pos = p.parse(argc, argv);
    if (p.help_requested()) {
      fputs(p.usage().c_str(), stdout);
      return 0;
    }
    if (!pos.empty()) throw Error("unexpected argument '" + pos[0] + "' (see --help)");
    if (!r.resume.empty() && !r.init.empty()) throw Error("--resume and --init exclude each other");
    if (r.eval_only && r.init.empty()) throw Error("--eval-only needs --init FILE (the weights to evaluate)");
    if (r.new_head && r.init.empty()) throw Error("--new-head needs --init FILE");

    // Ranks: from the environment (torchrun / mpirun / our own launcher), or --gpus N to come.
    {
      DistConfig env = dist_from_environment();
      env.rendezvous_file = r.dist.rendezvous_file;
      env.timeout_s = r.dist.timeout_s;
      r.dist = env;
    }
    if (r.dist.world > 1 && r.gpus > 0 && r.gpus != r.dist.world)
      throw Error("--gpus " + std::to_string(r.gpus) + " but WORLD_SIZE=" +
                  std::to_string(r.dist.world) + ": under torchrun or mpirun leave --gpus out");
    const int W = r.dist.world > 1 ? r.dist.world : std::max(1, r.gpus);
    const bool accum_given = given.count("accum_steps") > 0;
    const int64_t accum_per_rank = accum_given ? cli::parse_int64("--accum-steps", given["accum_steps"]) : 1;
    if (accum_per_rank < 1) throw Error("--accum-steps must be at least 1");
    // The dataset decides the class count (image folders, CIFAR-100): a --classes that says
    // otherwise is a mistake, and without --classes the classifier follows the dataset.
    const std::string data_dir = given.count("data") ? given["data"] : r.opt.data;
    r.ds = probe_dataset(data_dir);
    if (r.ds.classes > 0) {
      const std::string n = std::to_string(r.ds.classes);
      const std::string what = r.ds.format == DataFormat::ImageFolder
                                   ? n + " class folders in " + data_dir + "/train"
                                   : "the 100 fine labels of CIFAR-100";
      if (mf.given("classes") && mf.overrides["classes"] != n)
        throw Error("--classes " + mf.overrides["classes"] + " contradicts the dataset: " + what +
                    " (drop --classes: the classifier follows the dataset)");
      // Fresh and --init runs get the dataset's count as if typed (--init then needs --new-head
      // when the file's head differs); a resumed run is checked against its checkpoint below.
      if (r.resume.empty()) mf.overrides["classes"] = n;
    }

    // Options: defaults <- the checkpoint's (when resuming) <- the flags typed.
    if (!r.resume.empty()) {
      TrainingCheckpoint& ck = r.ck;
      ck = load_training_checkpoint(r.resume, mf.overrides);
      for (const auto& [k, v] : ck.train) {
        if (k == "device" || k == "data") continue;  // where, not what: the flags' defaults
        r.opt.set(k, v);
      }
      // Micro-batches per step over all ranks: ranks x --accum-steps (the checkpoint's count).
      const int64_t ck_micro = cli::parse_int64("accum_steps", ck.train["accum_steps"]);
      if (accum_given ? W * accum_per_rank != ck_micro : ck_micro % W != 0)
        throw Error("the checkpoint takes " + std::to_string(ck_micro) + " micro-batch(es) per step; " +
                    std::to_string(W) + " rank(s)" +
                    (accum_given ? " x --accum-steps " + std::to_string(accum_per_rank) + " would take " +
                                       std::to_string(W * accum_per_rank)
                                 : " cannot split them evenly") +
                    " (the random draws depend on it): resume with ranks x --accum-steps = " +
                    std::to_string(ck_micro));
      for (const char* k : {"batch_size", "seed"})
        if (given.count(k) && given[k] != ck.train[k]) {
          std::string flag = std::string("--") + k;
          for (char& ch : flag) if (ch == '_') ch = '-';
          throw Error(flag + " cannot change on --resume (the checkpoint has " + ck.train[k] +
                      ": the loader position and random draws depend on it)");
        }
      r.cfg = ck.config;
      r.preset = ck.preset;
      if (r.ds.classes > 0 && r.cfg.classes != r.ds.classes)
        throw Error("'" + r.resume + "' has a " + std::to_string(r.cfg.classes) +
                    "-class head but '" + data_dir + "' has " + std::to_string(r.ds.classes) +
                    " classes (a different dataset?)");
    } else if (!r.init.empty()) {
      LoadOptions lo;
      lo.base = mf.unvalidated("basic");
      lo.given = mf.overrides;
      lo.new_head = r.new_head;
      lo.head_seed = given.count("seed") ? cli::parse_int64("--seed", given["seed"]) : r.opt.seed;
      r.init_w = load_weights(r.init, lo);
      r.cfg = r.init_w.config;
      printf("%s: %s\n", r.init.c_str(), r.init_w.summary().c_str());
      r.preset = mf.preset_name.empty() ? "basic" : mf.preset_name;
    } else {
      r.cfg = mf.config("basic");
      r.preset = mf.preset_name.empty() ? "basic" : mf.preset_name;
    }
    // The reference fine-tuned vit-b16 with batch 32 (it cannot hold 64 at 224 on most GPUs).
    if (r.resume.empty() && mf.preset_name == "vit-b16") r.opt.batch_size = 32;
    for (auto& [k, v] : given) {
      std::string key = k;
      for (char& ch : key) if (ch == '-') ch = '_';
      r.opt.set(key, v);
    }
    // accum_steps from here on counts the micro-batches of a step over all ranks.
    if (accum_given) r.opt.accum_steps = (int)(W * accum_per_rank);
    else if (r.resume.empty()) r.opt.accum_steps = W;
    if (W > 1 && r.opt.device != "cuda")
      throw Error("several ranks (--gpus / WORLD_SIZE) need --device cuda");
    if (W > 1 && r.opt.batch_size % r.opt.accum_steps != 0)
      throw Error("--batch-size " + std::to_string(r.opt.batch_size) + " cannot be split into " +
                  std::to_string(W) + " rank(s) x " + std::to_string(r.opt.accum_steps / W) +
                  " micro-batch(es): make it a multiple of " + std::to_string(r.opt.accum_steps));
    r.opt.validate();
    if (given.count("precision") && given.count("tf32"))
      throw Error("--precision and --tf32/--no-tf32 exclude each other (--no-tf32 = --precision fp32)");
    r.opt.precision = resolve_precision(r.opt, given.count("precision") || given.count("tf32"));
    validate(r.cfg);
    if (r.ds.format != DataFormat::ImageFolder && r.opt.store_size != 0 &&
        r.opt.store_size != CIFAR_IMAGE_SIZE)
      throw Error("--store-size is for image-folder datasets: " + std::string(data_format_name(r.ds.format)) +
                  " images are stored at 32x32 (the model resizes them to --image-size)");
    if (r.strict && r.ds.format != DataFormat::ImageFolder)
      throw Error("--strict is for image-folder datasets ('" + data_dir + "' is " +
                  data_format_name(r.ds.format) + " binary, checked completely either way)");
    r.tty = isatty(STDOUT_FILENO);

    std::string command;
    for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
    if (r.gpus > 1 && r.dist.world == 1) {  // the launcher: start the ranks, wait for them
      if (!have_nccl())
        throw Error("this vit_train was built without NCCL, so --gpus " + std::to_string(r.gpus) +
                    " cannot work: install NCCL (libnccl-dev) and rebuild");
      ensure_dataset(r.opt.data);  // once, before the ranks read it
      return launch_local_ranks(r.gpus, std::vector<std::string>(argv, argv + argc),
                                hooks ? hooks->rank_command : nullptr);
    }
    SignalScope signals;
    return run_training(r, command, hooks);
  } catch (const Error& e) {
    fflush(stdout);
    if (g_rank > 0) fprintf(stderr, "%s[rank %d]: error: %s\n", prog, g_rank, e.what());
    else fprintf(stderr, "%s: error: %s\n", prog, e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    fflush(stdout);
    fprintf(stderr, "%s: error: out of host memory: lower --batch-size\n", prog);
    return 1;
  }
}

namespace {

int run_training(Run& r, const std::string& command, const TrainHooks* hooks) {
  const TrainOptions& o = r.opt;
  const Config& cfg = r.cfg;
  const int micro = o.batch_size / o.accum_steps;
  const bool cuda = o.device == "cuda";

  // Several ranks: the communicator first (it picks this rank's GPU). Rank 0 alone prints and
  // writes; the others' stdout goes to /dev/null (their errors still reach stderr).
  std::unique_ptr<Communicator> comm;
  if (r.dist.world > 1) comm = std::make_unique<Communicator>(r.dist);
  const int W = comm ? comm->world() : 1, rank = comm ? comm->rank() : 0;
  const bool main_rank = rank == 0;
  const int micro_per_rank = o.accum_steps / W;  // this rank's micro-batches of a full step
  g_rank = rank;
  if (!main_rank) {
    fflush(stdout);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) { dup2(devnull, STDOUT_FILENO); close(devnull); }
  }
  if (W > 1) r.tty = false;  // progress lines at fixed steps: every rank drains at the same ones
  // The stored image size S: CIFAR's 32, or what an image folder is resized to at load (the
  // model's input size unless --store-size asks for headroom). The input kernel crops and
  // resizes from S; crop-flip's padding scales with S (4 pixels at 32, the CIFAR recipe).
  const bool folder = r.ds.format == DataFormat::ImageFolder;
  const int S = !folder ? CIFAR_IMAGE_SIZE : o.store_size > 0 ? o.store_size : cfg.image_size;
  DataOptions dopt;
  dopt.store_size = S;
  dopt.strict = r.strict;
  dopt.tty = r.tty;

  // Model first: a missing GPU is reported before any data is read.
  ModelOptions mo;
  mo.seed = o.seed;
  mo.label_smoothing = o.label_smoothing;
  mo.input.src_size = S;
  mo.input.crop_pad = std::max(1, (S + 4) / 8);
  mo.input.augment = parse_augment(o.augment);
  mo.max_batch = micro;
  mo.precision = o.precision == "bf16"   ? Precision::Bf16
                 : o.precision == "tf32" ? Precision::Tf32
                                         : Precision::Fp32;
  mo.freeze_backbone = o.freeze_backbone;
  mo.cuda_graph = r.graph;
  std::unique_ptr<Model> model = make_model(o.device, cfg, mo, hooks, !main_rank);
  model->set_gradient_reducer(comm.get());
  const ParamLayout& layout = model->layout();
  std::vector<float> params(layout.total, 0.0f);

  if (main_rank) ensure_dataset(o.data);
  if (comm) comm->max(0);  // the others wait until rank 0 has the data
  Loader test(o.data, Split::Test, cfg.classes, micro, o.seed, cuda, dopt);

  if (r.eval_only) {
    model->set_params(r.init_w.params.data());
    auto t0 = Clock::now();
    Sums s = evaluate(*model, test, micro, 0, comm.get());
    printf("test: loss %.4f  acc %.4f  (%lld images, %.1f s)\n", s.mean_loss(), s.acc(),
           (long long)s.count, seconds_since(t0));
    return 0;
  }

  Loader train(o.data, Split::Train, cfg.classes, o.batch_size, o.seed, cuda, dopt);
  const int64_t spe = train.batches(o.batch_size);  // steps per epoch

  // State: fresh, from --init weights, or the checkpoint's.
  TrainState st;
  if (!r.resume.empty()) {
    TrainingCheckpoint& ck = r.ck;
    st = ck.state;
    model->set_params(ck.params.data());
    model->set_adam_state(ck.adam_m.data(), ck.adam_v.data());
    ck.params = ck.adam_m = ck.adam_v = std::vector<float>();  // in the model now
    if (st.batch > spe)
      throw Error("'" + r.resume + "' stopped at batch " + std::to_string(st.batch) +
                  " of an epoch that has only " + std::to_string(spe) + " (different dataset?)");
  } else {
    if (!r.init.empty()) params = std::move(r.init_w.params);
    else init_params(cfg, layout, o.seed, params.data());
    model->set_params(params.data());
    std::vector<float> zeros(layout.total, 0.0f);
    model->set_adam_state(zeros.data(), zeros.data());
  }

  // Outputs.
  r.out = !r.out.empty() ? r.out
          : !r.resume.empty() ? parent_dir(r.resume)
                              : "runs/" + r.preset + "-" + timestamp();
  if (main_rank) make_dirs(r.out);
  const std::string metrics_path = r.out + "/metrics.csv";
  const std::string last_path = r.out + "/last.safetensors";
  const std::string best_path = r.out + "/best.safetensors";
  if (main_rank) prepare_metrics(metrics_path, st.epoch);
  // The class names travel in every checkpoint (vit_predict prints them), when the dataset
  // has names for exactly the model's classes.
  std::vector<std::string> class_names;
  if ((int)r.ds.class_names.size() == cfg.classes) class_names = r.ds.class_names;
  std::map<std::string, std::string> extra_md;
  if (!class_names.empty()) extra_md["class_names"] = nlohmann::json(class_names).dump();
  if (main_rank) {
    nlohmann::json j;
    j["command"] = command;
    j["preset"] = r.preset;
    j["model"] = config_to_json(cfg);
    j["train"] = o.to_json();
    j["parameters"] = layout.count();
    j["dataset"] = {{"dir", o.data},
                    {"format", data_format_name(r.ds.format)},
                    {"classes", cfg.classes},
                    {"class_names", class_names},
                    {"image_size", S},
                    {"train_images", train.size()},
                    {"test_images", test.size()},
                    {"skipped_images", train.skipped() + test.skipped()}};
    if (!r.resume.empty()) j["resumed_from"] = r.resume;
    if (!r.init.empty()) j["init"] = r.init;
    std::ofstream(r.out + "/config.json") << j.dump(2) << "\n";
  }
  const std::map<std::string, std::string> train_md = o.to_map();
  auto save = [&](const std::string& path) {
    if (!main_rank) return;  // every rank holds the same state: rank 0 writes it
    params.resize(layout.total);
    model->get_params(params.data());
    std::vector<float> m(layout.total), v(layout.total);
    model->get_adam_state(m.data(), v.data());
    save_training_checkpoint(path, cfg, layout, r.preset, train_md, st, params, m, v, extra_md);
  };

  const std::string ranks_note =
      W > 1 ? " x " + std::to_string(W) + " ranks (" + r.dist.launcher + ", GPU = LOCAL_RANK)" : "";
  const std::string micro_note =
      o.accum_steps > 1 ? " (" + std::to_string(o.accum_steps) + " micro-batches of " +
                              std::to_string(micro) +
                              (W > 1 ? ", " + std::to_string(micro_per_rank) + " per rank" : "") + ")"
                        : "";
  printf("vit_train: %s preset, %.2fM parameters, device %s (precision %s)%s; %lld train / %lld "
         "test images; %lld steps/epoch of %d images%s; output in %s\n",
         r.preset.c_str(), layout.count() / 1e6, o.device.c_str(), o.precision.c_str(),
         ranks_note.c_str(),
         (long long)train.size(), (long long)test.size(), (long long)spe, o.batch_size,
         micro_note.c_str(), r.out.c_str());
  if (r.ds.format != DataFormat::Cifar10)
    printf("dataset: %s, %d classes, images stored at %dx%d%s\n", data_format_name(r.ds.format),
           cfg.classes, S, S,
           train.skipped() + test.skipped() > 0
               ? (", " + std::to_string(train.skipped() + test.skipped()) + " unreadable skipped").c_str()
               : "");
  if (o.freeze_backbone) {
    size_t trained = 0;
    for (const ParamTensor& t : layout.tensors)
      if (t.offset >= first_trained_offset(layout, mo)) trained += t.numel;
    printf("--freeze-backbone: training %zu of %zu parameters (%s)\n", trained, layout.count(),
           cfg.final_ln ? "final LayerNorm and head" : "head");
  }
  if (!r.resume.empty())
    printf("resuming from %s at epoch %lld, batch %lld (step %lld)\n", r.resume.c_str(),
           (long long)st.epoch + 1, (long long)st.batch, (long long)st.step);
  fflush(stdout);

  OptimConfig oc;
  oc.kind = o.optimizer == "adamw" ? OptimConfig::AdamW : OptimConfig::Adam;
  oc.weight_decay = o.weight_decay;
  oc.clip_grad = o.clip_grad;
  const int log_every = o.log_every > 0 ? o.log_every : (int)std::max<int64_t>(1, spe / 10);
  const auto run_t0 = Clock::now();
  double run_train_seconds = 0;
  int64_t run_train_images = 0;
  bool curves_warned = false;

  // Training metrics stay on the device and are read only here, at log lines, before a save
  // and at the end of an epoch: reading them is the one host-device sync, so the host otherwise
  // queues steps ahead of the GPU. The sums are exact (see Metrics), so when they are read does
  // not change them. A NaN/Inf loss is found here too, by the step the model recorded.
  struct StepAt { int64_t micro, step, epoch, batch; };  // the steps since the last drain
  std::vector<StepAt> pending;
  auto drain = [&]() {
    Metrics mt = reduce_metrics(model->take_metrics(), comm.get());
    if (mt.first_nonfinite_step >= 0) {
      StepAt at = {mt.first_nonfinite_step, st.step, st.epoch, st.batch};
      for (const StepAt& p : pending)
        if (p.micro <= mt.first_nonfinite_step) at = p;
      if (r.tty) printf("\n");
      fflush(stdout);
      throw Error("loss is " + fmt_g(mt.first_nonfinite_loss) + " at step " +
                  std::to_string(at.step + 1) + " (epoch " + std::to_string(at.epoch + 1) +
                  ", batch " + std::to_string(at.batch + 1) +
                  "): training stopped; the last good checkpoint is kept" +
                  (is_file(last_path) ? " (" + last_path + ")" : "") +
                  "; try a lower --lr or --clip-grad 1");
    }
    pending.clear();
    st.loss_sum += mt.loss_sum;
    st.correct += mt.correct;
    st.count += mt.count;
  };

  auto stop_now = [&](const char* why, int code) {
    drain();  // never save a diverged model
    save(last_path);
    if (r.tty) printf("\n");
    printf("%s: saved %s (epoch %lld, batch %lld, step %lld); continue with: vit_train --resume %s\n",
           why, last_path.c_str(), (long long)st.epoch + 1, (long long)st.batch,
           (long long)st.step, last_path.c_str());
    fflush(stdout);
    return code;
  };

  while (st.epoch < o.epochs) {
    const int64_t e = st.epoch;
    train.start_epoch(e, o.batch_size, /*shuffle=*/true, st.batch);
    auto t0 = Clock::now();
    double prev_seconds = st.seconds;
    int64_t images_now = 0;
    double last_print = -1;
    for (Batch b = train.next(); b.count > 0; b = train.next()) {
      pending.push_back({(int64_t)st.micro_step, st.step, e, b.index});
      // Micro-batch m of the step draws its randomness from micro-step st.micro_step + m on
      // whichever rank runs it; rank r runs m in [r * micro_per_rank, (r + 1) * micro_per_rank),
      // so W ranks compute exactly what one rank with W x the micro-batches would.
      const int n_micro = (b.count + micro - 1) / micro;
      std::vector<Model::MicroBatch> mbs;
      for (int m = rank * micro_per_rank; m < std::min(n_micro, (rank + 1) * micro_per_rank); ++m) {
        const int off = m * micro, cnt = std::min(micro, b.count - off);
        mbs.push_back(Model::MicroBatch{b.images + (size_t)off * train.image_bytes(),
                                        b.labels + off, cnt, (uint64_t)(st.micro_step + m)});
      }
      const double lr = learning_rate(o, st.step, spe);
      // zero_grad, each micro-batch's forward + backward, the update: one CUDA graph on the GPU.
      model->train_step(mbs.data(), (int)mbs.size(), oc, (float)lr, st.step + 1, 1.0f / n_micro);
      st.micro_step += n_micro;
      ++st.step;
      st.batch = b.index + 1;
      st.lr = lr;
      images_now += b.count;
      st.seconds = prev_seconds + seconds_since(t0);
      if (hooks && hooks->after_step) hooks->after_step(st.step);

      // Progress: a bar redrawn in place on a terminal, plain lines otherwise.
      const double el = seconds_since(t0);
      const double ips = el > 0 ? images_now / el : 0;
      const bool last_batch = st.batch == spe;
      bool drained = false;
      if (r.tty ? (el - last_print >= 0.25 || last_batch) : (st.batch % log_every == 0 || last_batch)) {
        drain();
        drained = true;
        last_print = el;
        double acc = st.count ? (double)st.correct / st.count : 0;
        double loss = st.count ? st.loss_sum / st.count : 0;
        double eta = ips > 0 ? (double)(train.size() - std::min<int64_t>(train.size(), st.batch * o.batch_size)) / ips : 0;
        if (r.tty) {
          const int W = 24;
          int fill = (int)(W * st.batch / spe);
          std::string bar(fill, '=');
          if (fill < W) bar += '>' + std::string(W - fill - 1, ' ');
          printf("\repoch %lld/%d [%s] %lld/%lld loss %.4f acc %.4f %.0f img/s ETA %s   ",
                 (long long)e + 1, o.epochs, bar.c_str(), (long long)st.batch, (long long)spe, loss,
                 acc, ips, hms(eta).c_str());
        } else {
          printf("epoch %lld/%d step %lld/%lld loss %.4f acc %.4f %.0f img/s ETA %s\n",
                 (long long)e + 1, o.epochs, (long long)st.batch, (long long)spe, loss, acc, ips,
                 hms(eta).c_str());
        }
        fflush(stdout);
      }
      // Several ranks stop together: they agree on a signal at the steps where they all drain.
      const int sig = !comm ? (int)g_signal : drained ? (int)comm->max(g_signal) : 0;
      if (sig)
        return stop_now(sig == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)", 128 + sig);
      if (o.max_steps > 0 && st.step >= o.max_steps) return stop_now("stopped at --max-steps", 0);
    }
    drain();  // the last log line drained already; this keeps the invariant explicit
    const double train_seconds = st.seconds;
    run_train_seconds += seconds_since(t0);
    run_train_images += images_now;

    Sums te = evaluate(*model, test, micro, st.micro_step, comm.get());
    const double train_loss = st.count ? st.loss_sum / st.count : 0;
    const double train_acc = st.count ? (double)st.correct / st.count : 0;
    const double epoch_seconds = prev_seconds + seconds_since(t0);
    char row[512];
    snprintf(row, sizeof row, "%lld,%.9g,%.9g,%.9g,%.9g,%.9g,%.3f,%.1f", (long long)e + 1,
             train_loss, train_acc, te.mean_loss(), te.acc(), st.lr, epoch_seconds,
             train_seconds > 0 ? st.count / train_seconds : 0.0);
    if (main_rank) append_line(metrics_path, row);
    if (r.tty) printf("\n");
    printf("epoch %lld/%d: train loss %.4f acc %.4f | test loss %.4f acc %.4f | lr %.3g | %.1f s, "
           "%.0f img/s\n",
           (long long)e + 1, o.epochs, train_loss, train_acc, te.mean_loss(), te.acc(), st.lr,
           epoch_seconds, train_seconds > 0 ? st.count / train_seconds : 0.0);
    fflush(stdout);

    // The epoch is done: the state moves to the start of the next one, then checkpoints.
    st.epoch = e + 1;
    st.batch = 0;
    st.loss_sum = 0;
    st.correct = st.count = 0;
    st.seconds = 0;
    const bool best = te.acc() > st.best_acc;
    if (best) {
      st.best_acc = te.acc();
      st.best_epoch = e + 1;
    }
    save(last_path);
    if (best) save(best_path);
    std::string warn = main_rank ? draw_curves(r.out) : std::string();
    if (!warn.empty() && !curves_warned) {
      fprintf(stderr, "vit_train: warning: %s\n", warn.c_str());
      curves_warned = true;
    }
    const int sig = comm ? (int)comm->max(g_signal) : (int)g_signal;
    if (sig)
      return stop_now(sig == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)", 128 + sig);
  }

  const double total = seconds_since(run_t0);
  if (st.best_epoch > 0)
    printf("done: %d epochs; best test accuracy %.4f at epoch %lld; %s in all, %.0f train img/s; "
           "outputs in %s\n",
           o.epochs, st.best_acc, (long long)st.best_epoch, hms(total).c_str(),
           run_train_seconds > 0 ? run_train_images / run_train_seconds : 0.0, r.out.c_str());
  else
    printf("done: nothing to train (--epochs %d); outputs in %s\n", o.epochs, r.out.c_str());
  return 0;
}

}  // namespace
}  // namespace vit
