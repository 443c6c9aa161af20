// tests/test_reduce.cu — kernels/reduce.cuh column_sums_many (every bias / LayerNorm-weight
// gradient of the step as one launch of column-sum jobs) against a double-precision host sum.
// Jobs of widths 1, 31, 33 and 300 (narrower than, just under, just over a 32-column block, and
// several blocks), FP32 and BF16 inputs, row strides larger than the width, the rows formula
// ceil(B * rows_mul / rows_div) + rows_add at two batch sizes (the jobs are uploaded once, the
// batch is the launch's), a pair of jobs on the two halves of one buffer (shift 0 / 1: the LN
// weight and bias partials), out += onto nonzero values. Everything outside a job's rows x cols
// is NaN (or, in out, a sentinel that must stay), so a read or write outside it shows.
// Tolerance: each output is one float sum of depth ceil(rows / 8) (a thread's rows) + 8 (the row
// lanes) + 1 (the +=), so |got - exact| <= (ceil(rows / 8) + 9) * 2^-24 * (|out0| + sum |a|)
// (the standard recursive-summation bound, unit roundoff 2^-24), BF16 inputs being exact in
// FP32. A missing or extra row moves a sum by ~0.5, orders of magnitude more than the bound.
// Bitwise identical across runs and thread orders.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/precision.cuh"
#include "kernels/reduce.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_ref_util.h"
#include "tests/test_util.h"

using vit_test::DeviceBuffer;
using std::vector;
using vit::bf16;

namespace {

struct Spec {
  int cols, ld, mul, div, add;
  bool bf16;
  int pair;  // 0: own buffer; 1: the second half (shift 1) of the previous job's buffer
};

int rows_of(const Spec& s, int B) { return (B * s.mul + s.div - 1) / s.div + s.add; }

TEST(ColumnSumsMany, JobsOfEveryWidthAndType) {
  VIT_REQUIRE_GPU();
  const int BMAX = 5;
  const vector<Spec> specs = {
      {1, 3, 1, 1, 0, false, 0},      // the head bias: B rows of dlogits
      {1, 2, 65, 1, 0, true, 0},      // B*T rows
      {31, 40, 7, 3, 2, false, 0},    // ceil(7B/3) + 2
      {31, 33, 17, 1, 0, true, 0},
      {33, 35, 0, 1, 64, false, 0},   // the patch bias: T-1 rows whatever B
      {33, 66, 65, 1, 0, true, 0},    // a stored BF16 gradient at ld 2C
      {300, 301, 65, 16, 0, false, 0},// LN weight partials: a row per 16-row block ...
      {300, 301, 65, 16, 0, false, 1},// ... and the bias partials after them (shift 1)
      {300, 310, 3, 2, 1, true, 0},
  };
  ASSERT_EQ(rows_of(specs[2], 5), 14);  // ceil(35 / 3) + 2, by hand
  ASSERT_EQ(rows_of(specs[6], 5), 21);  // ceil(325 / 16)

  // Inputs: rows (2 halves for a pair) x cols of random values at stride ld, NaN elsewhere
  // (past cols and two rows past the end).
  const size_t njobs = specs.size();
  vector<DeviceBuffer<float>> fbuf;
  vector<DeviceBuffer<bf16>> hbuf;
  vector<vector<double>> data(njobs);  // the values each job's buffer holds, as doubles
  vector<const void*> ptr(njobs);
  vector<size_t> out_off(njobs);
  size_t out_total = 0;
  for (size_t j = 0; j < njobs; ++j) {
    const Spec& s = specs[j];
    out_off[j] = out_total + 1;  // a sentinel between jobs' outputs
    out_total += s.cols + 1;
    if (s.pair) {
      ptr[j] = ptr[j - 1];
      data[j] = data[j - 1];
      continue;
    }
    const bool half = j + 1 < njobs && specs[j + 1].pair;
    const size_t rows = (size_t)rows_of(s, BMAX) * (half ? 2 : 1) + 2;
    const vector<double> v = vit_test::rand_vec(rows * s.ld, 200 + (uint32_t)j);
    data[j].assign(rows * s.ld, NAN);
    for (size_t r = 0; r + 2 < rows; ++r)
      for (int c = 0; c < s.cols; ++c) data[j][r * s.ld + c] = v[r * s.ld + c];
    if (s.bf16) {
      vector<bf16> h(data[j].size());
      for (size_t i = 0; i < h.size(); ++i) {
        h[i] = __float2bfloat16((float)data[j][i]);
        data[j][i] = __bfloat162float(h[i]);
      }
      hbuf.emplace_back(h);
      ptr[j] = hbuf.back().ptr;
    } else {
      fbuf.emplace_back(vit_test::to_float(data[j]));
      ptr[j] = fbuf.back().ptr;
    }
  }
  out_total += 1;
  vector<float> out0 = vit_test::to_float(vit_test::rand_vec(out_total, 250, -3, 3));
  for (size_t j = 0; j < njobs; ++j) out0[out_off[j] - 1] = 12345.0f;
  out0[out_total - 1] = 12345.0f;
  DeviceBuffer<float> d_out(out_total);

  vector<vit::ColSumJob> jobs(njobs);
  int max_cols = 0;
  for (size_t j = 0; j < njobs; ++j) {
    const Spec& s = specs[j];
    jobs[j] = vit::ColSumJob{ptr[j], d_out.ptr + out_off[j], s.ld, s.cols, s.mul, s.div, s.add,
                             s.pair, s.bf16 ? 1 : 0};
    max_cols = std::max(max_cols, s.cols);
  }
  DeviceBuffer<vit::ColSumJob> d_jobs(njobs);
  CUDA_CHECK(cudaMemcpy(d_jobs.ptr, jobs.data(), njobs * sizeof(vit::ColSumJob),
                        cudaMemcpyHostToDevice));

  for (int B : {BMAX, 2}) {
    SCOPED_TRACE("B=" + std::to_string(B));
    // Reference and per-output bound.
    vector<double> exact(out0.begin(), out0.end()), bound(out_total, 0.0);
    for (size_t j = 0; j < njobs; ++j) {
      const Spec& s = specs[j];
      const int rows = rows_of(s, B);
      EXPECT_EQ(vit::colsum_job_rows(jobs[j], B), rows) << "job " << j;
      const size_t first = (size_t)s.pair * rows;
      for (int c = 0; c < s.cols; ++c) {
        const size_t o = out_off[j] + c;
        double abs_sum = std::fabs(out0[o]);
        for (int r = 0; r < rows; ++r) {
          const double v = data[j][(first + r) * s.ld + c];
          exact[o] += v;
          abs_sum += std::fabs(v);
        }
        bound[o] = ((rows + 7) / 8 + 9) * std::ldexp(1.0, -24) * abs_sum;
      }
    }
    vector<float> first_out;
    vit_test::for_each_thread_order([&](const char* order) {
      SCOPED_TRACE(order);
      for (int run = 0; run < 2; ++run) {
        d_out.upload(out0);
        vit::column_sums_many(0, d_jobs.ptr, (int)njobs, max_cols, B);
        const vector<float> got = d_out.download();
        size_t bad = 0, worst = 0;
        double worst_ratio = 0;
        for (size_t i = 0; i < out_total; ++i) {
          const double err = std::fabs((double)got[i] - exact[i]);
          if (bound[i] == 0) {  // a sentinel: untouched
            bad += memcmp(&got[i], &out0[i], sizeof(float)) != 0;
            continue;
          }
          if (!(err <= bound[i])) ++bad;
          if (!(err / bound[i] <= worst_ratio)) { worst_ratio = err / bound[i]; worst = i; }
        }
        EXPECT_EQ(bad, 0u) << "worst [" << worst << "]: " << got[worst] << " vs " << exact[worst]
                           << " (error / bound " << worst_ratio << ")";
        if (first_out.empty()) {
          printf("    B=%d: worst error / bound %.3g\n", B, worst_ratio);
          first_out = got;
        }
        EXPECT_TRUE(vit_test::bitwise_equal(got, first_out));
      }
    });
  }
}

TEST(ColumnSumsMany, NothingToDo) {
  VIT_REQUIRE_GPU();
  vit::column_sums_many(0, nullptr, 0, 10, 4);  // no jobs: no launch
  EXPECT_THROW(vit::column_sums_many(0, nullptr, 65536, 10, 4), vit::Error);
}

}  // namespace
