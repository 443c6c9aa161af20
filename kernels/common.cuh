// kernels/common.cuh — the one header every kernel file and every host file that
// talks to CUDA includes.
//
// The same source compiles two ways:
//   * nvcc (what `make` builds): the real CUDA runtime, cuBLAS and <<<...>>> launches;
//   * g++ with -DVIT_SIMT against simt/ (what `make test` runs here): kernels run on the
//     CPU, one fiber per CUDA thread, and the runtime/cuBLAS calls are CPU
//     implementations with the same semantics (see simt/simt.h).
// So kernels never use <<<...>>> directly: they launch through LAUNCH(), and declare
// dynamic shared memory through VIT_DYNAMIC_SMEM(). Everything else (threadIdx,
// __syncthreads, __shfl_xor_sync, atomicAdd, __half, ...) is spelled as in CUDA.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

#if defined(__CUDACC__)
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
// Dynamic shared memory, 16-byte aligned so kernels may use float4 on it.
#define VIT_DYNAMIC_SMEM(T, name)                                    \
  extern __shared__ __align__(16) unsigned char vit_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(vit_dynamic_smem_)
#else
#include "simt/simt.h"  // defines VIT_DYNAMIC_SMEM and simt::launch_kernel
#endif

// Storage type of parameters and activations. Accumulation is always float.
typedef float floatX;

namespace vit {

// Report a failed CUDA / cuBLAS call in one line (call, file:line, what to do) and exit.
[[noreturn]] void cuda_fail(const char* what, const char* call, const char* file, int line,
                            bool out_of_memory);

// Work put on the device other than kernels since the program started, for vit_bench --launches
// and the launch-count test (kernels are counted by launch_counter below). Library calls: cuBLAS
// and cuBLASLt GEMMs, NCCL collectives. Memory operations: cudaMemset* and cudaMemcpy*. Graph
// launches: cudaGraphLaunch (the nodes a graph runs are counted once, when captured).
inline uint64_t& library_call_counter() {
  static uint64_t n = 0;
  return n;
}
inline uint64_t& memop_counter() {
  static uint64_t n = 0;
  return n;
}

// Every CUDA and cuBLAS call goes through CUDA_CHECK / CUBLAS_CHECK, which see the call's text:
// counting there by the function's name catches every copy, memset and GEMM without a wrapper at
// each call site (and those that later code adds). Setup calls (handles, streams, descriptors)
// are not work on the device and are not counted.
inline bool starts_with(const char* s, const char* prefix) {
  while (*prefix)
    if (*s++ != *prefix++) return false;
  return true;
}
inline uint64_t& graph_launch_counter() {
  static uint64_t n = 0;
  return n;
}
inline void count_cuda_call(const char* call) {
  if (starts_with(call, "cudaMemset") || starts_with(call, "cudaMemcpy")) ++memop_counter();
  if (starts_with(call, "cudaGraphLaunch(")) ++graph_launch_counter();
}
inline void count_cublas_call(const char* call) {
  if (!starts_with(call, "cublas")) return;
  bool gemm = starts_with(call, "cublasLtMatmul(");
  for (const char* c = call; *c && *c != '(' && !gemm; ++c)
    gemm = (c[0] == 'g' || c[0] == 'G') && c[1] == 'e' && c[2] == 'm' && c[3] == 'm';
  if (gemm) ++library_call_counter();
}

inline void cuda_check(cudaError_t err, const char* call, const char* file, int line) {
  count_cuda_call(call);
  if (err != cudaSuccess)
    cuda_fail(cudaGetErrorString(err), call, file, line, err == cudaErrorMemoryAllocation);
}

const char* cublas_status_name(cublasStatus_t s);

inline void cublas_check(cublasStatus_t st, const char* call, const char* file, int line) {
  count_cublas_call(call);
  if (st != CUBLAS_STATUS_SUCCESS)
    cuda_fail(cublas_status_name(st), call, file, line, st == CUBLAS_STATUS_ALLOC_FAILED);
}

// Kernel launches made through LAUNCH since the program started (vit_bench reports launches per
// training step). Atomic: host threads may launch concurrently (make test-race found the plain
// counter racing in SimtLaunch.ConcurrentHostThreads).
inline std::atomic<uint64_t>& launch_counter() {
  static std::atomic<uint64_t> n{0};
  return n;
}
inline uint64_t launch_count() { return launch_counter().load(std::memory_order_relaxed); }

// The three counters together; a step's launches are the difference of two snapshots.
struct LaunchCounts {
  uint64_t kernels = 0, library = 0, memops = 0, graphs = 0;
  uint64_t total() const { return kernels + library + memops + graphs; }
  LaunchCounts operator-(const LaunchCounts& o) const {
    LaunchCounts d;
    d.kernels = kernels - o.kernels;
    d.library = library - o.library;
    d.memops = memops - o.memops;
    d.graphs = graphs - o.graphs;
    return d;
  }
};
inline LaunchCounts launch_counts() {
  LaunchCounts c;
  c.kernels = launch_counter();
  c.library = library_call_counter();
  c.memops = memop_counter();
  c.graphs = graph_launch_counter();
  return c;
}

// The Philox `step` of dropout and augmentation as a kernel argument: a plain value (eager
// launches), or, inside a CUDA graph, *base + offset read on the device from a counter the
// step's first node uploads, so the same graph replays every step unchanged. Implicit from a
// uint64_t, and converting to one in device code, so kernels and their callers keep spelling
// it as a number.
struct DevStep {
  const uint64_t* base = nullptr;  // device memory; null: the value is `offset`
  uint64_t offset = 0;
  DevStep() = default;
  __host__ __device__ DevStep(uint64_t value) : base(nullptr), offset(value) {}
  __host__ __device__ DevStep(const uint64_t* b, uint64_t off) : base(b), offset(off) {}
  __device__ operator uint64_t() const { return base ? *base + offset : offset; }
};

#if defined(__CUDACC__)
template <typename... KArgs, typename... Args>
inline void launch_kernel(const char* name, const char* file, int line, void (*kernel)(KArgs...),
                          dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
                          Args&&... args) {
  launch_counter().fetch_add(1, std::memory_order_relaxed);
  kernel<<<grid, block, smem_bytes, stream>>>(std::forward<Args>(args)...);
  cuda_check(cudaGetLastError(), name, file, line);
}
#else
// simt: the launch runs the kernel on the CPU before returning; a bad configuration is reported
// through cudaGetLastError exactly as on a GPU, and checked here the same way.
template <typename... KArgs, typename... Args>
inline void launch_kernel(const char* name, const char* file, int line, void (*kernel)(KArgs...),
                          dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
                          Args&&... args) {
  launch_counter().fetch_add(1, std::memory_order_relaxed);
  simt::launch_kernel(name, file, line, kernel, grid, block, smem_bytes, stream,
                      std::forward<Args>(args)...);
  cuda_check(cudaGetLastError(), name, file, line);
}
#endif

inline unsigned ceil_div(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

}  // namespace vit

#define CUDA_CHECK(call) ::vit::cuda_check((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) ::vit::cublas_check((call), #call, __FILE__, __LINE__)

// LAUNCH(kernel, grid, block, smem_bytes, stream, args...): kernel<<<grid, block, smem_bytes,
// stream>>>(args...) followed by an error check that names the kernel. A templated kernel
// must be wrapped in parentheses: LAUNCH((softmax_kernel<float, 4>), grid, ...).
#define LAUNCH(kernel, grid, block, smem_bytes, stream, ...)                                   \
  ::vit::launch_kernel(#kernel, __FILE__, __LINE__, kernel, dim3(grid), dim3(block), (smem_bytes), \
                       (stream), ##__VA_ARGS__)
