#include "common/cost.h"

#include <algorithm>
#include <cmath>
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
  // BF16 with FP32 accumulation: the GeForce parts run it at half their FP16-accumulate rate.
  // Links: NVLink 3 (A100 SXM) 300 GB/s and NVLink 4 (H100 SXM) 450 GB/s one way; the GeForce
  // cards have no NVLink: PCIe 4.0 x16, 32 GB/s.
      {"A100 SXM 80GB", 156e12, 19.5e12, 2039e9, 312e12, 300e9},
      {"H100 SXM", 494.7e12, 66.9e12, 3350e9, 989.4e12, 450e9},
      {"RTX 4090", 82.6e12, 82.6e12, 1008e9, 165.2e12, 32e9},
      {"RTX 3060", 12.7e12, 12.7e12, 360e9, 25.4e12, 32e9},
  };
  return g;
}

double roofline_seconds(const StepCost& s, const GpuSpec& g) {
  return std::max(s.train.total() / g.tf32_flops, s.min_bytes / g.bandwidth);
}

bool fused_ln_width(int C) { return C >= 1 && C <= 1024; }

std::vector<StepOp> step_ops(const Config& c, int batch, Precision prec, bool clip_grad) {
  const double B = batch, T = c.tokens(), N = c.patches(), C = c.hidden, M = c.mlp,
               K = c.classes, Pd = c.patch_dim(), NH = c.heads,
               S = c.image_size, hd = C / NH;
  const double P = (double)ParamLayout(c).count();
  // Storage sizes: activations E bytes (BF16 mode: 2), the weights the GEMMs read Ew (BF16 mode:
  // the BF16 copy), the model input Ein (FP16 when the input is resized, as CudaModel does).
  // Gradients, Adam state and LN statistics are FP32 in every mode.
  const double E = prec == Precision::Bf16 ? 2 : 4, Ew = E;
  const double Ein = c.image_size != 32 ? 2 : E;
  const double n = B * T * C, nm = B * T * M, bt = B * T;
  const bool bias_qkv = c.qkv_bias;
  std::vector<StepOp> ops;
  auto mem = [&](const char* name, int count, double bytes) {
    ops.push_back({StepOp::Memory, name, count, 0, bytes});
  };
  auto memset_op = [&](const char* name, double bytes) {
    ops.push_back({StepOp::Memset, name, 1, 0, bytes});
  };
  // A GEMM (m x n) = (m x k)(k x n): reads both operands, writes (or, accumulating into FP32
  // weight gradients, reads and writes) the result.
  auto gemm = [&](const char* name, int count, double m, double nn, double k, double a_bytes,
                  double b_bytes, double c_bytes) {
    ops.push_back({StepOp::Gemm, name, count, 2 * m * nn * k, m * k * a_bytes + k * nn * b_bytes + m * nn * c_bytes});
  };
  // Today's attention kernels (kernels/attention.cuh) run on FP32 cores over 32-row query blocks
  // and 32-key tiles, so T is padded to a multiple of 32. Instructions per (query, key) pair and
  // head: forward 2*hd FMAs (q.k, p*v) + ~16 (scale, max, exp, mask); dQ kernel 3*hd + 16
  // (recompute s, dO.v, dq); dK/dV kernel 4*hd + 16 (s, dO.v, dk, dv).
  const double Tp = 32 * std::ceil(T / 32), pairs = B * NH * Tp * Tp;
  auto attn = [&](const char* name, double instr_per_pair, double bytes) {
    ops.push_back({StepOp::Attention, name, c.layers, pairs * instr_per_pair, bytes});
  };
  const int Li = c.layers;

  // Which paths host/cuda_model.cu takes (the same tests as there).
  const bool fused = fused_ln_width(c.hidden);
  const bool lt_gelu = c.gelu == Gelu::Tanh && c.mlp % 8 == 0;  // cuBLASLt GELU epilogues
  const bool tc_attn = prec == Precision::Bf16 && (hd == 32 || hd == 64);
  // A GEMM with a fused epilogue in our kernel: the GEMM, plus the rows it also reads and writes.
  auto kgemm = [&](const char* name, int count, double m, double nn, double k, double extra) {
    ops.push_back({StepOp::KernelGemm, name, count, 2 * m * nn * k,
                   m * k * E + k * nn * Ew + extra});
  };

  // zero_grad: no launch (the previous update zeroed the gradients inside the Adam kernel)
  // input: images and labels from pinned staging in one copy (an eager forward's copy stream;
  // a graph's copy nodes)
  ops.push_back({StepOp::Copy, "input copy", 1, 0, B * 3 * 32 * 32 + B * 4});
  // forward
  mem("input", 1, B * 3 * 32 * 32 + B * 3 * S * S * Ein);
  mem("im2col", 1, B * 3 * S * S * Ein + B * N * Pd * 4);
  gemm("patch gemm", 1, B * N, C, Pd, 4, 4, 4);
  mem("patch epilogue+dropout+ln1", 1, 3 * n * 4 + T * C * 4 + n * E + 2 * bt * 4);
  gemm("qkv gemm (+bias)", Li, bt, 3 * C, C, E, Ew, E);
  attn("attention fwd", 2 * hd + 16, 4 * n * E + B * NH * T * 4);
  // proj / fc2 GEMMs: + dropout + residual (reads res, writes the stream) + the next LayerNorm
  // (writes its output and statistics)
  const double res_ln = 2 * n * 4 + n * E + 2 * bt * 4;
  if (fused) {
    kgemm("proj gemm+residual+ln2", Li, bt, C, C, res_ln);
    // the last layer's epilogue has no LayerNorm without a final LN
    kgemm("fc2 gemm+residual+ln1", Li, bt, C, M, res_ln);
  } else {
    gemm("proj gemm (+bias)", Li, bt, C, C, E, Ew, 4);
    gemm("fc2 gemm (+bias)", Li, bt, C, M, E, Ew, 4);
    mem("dropout+residual", 2 * Li, 3 * n * 4);
    mem("layernorm fwd", 2 * Li - (c.final_ln ? 0 : 1), n * 4 + n * E + 2 * bt * 4);
  }
  if (lt_gelu) {
    gemm("fc1 gemm (+bias+gelu)", Li, bt, M, C, E, Ew, 2 * E);
  } else {
    gemm("fc1 gemm (+bias)", Li, bt, M, C, E, Ew, 4);
    mem("gelu fwd", Li, nm * 4 + 2 * nm * E);
  }
  gemm("head gemm (+bias)", 1, B, K, C, 4, 4, 4);
  mem("cross-entropy+non-finite check", 1, 2 * B * K * 4);
  // backward
  if (!c.final_ln) {
    // one kernel: the head's dx and dW products (FP32, CUDA cores: tiny), dres, the fc2 dy
    ops.push_back({StepOp::KernelGemm, "head bwd (dres, fc2 dy, head dw)", 1, 2 * 2 * B * C * K,
                   n * 4 + n * E + 2 * K * C * 4 + B * C * 4});
  } else {
    memset_op("zero dres", n * 4);
    memset_op("zero dln", n * 4);
    gemm("head dx gemm", 1, B, C, K, 4, 4, 4);
    gemm("head dw gemm", 1, K, C, B, 4, 4, 8);
    mem("final layernorm bwd dx", 1, 4 * n * 4 + 2 * bt * 4);
    mem("final layernorm bwd dw/db", 2, n * 4);
    mem("dropout bwd (fc2 dy)", 1, n * 4 + n * E);
  }
  if (lt_gelu) {
    gemm("fc2 dx gemm (+dgelu)", Li, bt, M, C, E, Ew, 2 * E);
  } else {
    gemm("fc2 dx gemm", Li, bt, M, C, E, Ew, 4);
    mem("gelu bwd", Li, nm * 4 + 2 * nm * E);
  }
  // fc1 / qkv dx GEMMs + the LayerNorm backward: read x, the statistics and dres, write dres and
  // the masked copy (the next GEMM's dy)
  const double ln_b = 3 * n * 4 + n * E + 2 * bt * 4;
  if (fused) {
    kgemm("fc1 dx gemm+ln2 bwd", Li, bt, C, M, ln_b);
    kgemm("qkv dx gemm+ln1 bwd", Li, bt, C, 3 * C, ln_b);
  } else {
    gemm("fc1 dx gemm", Li, bt, C, M, E, Ew, 4);
    gemm("qkv dx gemm", Li, bt, C, 3 * C, E, Ew, 4);
    mem("layernorm bwd dx", 2 * Li, 4 * n * 4 + 2 * bt * 4);
    mem("layernorm bwd dw/db", 4 * Li, n * 4);
    mem("dropout bwd (stored dy)", 2 * Li, n * 4 + n * E);
  }
  gemm("proj dx gemm", Li, bt, C, C, E, Ew, tc_attn ? 2 : 4);
  attn("attention bwd dq", 3 * hd + 16, 6 * n * E + 2 * B * NH * T * 4);
  attn("attention bwd dk/dv", 4 * hd + 16, 6 * n * E + 2 * B * NH * T * 4);
  if (prec == Precision::Bf16 && !tc_attn) mem("dqkv to bf16", Li, 3 * n * 6);
  mem("patch bwd sums", 1, n * E + B * N * C * 4 + T * C * 8);
  gemm("patch dw gemm", 1, Pd, C, B * N, 4, 4, 8);
  // every layer's weight gradients: one strided-batched GEMM per kind (L matrices each)
  gemm("qkv dw gemm (all layers)", 1, 3 * C, C, Li * bt, E, E, 8.0 * Li / bt);
  gemm("proj dw gemm (all layers)", 1, C, C, Li * bt, E, E, 8.0 * Li / bt);
  gemm("fc1 dw gemm (all layers)", 1, M, C, Li * bt, E, E, 8.0 * Li / bt);
  gemm("fc2 dw gemm (all layers)", 1, C, M, Li * bt, E, E, 8.0 * Li / bt);
  // every bias gradient (and the LN weight partials): one launch reading the stored dy's
  mem("bias/ln grad column sums", 1, Li * ((bias_qkv ? 3 * n : 0) + 2 * n + nm) * E);
  // optimizer: gradient norm (partial + final) only when clipping, then Adam reads p, g, m, v and
  // writes p, m, v and g = 0 (BF16 mode also writes the BF16 copy of the weights).
  if (clip_grad) mem("grad norm", 2, 2 * P);
  mem("adam", 1, 8 * 4 * P + (prec == Precision::Bf16 ? 2 * P : 0));
  return ops;
}

StepTime step_time(const std::vector<StepOp>& ops, Precision p, const GpuSpec& g,
                   const ModelAssumptions& a) {
  const double peak = p == Precision::Fp32 ? g.fp32_flops
                      : p == Precision::Tf32 ? g.tf32_flops
                                             : g.bf16_flops;
  const double bw = g.bandwidth * a.mem_efficiency;
  StepTime r;
  for (const StepOp& op : ops) {
    double t = op.kind == StepOp::Copy ? op.bytes / a.h2d_bandwidth : op.bytes / bw;
    if (op.kind == StepOp::Gemm) t = std::max(t, op.flops / (peak * a.gemm_efficiency));
    if (op.kind == StepOp::KernelGemm)
      t = std::max(t, op.flops / (peak * a.kernel_gemm_efficiency));
    // FP32 cores issue one instruction per lane per clock: fp32_flops / 2 instructions/s.
    if (op.kind == StepOp::Attention)
      t = std::max(t, op.flops / (g.fp32_flops / 2 * a.attn_efficiency));
    double& bucket = op.kind == StepOp::Gemm || op.kind == StepOp::KernelGemm ? r.gemm_s
                     : op.kind == StepOp::Attention ? r.attention_s
                                                    : r.memory_s;
    bucket += op.count * t;
    // Every launch leaves a GPU-side gap before the next one starts (graph or not); eager, the
    // GPU also cannot run ahead of the host, so an op shorter than a host launch costs a launch.
    const double gap = a.node_gap_us * 1e-6;
    r.launch_graph_s += op.count * gap;
    r.launch_eager_s += op.count * (std::max(t + gap, a.launch_us * 1e-6) - t);
    r.launches += op.count;
  }
  r.launch_graph_s += a.graph_launch_us * 1e-6;
  return r;
}

double allreduce_seconds(double bytes, int ranks, const GpuSpec& g, double efficiency) {
  if (ranks <= 1 || g.link_bandwidth <= 0) return 0;
  return 2.0 * (ranks - 1) / ranks * bytes / (g.link_bandwidth * efficiency);
}

double roofline_seconds_bf16(const StepCost& s, const GpuSpec& g) {
  return std::max(s.train.total() / (2 * g.tf32_flops), s.min_bytes_bf16 / g.bandwidth);
}

std::string cost_report(const Config& c, const std::string& preset_name, int batch,
                        int64_t images_per_epoch) {
  StepCost s = step_cost(c, batch);
  std::string out;
  char line[1024];
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
  const ModelAssumptions a;
  add("  step-time model: the sum of every launch's estimate (cuBLAS GEMMs at %.0f%% of the "
      "precision's peak, our fused GEMM + LayerNorm kernels at %.0f%%, other kernels' bytes at "
      "%.0f%% of DRAM bandwidth, attention's FP32 instructions at %.0f%% of issue rate; %.1f us "
      "GPU gap after every launch; eager: an op costs at least %.1f us of host launch time; "
      "graph: one %.0f us launch). bf16 prices every activation in BF16 and BF16 GEMMs "
      "(--precision bf16 keeps the residual stream FP32 today) with the FP32 attention kernel; "
      "FP32 attention:\n",
      100 * a.gemm_efficiency, 100 * a.kernel_gemm_efficiency, 100 * a.mem_efficiency,
      100 * a.attn_efficiency, a.node_gap_us, a.launch_us, a.graph_launch_us);
  add("    %-14s %-5s %8s %8s %8s %8s %9s %9s %9s\n", "GPU", "prec", "launches", "gemm ms",
      "mem ms", "attn ms", "eager ms", "graph ms", "floor ms");
  for (const GpuSpec& g : named_gpus())
    for (Precision p : {Precision::Fp32, Precision::Tf32, Precision::Bf16}) {
      StepTime t = step_time(step_ops(c, batch, p), p, g, a);
      add("    %-14s %-5s %8d %8.3f %8.3f %8.3f %9.3f %9.3f %9.3f\n", g.name.c_str(),
          precision_name(p), t.launches, 1e3 * t.gemm_s, 1e3 * t.memory_s, 1e3 * t.attention_s,
          1e3 * t.eager_s(), 1e3 * t.graph_s(), 1e3 * roofline_seconds(s, g));
    }
  // Data parallel: the FP32 gradient buffer is summed once per step (not yet overlapped with the
  // backward, so it adds to the step).
  const double grad_bytes = 4.0 * s.params;
  add("  data parallel (--gpus N): one all-reduce of the %.1f MiB FP32 gradients per step, ring, "
      "at 80%% of the link (model, not measured), ms for 2 / 4 / 8 GPUs:\n",
      grad_bytes / 1048576.0);
  for (const GpuSpec& g : named_gpus())
    add("    %-14s %7.3f %7.3f %7.3f   (%s %.0f GB/s)\n", g.name.c_str(),
        1e3 * allreduce_seconds(grad_bytes, 2, g), 1e3 * allreduce_seconds(grad_bytes, 4, g),
        1e3 * allreduce_seconds(grad_bytes, 8, g),
        g.link_bandwidth > 100e9 ? "NVLink" : "PCIe 4.0 x16", g.link_bandwidth / 1e9);
  return out;
}

}  // namespace vit
