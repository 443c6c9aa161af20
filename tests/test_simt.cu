// tests/test_simt.cu — the CPU executor (simt/) proves what the rest of the test suite relies on:
// barriers and warp intrinsics with CUDA's semantics, shared memory per block, atomics, the
// runtime calls, cuBLAS's column-major GEMMs, and that bugs are loud (missing barrier, divergent
// barrier, warp-op deadlock, out-of-bounds writes, bad launch configurations).
//
// Built twice: by g++ against simt (build/test_simt, always runs) and by nvcc (build/test_gpu,
// runs on a GPU when there is one). Checks of simt-only behaviour (thread order, 0xFF fills,
// aborts) are under #if defined(VIT_SIMT).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

#include "kernels/common.cuh"
#include "tests/test_util.h"

namespace {

// ---------------------------------------------------------------------------------------------
// Helpers.

// A device buffer of n T's, freed at scope exit.
template <class T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) { CUDA_CHECK(cudaMalloc(&p, n * sizeof(T))); }
  DevBuf(const std::vector<T>& h) : DevBuf(h.size()) { upload(h); }
  ~DevBuf() { CUDA_CHECK(cudaFree(p)); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void upload(const std::vector<T>& h) {
    CUDA_CHECK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  void zero() { CUDA_CHECK(cudaMemset(p, 0, n * sizeof(T))); }
};

// A launch without LAUNCH's error check, so a test can look at cudaGetLastError itself.
#if defined(VIT_SIMT)
#define RAW_LAUNCH(kernel, grid, block, smem, ...) \
  simt::launch_kernel(#kernel, __FILE__, __LINE__, kernel, dim3(grid), dim3(block), smem, 0, __VA_ARGS__)
#else
#define RAW_LAUNCH(kernel, grid, block, smem, ...) kernel<<<grid, block, smem>>>(__VA_ARGS__)
#endif

#if defined(VIT_SIMT)
// Restores the thread order in effect at construction (SIMT_ORDER's, or forward).
struct OrderGuard {
  simt::Order order = simt::thread_order();
  uint64_t seed = simt::thread_order_seed();
  ~OrderGuard() { simt::set_thread_order(order, seed); }
};
// Runs f under each thread order (forward, reverse, two shuffles).
void for_each_simt_order(const std::function<void(const char*)>& f) {
#if defined(SIMT_RACE)
  f("race mode");  // TSan finds unordered accesses whatever the order
  return;
#endif
  OrderGuard restore;
  simt::set_thread_order(simt::Order::Forward);
  f("forward");
  simt::set_thread_order(simt::Order::Reverse);
  f("reverse");
  simt::set_thread_order(simt::Order::Shuffle, 1);
  f("shuffle:1");
  simt::set_thread_order(simt::Order::Shuffle, 12345);
  f("shuffle:12345");
}
#else
void for_each_simt_order(const std::function<void(const char*)>& f) { f("gpu"); }
#endif

// ---------------------------------------------------------------------------------------------
// Block reduction: warp shuffles, then shared memory across warps. Handles any block size,
// including a partial last warp (its shuffles name only the lanes that exist).
template <bool kBarrier>
__global__ void block_sum_kernel(const float* x, float* out, int n) {
  __shared__ float warp_sums[32];
  const unsigned tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const unsigned nwarps = (blockDim.x + 31) / 32;
  const unsigned lanes = min(32u, blockDim.x - warp * 32);  // lanes of this warp that exist
  const unsigned mask = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
  float v = 0.0f;
  for (int i = blockIdx.x * blockDim.x + tid; i < n; i += gridDim.x * blockDim.x) v += x[i];
  for (unsigned off = 16; off > 0; off >>= 1) {
    float o = __shfl_down_sync(mask, v, off);
    if (lane + off < lanes) v += o;
  }
  if (lane == 0) warp_sums[warp] = v;
  if (kBarrier) __syncthreads();
  if (tid == blockDim.x - 1) {  // the last thread adds up the warps' sums
    float s = 0.0f;
    for (unsigned w = 0; w < nwarps; ++w) s += warp_sums[w];
    atomicAdd(out, s);
  }
}

// Small integers: every partial sum is exact in float, so the result must be exact.
std::vector<float> exact_values(int n) {
  std::vector<float> x(n);
  for (int i = 0; i < n; ++i) x[i] = (float)(i % 13 - 6) + (i % 3 == 0 ? 100.0f : 0.0f);
  return x;
}

template <bool kBarrier>
float run_block_sum(const std::vector<float>& x, int grid, int block) {
  DevBuf<float> dx(x), out(1);
  out.zero();
  LAUNCH((block_sum_kernel<kBarrier>), grid, block, 0, 0, dx.p, out.p, (int)x.size());
  return out.download()[0];
}

TEST(SimtReduce, ExactSumForSeveralBlockSizesAndOrders) {
  VIT_REQUIRE_GPU();
  const int n = 5000;
  std::vector<float> x = exact_values(n);
  const float expect = std::accumulate(x.begin(), x.end(), 0.0f);
  ASSERT_EQ(expect, (float)std::accumulate(x.begin(), x.end(), 0.0));  // exact in float
  for_each_simt_order([&](const char* order) {
    for (int block : {1, 7, 32, 33, 64, 100, 256, 1000, 1024})
      for (int grid : {1, 3}) {
        EXPECT_EQ(run_block_sum<true>(x, grid, block), expect)
            << "order " << order << " block " << block << " grid " << grid;
      }
  });
}

// (Not in race mode: these kernels race on purpose, and ThreadSanitizer rightly says so.)
#if defined(VIT_SIMT) && !defined(SIMT_RACE)
// Without the __syncthreads between writing warp_sums and reading them, the last thread reads
// slots other warps have not written yet: simt's reverse and shuffled orders make it wrong.
TEST(SimtReduce, MissingBarrierGivesWrongResultUnderReverseAndShuffle) {
  const int n = 4096;
  std::vector<float> x = exact_values(n);
  const float expect = std::accumulate(x.begin(), x.end(), 0.0f);
  OrderGuard restore;
  simt::set_thread_order(simt::Order::Forward);
  EXPECT_EQ(run_block_sum<true>(x, 2, 256), expect);
  simt::set_thread_order(simt::Order::Reverse);
  EXPECT_EQ(run_block_sum<true>(x, 2, 256), expect);
  float r = run_block_sum<false>(x, 2, 256);
  EXPECT_FALSE(r == expect) << "reverse order, missing barrier, got " << r;
  simt::set_thread_order(simt::Order::Shuffle, 7);
  r = run_block_sum<false>(x, 2, 256);
  EXPECT_FALSE(r == expect) << "shuffled order, missing barrier, got " << r;
}
#endif

// The same reduction with __syncwarp where __syncthreads belongs. The CUDA programming guide:
// __syncwarp "will cause the executing thread to wait until all warp lanes named in mask have
// executed a __syncwarp()" and guarantees memory ordering "among threads participating in the
// barrier" only; other warps keep running independently, so the last warp may read warp_sums
// before the other warps have written them. Under simt, warps run independently between
// __syncthreads: in reverse order the last warp runs through its warp ops and its read before
// warp 0 starts, so it reads the 0xFF (NaN) fill. (Before warps were independent, every warp op
// acted as a block barrier and this passed under every order.)
__global__ void syncwarp_instead_of_syncthreads_kernel(const float* x, float* out) {
  __shared__ float warp_sums[32];
  const unsigned tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  float v = x[blockIdx.x * blockDim.x + tid];
  for (unsigned off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  if (lane == 0) warp_sums[warp] = v;
  __syncwarp();  // the bug: orders only this warp's lanes
  if (tid == blockDim.x - 1) {
    float s = 0.0f;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) s += warp_sums[w];
    out[blockIdx.x] = s;
  }
}

// A shared buffer rewritten without a barrier after another warp read it, with a warp op between
// the read and the rewrite (the "rewrite" shape of a missing __syncthreads): each warp reads its
// neighbour warp's slot, shuffles, then overwrites its own slot. The neighbour may already have
// overwritten the slot being read: wrong under forward order (warp 0 runs to its end first).
__global__ void rewrite_after_warp_op_kernel(float* out) {
  __shared__ float slot[32];
  const unsigned tid = threadIdx.x, lane = tid % 32, warp = tid / 32, nw = blockDim.x / 32;
  if (lane == 0) slot[warp] = (float)warp;
  __syncthreads();
  float mine = slot[(warp + 1) % nw];                          // the next warp's slot
  mine = __shfl_sync(0xffffffffu, mine, 0);                    // a warp op in between
  if (lane == 0) slot[warp] = 100.0f + (float)warp;           // missing __syncthreads before it
  if (lane == 0) out[warp] = mine;
}

#if defined(VIT_SIMT) && !defined(SIMT_RACE)  // racy on purpose (see above)
TEST(SimtIndependentWarps, SyncwarpInPlaceOfSyncthreadsIsCaught) {
  const int block = 256, grid = 2;
  std::vector<float> x(grid * block);
  for (size_t i = 0; i < x.size(); ++i) x[i] = (float)(i % 7);
  std::vector<float> expect(grid, 0.0f);
  for (size_t i = 0; i < x.size(); ++i) expect[i / block] += x[i];
  OrderGuard restore;
  int wrong = 0;
  for (simt::Order o : {simt::Order::Forward, simt::Order::Reverse}) {
    simt::set_thread_order(o);
    DevBuf<float> dx(x), out(grid);
    LAUNCH(syncwarp_instead_of_syncthreads_kernel, grid, block, 0, 0, dx.p, out.p);
    std::vector<float> h = out.download();
    for (int b = 0; b < grid; ++b) wrong += !(h[b] == expect[b]);
    if (o == simt::Order::Reverse) {
      EXPECT_TRUE(std::isnan(h[0])) << "reverse order read " << h[0];
    }
  }
  EXPECT_GT(wrong, 0) << "the missing __syncthreads went unnoticed under forward and reverse";
}

TEST(SimtIndependentWarps, RewriteAfterCrossWarpReadIsCaught) {
  OrderGuard restore;
  int wrong = 0;
  for (simt::Order o : {simt::Order::Forward, simt::Order::Reverse}) {
    simt::set_thread_order(o);
    DevBuf<float> out(4);
    LAUNCH(rewrite_after_warp_op_kernel, 1, 128, 0, 0, out.p);
    std::vector<float> h = out.download();
    for (int w = 0; w < 4; ++w) wrong += h[w] != (float)((w + 1) % 4);
  }
  EXPECT_GT(wrong, 0) << "the missing __syncthreads went unnoticed under forward and reverse";
}

// Forward order runs warp 0 through all its warp ops before warp 1 starts (and reverse the
// opposite); shuffle interleaves warps. Each warp records the global step at which it passes
// each of its warp ops.
__global__ void warp_progress_kernel(int* trace) {
  __shared__ int clock;
  if (threadIdx.x == 0) clock = 0;
  __syncthreads();
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int k = 0; k < 3; ++k) {
    __syncwarp();
    if (lane == 0) trace[warp * 3 + k] = clock++;  // (plain increment: one fiber runs at a time)
  }
}
TEST(SimtIndependentWarps, WarpsRunToTheNextBarrierInForwardAndReverseOrder) {
  OrderGuard restore;
  simt::set_thread_order(simt::Order::Forward);
  DevBuf<int> trace(12);
  LAUNCH(warp_progress_kernel, 1, 128, 0, 0, trace.p);
  std::vector<int> h = trace.download();
  for (int i = 0; i < 12; ++i) EXPECT_EQ(h[i], i) << "forward, warp " << i / 3 << " op " << i % 3;
  simt::set_thread_order(simt::Order::Reverse);
  LAUNCH(warp_progress_kernel, 1, 128, 0, 0, trace.p);
  h = trace.download();
  for (int i = 0; i < 12; ++i) EXPECT_EQ(h[i], (3 - i / 3) * 3 + i % 3) << "reverse, warp " << i / 3;
  // Shuffle: some seed interleaves two warps (a warp's ops are not consecutive steps).
  bool interleaved = false;
  for (uint64_t seed = 1; seed <= 8 && !interleaved; ++seed) {
    simt::set_thread_order(simt::Order::Shuffle, seed);
    LAUNCH(warp_progress_kernel, 1, 128, 0, 0, trace.p);
    h = trace.download();
    for (int w = 0; w < 4; ++w) interleaved |= h[w * 3 + 2] - h[w * 3] != 2;
  }
  EXPECT_TRUE(interleaved);
}
#endif

// ---------------------------------------------------------------------------------------------
// Exited threads (sm_70+): they no longer count for __syncthreads, and warp ops whose mask names
// them (or lanes past a partial last warp) proceed with the lanes that remain: the vote
// functions "evaluate predicate for all non-exited threads in mask" (CUDA programming guide).
__global__ void barrier_after_exit_kernel(int* out) {
  const int t = threadIdx.x;
  if (t % 3 == 1) return;  // a third of the block leaves before the barriers
  out[t] = 1;
  const int n = __syncthreads_count(1);
  const int all = __syncthreads_and(t != 42);
  __syncthreads();
  out[96 + t] = out[(t + 3) % 96] * 1000 + n * 10 + all;  // a neighbour's write: the barrier worked
}
TEST(SimtExit, SyncthreadsAfterSomeThreadsReturned) {
  VIT_REQUIRE_GPU();
  vit_test::for_each_thread_order([](const char* order) {
    DevBuf<int> out(2 * 96);
    out.zero();
    LAUNCH(barrier_after_exit_kernel, 1, 96, 0, 0, out.p);
    std::vector<int> h = out.download();
    for (int t = 0; t < 96; ++t) {
      // 64 threads stay; thread 42 is one of them, so __syncthreads_and is 0.
      const int expect = t % 3 == 1 ? 0 : 1 * 1000 + 64 * 10 + 0;
      EXPECT_EQ(h[96 + t], expect) << "thread " << t << " order " << order;
    }
  });
}

__global__ void warp_ops_with_exited_lanes_kernel(unsigned* out) {
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (warp == 0 && (lane == 5 || lane == 20)) return;
  const unsigned base = threadIdx.x * 4;
  out[base + 0] = __ballot_sync(0xffffffffu, 1);
  out[base + 1] = (unsigned)__all_sync(0xffffffffu, 1);
  out[base + 2] = __shfl_xor_sync(0xffffffffu, 1000u + lane, 2);
  __syncwarp();
  out[base + 3] = __reduce_add_sync(0xffffffffu, 1u);
}
TEST(SimtExit, FullMaskWarpOpsSkipExitedAndMissingLanes) {
  VIT_REQUIRE_GPU();
  vit_test::for_each_thread_order([](const char* order) {
    const int n = 48;  // warp 1 has only 16 lanes
    DevBuf<unsigned> out(n * 4);
    out.zero();
    LAUNCH(warp_ops_with_exited_lanes_kernel, 1, n, 0, 0, out.p);
    std::vector<unsigned> h = out.download();
    for (int t = 0; t < n; ++t) {
      const unsigned lane = t % 32, warp = t / 32;
      if (warp == 0 && (lane == 5 || lane == 20)) continue;
      const unsigned live = warp == 0 ? ~((1u << 5) | (1u << 20)) : 0xffffu;
      EXPECT_EQ(h[t * 4 + 0], live) << "ballot, thread " << t << " " << order;
      EXPECT_EQ(h[t * 4 + 1], 1u) << "all, thread " << t << " " << order;
      const unsigned src = lane ^ 2;
      if (live >> src & 1) {
        EXPECT_EQ(h[t * 4 + 2], 1000u + src) << "shfl, thread " << t << " " << order;
      }
      EXPECT_EQ(h[t * 4 + 3], (unsigned)__builtin_popcount(live)) << "reduce, thread " << t << " " << order;
    }
  });
}

// The last thread of the block returns while every other thread waits at a barrier, and the
// last lane of each warp returns while the others wait at a vote: its exit completes both (in
// forward order simt runs it last, so the exit is what releases the others).
__global__ void exit_completes_kernel(unsigned* out) {
  const unsigned lane = threadIdx.x % 32;
  if (threadIdx.x == blockDim.x - 1) return;
  __syncthreads();
  if (lane == 31) return;
  out[threadIdx.x] = __ballot_sync(0xffffffffu, lane % 2);
}
TEST(SimtExit, TheLastThreadsExitCompletesBarrierAndWarpOp) {
  VIT_REQUIRE_GPU();
  vit_test::for_each_thread_order([](const char* order) {
    DevBuf<unsigned> out(64);
    out.zero();
    LAUNCH(exit_completes_kernel, 1, 64, 0, 0, out.p);
    std::vector<unsigned> h = out.download();
    for (int t = 0; t < 64; ++t) {
      const unsigned expect = t % 32 == 31 ? 0u : 0x2aaaaaaau;  // odd lanes 1..29 (31 exited)
      EXPECT_EQ(h[t], expect) << "thread " << t << " order " << order;
    }
  });
}

// __activemask(): the lanes executing the same code path; exited lanes are never in it.
__global__ void activemask_kernel(unsigned* out) {
  const unsigned lane = threadIdx.x % 32;
  if (lane == 3) return;
  unsigned m;
  if (lane % 2) m = __activemask();
  else m = __activemask();
  out[lane] = m;
}
TEST(SimtExit, ActivemaskReflectsDivergenceAndExits) {
  VIT_REQUIRE_GPU();
  vit_test::for_each_thread_order([](const char* order) {
    DevBuf<unsigned> out(32);
    out.zero();
    LAUNCH(activemask_kernel, 1, 32, 0, 0, out.p);
    std::vector<unsigned> h = out.download();
    const unsigned odd = 0xaaaaaaaau & ~(1u << 3), even = 0x55555555u;
    for (unsigned l = 0; l < 32; ++l) {
      if (l == 3) continue;
      const unsigned path = l % 2 ? odd : even;
      // The guide promises the caller's own bit and no exited or other-path lane; simt gives
      // exactly the lanes of the path.
      EXPECT_TRUE(h[l] >> l & 1) << l << " " << order;
      EXPECT_EQ(h[l] & ~path, 0u) << l << " " << order;
#if defined(VIT_SIMT)
      EXPECT_EQ(h[l], path) << l << " " << order;
#endif
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Barriers with a value.
__global__ void syncthreads_variants_kernel(int* out) {
  const int t = threadIdx.x;
  out[0 * 64 + t] = __syncthreads_count(t % 3 == 0);
  out[1 * 64 + t] = __syncthreads_and(t < 64);
  out[2 * 64 + t] = __syncthreads_and(t != 17);
  out[3 * 64 + t] = __syncthreads_or(t == 40);
  out[4 * 64 + t] = __syncthreads_or(0);
}

TEST(SimtBarrier, CountAndOr) {
  VIT_REQUIRE_GPU();
  vit_test::for_each_thread_order([](const char* order) {
    DevBuf<int> out(5 * 64);
    LAUNCH(syncthreads_variants_kernel, 1, 64, 0, 0, out.p);
    std::vector<int> h = out.download();
    for (int t = 0; t < 64; ++t) {
      EXPECT_EQ(h[0 * 64 + t], 22) << order;  // multiples of 3 in [0, 64)
      EXPECT_EQ(h[1 * 64 + t], 1) << order;
      EXPECT_EQ(h[2 * 64 + t], 0) << order;
      EXPECT_EQ(h[3 * 64 + t], 1) << order;
      EXPECT_EQ(h[4 * 64 + t], 0) << order;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Built-in variables in 3-D grids and blocks; per-thread copies of the kernel arguments.
__global__ void builtins_kernel(int* out, int base) {
  const int tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int bid = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int nthreads = blockDim.x * blockDim.y * blockDim.z;
  base += tid;  // each thread modifies its own copy of the argument
  __syncthreads();
  int* o = out + 8 * (bid * nthreads + tid);
  o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
  o[3] = blockIdx.x; o[4] = blockIdx.y; o[5] = blockIdx.z;
  o[6] = base;
  o[7] = gridDim.x * 10000 + gridDim.y * 1000 + gridDim.z * 100 + blockDim.x * 10 + warpSize;
}

TEST(SimtBuiltins, ThreeDimensionalIndicesAndPerThreadArguments) {
  VIT_REQUIRE_GPU();
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const int nb = 12, nt = 24;
  DevBuf<int> out(8 * nb * nt);
  LAUNCH(builtins_kernel, grid, block, 0, 0, out.p, 1000);
  std::vector<int> h = out.download();
  for (int bz = 0; bz < 2; ++bz)
    for (int by = 0; by < 2; ++by)
      for (int bx = 0; bx < 3; ++bx)
        for (int tz = 0; tz < 2; ++tz)
          for (int ty = 0; ty < 3; ++ty)
            for (int tx = 0; tx < 4; ++tx) {
              const int tid = tx + 4 * (ty + 3 * tz), bid = bx + 3 * (by + 2 * bz);
              const int* o = &h[8 * (bid * nt + tid)];
              EXPECT_EQ(o[0], tx); EXPECT_EQ(o[1], ty); EXPECT_EQ(o[2], tz);
              EXPECT_EQ(o[3], bx); EXPECT_EQ(o[4], by); EXPECT_EQ(o[5], bz);
              EXPECT_EQ(o[6], 1000 + tid);
              EXPECT_EQ(o[7], 30000 + 2000 + 200 + 40 + 32);
            }
}

// ---------------------------------------------------------------------------------------------
// Warp intrinsics against hand-computed expectations.
constexpr int kShflTests = 20;
__global__ void warp_ops_kernel(int* out) {
  const int lane = threadIdx.x;
  const int v = lane * 10 + 1;
  int* o = out + lane;
  o[0 * 32] = __shfl_sync(0xffffffffu, v, 3);
  o[1 * 32] = __shfl_sync(0xffffffffu, v, lane + 1, 8);
  o[2 * 32] = __shfl_up_sync(0xffffffffu, v, 2);
  o[3 * 32] = __shfl_up_sync(0xffffffffu, v, 1, 16);
  o[4 * 32] = __shfl_down_sync(0xffffffffu, v, 3);
  o[5 * 32] = __shfl_down_sync(0xffffffffu, v, 2, 4);
  o[6 * 32] = __shfl_xor_sync(0xffffffffu, v, 5);
  o[7 * 32] = __shfl_xor_sync(0xffffffffu, v, 4, 4);
  o[8 * 32] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
  o[9 * 32] = __any_sync(0xffffffffu, lane == 17);
  o[10 * 32] = __any_sync(0xffffffffu, 0);
  o[11 * 32] = __all_sync(0xffffffffu, lane < 31);
  o[12 * 32] = __all_sync(0xffffffffu, lane < 32);
  // Partial masks: even and odd lanes form two independent groups at the same time.
  if (lane % 2 == 0) {
    o[13 * 32] = __shfl_xor_sync(0x55555555u, v, 2);
    o[14 * 32] = (int)__ballot_sync(0x55555555u, lane >= 16);
    o[15 * 32] = __shfl_sync(0x55555555u, v, 6);
  } else {
    o[13 * 32] = __shfl_down_sync(0xaaaaaaaau, v, 2);
    o[14 * 32] = __any_sync(0xaaaaaaaau, lane == 7);
    o[15 * 32] = __all_sync(0xaaaaaaaau, lane != 7);
  }
  // The lower half only (the upper half skips it).
  if (lane < 16) o[16 * 32] = __shfl_up_sync(0x0000ffffu, v, 4);
  else o[16 * 32] = -5;
  __syncwarp();
  o[17 * 32] = (int)__match_any_sync(0xffffffffu, lane / 8);
  o[18 * 32] = (int)__reduce_add_sync(0xffffffffu, (unsigned)lane);
  o[19 * 32] = __reduce_max_sync(0xffffffffu, lane == 9 ? 1000 : -lane);
}

TEST(SimtWarp, ShuffleBallotVoteMatchReduce) {
  VIT_REQUIRE_GPU();
  auto val = [](int lane) { return lane * 10 + 1; };
  std::vector<int> e(kShflTests * 32);
  for (int l = 0; l < 32; ++l) {
    e[0 * 32 + l] = val(3);
    e[1 * 32 + l] = val((l & ~7) | ((l + 1) & 7));            // wraps inside segments of 8
    e[2 * 32 + l] = l < 2 ? val(l) : val(l - 2);              // no source below lane 0: own
    e[3 * 32 + l] = l % 16 < 1 ? val(l) : val(l - 1);         // no crossing of 16-lane segments
    e[4 * 32 + l] = l + 3 > 31 ? val(l) : val(l + 3);
    e[5 * 32 + l] = l % 4 + 2 >= 4 ? val(l) : val(l + 2);
    e[6 * 32 + l] = val(l ^ 5);
    e[7 * 32 + l] = (l & 4) ? val(l ^ 4) : val(l);  // width 4: a later segment is out of reach
    unsigned ballot = 0;
    for (int k = 0; k < 32; k += 3) ballot |= 1u << k;
    e[8 * 32 + l] = (int)ballot;
    e[9 * 32 + l] = 1;
    e[10 * 32 + l] = 0;
    e[11 * 32 + l] = 0;
    e[12 * 32 + l] = 1;
    if (l % 2 == 0) {
      e[13 * 32 + l] = val(l ^ 2);
      e[14 * 32 + l] = (int)0x55550000u;
      e[15 * 32 + l] = val(6);
    } else {
      e[13 * 32 + l] = l + 2 > 31 ? val(l) : val(l + 2);
      e[14 * 32 + l] = 1;
      e[15 * 32 + l] = 0;
    }
    e[16 * 32 + l] = l >= 16 ? -5 : l < 4 ? val(l) : val(l - 4);
    e[17 * 32 + l] = (int)(0xffu << (8 * (l / 8)));
    e[18 * 32 + l] = 31 * 32 / 2;
    e[19 * 32 + l] = 1000;
  }
  vit_test::for_each_thread_order([&](const char* order) {
    DevBuf<int> out(kShflTests * 32);
    LAUNCH(warp_ops_kernel, 1, 32, 0, 0, out.p);
    std::vector<int> h = out.download();
    for (int t = 0; t < kShflTests; ++t)
      for (int l = 0; l < 32; ++l)
        EXPECT_EQ(h[t * 32 + l], e[t * 32 + l]) << "case " << t << " lane " << l << " order " << order;
  });
}

// Shuffles of every type kernels use; lanes are numbered in a 2-D block by x + y * blockDim.x.
__global__ void shfl_types_kernel(float* f, double* d, __half* h, long long* ll, unsigned* u) {
  const int lane = (threadIdx.x + blockDim.x * threadIdx.y) % 32;
  const int linear = threadIdx.x + blockDim.x * threadIdx.y;
  f[linear] = __shfl_xor_sync(0xffffffffu, 0.5f * linear, 1);
  d[linear] = __shfl_down_sync(0xffffffffu, 0.25 * linear + 1e10, 1);
  h[linear] = __shfl_sync(0xffffffffu, __float2half((float)lane), 31 - lane);
  ll[linear] = __shfl_up_sync(0xffffffffu, (long long)linear << 33, 1);
  u[linear] = __shfl_xor_sync(0xffffffffu, (unsigned)linear, 16);
}

TEST(SimtWarp, ShuffleTypesAndTwoDimensionalLanes) {
  VIT_REQUIRE_GPU();
  const int n = 64;  // block (16, 4): two warps, each spanning two rows
  DevBuf<float> f(n);
  DevBuf<double> d(n);
  DevBuf<__half> h(n);
  DevBuf<long long> ll(n);
  DevBuf<unsigned> u(n);
  LAUNCH(shfl_types_kernel, 1, dim3(16, 4), 0, 0, f.p, d.p, h.p, ll.p, u.p);
  std::vector<float> hf = f.download();
  std::vector<double> hd = d.download();
  std::vector<__half> hh = h.download();
  std::vector<long long> hll = ll.download();
  std::vector<unsigned> hu = u.download();
  for (int i = 0; i < n; ++i) {
    const int lane = i % 32;
    EXPECT_EQ(hf[i], 0.5f * (i ^ 1));
    EXPECT_EQ(hd[i], lane == 31 ? 0.25 * i + 1e10 : 0.25 * (i + 1) + 1e10);
    EXPECT_EQ(__half2float(hh[i]), (float)(31 - lane));
    EXPECT_EQ(hll[i], lane == 0 ? (long long)i << 33 : (long long)(i - 1) << 33);
    EXPECT_EQ(hu[i], (unsigned)(i ^ 16));
  }
}

// ---------------------------------------------------------------------------------------------
// Shared memory: one instance per block, shared by its threads; simt fills it with 0xFF (NaN)
// at every block start, so a read before any write sees NaN, in every block.
template <class T, int N>
__global__ void shared_probe_kernel(float* first_read, float* out) {
  __shared__ T buf[N];
  if (threadIdx.x == 0) first_read[blockIdx.x] = (float)buf[N / 2];
  __syncthreads();
  buf[threadIdx.x] = (T)(float)(threadIdx.x + 100 * blockIdx.x);
  __syncthreads();
  out[blockIdx.x * N + threadIdx.x] = (float)buf[N - 1 - threadIdx.x];  // another thread's value
}

template <class T, int N>
void check_shared_probe() {
  const int blocks = 3;
  DevBuf<float> first(blocks), out(blocks * N);
  LAUNCH((shared_probe_kernel<T, N>), blocks, N, 0, 0, first.p, out.p);
  std::vector<float> f = first.download(), o = out.download();
  for (int b = 0; b < blocks; ++b) {
#if defined(VIT_SIMT)
    EXPECT_TRUE(std::isnan(f[b])) << "block " << b << " read " << f[b] << " before any write";
#endif
    for (int t = 0; t < N; ++t) EXPECT_EQ(o[b * N + t], (float)(N - 1 - t + 100 * b));
  }
}

TEST(SimtShared, StaticSharedInTemplateKernelsIsPerBlockAndNaNFilled) {
  VIT_REQUIRE_GPU();
  vit_test::for_each_thread_order([](const char*) {
    check_shared_probe<float, 64>();
    check_shared_probe<float, 32>();  // another instantiation: its own buffer
    check_shared_probe<__half, 64>();
  });
}

// Dynamic shared memory, read before write (NaN) and shared across the block.
__global__ void dynamic_smem_kernel(float* first_read, float* out, int n) {
  VIT_DYNAMIC_SMEM(float, buf);
  if (threadIdx.x == 0) first_read[blockIdx.x] = buf[n - 1];
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = (float)(i + blockIdx.x);
  __syncthreads();
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += buf[i];
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}

TEST(SimtShared, DynamicSharedMemory) {
  VIT_REQUIRE_GPU();
  const int n = 1000, blocks = 2, threads = 64;
  DevBuf<float> first(blocks), out(blocks * threads);
  LAUNCH(dynamic_smem_kernel, blocks, threads, n * sizeof(float), 0, first.p, out.p, n);
  std::vector<float> f = first.download(), o = out.download();
  for (int b = 0; b < blocks; ++b) {
#if defined(VIT_SIMT)
    EXPECT_TRUE(std::isnan(f[b])) << "block " << b;
#endif
    for (int t = 0; t < threads; ++t) EXPECT_EQ(o[b * threads + t], (float)(n * (n - 1) / 2 + n * b));
  }
}

// ---------------------------------------------------------------------------------------------
// Atomics.
__global__ void atomics_kernel(float* fsum, int* isum, unsigned* inc, unsigned* inc_old,
                               unsigned* dec, int* mx, int* mn, unsigned long long* ull,
                               float* cas_max, double* dsum) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(fsum, 0.5f);
  atomicAdd(isum, t);
  inc_old[t] = atomicInc(inc, 9);  // counts 0..9 and wraps to 0
  atomicDec(dec, 4);
  atomicMax(mx, (t * 7919) % 1000);
  atomicMin(mn, 500 - t);
  atomicAdd(ull, 1ull << 33);
  atomicAdd(dsum, 0.25);
  // float max through a CAS loop (the classic pattern)
  const float v = (float)((t * 31) % 977);
  int* addr = reinterpret_cast<int*>(cas_max);
  // The first read is atomic too: a plain load racing with other threads' atomicCAS is a data
  // race in the PTX memory model, and race mode (make test-race) reports it.
  int old = atomicAdd(addr, 0), assumed;
  do {
    assumed = old;
    if (__int_as_float(assumed) >= v) break;
    old = atomicCAS(addr, assumed, __float_as_int(v));
  } while (old != assumed);
}

TEST(SimtAtomics, AddIncDecMinMaxCas) {
  VIT_REQUIRE_GPU();
  const int blocks = 4, threads = 100, n = blocks * threads;
  DevBuf<float> fsum(1), cas_max(1);
  DevBuf<int> isum(1), mx(1), mn(1);
  DevBuf<unsigned> inc(1), inc_old(n), dec(1);
  DevBuf<unsigned long long> ull(1);
  DevBuf<double> dsum(1);
  fsum.zero(); isum.zero(); inc.zero(); ull.zero(); dsum.zero();
  dec.upload({2u});
  mx.upload({-1});
  mn.upload({1 << 30});
  cas_max.upload({-1.0f});
  LAUNCH(atomics_kernel, blocks, threads, 0, 0, fsum.p, isum.p, inc.p, inc_old.p, dec.p, mx.p,
         mn.p, ull.p, cas_max.p, dsum.p);
  EXPECT_EQ(fsum.download()[0], 0.5f * n);
  EXPECT_EQ(isum.download()[0], n * (n - 1) / 2);
  EXPECT_EQ(inc.download()[0], (unsigned)(n % 10));
  std::vector<int> seen(10, 0);
  for (unsigned o : inc_old.download()) {
    ASSERT_LT(o, 10u);
    seen[o]++;
  }
  for (int k = 0; k < 10; ++k) EXPECT_EQ(seen[k], n / 10);
  // atomicDec(4) from 2: 2,1,0 -> wraps to 4, then 4,3,2,1,0,4,...; after n steps:
  unsigned d = 2;
  for (int i = 0; i < n; ++i) d = (d == 0 || d > 4) ? 4 : d - 1;
  EXPECT_EQ(dec.download()[0], d);
  int expect_max = -1;
  for (int t = 0; t < n; ++t) expect_max = std::max(expect_max, (t * 7919) % 1000);
  EXPECT_EQ(mx.download()[0], expect_max);
  EXPECT_EQ(mn.download()[0], 500 - (n - 1));
  EXPECT_EQ(ull.download()[0], (unsigned long long)n << 33);
  EXPECT_EQ(dsum.download()[0], 0.25 * n);
  float expect_cas = -1.0f;
  for (int t = 0; t < n; ++t) expect_cas = std::max(expect_cas, (float)((t * 31) % 977));
  EXPECT_EQ(cas_max.download()[0], expect_cas);
}

// ---------------------------------------------------------------------------------------------
// Device math intrinsics against the host's libm (a GPU's fast intrinsics are approximate, so
// compare with a tolerance; the integer and rounding ones are exact).
constexpr int kMath = 28;
__global__ void math_kernel(const float* x, float* out, int n) {
  const int i = threadIdx.x;
  if (i >= n) return;
  const float v = x[i];
  float* o = out + i * kMath;
  o[0] = __expf(v);
  o[1] = __logf(fabsf(v) + 1.0f);
  o[2] = rsqrtf(fabsf(v) + 0.5f);
  o[3] = __fdividef(v, 3.0f);
  o[4] = erff(v);
  o[5] = tanhf(v);
  o[6] = __saturatef(v);
  o[7] = fmaxf(v, 0.25f);
  o[8] = fminf(v, 0.25f);
  o[9] = __fmul_rn(v, 3.0f);
  o[10] = __fadd_rn(v, 1.0f);
  o[11] = __fmaf_rn(v, 2.0f, 1.0f);
  o[12] = (float)__float2int_rn(v * 4.0f);  // ties to even
  o[13] = __int2float_rn((int)(v * 10.0f));
  o[14] = __ldg(&x[i]);
  o[15] = max(v, -0.5f);
  o[16] = (float)min(i, 7);
  o[17] = __frsqrt_rn(fabsf(v) + 0.5f);
  o[18] = __fsqrt_rn(fabsf(v));
  o[19] = __powf(fabsf(v) + 1.0f, 1.5f);
  o[20] = __sinf(v);
  o[21] = __cosf(v);
  o[22] = (float)__popc((unsigned)i * 2654435761u);
  o[23] = (float)__clz(i + 1);
  o[24] = (float)__ffs(i + 8);
  o[25] = __half2float(hexp(__float2half(v)));
  o[26] = __half2float(__hfma(__float2half(v), __float2half(2.0f), __float2half(1.0f)));
  o[27] = __int_as_float(__float_as_int(v) ^ (int)0x80000000);  // sign flip through the bits
}

TEST(SimtMath, IntrinsicsMatchLibm) {
  VIT_REQUIRE_GPU();
  const std::vector<float> x = {-2.0f, -1.3f, -0.5f, -0.125f, 0.0f, 0.3f, 0.625f, 0.875f, 1.0f, 2.7f, 5.5f, 1e-3f};
  const int n = (int)x.size();
  DevBuf<float> dx(x), out(n * kMath);
  LAUNCH(math_kernel, 1, 32, 0, 0, dx.p, out.p, n);
  std::vector<float> got = out.download();
  for (int i = 0; i < n; ++i) {
    const float v = x[i];
    auto half_round = [](float f) { return __half2float(__float2half(f)); };
    const double e[kMath] = {std::exp(v), std::log(std::fabs(v) + 1.0), 1.0 / std::sqrt(std::fabs(v) + 0.5),
                             v / 3.0, std::erf(v), std::tanh(v), std::min(1.0f, std::max(0.0f, v)),
                             std::max(v, 0.25f), std::min(v, 0.25f), v * 3.0f, v + 1.0f,
                             std::fma(v, 2.0f, 1.0f), std::nearbyint(v * 4.0f),
                             (float)(int)(v * 10.0f), v, std::max(v, -0.5f), (float)std::min(i, 7),
                             1.0 / std::sqrt(std::fabs(v) + 0.5), std::sqrt(std::fabs(v)),
                             std::pow(std::fabs(v) + 1.0, 1.5), std::sin(v), std::cos(v),
                             (float)__builtin_popcount((unsigned)i * 2654435761u),
                             (float)__builtin_clz((unsigned)i + 1), (float)__builtin_ffs(i + 8),
                             std::exp((double)half_round(v)), half_round(std::fma(half_round(v), 2.0f, 1.0f)), -v};
    for (int k = 0; k < kMath; ++k) {
      // half results: half's precision; GPU fast intrinsics (__expf, __logf, __fdividef, __powf,
      // __sinf, __cosf): their documented error bounds; the rest: a few ulp.
      const bool half = k == 25 || k == 26, fast = k == 0 || k == 1 || k == 3 || (k >= 19 && k <= 21);
      const double tol = half ? 2e-3 * std::fabs(e[k]) + 1e-3
                         : fast ? 1e-4 * std::fabs(e[k]) + 1e-5
                                : 2e-6 * std::fabs(e[k]) + 2e-6;
      EXPECT_NEAR(got[i * kMath + k], e[k], tol) << "function " << k << " at x = " << v;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Runtime: copies, sets, streams, events, properties.
TEST(SimtRuntime, MemcpyMemsetStreamsEvents) {
  VIT_REQUIRE_GPU();
  const size_t n = 1000;
  std::vector<float> h(n);
  for (size_t i = 0; i < n; ++i) h[i] = (float)i * 0.5f;
  DevBuf<float> a(n), b(n);
#if defined(VIT_SIMT)
  // Fresh device memory is NaN garbage under simt, never zero.
  for (float v : a.download()) ASSERT_TRUE(std::isnan(v));
#endif
  a.upload(h);
  CUDA_CHECK(cudaMemcpy(b.p, a.p, n * sizeof(float), cudaMemcpyDeviceToDevice));
  EXPECT_EQ(b.download(), h);
  CUDA_CHECK(cudaMemcpy(b.p, a.p, n * sizeof(float), cudaMemcpyDefault));
  EXPECT_EQ(b.download(), h);

  // memset sets bytes: 0x3f3f3f3f as a float
  CUDA_CHECK(cudaMemset(b.p + 10, 0x3f, 5 * sizeof(float)));
  std::vector<float> hb = b.download();
  float pattern;
  memset(&pattern, 0x3f, sizeof pattern);
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(hb[i], i >= 10 && i < 15 ? pattern : h[i]);

  // async copies through pinned memory on a stream, timed by events
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  float* pinned;
  CUDA_CHECK(cudaMallocHost(&pinned, n * sizeof(float)));
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  CUDA_CHECK(cudaEventRecord(e0, s));
  CUDA_CHECK(cudaMemsetAsync(b.p, 0, n * sizeof(float), s));
  CUDA_CHECK(cudaMemcpyAsync(b.p + 1, a.p, (n - 1) * sizeof(float), cudaMemcpyDeviceToDevice, s));
  CUDA_CHECK(cudaMemcpyAsync(pinned, b.p, n * sizeof(float), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaEventRecord(e1, s));
  CUDA_CHECK(cudaStreamWaitEvent(0, e1, 0));
  CUDA_CHECK(cudaStreamSynchronize(s));
  EXPECT_EQ(cudaEventQuery(e1), cudaSuccess);
  float ms = -1.0f;
  CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  EXPECT_GE(ms, 0.0f);
  EXPECT_EQ(pinned[0], 0.0f);
  for (size_t i = 1; i < n; ++i) EXPECT_EQ(pinned[i], h[i - 1]);

  // 2-D copy: a 3x4 window out of a 10-wide row-major host matrix into a pitched device one
  std::vector<float> m(10 * 5);
  for (size_t i = 0; i < m.size(); ++i) m[i] = (float)i;
  DevBuf<float> dm(6 * 4);
  dm.zero();
  CUDA_CHECK(cudaMemcpy2D(dm.p, 6 * sizeof(float), m.data() + 12, 10 * sizeof(float),
                          3 * sizeof(float), 4, cudaMemcpyHostToDevice));
  std::vector<float> hm = dm.download();
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 6; ++c) EXPECT_EQ(hm[r * 6 + c], c < 3 ? (float)(12 + r * 10 + c) : 0.0f);

  CUDA_CHECK(cudaFreeHost(pinned));
  CUDA_CHECK(cudaEventDestroy(e0));
  CUDA_CHECK(cudaEventDestroy(e1));
  CUDA_CHECK(cudaStreamDestroy(s));
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(SimtRuntime, DevicePropertiesAndErrors) {
  VIT_REQUIRE_GPU();
  int count = 0, dev = -1;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  EXPECT_GE(count, 1);
  CUDA_CHECK(cudaGetDevice(&dev));
  EXPECT_EQ(dev, 0);
  cudaDeviceProp p;
  CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
  EXPECT_EQ(p.warpSize, 32);
  EXPECT_EQ(p.maxThreadsPerBlock, 1024);
  EXPECT_GE(p.sharedMemPerBlock, 48u * 1024);
  EXPECT_GT(p.multiProcessorCount, 0);
  int smem_optin = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  EXPECT_GE(smem_optin, 48 * 1024);
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  EXPECT_LE(free_b, total_b);
#if defined(VIT_SIMT)
  EXPECT_STREQ(p.name, "simt (CPU executor)");
  EXPECT_EQ(p.major, 9);
  EXPECT_EQ(p.multiProcessorCount, 132);
#endif
  EXPECT_STREQ(cudaGetErrorString(cudaErrorInvalidConfiguration), "invalid configuration argument");
  EXPECT_EQ(cudaSetDevice(count), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaPeekAtLastError(), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // cleared
}

// ---------------------------------------------------------------------------------------------
// Launch configuration errors are reported through cudaGetLastError, as on a GPU.
__global__ void noop_kernel(float* x) {
  VIT_DYNAMIC_SMEM(float, s);
  if (threadIdx.x == 0 && x) x[blockIdx.x] = s == nullptr ? 1.0f : 2.0f;
}

TEST(SimtLaunch, ConfigurationErrors) {
  VIT_REQUIRE_GPU();
  DevBuf<float> x(4);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  RAW_LAUNCH(noop_kernel, 1, 1025, 0, x.p);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  RAW_LAUNCH(noop_kernel, 1, dim3(1, 1, 65), 0, x.p);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  RAW_LAUNCH(noop_kernel, 0, 32, 0, x.p);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  RAW_LAUNCH(noop_kernel, dim3(1, 65536), 32, 0, x.p);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  // More than 48 KiB of dynamic shared memory needs cudaFuncSetAttribute first.
  const int big = 64 * 1024;
  RAW_LAUNCH(noop_kernel, 1, 32, big, x.p);
  EXPECT_NE(cudaGetLastError(), cudaSuccess);
  CUDA_CHECK(cudaFuncSetAttribute(noop_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, big));
  RAW_LAUNCH(noop_kernel, 1, 32, big, x.p);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  CUDA_CHECK(cudaDeviceSynchronize());
  RAW_LAUNCH(noop_kernel, 1, 1024, 0, x.p);  // the largest block is fine
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  CUDA_CHECK(cudaDeviceSynchronize());
}

// ---------------------------------------------------------------------------------------------
// cuBLAS against a naive column-major triple loop (in double).
// C = alpha * op(A) op(B) + beta * C, op(X) = X or X^T; X(i, j) = X[i + j * ldx].
void ref_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const std::vector<float>& A,
              int lda, const std::vector<float>& B, int ldb, float beta, std::vector<float>& C,
              int ldc) {
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double s = 0;
      for (int p = 0; p < k; ++p) {
        double a = ta ? A[p + (size_t)i * lda] : A[i + (size_t)p * lda];
        double b = tb ? B[j + (size_t)p * ldb] : B[p + (size_t)j * ldb];
        s += a * b;
      }
      float& c = C[i + (size_t)j * ldc];
      c = (float)(alpha * s + (beta == 0.0f ? 0.0 : (double)beta * c));
    }
}

std::vector<float> random_values(size_t n, uint32_t seed, float quantum = 0.0f) {
  std::vector<float> v(n);
  uint32_t s = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    float x = (float)(s >> 8) / 16777216.0f * 2.0f - 1.0f;  // [-1, 1)
    v[i] = quantum > 0 ? std::round(x / quantum) * quantum : x;
  }
  return v;
}

struct GemmCase {
  int m, n, k;
};

class SimtCublas : public ::testing::Test {
 protected:
  void SetUp() override {
    VIT_REQUIRE_GPU();  // (skips the test from SetUp in the nvcc build without a GPU)
    CUBLAS_CHECK(cublasCreate(&handle));
  }
  void TearDown() override {
    if (handle) CUBLAS_CHECK(cublasDestroy(handle));
  }
  cublasHandle_t handle = nullptr;
};

TEST_F(SimtCublas, SgemmAllTransposesOddSizesPaddedLeadingDims) {
  VIT_REQUIRE_GPU();
  for (GemmCase c : {GemmCase{7, 5, 3}, GemmCase{33, 17, 65}, GemmCase{1, 1, 1}})
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (float beta : {0.0f, 0.5f}) {
          const int rowsA = ta ? c.k : c.m, colsA = ta ? c.m : c.k;
          const int rowsB = tb ? c.n : c.k, colsB = tb ? c.k : c.n;
          const int lda = rowsA + 3, ldb = rowsB + 2, ldc = c.m + 5;
          std::vector<float> A = random_values((size_t)lda * colsA, 1 + ta);
          std::vector<float> B = random_values((size_t)ldb * colsB, 3 + tb);
          std::vector<float> C = random_values((size_t)ldc * c.n, 5);
          if (beta == 0.0f) std::fill(C.begin(), C.end(), NAN);  // beta = 0 must ignore C
          std::vector<float> expect = C;
          const float alpha = 1.5f;
          ref_gemm(ta, tb, c.m, c.n, c.k, alpha, A, lda, B, ldb, beta, expect, ldc);
          DevBuf<float> dA(A), dB(B), dC(C);
          CUBLAS_CHECK(cublasSgemm(handle, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   c.m, c.n, c.k, &alpha, dA.p, lda, dB.p, ldb, &beta, dC.p, ldc));
          std::vector<float> got = dC.download();
          for (int j = 0; j < c.n; ++j)
            for (int i = 0; i < ldc; ++i) {
              const size_t at = i + (size_t)j * ldc;
              if (i < c.m)
                EXPECT_NEAR(got[at], expect[at], 1e-5 + 1e-5 * std::fabs(expect[at]))
                    << c.m << "x" << c.n << "x" << c.k << " ta " << ta << " tb " << tb << " beta "
                    << beta << " at (" << i << "," << j << ")";
              else  // the padding between columns is not touched
                EXPECT_TRUE(std::memcmp(&got[at], &C[at], 4) == 0) << "padding (" << i << "," << j << ")";
            }
        }
}

TEST_F(SimtCublas, StridedBatchedAndBroadcastB) {
  VIT_REQUIRE_GPU();
  const int m = 9, n = 6, k = 11, batch = 3;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const int rowsA = ta ? k : m, colsA = ta ? m : k, rowsB = tb ? n : k, colsB = tb ? k : n;
      const int lda = rowsA + 1, ldb = rowsB, ldc = m + 2;
      const long long sA = (long long)lda * colsA + 7, sB = 0 /* one B for every batch */,
                      sC = (long long)ldc * n + 3;
      std::vector<float> A = random_values(sA * batch, 11), B = random_values((size_t)ldb * colsB, 12),
                         C = random_values(sC * batch, 13);
      const float alpha = -0.75f, beta = 2.0f;
      std::vector<float> expect = C;
      for (int b = 0; b < batch; ++b) {
        std::vector<float> Ab(A.begin() + b * sA, A.begin() + (b + 1) * sA);
        std::vector<float> Cb(expect.begin() + b * sC, expect.begin() + (b + 1) * sC);
        ref_gemm(ta, tb, m, n, k, alpha, Ab, lda, B, ldb, beta, Cb, ldc);
        std::copy(Cb.begin(), Cb.end(), expect.begin() + b * sC);
      }
      DevBuf<float> dA(A), dB(B), dC(C);
      CUBLAS_CHECK(cublasSgemmStridedBatched(handle, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                             tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, dA.p,
                                             lda, sA, dB.p, ldb, sB, &beta, dC.p, ldc, sC, batch));
      EXPECT_TRUE(vit_test::allclose(dC.download(), expect, 1e-5, 1e-5)) << "ta " << ta << " tb " << tb;
      // The same through cublasGemmStridedBatchedEx with FP32 types.
      DevBuf<float> dC2(C);
      CUBLAS_CHECK(cublasGemmStridedBatchedEx(
          handle, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha,
          dA.p, CUDA_R_32F, lda, sA, dB.p, CUDA_R_32F, ldb, sB, &beta, dC2.p, CUDA_R_32F, ldc, sC,
          batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      EXPECT_TRUE(vit_test::allclose(dC2.download(), expect, 1e-5, 1e-5)) << "Ex, ta " << ta << " tb " << tb;
    }
}

// FP16 / BF16 inputs with FP32 output: the inputs are exactly representable, the products are
// accumulated in FP32, so the result matches the FP32 reference closely.
template <class T>
void gemm_ex_low_precision(cublasHandle_t handle, cudaDataType type, T (*conv)(float), bool batched) {
  const int m = 13, n = 7, k = 21, batch = batched ? 2 : 1;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const int rowsA = ta ? k : m, colsA = ta ? m : k, rowsB = tb ? n : k, colsB = tb ? k : n;
      const int lda = rowsA + 2, ldb = rowsB + 1, ldc = m;
      const long long sA = (long long)lda * colsA, sB = (long long)ldb * colsB, sC = (long long)ldc * n;
      // multiples of 1/64 in [-1, 1]: exact in half and in bfloat16 (8 significant bits)
      std::vector<float> A = random_values(sA * batch, 21, 1.0f / 64), B = random_values(sB * batch, 22, 1.0f / 64);
      std::vector<float> C(sC * batch, NAN), expect(sC * batch, 0.0f);
      const float alpha = 1.0f, beta = 0.0f;
      for (int b = 0; b < batch; ++b) {
        std::vector<float> Ab(A.begin() + b * sA, A.begin() + (b + 1) * sA);
        std::vector<float> Bb(B.begin() + b * sB, B.begin() + (b + 1) * sB);
        std::vector<float> Cb(sC);
        ref_gemm(ta, tb, m, n, k, alpha, Ab, lda, Bb, ldb, beta, Cb, ldc);
        std::copy(Cb.begin(), Cb.end(), expect.begin() + b * sC);
      }
      std::vector<T> hA(A.size()), hB(B.size());
      for (size_t i = 0; i < A.size(); ++i) hA[i] = conv(A[i]);
      for (size_t i = 0; i < B.size(); ++i) hB[i] = conv(B[i]);
      DevBuf<T> dA(hA), dB(hB);
      DevBuf<float> dC(C);
      const cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
      if (batched)
        CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle, oa, ob, m, n, k, &alpha, dA.p, type, lda, sA,
                                                dB.p, type, ldb, sB, &beta, dC.p, CUDA_R_32F, ldc, sC,
                                                batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      else
        CUBLAS_CHECK(cublasGemmEx(handle, oa, ob, m, n, k, &alpha, dA.p, type, lda, dB.p, type, ldb,
                                  &beta, dC.p, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      EXPECT_TRUE(vit_test::allclose(dC.download(), expect, 1e-5, 1e-6)) << "ta " << ta << " tb " << tb;
    }
}
__half to_half(float x) { return __float2half(x); }
__nv_bfloat16 to_bf16(float x) { return __float2bfloat16(x); }

TEST_F(SimtCublas, GemmExHalfAndBfloat16Inputs) {
  VIT_REQUIRE_GPU();
  gemm_ex_low_precision<__half>(handle, CUDA_R_16F, to_half, false);
  gemm_ex_low_precision<__half>(handle, CUDA_R_16F, to_half, true);
  gemm_ex_low_precision<__nv_bfloat16>(handle, CUDA_R_16BF, to_bf16, false);
  gemm_ex_low_precision<__nv_bfloat16>(handle, CUDA_R_16BF, to_bf16, true);
}

TEST_F(SimtCublas, HalfOutputAndTf32Compute) {
  VIT_REQUIRE_GPU();
  const int m = 8, n = 4, k = 16;
  std::vector<float> A = random_values(m * k, 31), B = random_values(k * n, 32), expect(m * n);
  ref_gemm(false, false, m, n, k, 1.0f, A, m, B, k, 0.0f, expect, m);
  // FP16 in, FP16 out (FP32 compute): the result rounded once to half.
  std::vector<__half> hA(A.size()), hB(B.size());
  for (size_t i = 0; i < A.size(); ++i) hA[i] = __float2half(A[i]);
  for (size_t i = 0; i < B.size(); ++i) hB[i] = __float2half(B[i]);
  DevBuf<__half> dA(hA), dB(hB), dC(m * n);
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dA.p, CUDA_R_16F, m,
                            dB.p, CUDA_R_16F, k, &zero, dC.p, CUDA_R_16F, m, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
  std::vector<__half> c = dC.download();
  std::vector<float> cf(c.size());
  for (size_t i = 0; i < c.size(); ++i) cf[i] = __half2float(c[i]);
  EXPECT_TRUE(vit_test::allclose(cf, expect, 4e-3, 4e-3));  // half inputs + half output
  // TF32 compute on FP32 data: within TF32's precision of the FP32 result.
  DevBuf<float> fA(A), fB(B), fC(m * n);
  CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, fA.p, CUDA_R_32F, m,
                            fB.p, CUDA_R_32F, k, &zero, fC.p, CUDA_R_32F, m,
                            CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
  EXPECT_TRUE(vit_test::allclose(fC.download(), expect, 5e-3, 5e-3));
}

TEST_F(SimtCublas, InvalidArguments) {
  VIT_REQUIRE_GPU();
  DevBuf<float> a(64), b(64), c(64);
  const float one = 1.0f;
  // lda smaller than the rows of A
  EXPECT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 8, 2, 2, &one, a.p, 4, b.p, 8, &one, c.p, 8),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, -1, 2, 2, &one, a.p, 4, b.p, 8, &one, c.p, 8),
            CUBLAS_STATUS_INVALID_VALUE);
  // ldc smaller than m
  EXPECT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 8, 2, 2, &one, a.p, 8, b.p, 2, &one, c.p, 4),
            CUBLAS_STATUS_INVALID_VALUE);
#if defined(VIT_SIMT)
  // Mixed A/B types are not a cuBLAS combination.
  EXPECT_EQ(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a.p, CUDA_R_16F, 2, b.p,
                         CUDA_R_32F, 2, &one, c.p, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_NOT_SUPPORTED);
#endif
}

// ---------------------------------------------------------------------------------------------
// Several host threads may launch at once (the executor serialises them).
__global__ void scale_kernel(float* x, int n, float s) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  __shared__ float tile[128];
  tile[threadIdx.x] = i < n ? x[i] : 0.0f;
  __syncthreads();
  if (i < n) x[i] = tile[threadIdx.x] * s;
}

TEST(SimtLaunch, ConcurrentHostThreads) {
  VIT_REQUIRE_GPU();
  const int n = 1000;
  auto work = [&](float s, std::vector<float>* result) {
    std::vector<float> h(n);
    for (int i = 0; i < n; ++i) h[i] = (float)i;
    DevBuf<float> d(h);
    for (int r = 0; r < 5; ++r) LAUNCH(scale_kernel, vit::ceil_div(n, 128), 128, 0, 0, d.p, n, s);
    CUDA_CHECK(cudaDeviceSynchronize());
    *result = d.download();
  };
  std::vector<float> r1, r2;
  std::thread t1(work, 2.0f, &r1), t2(work, -1.0f, &r2);
  t1.join();
  t2.join();
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(r1[i], 32.0f * i);
    EXPECT_EQ(r2[i], -1.0f * i);
  }
}

#if defined(VIT_SIMT)
// ---------------------------------------------------------------------------------------------
// simt only: the thread order itself, and the loud failures.
__global__ void order_kernel(int* counter, int* order) { order[atomicAdd(counter, 1)] = threadIdx.x; }
// The order in which the n threads of one block ran.
std::vector<int> run_order_kernel(int n) {
  DevBuf<int> counter(1), order(n);
  counter.zero();
  LAUNCH(order_kernel, 1, n, 0, 0, counter.p, order.p);
  return order.download();
}

TEST(SimtOrder, ForwardReverseShuffle) {
  const int n = 64;
  OrderGuard restore;
  auto run = [&](simt::Order o, uint64_t seed) {
    simt::set_thread_order(o, seed);
    return run_order_kernel(n);
  };
  std::vector<int> fwd = run(simt::Order::Forward, 0), rev = run(simt::Order::Reverse, 0);
  std::vector<int> sh1 = run(simt::Order::Shuffle, 1), sh1b = run(simt::Order::Shuffle, 1),
                   sh2 = run(simt::Order::Shuffle, 2);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(fwd[i], i);
    EXPECT_EQ(rev[i], n - 1 - i);
  }
  EXPECT_EQ(sh1, sh1b);  // the seed makes it reproducible
  EXPECT_NE(sh1, fwd);
  EXPECT_NE(sh1, sh2);
  std::vector<int> sorted = sh1;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, fwd);  // a permutation
}

TEST(SimtOrder, EnvironmentVariable) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  OrderGuard restore;
  const char* old = getenv("SIMT_ORDER");
  std::string saved = old ? old : "";
  std::vector<int> fwd(32), rev(32);
  for (int i = 0; i < 32; ++i) fwd[i] = i, rev[i] = 31 - i;
  setenv("SIMT_ORDER", "reverse", 1);
  simt::reset_thread_order();
  EXPECT_EQ(simt::thread_order(), simt::Order::Reverse);
  EXPECT_EQ(run_order_kernel(32), rev);
  setenv("SIMT_ORDER", "shuffle:99", 1);
  simt::reset_thread_order();
  EXPECT_EQ(simt::thread_order(), simt::Order::Shuffle);
  EXPECT_EQ(simt::thread_order_seed(), 99u);
  std::vector<int> from_env = run_order_kernel(32);
  simt::set_thread_order(simt::Order::Shuffle, 99);
  EXPECT_EQ(run_order_kernel(32), from_env);
  unsetenv("SIMT_ORDER");
  simt::reset_thread_order();
  EXPECT_EQ(run_order_kernel(32), fwd);
  setenv("SIMT_ORDER", "sideways", 1);
  EXPECT_DEATH(simt::reset_thread_order(), "SIMT_ORDER=sideways: expected forward, reverse or shuffle");
  if (old) setenv("SIMT_ORDER", saved.c_str(), 1);
  else unsetenv("SIMT_ORDER");
  simt::reset_thread_order();
}

// A host thread_local survives kernel launches (simt borrows the TLS block for __shared__).
thread_local int tls_probe = 42;
TEST(SimtShared, HostThreadLocalsSurviveLaunches) {
  tls_probe = 7;
  check_shared_probe<float, 64>();
  EXPECT_EQ(tls_probe, 7);
}

__global__ void divergent_barrier_kernel(float* x) {
  if (threadIdx.x >= 16) {  // half the block waits at a shuffle for lanes that never come
    x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
    return;
  }
  __syncthreads();
  x[threadIdx.x] = 1.0f;
}
__global__ void two_barriers_kernel(float* x) {
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  x[threadIdx.x] = 1.0f;
}
__global__ void exited_lane_kernel(float* x) {  // lane 5 is named but waits at the barrier
  if (threadIdx.x == 5) { __syncthreads(); return; }
  x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
__global__ void warp_vs_barrier_kernel(float* x) {
  if (threadIdx.x == 3) __syncthreads();  // lane 3 waits at the barrier, the others at the shuffle
  else x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
__global__ void not_in_mask_kernel(float* x) {
  x[threadIdx.x] = __shfl_xor_sync(0x0000fffeu, 1.0f, 1);  // lane 0 calls but is not in the mask
}
__global__ void oob_write_kernel(float* x, int n, int at) {
  if (threadIdx.x == 0) x[at] = 1.0f;
}
__global__ void smem_overrun_kernel(float* x) {
  VIT_DYNAMIC_SMEM(float, s);
  s[threadIdx.x] = 1.0f;  // one float per thread, but the launch gives 16 bytes
}

__global__ void null_write_kernel(float* x) {
  if (threadIdx.x == 3) *(volatile float*)x = 1.0f;  // x is null
}
__device__ int deep_recursion(int n) {
  volatile char pad[1024];
  pad[n % 1024] = (char)n;
  return n == 0 ? 0 : deep_recursion(n - 1) + pad[n % 1024];
}
__global__ void stack_overflow_kernel(float* x) {
  if (threadIdx.x == 1) x[0] = (float)deep_recursion(1 << 20);
}

// One block of `threads` threads (a macro, so that LAUNCH sees the kernel's name). A kernel runs
// when the program synchronises (simt queues launches like a GPU), so that is where it aborts.
#define LAUNCH1(kernel, threads, x)          \
  do {                                       \
    LAUNCH(kernel, 1, threads, 0, 0, x);     \
    CUDA_CHECK(cudaDeviceSynchronize());     \
  } while (0)

TEST(SimtDeathTest, DivergentBarrierAbortsNamingKernelAndBlock) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // fork() with OpenBLAS threads around
  OrderGuard restore;
  float* x;
  CUDA_CHECK(cudaMalloc(&x, 64 * sizeof(float)));
  EXPECT_DEATH(LAUNCH1(divergent_barrier_kernel, 32, x),
               "simt: deadlock in kernel divergent_barrier_kernel .*block \\(0,0,0\\).*__syncthreads.* "
               "reached by 16 of the 32 threads that have not exited; 16 wait at warp ops");
  simt::set_thread_order(simt::Order::Reverse);
  EXPECT_DEATH(LAUNCH1(divergent_barrier_kernel, 32, x), "divergent_barrier_kernel.*16 of the 32");
  EXPECT_DEATH(LAUNCH1(two_barriers_kernel, 32, x),
               "simt: divergent barrier in kernel two_barriers_kernel.*test_simt.cu:[0-9]+ while.*test_simt.cu:[0-9]+");
  CUDA_CHECK(cudaFree(x));
}

TEST(SimtDeathTest, WarpOpDeadlocksAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // fork() with OpenBLAS threads around
  float* x;
  CUDA_CHECK(cudaMalloc(&x, 64 * sizeof(float)));
  vit_test::for_each_thread_order([&](const char*) {
    EXPECT_DEATH(LAUNCH1(exited_lane_kernel, 32, x),
                 "simt: deadlock in kernel exited_lane_kernel .*block \\(0,0,0\\).*reached by 1 of the 32 "
                 "threads that have not exited; 31 wait at warp ops");
  });
  EXPECT_DEATH(LAUNCH1(warp_vs_barrier_kernel, 32, x), "simt: deadlock in kernel warp_vs_barrier_kernel");
  EXPECT_DEATH(LAUNCH1(not_in_mask_kernel, 32, x), "not_in_mask_kernel.*is not in the mask");
  CUDA_CHECK(cudaFree(x));
}

void oob_write(int at) {
  const int n = 100;
  float* x;
  CUDA_CHECK(cudaMalloc(&x, n * sizeof(float)));
  simt::name_allocation(x, "victim");
  LAUNCH(oob_write_kernel, 1, 32, 0, 0, x, n, at);
  CUDA_CHECK(cudaDeviceSynchronize());  // the kernel runs (and its damage is found) here
}
void host_overrun_then_free() {
  float* x;
  CUDA_CHECK(cudaMalloc(&x, 10 * sizeof(float)));
  x[10] = 0.0f;  // (a host write into device memory: only possible under simt)
  CUDA_CHECK(cudaFree(x));
}
void memcpy_overrun() {
  std::vector<float> h(11);
  float* x;
  CUDA_CHECK(cudaMalloc(&x, 10 * sizeof(float)));
  simt::name_allocation(x, "small");
  CUDA_CHECK(cudaMemcpy(x, h.data(), 11 * sizeof(float), cudaMemcpyHostToDevice));
}
void memset_overrun() {
  float* x;
  CUDA_CHECK(cudaMalloc(&x, 10 * sizeof(float)));
  CUDA_CHECK(cudaMemset(x + 5, 0, 6 * sizeof(float)));
}
void host_pointer_argument() {
  std::vector<float> h(32);
  LAUNCH(oob_write_kernel, 1, 32, 0, 0, h.data(), 32, 0);
}
void sgemm_overrun() {
  cublasHandle_t handle;
  CUBLAS_CHECK(cublasCreate(&handle));
  float *a, *b, *c;
  CUDA_CHECK(cudaMalloc(&a, 15 * sizeof(float)));  // needs 4 x 4
  CUDA_CHECK(cudaMalloc(&b, 16 * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&c, 16 * sizeof(float)));
  simt::name_allocation(a, "weights");
  const float one = 1.0f;
  cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, a, 4, b, 4, &one, c, 4);
}
void smem_overrun() {
  float* x;
  CUDA_CHECK(cudaMalloc(&x, 4));
  LAUNCH(smem_overrun_kernel, 1, 32, 16, 0, x);
  CUDA_CHECK(cudaDeviceSynchronize());
}

TEST(SimtDeathTest, OutOfBoundsAccessesAreReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // fork() with OpenBLAS threads around
  EXPECT_DEATH(oob_write(100),
               "simt: out-of-bounds write by kernel oob_write_kernel.*'victim'.*400 bytes.*offsets "
               "\\[400, 403\\] \\(0 to 3 bytes past its end\\)");
  EXPECT_DEATH(oob_write(-1), "out-of-bounds write by kernel oob_write_kernel: the guard bytes before device allocation "
               "'victim'.*from 4 to 1 bytes before its start");
  EXPECT_DEATH(host_overrun_then_free(), "out-of-bounds write found at cudaFree.*40 bytes");
  EXPECT_DEATH(memcpy_overrun(), "cudaMemcpy\\(HostToDevice\\) destination overruns .*'small'.*4 bytes past its end");
  EXPECT_DEATH(memset_overrun(), "cudaMemset destination overruns");
  EXPECT_DEATH(host_pointer_argument(), "kernel oob_write_kernel: argument 0 .*not device memory");
  EXPECT_DEATH(sgemm_overrun(), "cublasSgemm: matrix A .*overruns .*'weights'");
  EXPECT_DEATH(smem_overrun(), "dynamic shared memory overrun in kernel smem_overrun_kernel");
}

TEST(SimtDeathTest, CrashesInsideKernelsNameTheThread) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // fork() with OpenBLAS threads around
  float* x;
  CUDA_CHECK(cudaMalloc(&x, 4));
#if defined(__SANITIZE_ADDRESS__)  // make test-sanitize: UBSan reports the null store first
  EXPECT_DEATH(LAUNCH1(null_write_kernel, 32, nullptr),
               "runtime error: store to null pointer");
#else
  EXPECT_DEATH(LAUNCH1(null_write_kernel, 32, nullptr),
               "simt: segmentation fault in kernel null_write_kernel .*block \\(0,0,0\\) thread \\(3,0,0\\)");
#endif
#if !defined(SIMT_RACE)  // under ThreadSanitizer, TSan's own SEGV report comes first
  EXPECT_DEATH(LAUNCH1(stack_overflow_kernel, 32, x),
               "simt: segmentation fault \\(fiber stack overflow.*in kernel stack_overflow_kernel .*thread \\(1,0,0\\)");
#endif
  CUDA_CHECK(cudaFree(x));
}

TEST(SimtDeathTest, LaunchErrorThroughLaunchMacroExits) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // fork() with OpenBLAS threads around
  float* x;
  CUDA_CHECK(cudaMalloc(&x, 4));
  EXPECT_EXIT(LAUNCH1(noop_kernel, 2000, x), ::testing::ExitedWithCode(1),
              "invalid configuration argument in noop_kernel");
  CUDA_CHECK(cudaFree(x));
}
#endif  // VIT_SIMT

#if defined(SIMT_RACE)
// ---------------------------------------------------------------------------------------------
// Race mode (make test-race): ThreadSanitizer must report the races that no thread order shows,
// and stay silent on the same code correctly synchronised. Each case runs in a child process
// (EXPECT_RACE / EXPECT_NO_RACE, tests/test_util.h) with halt_on_error, so a report ends it with
// TSan's exit code 66. (Races through WMMA and async copies: tests/test_simt_wmma.cu.)
__global__ void lost_update_kernel(int* bins, int atomic) {
  const int x = threadIdx.x % 4;
  if (atomic) atomicAdd(&bins[x], 1);
  else bins[x]++;  // many threads, one synchronisation interval: a lost update on a GPU
}
__global__ void cross_warp_read_kernel(float* out, int barrier) {
  __shared__ float s[64];
  s[threadIdx.x] = (float)threadIdx.x;
  if (barrier) __syncthreads();
  else __syncwarp();  // orders only this warp: warp 1 reads warp 0's writes unordered
  out[threadIdx.x] = s[63 - threadIdx.x];
}
__global__ void same_warp_read_kernel(float* out) {
  __shared__ float s[32];
  s[threadIdx.x] = (float)threadIdx.x;
  __syncwarp();  // enough within one warp
  out[threadIdx.x] = s[31 - threadIdx.x];
}
__global__ void two_blocks_one_word_kernel(int* word) {
  if (threadIdx.x == 0) *word = (int)blockIdx.x;  // blocks are unordered: a race
}

TEST(SimtRaceDeathTest, LostUpdateAndMissingBarrierAreReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  DevBuf<int> bins(4);
  DevBuf<float> out(64);
  DevBuf<int> word(1);
  bins.zero();
  EXPECT_RACE(LAUNCH(lost_update_kernel, 1, 64, 0, 0, bins.p, 0));
  EXPECT_NO_RACE(LAUNCH(lost_update_kernel, 1, 64, 0, 0, bins.p, 1));
  EXPECT_RACE(LAUNCH(cross_warp_read_kernel, 1, 64, 0, 0, out.p, 0));
  EXPECT_NO_RACE(LAUNCH(cross_warp_read_kernel, 1, 64, 0, 0, out.p, 1));
  EXPECT_NO_RACE(LAUNCH(same_warp_read_kernel, 1, 32, 0, 0, out.p));
  EXPECT_RACE(LAUNCH(two_blocks_one_word_kernel, 2, 32, 0, 0, word.p));
  // Kernel boundaries order everything: the host reads what the kernel wrote, a second kernel
  // reads what the first wrote.
  EXPECT_NO_RACE({
    LAUNCH(cross_warp_read_kernel, 1, 64, 0, 0, out.p, 1);
    std::vector<float> h = out.download();
    LAUNCH(cross_warp_read_kernel, 1, 64, 0, 0, out.p, 1);
    h = out.download();
    if (h[0] != 63.0f) exit(3);
  });
}
#endif  // SIMT_RACE

}  // namespace
