// tests/test_loss.cu — kernels/loss.cuh (fused softmax cross-entropy + gradient + metrics)
// against vit::ref::xent_forward / xent_backward (float): per-image losses, dlogits (=) with the
// grad scale, and the metrics (+=): loss sum and the number of rows whose argmax (first index
// of the maximum, computed here independently) equals the label. Label smoothing 0 and 0.1;
// K = 10 (CIFAR), 1000 (an ImageNet head: more columns than a warp), 3; B from 1 to 100 (more
// rows than the block's 16 warps). Two thread orders; bitwise identical across runs.
// Tolerances: rtol 1e-5, atol 1e-6 (losses ~2.3, gradients ~0.1/B).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "cpu/loss.h"
#include "kernels/loss.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_ref_util.h"
#include "tests/test_util.h"

using vit_test::DeviceBuffer;
using std::vector;

namespace {

const double RTOL = 1e-5, ATOL = 1e-6;

void check_xent(int B, int K, float smoothing, float logit_scale) {
  SCOPED_TRACE("B=" + std::to_string(B) + " K=" + std::to_string(K) +
               " smoothing=" + std::to_string(smoothing));
  const vector<float> z =
      vit_test::to_float(vit_test::rand_vec((size_t)B * K, 51, -logit_scale, logit_scale));
  vector<int32_t> labels(B);
  for (int b = 0; b < B; ++b) labels[b] = (int32_t)(vit::philox_u32(1, 2, 3, b) % K);
  // Make some rows correct for sure: the label is the argmax in every third row.
  vector<float> zz = z;
  for (int b = 0; b < B; b += 3) zz[(size_t)b * K + labels[b]] = 2 * logit_scale;
  const float grad_scale = 1.0f / B;

  vector<float> rloss(B), rprobs((size_t)B * K), rdz((size_t)B * K);
  vit::ref::xent_forward(zz.data(), labels.data(), rloss.data(), rprobs.data(), B, K, smoothing);
  vit::ref::xent_backward(rprobs.data(), labels.data(), rdz.data(), B, K, smoothing, grad_scale);
  double loss_sum = 0;
  int correct = 0;
  for (int b = 0; b < B; ++b) {
    loss_sum += rloss[b];
    int am = 0;
    for (int k = 1; k < K; ++k)
      if (zz[(size_t)b * K + k] > zz[(size_t)b * K + am]) am = k;
    correct += am == labels[b];
  }
  ASSERT_GE(correct, (B + 2) / 3);

  DeviceBuffer<float> d_z(zz), d_loss(B), d_dz((size_t)B * K);
  DeviceBuffer<double> d_metrics(2);
  DeviceBuffer<int32_t> d_labels(labels);
  const vector<double> m0 = {1.5, 4.0};  // metrics accumulate onto what is there
  vector<vector<float>> first;
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    for (int run = 0; run < 2; ++run) {
      d_metrics.upload(m0);
      vit::xent_forward_backward(0, d_z, d_labels, d_loss, d_dz, d_metrics, B, K, smoothing,
                                 grad_scale);
      vector<vector<float>> o = {d_loss.download(), d_dz.download()};
      const vector<double> om = d_metrics.download();
      EXPECT_TRUE(vit_test::allclose(o[0], rloss, RTOL, ATOL)) << "losses";
      EXPECT_TRUE(vit_test::allclose(o[1], rdz, RTOL, ATOL)) << "dlogits";
      EXPECT_NEAR(om[0], 1.5 + loss_sum, 1e-5 * (1.5 + loss_sum)) << "metrics loss sum";
      EXPECT_EQ(om[1], 4.0 + correct) << "metrics correct";
      if (first.empty()) first = o;
      for (size_t k = 0; k < o.size(); ++k) EXPECT_TRUE(vit_test::bitwise_equal(o[k], first[k]));
    }
  });

  // Evaluation: no gradient, no losses buffer; metrics still accumulate.
  d_metrics.upload(m0);
  vit::xent_forward_backward(0, d_z, d_labels, nullptr, nullptr, d_metrics, B, K, smoothing, 1.0f);
  vector<double> m = d_metrics.download();
  EXPECT_NEAR(m[0], 1.5 + loss_sum, 1e-5 * (1.5 + loss_sum));
  EXPECT_EQ(m[1], 4.0f + correct);
}

}  // namespace

TEST(XentKernel, Cifar) {
  VIT_REQUIRE_GPU();
  check_xent(64, 10, 0.0f, 3.0f);
  check_xent(64, 10, 0.1f, 3.0f);
  check_xent(100, 10, 0.1f, 20.0f);  // confident rows: tiny losses
  check_xent(1, 10, 0.0f, 3.0f);
}

TEST(XentKernel, WideAndNarrowHeads) {
  VIT_REQUIRE_GPU();
  check_xent(5, 1000, 0.1f, 5.0f);
  check_xent(37, 3, 0.2f, 2.0f);
  check_xent(17, 33, 0.0f, 2.0f);
}

TEST(XentKernel, ArgmaxTiesTakeTheFirstIndex) {
  VIT_REQUIRE_GPU();
  // Row 0: maxima at 2 and 7, label 2 -> correct. Row 1: same logits, label 7 -> wrong.
  // Row 2: maxima at 40 and 3 (across lanes), label 3 -> correct.
  const int K = 50;
  vector<float> z(3 * K, 0.0f);
  z[2] = z[7] = 1.0f;
  z[K + 2] = z[K + 7] = 1.0f;
  z[2 * K + 40] = z[2 * K + 3] = 1.0f;
  const vector<int32_t> labels = {2, 7, 3};
  DeviceBuffer<float> d_z(z);
  DeviceBuffer<double> d_metrics(vector<double>{0.0, 0.0});
  DeviceBuffer<int32_t> d_labels(labels);
  vit::xent_forward_backward(0, d_z, d_labels, nullptr, nullptr, d_metrics, 3, K, 0.0f, 1.0f);
  EXPECT_EQ(d_metrics.download()[1], 2.0);
}

TEST(XentKernel, LabelOutOfRangeGivesNaN) {
  VIT_REQUIRE_GPU();
  const int K = 10;
  const vector<float> z = vit_test::to_float(vit_test::rand_vec(2 * K, 52));
  const vector<int32_t> labels = {3, 10};
  DeviceBuffer<float> d_z(z), d_loss(2), d_dz(2 * K);
  DeviceBuffer<int32_t> d_labels(labels);
  vit::xent_forward_backward(0, d_z, d_labels, d_loss, d_dz, nullptr, 2, K, 0.0f, 1.0f);
  vector<float> loss = d_loss.download(), dz = d_dz.download();
  EXPECT_TRUE(std::isfinite(loss[0]));
  EXPECT_TRUE(std::isnan(loss[1]));
  EXPECT_TRUE(std::isnan(dz[K]));
}
