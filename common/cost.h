// common/cost.h — the step cost model: what one training step of a config must compute and
// move, and the fastest any implementation could do it on a given GPU (the roofline floor that
// measured times are compared against). Pure arithmetic from the config; no GPU needed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"

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
};
const std::vector<GpuSpec>& named_gpus();  // A100, H100, RTX 4090, RTX 3060

// Roofline floor of one step: max(FLOPs / TF32 peak, min_bytes / bandwidth), in seconds.
double roofline_seconds(const StepCost& s, const GpuSpec& g);
// The same for --precision bf16: max(FLOPs / BF16 peak, min_bytes_bf16 / bandwidth). The dense
// BF16 tensor-core peak with FP32 accumulation is 2x the TF32 one on every GPU named here
// (A100 312, H100 SXM 989, RTX 4090 165, RTX 3060 25.4 TFLOP/s).
double roofline_seconds_bf16(const StepCost& s, const GpuSpec& g);

// The report `vit_bench --cost` prints.
std::string cost_report(const Config& c, const std::string& preset_name, int batch,
                        int64_t images_per_epoch);

}  // namespace vit
