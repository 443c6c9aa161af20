// simt/cublas.cpp — the cuBLAS calls the project makes, on the CPU through OpenBLAS, with
// cuBLAS's exact semantics: column-major storage, op(A) = A or A^T per transa/transb, leading
// dimensions, alpha/beta (beta == 0 ignores whatever C holds, NaN included), strided and
// pointer-array batches, host or device pointer mode, and the argument checks cuBLAS makes
// (CUBLAS_STATUS_INVALID_VALUE / NOT_SUPPORTED for the same mistakes).
//
// Precision: FP16/BF16 inputs are converted to float and multiplied in FP32 (what cuBLAS does
// with CUBLAS_COMPUTE_32F). The reduced-precision compute types are emulated by rounding the
// inputs: CUBLAS_COMPUTE_32F_FAST_TF32 (and CUBLAS_TF32_TENSOR_OP_MATH) to TF32's 10-bit
// mantissa, _FAST_16F to half, _FAST_16BF to bfloat16, so tests see the error a GPU would give.
// FP16/BF16 outputs are rounded once from the FP32 result.
//
// The GEMM is queued on the handle's stream (simt::detail::run_on_stream) like a kernel: argument
// checks and host-pointer-mode scalars happen at the call, the arithmetic when the stream runs.
//
// Every matrix must lie inside one device allocation; an operand that would be read or written
// past the end of its allocation aborts naming it (on a GPU: an illegal address, or silent
// corruption).
#include <cblas.h>

#include <set>
#include <vector>

#include "simt/internal.h"

struct cublasContext {
  cudaStream_t stream;
  cublasMath_t math;
  cublasPointerMode_t pointer_mode;
  void* workspace;
  size_t workspace_bytes;
};

namespace simt {
namespace {

using Lock = std::lock_guard<std::recursive_mutex>;
std::set<cublasHandle_t> g_handles;

enum class Round { None, TF32, F16, BF16 };

float round_tf32(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;  // nearest, ties away
  memcpy(&x, &u, 4);
  return x;
}
float round_as(float x, Round r) {
  switch (r) {
    case Round::None: return x;
    case Round::TF32: return round_tf32(x);
    case Round::F16: return __half2float(__float2half(x));
    case Round::BF16: return __bfloat162float(__float2bfloat16(x));
  }
  return x;
}

size_t type_size(cudaDataType t) {
  switch (t) {
    case CUDA_R_32F: return 4;
    case CUDA_R_16F: case CUDA_R_16BF: return 2;
    default: return 0;
  }
}

// n elements of type t at p, as floats (rounded as r).
void to_float(const void* p, cudaDataType t, size_t n, Round r, float* out) {
  switch (t) {
    case CUDA_R_32F: {
      const float* f = static_cast<const float*>(p);
      for (size_t i = 0; i < n; ++i) out[i] = round_as(f[i], r);
      break;
    }
    case CUDA_R_16F: {
      const __half* h = static_cast<const __half*>(p);
      for (size_t i = 0; i < n; ++i) out[i] = __half2float(h[i]);
      break;
    }
    case CUDA_R_16BF: {
      const __nv_bfloat16* h = static_cast<const __nv_bfloat16*>(p);
      for (size_t i = 0; i < n; ++i) out[i] = __bfloat162float(h[i]);
      break;
    }
    default: break;
  }
}
void store(float v, cudaDataType t, void* p, size_t i) {
  switch (t) {
    case CUDA_R_32F: static_cast<float*>(p)[i] = v; break;
    case CUDA_R_16F: static_cast<__half*>(p)[i] = __float2half(v); break;
    case CUDA_R_16BF: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v); break;
    default: break;
  }
}
float load(const void* p, cudaDataType t, size_t i) {
  switch (t) {
    case CUDA_R_32F: return static_cast<const float*>(p)[i];
    case CUDA_R_16F: return __half2float(static_cast<const __half*>(p)[i]);
    case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return 0;
  }
}

struct Gemm {
  const char* fn;
  cublasHandle_t h;
  cublasOperation_t ta, tb;
  int m, n, k;
  const void* alpha;
  const void* beta;
  cudaDataType at, bt, ct;
  int lda, ldb, ldc;
  int batch;
  cublasComputeType_t compute;
  // Operands of batch i: either base + i * stride (elements) or an array of pointers.
  const void* A; long long sA; const void* const* Aarr;
  const void* B; long long sB; const void* const* Barr;
  void* C; long long sC; void* const* Carr;
};

const void* nth(const void* base, long long stride, const void* const* arr, cudaDataType t, int i) {
  if (arr) return arr[i];
  return static_cast<const char*>(base) + (ptrdiff_t)(stride * i) * (ptrdiff_t)type_size(t);
}

cublasStatus_t run_gemm(const Gemm& g) {
  Lock lock(detail::device_mutex());
  if (!g_handles.count(g.h)) return CUBLAS_STATUS_NOT_INITIALIZED;
  auto op_ok = [](cublasOperation_t o) { return o == CUBLAS_OP_N || o == CUBLAS_OP_T || o == CUBLAS_OP_C; };
  if (!op_ok(g.ta) || !op_ok(g.tb) || g.m < 0 || g.n < 0 || g.k < 0 || g.batch < 0)
    return CUBLAS_STATUS_INVALID_VALUE;
  const bool tA = g.ta != CUBLAS_OP_N, tB = g.tb != CUBLAS_OP_N;  // real types: C == T
  const int rowsA = tA ? g.k : g.m, colsA = tA ? g.m : g.k;
  const int rowsB = tB ? g.n : g.k, colsB = tB ? g.k : g.n;
  if (g.lda < std::max(1, rowsA) || g.ldb < std::max(1, rowsB) || g.ldc < std::max(1, g.m))
    return CUBLAS_STATUS_INVALID_VALUE;

  // Supported (A, B, C, compute) combinations, as in cuBLAS's cublasGemmEx table.
  Round round = Round::None;
  bool half_scalars = false;
  const bool f32 = g.at == CUDA_R_32F && g.bt == CUDA_R_32F && g.ct == CUDA_R_32F;
  const int mode = (int)g.h->math & 0xf;
  switch (g.compute) {
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
      if (f32) {
        if (g.compute == CUBLAS_COMPUTE_32F && mode == CUBLAS_TF32_TENSOR_OP_MATH) round = Round::TF32;
        if (g.compute == CUBLAS_COMPUTE_32F && mode == CUBLAS_TENSOR_OP_MATH) round = Round::F16;
      } else if (!(g.at == g.bt && (g.at == CUDA_R_16F || g.at == CUDA_R_16BF) &&
                   (g.ct == CUDA_R_32F || g.ct == g.at))) {
        return CUBLAS_STATUS_NOT_SUPPORTED;
      }
      break;
    case CUBLAS_COMPUTE_32F_FAST_TF32:
      if (!f32) return CUBLAS_STATUS_NOT_SUPPORTED;
      round = Round::TF32;
      break;
    case CUBLAS_COMPUTE_32F_FAST_16F:
      if (!f32) return CUBLAS_STATUS_NOT_SUPPORTED;
      round = Round::F16;
      break;
    case CUBLAS_COMPUTE_32F_FAST_16BF:
      if (!f32) return CUBLAS_STATUS_NOT_SUPPORTED;
      round = Round::BF16;
      break;
    case CUBLAS_COMPUTE_16F:
    case CUBLAS_COMPUTE_16F_PEDANTIC:
      if (!(g.at == CUDA_R_16F && g.bt == CUDA_R_16F && g.ct == CUDA_R_16F)) return CUBLAS_STATUS_NOT_SUPPORTED;
      half_scalars = true;
      break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }

  // Scalars: host memory in host pointer mode, device memory in device mode.
  const size_t scalar_bytes = half_scalars ? 2 : 4;
  if (!g.alpha || !g.beta) return CUBLAS_STATUS_INVALID_VALUE;
  char what[160];
  for (const void* s : {g.alpha, g.beta}) {
    const char* name = s == g.alpha ? "alpha" : "beta";
    if (g.h->pointer_mode == CUBLAS_POINTER_MODE_DEVICE) {
      snprintf(what, sizeof what, "%s: %s (CUBLAS_POINTER_MODE_DEVICE)", g.fn, name);
      detail::check_device_range(s, scalar_bytes, what);
    } else if (detail::is_device_pointer(s)) {
      fail("%s: %s %p is device memory but the handle is in CUBLAS_POINTER_MODE_HOST", g.fn, name, s);
    }
  }
  // Host-mode scalars are read now (the caller's variables may be gone when the GEMM runs);
  // device-mode scalars when the GEMM runs, like everything else in device memory.
  auto scalar = [half_scalars](const void* p) {
    return half_scalars ? __half2float(*static_cast<const __half*>(p)) : *static_cast<const float*>(p);
  };
  const bool device_scalars = g.h->pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
  const float host_alpha = device_scalars ? 0.0f : scalar(g.alpha);
  const float host_beta = device_scalars ? 0.0f : scalar(g.beta);

  if (g.m == 0 || g.n == 0 || g.batch == 0) return CUBLAS_STATUS_SUCCESS;
  const bool arrays = g.Aarr || g.Barr || g.Carr;
  if (arrays) {
    const size_t bytes = sizeof(void*) * (size_t)g.batch;
    snprintf(what, sizeof what, "%s: the pointer array", g.fn);
    detail::check_device_range(g.Aarr, bytes, what);
    detail::check_device_range(g.Barr, bytes, what);
    detail::check_device_range(g.Carr, bytes, what);
  }
  const size_t extA = (size_t)(colsA - 1) * g.lda + rowsA;  // elements spanned by A
  const size_t extB = (size_t)(colsB - 1) * g.ldb + rowsB;
  const size_t extC = (size_t)(g.n - 1) * g.ldc + g.m;
  // Operands of batch i must lie inside device allocations. Strided operands are checked at the
  // call; the pointers of a pointer array live in device memory and are read when the GEMM runs.
  auto check_operands = [=](int i, const void* A, const void* B, const void* C) {
    char what[160];
    if (g.k > 0) {  // cuBLAS reads A and B whenever k > 0
      snprintf(what, sizeof what, "%s: matrix A (batch %d, %s, %dx%d, lda %d)", g.fn, i, tA ? "T" : "N", rowsA, colsA, g.lda);
      detail::check_device_range(A, extA * type_size(g.at), what);
      snprintf(what, sizeof what, "%s: matrix B (batch %d, %s, %dx%d, ldb %d)", g.fn, i, tB ? "T" : "N", rowsB, colsB, g.ldb);
      detail::check_device_range(B, extB * type_size(g.bt), what);
    }
    snprintf(what, sizeof what, "%s: matrix C (batch %d, %dx%d, ldc %d)", g.fn, i, g.m, g.n, g.ldc);
    detail::check_device_range(C, extC * type_size(g.ct), what);
  };
  if (!arrays)
    for (int i = 0; i < g.batch; ++i)
      check_operands(i, nth(g.A, g.sA, nullptr, g.at, i), nth(g.B, g.sB, nullptr, g.bt, i),
                     nth(g.C, g.sC, nullptr, g.ct, i));

  // The GEMM itself runs on the handle's stream (or is captured into its graph).
  detail::run_on_stream(g.h->stream, g.fn, [=] {
  const float alpha = device_scalars ? scalar(g.alpha) : host_alpha;
  const float beta = device_scalars ? scalar(g.beta) : host_beta;
  const bool reads_ab = g.k > 0 && alpha != 0.0f;
  std::vector<float> fa, fb, fc;
  for (int i = 0; i < g.batch; ++i) {
    const void* A = nth(g.A, g.sA, g.Aarr, g.at, i);
    const void* B = nth(g.B, g.sB, g.Barr, g.bt, i);
    void* C = const_cast<void*>(nth(g.C, g.sC, (const void* const*)g.Carr, g.ct, i));
    if (arrays) check_operands(i, A, B, C);

    // C in float: in place when it is float, else a dense m x n copy.
    float* c32;
    int ldc32;
    if (g.ct == CUDA_R_32F) {
      c32 = static_cast<float*>(C);
      ldc32 = g.ldc;
    } else {
      fc.assign((size_t)g.m * g.n, 0.0f);
      c32 = fc.data();
      ldc32 = g.m;
    }
    // beta == 0: C's old contents (NaN garbage included) are never read.
    for (int j = 0; j < g.n; ++j)
      for (int r = 0; r < g.m; ++r) {
        float old = beta == 0.0f ? 0.0f : load(C, g.ct, (size_t)j * g.ldc + r);
        c32[(size_t)j * ldc32 + r] = beta == 0.0f ? 0.0f : old * beta;
      }
    if (reads_ab) {
      const float* a32 = static_cast<const float*>(A);
      const float* b32 = static_cast<const float*>(B);
      if (g.at != CUDA_R_32F || round != Round::None) {
        fa.resize(extA);
        to_float(A, g.at, extA, round, fa.data());
        a32 = fa.data();
      }
      if (g.bt != CUDA_R_32F || round != Round::None) {
        fb.resize(extB);
        to_float(B, g.bt, extB, round, fb.data());
        b32 = fb.data();
      }
      cblas_sgemm(CblasColMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans,
                  g.m, g.n, g.k, alpha, a32, g.lda, b32, g.ldb, 1.0f, c32, ldc32);
    }
    if (g.ct != CUDA_R_32F)
      for (int j = 0; j < g.n; ++j)
        for (int r = 0; r < g.m; ++r) store(c32[(size_t)j * ldc32 + r], g.ct, C, (size_t)j * g.ldc + r);
  }
  });
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace
}  // namespace simt

using simt::Gemm;
using simt::run_gemm;

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  simt::Lock lock(simt::detail::device_mutex());
  *handle = new cublasContext{0, CUBLAS_DEFAULT_MATH, CUBLAS_POINTER_MODE_HOST, nullptr, 0};
  simt::g_handles.insert(*handle);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  simt::Lock lock(simt::detail::device_mutex());
  if (!simt::g_handles.erase(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
#define SIMT_HANDLE_CHECK(h)                                   \
  simt::Lock lock(simt::detail::device_mutex());               \
  if (!simt::g_handles.count(h)) return CUBLAS_STATUS_NOT_INITIALIZED
cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId) {
  SIMT_HANDLE_CHECK(handle);
  if (!simt::detail::valid_stream(streamId)) return CUBLAS_STATUS_INVALID_VALUE;
  handle->stream = streamId;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetStream_v2(cublasHandle_t handle, cudaStream_t* streamId) {
  SIMT_HANDLE_CHECK(handle);
  if (!streamId) return CUBLAS_STATUS_INVALID_VALUE;
  *streamId = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  SIMT_HANDLE_CHECK(handle);
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode) {
  SIMT_HANDLE_CHECK(handle);
  if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = handle->math;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode) {
  SIMT_HANDLE_CHECK(handle);
  if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE) return CUBLAS_STATUS_INVALID_VALUE;
  handle->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t* mode) {
  SIMT_HANDLE_CHECK(handle);
  if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = handle->pointer_mode;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
  SIMT_HANDLE_CHECK(handle);
  if (bytes && workspace) simt::detail::check_device_range(workspace, bytes, "cublasSetWorkspace: workspace");
  handle->workspace = workspace;
  handle->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}
#undef SIMT_HANDLE_CHECK
cublasStatus_t cublasGetVersion_v2(cublasHandle_t, int* version) {
  if (!version) return CUBLAS_STATUS_INVALID_VALUE;
  *version = CUBLAS_VERSION;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t s) {
  switch (s) {
#define N(x) case x: return #x;
    N(CUBLAS_STATUS_SUCCESS) N(CUBLAS_STATUS_NOT_INITIALIZED) N(CUBLAS_STATUS_ALLOC_FAILED)
    N(CUBLAS_STATUS_INVALID_VALUE) N(CUBLAS_STATUS_ARCH_MISMATCH) N(CUBLAS_STATUS_MAPPING_ERROR)
    N(CUBLAS_STATUS_EXECUTION_FAILED) N(CUBLAS_STATUS_INTERNAL_ERROR) N(CUBLAS_STATUS_NOT_SUPPORTED)
    N(CUBLAS_STATUS_LICENSE_ERROR)
#undef N
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}
const char* cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    default: return "unknown error";
  }
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa,
                              cublasOperation_t transb, int m, int n, int k, const float* alpha,
                              const float* A, int lda, const float* B, int ldb, const float* beta,
                              float* C, int ldc) {
  Gemm g{"cublasSgemm", handle, transa, transb, m, n, k, alpha, beta, CUDA_R_32F, CUDA_R_32F,
         CUDA_R_32F, lda, ldb, ldc, 1, CUBLAS_COMPUTE_32F, A, 0, nullptr, B, 0, nullptr, C, 0, nullptr};
  return run_gemm(g);
}
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const float* alpha, const float* A, int lda,
                                         long long int strideA, const float* B, int ldb,
                                         long long int strideB, const float* beta, float* C,
                                         int ldc, long long int strideC, int batchCount) {
  Gemm g{"cublasSgemmStridedBatched", handle, transa, transb, m, n, k, alpha, beta, CUDA_R_32F,
         CUDA_R_32F, CUDA_R_32F, lda, ldb, ldc, batchCount, CUBLAS_COMPUTE_32F, A, strideA, nullptr,
         B, strideB, nullptr, C, strideC, nullptr};
  return run_gemm(g);
}
cublasStatus_t cublasSgemmBatched(cublasHandle_t handle, cublasOperation_t transa,
                                  cublasOperation_t transb, int m, int n, int k, const float* alpha,
                                  const float* const Aarray[], int lda, const float* const Barray[],
                                  int ldb, const float* beta, float* const Carray[], int ldc,
                                  int batchCount) {
  Gemm g{"cublasSgemmBatched", handle, transa, transb, m, n, k, alpha, beta, CUDA_R_32F, CUDA_R_32F,
         CUDA_R_32F, lda, ldb, ldc, batchCount, CUBLAS_COMPUTE_32F, nullptr, 0,
         (const void* const*)Aarray, nullptr, 0, (const void* const*)Barray, nullptr, 0,
         (void* const*)Carray};
  return run_gemm(g);
}
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t) {
  Gemm g{"cublasGemmEx", handle, transa, transb, m, n, k, alpha, beta, Atype, Btype, Ctype, lda,
         ldb, ldc, 1, computeType, A, 0, nullptr, B, 0, nullptr, C, 0, nullptr};
  return run_gemm(g);
}
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                          cublasOperation_t transb, int m, int n, int k,
                                          const void* alpha, const void* A, cudaDataType Atype,
                                          int lda, long long int strideA, const void* B,
                                          cudaDataType Btype, int ldb, long long int strideB,
                                          const void* beta, void* C, cudaDataType Ctype, int ldc,
                                          long long int strideC, int batchCount,
                                          cublasComputeType_t computeType, cublasGemmAlgo_t) {
  Gemm g{"cublasGemmStridedBatchedEx", handle, transa, transb, m, n, k, alpha, beta, Atype, Btype,
         Ctype, lda, ldb, ldc, batchCount, computeType, A, strideA, nullptr, B, strideB, nullptr,
         C, strideC, nullptr};
  return run_gemm(g);
}
cublasStatus_t cublasGemmBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                   cublasOperation_t transb, int m, int n, int k, const void* alpha,
                                   const void* const Aarray[], cudaDataType Atype, int lda,
                                   const void* const Barray[], cudaDataType Btype, int ldb,
                                   const void* beta, void* const Carray[], cudaDataType Ctype,
                                   int ldc, int batchCount, cublasComputeType_t computeType,
                                   cublasGemmAlgo_t) {
  Gemm g{"cublasGemmBatchedEx", handle, transa, transb, m, n, k, alpha, beta, Atype, Btype, Ctype,
         lda, ldb, ldc, batchCount, computeType, nullptr, 0, Aarray, nullptr, 0, Barray, nullptr, 0,
         Carray};
  return run_gemm(g);
}

}  // extern "C"
