// LAUNCH: counts launches (vit_bench's launches per step) and reports a bad configuration in
// one line naming the kernel.
#include <gtest/gtest.h>

#include "kernels/common.cuh"
#include "tests/test_util.h"

__global__ void add_one_kernel(int* p, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] += 1;
}

TEST(CudaLaunch, CountsEveryLaunchAndRunsIt) {
  VIT_REQUIRE_GPU();
  int* d;
  const int n = 100;
  CUDA_CHECK(cudaMalloc(&d, n * sizeof(int)));
  CUDA_CHECK(cudaMemset(d, 0, n * sizeof(int)));
  uint64_t before = vit::launch_count();
  LAUNCH(add_one_kernel, vit::ceil_div(n, 32), 32, 0, 0, d, n);
  LAUNCH(add_one_kernel, vit::ceil_div(n, 64), 64, 0, 0, d, n);
  EXPECT_EQ(vit::launch_count() - before, 2u);
  int h[n];
  CUDA_CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; ++i) ASSERT_EQ(h[i], 2) << i;
  CUDA_CHECK(cudaFree(d));
}

TEST(CudaLaunchDeathTest, BadBlockSizeNamesTheKernel) {
  VIT_REQUIRE_GPU();
  int* d = nullptr;
  EXPECT_DEATH(LAUNCH(add_one_kernel, 1, 2048, 0, 0, d, 1), "add_one_kernel");
}
