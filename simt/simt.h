// simt/simt.h — run CUDA source on the CPU: what g++ needs to compile kernels/*.cuh, host/*.cu
// and tests/*.cu unchanged (with -DVIT_SIMT -x c++ -isystem $CUDA_HOME/include).
//
// kernels/common.cuh includes this header instead of the CUDA toolkit's when the compiler is not
// nvcc. Types, enums and runtime/cuBLAS declarations come from NVIDIA's own headers (they compile
// host-side under g++), so both builds see identical declarations; simt/runtime.cpp and
// simt/cublas.cpp define the functions on the CPU, simt/scheduler.cpp runs the kernels. What this
// header adds is the device side that NVIDIA's headers only declare for nvcc:
//
//   * a kernel launch (simt::launch_kernel, behind LAUNCH) is queued on its stream and runs when
//     the program synchronises: blocks one after another, one Boost.Context fiber per CUDA thread;
//   * threadIdx / blockIdx / blockDim / gridDim / warpSize, updated by the scheduler;
//   * __syncthreads and the warp intrinsics (__shfl*_sync, __ballot_sync, ...): real barriers and
//     exchanges among the fibers, with CUDA's mask semantics, that abort loudly on divergence or
//     deadlock (see docs/simt.md);
//   * __shared__ = `static thread_local`: one instance per kernel (per host thread), shared by all
//     fibers of a block because they all run on that host thread, and refilled with 0xFF (NaN)
//     at every block start. (A linker-section trick would be simpler but g++ drops section
//     attributes on statics of template instantiations, and our kernels are templates.)
//   * atomics as plain read-modify-write (fibers are cooperative: nothing interleaves inside one);
//   * the device math intrinsics on host libm, the fast ones (__expf, __fdividef, ...) and the
//     conversions (__float2int_rn, ...) built the way the CUDA/PTX documentation defines them;
//   * __launch_bounds__ recorded per kernel (see the macro), checked at launch with the static
//     __shared__ bytes that simt/kernel_info.cpp reads from the executable's symbol table.
#pragma once

// Standard headers that use GNU attribute spellings clashing with the CUDA keywords defined
// below (<memory> uses __attribute__((__noinline__))) are included first.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <math.h>  // brings isnan/isfinite/signbit/... into the global namespace, as in CUDA

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

// ---------------------------------------------------------------------------------------------
// Execution-space qualifiers. crt/host_defines.h already maps __global__, __device__, __host__,
// __constant__ and __managed__ to nothing and __forceinline__ to always_inline for host compilers.
#undef __shared__
#define __shared__ static thread_local
#ifndef __noinline__
#define __noinline__ __attribute__((noinline))
#endif
// __launch_bounds__(maxThreadsPerBlock[, minBlocksPerMultiprocessor[, maxBlocksPerCluster]]):
// g++ has no attribute that stores a number a program can read back from a function pointer, and
// section names cannot depend on template parameters (our bounds often do). But GCC evaluates
// the arguments of patchable_function_entry(2(N + 2), N + 2) per template instantiation, and it
// places N + 2 one-byte NOPs (0x90) before the function's entry and N + 2 after it:
// simt/kernel_info.cpp counts them. (GCC's records of these NOPs break the link of COMDAT
// kernels: the simt link drops them, simt/discard_patchable.ld.) minBlocks and
// maxBlocksPerCluster only steer register allocation on a GPU and are not recorded.
#undef __launch_bounds__
#define __launch_bounds__(...)                                                         \
  __attribute__((patchable_function_entry(                                             \
      2 * (::simt::detail::launch_bound_arg(__VA_ARGS__) + ::simt::detail::kBoundNops), \
      ::simt::detail::launch_bound_arg(__VA_ARGS__) + ::simt::detail::kBoundNops)))
#ifndef __grid_constant__
#define __grid_constant__
#endif

// Dynamic shared memory (see kernels/common.cuh): the launch's smem_bytes, 16-byte aligned,
// 0xFF-filled at every block start, followed by guard bytes checked at the end of each block.
#define VIT_DYNAMIC_SMEM(T, name) T* name = reinterpret_cast<T*>(::simt::detail::g_dynamic_smem)

namespace simt {
namespace detail {
constexpr int launch_bound_arg(int max_threads, int = 0, int = 0) { return max_threads; }
// NOPs added on each side of a bounded kernel's entry beyond N, so that the single alignment NOP
// that may precede any function and start its body does not read as a bound of 1.
constexpr int kBoundNops = 2;
}  // namespace detail

// Order in which the runnable threads of a block run between two synchronisation points (and
// the order of the blocks of a grid). Forward is thread 0, 1, 2, ...; Reverse the opposite;
// Shuffle a seeded random permutation drawn anew at every round. The environment variable
// SIMT_ORDER=forward|reverse|shuffle[:SEED] sets the initial order; this call overrides it.
enum class Order { Forward, Reverse, Shuffle };
void set_thread_order(Order order, uint64_t seed = 0);
Order thread_order();
uint64_t thread_order_seed();
// Back to the order SIMT_ORDER names (forward when unset), re-reading the environment.
void reset_thread_order();

// Order in which queued work of different streams runs once the program forces it (see
// simt/streams.cpp). Eager runs every call when issued (no concurrency at all); Fifo in issue
// order; Reverse (the default) only what the forced wait depends on, newest runnable op first;
// Shuffle a seeded random runnable op. SIMT_STREAMS=eager|fifo|reverse|shuffle[:SEED] sets the
// initial order; this call overrides it.
enum class StreamOrder { Eager, Fifo, Reverse, Shuffle };
void set_stream_order(StreamOrder order, uint64_t seed = 0);
StreamOrder stream_order();
// Back to the order SIMT_STREAMS names (reverse when unset).
void reset_stream_order();

// Give a device allocation a name for simt's error messages ("... of allocation 'qkv' ...").
void name_allocation(const void* device_ptr, const char* name);
// Check the guard bytes of every live device allocation now; aborts naming the first broken one.
// (simt also checks after every kernel launch, on every synchronize and on cudaFree.)
void check_guards();
// Print "simt: <message>" as one line to stderr and abort().
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

namespace detail {

// Built-in variables of the running CUDA thread / block (plain globals, not thread_local: they
// must survive the per-block 0xFF fill of the thread_local shared memory). Only one kernel runs
// at a time (a global lock), and the scheduler sets g_thread_idx before resuming each fiber.
extern uint3 g_thread_idx;
extern uint3 g_block_idx;
extern dim3 g_block_dim;
extern dim3 g_grid_dim;
extern unsigned char* g_dynamic_smem;

struct KernelLaunch {
  const char* name;  // as written in LAUNCH(...)
  const char* file;
  int line;
  const void* func;  // the kernel, for cudaFuncSetAttribute lookups
  dim3 grid, block;
  size_t smem_bytes;
  cudaStream_t stream;
  void (*body)(const void* closure);  // runs the kernel for the current CUDA thread
  const void* closure;
  std::shared_ptr<const void> owner;  // keeps the closure alive until the queued launch ran
};
// Validate the configuration (errors go to cudaGetLastError, as in CUDA), then queue the launch
// on its stream (it runs when the program synchronises, see simt/streams.cpp).
void launch(const KernelLaunch& launch);
// A kernel pointer argument must be null or point into memory a GPU can read: device or pinned
// host allocations, or symbols. Aborts otherwise (on a GPU it would be an illegal address).
void check_pointer_arg(const char* kernel, int index, const void* p);
// Make a __device__ / __constant__ variable (a host global under simt) count as device memory.
void register_symbol(const void* symbol, size_t size);

enum class BarrierKind : uint8_t { Plain, Count, And, Or };
int block_barrier(BarrierKind kind, int predicate, const char* file, int line);

enum class WarpOp : uint8_t {
  SyncWarp, ShflIdx, ShflUp, ShflDown, ShflXor, Ballot, Any, All, MatchAny, MatchAll,
  ReduceAdd, ReduceMin, ReduceMax, ReduceAnd, ReduceOr, ReduceXor, ReduceMinS, ReduceMaxS,
};
// Arrive at a warp operation with `mask`; returns once every lane named in the mask has arrived
// at the same operation with the same mask. value: this lane's operand (the bytes of the
// shuffled variable, or the predicate); arg: srcLane / delta / laneMask; width: shuffle width.
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file,
                 int line);
unsigned active_mask();

// What a shuffle may carry: trivially copyable values of up to 8 bytes, and the paired half
// types, which CUDA documents __shfl*_sync overloads for but whose host-side definitions in
// cuda_fp16.hpp / cuda_bf16.hpp have user-provided copy assignment (so are not trivially
// copyable, though they are plain pairs of 16-bit values).
template <class T>
struct shuffleable
    : std::integral_constant<bool, std::is_trivially_copyable<T>::value ||
                                       std::is_same<T, __half2>::value ||
                                       std::is_same<T, __nv_bfloat162>::value> {};
template <class T>
inline uint64_t to_bits(const T& v) {
  static_assert(shuffleable<T>::value && sizeof(T) <= 8,
                "simt: warp shuffles take values of at most 8 bytes");
  uint64_t r = 0;
  std::memcpy(&r, static_cast<const void*>(&v), sizeof(T));
  return r;
}
template <class T>
inline T from_bits(uint64_t r) {
  T v;
  std::memcpy(static_cast<void*>(&v), &r, sizeof(T));
  return v;
}

template <class F, class Tuple>
void check_pointer_args(const char* kernel, const Tuple& t) {
  int i = 0;
  std::apply(
      [&](const auto&... a) {
        auto one = [&](const auto& x) {
          using E = std::decay_t<decltype(x)>;
          if constexpr (std::is_pointer<E>::value && !std::is_function<std::remove_pointer_t<E>>::value)
            check_pointer_arg(kernel, i, (const void*)x);
          ++i;
        };
        (one(a), ...);
      },
      t);
}

// cudaLaunchKernel(const void* func, grid, block, void** args, smem, stream): turning `args` back
// into typed parameters takes code that knows the kernel's type. Every launch through LAUNCH (and
// every call of the typed cudaLaunchKernel overload below) registers such a "packed launcher"
// for its kernel; the C entry point looks the kernel up there (simt/kernel_info.cpp). A kernel
// that was never launched either way is unknown to it: simt aborts saying so.
using PackedLauncher = void (*)(const void* func, const char* name, dim3 grid, dim3 block,
                                void** args, size_t smem, cudaStream_t stream);
void register_kernel(const void* func, const char* name, PackedLauncher launcher);
// Runs a registered kernel's packed launcher; false when `func` was never registered.
bool launch_registered(const void* func, dim3 grid, dim3 block, void** args, size_t smem,
                       cudaStream_t stream);
// The kernel's name for messages: the name LAUNCH gave it, else its (demangled) symbol from the
// executable's symbol table, else its address. The string lives as long as the program.
const char* kernel_name(const void* func);
// Launch, then return the launch's own error (cudaSuccess or a configuration error), keeping an
// earlier sticky-free last error in place when the launch succeeded, as cudaLaunchKernel does.
cudaError_t launch_returning_error(const std::function<void()>& do_launch);

template <typename... KArgs, size_t... I>
void launch_packed_impl(const void* func, const char* name, dim3 grid, dim3 block, void** args,
                        size_t smem, cudaStream_t stream, std::index_sequence<I...>);
template <typename... KArgs>
void launch_packed(const void* func, const char* name, dim3 grid, dim3 block, void** args,
                   size_t smem, cudaStream_t stream) {
  launch_packed_impl<KArgs...>(func, name, grid, block, args, smem, stream,
                               std::index_sequence_for<KArgs...>{});
}

}  // namespace detail

// LAUNCH(...) lands here (kernels/common.cuh: `using simt::launch_kernel`). The arguments are
// converted to the kernel's parameter types once; every CUDA thread then calls the kernel with
// its own copy of them, as CUDA does.
template <typename... KArgs, typename... Args>
void launch_kernel(const char* name, const char* file, int line, void (*kernel)(KArgs...),
                   dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(KArgs) == sizeof...(Args), "LAUNCH: wrong number of kernel arguments");
  using Params = std::tuple<std::decay_t<KArgs>...>;
  struct Closure {
    void (*kernel)(KArgs...);
    Params params;
  };
  // The arguments are copied at launch time, as CUDA does: the launch may run much later.
  auto owner = std::make_shared<Closure>(Closure{kernel, Params(std::forward<Args>(args)...)});
  const Closure& c = *owner;
  detail::check_pointer_args<void>(name, c.params);
  detail::KernelLaunch l;
  l.name = name;
  l.file = file;
  l.line = line;
  l.func = reinterpret_cast<const void*>(kernel);
  l.grid = grid;
  l.block = block;
  l.smem_bytes = smem_bytes;
  l.stream = stream;
  l.body = [](const void* p) {
    const Closure* cl = static_cast<const Closure*>(p);
    std::apply(cl->kernel, cl->params);  // copies each parameter: per-thread arguments
  };
  l.closure = owner.get();
  l.owner = owner;
  detail::register_kernel(l.func, name, &detail::launch_packed<KArgs...>);
  detail::launch(l);
}

namespace detail {
// args[i] points to the i-th parameter, of the kernel's own parameter type (CUDA's contract).
template <typename... KArgs, size_t... I>
void launch_packed_impl(const void* func, const char* name, dim3 grid, dim3 block, void** args,
                        size_t smem, cudaStream_t stream, std::index_sequence<I...>) {
  auto kernel = reinterpret_cast<void (*)(KArgs...)>(const_cast<void*>(func));
  ::simt::launch_kernel(name, "(cudaLaunchKernel)", 0, kernel, grid, block, smem, stream,
                *static_cast<std::decay_t<KArgs>*>(args[I])...);
}
}  // namespace detail
}  // namespace simt

// The typed form of cudaLaunchKernel (more specialised than cuda_runtime.h's `const T*`
// template, so it wins): it knows the parameter types, so it works for any kernel.
template <typename... KArgs>
inline cudaError_t cudaLaunchKernel(void (*func)(KArgs...), dim3 gridDim, dim3 blockDim,
                                    void** args, size_t sharedMem = 0, cudaStream_t stream = 0) {
  const void* f = reinterpret_cast<const void*>(func);
  return simt::detail::launch_returning_error([&] {
    simt::detail::launch_packed<KArgs...>(f, simt::detail::kernel_name(f), gridDim, blockDim,
                                          args, sharedMem, stream);
  });
}

// ---------------------------------------------------------------------------------------------
// Built-in variables.
inline const uint3& threadIdx = simt::detail::g_thread_idx;
inline const uint3& blockIdx = simt::detail::g_block_idx;
inline const dim3& blockDim = simt::detail::g_block_dim;
inline const dim3& gridDim = simt::detail::g_grid_dim;
constexpr int warpSize = 32;

// ---------------------------------------------------------------------------------------------
// Block barriers. The call site (file, line) is recorded: every thread of the block must wait at
// the same __syncthreads, or simt aborts naming both sites.
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  simt::detail::block_barrier(simt::detail::BarrierKind::Plain, 0, file, line);
}
inline int __syncthreads_count(int predicate, const char* file = __builtin_FILE(),
                               int line = __builtin_LINE()) {
  return simt::detail::block_barrier(simt::detail::BarrierKind::Count, predicate, file, line);
}
inline int __syncthreads_and(int predicate, const char* file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
  return simt::detail::block_barrier(simt::detail::BarrierKind::And, predicate, file, line);
}
inline int __syncthreads_or(int predicate, const char* file = __builtin_FILE(),
                            int line = __builtin_LINE()) {
  return simt::detail::block_barrier(simt::detail::BarrierKind::Or, predicate, file, line);
}

// ---------------------------------------------------------------------------------------------
// Warp intrinsics. Semantics of sm_70+: each lane named in `mask` must arrive at the same
// intrinsic with the same mask; the caller must be in the mask. A shuffle that reads a lane
// outside the mask gets 0xFF bytes (NaN), as undefined as on the GPU but loud.
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
  simt::detail::warp_op(simt::detail::WarpOp::SyncWarp, mask, 0, 0, 32, file, line);
}
template <class T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize,
                     const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return simt::detail::from_bits<T>(simt::detail::warp_op(
      simt::detail::WarpOp::ShflIdx, mask, simt::detail::to_bits(var), srcLane, width, file, line));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,
                        const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return simt::detail::from_bits<T>(simt::detail::warp_op(
      simt::detail::WarpOp::ShflUp, mask, simt::detail::to_bits(var), (int)delta, width, file, line));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,
                          const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return simt::detail::from_bits<T>(simt::detail::warp_op(simt::detail::WarpOp::ShflDown, mask,
                                                          simt::detail::to_bits(var), (int)delta,
                                                          width, file, line));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,
                         const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return simt::detail::from_bits<T>(simt::detail::warp_op(
      simt::detail::WarpOp::ShflXor, mask, simt::detail::to_bits(var), laneMask, width, file, line));
}
inline unsigned __ballot_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  return (unsigned)simt::detail::warp_op(simt::detail::WarpOp::Ballot, mask, predicate != 0, 0, 32,
                                         file, line);
}
inline int __any_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  return (int)simt::detail::warp_op(simt::detail::WarpOp::Any, mask, predicate != 0, 0, 32, file,
                                    line);
}
inline int __all_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  return (int)simt::detail::warp_op(simt::detail::WarpOp::All, mask, predicate != 0, 0, 32, file,
                                    line);
}
template <class T>
inline unsigned __match_any_sync(unsigned mask, T value, const char* file = __builtin_FILE(),
                                 int line = __builtin_LINE()) {
  return (unsigned)simt::detail::warp_op(simt::detail::WarpOp::MatchAny, mask,
                                         simt::detail::to_bits(value), 0, 32, file, line);
}
template <class T>
inline unsigned __match_all_sync(unsigned mask, T value, int* pred,
                                 const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  unsigned r = (unsigned)simt::detail::warp_op(simt::detail::WarpOp::MatchAll, mask,
                                               simt::detail::to_bits(value), 0, 32, file, line);
  *pred = r != 0;
  return r;
}
#define SIMT_WARP_REDUCE(NAME, OP, T)                                                              \
  inline T NAME(unsigned mask, T value, const char* file = __builtin_FILE(),                       \
                int line = __builtin_LINE()) {                                                     \
    return (T)simt::detail::warp_op(simt::detail::WarpOp::OP, mask, (uint64_t)(uint32_t)value, 0, \
                                    32, file, line);                                               \
  }
SIMT_WARP_REDUCE(__reduce_add_sync, ReduceAdd, unsigned)
SIMT_WARP_REDUCE(__reduce_add_sync, ReduceAdd, int)
SIMT_WARP_REDUCE(__reduce_min_sync, ReduceMin, unsigned)
SIMT_WARP_REDUCE(__reduce_min_sync, ReduceMinS, int)
SIMT_WARP_REDUCE(__reduce_max_sync, ReduceMax, unsigned)
SIMT_WARP_REDUCE(__reduce_max_sync, ReduceMaxS, int)
SIMT_WARP_REDUCE(__reduce_and_sync, ReduceAnd, unsigned)
SIMT_WARP_REDUCE(__reduce_or_sync, ReduceOr, unsigned)
SIMT_WARP_REDUCE(__reduce_xor_sync, ReduceXor, unsigned)
#undef SIMT_WARP_REDUCE
// The lanes of the caller's warp that have not exited. (simt has no notion of convergence, so
// inside a divergent branch this is NOT the set of lanes taking that branch, as on a GPU.)
inline unsigned __activemask() { return simt::detail::active_mask(); }

// Memory fences: fibers run one at a time on one host thread, so every write is visible.
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}
inline void __nanosleep(unsigned) {}
inline long long clock64() { return (long long)std::chrono::steady_clock::now().time_since_epoch().count(); }
[[noreturn]] inline void __trap() { simt::fail("__trap() called in a kernel"); }

// ---------------------------------------------------------------------------------------------
// Atomics: plain read-modify-write (only one fiber runs at a time and switches happen only at
// barriers and warp operations). The _block and _system scopes are the same thing here.
#define SIMT_ATOMIC2(NAME, T, EXPR) \
  inline T NAME(T* address, T val) { T old = *address; *address = (EXPR); return old; }
SIMT_ATOMIC2(atomicAdd, int, old + val)
SIMT_ATOMIC2(atomicAdd, unsigned int, old + val)
SIMT_ATOMIC2(atomicAdd, unsigned long long int, old + val)
SIMT_ATOMIC2(atomicAdd, float, old + val)
SIMT_ATOMIC2(atomicAdd, double, old + val)
SIMT_ATOMIC2(atomicAdd, __half, __float2half(__half2float(old) + __half2float(val)))
SIMT_ATOMIC2(atomicAdd, __nv_bfloat16, __float2bfloat16(__bfloat162float(old) + __bfloat162float(val)))
SIMT_ATOMIC2(atomicAdd, __half2, __floats2half2_rn(__low2float(old) + __low2float(val), __high2float(old) + __high2float(val)))
SIMT_ATOMIC2(atomicAdd, float2, make_float2(old.x + val.x, old.y + val.y))
SIMT_ATOMIC2(atomicAdd, float4, make_float4(old.x + val.x, old.y + val.y, old.z + val.z, old.w + val.w))
SIMT_ATOMIC2(atomicSub, int, old - val)
SIMT_ATOMIC2(atomicSub, unsigned int, old - val)
SIMT_ATOMIC2(atomicExch, int, val)
SIMT_ATOMIC2(atomicExch, unsigned int, val)
SIMT_ATOMIC2(atomicExch, unsigned long long int, val)
SIMT_ATOMIC2(atomicExch, float, val)
SIMT_ATOMIC2(atomicMin, int, val < old ? val : old)
SIMT_ATOMIC2(atomicMin, unsigned int, val < old ? val : old)
SIMT_ATOMIC2(atomicMin, long long int, val < old ? val : old)
SIMT_ATOMIC2(atomicMin, unsigned long long int, val < old ? val : old)
SIMT_ATOMIC2(atomicMax, int, val > old ? val : old)
SIMT_ATOMIC2(atomicMax, unsigned int, val > old ? val : old)
SIMT_ATOMIC2(atomicMax, long long int, val > old ? val : old)
SIMT_ATOMIC2(atomicMax, unsigned long long int, val > old ? val : old)
SIMT_ATOMIC2(atomicAnd, int, old & val)
SIMT_ATOMIC2(atomicAnd, unsigned int, old & val)
SIMT_ATOMIC2(atomicAnd, unsigned long long int, old & val)
SIMT_ATOMIC2(atomicOr, int, old | val)
SIMT_ATOMIC2(atomicOr, unsigned int, old | val)
SIMT_ATOMIC2(atomicOr, unsigned long long int, old | val)
SIMT_ATOMIC2(atomicXor, int, old ^ val)
SIMT_ATOMIC2(atomicXor, unsigned int, old ^ val)
SIMT_ATOMIC2(atomicXor, unsigned long long int, old ^ val)
// atomicInc: ((old >= val) ? 0 : (old + 1)); atomicDec: ((old == 0) || (old > val)) ? val : old - 1.
SIMT_ATOMIC2(atomicInc, unsigned int, old >= val ? 0u : old + 1u)
SIMT_ATOMIC2(atomicDec, unsigned int, (old == 0u || old > val) ? val : old - 1u)
#undef SIMT_ATOMIC2
#define SIMT_ATOMIC_CAS(T)                                     \
  inline T atomicCAS(T* address, T compare, T val) {           \
    T old = *address;                                          \
    if (old == compare) *address = val;                        \
    return old;                                                \
  }
SIMT_ATOMIC_CAS(int)
SIMT_ATOMIC_CAS(unsigned int)
SIMT_ATOMIC_CAS(unsigned long long int)
SIMT_ATOMIC_CAS(unsigned short int)
#undef SIMT_ATOMIC_CAS
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd
#define atomicSub_block atomicSub
#define atomicExch_block atomicExch
#define atomicMin_block atomicMin
#define atomicMax_block atomicMax
#define atomicCAS_block atomicCAS
#define atomicInc_block atomicInc
#define atomicAnd_block atomicAnd
#define atomicOr_block atomicOr
#define atomicXor_block atomicXor

// ---------------------------------------------------------------------------------------------
// Device math that NVIDIA's headers leave undeclared for host compilers. The fast intrinsics
// follow the GPU's documented construction (CUDA Math API, "Single Precision Intrinsics"; PTX
// ISA ex2/lg2/div.approx), so the error they add shows up here too:
//   __expf(x)   = 2^(x * log2(e)), the product rounded to float first: that rounding is the
//                 documented "2 + floor(|1.173 x|) ulp" growth with |x|; the GPU's ex2.approx
//                 adds up to 2 ulp on top, simt's exp2f is exact to within 1 ulp;
//   __exp10f(x) = 2^(x * log2(10)), the same way;
//   __logf(x)   = lg2(x) * ln(2), __log10f(x) = lg2(x) * log10(2), __powf(x, y) = 2^(y * lg2(x))
//                 (each product rounded to float, lg2 accurate here);
//   __fdividef(x, y) = x * (1/y), two roundings (documented: 2 ulp for 2^-126 <= |y| <= 2^126);
//                 for 2^126 < |y| the reciprocal flushes to 0, so the result is 0 for finite x
//                 and NaN for infinite x, as documented;
//   __tanf(x)   = __sinf(x) * (1 / __cosf(x)) (documented); __sinf/__cosf are the accurate
//                 functions (the GPU's sin.approx is only ~2^-21.4 absolutely accurate on
//                 [-pi, pi] and worse outside: no test may rely on better).
// glibc's <math.h> already declares __expf, __logf, __powf, ... (as unexported internal names):
// they are defined here with glibc's declaration (extern "C", noexcept).
extern "C" {
inline float __expf(float x) noexcept { return exp2f(x * 1.44269504088896341f); }
inline float __exp10f(float x) noexcept { return exp2f(x * 3.32192809488736235f); }
inline float __log2f(float x) noexcept { return log2f(x); }
inline float __logf(float x) noexcept { return log2f(x) * 0.693147180559945309f; }
inline float __log10f(float x) noexcept { return log2f(x) * 0.301029995663981195f; }
inline float __powf(float x, float y) noexcept { return exp2f(y * log2f(x)); }
inline float __sinf(float x) noexcept { return sinf(x); }
inline float __cosf(float x) noexcept { return cosf(x); }
inline float __tanf(float x) noexcept { return sinf(x) * (1.0f / cosf(x)); }
inline float __tanhf(float x) noexcept { return tanhf(x); }
inline void __sincosf(float x, float* s, float* c) noexcept { *s = sinf(x); *c = cosf(x); }
}
inline float __fdividef(float x, float y) {
  if (fabsf(y) > 0x1p126f) return x * copysignf(0.0f, y);  // rcp.approx(y) flushed to 0
  return x * (1.0f / y);
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline float fdividef(float a, float b) { return a / b; }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float __saturatef(float x) { return x != x ? 0.0f : x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
inline double normcdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752); }
inline float sinpif(float x) { return sinf(3.14159265358979323846f * x); }
inline float cospif(float x) { return cosf(3.14159265358979323846f * x); }
// Round-to-nearest-even arithmetic: the host FPU's default, so these are the plain operators.
#define SIMT_FOP(NAME, EXPR) \
  inline float NAME##_rn(float a, float b) { return EXPR; } \
  inline float NAME##_rz(float a, float b) { return EXPR; } \
  inline float NAME##_ru(float a, float b) { return EXPR; } \
  inline float NAME##_rd(float a, float b) { return EXPR; }
SIMT_FOP(__fadd, a + b)
SIMT_FOP(__fsub, a - b)
SIMT_FOP(__fmul, a * b)
SIMT_FOP(__fdiv, a / b)
#undef SIMT_FOP
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fmaf_rz(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fmaf_ieee_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double x) { return sqrt(x); }
inline double __drcp_rn(double x) { return 1.0 / x; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
// Float -> integer conversions are PTX cvt.rni/rzi/rpi/rmi.s32/u32/s64/u64: round in the named
// mode, then saturate to the destination's range, and NaN converts to 0 (a plain C++ cast of an
// out-of-range value is undefined and gives INT_MIN on x86). rn = round to nearest even
// (nearbyint under the default rounding mode), rz = truncate, ru = ceil, rd = floor.
namespace simt {
namespace detail {
template <class I, class F>
inline I cvt_sat(F r) {  // r: already rounded to an integral value
  if (r != r) return 0;
  if (r <= (F)std::numeric_limits<I>::min()) return std::numeric_limits<I>::min();
  if (r >= (F)std::numeric_limits<I>::max()) return std::numeric_limits<I>::max();
  return (I)r;
}
}  // namespace detail
}  // namespace simt
#define SIMT_CVT(FNAME, F, INAME, I)                                                                 \
  inline I __##FNAME##2##INAME##_rn(F x) { return simt::detail::cvt_sat<I>(std::nearbyint(x)); } \
  inline I __##FNAME##2##INAME##_rz(F x) { return simt::detail::cvt_sat<I>(std::trunc(x)); }     \
  inline I __##FNAME##2##INAME##_ru(F x) { return simt::detail::cvt_sat<I>(std::ceil(x)); }      \
  inline I __##FNAME##2##INAME##_rd(F x) { return simt::detail::cvt_sat<I>(std::floor(x)); }
SIMT_CVT(float, float, int, int)
SIMT_CVT(float, float, uint, unsigned)
SIMT_CVT(float, float, ll, long long)
SIMT_CVT(float, float, ull, unsigned long long)
SIMT_CVT(double, double, int, int)
SIMT_CVT(double, double, uint, unsigned)
SIMT_CVT(double, double, ll, long long)
SIMT_CVT(double, double, ull, unsigned long long)
#undef SIMT_CVT
inline float __double2float_rn(double x) { return (float)x; }
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline float __ll2float_rn(long long x) { return (float)x; }
inline float __ull2float_rn(unsigned long long x) { return (float)x; }
inline double __int2double_rn(int x) { return (double)x; }
inline int __float_as_int(float x) { int r; std::memcpy(&r, &x, 4); return r; }
inline unsigned __float_as_uint(float x) { unsigned r; std::memcpy(&r, &x, 4); return r; }
inline float __int_as_float(int x) { float r; std::memcpy(&r, &x, 4); return r; }
inline float __uint_as_float(unsigned x) { float r; std::memcpy(&r, &x, 4); return r; }
inline long long __double_as_longlong(double x) { long long r; std::memcpy(&r, &x, 8); return r; }
inline double __longlong_as_double(long long x) { double r; std::memcpy(&r, &x, 8); return r; }
// Integer intrinsics.
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  return __builtin_bswap32(x);
}
inline int __mul24(int a, int b) { return (int)((long long)(a << 8 >> 8) * (b << 8 >> 8)); }
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xFFFFFFu) * (b & 0xFFFFFFu); }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
  unsigned long long v = ((unsigned long long)hi << 32) | lo;
  return (unsigned)((v << (shift & 31)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
  unsigned long long v = ((unsigned long long)hi << 32) | lo;
  return (unsigned)(v >> (shift & 31));
}
inline unsigned __sad(int a, int b, unsigned c) { return (unsigned)(a > b ? a - b : b - a) + c; }
inline unsigned __usad(unsigned a, unsigned b, unsigned c) { return (a > b ? a - b : b - a) + c; }
inline int __hadd(int a, int b) { return (int)(((long long)a + b) >> 1); }
inline int __rhadd(int a, int b) { return (int)(((long long)a + b + 1) >> 1); }
inline unsigned __uhadd(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a + b) >> 1); }
inline unsigned __urhadd(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a + b + 1) >> 1); }
// __byte_perm(x, y, s): result byte i is byte ((s >> 4i) & 7) of the 8-byte value {y, x} (x the
// low four bytes), PTX prmt's default mode.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const unsigned long long v = ((unsigned long long)y << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
  return r;
}
// Read-only / cache-hinted loads and stores.
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline T __ldcv(const T* p) { return *p; }
template <class T> inline void __stwb(T* p, T v) { *p = v; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }

// min/max: CUDA's overload set (crt/math_functions.hpp), so overload resolution, ambiguities
// included, is the same under g++ as under nvcc.
#define SIMT_MINMAX(R, A, B)                                     \
  inline R min(const A a, const B b) { return (R)a < (R)b ? (R)a : (R)b; } \
  inline R max(const A a, const B b) { return (R)a > (R)b ? (R)a : (R)b; }
SIMT_MINMAX(int, int, int)
SIMT_MINMAX(unsigned int, unsigned int, unsigned int)
SIMT_MINMAX(unsigned int, int, unsigned int)
SIMT_MINMAX(unsigned int, unsigned int, int)
SIMT_MINMAX(long int, long int, long int)
SIMT_MINMAX(unsigned long int, unsigned long int, unsigned long int)
SIMT_MINMAX(unsigned long int, long int, unsigned long int)
SIMT_MINMAX(unsigned long int, unsigned long int, long int)
SIMT_MINMAX(long long int, long long int, long long int)
SIMT_MINMAX(unsigned long long int, unsigned long long int, unsigned long long int)
SIMT_MINMAX(unsigned long long int, long long int, unsigned long long int)
SIMT_MINMAX(unsigned long long int, unsigned long long int, long long int)
#undef SIMT_MINMAX
inline float min(const float a, const float b) { return fminf(a, b); }
inline float max(const float a, const float b) { return fmaxf(a, b); }
inline double min(const double a, const double b) { return fmin(a, b); }
inline double max(const double a, const double b) { return fmax(a, b); }
inline double min(const float a, const double b) { return fmin((double)a, b); }
inline double max(const float a, const double b) { return fmax((double)a, b); }
inline double min(const double a, const float b) { return fmin(a, (double)b); }
inline double max(const double a, const float b) { return fmax(a, (double)b); }

// __half / __nv_bfloat16 functions that cuda_fp16.hpp / cuda_bf16.hpp define only for the
// device (most arithmetic and conversions work host-side already). Computed in float and
// rounded once, which is what the GPU's float-emulated paths do too.
namespace simt {
namespace detail {
// a * b + c rounded once, for half/bfloat16 operands: the product of two 11- (8-) bit
// significands is exact in double; the sum is rounded to odd (TwoSum tells whether it was
// exact), then to float, again to odd. Rounding to odd at p bits and then to nearest at q <= p - 2
// bits equals rounding the exact value to nearest once, so the caller's float -> half (bfloat16)
// rounding is the single rounding of fma.rn.f16 (.bf16). Rounding a*b + c to float first and
// then to half, as a plain fmaf would, rounds twice and is wrong near ties.
inline float fma_round_odd(float a, float b, float c) {
  const double p = (double)a * (double)b, q = (double)c;
  double s = p + q;
  const double bb = s - p, err = (p - (s - bb)) + (q - bb);
  if (err != 0 && std::isfinite(s)) {
    uint64_t bits;
    std::memcpy(&bits, &s, 8);
    if (!(bits & 1)) s = std::nextafter(s, err > 0 ? INFINITY : -INFINITY);
  }
  float f = (float)s;
  if ((double)f != s && std::isfinite(f)) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if (!(bits & 1)) f = std::nextafterf(f, s > (double)f ? INFINITY : -INFINITY);
  }
  return f;
}
}  // namespace detail
}  // namespace simt
#define SIMT_H1(T, TO, FROM, NAME, EXPR) \
  inline T NAME(const T h) { const float x = FROM(h); return TO(EXPR); }
#define SIMT_HMATH(T, TO, FROM)                                                          \
  SIMT_H1(T, TO, FROM, hexp, expf(x))                                                    \
  SIMT_H1(T, TO, FROM, hexp2, exp2f(x))                                                  \
  SIMT_H1(T, TO, FROM, hexp10, exp10f(x))                                                \
  SIMT_H1(T, TO, FROM, hlog, logf(x))                                                    \
  SIMT_H1(T, TO, FROM, hlog2, log2f(x))                                                  \
  SIMT_H1(T, TO, FROM, hlog10, log10f(x))                                                \
  SIMT_H1(T, TO, FROM, hsqrt, sqrtf(x))                                                  \
  SIMT_H1(T, TO, FROM, hrsqrt, 1.0f / sqrtf(x))                                          \
  SIMT_H1(T, TO, FROM, hrcp, 1.0f / x)                                                   \
  SIMT_H1(T, TO, FROM, htanh, tanhf(x))                                                  \
  SIMT_H1(T, TO, FROM, hsin, sinf(x))                                                    \
  SIMT_H1(T, TO, FROM, hcos, cosf(x))                                                    \
  inline T __hfma(const T a, const T b, const T c) {                                     \
    return TO(simt::detail::fma_round_odd(FROM(a), FROM(b), FROM(c)));                   \
  }                                                                                      \
  inline T __hfma_relu(const T a, const T b, const T c) {                                \
    float r = simt::detail::fma_round_odd(FROM(a), FROM(b), FROM(c));                    \
    return TO(r != r ? r : r < 0.0f ? 0.0f : r);                                         \
  }
SIMT_HMATH(__half, __float2half, __half2float)
SIMT_HMATH(__nv_bfloat16, __float2bfloat16, __bfloat162float)
#undef SIMT_HMATH
#undef SIMT_H1
#define SIMT_H2MATH(T2, T, NAME1, NAME2)                                                  \
  inline T2 NAME2(const T2 h) {                                                          \
    T2 r;                                                                                \
    r.x = NAME1(h.x);                                                                    \
    r.y = NAME1(h.y);                                                                    \
    return r;                                                                            \
  }
SIMT_H2MATH(__half2, __half, hexp, h2exp)
SIMT_H2MATH(__half2, __half, hlog, h2log)
SIMT_H2MATH(__half2, __half, hsqrt, h2sqrt)
SIMT_H2MATH(__half2, __half, hrsqrt, h2rsqrt)
SIMT_H2MATH(__half2, __half, hrcp, h2rcp)
SIMT_H2MATH(__nv_bfloat162, __nv_bfloat16, hexp, h2exp)
SIMT_H2MATH(__nv_bfloat162, __nv_bfloat16, hlog, h2log)
SIMT_H2MATH(__nv_bfloat162, __nv_bfloat16, hsqrt, h2sqrt)
SIMT_H2MATH(__nv_bfloat162, __nv_bfloat16, hrsqrt, h2rsqrt)
SIMT_H2MATH(__nv_bfloat162, __nv_bfloat16, hrcp, h2rcp)
#undef SIMT_H2MATH
inline __half2 __hfma2(const __half2 a, const __half2 b, const __half2 c) {
  __half2 r;
  r.x = __hfma(a.x, b.x, c.x);
  r.y = __hfma(a.y, b.y, c.y);
  return r;
}
inline __nv_bfloat162 __hfma2(const __nv_bfloat162 a, const __nv_bfloat162 b,
                              const __nv_bfloat162 c) {
  __nv_bfloat162 r;
  r.x = __hfma(a.x, b.x, c.x);
  r.y = __hfma(a.y, b.y, c.y);
  return r;
}
inline int __half2int_rn(const __half h) { return __float2int_rn(__half2float(h)); }

// Host-side templates that cuda_runtime.h declares only for nvcc.
template <class T>
inline cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(entry), attr, value);
}
template <class T>
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, T* entry) {
  return ::cudaFuncGetAttributes(attr, reinterpret_cast<const void*>(entry));
}
template <class T>
inline cudaError_t cudaMemcpyToSymbol(const T& symbol, const void* src, size_t count,
                                      size_t offset = 0,
                                      cudaMemcpyKind kind = cudaMemcpyHostToDevice) {
  if (offset + count > sizeof(T))
    simt::fail("cudaMemcpyToSymbol: %zu bytes at offset %zu overrun the %zu-byte symbol", count,
               offset, sizeof(T));
  return ::cudaMemcpyToSymbol((const void*)&symbol, src, count, offset, kind);
}
template <class T>
inline cudaError_t cudaMemcpyToSymbolAsync(const T& symbol, const void* src, size_t count,
                                           size_t offset = 0,
                                           cudaMemcpyKind kind = cudaMemcpyHostToDevice,
                                           cudaStream_t stream = 0) {
  return ::cudaMemcpyToSymbolAsync((const void*)&symbol, src, count, offset, kind, stream);
}
template <class T>
inline cudaError_t cudaMemcpyFromSymbol(void* dst, const T& symbol, size_t count,
                                        size_t offset = 0,
                                        cudaMemcpyKind kind = cudaMemcpyDeviceToHost) {
  if (offset + count > sizeof(T))
    simt::fail("cudaMemcpyFromSymbol: %zu bytes at offset %zu overrun the %zu-byte symbol", count,
               offset, sizeof(T));
  return ::cudaMemcpyFromSymbol(dst, (const void*)&symbol, count, offset, kind);
}
template <class T>
inline cudaError_t cudaGetSymbolAddress(void** devPtr, const T& symbol) {
  simt::detail::register_symbol(&symbol, sizeof(T));
  return ::cudaGetSymbolAddress(devPtr, (const void*)&symbol);
}
