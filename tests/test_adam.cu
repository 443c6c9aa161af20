// tests/test_adam.cu — kernels/adam.cuh against vit::ref::global_grad_norm, clip_coefficient and
// adam_update (run tensor by tensor over the same flat buffer, as the CPU model does):
// the norm and clip coefficient written to the device, and p, m, v after one fused launch, for
// Adam and AdamW, with and without weight decay (decay only on the spans that have it), clipping
// active and inactive, grad_scale != 1, early (t=1) and late (t=1000) bias corrections.
// Layouts: the tiny model's real ParamLayout (tensors 16-byte aligned, padding between them
// must stay untouched) and a hand-made one with odd offsets and sizes (groups of 4 straddling
// two tensors and padding: the element-by-element path). Two thread orders; bitwise identical
// across runs; the gradient is 0 afterwards on every span. Tolerances: the norm rtol 1e-5 (float partial sums vs the reference's double);
// p, m, v rtol 1e-5 with atol 1e-7 / 1e-8 / 1e-10 (their scales: ~0.1, ~1e-2, ~1e-4).
// --precision bf16: the second run of each order also writes the BF16 weight copy; p, m, v must
// be bitwise those of the run without it, and the copy exactly __float2bfloat16 of the updated
// p (round to nearest even: one rounding of the FP32 master weight), padding untouched.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/config.h"
#include "common/params.h"
#include "cpu/optim.h"
#include "kernels/adam.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_ref_util.h"
#include "tests/test_util.h"

using vit_test::DeviceBuffer;
using std::vector;

namespace {

struct AdamCase {
  vit::OptimConfig::Kind kind;
  float wd;
  float clip_rel;  // clip = clip_rel * true norm; 0 = no clipping
  float grad_scale;
  int64_t t;
};

void check_adam(const vector<vit::TensorSpan>& spans, size_t n, const AdamCase& c) {
  SCOPED_TRACE(std::string(c.kind == vit::OptimConfig::Adam ? "Adam" : "AdamW") +
               " wd=" + std::to_string(c.wd) + " clip_rel=" + std::to_string(c.clip_rel) +
               " grad_scale=" + std::to_string(c.grad_scale) + " t=" + std::to_string(c.t));
  const vector<float> p0 = vit_test::to_float(vit_test::rand_vec(n, 61, -0.2, 0.2));
  const vector<float> g = vit_test::to_float(vit_test::rand_vec(n, 62, -0.01, 0.01));
  const vector<float> m0 = vit_test::to_float(vit_test::rand_vec(n, 63, -0.01, 0.01));
  const vector<float> v0 = vit_test::to_float(vit_test::rand_vec(n, 64, 0, 1e-4));
  vit::OptimConfig o;
  o.kind = c.kind;
  o.weight_decay = c.wd;
  const float lr = 1e-3f;

  // Reference.
  const double norm = vit::ref::global_grad_norm(g.data(), n, c.grad_scale);
  o.clip_grad = (float)(c.clip_rel * norm);
  const float coef = vit::ref::clip_coefficient(norm, o.clip_grad);
  if (c.clip_rel > 0 && c.clip_rel < 1) {
    EXPECT_LT(coef, 1.0f);  // the case means to clip
  }
  vector<float> rp = p0, rm = m0, rv = v0;
  for (const auto& s : spans)
    vit::ref::adam_update(rp.data() + s.offset, g.data() + s.offset, rm.data() + s.offset,
                          rv.data() + s.offset, s.numel, o, lr, c.t, c.grad_scale, coef,
                          s.decay != 0);

  DeviceBuffer<float> d_p(n), d_g(g), d_m(n), d_v(n), d_nc(2);
  DeviceBuffer<float> scratch(vit::grad_norm_scratch_floats(n));
  DeviceBuffer<vit::TensorSpan> d_spans(spans);
  DeviceBuffer<__nv_bfloat16> d_p16(n);
  const vector<__nv_bfloat16> p16_init(n, __float2bfloat16(9.0f));
  vector<vector<float>> first;
  vit_test::for_each_thread_order([&](const char* order) {
    SCOPED_TRACE(order);
    for (int run = 0; run < 2; ++run) {
      d_p.upload(p0);
      d_m.upload(m0);
      d_v.upload(v0);
      d_p16.upload(p16_init);
      d_g.upload(g);  // adam_update consumed (zeroed) the last run's
      vit::grad_norm_clip(0, d_g, n, c.grad_scale, o.clip_grad, d_nc, scratch);
      vit::adam_update(0, d_p, d_g, d_m, d_v, n, d_spans, (int)spans.size(), o, lr, c.t,
                       c.grad_scale, d_nc, run == 1 ? d_p16.get() : nullptr);
      vector<vector<float>> out = {d_nc.download(), d_p.download(), d_m.download(), d_v.download()};
      EXPECT_NEAR(out[0][0], norm, 1e-5 * norm) << "norm";
      EXPECT_NEAR(out[0][1], coef, 1e-5 * coef) << "clip coefficient";
      EXPECT_TRUE(vit_test::allclose(out[1], rp, 1e-5, 1e-7)) << "p";
      EXPECT_TRUE(vit_test::allclose(out[2], rm, 1e-5, 1e-8)) << "m";
      EXPECT_TRUE(vit_test::allclose(out[3], rv, 1e-5, 1e-10)) << "v";
      if (first.empty()) first = out;
      for (size_t k = 0; k < out.size(); ++k)
        EXPECT_TRUE(vit_test::bitwise_equal(out[k], first[k])) << "output " << k;
      if (run == 1) {
        const vector<__nv_bfloat16> p16 = d_p16.download();
        vector<char> in_span(n, 0);
        for (const auto& s : spans)
          for (size_t i = 0; i < s.numel; ++i) in_span[s.offset + i] = 1;
        size_t bad = 0;
        for (size_t i = 0; i < n; ++i) {
          const float want = in_span[i] ? __bfloat162float(__float2bfloat16(out[1][i])) : 9.0f;
          if (__bfloat162float(p16[i]) != want && bad++ < 5)
            ADD_FAILURE() << "p16[" << i << "] = " << __bfloat162float(p16[i]) << ", want " << want;
        }
        EXPECT_EQ(bad, 0u) << "BF16 weight copy";
      }
    }
  });
  // Padding (in no span) untouched, bitwise; the gradient zeroed on every span (the update
  // consumes it: common/model.h), left as it was on the padding.
  vector<float> p = d_p.download(), gd = d_g.download();
  vector<char> covered(n, 0);
  for (const auto& s : spans)
    for (size_t i = 0; i < s.numel; ++i) covered[s.offset + i] = 1;
  size_t pad = 0;
  for (size_t i = 0; i < n; ++i)
    if (!covered[i]) {
      ++pad;
      EXPECT_EQ(p[i], p0[i]) << "padding element " << i << " was updated";
      EXPECT_EQ(gd[i], g[i]) << "padding gradient " << i << " was written";
    } else if (gd[i] != 0.0f) {
      ADD_FAILURE() << "gradient " << i << " is " << gd[i] << " after the update, not 0";
      break;
    }
  (void)pad;
}

vector<vit::TensorSpan> spans_of(const vit::ParamLayout& l) {
  vector<vit::TensorSpan> s;
  for (const auto& t : l.tensors) s.push_back({t.offset, t.numel, t.decay ? 1 : 0});
  return s;
}

const AdamCase CASES[] = {
    {vit::OptimConfig::Adam, 0.0f, 0.0f, 1.0f, 1},       // plain Adam, first step
    {vit::OptimConfig::Adam, 0.01f, 0.5f, 1.0f, 3},      // L2 decay, clipping active
    {vit::OptimConfig::AdamW, 0.05f, 2.0f, 0.5f, 1000},  // decoupled decay, clip inactive, scale
    {vit::OptimConfig::AdamW, 0.05f, 0.25f, 0.25f, 2},   // decoupled decay, clipping active
};

}  // namespace

TEST(AdamKernel, TinyModelLayout) {
  VIT_REQUIRE_GPU();
  const vit::ParamLayout l(vit::preset("tiny"));
  ASSERT_GT(l.total, l.count());  // there is padding to leave alone
  for (const AdamCase& c : CASES) check_adam(spans_of(l), l.total, c);
}

TEST(AdamKernel, OddSpans) {
  VIT_REQUIRE_GPU();
  // Offsets and sizes not multiples of 4; a gap of 2 padding floats; a 1-element tensor; the
  // buffer ends in padding.
  const vector<vit::TensorSpan> spans = {
      {0, 5, 1}, {5, 3, 0}, {10, 1, 1}, {11, 250, 1}, {261, 37, 0}, {298, 1000, 1}};
  for (const AdamCase& c : CASES) check_adam(spans, 1301, c);
}

TEST(AdamKernel, NormOfLargeOddBuffer) {  // many partial blocks, unaligned start
  VIT_REQUIRE_GPU();
  const size_t n = 300001;
  const vector<float> g = vit_test::to_float(vit_test::rand_vec(n + 1, 65));
  const double norm = vit::ref::global_grad_norm(g.data() + 1, n, 0.5f);
  DeviceBuffer<float> d_g(g), d_nc(2), scratch(vit::grad_norm_scratch_floats(n));
  vit::grad_norm_clip(0, d_g.get() + 1, n, 0.5f, 1.0f, d_nc, scratch);
  vector<float> nc = d_nc.download();
  EXPECT_NEAR(nc[0], norm, 1e-5 * norm);
  EXPECT_NEAR(nc[1], 1.0 / (norm + 1e-6), 1e-5 / norm);  // norm ~ 158 > clip 1
}
