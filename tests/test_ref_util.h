// tests/test_ref_util.h — helpers of the CPU reference tests (tests/test_ref_*.cpp):
// deterministic test data and a central-difference gradient check in double.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "common/philox.h"

namespace vit_test {

// n values uniform in [lo, hi), a pure function of `stream` (Philox, like everything else).
inline std::vector<double> rand_vec(size_t n, uint32_t stream, double lo = -1, double hi = 1) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = lo + (hi - lo) * vit::philox_uniform(12345, 1000 + stream, 0, i);
  return v;
}
inline std::vector<float> to_float(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}

// Central differences of the scalar f() with respect to x[i], for up to max_checks indices
// spread over [0, n) (all of them when n <= max_checks), compared with the analytic gradient:
// |numeric - analytic| <= atol + rtol * |analytic|. x is restored afterwards.
inline ::testing::AssertionResult gradcheck(const std::function<double()>& f, double* x,
                                            const double* analytic, size_t n,
                                            size_t max_checks = 64, double rtol = 1e-6,
                                            double atol = 1e-9, double h = 1e-5) {
  const size_t stride = n <= max_checks ? 1 : (n + max_checks - 1) / max_checks;
  size_t bad = 0, checked = 0, worst = 0;
  double worst_excess = -1, worst_num = 0;
  // Odd offset so a strided sample does not always hit the same column of a matrix.
  for (size_t k = 0; k < n; k += stride) {
    const size_t i = n <= max_checks ? k : (k + (k / stride) * 7) % n;
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f();
    x[i] = x0 - h;
    const double fm = f();
    x[i] = x0;
    const double num = (fp - fm) / (2 * h);
    const double excess = std::fabs(num - analytic[i]) - (atol + rtol * std::fabs(analytic[i]));
    ++checked;
    if (!(excess <= 0)) {
      ++bad;
      if (!(excess <= worst_excess)) { worst_excess = excess; worst = i; worst_num = num; }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess() << checked << " entries checked";
  char buf[256];
  snprintf(buf, sizeof buf, "%zu of %zu checked entries differ; worst [%zu]: numeric %.12g vs analytic %.12g (rtol %g, atol %g)",
           bad, checked, worst, worst_num, analytic[worst], rtol, atol);
  return ::testing::AssertionFailure() << buf;
}

// sum_i a[i] * r[i]: the scalar whose gradient with respect to a is r (used as the loss of a
// single op: backward is then called with dout = r).
inline double dot(const std::vector<double>& a, const std::vector<double>& r) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * r[i];
  return s;
}

}  // namespace vit_test
