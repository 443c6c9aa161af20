// simt/internal.h — what the parts of simt (scheduler, runtime, cuBLAS) share; not for users.
#pragma once
#include <cstddef>
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

// What the executable says about a kernel (simt/kernel_info.cpp): its __launch_bounds__
// maxThreadsPerBlock (0 when it has none) and the bytes of its static __shared__ variables.
int launch_bound(const void* func);
size_t static_smem_bytes(const void* func);

// Guard bytes around device allocations: check them all, naming `kernel` (may be null: then
// `when` says what was being done) in the message.
void check_all_guards(const char* kernel, const char* when = nullptr);

// Abort unless [p, p + bytes) lies inside one live device allocation. `what` names the access
// in the message, e.g. "cudaMemcpy destination" or "cublasSgemm: matrix A".
void check_device_range(const void* p, size_t bytes, const char* what);
// Whether p points into a live device allocation (or a registered symbol / managed memory).
bool is_device_pointer(const void* p);

}  // namespace detail
}  // namespace simt
