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

// ---- Streams (simt/streams.cpp). Asynchronous work is queued per stream and runs only when the
// program forces it (a synchronize, a blocking copy, a query), in the SIMT_STREAMS order.
enum class WorkKind : uint8_t { Kernel, Memcpy, Memset, Host, Library, Graph };
// Enqueue `work` on `stream`, or record it into the graph when the stream is capturing. Errors
// (an invalidated capture, a legacy-stream call during a blocking capture, a bad handle) go to
// cudaGetLastError and the work is dropped. `work` runs later, on whichever host thread forces
// it: it must own (copy) everything it reads from the caller's stack.
void run_on_stream(cudaStream_t stream, const char* what, std::function<void()> work);
// The same, returning the error; `func` names a kernel node's function (cudaGraphExecUpdate
// compares it); *ticket receives the op's position in the stream for wait_for (0: not queued).
cudaError_t enqueue(cudaStream_t stream, const char* what, WorkKind kind, const void* func,
                    std::function<void()> work, uint64_t* ticket = nullptr);
// Block the host until op `ticket` of `stream` has run (a blocking copy).
void wait_for(cudaStream_t stream, uint64_t ticket, const char* why);
// Block until everything op `ticket` waits for has run, but not the op itself (a pageable
// cudaMemcpy: "a stream sync is performed before the copy is initiated").
void wait_for_stream_deps(cudaStream_t stream, uint64_t ticket, const char* why);
// Run everything queued (cudaFree and friends).
void synchronize_device(const char* why);
// A potentially unsafe call during stream capture (cudaMalloc, cudaFree, ...): returns
// cudaErrorStreamCaptureUnsupported and invalidates the captures whose mode forbids it.
cudaError_t check_capture_unsafe_call();

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

// Race mode runs each block on its own host thread while the launching thread, which holds
// device_mutex(), waits for it (simt/scheduler.cpp): device-side code that needs the device's
// tables (an async copy checking that its source is device memory) must not lock the mutex
// there, or it would wait for its own launch. True only on such a block thread; the launching
// thread's lock then covers it (no other host thread can touch the tables meanwhile).
bool on_race_block_thread();
// device_mutex(), locked unless on_race_block_thread().
class DeviceLock {
 public:
  DeviceLock() : locked_(!on_race_block_thread()) {
    if (locked_) device_mutex().lock();
  }
  ~DeviceLock() {
    if (locked_) device_mutex().unlock();
  }
  DeviceLock(const DeviceLock&) = delete;
  DeviceLock& operator=(const DeviceLock&) = delete;

 private:
  bool locked_;
};

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
