// tests/test_simt_streams.cu — streams, events and CUDA graphs, from the CUDA documentation.
//
// Two kinds of checks. Documented orderings (stream order, cudaStreamWaitEvent, the legacy
// default stream's implicit synchronisation with blocking streams, blocking cudaMemcpy, graph
// replay, the errors of illegal calls during capture) hold on any GPU and run in both builds.
// The races a program must not have — a missing cudaStreamWaitEvent, a host read of a pinned
// buffer before the synchronize, a blocking cudaMemcpy racing a cudaStreamNonBlocking stream,
// a host overwrite of a queued copy's pinned source — have no defined answer on a GPU; under
// simt (#if VIT_SIMT) they must give the *wrong* answer, every time, so the bug is loud.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "kernels/common.cuh"
#include "tests/cuda_buffer.h"
#include "tests/test_util.h"

using vit_test::DeviceBuffer;

namespace {

// y[i] = x[i] * s + b
__global__ void axpb_kernel(float* y, const float* x, float s, float b, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i] * s + b;
}
// y[i] = x[i] * (*scale): the scale is read from device memory when the kernel runs.
__global__ void scale_by_device_value_kernel(float* y, const float* x, const float* scale, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i] * *scale;
}
__global__ void add_kernel(float* y, const float* a, const float* b, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a[i] + b[i];
}

constexpr int kN = 1000;
// kUploadNote: DeviceBuffer's upload is a cudaMemcpy from pageable memory on the legacy stream,
// which returns once the source is staged, before the copy has landed ("API synchronization
// behavior"), and cudaStreamNonBlocking streams do not wait for the legacy stream. So a test
// synchronises the device before it uses an uploaded buffer on a non-blocking stream; without
// that, simt's kernels read the NaNs of fresh memory (and a GPU's may race).
constexpr int kBlock = 128;

std::vector<float> iota_vec(int n, float start) {
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = start + (float)i;
  return v;
}

struct Pinned {
  float* p = nullptr;
  explicit Pinned(size_t n) { CUDA_CHECK(cudaMallocHost((void**)&p, n * sizeof(float))); }
  ~Pinned() { cudaFreeHost(p); }
};

#if defined(VIT_SIMT)
// Runs the body under every adversarial stream order, then restores the environment's order.
void for_each_stream_order(const std::function<void(const char*)>& f) {
  simt::set_stream_order(simt::StreamOrder::Fifo);
  f("fifo");
  simt::set_stream_order(simt::StreamOrder::Reverse);
  f("reverse");
  simt::set_stream_order(simt::StreamOrder::Shuffle, 7);
  f("shuffle:7");
  simt::reset_stream_order();
}
#else
void for_each_stream_order(const std::function<void(const char*)>& f) { f("gpu"); }
#endif

// Stream a copies x into d; stream b computes y = 2 d + 1 (waiting for a's copy through an
// event when `wait`); returns y after synchronising b.
std::vector<float> copy_then_compute(bool wait) {
  cudaStream_t a, b;
  CUDA_CHECK(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking));
  CUDA_CHECK(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking));
  cudaEvent_t copied;
  CUDA_CHECK(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming));
  Pinned x(kN);
  for (int i = 0; i < kN; ++i) x.p[i] = (float)i;
  DeviceBuffer<float> d(kN), y(kN);
  d.zero();
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemcpyAsync(d.ptr, x.p, kN * sizeof(float), cudaMemcpyHostToDevice, a));
  CUDA_CHECK(cudaEventRecord(copied, a));
  if (wait) CUDA_CHECK(cudaStreamWaitEvent(b, copied, 0));
  LAUNCH(axpb_kernel, vit::ceil_div(kN, kBlock), kBlock, 0, b, y.ptr, d.ptr, 2.0f, 1.0f, kN);
  Pinned out(kN);
  CUDA_CHECK(cudaMemcpyAsync(out.p, y.ptr, kN * sizeof(float), cudaMemcpyDeviceToHost, b));
  CUDA_CHECK(cudaStreamSynchronize(b));
  std::vector<float> r(out.p, out.p + kN);
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaEventDestroy(copied));
  CUDA_CHECK(cudaStreamDestroy(a));
  CUDA_CHECK(cudaStreamDestroy(b));
  return r;
}

}  // namespace

TEST(SimtStreams, WaitEventOrdersWorkAcrossStreams) {
  VIT_REQUIRE_GPU();
  for_each_stream_order([](const char* order) {
    std::vector<float> y = copy_then_compute(true);
    for (int i = 0; i < kN; ++i) ASSERT_EQ(y[i], 2.0f * i + 1.0f) << order << " i=" << i;
  });
}

TEST(SimtStreams, HostFunctionRunsInStreamOrder) {
  VIT_REQUIRE_GPU();
  for_each_stream_order([](const char* order) {
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    DeviceBuffer<float> d(iota_vec(kN, 3.0f));
    CUDA_CHECK(cudaDeviceSynchronize());  // see kUploadNote
    Pinned out(kN);
    out.p[5] = -1.0f;
    struct Seen { const float* p; float v; } seen{out.p, 0.0f};
    CUDA_CHECK(cudaMemcpyAsync(out.p, d.ptr, kN * sizeof(float), cudaMemcpyDeviceToHost, s));
    // The host function may read the copy's destination: it runs after the copy.
    CUDA_CHECK(cudaLaunchHostFunc(s, [](void* u) { auto* q = (Seen*)u; q->v = q->p[5]; }, &seen));
    CUDA_CHECK(cudaStreamSynchronize(s));
    EXPECT_EQ(seen.v, 8.0f) << order;
    CUDA_CHECK(cudaStreamDestroy(s));
  });
}

// The legacy default stream waits for earlier work of blocking streams (cudaStreamCreate), so
// a blocking cudaMemcpy after a kernel on such a stream sees its result.
TEST(SimtStreams, BlockingMemcpyWaitsForBlockingStreams) {
  VIT_REQUIRE_GPU();
  for_each_stream_order([](const char* order) {
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreate(&s));
    DeviceBuffer<float> x(iota_vec(kN, 0.0f)), y(kN);
    LAUNCH(axpb_kernel, vit::ceil_div(kN, kBlock), kBlock, 0, s, y.ptr, x.ptr, 3.0f, 0.0f, kN);
    std::vector<float> h = y.download();  // cudaMemcpy on the legacy stream
    for (int i = 0; i < kN; ++i) ASSERT_EQ(h[i], 3.0f * i) << order;
    // The per-thread default stream is a blocking stream too.
    LAUNCH(axpb_kernel, vit::ceil_div(kN, kBlock), kBlock, 0, cudaStreamPerThread, y.ptr, x.ptr, -1.0f, 0.0f, kN);
    h = y.download();
    for (int i = 0; i < kN; ++i) ASSERT_EQ(h[i], -1.0f * i) << order;
    CUDA_CHECK(cudaStreamDestroy(s));
  });
}

// A polling loop on cudaEventQuery terminates (the device makes progress) and the events give
// an elapsed time once both records ran.
TEST(SimtStreams, QueriesMakeProgress) {
  VIT_REQUIRE_GPU();
  for_each_stream_order([](const char* order) {
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    DeviceBuffer<float> x(iota_vec(kN, 0.0f)), y(kN);
    CUDA_CHECK(cudaDeviceSynchronize());  // see kUploadNote
    CUDA_CHECK(cudaEventRecord(e0, s));
    for (int r = 0; r < 4; ++r)
      LAUNCH(axpb_kernel, vit::ceil_div(kN, kBlock), kBlock, 0, s, y.ptr, x.ptr, 1.0f, 1.0f, kN);
    CUDA_CHECK(cudaEventRecord(e1, s));
#if defined(VIT_SIMT)
    // Nothing forced the work yet: the end event is pending, and so is its elapsed time.
    float early;
    EXPECT_EQ(cudaEventElapsedTime(&early, e0, e1), cudaErrorNotReady) << order;
    EXPECT_EQ(cudaGetLastError(), cudaErrorNotReady);
#endif
    int polls = 0;
    cudaError_t q;
    while ((q = cudaEventQuery(e1)) == cudaErrorNotReady) ++polls;
    EXPECT_EQ(q, cudaSuccess) << order;
    EXPECT_EQ(cudaStreamQuery(s), cudaSuccess) << order;
    float ms = -1.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    EXPECT_GE(ms, 0.0f);
    CUDA_CHECK(cudaEventDestroy(e0));
    CUDA_CHECK(cudaEventDestroy(e1));
    CUDA_CHECK(cudaStreamDestroy(s));
  });
}

// A pageable source of cudaMemcpy is staged before the call returns: overwriting it afterwards
// does not change what lands in device memory ("API synchronization behavior").
TEST(SimtStreams, PageableSourceOfBlockingCopyIsStagedAtTheCall) {
  VIT_REQUIRE_GPU();
  std::vector<float> h = iota_vec(kN, 1.0f);
  DeviceBuffer<float> d(kN);
  CUDA_CHECK(cudaMemcpy(d.ptr, h.data(), kN * sizeof(float), cudaMemcpyHostToDevice));
  std::fill(h.begin(), h.end(), -5.0f);
  std::vector<float> back = d.download();
  for (int i = 0; i < kN; ++i) ASSERT_EQ(back[i], 1.0f + i);
}

// Host threads each driving their own stream (as a prefetch thread may): the queues are shared
// state, and whichever thread synchronises runs the other's queued work.
TEST(SimtStreams, HostThreadsWithTheirOwnStreams) {
  VIT_REQUIRE_GPU();
  auto work = [](float s, std::vector<float>* result) {
    cudaStream_t st;
    CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    DeviceBuffer<float> x(kN), y(kN);
    Pinned in(kN), out(kN);
    for (int i = 0; i < kN; ++i) in.p[i] = (float)i;
    CUDA_CHECK(cudaMemcpyAsync(x.ptr, in.p, kN * sizeof(float), cudaMemcpyHostToDevice, st));
    for (int r = 0; r < 5; ++r) {
      LAUNCH(axpb_kernel, vit::ceil_div(kN, kBlock), kBlock, 0, st, y.ptr, x.ptr, s, 0.0f, kN);
      LAUNCH(axpb_kernel, vit::ceil_div(kN, kBlock), kBlock, 0, st, x.ptr, y.ptr, 1.0f, 0.0f, kN);
    }
    CUDA_CHECK(cudaMemcpyAsync(out.p, x.ptr, kN * sizeof(float), cudaMemcpyDeviceToHost, st));
    CUDA_CHECK(cudaStreamSynchronize(st));
    result->assign(out.p, out.p + kN);
    CUDA_CHECK(cudaStreamDestroy(st));
  };
  std::vector<float> r1, r2;
  std::thread t1(work, 2.0f, &r1), t2(work, -1.0f, &r2);
  t1.join();
  t2.join();
  for (int i = 0; i < kN; ++i) {
    ASSERT_EQ(r1[i], 32.0f * i);
    ASSERT_EQ(r2[i], -1.0f * i);
  }
}

#if defined(VIT_SIMT)
// ---------------------------------------------------------------------------------------------
// The races: simt must make each of them give the wrong answer.

TEST(SimtStreams, MissingWaitEventGivesWrongResult) {
  for (auto order : {simt::StreamOrder::Reverse, simt::StreamOrder::Shuffle}) {
    simt::set_stream_order(order, 1);
    std::vector<float> y = copy_then_compute(false);
    // Stream b ran before a's copy: it read d's zeros, not x.
    EXPECT_EQ(y[10], 1.0f) << "stream order " << (int)order;
  }
  // Issue order (fifo) and eager hide it, which is why they are not the default.
  simt::set_stream_order(simt::StreamOrder::Fifo);
  EXPECT_EQ(copy_then_compute(false)[10], 21.0f);
  simt::reset_stream_order();
}

TEST(SimtStreams, HostReadOfPinnedBufferBeforeSynchronizeSeesOldContents) {
  for_each_stream_order([](const char* order) {
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    DeviceBuffer<float> x(iota_vec(kN, 0.0f)), y(kN);
    CUDA_CHECK(cudaDeviceSynchronize());  // see kUploadNote
    Pinned out(kN);
    for (int i = 0; i < kN; ++i) out.p[i] = -1.0f;
    LAUNCH(axpb_kernel, vit::ceil_div(kN, kBlock), kBlock, 0, s, y.ptr, x.ptr, 1.0f, 100.0f, kN);
    CUDA_CHECK(cudaMemcpyAsync(out.p, y.ptr, kN * sizeof(float), cudaMemcpyDeviceToHost, s));
    EXPECT_EQ(out.p[7], -1.0f) << order << ": read before cudaStreamSynchronize";
    CUDA_CHECK(cudaStreamSynchronize(s));
    EXPECT_EQ(out.p[7], 107.0f) << order;
    CUDA_CHECK(cudaStreamDestroy(s));
  });
}

TEST(SimtStreams, BlockingMemcpyDoesNotWaitForNonBlockingStream) {
  for (auto order : {simt::StreamOrder::Reverse, simt::StreamOrder::Shuffle}) {
    simt::set_stream_order(order, 3);
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    DeviceBuffer<float> x(iota_vec(kN, 0.0f)), y(kN);
    y.zero();
    CUDA_CHECK(cudaDeviceSynchronize());
    LAUNCH(axpb_kernel, vit::ceil_div(kN, kBlock), kBlock, 0, s, y.ptr, x.ptr, 3.0f, 0.0f, kN);
    std::vector<float> h = y.download();  // legacy stream: no implicit wait on s
    EXPECT_EQ(h[9], 0.0f) << (int)order;
    CUDA_CHECK(cudaStreamSynchronize(s));
    EXPECT_EQ(y.download()[9], 27.0f) << (int)order;
    CUDA_CHECK(cudaStreamDestroy(s));
  }
  simt::reset_stream_order();
}

TEST(SimtStreams, HostOverwriteOfQueuedCopysPinnedSourceIsWhatLands) {
  for_each_stream_order([](const char* order) {
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    Pinned src(kN);
    for (int i = 0; i < kN; ++i) src.p[i] = 1.0f;
    DeviceBuffer<float> d(kN);
    CUDA_CHECK(cudaMemcpyAsync(d.ptr, src.p, kN * sizeof(float), cudaMemcpyHostToDevice, s));
    for (int i = 0; i < kN; ++i) src.p[i] = 2.0f;  // too early: the copy has not run
    CUDA_CHECK(cudaStreamSynchronize(s));
    EXPECT_EQ(d.download()[3], 2.0f) << order;
    CUDA_CHECK(cudaStreamDestroy(s));
  });
}

TEST(SimtStreams, EagerOrderRunsEverythingAtTheCall) {
  simt::set_stream_order(simt::StreamOrder::Eager);
  EXPECT_EQ(copy_then_compute(false)[10], 21.0f);
  simt::reset_stream_order();
}

// CUDA forbids CUDA calls from a host function running on a stream: simt aborts naming it.
TEST(SimtStreamsDeathTest, CudaCallFromHostFunctionAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        CUDA_CHECK(cudaLaunchHostFunc(0, [](void*) { cudaDeviceSynchronize(); }, nullptr));
        CUDA_CHECK(cudaDeviceSynchronize());
      },
      "cudaDeviceSynchronize called from a host function or callback running on a stream");
}

TEST(SimtStreamsDeathTest, BadEnvironmentValueNamesTheVariable) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        setenv("SIMT_STREAMS", "sideways", 1);
        simt::reset_stream_order();
      },
      "SIMT_STREAMS=sideways: expected eager, fifo, reverse or shuffle");
}
#endif  // VIT_SIMT

// ---------------------------------------------------------------------------------------------
// CUDA graphs.
namespace {

// The sequence captured and replayed: a memset, a host-to-device copy, a fork onto a second
// stream (through an event) running a kernel, a cuBLAS GEMM on the first, a join, a kernel
// combining both, and a device-to-device copy. out = x W (as column-major GEMM) + (2x + 1).
struct Sequence {
  int n = 64;  // x: n x n, W: n x n
  cudaStream_t s = nullptr, side = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
  cublasHandle_t h = nullptr;
  Pinned xin{(size_t)64 * 64};
  DeviceBuffer<float> x{(size_t)64 * 64}, w{(size_t)64 * 64}, g{(size_t)64 * 64},
      t{(size_t)64 * 64}, sum{(size_t)64 * 64}, out{(size_t)64 * 64};
  Sequence() {
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
    CUBLAS_CHECK(cublasCreate(&h));
    CUBLAS_CHECK(cublasSetStream(h, s));
    std::vector<float> wv(n * n);
    for (int i = 0; i < n * n; ++i) wv[i] = (float)((i * 7) % 13) * 0.125f - 0.75f;
    w.upload(wv);
    for (int i = 0; i < n * n; ++i) xin.p[i] = (float)((i * 5) % 11) * 0.25f - 1.0f;
    CUDA_CHECK(cudaDeviceSynchronize());  // see kUploadNote
  }
  ~Sequence() {
    cublasDestroy(h);
    cudaEventDestroy(fork);
    cudaEventDestroy(join);
    cudaStreamDestroy(s);
    cudaStreamDestroy(side);
  }
  void issue(float bias) {
    const int nn = n * n;
    const unsigned grid = vit::ceil_div(nn, kBlock);
    CUDA_CHECK(cudaMemsetAsync(t.ptr, 0, nn * sizeof(float), s));
    CUDA_CHECK(cudaMemcpyAsync(x.ptr, xin.p, nn * sizeof(float), cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaEventRecord(fork, s));
    CUDA_CHECK(cudaStreamWaitEvent(side, fork, 0));
    LAUNCH(axpb_kernel, grid, kBlock, 0, side, g.ptr, x.ptr, 2.0f, bias, nn);
    CUDA_CHECK(cudaEventRecord(join, side));
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, x.ptr, n, w.ptr, n, &zero, t.ptr, n));
    CUDA_CHECK(cudaStreamWaitEvent(s, join, 0));
    LAUNCH(add_kernel, grid, kBlock, 0, s, sum.ptr, t.ptr, g.ptr, nn);
    CUDA_CHECK(cudaMemcpyAsync(out.ptr, sum.ptr, nn * sizeof(float), cudaMemcpyDeviceToDevice, s));
  }
  std::vector<float> result() {
    CUDA_CHECK(cudaStreamSynchronize(s));
    return out.download();
  }
  void clear() {
    out.zero();
    sum.zero();
    g.zero();
    t.zero();
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  cudaGraph_t capture(float bias) {
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    issue(bias);
    cudaGraph_t graph = nullptr;
    CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    return graph;
  }
};

}  // namespace

TEST(SimtGraph, ReplayIsBitIdenticalToEagerExecution) {
  VIT_REQUIRE_GPU();
  for_each_stream_order([](const char* order) {
    Sequence q;
    q.issue(1.0f);
    std::vector<float> eager = q.result();
    // Sanity: out = x W + 2x + 1 (checked at one element against a plain loop).
    double ref = 0.0;
    std::vector<float> wv = q.w.download();
    for (int k = 0; k < q.n; ++k) ref += (double)q.xin.p[k * q.n + 3] * wv[5 * q.n + k];
    ref += 2.0 * q.xin.p[5 * q.n + 3] + 1.0;
    EXPECT_NEAR(eager[5 * q.n + 3], ref, 1e-4) << order;

    q.clear();
    cudaGraph_t graph = q.capture(1.0f);
    size_t nodes = 0;
    CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &nodes));
    EXPECT_GE(nodes, 6u);
#if defined(VIT_SIMT)
    // Capture only records: nothing ran.
    EXPECT_EQ(q.out.download()[0], 0.0f);
#endif
    cudaGraphExec_t exec;
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    CUDA_CHECK(cudaGraphLaunch(exec, q.s));
    EXPECT_TRUE(vit_test::bitwise_equal(q.result(), eager)) << order;
    q.clear();
    CUDA_CHECK(cudaGraphLaunch(exec, q.s));  // and again
    EXPECT_TRUE(vit_test::bitwise_equal(q.result(), eager)) << order;
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(graph));
  });
}

TEST(SimtGraph, ReplayReadsDeviceMemoryAndPinnedSourcesWhenItRuns) {
  VIT_REQUIRE_GPU();
  for_each_stream_order([](const char* order) {
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    DeviceBuffer<float> x(iota_vec(kN, 0.0f)), y(kN), scale(1);
    CUDA_CHECK(cudaDeviceSynchronize());  // see kUploadNote
    Pinned hscale(1), out(kN);
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    // The step's scalar comes in through a pinned buffer, as a trainer's learning rate would.
    CUDA_CHECK(cudaMemcpyAsync(scale.ptr, hscale.p, sizeof(float), cudaMemcpyHostToDevice, s));
    LAUNCH(scale_by_device_value_kernel, vit::ceil_div(kN, kBlock), kBlock, 0, s, y.ptr, x.ptr, scale.ptr, kN);
    CUDA_CHECK(cudaMemcpyAsync(out.p, y.ptr, kN * sizeof(float), cudaMemcpyDeviceToHost, s));
    cudaGraph_t graph;
    CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    cudaGraphExec_t exec;
    CUDA_CHECK(cudaGraphInstantiateWithFlags(&exec, graph, 0));
    for (float v : {2.0f, -0.5f, 3.0f}) {
      hscale.p[0] = v;
      CUDA_CHECK(cudaGraphLaunch(exec, s));
      CUDA_CHECK(cudaStreamSynchronize(s));
      EXPECT_EQ(out.p[10], 10.0f * v) << order;
    }
    // Updating device memory the kernel reads changes the next replay.
    const float seven = 7.0f;
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(graph));
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    LAUNCH(scale_by_device_value_kernel, vit::ceil_div(kN, kBlock), kBlock, 0, s, y.ptr, x.ptr, scale.ptr, kN);
    CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    CUDA_CHECK(cudaMemcpyAsync(scale.ptr, &seven, sizeof(float), cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaGraphLaunch(exec, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    EXPECT_EQ(y.download()[4], 28.0f) << order;
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(graph));
    CUDA_CHECK(cudaStreamDestroy(s));
  });
}

TEST(SimtGraph, ExecUpdateChangesKernelArgumentsAndRejectsOtherKernels) {
  VIT_REQUIRE_GPU();
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  DeviceBuffer<float> x(iota_vec(kN, 0.0f)), y(kN);
  CUDA_CHECK(cudaDeviceSynchronize());  // see kUploadNote
  auto capture = [&](float b, bool other_kernel) {
    cudaGraph_t g;
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    if (other_kernel)
      LAUNCH(add_kernel, vit::ceil_div(kN, kBlock), kBlock, 0, s, y.ptr, x.ptr, x.ptr, kN);
    else
      LAUNCH(axpb_kernel, vit::ceil_div(kN, kBlock), kBlock, 0, s, y.ptr, x.ptr, 1.0f, b, kN);
    CUDA_CHECK(cudaStreamEndCapture(s, &g));
    return g;
  };
  cudaGraph_t g1 = capture(1.0f, false), g2 = capture(50.0f, false), g3 = capture(0.0f, true);
  cudaGraphExec_t exec;
  CUDA_CHECK(cudaGraphInstantiate(&exec, g1, 0));
  CUDA_CHECK(cudaGraphLaunch(exec, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  EXPECT_EQ(y.download()[2], 3.0f);
  cudaGraphExecUpdateResultInfo info;
  CUDA_CHECK(cudaGraphExecUpdate(exec, g2, &info));
  EXPECT_EQ(info.result, cudaGraphExecUpdateSuccess);
  CUDA_CHECK(cudaGraphLaunch(exec, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  EXPECT_EQ(y.download()[2], 52.0f);
  // A different kernel function cannot be swapped in.
  EXPECT_EQ(cudaGraphExecUpdate(exec, g3, &info), cudaErrorGraphExecUpdateFailure);
  EXPECT_EQ(info.result, cudaGraphExecUpdateErrorFunctionChanged);
  EXPECT_EQ(cudaGetLastError(), cudaErrorGraphExecUpdateFailure);
  CUDA_CHECK(cudaGraphLaunch(exec, s));  // still the updated graph
  CUDA_CHECK(cudaStreamSynchronize(s));
  EXPECT_EQ(y.download()[2], 52.0f);
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  for (cudaGraph_t g : {g1, g2, g3}) CUDA_CHECK(cudaGraphDestroy(g));
  CUDA_CHECK(cudaStreamDestroy(s));
}

TEST(SimtGraph, CaptureStatusAndInfo) {
  VIT_REQUIRE_GPU();
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  DeviceBuffer<float> x(iota_vec(kN, 0.0f)), y(kN);
  cudaStreamCaptureStatus st;
  CUDA_CHECK(cudaStreamIsCapturing(s, &st));
  EXPECT_EQ(st, cudaStreamCaptureStatusNone);
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  EXPECT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaErrorIllegalState);
  cudaGetLastError();
  LAUNCH(axpb_kernel, vit::ceil_div(kN, kBlock), kBlock, 0, s, y.ptr, x.ptr, 1.0f, 0.0f, kN);
  unsigned long long id = 0;
  cudaGraph_t g_in = nullptr;
  const cudaGraphNode_t* deps = nullptr;
  size_t ndeps = 0;
  CUDA_CHECK(cudaStreamGetCaptureInfo(s, &st, &id, &g_in, &deps, nullptr, &ndeps));
  EXPECT_EQ(st, cudaStreamCaptureStatusActive);
  EXPECT_NE(g_in, nullptr);
  ASSERT_EQ(ndeps, 1u);  // the next node depends on the kernel just captured
  cudaGraphNodeType type;
  CUDA_CHECK(cudaGraphNodeGetType(deps[0], &type));
  EXPECT_EQ(type, cudaGraphNodeTypeKernel);
  cudaGraph_t g;
  CUDA_CHECK(cudaStreamEndCapture(s, &g));
  EXPECT_EQ(g, g_in);
  CUDA_CHECK(cudaStreamIsCapturing(s, &st));
  EXPECT_EQ(st, cudaStreamCaptureStatusNone);
  CUDA_CHECK(cudaGraphDestroy(g));
  CUDA_CHECK(cudaStreamDestroy(s));
}

// Operations illegal during capture fail with the documented codes and invalidate the capture,
// whose cudaStreamEndCapture then returns cudaErrorStreamCaptureInvalidated and no graph.
TEST(SimtGraph, IllegalOperationsDuringCaptureAreRejected) {
  VIT_REQUIRE_GPU();
  cudaStream_t s, blocking;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CUDA_CHECK(cudaStreamCreate(&blocking));
  DeviceBuffer<float> x(iota_vec(kN, 0.0f)), y(kN);
  auto launch_on = [&](cudaStream_t st) {
    LAUNCH(axpb_kernel, vit::ceil_div(kN, kBlock), kBlock, 0, st, y.ptr, x.ptr, 1.0f, 0.0f, kN);
  };
  auto end_invalidated = [&](cudaStream_t st, const char* what) {
    cudaGraph_t g = (cudaGraph_t)0x1;
    EXPECT_EQ(cudaStreamEndCapture(st, &g), cudaErrorStreamCaptureInvalidated) << what;
    EXPECT_EQ(g, nullptr) << what;
    cudaGetLastError();
  };

  // The legacy stream cannot capture.
  EXPECT_EQ(cudaStreamBeginCapture(0, cudaStreamCaptureModeGlobal), cudaErrorStreamCaptureUnsupported);
  cudaGetLastError();

  // Synchronizing a capturing stream.
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  launch_on(s);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
  cudaStreamCaptureStatus st;
  CUDA_CHECK(cudaStreamIsCapturing(s, &st));
  EXPECT_EQ(st, cudaStreamCaptureStatusInvalidated);
  end_invalidated(s, "cudaStreamSynchronize");

  // cudaMalloc is a potentially unsafe call: prohibited in global mode, allowed in relaxed.
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, 64), cudaErrorStreamCaptureUnsupported);
  end_invalidated(s, "cudaMalloc");
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  EXPECT_EQ(cudaMalloc(&p, 64), cudaSuccess);
  launch_on(s);
  cudaGraph_t g;
  CUDA_CHECK(cudaStreamEndCapture(s, &g));
  CUDA_CHECK(cudaGraphDestroy(g));
  CUDA_CHECK(cudaFree(p));

  // Legacy-stream work while a blocking stream captures would depend on the capture.
  CUDA_CHECK(cudaStreamBeginCapture(blocking, cudaStreamCaptureModeGlobal));
  launch_on(blocking);
  EXPECT_EQ(cudaMemsetAsync(y.ptr, 0, 4, 0), cudaErrorStreamCaptureImplicit);
  end_invalidated(blocking, "legacy-stream memset");
  // ... but not while a non-blocking stream captures.
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  launch_on(s);
  CUDA_CHECK(cudaMemsetAsync(y.ptr, 0, 4, 0));
  CUDA_CHECK(cudaStreamEndCapture(s, &g));
  CUDA_CHECK(cudaGraphDestroy(g));

  // Device synchronize during a capture.
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorStreamCaptureUnsupported);
  end_invalidated(s, "cudaDeviceSynchronize");

  // Events recorded in a capture cannot be queried; a fork that never joins is unjoined.
  cudaStream_t side;
  CUDA_CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  cudaEvent_t e;
  CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  launch_on(s);
  CUDA_CHECK(cudaEventRecord(e, s));
  EXPECT_EQ(cudaEventQuery(e), cudaErrorCapturedEvent);
  cudaGetLastError();
  CUDA_CHECK(cudaStreamWaitEvent(side, e, 0));
  CUDA_CHECK(cudaStreamIsCapturing(side, &st));
  EXPECT_EQ(st, cudaStreamCaptureStatusActive);  // side joined the capture
  launch_on(side);
  g = (cudaGraph_t)0x1;
  EXPECT_EQ(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureUnjoined);
  EXPECT_EQ(g, nullptr);
  cudaGetLastError();
  CUDA_CHECK(cudaStreamIsCapturing(side, &st));
  EXPECT_EQ(st, cudaStreamCaptureStatusNone);  // the failed end terminated the whole sequence

  // Only the origin stream ends a capture.
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  CUDA_CHECK(cudaEventRecord(e, s));
  CUDA_CHECK(cudaStreamWaitEvent(side, e, 0));
  EXPECT_EQ(cudaStreamEndCapture(side, &g), cudaErrorStreamCaptureUnmatched);
  cudaGetLastError();
  g = nullptr;
  cudaStreamEndCapture(s, &g);  // ends it, valid or invalidated
  cudaGetLastError();
  if (g) CUDA_CHECK(cudaGraphDestroy(g));

  CUDA_CHECK(cudaEventDestroy(e));
  CUDA_CHECK(cudaStreamDestroy(side));
  CUDA_CHECK(cudaStreamDestroy(blocking));
  CUDA_CHECK(cudaStreamDestroy(s));
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}
