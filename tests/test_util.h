// tests/test_util.h — shared by every test: float comparison against the reference, and the
// helpers that let one CUDA test source run both under simt (g++) and on a GPU (nvcc).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace vit_test {

// |a - b| <= atol + rtol * |b| elementwise, b the reference. Reports the worst element.
template <class A, class B>
::testing::AssertionResult allclose(const A* a, const B* b, size_t n, double rtol, double atol) {
  size_t worst = 0, bad = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < n; ++i) {
    double x = (double)a[i], y = (double)b[i];
    double excess = std::fabs(x - y) - (atol + rtol * std::fabs(y));
    if (!(excess <= 0)) {  // also catches NaN
      ++bad;
      if (!(excess <= worst_excess)) { worst_excess = excess; worst = i; }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  char buf[256];
  snprintf(buf, sizeof buf, "%zu of %zu elements differ; worst [%zu]: %.9g vs reference %.9g (rtol %g, atol %g)",
           bad, n, worst, (double)a[worst], (double)b[worst], rtol, atol);
  return ::testing::AssertionFailure() << buf;
}
template <class A, class B>
::testing::AssertionResult allclose(const std::vector<A>& a, const std::vector<B>& b, double rtol,
                                    double atol) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << "size " << a.size() << " vs " << b.size();
  return allclose(a.data(), b.data(), a.size(), rtol, atol);
}

}  // namespace vit_test

#if defined(__CUDACC__)
// nvcc build: CUDA tests need a GPU and skip themselves without one.
bool vit_test_have_gpu();
#define VIT_REQUIRE_GPU() \
  do { if (!vit_test_have_gpu()) GTEST_SKIP() << "no CUDA GPU"; } while (0)
namespace vit_test {
// On a GPU thread order is the hardware's: run once.
inline void for_each_thread_order(const std::function<void(const char*)>& f) { f("gpu"); }
}  // namespace vit_test
#elif defined(VIT_SIMT)
#include "simt/simt.h"
#define VIT_REQUIRE_GPU() do {} while (0)
namespace vit_test {
// Under simt: run the body with threads between barriers in forward and in reverse order, so
// a missing __syncthreads changes the result; under SIMT_ORDER=shuffle[:SEED] also shuffled.
// Restores the order it found (SIMT_ORDER's, else forward) afterwards.
inline void for_each_thread_order(const std::function<void(const char*)>& f) {
#if defined(SIMT_RACE)
  // Race mode (make test-race): ThreadSanitizer finds unordered accesses whatever the order,
  // so one order is enough.
  f("race mode");
  return;
#endif
  const simt::Order initial = simt::thread_order();
  const uint64_t seed = simt::thread_order_seed();
  simt::set_thread_order(simt::Order::Forward);
  f("forward");
  simt::set_thread_order(simt::Order::Reverse);
  f("reverse");
  if (initial == simt::Order::Shuffle) {
    simt::set_thread_order(simt::Order::Shuffle, seed);
    f("shuffle");
  }
  simt::set_thread_order(initial, seed);
}
}  // namespace vit_test
#if defined(SIMT_RACE)
// Race mode's negative tests (make test-race): the statement runs in a child process (a death
// test; kernels run at the synchronize), which exits 0 unless ThreadSanitizer reports a race
// first: make test-race runs with halt_on_error=1:exitcode=66.
namespace vit_test {
template <class F>
void run_in_child_and_exit(F f) {
  f();
  if (cudaDeviceSynchronize() != cudaSuccess) exit(2);
  fflush(stdout);
  exit(0);
}
}  // namespace vit_test
#define EXPECT_RACE(stmt)                                                       \
  EXPECT_EXIT(vit_test::run_in_child_and_exit([&] { stmt; }), ::testing::ExitedWithCode(66), \
              "ThreadSanitizer: data race")
#define EXPECT_NO_RACE(stmt) \
  EXPECT_EXIT(vit_test::run_in_child_and_exit([&] { stmt; }), ::testing::ExitedWithCode(0), "")
#endif
#endif
