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

// Race mode (SIMT_RACE, ThreadSanitizer): simt's own per-warp and per-block bookkeeping behind
// the device-side add-ons (WMMA staging and mapping tables in simt/mma.cpp, async-copy queues in
// simt/pipeline.cpp) is shared by every fiber of every block by design: fibers are cooperative and
// blocks run one after another, so it is never touched concurrently, but TSan, which sees no
// happens-before edge between blocks nor between warps between barriers (on purpose), would
// report it. Annotating edges for it would order the CUDA threads themselves and hide real races
// in user memory, so instead a RaceIgnore scope hides the bookkeeping from TSan entirely
// (__tsan_ignore_thread_begin/end: the current fiber's accesses, those made inside intercepted
// libc calls such as memcmp included, are not recorded). The accesses to user memory (the matrix a WMMA load
// reads, the one a store writes, an async copy's source and destination) stay outside such
// scopes and are announced with race_user_read / race_user_write: GCC's TSan instruments loads
// and stores but leaves memcpy and memset to the runtime's interceptors, and a copy of a small or
// bounded size (a WMMA element, a 4-16 byte async copy) is expanded inline, where neither sees
// it. A scope must not span a fiber switch (a __syncwarp): the ignore state belongs to the fiber.
// Outside race mode all of this is empty.
#if defined(SIMT_RACE)
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
extern "C" void __tsan_read_range(void* addr, unsigned long size);
extern "C" void __tsan_write_range(void* addr, unsigned long size);
struct RaceIgnore {
  RaceIgnore() { __tsan_ignore_thread_begin(); }
  ~RaceIgnore() { __tsan_ignore_thread_end(); }
  RaceIgnore(const RaceIgnore&) = delete;
  RaceIgnore& operator=(const RaceIgnore&) = delete;
};
// The calling CUDA thread reads / writes [p, p + n) of user memory.
inline void race_user_read(const void* p, size_t n) { __tsan_read_range(const_cast<void*>(p), n); }
inline void race_user_write(void* p, size_t n) { __tsan_write_range(p, n); }
#else
struct RaceIgnore {
  RaceIgnore() {}  // user-provided: no unused-variable warning where it is declared
};
inline void race_user_read(const void*, size_t) {}
inline void race_user_write(void*, size_t) {}
#endif

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
