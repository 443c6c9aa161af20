// The cost model's arithmetic, checked against numbers computed independently (by hand / from
// PyTorch's published parameter counts).
#include <gtest/gtest.h>

#include "common/cost.h"
#include "common/params.h"

using namespace vit;

TEST(CostModel, VitB16ParameterCountMatchesTorchvision) {
  Config c = preset("vit-b16");
  c.classes = 1000;
  // torchvision.models.vit_b_16(): sum(p.numel() for p in m.parameters()) == 86,567,656
  EXPECT_EQ(step_cost(c, 1).params, 86567656);
  EXPECT_EQ((int64_t)ParamLayout(c).count(), 86567656);
}

TEST(CostModel, BasicParameterCount) {
  // basic: patch 4x4x3 -> 256: 48*256+256; cls 256; pos 65*256; per layer:
  // 2*256 (ln1) + 768*256+768 + 256*256+256 + 2*256 + 1024*256+1024 + 256*1024+256 = 789760;
  // head 10*256+10.
  int64_t expect = 48 * 256 + 256 + 256 + 65 * 256 + 12 * 789760 + 2570;
  EXPECT_EQ(step_cost(preset("basic"), 64).params, expect);
}

TEST(CostModel, BasicFlopsPerEpochAbout190Tflop) {
  // Per image forward: patch 2*64*48*256; per layer qkv 2*65*256*768, attention 2*2*65*65*256,
  // proj 2*65*256*256, mlp 2*2*65*256*1024; head 2*256*10.
  double per_layer = 2.0 * 65 * 256 * 768 + 4.0 * 65 * 65 * 256 + 2.0 * 65 * 256 * 256 +
                     4.0 * 65 * 256 * 1024;
  double fwd = 2.0 * 64 * 48 * 256 + 12 * per_layer + 2.0 * 256 * 10;
  StepCost s = step_cost(preset("basic"), 64);
  EXPECT_NEAR(s.forward_flops, 64 * fwd, 1e-6 * 64 * fwd);
  // training = 3x forward except the patch embedding (2x)
  double train = 64 * (3 * fwd - 2.0 * 64 * 48 * 256);
  EXPECT_NEAR(s.train.total(), train, 1e-6 * train);
  double epoch_tflop = s.train.total() / 64 * 50000 / 1e12;
  EXPECT_GT(epoch_tflop, 185);
  EXPECT_LT(epoch_tflop, 195);
}

TEST(CostModel, RooflineIsTheSlowerOfComputeAndMemory) {
  StepCost s = step_cost(preset("basic"), 64);
  GpuSpec compute_bound{"x", 1e12, 1e12, 1e18};
  GpuSpec memory_bound{"y", 1e18, 1e18, 1e9};
  EXPECT_DOUBLE_EQ(roofline_seconds(s, compute_bound), s.train.total() / 1e12);
  EXPECT_DOUBLE_EQ(roofline_seconds(s, memory_bound), s.min_bytes / 1e9);
}

TEST(CostModel, ReportNamesEveryGpu) {
  std::string r = cost_report(preset("basic"), "basic", 64, 50000);
  for (const auto& g : named_gpus()) EXPECT_NE(r.find(g.name), std::string::npos) << g.name;
  EXPECT_NE(r.find("parameters"), std::string::npos);
}

// ---- the step-time model -------------------------------------------------------------------

namespace {
int launches_of(const std::vector<StepOp>& ops, StepOp::Kind k) {
  int n = 0;
  for (const StepOp& op : ops) n += op.kind == k ? op.count : 0;
  return n;
}
}  // namespace

TEST(StepModel, LaunchCountsMatchTheCudaModelsStep) {
  // Counted by hand from host/cuda_model.cu (basic: dropout on, qkv bias, tanh GELU, no final
  // LN, hidden 256: the fused GEMM + LayerNorm kernels).
  // cuBLAS(Lt) calls: forward patch GEMM, 12 x [qkv (+bias), fc1 (+bias+GELU)], head (+bias) =
  // 26; backward 12 x [fc2 dx (+dGELU), proj dx] + patch dW + 4 weight-gradient GEMMs batched
  // over the layers = 29.
  // Fused GEMM kernels: 12 x [proj+residual+LN2, fc2+residual+LN1, fc1 dx+LN2 bwd, qkv dx+LN1
  // bwd] + the head's backward (dx, dW, dres and the top fc2 dy in one kernel) = 49.
  // Other kernels: forward input, im2col, patch epilogue+dropout+LN1 (3) + 12 attention + the
  // cross-entropy with the non-finite check (1) = 16; backward 12 x 2 attention +
  // patch sums + one launch of column sums for every bias and LN gradient = 26; Adam (1), which
  // also zeroes the gradients; the gradient norm (2) only when clipping.
  // No memset; one copy (images and labels). (tests/test_step_graph.cu counts a real step.)
  std::vector<StepOp> b = step_ops(preset("basic"), 64, Precision::Tf32);
  EXPECT_EQ(launches_of(b, StepOp::Gemm), 55);
  EXPECT_EQ(launches_of(b, StepOp::KernelGemm), 49);
  EXPECT_EQ(launches_of(b, StepOp::Memset), 0);
  EXPECT_EQ(launches_of(b, StepOp::Copy), 1);
  EXPECT_EQ(launches_of(b, StepOp::Memory) + launches_of(b, StepOp::Attention), 43);
  EXPECT_EQ(step_time(b, Precision::Tf32, named_gpus()[1]).launches, 148);
  std::vector<StepOp> bc = step_ops(preset("basic"), 64, Precision::Tf32, /*clip_grad=*/true);
  EXPECT_EQ(launches_of(bc, StepOp::Memory) + launches_of(bc, StepOp::Attention), 45);
  // vit-b16: final LN (head dx / dW as GEMMs, +2 memsets, the final LN backward's 3 kernels and
  // the top layer's dropout-backward kernel instead of the fused head backward), erf GELU (+12
  // GELU forward, +12 GELU backward kernels).
  std::vector<StepOp> v = step_ops(preset("vit-b16"), 32, Precision::Bf16);
  EXPECT_EQ(launches_of(v, StepOp::Gemm), 57);
  EXPECT_EQ(launches_of(v, StepOp::KernelGemm), 48);
  EXPECT_EQ(launches_of(v, StepOp::Memset), 2);
  EXPECT_EQ(launches_of(v, StepOp::Memory) + launches_of(v, StepOp::Attention), 71);
  EXPECT_EQ(step_time(v, Precision::Bf16, named_gpus()[1]).launches, 179);
}

TEST(StepModel, GemmFlopsAddUpToTheCostModelsMatmulFlops) {
  // Two independent derivations of the same GEMM work: step_cost's per-layer-type formula and
  // the per-launch list. Attention is not a GEMM in the list (it is FP32 instructions).
  for (const char* p : {"tiny", "basic", "vit-b16"}) {
    Config c = preset(p);
    StepCost s = step_cost(c, 8);
    double gemm = 0;
    for (const StepOp& op : step_ops(c, 8, Precision::Fp32))
      if (op.kind == StepOp::Gemm || op.kind == StepOp::KernelGemm) gemm += op.count * op.flops;
    EXPECT_NEAR(gemm, s.train.total() - s.train.attention, 1e-9 * gemm) << p;
  }
}

TEST(StepModel, ArithmeticOnATinyConfig) {
  // tiny: image 32, patch 8 -> 16 patches, T = 17; hidden 64, 2 layers, 2 heads (hd 32), mlp 128.
  Config c = preset("tiny");
  const int B = 4;
  const double T = 17, C = 64, bt = B * T, n = bt * C;
  std::vector<StepOp> ops = step_ops(c, B, Precision::Fp32);
  auto find = [&](const std::string& name) -> const StepOp& {
    for (const StepOp& op : ops)
      if (op.name == name) return op;
    ADD_FAILURE() << "no op " << name;
    return ops[0];
  };
  // fc1: (B*T x C)(C x M): 2*68*128*64 FLOPs; reads x and W, writes the GELU output and (the
  // epilogue's aux) the pre-activation, 4 bytes each.
  const std::string fc1 = "fc1 gemm (+bias+gelu)";
  EXPECT_DOUBLE_EQ(find(fc1).flops, 2.0 * 68 * 128 * 64);
  EXPECT_DOUBLE_EQ(find(fc1).bytes, 4.0 * (68 * 64 + 64 * 128 + 2 * 68 * 128));
  EXPECT_EQ(find(fc1).count, 2);
  // The same GEMM in BF16 moves half the bytes.
  std::vector<StepOp> bf = step_ops(c, B, Precision::Bf16);
  for (const StepOp& op : bf)
    if (op.name == fc1) {
      EXPECT_DOUBLE_EQ(op.bytes, 2.0 * (68 * 64 + 64 * 128 + 2 * 68 * 128));
    }
  // Adam reads p, g, m, v and writes p, m, v and g = 0: 32 bytes per parameter.
  EXPECT_DOUBLE_EQ(find("adam").bytes, 32.0 * ParamLayout(c).count());
  // The input copy: uint8 images and int32 labels in one.
  EXPECT_DOUBLE_EQ(find("input copy").bytes, 4.0 * 3 * 32 * 32 + 4.0 * 4);
  // proj + dropout + residual + LN2 in one kernel: the GEMM's operands, then reads the residual
  // and writes the stream (FP32), writes the LN output and its mean/rstd; one per layer.
  const StepOp& proj = find("proj gemm+residual+ln2");
  EXPECT_EQ(proj.kind, StepOp::KernelGemm);
  EXPECT_DOUBLE_EQ(proj.flops, 2.0 * 68 * 64 * 64);
  EXPECT_DOUBLE_EQ(proj.bytes, 4.0 * (68 * 64 + 64 * 64) + 2 * n * 4 + n * 4 + 2 * bt * 4);
  EXPECT_EQ(proj.count, 2);
  // Attention pads T = 17 to 32: B*NH*32*32 (query, key) pairs, 2*hd + 16 instructions each.
  EXPECT_DOUBLE_EQ(find("attention fwd").flops, 4.0 * 2 * 32 * 32 * (2 * 32 + 16));

  // Timing: a GPU with round numbers and no efficiency losses.
  GpuSpec g{"round", /*tf32*/ 4e12, /*fp32*/ 1e12, /*bandwidth*/ 1e11, /*bf16*/ 8e12};
  ModelAssumptions a;
  a.gemm_efficiency = a.mem_efficiency = a.attn_efficiency = 1;
  a.launch_us = 3, a.node_gap_us = 1, a.graph_launch_us = 10;
  a.kernel_gemm_efficiency = 0.5;
  std::vector<StepOp> two = {
      {StepOp::Gemm, "g", 2, 4e9, 1e6},         // 4 ms of FP32 compute vs 10 us of bytes
      {StepOp::Memory, "m", 3, 0, 1e5},         // 1 us of bytes: shorter than a launch
      {StepOp::Attention, "a", 1, 1e9, 1e3}};   // 1e9 instructions at 0.5e12/s = 2 ms
  StepTime t = step_time(two, Precision::Fp32, g, a);
  EXPECT_EQ(t.launches, 6);
  EXPECT_DOUBLE_EQ(t.gemm_s, 2 * 4e-3);
  EXPECT_DOUBLE_EQ(t.memory_s, 3 * 1e-6);
  EXPECT_DOUBLE_EQ(t.attention_s, 2e-3);
  // graph: 1 us per launch + one 10 us launch; eager: the memory op is bound by the 3 us launch.
  EXPECT_NEAR(t.graph_s(), 8e-3 + 3e-6 + 2e-3 + 6e-6 + 10e-6, 1e-12);
  EXPECT_NEAR(t.eager_s(), 2 * (4e-3 + 1e-6) + 3 * 3e-6 + (2e-3 + 1e-6), 1e-12);
  // TF32 runs the GEMM 4x faster on this GPU, BF16 8x; the memory op does not change.
  EXPECT_DOUBLE_EQ(step_time(two, Precision::Tf32, g, a).gemm_s, 2 * 1e-3);
  EXPECT_DOUBLE_EQ(step_time(two, Precision::Bf16, g, a).gemm_s, 2 * 0.5e-3);
  // Our fused GEMM kernels (StepOp::KernelGemm) at their own efficiency: 4e9 FLOPs at 0.5 x
  // 1e12 FLOP/s = 8 ms, booked with the GEMMs.
  std::vector<StepOp> kg = {{StepOp::KernelGemm, "k", 1, 4e9, 1e6}};
  EXPECT_DOUBLE_EQ(step_time(kg, Precision::Fp32, g, a).gemm_s, 8e-3);
  // A host -> device copy runs at the assumed link rate, not DRAM's: 25 KB at 25 GB/s = 1 us.
  a.h2d_bandwidth = 25e9;
  std::vector<StepOp> copy = {{StepOp::Copy, "c", 1, 0, 25e3}};
  EXPECT_DOUBLE_EQ(step_time(copy, Precision::Fp32, g, a).memory_s, 1e-6);
}

TEST(StepModel, ReportHasEveryPrecisionAndTheFloor) {
  std::string r = cost_report(preset("vit-b16"), "vit-b16", 32, 50000);
  for (const char* p : {"fp32", "tf32", "bf16"}) EXPECT_NE(r.find(p), std::string::npos) << p;
  EXPECT_NE(r.find("eager ms"), std::string::npos);
  EXPECT_NE(r.find("floor ms"), std::string::npos);
}

TEST(StepModel, AllReduceIsTheRingsBusBytesOverTheLink) {
  GpuSpec g{"round", 1, 1, 1, 1, /*link*/ 100e9};
  // 4 ranks: each GPU sends and receives 2 * 3/4 of the buffer; 1 GB at 80 GB/s effective.
  EXPECT_DOUBLE_EQ(allreduce_seconds(1e9, 4, g, 0.8), 1.5e9 / 80e9);
  EXPECT_DOUBLE_EQ(allreduce_seconds(1e9, 1, g), 0.0);
  std::string r = cost_report(preset("basic"), "basic", 64, 50000);
  EXPECT_NE(r.find("36.3 MiB FP32 gradients"), std::string::npos) << r;  // 9,509,130 x 4 bytes
}

TEST(CostModel, Bf16RowsHalveTheActivationsButNotTheStatistics) {
  // tiny: T 17, C 64, M 128, 2 layers, 2 heads, no final LN, patch 8 (N 16, P 192), 10 classes.
  const Config c = preset("tiny");
  const double T = c.tokens(), C = c.hidden, M = c.mlp, L = c.layers, NH = c.heads;
  const double N = c.patches(), P = c.patch_dim(), K = c.classes;
  const double stats = L * (4 * T + NH * T);  // LN mean/rstd, attention LSE: FP32
  const double per_image = N * P + T * C + L * (8 * T * C + 2 * T * M + 4 * T + NH * T) + 2 * K;
  const StepCost s = step_cost(c, 8);
  EXPECT_DOUBLE_EQ(s.activation_bytes, 4 * 8 * per_image);
  EXPECT_DOUBLE_EQ(s.activation_bytes_bf16, 8 * (2 * (per_image - stats) + 4 * stats));
  EXPECT_DOUBLE_EQ(s.min_bytes - s.min_bytes_bf16,
                   2 * (s.activation_bytes - s.activation_bytes_bf16) + 2.0 * s.params);
  // Roofline: compute at twice the TF32 peak, memory at the BF16 traffic.
  GpuSpec compute_bound{"x", 1e12, 1e12, 1e18};
  GpuSpec memory_bound{"y", 1e18, 1e18, 1e9};
  EXPECT_DOUBLE_EQ(roofline_seconds_bf16(s, compute_bound), s.train.total() / 2e12);
  EXPECT_DOUBLE_EQ(roofline_seconds_bf16(s, memory_bound), s.min_bytes_bf16 / 1e9);
  const std::string r = cost_report(c, "tiny", 8, 320);
  EXPECT_NE(r.find("roofline floor (BF16 GEMMs"), std::string::npos) << r;
}
