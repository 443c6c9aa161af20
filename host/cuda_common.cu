// host/cuda_common.cu — the one-line reports behind CUDA_CHECK and CUBLAS_CHECK.
#include <cstdio>
#include <cstdlib>

#include "kernels/common.cuh"

namespace vit {

void cuda_fail(const char* what, const char* call, const char* file, int line, bool out_of_memory) {
  fprintf(stderr, "error: CUDA: %s in %s at %s:%d", what, call, file, line);
  if (out_of_memory) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
      fprintf(stderr, " (%.2f of %.2f GiB free)", free_b / 1073741824.0, total_b / 1073741824.0);
    fprintf(stderr, ": lower --batch-size (or use --accum-steps)");
  }
  fprintf(stderr, "\n");
  exit(1);
}

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}

}  // namespace vit
