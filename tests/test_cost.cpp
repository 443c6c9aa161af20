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
