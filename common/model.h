// common/model.h — the interface the training loop, vit_predict and the tests drive. Two
// implementations: the CPU reference (cpu/model.h, make_cpu_model) and the CUDA model
// (host/cuda_model.h, make_cuda_model). Same inputs, same seed => same numbers (to float
// rounding), same dropout masks and augmentations.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "common/config.h"
#include "common/error.h"
#include "common/params.h"

namespace vit {

// ---- input pipeline: uint8 images -> normalised float model input -------------------------
// Source images are (B, channels, S, S) uint8, planar RGB: CIFAR-10 records without the label
// byte. For image b, in this order, all in the S x S source space:
//   crop (CropFlip):  pad `crop_pad` pixels of black (0) on every side, take an S x S window at
//                     dx = floor(u1 * (2*pad+1)), dy = floor(u2 * (2*pad+1)):
//                     out(y, x) = src(y + dy - pad, x + dx - pad), 0 outside the source.
//   random-resized-crop (RrcFlip): area fraction a = 0.08 + 0.92*u3, aspect r = exp(log(3/4) +
//                     u4*log(16/9)); w = clamp(round(S*sqrt(a*r)), 1, S), h = clamp(round(S*
//                     sqrt(a/r)), 1, S); x0 = floor(u5*(S-w+1)), y0 = floor(u6*(S-h+1)); the
//                     w x h box is then resampled to the output size (bilinear, below).
//   flip (Flip, CropFlip, RrcFlip): when u0 < 0.5, out(y, x) = in(y, S-1-x).
//   scale to [0,1] (/255), normalise (x - mean[c]) / std[c],
//   resize to config.image_size when it differs from the (box) size: bilinear with half-pixel
//   centres as PyTorch interpolate(align_corners=False) / OpenCV INTER_LINEAR:
//     sx = max((x + 0.5) * in/out - 0.5, 0); x0 = floor(sx); x1 = min(x0 + 1, in - 1).
// uk = philox_uniform(seed, SITE_AUGMENT, step, b * 8 + k). Evaluation (train=false) applies
// none of the random steps: scale, normalise, resize only.
enum class Augment { None, Flip, CropFlip, RrcFlip };

struct InputSpec {
  int src_size = 32;  // S: CIFAR-10 images are 32 x 32
  Augment augment = Augment::None;
  int crop_pad = 4;
};

// Storage of the model input (the normalised, resized images). FP16 halves the biggest input
// buffer of the 32 -> 224 vit-b16 path (B x 3 x 224 x 224); Auto turns it on exactly when the
// input is resized (config.image_size != input.src_size). When on, both models round every
// input value once to the nearest half (round-to-nearest-even) after the float preprocessing,
// so the CPU reference and the CUDA model see the same input.
enum class Fp16Input { Auto, Off, On };

// Precision of the CUDA model (--precision; the CPU reference is always FP32):
//   Fp32  FP32 storage, FP32 GEMMs (cublasSgemm without TF32): the bit-faithful mode the tests
//         compare with the CPU reference.
//   Tf32  FP32 storage, GEMMs on TF32 tensor cores (FP32 accumulation).
//   Bf16  mixed precision (docs/cuda_model.md, "BF16 mode"): FP32 master weights, gradients and
//         Adam moments; the GEMMs run in cuBLASLt on BF16 operands (a BF16 copy of the weights
//         that the optimizer step writes, BF16 activations) with FP32 accumulation and FP32
//         outputs; LayerNorm statistics, softmax/log-sum-exp, the loss and every reduction in
//         FP32. No loss scaling: BF16 has FP32's 8-bit exponent, so gradients that fit FP32 do
//         not underflow in BF16 the way they do in FP16's 5-bit exponent.
enum class Precision { Fp32, Tf32, Bf16 };
inline const char* precision_name(Precision p) {
  return p == Precision::Bf16 ? "bf16" : p == Precision::Tf32 ? "tf32" : "fp32";
}

struct ModelOptions {
  uint64_t seed = 0;            // every random draw: dropout, augmentation (init is separate)
  float label_smoothing = 0.0f;
  InputSpec input;
  int max_batch = 64;           // activations are planned for this many images
  Precision precision = Precision::Tf32;  // CUDA only (vit_train resolves its default)
  Fp16Input fp16_input = Fp16Input::Auto;
  // Linear probe: only the head (and the final LayerNorm, when the config has one) is trained.
  // The other tensors keep their values: the optimizer skips them, and their gradients stay 0.
  bool freeze_backbone = false;
  // CUDA: train_step() captures the whole step (every micro-batch's forward and backward, the
  // optimizer) as one CUDA graph per shape and replays it (vit_train --no-graph turns it off).
  // The results are the same bits either way.
  bool cuda_graph = true;
};

inline bool uses_fp16_input(const Config& c, const ModelOptions& o) {
  return o.fp16_input == Fp16Input::On ||
         (o.fp16_input == Fp16Input::Auto && c.image_size != o.input.src_size);
}

// With freeze_backbone the trained tensors are a suffix of the layout (final LN, head: the last
// ones, common/params.h): the flat offset where it starts; 0 (everything trained) otherwise.
inline size_t first_trained_offset(const ParamLayout& l, const ModelOptions& o) {
  if (!o.freeze_backbone) return 0;
  return l.lnf_w != ParamLayout::NONE ? l.lnf_w : l.head_w;
}

struct OptimConfig {
  enum Kind { Adam, AdamW } kind = Adam;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.0f;  // Adam: L2 added to the gradient; AdamW: decoupled p -= lr*wd*p.
                              // Either way only on tensors whose ParamTensor::decay is set.
  float clip_grad = 0.0f;     // clip the global gradient norm to this; 0 = off
};

// Running sums of a model's forwards. loss_sum adds float losses in double, which is exact for
// any realistic range of losses, so totals do not depend on how often they are taken.
struct Metrics {
  double loss_sum = 0;  // sum over images of the per-image loss
  int64_t correct = 0;  // argmax(logits) == label
  int64_t count = 0;    // images
  // The first forward (its `step` argument) since the last take whose loss was NaN or Inf, and
  // that loss; -1 when every loss was finite. Lets the trainer check for a diverged run at its
  // log lines instead of reading the loss back (a host-device sync) every step.
  int64_t first_nonfinite_step = -1;
  float first_nonfinite_loss = 0;
};

// Data parallelism (host/dist.cu): sums a device buffer over all ranks, in place, ordered after
// the work already queued on `stream` (a cudaStream_t). Implemented with ncclAllReduce.
class GradientReducer {
 public:
  virtual ~GradientReducer() = default;
  virtual int world() const = 0;
  virtual void sum_floats(float* device, size_t n, void* stream) = 0;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const Config& config() const = 0;
  virtual const ParamLayout& layout() const = 0;

  // Parameters, gradients and Adam moments as flat host arrays in layout() order
  // (layout().total floats each).
  virtual void get_params(float* out) const = 0;
  virtual void set_params(const float* in) = 0;
  virtual void get_grads(float* out) const = 0;
  virtual void get_adam_state(float* m, float* v) const = 0;
  virtual void set_adam_state(const float* m, const float* v) = 0;

  // One batch: B <= max_batch images (B, channels, S, S) uint8 and labels (B) in host memory
  // (pinned for the CUDA model). train=true turns dropout and augmentation on, drawn from
  // (seed, step). Computes logits (B, K) and the loss: mean over the batch of the
  // (label-smoothed) cross-entropy, and adds the batch to the running metrics.
  virtual void forward(const uint8_t* images, const int32_t* labels, int B, bool train,
                       uint64_t step) = 0;
  // After forward(train=true): parameter gradients += d(loss)/d(param) (accumulate, so
  // micro-batches add up; zero_grad() clears them). Once per forward: the CUDA model's backward
  // stores its output gradients over activations it has consumed, so it throws vit::Error
  // when called again without a new forward() (or after train_step()).
  virtual void backward() = 0;
  virtual void zero_grad() = 0;
  // Gradients *= grad_scale (e.g. 1/accum_steps), clip to the global norm (if set), then one
  // Adam/AdamW update with learning rate lr; t is the 1-based update count (bias correction).
  // The update consumes the gradients: they are 0 afterwards (the CUDA model zeroes them inside
  // its optimizer kernel, so the next accumulation needs no memset; zero_grad() is still
  // allowed and then costs nothing).
  virtual void optimizer_step(const OptimConfig& opt, float lr, int64_t t, float grad_scale) = 0;
  // Global gradient norm (after grad_scale, before clipping) of the last optimizer_step; NaN
  // when that step did not clip (opt.clip_grad == 0): the norm is only computed when needed.
  virtual float last_grad_norm() = 0;

  // One micro-batch of a training step (images, labels as for forward(); `step` its Philox step).
  struct MicroBatch {
    const uint8_t* images;
    const int32_t* labels;
    int count;
    uint64_t step;
  };
  // One whole training step: zero_grad(), forward(train=true) + backward() of each of the n
  // micro-batches in order, optimizer_step(opt, lr, t, grad_scale). The CUDA model runs it as
  // one CUDA graph (ModelOptions::cuda_graph); this default runs the calls one by one.
  virtual void train_step(const MicroBatch* micro, int n, const OptimConfig& opt, float lr,
                          int64_t t, float grad_scale) {
    zero_grad();
    for (int i = 0; i < n; ++i) {
      forward(micro[i].images, micro[i].labels, micro[i].count, /*train=*/true, micro[i].step);
      backward();
    }
    optimizer_step(opt, lr, t, grad_scale);
  }

  virtual void get_logits(float* out) const = 0;  // (B, K) of the last forward
  virtual float last_loss() = 0;                  // loss of the last forward
  virtual Metrics take_metrics() = 0;             // metrics since the last take; resets them
                                                  // (on the GPU: the one sync of a log line)

  // Inference on already normalised float images x (B, channels, H, W) with H = W =
  // config.image_size; writes logits (B, K). For vit_predict. x is stored as forward() stores
  // its input: rounded to half when uses_fp16_input (vit_predict turns that off).
  virtual void infer(const float* x, int B, float* logits) = 0;

  // infer() that also returns every layer's attention probabilities, for attention maps
  // (vit_predict --attention): probs (B, L, NH, T, T), probs[b][l][h][i][j] =
  // softmax_j(q_i . k_j / sqrt(hd)) of image b, layer l, head h (rows sum to 1; inference has
  // no dropout). T = config.tokens(), token 0 is CLS. The default refuses (models that wrap
  // another, in tests); the CPU and CUDA models implement it.
  virtual void infer_attention(const float* x, int B, float* logits, float* probs);

  // Several ranks: optimizer_step first sums the gradients over all ranks with `r` (each rank
  // having accumulated its share of the micro-batches), so every rank takes the same update.
  // Only the CUDA model supports it; null turns it off.
  virtual void set_gradient_reducer(GradientReducer* r) {
    if (r) throw Error("data-parallel training (--gpus / WORLD_SIZE > 1) needs --device cuda");
  }
};

// Weight initialisation matching each preset's PyTorch original: Linear/Conv weights
// N(0, init_std), biases 0, LayerNorm weight 1 / bias 0, cls and pos embeddings truncated
// normal (std init_std, cut at +-2 std). Deterministic in `seed` (Philox, SITE_INIT).
void init_params(const Config& c, const ParamLayout& l, uint64_t seed, float* out);

std::unique_ptr<Model> make_cpu_model(const Config& c, const ModelOptions& o);
std::unique_ptr<Model> make_cuda_model(const Config& c, const ModelOptions& o);

}  // namespace vit
