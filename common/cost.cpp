#include "common/cost.h"

#include <algorithm>
#include <cstdio>

#include "common/params.h"

namespace vit {

StepCost step_cost(const Config& c, int batch) {
  StepCost s;
  const double B = batch, T = c.tokens(), N = c.patches(), C = c.hidden, M = c.mlp,
               K = c.classes, P = c.patch_dim(), L = c.layers, NH = c.heads;
  s.params = (int64_t)ParamLayout(c).count();

  // Forward matmul FLOPs (2 per multiply-add).
  FlopSplit f;
  f.patch_embed = 2 * B * N * P * C;
  f.qkv = L * 2 * B * T * C * 3 * C;
  f.attention = L * 2 * (2 * B * T * T * C);  // q k^T and probs @ v over all heads
  f.proj = L * 2 * B * T * C * C;
  f.mlp = L * 2 * (2 * B * T * C * M);
  f.head = 2 * B * C * K;
  s.forward_flops = f.total();
  // Backward: input and weight gradient each cost the forward's FLOPs; the patch embedding has no
  // input gradient.
  s.train.patch_embed = 2 * f.patch_embed;
  s.train.qkv = 3 * f.qkv;
  s.train.attention = 3 * f.attention;
  s.train.proj = 3 * f.proj;
  s.train.mlp = 3 * f.mlp;
  s.train.head = 3 * f.head;

  // Activations kept for the backward, per image: im2col patches and embedding output, then per
  // layer LN1 out, qkv, attention out, row log-sum-exp, residual, LN2 out, FC1 pre-activation and
  // GELU output, residual, and the LN statistics; the final LN and logits.
  double per_layer = 8 * T * C + 2 * T * M + 4 * T + NH * T;
  double per_image = N * P + T * C + L * per_layer + (c.final_ln ? T * C + 2 * T : 0) + 2 * K;
  s.activation_bytes = 4 * B * per_image;
  s.param_state_bytes = 4.0 * 4 * s.params;
  // Lower bound on traffic: activations written once in the forward and read once in the
  // backward; parameters read in the forward and the backward and gradients written (3 passes);
  // Adam reads p, g, m, v and writes p, m, v (7 passes); the uint8 input.
  s.min_bytes = 2 * s.activation_bytes + 4.0 * 10 * s.params + B * c.channels * 32 * 32;
  // BF16: 2 bytes per activation except the FP32 statistics (per layer 4*T LayerNorm mean/rstd
  // and NH*T attention log-sum-exp, 2*T for the final LN); parameters: BF16 weights read in the forward and the backward (2 x 2 bytes), FP32
  // gradients written (4), Adam reads p, g, m, v (16) and writes p, m, v (12) and the BF16
  // copy (2): 38 bytes per parameter instead of 40.
  const double stats = L * (4 * T + NH * T) + (c.final_ln ? 2 * T : 0);
  s.activation_bytes_bf16 = B * (2 * (per_image - stats) + 4 * stats);
  s.min_bytes_bf16 = 2 * s.activation_bytes_bf16 + 38.0 * s.params + B * c.channels * 32 * 32;
  return s;
}

const std::vector<GpuSpec>& named_gpus() {
  // Dense (no sparsity) datasheet peaks.
  static const std::vector<GpuSpec> g = {
      {"A100 SXM 80GB", 156e12, 19.5e12, 2039e9},
      {"H100 SXM", 494.7e12, 66.9e12, 3350e9},
      {"RTX 4090", 82.6e12, 82.6e12, 1008e9},
      {"RTX 3060", 12.7e12, 12.7e12, 360e9},
  };
  return g;
}

double roofline_seconds(const StepCost& s, const GpuSpec& g) {
  return std::max(s.train.total() / g.tf32_flops, s.min_bytes / g.bandwidth);
}

double roofline_seconds_bf16(const StepCost& s, const GpuSpec& g) {
  return std::max(s.train.total() / (2 * g.tf32_flops), s.min_bytes_bf16 / g.bandwidth);
}

std::string cost_report(const Config& c, const std::string& preset_name, int batch,
                        int64_t images_per_epoch) {
  StepCost s = step_cost(c, batch);
  std::string out;
  char line[256];
  auto add = [&](const char* fmt, auto... a) {
    snprintf(line, sizeof line, fmt, a...);
    out += line;
  };
  add("cost model: %s (image %d, patch %d, hidden %d, layers %d, heads %d, mlp %d), batch %d\n",
      preset_name.c_str(), c.image_size, c.patch_size, c.hidden, c.layers, c.heads, c.mlp, batch);
  add("  parameters            %lld\n", (long long)s.params);
  add("  forward GFLOP/step    %.2f\n", s.forward_flops / 1e9);
  add("  train GFLOP/step      %.2f   (patch %.1f%%, qkv %.1f%%, attention %.1f%%, proj %.1f%%, "
      "mlp %.1f%%, head %.2f%%)\n",
      s.train.total() / 1e9, 100 * s.train.patch_embed / s.train.total(),
      100 * s.train.qkv / s.train.total(), 100 * s.train.attention / s.train.total(),
      100 * s.train.proj / s.train.total(), 100 * s.train.mlp / s.train.total(),
      100 * s.train.head / s.train.total());
  add("  train TFLOP/epoch     %.1f   (%lld images)\n",
      s.train.total() / batch * images_per_epoch / 1e12, (long long)images_per_epoch);
  add("  activations           %.1f MiB   params+grads+Adam %.1f MiB\n",
      s.activation_bytes / 1048576.0, s.param_state_bytes / 1048576.0);
  add("  min DRAM traffic/step %.1f MiB\n", s.min_bytes / 1048576.0);
  add("  roofline floor (TF32 GEMMs), per step / per epoch / 50 epochs:\n");
  double steps = (double)images_per_epoch / batch;
  for (const GpuSpec& g : named_gpus()) {
    double t = roofline_seconds(s, g);
    add("    %-14s %8.3f ms  %8.1f s  %8.1f s\n", g.name.c_str(), 1e3 * t, t * steps,
        50 * t * steps);
  }
  add("  bf16 (--precision bf16): activations %.1f MiB, min DRAM traffic/step %.1f MiB\n",
      s.activation_bytes_bf16 / 1048576.0, s.min_bytes_bf16 / 1048576.0);
  add("  roofline floor (BF16 GEMMs, 2x the TF32 peak), per step / per epoch / 50 epochs:\n");
  for (const GpuSpec& g : named_gpus()) {
    double t = roofline_seconds_bf16(s, g);
    add("    %-14s %8.3f ms  %8.1f s  %8.1f s\n", g.name.c_str(), 1e3 * t, t * steps,
        50 * t * steps);
  }
  return out;
}

}  // namespace vit
