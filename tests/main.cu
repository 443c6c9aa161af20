// tests/main.cu — GoogleTest entry point of both test binaries (build/test_simt with g++ + simt,
// build/test_gpu with nvcc). In the nvcc binary, CUDA tests skip themselves when no GPU is found.
#include <gtest/gtest.h>

#include "kernels/common.cuh"
#include "tests/test_util.h"

#if defined(__CUDACC__)
bool vit_test_have_gpu() {
  static int n = -1;
  if (n < 0) {
    if (cudaGetDeviceCount(&n) != cudaSuccess) n = 0;
    cudaGetLastError();  // clear the error a missing driver leaves behind
  }
  return n > 0;
}
#endif

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
#if defined(__CUDACC__)
  if (!vit_test_have_gpu())
    printf("test_gpu: no CUDA GPU found: the CUDA tests of this binary are skipped "
           "(build/test_simt runs them on the CPU)\n");
#endif
  int rc = RUN_ALL_TESTS();
  // One plain closing line that any CI reader understands.
  const ::testing::UnitTest& u = *::testing::UnitTest::GetInstance();
#if defined(__CUDACC__)
  const char* name = "test_gpu";
#else
  const char* name = "test_simt";
#endif
  printf("%s: %d passed, %d failed, %d skipped\n", name, u.successful_test_count(),
         u.failed_test_count(), u.skipped_test_count());
  return rc;
}
