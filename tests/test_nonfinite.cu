// Non-finite loss tracking: the trainer reads metrics only at log lines, so the models must
// remember the first step whose loss was NaN/Inf. kernels/loss.cuh's track_nonfinite, and both
// models' take_metrics().
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "common/model.h"
#include "kernels/loss.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_util.h"

using vit_test::DeviceBuffer;

TEST(CudaNonFinite, RecordsTheFirstNonFiniteBatchOnly) {
  VIT_REQUIRE_GPU();
  const int B = 50;
  std::vector<float> ok(B, 0.5f), bad = ok, inf = ok;
  bad[37] = NAN;
  inf[3] = INFINITY;
  DeviceBuffer<float> d_ok(ok), d_bad(bad), d_inf(inf);
  DeviceBuffer<vit::NonFiniteRecord> rec(1);
  CUDA_CHECK(cudaMemset(rec.ptr, 0xff, sizeof(vit::NonFiniteRecord)));
  auto read = [&] {
    vit::NonFiniteRecord r;
    CUDA_CHECK(cudaMemcpy(&r, rec.ptr, sizeof r, cudaMemcpyDeviceToHost));
    return r;
  };
  vit::track_nonfinite(0, d_ok.ptr, B, 3, rec.ptr);
  EXPECT_EQ(read().step, -1);
  vit::track_nonfinite(0, d_inf.ptr, B, 4, rec.ptr);
  EXPECT_EQ(read().step, 4);
  EXPECT_TRUE(std::isinf(read().loss));
  vit::track_nonfinite(0, d_bad.ptr, B, 9, rec.ptr);  // a later one does not overwrite
  EXPECT_EQ(read().step, 4);
}

// Both models: finite losses report -1; a parameter of +inf makes the loss non-finite at the
// step passed to forward(), and take_metrics() reports that step once.
static void expect_model_reports(std::unique_ptr<vit::Model> m) {
  const vit::Config& c = m->config();
  const int B = 3;
  std::vector<uint8_t> img((size_t)B * 3 * 32 * 32);
  for (size_t i = 0; i < img.size(); ++i) img[i] = (uint8_t)(i * 31);
  std::vector<int32_t> lab = {1, 2, 3};
  uint8_t* pimg;
  int32_t* plab;
  CUDA_CHECK(cudaMallocHost(&pimg, img.size()));
  CUDA_CHECK(cudaMallocHost(&plab, B * sizeof(int32_t)));
  memcpy(pimg, img.data(), img.size());
  memcpy(plab, lab.data(), B * sizeof(int32_t));

  m->forward(pimg, plab, B, true, 5);
  m->forward(pimg, plab, B, true, 6);
  vit::Metrics a = m->take_metrics();
  EXPECT_EQ(a.first_nonfinite_step, -1);
  EXPECT_EQ(a.count, 2 * B);
  EXPECT_TRUE(std::isfinite(a.loss_sum));

  std::vector<float> p(m->layout().total);
  m->get_params(p.data());
  p[m->layout().head_b + c.classes - 1] = INFINITY;
  m->set_params(p.data());
  m->forward(pimg, plab, B, true, 7);
  m->forward(pimg, plab, B, true, 8);
  vit::Metrics b = m->take_metrics();
  EXPECT_EQ(b.first_nonfinite_step, 7);
  EXPECT_FALSE(std::isfinite(b.first_nonfinite_loss));
  EXPECT_EQ(m->take_metrics().first_nonfinite_step, -1);  // taken: reset
  CUDA_CHECK(cudaFreeHost(pimg));
  CUDA_CHECK(cudaFreeHost(plab));
}

TEST(CudaNonFinite, BothModelsReportTheFirstStep) {
  VIT_REQUIRE_GPU();
  vit::Config c = vit::preset("tiny");
  vit::ModelOptions o;
  o.max_batch = 4;
  o.precision = vit::Precision::Fp32;
  expect_model_reports(vit::make_cpu_model(c, o));
  expect_model_reports(vit::make_cuda_model(c, o));
}
