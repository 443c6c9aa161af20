// common/cost.h — the step cost model: what one training step of a config must compute and
// move, and the fastest any implementation could do it on a given GPU (the roofline floor that
// measured times are compared against). Pure arithmetic from the config; no GPU needed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/model.h"  // Precision

namespace vit {

struct FlopSplit {  // FLOPs of one training step (forward + backward), by layer type
  double patch_embed = 0, qkv = 0, attention = 0, proj = 0, mlp = 0, head = 0;
  double total() const { return patch_embed + qkv + attention + proj + mlp + head; }
};

struct StepCost {
  int64_t params = 0;             // trainable parameters
  double forward_flops = 0;       // one forward pass of the batch (matmuls: 2*m*n*k)
  FlopSplit train;                // forward + backward (backward = 2x forward per matmul, but
                                  // the patch embedding, whose input needs no gradient: 1x)
  double activation_bytes = 0;    // activations kept for the backward, FP32, whole batch
  double param_state_bytes = 0;   // parameters + gradients + Adam m and v, FP32
  double min_bytes = 0;           // lower bound on DRAM traffic of one step (see cost.cpp)
  // --precision bf16: the same with every activation in BF16 (LayerNorm statistics and the
  // attention log-sum-exp stay FP32) and the forward/backward reading the BF16 weight copy.
  double activation_bytes_bf16 = 0;
  double min_bytes_bf16 = 0;
};

StepCost step_cost(const Config& c, int batch);

struct GpuSpec {
  std::string name;
  double tf32_flops;  // dense tensor-core TF32 FLOP/s (what the GEMMs run at by default)
  double fp32_flops;  // CUDA-core FP32 FLOP/s
  double bandwidth;   // DRAM bytes/s
  double bf16_flops;  // dense tensor-core BF16 FLOP/s with FP32 accumulation
  double link_bandwidth = 0;  // GPU-to-GPU bytes/s one way (NVLink, or PCIe 4.0 x16)
};
const std::vector<GpuSpec>& named_gpus();  // A100, H100, RTX 4090, RTX 3060

// Roofline floor of one step: max(FLOPs / TF32 peak, min_bytes / bandwidth), in seconds.
double roofline_seconds(const StepCost& s, const GpuSpec& g);
// The same for --precision bf16: max(FLOPs / BF16 peak, min_bytes_bf16 / bandwidth). The dense
// BF16 tensor-core peak with FP32 accumulation is 2x the TF32 one on every GPU named here
// (A100 312, H100 SXM 989, RTX 4090 165, RTX 3060 25.4 TFLOP/s).
double roofline_seconds_bf16(const StepCost& s, const GpuSpec& g);

// ---- The step-time model: one training step as the list of launches the CUDA path issues -----
//
// Unlike the floor above, this prices every launch of host/cuda_model.cu's step (forward,
// backward, zero_grad, clipping, Adam) and *adds* them: GEMMs at a stated fraction of the
// precision's peak, each memory-bound kernel's bytes at a stated fraction of DRAM bandwidth,
// attention from its instruction count on FP32 cores (today's kernel has no tensor-core path),
// plus launch overhead: eager, each launch costs at least the host's launch time; as one graph,
// a GPU-side gap per node and one graph launch.

struct StepOp {
  // Gemm: a cuBLAS(Lt) call. KernelGemm: one of our kernels that is a GEMM with a fused
  // epilogue (kernels/gemm_ln.cuh): priced as a GEMM, launched as a kernel. Copy: pinned host ->
  // device.
  enum Kind { Gemm, KernelGemm, Memory, Attention, Memset, Copy } kind;
  std::string name;  // e.g. "fc1 gemm", "layernorm fwd"
  int count = 1;     // launches of this op per step (e.g. 12 layers)
  double flops = 0;  // per launch (GEMMs: 2mnk; attention: FP32 instructions, see cost.cpp)
  double bytes = 0;  // DRAM bytes per launch (read + written), at the precision's storage sizes
};
// The launches of one training step of `c` at `batch`: the kernels, cuBLAS calls, memsets and
// copies of CudaModel::train_step (zero_grad, the input copies, forward, backward,
// optimizer_step), in that order; clip_grad: the gradient-norm kernels run (--clip-grad > 0).
// tests/test_step_graph.cu checks the count against a counted step of the CUDA model.
std::vector<StepOp> step_ops(const Config& c, int batch, Precision p, bool clip_grad = false);

// Whether the fused GEMM + LayerNorm kernels (kernels/gemm_ln.cuh gemm_ln_supports) take hidden
// width C (tests/test_step_graph.cu checks the two agree). The model does not know a GPU's
// shared memory: on the 99 KiB parts (RTX 4090, RTX 3060) the CUDA model runs widths above 512
// (vit-b16) unfused, with more launches than these rows count.
bool fused_ln_width(int C);

struct ModelAssumptions {
  double gemm_efficiency = 0.5;   // of the precision's dense peak (small, skinny ViT GEMMs)
  double kernel_gemm_efficiency = 0.3;  // our fused GEMM + LayerNorm kernels (WMMA, full rows)
  double mem_efficiency = 0.7;    // of DRAM bandwidth, for memory-bound kernels
  double attn_efficiency = 0.35;  // of FP32 instruction issue rate (19-25% occupancy)
  double launch_us = 3.0;         // host + driver cost of one eager launch
  double node_gap_us = 1.0;       // GPU-side gap between two launches (eager or graph nodes)
  double graph_launch_us = 10.0;  // one cudaGraphLaunch for the whole step
  double h2d_bandwidth = 25e9;    // pinned host -> device copies (PCIe 4.0 x16, achieved)
};
struct StepTime {
  int launches = 0;  // kernels + library calls + memsets
  double gemm_s = 0, memory_s = 0, attention_s = 0;  // summed per-op estimates
  double launch_eager_s = 0, launch_graph_s = 0;     // launch overhead, eager / one graph
  double eager_s() const { return gemm_s + memory_s + attention_s + launch_eager_s; }
  double graph_s() const { return gemm_s + memory_s + attention_s + launch_graph_s; }
};
// Each op costs max(flops / rate, bytes / bandwidth) at the assumed efficiencies; GEMMs use the
// precision's peak (FP32: CUDA cores, TF32/BF16: tensor cores). Launch overhead: every launch
// adds node_gap_us; eager, an op takes at least launch_us (the host's launch rate bounds a
// stream of short kernels); a graph adds one graph_launch_us for the whole step.
StepTime step_time(const std::vector<StepOp>& ops, Precision p, const GpuSpec& g,
                   const ModelAssumptions& a = ModelAssumptions());

// Data parallel: one ring all-reduce of `bytes` over `ranks` GPUs moves 2 (ranks-1)/ranks x bytes
// through each GPU's link (NCCL's "bus bandwidth"); at `efficiency` of the link's rate.
double allreduce_seconds(double bytes, int ranks, const GpuSpec& g, double efficiency = 0.8);

// The report `vit_bench --cost` prints.
std::string cost_report(const Config& c, const std::string& preset_name, int batch,
                        int64_t images_per_epoch);

}  // namespace vit
