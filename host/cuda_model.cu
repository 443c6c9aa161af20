// host/cuda_model.cu — the CUDA model: host orchestration of a whole training step.
//
// What runs where (all on `stream_`, the compute stream, in this order; docs/cuda_model.md has
// the list):
//   forward   input_forward -> patch_embed_forward_ln (+ dropout + layer 0's LN1) ->
//             L x [QKV GEMM+bias -> attention -> proj GEMM+dropout+residual+LN2 (one kernel)
//                  -> FC1 GEMM+bias+GELU -> FC2 GEMM+dropout+residual+next LN1 (one kernel)]
//             -> head GEMM on the CLS rows -> fused xent (+ dlogits; loss sum, correct count
//             and the non-finite record accumulate on the device)
//   backward  the same in reverse; each layer's GEMM output gradients are kept, and after the
//             last layer all weight gradients are four batched GEMMs and all bias / LN weight
//             gradients one column-sum launch (148 launches per basic step: docs/cuda_model.md).
//   optimizer grad_norm_clip (only when clipping) -> adam_update (which also zeroes the
//             gradients, so zero_grad issues no memset), each one launch over the flat buffers.
// train_step() runs all of it, every micro-batch, as one CUDA graph per shape (host/step_graph.h;
// the graph section below; docs/cuda_model.md).
// The host never waits for the GPU inside a step: results are read back only by get_*(),
// last_loss(), last_grad_norm() and take_metrics().
//
// Input batches: forward() copies the caller's images/labels into one of two pinned staging
// slots (a memcpy of ~200 KB), then cudaMemcpyAsync's them on `copy_stream_` into the matching
// device slot; the compute stream waits on the copy's event. The copy of batch k may run while
// batch k-1 computes; a slot is reused only after the compute stream has recorded that it is
// done with it (event `consumed_`), and the staging slot only after its copy finished
// (event `copied_`). Staging makes forward() safe for any host buffer the caller then reuses
// (the loader's double buffer is refilled while the GPU still lags behind).
//
// --precision bf16 (Dims::bf16; docs/cuda_model.md "BF16 mode"): parameters, gradients and Adam
// moments stay FP32; w16_ is the BF16 copy of the parameters that every transformer GEMM reads
// (written by set_params and by the fused AdamW step). Stored in BF16 instead of FP32: the
// LayerNorm and GELU outputs, the FC1 pre-activation, qkv, the attention output and the four
// stored output gradients. GEMMs run in cuBLASLt (kernels/matmul_lt.cuh) or the fused GEMM +
// LayerNorm kernels (kernels/gemm_ln.cuh) with FP32 accumulation; the residual stream, attention
// math, LayerNorm statistics, softmax/LSE, loss, the head, every reduction and every parameter
// gradient are FP32. The patch embedding (one GEMM of K = 3p^2 per image) stays on cuBLAS with
// TF32.
#include "host/cuda_model.h"
#include "host/step_graph.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/params.h"
#include "common/philox.h"
#include "kernels/adam.cuh"
#include "kernels/attention.cuh"
#include "kernels/attention_tc.cuh"
#include "kernels/common.cuh"
#include "kernels/dropout.cuh"
#include "kernels/gelu.cuh"
#include "kernels/gemm_ln.cuh"
#include "kernels/head.cuh"
#include "kernels/input.cuh"
#include "kernels/layernorm.cuh"
#include "kernels/loss.cuh"
#include "kernels/matmul.cuh"
#include "kernels/matmul_lt.cuh"
#include "kernels/precision.cuh"
#include "kernels/patch_embed.cuh"

namespace vit {
namespace {

constexpr size_t ARENA_ALIGN = 256;  // cudaMalloc's alignment: every piece may use float4

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// Shapes of one model instance; B is the planned (maximum) batch.
struct Dims {
  int B, T, C, M, NH, L, K, R, S, N, P, Cin, p;
  bool x16;  // the model input is stored in FP16 (uses_fp16_input)
  bool bf16;  // --precision bf16: BF16 GEMM operands
  Precision prec;
  bool fused_ln;  // the GEMM + LayerNorm kernels take this width (kernels/gemm_ln.cuh)
  int ln_rows;    // fused: rows of one LN's weight-gradient partials at this batch
  int njobs;      // column-sum jobs of the backward (bias and LN weight gradients)
  size_t BT() const { return (size_t)B * T; }
  size_t BTC() const { return BT() * C; }
  size_t BTM() const { return BT() * M; }
};

Dims dims_of(const Config& c, const ModelOptions& o, int B) {
  Dims d;
  d.B = B;
  d.T = c.tokens();
  d.C = c.hidden;
  d.M = c.mlp;
  d.NH = c.heads;
  d.L = c.layers;
  d.K = c.classes;
  d.R = c.image_size;
  d.S = o.input.src_size;
  d.N = c.patches();
  d.P = c.patch_dim();
  d.Cin = c.channels;
  d.p = c.patch_size;
  d.x16 = uses_fp16_input(c, o);
  d.bf16 = o.precision == Precision::Bf16;
  d.prec = o.precision;
  d.fused_ln = gemm_ln_supports(d.C) &&
               (d.bf16 ? gemm_ln_fits_device<bf16>(d.C) : gemm_ln_fits_device<float>(d.C));
  d.ln_rows = d.fused_ln ? gemm_ln_row_blocks(d.B * d.T, d.C) : 0;
  // head bias, patch bias, per layer the four biases (qkv's when the config has one) and, fused,
  // the four LayerNorm partial sums (LN1/LN2 weight and bias).
  d.njobs = 2 + d.L * ((c.qkv_bias ? 4 : 3) + (d.fused_ln ? 4 : 0));
  return d;
}

// Floats of kernel scratch one step needs at batch B: the largest single request (the launches
// run one after another on one stream, so they share one scratch buffer).
size_t scratch_floats(const Dims& d, size_t param_total) {
  const int NT = d.B * d.T;
  size_t s = 0;
  s = std::max(s, patch_embed_scratch_floats(d.B, d.Cin, d.R, d.p, d.C));
  s = std::max(s, layernorm_scratch_floats(NT, d.C));
  s = std::max(s, matmul_scratch_floats(NT, 3 * d.C));
  s = std::max(s, matmul_scratch_floats(NT, d.C));
  s = std::max(s, matmul_scratch_floats(NT, d.M));
  s = std::max(s, matmul_scratch_floats(d.B, d.K));
  s = std::max(s, attention_tc_scratch_floats(d.B, d.T, d.C, d.NH));
  s = std::max(s, attention_scratch_floats(d.B, d.T, d.C, d.NH));
  s = std::max(s, grad_norm_scratch_floats(param_total));
  return std::max<size_t>(s, 1);
}

// An input slot: the batch's images, then (at a 256-byte boundary) its labels, so one copy
// moves both.
size_t input_label_offset(const Dims& d) {
  return align_up((size_t)d.B * d.Cin * d.S * d.S, ARENA_ALIGN);
}
size_t input_slot_bytes(const Dims& d) {
  return input_label_offset(d) + (size_t)d.B * sizeof(int32_t);
}

// Every buffer outside the four parameter-sized ones. Per-layer activations are stored
// layer after layer, each layer slot sized for the planned batch.
//
// The backward keeps every layer's GEMM output gradients (dy of qkv, proj, fc1, fc2) so that the
// weight gradients of all layers are one strided-batched GEMM per weight kind after the last
// layer, and every bias gradient one column-sum launch (the launch count: docs/cuda_model.md).
// Two of the four go where a dead activation was: proj's dy (the masked d mid) over mid[l], and
// fc2's dy (the masked d res[l+1]) over res[l+1], each written by the kernel that last reads that
// row (the LayerNorm backward). In bf16 mode they are BF16 rows at stride 2C inside the FP32 rows
// (row r of the gradient stays inside row r of the activation). The other two (dqkv, dpre) have
// their own per-layer slots.
struct Activations {
  uint8_t* img[2];    // (B, Cin, S, S) uint8 input slots (double-buffered with the copy stream),
                      // each followed by its labels (one copy per batch: input_label_offset)
  int32_t* label[2];  // (B) inside img[s]'s piece, input_label_offset bytes in
  float* x;           // (B, Cin, R, R) normalised model input (FP32 input; else nullptr)
  __half* x16;        // (B, Cin, R, R) the same in FP16 (Dims::x16; else nullptr)
  float* cols;        // (B*N, P) im2col of x, saved for the patch-embedding weight gradient
  float* res;         // (L+1, B, T, C) residual stream entering layer l; res[L] leaves the encoder.
                      // Backward: res[l+1] then holds fc2's dy of layer l (res[0]: the embedding's)
  float* ln1;         // (L, B, T, C) LN1 output (FP32 modes; else nullptr)
  bf16* ln1h;         // (L, B, T, C) the same in BF16 (Dims::bf16; else nullptr)
  float* ln1_mean;    // (L, B*T)
  float* ln1_rstd;    // (L, B*T)
  float* qkv;         // (L, B, T, 3C) packed q|k|v (FP32 modes)
  bf16* qkvh;         // (L, B, T, 3C) the same in BF16, read by the attention kernels (bf16)
  float* att;         // (L, B, T, C) attention output (heads concatenated), before proj
  bf16* atth;         // (L, B, T, C) the same in BF16 (bf16 mode: proj's operand, attention
                      // backward's input)
  float* lse;         // (L, B, NH, T) attention row log-sum-exp
  float* mid;         // (L, B, T, C) residual stream after the attention branch; backward: proj's dy
  float* ln2;         // (L, B, T, C)   (FP32 modes)
  bf16* ln2h;         // (L, B, T, C)   (bf16)
  float* ln2_mean;    // (L, B*T)
  float* ln2_rstd;    // (L, B*T)
  float* fc1_pre;     // (L, B, T, M) FC1 output before GELU (FP32 modes)
  bf16* fc1_preh;     // (L, B, T, M) the same rounded to BF16, read by the GELU backward (bf16)
  float* fc1_act;     // (L, B, T, M) GELU output = FC2 input (FP32 modes)
  bf16* fc1_acth;     // (L, B, T, M) the same in BF16 (bf16)
  float* lnf;         // (B, T, C) final LN output, FP32 in every mode (config.final_ln only)
  float* lnf_mean;    // (B*T)
  float* lnf_rstd;    // (B*T)
  float* logits;      // (B, K)
  float* losses;      // (B) per-image loss of the last forward
  float* dlogits;     // (B, K) = d(mean loss)/d(logits)
  double* metrics;    // (2) running [loss sum, correct count] since the last take_metrics()
  NonFiniteRecord* nonfinite;  // (1) first step with a NaN/Inf loss since the last take
  float* norm_coef;   // (2) [global grad norm, clip coefficient] of the last optimizer step
  float* tmp;         // (B, T, C) proj / fc2 output before dropout+residual (unfused path)
  float* dres;        // (B, T, C) gradient of the residual stream (LN backwards add into it)
  float* dln;         // (B, T, C) gradient of an LN output (unfused path, final LN)
  float* datt;        // (B, T, C) gradient of the attention output (bf16 mode with the
                      // tensor-core attention: BF16, in the first half of the buffer)
  float* dqkv;        // (L, B, T, 3C) gradient of qkv, per layer (FP32 modes)
  bf16* dqkvh;        // (L, B, T, 3C) the same in BF16 (bf16)
  float* dqkv32;      // (B, T, 3C) bf16 mode, FP32 attention kernels only: their FP32 output
  float* dact;        // (B, T, M) gradient of the GELU output (erf GELU); FC1's FP32 output (bf16
                      // mode, erf GELU)
  float* dpre;        // (L, B, T, M) gradient of the FC1 output, per layer (FP32 modes)
  bf16* dpreh;        // (L, B, T, M) the same in BF16 (bf16)
  float* lnpart;      // (L, 2, 2, rows, C) the fused LayerNorm backwards' weight-gradient partials
                      // (kernels/gemm_ln.cuh) of LN1 and LN2 of every layer, summed at the end
  ColSumJob* sumjobs; // (njobs) the column sums of the step's bias / LN gradients (uploaded once)
  TensorSpan* spans;  // (nspans) parameter tensors for adam_update's decay flags
  float* scratch;     // (scratch_floats) shared by the launchers that need scratch
};

// Calls f(name, pointer-to-member-pointer, bytes) for every piece of the arena, in order.
// Planning sums the bytes; allocation hands out pointers. One list, so the plan and the
// allocation cannot disagree.
template <class F>
void for_each_piece(const Config& c, const Dims& d, size_t nspans, size_t scratch, Activations& a,
                    F&& f) {
  const size_t L = d.L, F4 = sizeof(float);
  const size_t img = (size_t)d.B * d.Cin * d.S * d.S;
  for (int s = 0; s < 2; ++s)  // a.label[s] is set inside it (set_label_pointers)
    f(s ? "input1" : "input0", (void**)&a.img[s], input_slot_bytes(d));
  const size_t x_elems = (size_t)d.B * d.Cin * d.R * d.R;
  if (d.x16) {
    a.x = nullptr;
    f("x16", (void**)&a.x16, x_elems * sizeof(__half));
  } else {
    a.x16 = nullptr;
    f("x", (void**)&a.x, x_elems * F4);
  }
  f("cols", (void**)&a.cols, (size_t)d.B * d.N * d.P * F4);
  f("res", (void**)&a.res, (L + 1) * d.BTC() * F4);
  // BF16 mode stores the GEMM-only activations in BF16: one of each pair is allocated.
  auto act = [&](const char* name, float** f32, bf16** h, size_t elems) {
    if (d.bf16) {
      *f32 = nullptr;
      f(name, (void**)h, elems * sizeof(bf16));
    } else {
      *h = nullptr;
      f(name, (void**)f32, elems * F4);
    }
  };
  act("ln1", &a.ln1, &a.ln1h, L * d.BTC());
  f("ln1_mean", (void**)&a.ln1_mean, L * d.BT() * F4);
  f("ln1_rstd", (void**)&a.ln1_rstd, L * d.BT() * F4);
  act("qkv", &a.qkv, &a.qkvh, L * 3 * d.BTC());
  act("att", &a.att, &a.atth, L * d.BTC());
  f("lse", (void**)&a.lse, L * d.BT() * d.NH * F4);
  f("mid", (void**)&a.mid, L * d.BTC() * F4);
  act("ln2", &a.ln2, &a.ln2h, L * d.BTC());
  f("ln2_mean", (void**)&a.ln2_mean, L * d.BT() * F4);
  f("ln2_rstd", (void**)&a.ln2_rstd, L * d.BT() * F4);
  act("fc1_pre", &a.fc1_pre, &a.fc1_preh, L * d.BTM());
  act("fc1_act", &a.fc1_act, &a.fc1_acth, L * d.BTM());
  if (c.final_ln) {
    f("lnf", (void**)&a.lnf, d.BTC() * F4);
    f("lnf_mean", (void**)&a.lnf_mean, d.BT() * F4);
    f("lnf_rstd", (void**)&a.lnf_rstd, d.BT() * F4);
  } else {
    a.lnf = a.lnf_mean = a.lnf_rstd = nullptr;
  }
  f("logits", (void**)&a.logits, (size_t)d.B * d.K * F4);
  f("losses", (void**)&a.losses, (size_t)d.B * F4);
  f("dlogits", (void**)&a.dlogits, (size_t)d.B * d.K * F4);
  f("metrics", (void**)&a.metrics, 2 * sizeof(double));
  f("nonfinite", (void**)&a.nonfinite, sizeof(NonFiniteRecord));
  f("norm_coef", (void**)&a.norm_coef, 2 * F4);
  f("tmp", (void**)&a.tmp, d.BTC() * F4);
  f("dres", (void**)&a.dres, d.BTC() * F4);
  f("dln", (void**)&a.dln, d.BTC() * F4);
  f("datt", (void**)&a.datt, d.BTC() * F4);
  act("dqkv", &a.dqkv, &a.dqkvh, L * 3 * d.BTC());
  if (d.bf16 && !attention_tc_supports_head_dim(d.C / d.NH))
    f("dqkv32", (void**)&a.dqkv32, 3 * d.BTC() * F4);
  else
    a.dqkv32 = nullptr;
  f("dact", (void**)&a.dact, d.BTM() * F4);
  act("dpre", &a.dpre, &a.dpreh, L * d.BTM());
  if (d.fused_ln)
    f("lnpart", (void**)&a.lnpart, L * 4 * d.ln_rows * (size_t)d.C * F4);
  else
    a.lnpart = nullptr;
  f("sumjobs", (void**)&a.sumjobs, (size_t)d.njobs * sizeof(ColSumJob));
  f("spans", (void**)&a.spans, nspans * sizeof(TensorSpan));
  f("scratch", (void**)&a.scratch, scratch * F4);
}

size_t arena_bytes(const Config& c, const Dims& d, size_t nspans, size_t scratch) {
  Activations a;
  size_t total = 0;
  for_each_piece(c, d, nspans, scratch, a,
                 [&](const char*, void**, size_t bytes) { total += align_up(bytes, ARENA_ALIGN); });
  return total;
}

std::string human_bytes(size_t b) {
  char buf[32];
  if (b >= ((size_t)1 << 30)) snprintf(buf, sizeof buf, "%.2f GiB", b / 1073741824.0);
  else snprintf(buf, sizeof buf, "%.1f MiB", b / 1048576.0);
  return buf;
}

void check_options(const Config& c, const ModelOptions& o) {
  validate(c);
  if (o.max_batch < 1)
    throw Error("the CUDA model needs max_batch >= 1 (got " + std::to_string(o.max_batch) + ")");
  if (o.input.src_size < 1)
    throw Error("input source size must be positive (got " + std::to_string(o.input.src_size) +
                ")");
}

const StreamTestHooks* g_stream_hooks = nullptr;  // set_stream_test_hooks (tests only)

class CudaModel final : public Model {
 public:
  CudaModel(const Config& c, const ModelOptions& o)
      : cfg_(c), opt_(o), layout_(c), dims_(dims_of(c, o, o.max_batch)) {
    plan_ = cuda_memory_plan(c, o);
    const size_t n = layout_.total;

    // Refuse up front, in one line, when the plan cannot fit (cudaMalloc would fail halfway).
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess && plan_.total_bytes() > free_b)
      throw Error(out_of_memory_message(plan_, free_b));
    cudaGetLastError();  // cudaMemGetInfo's failure (if any) is not this model's error

    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
    for (int s = 0; s < 2; ++s) {
      CUDA_CHECK(cudaEventCreateWithFlags(&copied_[s], cudaEventDisableTiming));
      CUDA_CHECK(cudaEventCreateWithFlags(&consumed_[s], cudaEventDisableTiming));
    }
    CUBLAS_CHECK(cublasCreate(&cublas_));
    CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    // The matmul launchers use FP32 compute and let the handle's math mode pick TF32 (in bf16
    // mode only the patch embedding still goes through this handle).
    CUBLAS_CHECK(cublasSetMathMode(cublas_, o.precision != Precision::Fp32
                                                ? CUBLAS_TF32_TENSOR_OP_MATH
                                                : CUBLAS_DEFAULT_MATH));
    CUBLAS_CHECK(cublasLtCreate(&lt_));  // every transformer GEMM (kernels/matmul_lt.cuh)

    // Parameters, gradients and Adam moments: one allocation each, zeroed (the alignment
    // padding between tensors then stays 0 through every Adam step); the parameters then get
    // init_params(seed), as the CPU model's do.
    float** flat[4] = {&params_, &grads_, &m_, &v_};
    for (float** p : flat) {
      CUDA_CHECK(cudaMalloc((void**)p, n * sizeof(float)));
      CUDA_CHECK(cudaMemsetAsync(*p, 0, n * sizeof(float), stream_));
    }
    name_allocation(params_, "params");
    name_allocation(grads_, "grads");
    name_allocation(m_, "adam_m");
    name_allocation(v_, "adam_v");
    if (dims_.bf16) {  // the BF16 weight copy; padding 0 like the FP32 buffer's
      CUDA_CHECK(cudaMalloc((void**)&w16_, n * sizeof(bf16)));
      CUDA_CHECK(cudaMemsetAsync(w16_, 0, n * sizeof(bf16), stream_));
      name_allocation(w16_, "params_bf16");
    }
    CUDA_CHECK(cudaMalloc((void**)&dev_scalars_, sizeof(GraphScalars)));
    name_allocation(dev_scalars_, "graph_scalars");

    allocate_activations();
    make_layer_views();

    // Pinned staging for the input batches.
    // Pinned staging for the input batches: the device slots' layout (images, then labels).
    for (int s = 0; s < 2; ++s) {
      CUDA_CHECK(cudaMallocHost((void**)&stage_img_[s], input_slot_bytes(dims_)));
      memset(stage_img_[s], 0, input_slot_bytes(dims_));  // the gap a partial batch copies
      stage_label_[s] = (int32_t*)(stage_img_[s] + input_label_offset(dims_));
      // Recorded once so the first waits on them are trivially satisfied.
      CUDA_CHECK(cudaEventRecord(copied_[s], copy_stream_));
      CUDA_CHECK(cudaEventRecord(consumed_[s], stream_));
    }

    // Tensor spans for the optimizer's weight-decay flags: uploaded once. A frozen backbone's
    // tensors get no span, so adam_update leaves them (and their moments) untouched.
    std::vector<TensorSpan> spans;
    const size_t first_trained = first_trained_offset(layout_, o);
    for (const ParamTensor& t : layout_.tensors)
      if (t.offset >= first_trained)
        spans.push_back(TensorSpan{(uint64_t)t.offset, (uint64_t)t.numel, t.decay ? 1 : 0});
    nspans_ = (int)spans.size();
    CUDA_CHECK(cudaMemcpyAsync(act_.spans, spans.data(), spans.size() * sizeof(TensorSpan),
                               cudaMemcpyHostToDevice, stream_));
    upload_sum_jobs();
    CUDA_CHECK(cudaMemsetAsync(act_.metrics, 0, 2 * sizeof(double), stream_));
    CUDA_CHECK(cudaMemsetAsync(act_.nonfinite, 0xff, sizeof(NonFiniteRecord), stream_));
    CUDA_CHECK(cudaMemsetAsync(act_.norm_coef, 0, 2 * sizeof(float), stream_));
    std::vector<float> init(n, 0.0f);
    init_params(cfg_, layout_, o.seed, init.data());
    set_params(init.data());  // synchronises: `spans` and `init` are freed on return
  }

  ~CudaModel() override {
    // No CUDA_CHECK here: a destructor must not exit; errors at teardown change nothing.
    if (stream_) cudaStreamSynchronize(stream_);
    if (copy_stream_) cudaStreamSynchronize(copy_stream_);
    graphs_.reset();  // the graphs and their staging, before the streams go
    cudaFree(dev_scalars_);
    for (float* p : {params_, grads_, m_, v_}) cudaFree(p);
    if (w16_) cudaFree(w16_);
    for (void* p : arena_pieces_) cudaFree(p);
    cudaFree(probs_);
    for (int s = 0; s < 2; ++s) {
      cudaFreeHost(stage_img_[s]);  // (stage_label_[s] lies inside it)
      cudaEventDestroy(copied_[s]);
      cudaEventDestroy(consumed_[s]);
    }
    if (cublas_) cublasDestroy(cublas_);
    if (lt_) cublasLtDestroy(lt_);
    if (copy_stream_) cudaStreamDestroy(copy_stream_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  const Config& config() const override { return cfg_; }
  const ParamLayout& layout() const override { return layout_; }

  void get_params(float* out) const override { download(out, params_, layout_.total); }
  void set_params(const float* in) override {
    upload(params_, in, layout_.total);
    if (w16_) {
      to_bf16(stream_, params_, w16_, layout_.total);
      CUDA_CHECK(cudaStreamSynchronize(stream_));
    }
  }
  void get_grads(float* out) const override { download(out, grads_, layout_.total); }
  void get_adam_state(float* m, float* v) const override {
    download(m, m_, layout_.total);
    download(v, v_, layout_.total);
  }
  void set_adam_state(const float* m, const float* v) override {
    upload(m_, m, layout_.total);
    upload(v_, v, layout_.total);
  }

  void forward(const uint8_t* images, const int32_t* labels, int B, bool train,
               uint64_t step) override {
    check_batch(B);
    if (!images || !labels) throw Error("CudaModel::forward needs images and labels");
    if (!train && opt_.cuda_graph) {  // evaluation: one graph per batch size
      eval_graph_forward(images, labels, B, step);
      return;
    }
    const int s = slot_;
    slot_ ^= 1;
    // Stage the batch (the caller may reuse its buffers as soon as we return).
    const size_t img_bytes = (size_t)B * dims_.Cin * dims_.S * dims_.S;
    CUDA_CHECK(cudaEventSynchronize(copied_[s]));  // staging slot s: its last copy is done
    memcpy(stage_img_[s], images, img_bytes);
    memcpy(stage_label_[s], labels, (size_t)B * sizeof(int32_t));
    // Device slot s is free once the compute stream has finished the batch that used it.
    CUDA_CHECK(cudaStreamWaitEvent(copy_stream_, consumed_[s], 0));
    if (g_stream_hooks && g_stream_hooks->before_copy) g_stream_hooks->before_copy((void*)copy_stream_);
    // One copy: the images and (past the planned batch's image bytes) the labels.
    CUDA_CHECK(cudaMemcpyAsync(act_.img[s], stage_img_[s],
                               input_label_offset(dims_) + (size_t)B * sizeof(int32_t),
                               cudaMemcpyHostToDevice, copy_stream_));
    CUDA_CHECK(cudaEventRecord(copied_[s], copy_stream_));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, copied_[s], 0));
    if (g_stream_hooks && g_stream_hooks->before_compute) g_stream_hooks->before_compute((void*)stream_);

    issue_forward(act_.img[s], act_.label[s], B, train, step);
    CUDA_CHECK(cudaEventRecord(consumed_[s], stream_));

    last_B_ = B;
    last_step_ = step;
    last_train_ = train;
    have_forward_ = true;
    metric_count_ += B;
  }

  void backward() override {
    if (!have_forward_) throw Error("CudaModel::backward() needs a forward() first");
    issue_backward(last_B_, last_train_, last_step_);
    grads_zero_ = false;
    // The backward stores its output gradients over activations it has consumed (mid, res):
    // the next backward needs the next forward.
    have_forward_ = false;
  }

  void zero_grad() override {
    // The constructor and every optimizer step leave the gradients 0 (adam_update zeroes what
    // it consumed): then there is nothing to clear, and no memset is issued.
    if (grads_zero_) return;
    CUDA_CHECK(cudaMemsetAsync(grads_, 0, layout_.total * sizeof(float), stream_));
    grads_zero_ = true;
  }

  void set_gradient_reducer(GradientReducer* r) override { reducer_ = r; }

  void optimizer_step(const OptimConfig& o, float lr, int64_t t, float grad_scale) override {
    issue_optimizer(o, lr, t, grad_scale, nullptr);
  }

  float last_grad_norm() override {
    if (!last_clipped_) return NAN;  // the norm is only computed when clipping (common/model.h)
    float nc[2];
    download(nc, act_.norm_coef, 2);
    return nc[0];
  }

  void train_step(const MicroBatch* mb, int n, const OptimConfig& o, float lr, int64_t t,
                  float grad_scale) override {
    // Several ranks: the gradient all-reduce sits in the middle of the step; simt queues its
    // NCCL calls through host functions that a capture does not take, so data-parallel steps
    // stay eager (docs/cuda_model.md).
    if (!opt_.cuda_graph || reducer_ || n < 1) {
      Model::train_step(mb, n, o, lr, t, grad_scale);
      return;
    }
    graph_step(mb, n, o, lr, t, grad_scale);
  }

 private:
  // ---- the training step as one CUDA graph (host/step_graph.h) ----------------------------
  // What a replay reads that changes every step: uploaded by the graph's first node from the
  // graph's pinned staging (StepGraph::pinned[2]).
  struct GraphScalars {
    uint64_t step;      // Philox step of micro-batch 0; micro-batch m uses step + its offset
    AdamStepArgs adam;  // lr / bias corrections of this update (adam_step_args)
  };

  void graph_step(const MicroBatch* mb, int n, const OptimConfig& o, float lr, int64_t t,
                  float grad_scale) {
    const size_t per_image = (size_t)dims_.Cin * dims_.S * dims_.S;
    // The key: everything baked into the graph's nodes. Batch sizes and the micro-batches'
    // step offsets fix shapes and DevStep offsets; the optimizer's constants and grad_scale are
    // kernel arguments.
    std::string key;
    int total = 0;
    for (int i = 0; i < n; ++i) {
      check_batch(mb[i].count);
      if (!mb[i].images || !mb[i].labels) throw Error("CudaModel::train_step needs images and labels");
      key += std::to_string(mb[i].count) + "@" + std::to_string(mb[i].step - mb[0].step) + ",";
      total += mb[i].count;
    }
    char opt_key[160];
    snprintf(opt_key, sizeof opt_key, "|%d %a %a %a %a %a %a", (int)o.kind, o.beta1, o.beta2,
             o.eps, o.weight_decay, o.clip_grad, grad_scale);
    key += opt_key;

    zero_grad();  // eager, and nothing to do after an optimizer step: the graph has no memset
    const int par = graph_parity_;
    graph_parity_ ^= 1;
    auto setup = [&](StepGraph& g) {
      g.pinned.resize(3, nullptr);
      CUDA_CHECK(cudaMallocHost(&g.pinned[0], std::max<size_t>((size_t)total * per_image, 1)));
      CUDA_CHECK(cudaMallocHost(&g.pinned[1], (size_t)total * sizeof(int32_t)));
      CUDA_CHECK(cudaMallocHost(&g.pinned[2], sizeof(GraphScalars)));
    };
    auto issue = [&](StepGraph& g) {
      CUDA_CHECK(cudaMemcpyAsync(dev_scalars_, g.pinned[2], sizeof(GraphScalars),
                                 cudaMemcpyHostToDevice, stream_));
      const uint8_t* img = (const uint8_t*)g.pinned[0];
      const int32_t* lab = (const int32_t*)g.pinned[1];
      for (int i = 0; i < n; ++i) {
        const int B = mb[i].count;
        const DevStep step(&dev_scalars_->step, mb[i].step - mb[0].step);
        // Micro-batches run one after another on the stream: one device input slot serves all.
        CUDA_CHECK(cudaMemcpyAsync(act_.img[0], img, (size_t)B * per_image,
                                   cudaMemcpyHostToDevice, stream_));
        CUDA_CHECK(cudaMemcpyAsync(act_.label[0], lab, (size_t)B * sizeof(int32_t),
                                   cudaMemcpyHostToDevice, stream_));
        issue_forward(act_.img[0], act_.label[0], B, /*train=*/true, step);
        issue_backward(B, /*train=*/true, step);
        img += (size_t)B * per_image;
        lab += B;
      }
      issue_optimizer(o, lr, t, grad_scale, &dev_scalars_->adam);
    };
    StepGraph& g = graphs_->get(key, par, stream_, setup, issue);

    // Staging of this parity: free once the graph's last launch with it is done (a step ago;
    // the host runs at most one step ahead of the GPU).
    CUDA_CHECK(cudaEventSynchronize(g.done));
    size_t off = 0;
    for (int i = 0; i < n; ++i) {
      memcpy((uint8_t*)g.pinned[0] + off * per_image, mb[i].images, mb[i].count * per_image);
      memcpy((int32_t*)g.pinned[1] + off, mb[i].labels, mb[i].count * sizeof(int32_t));
      off += mb[i].count;
    }
    GraphScalars sc;
    sc.step = mb[0].step;
    sc.adam = adam_step_args(o, lr, t);
    memcpy(g.pinned[2], &sc, sizeof sc);
    StepGraphCache::launch(g, stream_);
    // The graph wrote input slot 0 on the compute stream: an eager forward's copy (on the copy
    // stream) into either slot waits for the graph.
    for (int s = 0; s < 2; ++s) CUDA_CHECK(cudaEventRecord(consumed_[s], stream_));

    last_B_ = mb[n - 1].count;
    last_step_ = mb[n - 1].step;
    last_train_ = true;
    have_forward_ = false;  // the graph ran the backward too (see backward())
    metric_count_ += total;
    last_clipped_ = o.clip_grad > 0;
    grads_zero_ = nspans_ > 0;
  }

  // An evaluation forward as a graph: the input copies from the graph's pinned staging, then
  // issue_forward. Keyed by the batch size (the evaluation's full batches and its last one).
  void eval_graph_forward(const uint8_t* images, const int32_t* labels, int B, uint64_t step) {
    const size_t per_image = (size_t)dims_.Cin * dims_.S * dims_.S;
    const int par = graph_parity_;
    graph_parity_ ^= 1;
    auto setup = [&](StepGraph& g) {
      g.pinned.resize(3, nullptr);
      CUDA_CHECK(cudaMallocHost(&g.pinned[0], std::max<size_t>((size_t)B * per_image, 1)));
      CUDA_CHECK(cudaMallocHost(&g.pinned[1], (size_t)B * sizeof(int32_t)));
      CUDA_CHECK(cudaMallocHost(&g.pinned[2], sizeof(GraphScalars)));
    };
    auto issue = [&](StepGraph& g) {
      CUDA_CHECK(cudaMemcpyAsync(dev_scalars_, g.pinned[2], sizeof(GraphScalars),
                                 cudaMemcpyHostToDevice, stream_));
      CUDA_CHECK(cudaMemcpyAsync(act_.img[0], g.pinned[0], (size_t)B * per_image,
                                 cudaMemcpyHostToDevice, stream_));
      CUDA_CHECK(cudaMemcpyAsync(act_.label[0], g.pinned[1], (size_t)B * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, stream_));
      // The step only names the batch in the non-finite record (no randomness in evaluation).
      issue_forward(act_.img[0], act_.label[0], B, /*train=*/false,
                    DevStep(&dev_scalars_->step, 0));
    };
    StepGraph& g = graphs_->get("eval " + std::to_string(B), par, stream_, setup, issue);
    CUDA_CHECK(cudaEventSynchronize(g.done));  // this staging's last launch, two graphs back
    memcpy(g.pinned[0], images, (size_t)B * per_image);
    memcpy(g.pinned[1], labels, (size_t)B * sizeof(int32_t));
    GraphScalars sc{};
    sc.step = step;
    memcpy(g.pinned[2], &sc, sizeof sc);
    StepGraphCache::launch(g, stream_);
    for (int s = 0; s < 2; ++s) CUDA_CHECK(cudaEventRecord(consumed_[s], stream_));
    last_B_ = B;
    last_step_ = step;
    last_train_ = false;
    have_forward_ = true;
    metric_count_ += B;
  }

  // ---- the step's pieces, issued on stream_ (eagerly, or into a graph's capture) ----------
  // Input (device img/label, B images) -> logits, loss, dlogits, metrics.
  void issue_forward(const uint8_t* img, const int32_t* label, int B, bool train, DevStep step) {
    if (dims_.x16)
      input_forward(stream_, img, B, opt_.input, cfg_, train, opt_.seed, step, act_.x16);
    else
      input_forward(stream_, img, B, opt_.input, cfg_, train, opt_.seed, step, act_.x);
    encoder_forward(B, train, step);
    // dlogits even for an eval forward (B x K floats): backward() after it is allowed, as on
    // the CPU model, and gives the gradient without dropout.
    // (the same launch records the first non-finite batch loss: kernels/loss.cuh)
    xent_forward_backward(stream_, act_.logits, label, act_.losses, act_.dlogits, act_.metrics,
                          B, dims_.K, opt_.label_smoothing, 1.0f / (float)B, act_.nonfinite,
                          step);
  }

  // Gradient norm + clip (only when clipping), then Adam, which zeroes the gradients.
  void issue_optimizer(const OptimConfig& o, float lr, int64_t t, float grad_scale,
                       const AdamStepArgs* dyn) {
    const size_t n = layout_.total;
    // Data parallel: every rank holds the sum of its micro-batches' gradients; after the sum over
    // ranks every rank has the whole batch's and takes the identical update.
    if (reducer_) reducer_->sum_floats(grads_, n, stream_);
    last_clipped_ = o.clip_grad > 0;
    if (last_clipped_)
      grad_norm_clip(stream_, grads_, n, grad_scale, o.clip_grad, act_.norm_coef, act_.scratch);
    adam_update(stream_, params_, grads_, m_, v_, n, act_.spans, nspans_, o, lr, t, grad_scale,
                last_clipped_ ? act_.norm_coef : nullptr, w16_, dyn);
    grads_zero_ = nspans_ > 0;  // adam_update zeroed every trained tensor's gradient
  }

  // The backward of the last forward (B images, its train flag and step).
  void issue_backward(int B, bool train, DevStep step) {
    if (dims_.bf16) issue_backward_t<bf16>(B, train, step);
    else issue_backward_t<float>(B, train, step);
  }

  // The backward in the mode's storage type AT (float; bf16 in bf16 mode). Per layer, from the
  // top: FC2's dx GEMM with the GELU backward in its epilogue -> dpre; FC1's dx GEMM with the
  // LN2 backward (dres += ..., proj's dy = drop(d mid) stored over mid) -> proj's dx GEMM ->
  // attention backward -> dqkv; QKV's dx GEMM with the LN1 backward (dres += ..., the dy of the
  // layer below's FC2 stored over res[l]). After the last layer: the patch embedding, then every
  // layer's weight gradients in four batched GEMMs and every bias (and LN weight) gradient in one
  // column-sum launch.
  template <class AT>
  void issue_backward_t(int B, bool train, DevStep step) {
    const Dims d = dims_of(cfg_, opt_, B);  // the actual batch
    const ParamLayout& P = layout_;
    const int NT = d.B * d.T;
    const size_t n = d.BTC();
    const uint64_t seed = opt_.seed;
    const float p_hidden = train ? cfg_.dropout : 0.0f;
    const float p_attn = train ? cfg_.attn_dropout : 0.0f;
    const int ldg = grad_ld<AT>();
    float* g = grads_;
    const float* w = params_;
    const AT* wa = weights<AT>();
    Activations& a = act_;

    if (!cfg_.final_ln && !opt_.freeze_backbone) {
      // Head (FP32) and the top layer's fc2 dy in one launch: dres = the CLS rows' gradient
      // (0 elsewhere), its dropout's backward stored over res[L], head dW += (kernels/head.cuh).
      head_backward<AT>(stream_, a.dlogits, w + P.head_w, head_input(), a.dres,
                        (AT*)layer_res(d.L), ldg, g + P.head_w, d.B, d.T, d.C, d.K, p_hidden,
                        seed, layer_site(d.L - 1, 2), step);
    } else {
      // Head on the CLS rows (row stride T*C), FP32 (head_precision): dx into the CLS rows of
      // dres (or, with a final LN, of dln first); the other rows' gradient is 0.
      CUDA_CHECK(cudaMemsetAsync(a.dres, 0, n * sizeof(float), stream_));
      float* dfin = a.dres;
      if (cfg_.final_ln) {
        CUDA_CHECK(cudaMemsetAsync(a.dln, 0, n * sizeof(float), stream_));
        dfin = a.dln;
      }
      const Precision hp = head_precision();
      gemm_dyW<float, float>(hp, a.dlogits, d.K, w + P.head_w, dfin, d.T * d.C, d.B, d.C, d.K);
      gemm_dw<float>(hp, head_input(), d.T * d.C, 0, a.dlogits, d.K, 0, g + P.head_w, 0, d.B,
                     d.C, d.K, 1);
      if (cfg_.final_ln)
        layernorm_backward(stream_, a.dln, layer_res(d.L), w + P.lnf_w, a.lnf_mean, a.lnf_rstd,
                           a.dres, g + P.lnf_w, g + P.lnf_b, a.scratch, NT, d.C);
      // Frozen backbone (linear probe): nothing below the head (+ final LN) is trained, so its
      // gradients are never needed; they stay 0 from zero_grad(). Only the head's bias is summed.
      if (opt_.freeze_backbone) {
        column_sums_many(stream_, a.sumjobs, 1, d.K, d.B);
        return;
      }
      // The top layer's fc2 dy: drop(d res[L]), stored over res[L].
      dropout_backward_rows<AT>(stream_, a.dres, (AT*)layer_res(d.L), NT, d.C, ldg, p_hidden,
                                seed, layer_site(d.L - 1, 2), step);
    }

    const bool tc = d.bf16 && attention_tc_supports_head_dim(d.C / d.NH);
    for (int l = d.L - 1; l >= 0; --l) {
      const ParamLayout::Block& b = P.blocks[l];
      const LayerT<AT> A = typed<AT>(l);
      // MLP branch: res[l+1] = mid + drop(fc2(gelu(fc1(ln2(mid))))); fc2's dy = drop(d res[l+1]).
      const AT* dy2 = (const AT*)layer_res(l + 1);
      if (lt_gelu()) {
        gemm_dyW<AT, AT>(d.prec, dy2, ldg, wa + b.fc2_w, A.dpre, d.M, NT, d.M, d.C,
                         LtEpilogue::Dgelu, A.fc1_pre);
      } else {
        gemm_dyW<AT, float>(d.prec, dy2, ldg, wa + b.fc2_w, a.dact, d.M, NT, d.M, d.C);
        gelu_backward(stream_, a.dact, A.fc1_pre, A.dpre, d.BTM(), cfg_.gelu);
      }
      // fc1's dx + the LN2 backward: dres = d mid; proj's dy = drop(d mid), stored over mid.
      ln_backward<AT>(A.dpre, d.M, wa + b.fc1_w, NT, d.M, A.mid, A.ln2_mean, A.ln2_rstd,
                      w + b.ln2_w, g + b.ln2_w, g + b.ln2_b, (AT*)A.mid, p_hidden,
                      layer_site(l, 1), step, lnpart(l, 1));
      // Attention branch: mid = res[l] + drop(proj(attn(qkv(ln1(res[l]))))).
      const AT* dy1 = (const AT*)A.mid;
      if (tc) {
        // Tensor-core backward: dout, out and dqkv in BF16.
        bf16* datt16 = (bf16*)a.datt;
        gemm_dyW<AT, bf16>(d.prec, dy1, ldg, wa + b.proj_w, datt16, d.C, NT, d.C, d.C);
        attention_backward_tc(stream_, (const bf16*)datt16, (const bf16*)A.qkv,
                              (const bf16*)A.att, A.lse, (bf16*)A.dqkv, a.scratch, d.B, d.T, d.C,
                              d.NH, p_attn, seed, layer_site(l, 0), step);
      } else {
        gemm_dyW<AT, float>(d.prec, dy1, ldg, wa + b.proj_w, a.datt, d.C, NT, d.C, d.C);
        // The FP32-math kernels write FP32: straight into dqkv, or (bf16 mode) converted.
        float* dq = d.bf16 ? a.dqkv32 : (float*)A.dqkv;
        attention_backward(stream_, a.datt, A.qkv, A.att, A.lse, dq, a.scratch, d.B, d.T, d.C,
                           d.NH, p_attn, seed, layer_site(l, 0), step);
        if (d.bf16) to_bf16(stream_, dq, (bf16*)A.dqkv, 3 * n);
      }
      // qkv's dx + the LN1 backward: dres = d res[l]; the dy of the layer below's fc2 (or the
      // embedding dropout's) = drop(d res[l]), stored over res[l].
      ln_backward<AT>(A.dqkv, 3 * d.C, wa + b.qkv_w, NT, 3 * d.C, A.res, A.ln1_mean, A.ln1_rstd,
                      w + b.ln1_w, g + b.ln1_w, g + b.ln1_b, (AT*)A.res, p_hidden,
                      l > 0 ? layer_site(l - 1, 2) : (uint32_t)SITE_EMBED_DROPOUT, step,
                      lnpart(l, 0));
    }
    // Embedding: res[0] = drop(patch_embed(x)); its dy is stored over res[0]. The patch bias is
    // a column-sum job (its per-position sums stay in the scratch).
    patch_embed_backward_t<AT>(cublas_, stream_, (const AT*)layer_res(0), ldg, a.cols,
                               g + P.patch_w, nullptr, g + P.cls, g + P.pos, a.scratch, d.B,
                               d.Cin, d.R, d.p, d.C);

    // Weight gradients of all layers: one strided-batched GEMM per kind over the saved inputs and
    // output gradients (layer slots dims_ apart, gradient blocks block_stride_ apart).
    const LayerT<AT> A0 = typed<AT>(0);
    const long long sc = (long long)dims_.BTC(), sm = (long long)dims_.BTM();
    const long long sg = sc * (long long)(sizeof(float) / sizeof(AT));  // a stored gradient's slot
    const ParamLayout::Block& b0 = P.blocks[0];
    const int L = d.L;
    gemm_dw<AT>(d.prec, A0.ln1, d.C, sc, A0.dqkv, 3 * d.C, 3 * sc, g + b0.qkv_w, block_stride_, NT,
                d.C, 3 * d.C, L);
    gemm_dw<AT>(d.prec, A0.att, d.C, sc, (const AT*)A0.mid, ldg, sg, g + b0.proj_w, block_stride_,
                NT, d.C, d.C, L);
    gemm_dw<AT>(d.prec, A0.ln2, d.C, sc, A0.dpre, d.M, sm, g + b0.fc1_w, block_stride_, NT, d.C,
                d.M, L);
    gemm_dw<AT>(d.prec, A0.fc1_act, d.M, sm, (const AT*)layer_res(1), ldg, sg, g + b0.fc2_w,
                block_stride_, NT, d.M, d.C, L);
    // Every bias gradient (and, fused, the LN weight gradients): one launch.
    column_sums_many(stream_, a.sumjobs, d.njobs, sumjob_cols_, d.B);
  }

 public:
  void get_logits(float* out) const override {
    download(out, act_.logits, (size_t)last_B_ * dims_.K);
  }

  float last_loss() override {
    if (last_B_ == 0) return NAN;  // no forward yet (as the CPU model)
    std::vector<float> losses(last_B_);
    download(losses.data(), act_.losses, losses.size());
    double sum = 0;
    for (float x : losses) sum += x;
    return (float)(sum / last_B_);
  }

  Metrics take_metrics() override {
    // The one host-device sync of a log line: both records, then reset them.
    double m[2];
    NonFiniteRecord nf;
    CUDA_CHECK(cudaMemcpyAsync(m, act_.metrics, sizeof m, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaMemcpyAsync(&nf, act_.nonfinite, sizeof nf, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    CUDA_CHECK(cudaMemsetAsync(act_.metrics, 0, 2 * sizeof(double), stream_));
    CUDA_CHECK(cudaMemsetAsync(act_.nonfinite, 0xff, sizeof(NonFiniteRecord), stream_));
    Metrics r;
    r.loss_sum = m[0];
    r.correct = (int64_t)llround(m[1]);
    r.first_nonfinite_step = nf.step;
    r.first_nonfinite_loss = nf.step >= 0 ? nf.loss : 0.0f;
    r.count = metric_count_;
    metric_count_ = 0;
    return r;
  }

  void infer(const float* x, int B, float* logits) override {
    if (B < 0) throw Error("infer: negative batch size");
    const size_t per_image = (size_t)dims_.Cin * dims_.R * dims_.R;
    for (int b0 = 0; b0 < B; b0 += dims_.B) {
      const int nb = std::min(dims_.B, B - b0);
      if (dims_.x16) {
        // FP16 input: rounded on the host (as the CPU model rounds it), half the bytes to copy.
        std::vector<__half> h(nb * per_image);
        for (size_t i = 0; i < h.size(); ++i) h[i] = __float2half_rn(x[b0 * per_image + i]);
        CUDA_CHECK(cudaMemcpyAsync(act_.x16, h.data(), h.size() * sizeof(__half),
                                   cudaMemcpyHostToDevice, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));  // h is freed at the end of the iteration
      } else {
        CUDA_CHECK(cudaMemcpyAsync(act_.x, x + b0 * per_image, nb * per_image * sizeof(float),
                                   cudaMemcpyHostToDevice, stream_));
      }
      encoder_forward(nb, /*train=*/false, 0);
      CUDA_CHECK(cudaMemcpyAsync(logits + (size_t)b0 * dims_.K, act_.logits,
                                 (size_t)nb * dims_.K * sizeof(float), cudaMemcpyDeviceToHost,
                                 stream_));
      CUDA_CHECK(cudaStreamSynchronize(stream_));  // x and logits are the caller's (pageable)
    }
    // The saved activations are now infer()'s, not those of the last forward.
    have_forward_ = false;
  }

  // infer() a chunk at a time, then each layer's probabilities recomputed from its saved qkv
  // and lse (attention_probs) into one (max_batch, NH, T, T) buffer, allocated on first use
  // (training never needs it) and copied out image by image into (B, L, NH, T, T).
  void infer_attention(const float* x, int B, float* logits, float* probs) override {
    if (B < 0) throw Error("infer_attention: negative batch size");
    const size_t per_image = (size_t)dims_.Cin * dims_.R * dims_.R;
    const size_t head = (size_t)dims_.NH * dims_.T * dims_.T, L = dims_.L;
    if (!probs_) {
      CUDA_CHECK(cudaMalloc((void**)&probs_, (size_t)dims_.B * head * sizeof(float)));
      name_allocation(probs_, "attention_probs");
    }
    for (int b0 = 0; b0 < B; b0 += dims_.B) {
      const int nb = std::min(dims_.B, B - b0);
      infer(x + b0 * per_image, nb, logits + (size_t)b0 * dims_.K);
      for (size_t l = 0; l < L; ++l) {
        attention_probs(stream_, layer_[l].qkv, layer_[l].lse, probs_, nb, dims_.T, dims_.C,
                        dims_.NH);
        for (int b = 0; b < nb; ++b)
          CUDA_CHECK(cudaMemcpyAsync(probs + ((size_t)(b0 + b) * L + l) * head,
                                     probs_ + (size_t)b * head, head * sizeof(float),
                                     cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));  // probs_ is reused by the next layer
      }
    }
  }

 private:
  // Forward from the normalised input act_.x to act_.logits, B images. Dropout only when train.
  void encoder_forward(int B, bool train, DevStep step) {
    if (dims_.bf16) encoder_forward_t<bf16>(B, train, step);
    else encoder_forward_t<float>(B, train, step);
  }

  // Per layer: QKV GEMM (+ bias epilogue) -> attention -> proj GEMM with dropout + residual +
  // LN2 in its epilogue -> FC1 GEMM (+ bias + GELU epilogue, saving the pre-activation) -> FC2
  // GEMM with dropout + residual + the next layer's LN1 (or the final LN) in its epilogue.
  template <class AT>
  void encoder_forward_t(int B, bool train, DevStep step) {
    const Dims d = dims_of(cfg_, opt_, B);
    check_scratch(d);
    const ParamLayout& P = layout_;
    const int NT = d.B * d.T;
    const size_t n = d.BTC();
    const uint64_t seed = opt_.seed;
    const float p_hidden = train ? cfg_.dropout : 0.0f;
    const float p_attn = train ? cfg_.attn_dropout : 0.0f;
    const float* w = params_;
    const AT* wa = weights<AT>();
    Activations& a = act_;

    // Embedding, its dropout and layer 0's LN1 (every later LN1 runs in the epilogue of the
    // layer below's FC2).
    {
      const LayerT<AT> A = typed<AT>(0);
      const ParamLayout::Block& b0 = P.blocks[0];
      if (d.x16)
        patch_embed_forward_ln(cublas_, stream_, a.x16, w + P.patch_w, w + P.patch_b, w + P.cls,
                               w + P.pos, a.cols, A.res, d.B, d.Cin, d.R, d.p, d.C, p_hidden, seed,
                               SITE_EMBED_DROPOUT, step, w + b0.ln1_w, w + b0.ln1_b, cfg_.ln_eps,
                               A.ln1, A.ln1_mean, A.ln1_rstd);
      else
        patch_embed_forward_ln(cublas_, stream_, a.x, w + P.patch_w, w + P.patch_b, w + P.cls,
                               w + P.pos, a.cols, A.res, d.B, d.Cin, d.R, d.p, d.C, p_hidden, seed,
                               SITE_EMBED_DROPOUT, step, w + b0.ln1_w, w + b0.ln1_b, cfg_.ln_eps,
                               A.ln1, A.ln1_mean, A.ln1_rstd);
    }
    const bool tc = d.bf16 && attention_tc_supports_head_dim(d.C / d.NH);
    for (int l = 0; l < d.L; ++l) {
      const ParamLayout::Block& b = P.blocks[l];
      const LayerT<AT> A = typed<AT>(l);
      gemm_xwT<AT, AT>(d.prec, A.ln1, d.C, wa + b.qkv_w, A.qkv, 3 * d.C, NT, d.C, 3 * d.C,
                       cfg_.qkv_bias ? LtEpilogue::Bias : LtEpilogue::Default,
                       cfg_.qkv_bias ? wa + b.qkv_b : nullptr);
      // Tensor cores (kernels/attention_tc.cuh) for the head dims they take in bf16 mode; else
      // the FP32-math kernel (on BF16 values in bf16 mode).
      if (tc)
        attention_forward_tc(stream_, (const bf16*)A.qkv, (bf16*)A.att, A.lse, d.B, d.T, d.C,
                             d.NH, p_attn, seed, layer_site(l, 0), step);
      else
        attention_forward(stream_, A.qkv, A.att, A.lse, d.B, d.T, d.C, d.NH, p_attn, seed,
                          layer_site(l, 0), step);
      residual_ln<AT, AT>(A.att, d.C, wa + b.proj_w, w + b.proj_b, A.res, A.mid, NT, d.C, p_hidden,
                          layer_site(l, 1), step, w + b.ln2_w, w + b.ln2_b, A.ln2, A.ln2_mean,
                          A.ln2_rstd);
      if (lt_gelu()) {
        gemm_xwT<AT, AT>(d.prec, A.ln2, d.C, wa + b.fc1_w, A.fc1_act, d.M, NT, d.C, d.M,
                         LtEpilogue::GeluAuxBias, wa + b.fc1_b, A.fc1_pre);
      } else {
        // erf GELU (not cuBLASLt's): FC1 + bias in FP32 into dact (free until the backward), then
        // one pass: the GELU, and the pre-activation saved in the storage type.
        gemm_xwT<AT, float>(d.prec, A.ln2, d.C, wa + b.fc1_w, a.dact, d.M, NT, d.C, d.M,
                            LtEpilogue::Bias, w + b.fc1_b);
        gelu_forward(stream_, a.dact, A.fc1_act, d.BTM(), cfg_.gelu, A.fc1_pre);
      }
      if (l + 1 < d.L) {
        const LayerT<AT> An = typed<AT>(l + 1);
        const ParamLayout::Block& bn = P.blocks[l + 1];
        residual_ln<AT, AT>(A.fc1_act, d.M, wa + b.fc2_w, w + b.fc2_b, A.mid, An.res, NT, d.M,
                            p_hidden, layer_site(l, 2), step, w + bn.ln1_w, w + bn.ln1_b, An.ln1,
                            An.ln1_mean, An.ln1_rstd);
      } else {
        // The last layer: the final LN (FP32 output, only the head reads it), or none.
        residual_ln<AT, float>(A.fc1_act, d.M, wa + b.fc2_w, w + b.fc2_b, A.mid, layer_res(d.L),
                               NT, d.M, p_hidden, layer_site(l, 2), step,
                               cfg_.final_ln ? w + P.lnf_w : nullptr,
                               cfg_.final_ln ? w + P.lnf_b : nullptr, a.lnf, a.lnf_mean,
                               a.lnf_rstd);
      }
    }
    // Classifier on the CLS token: row 0 of every image, i.e. rows of stride T*C.
    gemm_xwT<float, float>(head_precision(), head_input(), d.T * d.C, w + P.head_w, a.logits, d.K,
                           d.B, d.C, d.K, LtEpilogue::Bias, w + P.head_b);
  }

  // Residual stream entering layer l (l = L: leaving the encoder).
  float* layer_res(int l) const { return act_.res + (size_t)l * dims_.BTC(); }

  // The head's input: the CLS rows (row stride T*C) of the final LN output or of the residual
  // stream leaving the encoder; FP32 in every mode.
  const float* head_input() const { return cfg_.final_ln ? act_.lnf : layer_res(dims_.L); }
  // The head is a (B x C x K) GEMM: FP32 operands in every mode (TF32 in tf32 mode), so the
  // loss, logits and their gradient never see BF16 rounding.
  Precision head_precision() const {
    return dims_.prec == Precision::Bf16 ? Precision::Fp32 : dims_.prec;
  }
  // The FC1 GELU and its backward run as cuBLASLt epilogues (tanh GELU, aux ld OK); else
  // kernels/gelu.cuh.
  bool lt_gelu() const { return cfg_.gelu == Gelu::Tanh && lt_gelu_aux_ok(dims_.M); }

  // The GEMM weights in the mode's storage type: params_ (FP32 modes) or the BF16 copy.
  template <class AT> const AT* weights() const { return pick((AT*)nullptr, params_, w16_); }
  static float* pick(float*, float* f, bf16*) { return f; }
  static bf16* pick(bf16*, float*, bf16* h) { return h; }
  // Row stride, in AT elements, of a gradient stored over an FP32 activation (one row in one row).
  template <class AT> static int grad_ld_of(int C) { return C * (int)(sizeof(float) / sizeof(AT)); }
  template <class AT> int grad_ld() const { return grad_ld_of<AT>(dims_.C); }

  // y (N, out; row stride ldy) = x (N, in; row stride ldx) W^T with W (out, in) as stored, then
  // the epilogue (bias (out), aux (N, out) of y's type). cuBLASLt (kernels/matmul_lt.cuh).
  template <class AT, class DT>
  void gemm_xwT(Precision prec, const AT* x, int ldx, const AT* W, DT* y, int ldy, int N, int in,
                int out, LtEpilogue ep = LtEpilogue::Default, const DT* bias = nullptr,
                DT* aux = nullptr) {
    if (N == 0) return;
    // Column-major: y^T (out x N, ld ldy) = op_T(W as (in x out), ld in) * x^T (in x N, ld ldx).
    LtCall c;
    c.transa = true;
    c.m = out;
    c.n = N;
    c.k = in;
    c.A = W;
    c.lda = in;
    c.B = x;
    c.ldb = ldx;
    c.D = y;
    c.ldd = ldy;
    c.epilogue = ep;
    c.bias = bias;
    c.aux = aux;
    c.ldaux = out;
    lt_matmul<AT, DT>(lt_, stream_, prec, c);
  }
  // dx (N, in; row stride lddx) = dy (N, out; row stride lddy) W, W (out, in) as stored; Dgelu:
  // times gelu'(aux), aux (N, in) of dx's type.
  template <class AT, class DT>
  void gemm_dyW(Precision prec, const AT* dy, int lddy, const AT* W, DT* dx, int lddx, int N,
                int in, int out, LtEpilogue ep = LtEpilogue::Default, DT* aux = nullptr) {
    if (N == 0) return;
    // dx^T (in x N, ld lddx) = W-as-stored (in x out, ld in) * dy^T (out x N, ld lddy).
    LtCall c;
    c.m = in;
    c.n = N;
    c.k = out;
    c.A = W;
    c.lda = in;
    c.B = dy;
    c.ldb = lddy;
    c.D = dx;
    c.ldd = lddx;
    c.epilogue = ep;
    c.aux = aux;
    c.ldaux = in;
    lt_matmul<AT, DT>(lt_, stream_, prec, c);
  }
  // dW_i (out, in) += dy_i^T x_i for `batch` matrices (strides in elements): x_i (N, in; row
  // stride ldx), dy_i (N, out; row stride lddy), dW FP32.
  template <class AT>
  void gemm_dw(Precision prec, const AT* x, int ldx, long long sx, const AT* dy, int lddy,
               long long sdy, float* dw, long long sw, int N, int in, int out, int batch) {
    if (N == 0) return;
    // dW^T (in x out, ld in) += x^T (in x N, ld ldx) * op_T(dy^T (out x N, ld lddy)).
    LtCall c;
    c.transb = true;
    c.m = in;
    c.n = out;
    c.k = N;
    c.A = x;
    c.lda = ldx;
    c.stride_a = sx;
    c.B = dy;
    c.ldb = lddy;
    c.stride_b = sdy;
    c.D = dw;
    c.ldd = in;
    c.stride_d = sw;
    c.batch = batch;
    c.beta = 1.0f;
    lt_matmul<AT, float>(lt_, stream_, prec, c);
  }

  // out (N, C) = res + drop(x W^T + bias); y = LN(out) when ln_w (final layer without a final
  // LN: none). One launch (kernels/gemm_ln.cuh) where the width allows; else GEMM, dropout +
  // residual and LayerNorm kernels.
  template <class AT, class YT>
  void residual_ln(const AT* x, int ldx, const AT* W, const float* bias, const float* res,
                   float* out, int N, int K, float p, uint32_t site, DevStep step,
                   const float* ln_w, const float* ln_b, YT* y, float* mean, float* rstd) {
    const int C = dims_.C;
    if (dims_.fused_ln) {
      gemm_residual_ln_forward<AT, YT>(stream_, dims_.prec, x, ldx, W, bias, res, out, N, K, C, p,
                                       opt_.seed, site, step, ln_w, ln_b, cfg_.ln_eps, y, mean,
                                       rstd);
      return;
    }
    gemm_xwT<AT, float>(dims_.prec, x, ldx, W, act_.tmp, C, N, K, C, LtEpilogue::Bias, bias);
    dropout_residual_forward(stream_, res, act_.tmp, out, (size_t)N * C, p, opt_.seed, site,
                             step);
    if (ln_w) ln_forward_t(out, ln_w, ln_b, y, mean, rstd, N);
  }
  // The gradient through a Linear (dy (N, K), W (K, C)) into a LayerNorm's output, then that
  // LayerNorm's backward: dres += d(LN input); mask_out (N, C; row stride grad_ld) = drop(new
  // dres) (the next GEMM's dy, stored over x's rows); LN weight gradients into `partial` (fused:
  // a column-sum job adds them) or straight into gw/gb. One launch where the width allows.
  template <class AT>
  void ln_backward(const AT* dy, int lddy, const AT* W, int N, int K, const float* x,
                   const float* mean, const float* rstd, const float* ln_w, float* gw, float* gb,
                   AT* mask_out, float p, uint32_t site, DevStep step, float* partial) {
    const int C = dims_.C;
    if (dims_.fused_ln) {
      gemm_ln_backward<AT>(stream_, dims_.prec, dy, lddy, W, N, K, C, x, mean, rstd, ln_w,
                           act_.dres, mask_out, grad_ld<AT>(), p, opt_.seed, site, step, partial);
      return;
    }
    gemm_dyW<AT, float>(dims_.prec, dy, lddy, W, act_.dln, C, N, C, K);
    layernorm_backward(stream_, act_.dln, x, ln_w, mean, rstd, act_.dres, gw, gb, act_.scratch, N,
                       C);
    dropout_backward_rows<AT>(stream_, act_.dres, mask_out, N, C, grad_ld<AT>(), p, opt_.seed,
                              site, step);
  }
  // LayerNorm of N rows of width C into y (float or bf16).
  template <class YT>
  void ln_forward_t(const float* x, const float* w, const float* b, YT* y, float* mean,
                    float* rstd, int N) {
    layernorm_forward(stream_, x, w, b, y, mean, rstd, N, dims_.C, cfg_.ln_eps);
  }
  // Layer l's two LayerNorms' weight-gradient partials (k = 0: LN1, 1: LN2), fused path only.
  float* lnpart(int l, int k) const {
    if (!act_.lnpart) return nullptr;
    return act_.lnpart + ((size_t)l * 2 + k) * 2 * (size_t)dims_.ln_rows * dims_.C;
  }

  // Per-layer views into the arena, fixed at allocation. Slots are sized for the planned
  // batch; an actual batch B uses the first B images' worth of each slot.
  struct Layer {
    float *res, *ln1, *ln1_mean, *ln1_rstd, *qkv, *att, *lse, *mid, *ln2, *ln2_mean, *ln2_rstd,
        *fc1_pre, *fc1_act, *dqkv, *dpre;
    bf16 *ln1h, *qkvh, *atth, *ln2h, *fc1_preh, *fc1_acth, *dqkvh, *dpreh;  // bf16 mode's
  };
  // Layer l's views in the storage type AT.
  template <class AT>
  struct LayerT {
    float *res, *mid, *ln1_mean, *ln1_rstd, *lse, *ln2_mean, *ln2_rstd;
    AT *ln1, *qkv, *att, *ln2, *fc1_pre, *fc1_act, *dqkv, *dpre;
  };
  template <class AT>
  LayerT<AT> typed(int l) const {
    const Layer& A = layer_[l];
    const AT* t = nullptr;
    LayerT<AT> r;
    r.res = A.res;
    r.mid = A.mid;
    r.ln1_mean = A.ln1_mean;
    r.ln1_rstd = A.ln1_rstd;
    r.lse = A.lse;
    r.ln2_mean = A.ln2_mean;
    r.ln2_rstd = A.ln2_rstd;
    r.ln1 = pick((AT*)t, A.ln1, A.ln1h);
    r.qkv = pick((AT*)t, A.qkv, A.qkvh);
    r.att = pick((AT*)t, A.att, A.atth);
    r.ln2 = pick((AT*)t, A.ln2, A.ln2h);
    r.fc1_pre = pick((AT*)t, A.fc1_pre, A.fc1_preh);
    r.fc1_act = pick((AT*)t, A.fc1_act, A.fc1_acth);
    r.dqkv = pick((AT*)t, A.dqkv, A.dqkvh);
    r.dpre = pick((AT*)t, A.dpre, A.dpreh);
    return r;
  }
  void make_layer_views() {
    const Activations& a = act_;
    const size_t btc = dims_.BTC(), bt = dims_.BT(), btm = dims_.BTM();
    // Slot l of a per-layer piece; nullptr stays nullptr (the precision's unused twin).
    auto at = [](auto* p, size_t off) { return p ? p + off : p; };
    for (int l = 0; l < dims_.L; ++l) {
      const size_t L = (size_t)l;
      layer_.push_back(Layer{a.res + L * btc, at(a.ln1, L * btc), a.ln1_mean + L * bt,
                             a.ln1_rstd + L * bt, at(a.qkv, L * 3 * btc), at(a.att, L * btc),
                             a.lse + L * bt * dims_.NH, a.mid + L * btc, at(a.ln2, L * btc),
                             a.ln2_mean + L * bt, a.ln2_rstd + L * bt, at(a.fc1_pre, L * btm),
                             at(a.fc1_act, L * btm), at(a.dqkv, L * 3 * btc), at(a.dpre, L * btm),
                             at(a.ln1h, L * btc), at(a.qkvh, L * 3 * btc), at(a.atth, L * btc),
                             at(a.ln2h, L * btc), at(a.fc1_preh, L * btm),
                             at(a.fc1_acth, L * btm), at(a.dqkvh, L * 3 * btc),
                             at(a.dpreh, L * btm)});
    }
  }

  // The column sums of the backward's last launch (kernels/reduce.cuh column_sums_many), in a
  // fixed order: the head bias first (a frozen backbone sums only that one), the patch bias, then
  // per layer its biases from the stored output gradients and, fused, its LN weight partials.
  // Also checks the layers' parameters are equally spaced (the batched weight-gradient GEMMs).
  void upload_sum_jobs() {
    const ParamLayout& P = layout_;
    const Dims& d = dims_;
    block_stride_ = d.L > 1 ? (long long)(P.blocks[1].qkv_w - P.blocks[0].qkv_w) : 0;
    for (int l = 1; l < d.L; ++l)
      if ((long long)(P.blocks[l].qkv_w - P.blocks[l - 1].qkv_w) != block_stride_ ||
          P.blocks[l].fc2_w - P.blocks[l - 1].fc2_w != P.blocks[l].qkv_w - P.blocks[l - 1].qkv_w)
        throw Error("internal: the layers' parameters are not equally spaced");
    const bool h = d.bf16;
    const int ldg = h ? grad_ld_of<bf16>(d.C) : grad_ld_of<float>(d.C);
    std::vector<ColSumJob> jobs;
    auto job = [&](const void* a, int ld, int cols, size_t out_off, int mul, int div, int add,
                   int shift, bool bf) {
      jobs.push_back(ColSumJob{a, grads_ + out_off, ld, cols, mul, div, add, shift, bf ? 1 : 0});
      sumjob_cols_ = std::max(sumjob_cols_, cols);
    };
    job(act_.dlogits, d.K, d.K, P.head_b, 1, 1, 0, 0, false);  // rows: B
    // patch bias: rows 1..T-1 of the per-position sums (kernels/patch_embed.cuh)
    job(patch_embed_possum(act_.scratch) + d.C, d.C, d.C, P.patch_b, 0, 1, d.T - 1, 0, false);
    for (int l = 0; l < d.L; ++l) {
      const ParamLayout::Block& b = P.blocks[l];
      const Layer& A = layer_[l];
      const void* dqkv = h ? (const void*)A.dqkvh : A.dqkv;
      const void* dpre = h ? (const void*)A.dpreh : A.dpre;
      if (cfg_.qkv_bias) job(dqkv, 3 * d.C, 3 * d.C, b.qkv_b, d.T, 1, 0, 0, h);
      job(A.mid, ldg, d.C, b.proj_b, d.T, 1, 0, 0, h);
      job(dpre, d.M, d.M, b.fc1_b, d.T, 1, 0, 0, h);
      job(layer_res(l + 1), ldg, d.C, b.fc2_b, d.T, 1, 0, 0, h);
      if (d.fused_ln) {
        // rows: the row blocks of a launch over B*T rows; the bias partials follow the weight's
        const int bm = gemm_ln::block_rows(d.C);
        const size_t ln_w[2] = {b.ln1_w, b.ln2_w}, ln_b[2] = {b.ln1_b, b.ln2_b};
        for (int k = 0; k < 2; ++k) {
          job(lnpart(l, k), d.C, d.C, ln_w[k], d.T, bm, 0, 0, false);
          job(lnpart(l, k), d.C, d.C, ln_b[k], d.T, bm, 0, 1, false);
        }
      }
    }
    if ((int)jobs.size() != d.njobs) throw Error("internal: column-sum job count");
    CUDA_CHECK(cudaMemcpyAsync(act_.sumjobs, jobs.data(), jobs.size() * sizeof(ColSumJob),
                               cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // `jobs` is freed on return
  }

  void check_batch(int B) const {
    if (B < 1 || B > dims_.B)
      throw Error("batch of " + std::to_string(B) + " images: the CUDA model was planned for 1.." +
                  std::to_string(dims_.B) + " (ModelOptions::max_batch)");
  }
  // The scratch was planned at max_batch; make sure no launcher wants more at this batch.
  void check_scratch(const Dims& d) const {
    if (scratch_floats(d, layout_.total) > scratch_floats_)
      throw Error("internal: kernel scratch for batch " + std::to_string(d.B) +
                  " exceeds the plan for batch " + std::to_string(dims_.B));
  }

  void allocate_activations() {
    scratch_floats_ = scratch_floats(dims_, layout_.total);
    const size_t nspans = layout_.tensors.size();
#if defined(VIT_SIMT)
    // Under simt every piece gets its own allocation so simt's guard bytes catch a kernel that
    // writes past one buffer into the next. On the GPU: one allocation, carved up.
    for_each_piece(cfg_, dims_, nspans, scratch_floats_, act_,
                   [&](const char* name, void** p, size_t bytes) {
                     CUDA_CHECK(cudaMalloc(p, std::max<size_t>(bytes, 1)));
                     arena_pieces_.push_back(*p);
                     name_allocation(*p, name);
                   });
#else
    const size_t total = arena_bytes(cfg_, dims_, nspans, scratch_floats_);
    char* base = nullptr;
    CUDA_CHECK(cudaMalloc((void**)&base, total));
    arena_pieces_.push_back(base);
    size_t off = 0;
    for_each_piece(cfg_, dims_, nspans, scratch_floats_, act_,
                   [&](const char*, void** p, size_t bytes) {
                     *p = base + off;
                     off += align_up(bytes, ARENA_ALIGN);
                   });
#endif
    for (int k = 0; k < 2; ++k)
      act_.label[k] = (int32_t*)(act_.img[k] + input_label_offset(dims_));
  }

  static void name_allocation(const void* p, const char* name) {
#if defined(VIT_SIMT)
    simt::name_allocation(p, name);  // simt's guard reports then name the buffer
#else
    (void)p;
    (void)name;
#endif
  }

  void download(float* host, const float* dev, size_t n) const {
    CUDA_CHECK(cudaMemcpyAsync(host, dev, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void upload(float* dev, const float* host, size_t n) {
    CUDA_CHECK(cudaMemcpyAsync(dev, host, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // the caller may free `host` on return
  }

  Config cfg_;
  ModelOptions opt_;
  ParamLayout layout_;
  Dims dims_;  // planned: dims_.B = max_batch
  CudaMemoryPlan plan_;

  cudaStream_t stream_ = nullptr;       // every launch, cuBLAS call and read-back
  cudaStream_t copy_stream_ = nullptr;  // host -> device input copies
  cudaEvent_t copied_[2] = {};          // input slot s copied (compute waits; staging reuse)
  cudaEvent_t consumed_[2] = {};        // compute is done with input slot s
  cublasHandle_t cublas_ = nullptr;
  GradientReducer* reducer_ = nullptr;  // several ranks: sums the gradients (not owned)
  cublasLtHandle_t lt_ = nullptr;       // the transformer GEMMs (kernels/matmul_lt.cuh)

  float* params_ = nullptr;  // (total) flat, ParamLayout order
  float* grads_ = nullptr;   // (total) += by backward()
  float* m_ = nullptr;       // (total) Adam first moment
  float* v_ = nullptr;       // (total) Adam second moment
  bf16* w16_ = nullptr;      // (total) bf16(params_), the bf16 mode's GEMM weights (else nullptr)
  Activations act_{};
  std::vector<void*> arena_pieces_;
  float* probs_ = nullptr;  // (max_batch, NH, T, T) attention maps' buffer (infer_attention)
  std::vector<Layer> layer_;  // per-layer views into act_
  size_t scratch_floats_ = 0;
  int nspans_ = 0;
  long long block_stride_ = 0;  // floats between layer l's and layer l+1's parameter tensors
  int sumjob_cols_ = 0;         // the widest column-sum job

  uint8_t* stage_img_[2] = {};    // pinned input_slot_bytes: (max_batch, Cin, S, S) images, labels
  int32_t* stage_label_[2] = {};  // (max_batch) inside stage_img_[s]
  int slot_ = 0;

  int last_B_ = 0;
  uint64_t last_step_ = 0;
  bool last_train_ = false;
  bool have_forward_ = false;  // activations and dlogits of a forward() are in place
  int64_t metric_count_ = 0;
  bool grads_zero_ = true;     // gradients known to be 0 (zero_grad has nothing to do)
  bool last_clipped_ = false;  // the last optimizer step computed the norm (last_grad_norm)

  std::unique_ptr<StepGraphCache> graphs_{new StepGraphCache};  // train_step's graphs
  GraphScalars* dev_scalars_ = nullptr;  // (1) device: what a graph replay reads per step
  int graph_parity_ = 0;                 // which of a shape's two graphs the next step uses
};

}  // namespace

std::string CudaMemoryPlan::describe() const {
  const size_t one = param_floats * sizeof(float);  // each of the four flat buffers
  const std::string w16 =
      bf16 ? " + BF16 weights " + human_bytes(param_floats * sizeof(__nv_bfloat16)) : "";
  char buf[448];
  snprintf(buf, sizeof buf,
           "GPU memory plan: parameters %s%s + gradients %s + Adam m,v %s (%zu floats each) + "
           "%sactivations %s (batch %d, %s input %s) = %s (+ cuBLAS workspace)",
           human_bytes(one).c_str(), w16.c_str(), human_bytes(one).c_str(),
           human_bytes(2 * one).c_str(), param_floats, bf16 ? "BF16/FP32 " : "",
           human_bytes(activation_bytes).c_str(), max_batch, fp16_input ? "FP16" : "FP32",
           human_bytes(input_bytes).c_str(), human_bytes(total_bytes()).c_str());
  return buf;
}

std::string out_of_memory_message(const CudaMemoryPlan& p, size_t free_bytes) {
  return "the model needs " + human_bytes(p.total_bytes()) + " of GPU memory (" +
         human_bytes(p.param_bytes) + " parameters+gradients+Adam, " +
         human_bytes(p.activation_bytes) + (p.bf16 ? " BF16/FP32" : "") +
         " activations for a micro-batch of " +
         std::to_string(p.max_batch) + ") but only " + human_bytes(free_bytes) +
         " is free: lower --batch-size, or raise --accum-steps to keep the batch size (the "
         "activations scale with --batch-size / --accum-steps)";
}

CudaMemoryPlan cuda_memory_plan(const Config& c, const ModelOptions& o) {
  check_options(c, o);
  ParamLayout layout(c);
  const Dims d = dims_of(c, o, o.max_batch);
  CudaMemoryPlan p;
  p.max_batch = o.max_batch;
  p.fp16_input = d.x16;
  p.input_bytes = (size_t)d.B * d.Cin * d.R * d.R * (d.x16 ? sizeof(__half) : sizeof(float));
  p.param_floats = layout.total;
  p.bf16 = d.bf16;
  p.param_bytes = 4 * layout.total * sizeof(float) + (d.bf16 ? layout.total * sizeof(bf16) : 0);
  p.activation_bytes =
      arena_bytes(c, d, layout.tensors.size(), scratch_floats(d, layout.total));
  return p;
}

void set_stream_test_hooks(const StreamTestHooks* hooks) { g_stream_hooks = hooks; }

std::unique_ptr<Model> make_cuda_model(const Config& c, const ModelOptions& o) {
  check_options(c, o);
  return std::unique_ptr<Model>(new CudaModel(c, o));
}

}  // namespace vit
