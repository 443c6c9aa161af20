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

// The non-finite record the cross-entropy kernel keeps when given one (xent_forward_backward's
// rec/step: track_nonfinite's rule folded into the loss launch). Reset = memset 0xFF (step -1).
// A finite batch leaves it at -1; a batch with a NaN logit, or with a label outside [0, K),
// records its step and a non-finite loss; a later non-finite batch does not overwrite the first.
// Passing a record changes nothing else: losses, dlogits and metrics are bitwise those of the
// same call with rec == nullptr.
namespace {

vit::NonFiniteRecord read_record(const DeviceBuffer<vit::NonFiniteRecord>& rec) {
  vit::NonFiniteRecord r;
  CUDA_CHECK(cudaMemcpy(&r, rec.ptr, sizeof r, cudaMemcpyDeviceToHost));
  return r;
}
void reset_record(const DeviceBuffer<vit::NonFiniteRecord>& rec) {
  CUDA_CHECK(cudaMemset(rec.ptr, 0xff, sizeof(vit::NonFiniteRecord)));
}

// One call with the record and one without on the same inputs: every output bitwise equal.
void expect_record_changes_nothing(const vector<float>& z, const vector<int32_t>& labels, int K,
                                   float smoothing, DeviceBuffer<vit::NonFiniteRecord>& rec,
                                   vit::DevStep step) {
  const int B = (int)labels.size();
  DeviceBuffer<float> d_z(z);
  DeviceBuffer<int32_t> d_labels(labels);
  const vector<double> m0 = {2.5, 1.0};
  DeviceBuffer<float> l1(B), l2(B), g1((size_t)B * K), g2((size_t)B * K);
  DeviceBuffer<double> m1(m0), m2(m0);
  vit::xent_forward_backward(0, d_z, d_labels, l1, g1, m1, B, K, smoothing, 1.0f / B, nullptr);
  vit::xent_forward_backward(0, d_z, d_labels, l2, g2, m2, B, K, smoothing, 1.0f / B, rec.ptr,
                             step);
  EXPECT_TRUE(vit_test::bitwise_equal(l2.download(), l1.download())) << "losses";
  EXPECT_TRUE(vit_test::bitwise_equal(g2.download(), g1.download())) << "dlogits";
  EXPECT_TRUE(vit_test::bitwise_equal(m2.download(), m1.download())) << "metrics";
}

}  // namespace

TEST(XentKernel, NonFiniteRecordKeepsTheFirstBadStep) {
  VIT_REQUIRE_GPU();
  const int B = 37, K = 10;  // more rows than the block's 16 warps: the bad rows' warps differ
  const vector<float> z = vit_test::to_float(vit_test::rand_vec((size_t)B * K, 53, -3, 3));
  vector<int32_t> labels(B);
  for (int b = 0; b < B; ++b) labels[b] = (int32_t)(vit::philox_u32(4, 5, 6, b) % K);
  vector<float> z_nan = z;
  z_nan[(size_t)21 * K + 4] = NAN;  // row 21 (warp 5, its second row)
  vector<int32_t> bad_label = labels;
  bad_label[36] = K;  // one past the last class
  vector<int32_t> neg_label = labels;
  neg_label[0] = -1;

  DeviceBuffer<vit::NonFiniteRecord> rec(1);
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    // Finite batch: nothing recorded (and the outputs are the rec == nullptr call's).
    reset_record(rec);
    expect_record_changes_nothing(z, labels, K, 0.1f, rec, 3);
    EXPECT_EQ(read_record(rec).step, -1);

    // NaN logit at step 7: recorded with a non-finite loss (the outputs, NaN row included, bitwise
    // those of the call without a record).
    expect_record_changes_nothing(z_nan, labels, K, 0.1f, rec, 7);
    vit::NonFiniteRecord r = read_record(rec);
    EXPECT_EQ(r.step, 7);
    EXPECT_FALSE(std::isfinite(r.loss));
    // Later non-finite batches (another NaN, a bad label) keep step 7.
    expect_record_changes_nothing(z_nan, labels, K, 0.1f, rec, 8);
    expect_record_changes_nothing(z, bad_label, K, 0.0f, rec, 9);
    EXPECT_EQ(read_record(rec).step, 7);
    // ... and a later finite one too.
    expect_record_changes_nothing(z, labels, K, 0.0f, rec, 10);
    EXPECT_EQ(read_record(rec).step, 7);

    // Out-of-range labels (K and -1) after a reset; a 64-bit step survives.
    reset_record(rec);
    expect_record_changes_nothing(z, bad_label, K, 0.0f, rec, (1ull << 33) + 5);
    r = read_record(rec);
    EXPECT_EQ(r.step, (long long)((1ull << 33) + 5));
    EXPECT_FALSE(std::isfinite(r.loss));
    reset_record(rec);
    expect_record_changes_nothing(z, neg_label, K, 0.1f, rec, 11);
    EXPECT_EQ(read_record(rec).step, 11);
  });
}

// Inside a CUDA graph the step is read on the device (DevStep base + offset): the record holds
// the step the device computes, not the offset.
TEST(XentKernel, NonFiniteRecordTakesADeviceStep) {
  VIT_REQUIRE_GPU();
  const int B = 4, K = 10;
  vector<float> z = vit_test::to_float(vit_test::rand_vec((size_t)B * K, 54));
  z[3] = NAN;
  const vector<int32_t> labels = {1, 2, 3, 4};
  DeviceBuffer<float> d_z(z), d_loss(B);
  DeviceBuffer<int32_t> d_labels(labels);
  DeviceBuffer<uint64_t> base(vector<uint64_t>{1000});
  DeviceBuffer<vit::NonFiniteRecord> rec(1);
  reset_record(rec);
  vit::xent_forward_backward(0, d_z, d_labels, d_loss, nullptr, nullptr, B, K, 0.0f, 1.0f,
                             rec.ptr, vit::DevStep(base.ptr, 2));
  EXPECT_EQ(read_record(rec).step, 1002);
}
