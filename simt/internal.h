// simt/internal.h — what the parts of simt (scheduler, runtime, cuBLAS) share; not for users.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>

#include "simt/simt.h"

namespace simt {
namespace detail {

// The fake device's limits (an H100-like sm_90 part).
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kSharedMemPerBlock = 48 * 1024;        // without cudaFuncSetAttribute
constexpr int kSharedMemPerBlockOptin = 227 * 1024;  // the most cudaFuncSetAttribute may allow
constexpr int kMultiProcessors = 132;
constexpr size_t kTotalGlobalMem = 80ull << 30;

// Serialises all device work (launches, copies, cuBLAS, the allocation table) across host
// threads, as one GPU queue would; recursive so that runtime calls may nest.
std::recursive_mutex& device_mutex();

// The calling host thread's last error (cudaGetLastError / cudaPeekAtLastError).
void set_last_error(cudaError_t e);
bool valid_stream(cudaStream_t s);

// cudaFuncAttributeMaxDynamicSharedMemorySize of a kernel (default 48 KiB).
int set_max_dynamic_smem(const void* func, int bytes);
int max_dynamic_smem(const void* func);

// Guard bytes around device allocations: check them all, naming `kernel` (may be null: then
// `when` says what was being done) in the message.
void check_all_guards(const char* kernel, const char* when = nullptr);

// Abort unless [p, p + bytes) lies inside one live device allocation. `what` names the access
// in the message, e.g. "cudaMemcpy destination" or "cublasSgemm: matrix A".
void check_device_range(const void* p, size_t bytes, const char* what);
// Whether p points into a live device allocation (or a registered symbol / managed memory).
bool is_device_pointer(const void* p);

// Runs the device-memory work of one library call (a cuBLAS / cuBLASLt GEMM) on `stream`, as the
// GPU would run the kernels the call enqueues. The caller checks its arguments first (statuses
// are returned at call time, as on a GPU), then hands everything the work touches to `work` BY
// VALUE: the work may run after the call has returned. `what` names the call in messages.
// (Here: runs `work` at once under device_mutex(); the asynchronous-streams version replaces it.)
void run_on_stream(cudaStream_t stream, const char* what, std::function<void()> work);

// x rounded to TF32 (10-bit mantissa, nearest, ties away from zero: what the tensor cores'
// conversion does), for CUBLAS_COMPUTE_32F_FAST_TF32 / CUBLAS_TF32_TENSOR_OP_MATH. Inf/NaN pass.
inline float round_tf32(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  memcpy(&x, &u, 4);
  return x;
}

}  // namespace detail
}  // namespace simt
