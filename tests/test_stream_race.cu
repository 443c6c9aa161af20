// tests/test_stream_race.cu — the stream-race stress test of `make gpu-check`: the CUDA model
// copies each input batch on its own copy stream while the compute stream trains on the
// previous one (host/cuda_model.cu: two device slots, events copied_ / consumed_). Here a spin
// kernel holds back the copy stream (so the compute stream must wait for the copy, not find a
// stale slot), the compute stream (so the copy two batches later must wait until the slot has
// been read, not overwrite it), or both, at every step, while the caller scribbles over its
// host buffers as soon as forward() returns. The parameters and metrics after every step must
// be bitwise those of the run without spins.
//
// Only a GPU runs this meaningfully: simt executes every stream in order, so there it checks
// the seam and the determinism only (it still runs, cheaply). Skipped in the nvcc build
// without a GPU, like every CUDA test.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "common/model.h"
#include "common/params.h"
#include "common/philox.h"
#include "host/cuda_model.h"
#include "kernels/common.cuh"
#include "tests/test_util.h"

using namespace vit;

namespace {

// One thread that waits `ticks` of clock64() (GPU cycles; nanoseconds under simt): ~1-2 ms on
// a GPU with the default, long next to a tiny-model step, so the other stream runs ahead.
__global__ void spin_kernel(long long ticks, int* sink) {
  const long long t0 = clock64();
  long long n = 0;
  while (clock64() - t0 < ticks) ++n;
  if (n < 0) *sink = 1;  // never true: keeps the loop from being optimised away
}

void spin(void* stream, int* sink) {
  LAUNCH(spin_kernel, 1, 1, 0, (cudaStream_t)stream, 2000000LL, sink);
}

constexpr uint32_t SITE_RACE = 1001;  // test-only Philox site

struct Trace {
  std::vector<std::vector<float>> params;  // after each step
  Metrics metrics;
};

Trace train(const StreamTestHooks* hooks) {
  const Config c = preset("tiny");
  ModelOptions o;
  o.seed = 77;
  o.max_batch = 4;
  o.precision = vit::Precision::Fp32;
  o.input.augment = Augment::CropFlip;
  const int B = 4, steps = 8;
  set_stream_test_hooks(hooks);
  std::unique_ptr<Model> m = make_cuda_model(c, o);
  const ParamLayout& L = m->layout();
  std::vector<float> z(L.total, 0.0f);
  m->set_adam_state(z.data(), z.data());
  OptimConfig opt;
  opt.kind = OptimConfig::AdamW;
  opt.weight_decay = 0.05f;
  Trace tr;
  std::vector<uint8_t> img((size_t)B * 3 * 32 * 32);
  std::vector<int32_t> y(B);
  for (int t = 1; t <= steps; ++t) {
    for (size_t i = 0; i < img.size(); ++i) img[i] = (uint8_t)philox_u32(5, SITE_RACE, t, i);
    for (int b = 0; b < B; ++b) y[b] = (int32_t)(philox_u32(5, SITE_RACE + 1, t, b) % c.classes);
    m->zero_grad();
    m->forward(img.data(), y.data(), B, true, (uint64_t)t);
    // The caller may reuse its buffers at once (forward() staged them).
    memset(img.data(), 0xAA, img.size());
    for (int b = 0; b < B; ++b) y[b] = 0;
    m->backward();
    m->optimizer_step(opt, 1e-3f, t, 1.0f);
    // Only every other step is read back: in between, the host queues ahead of both streams.
    if (t % 2 == 0) {
      tr.params.emplace_back(L.total);
      m->get_params(tr.params.back().data());
    }
  }
  tr.metrics = m->take_metrics();
  set_stream_test_hooks(nullptr);
  return tr;
}

TEST(StreamRace, SpinKernelsOnEitherStreamChangeNothing) {
  VIT_REQUIRE_GPU();
  int* sink = nullptr;
  ASSERT_EQ(cudaMalloc((void**)&sink, sizeof(int)), cudaSuccess);
  const Trace ref = train(nullptr);
  StreamTestHooks copy, compute, both;
  copy.before_copy = [&](void* s) { spin(s, sink); };
  compute.before_compute = [&](void* s) { spin(s, sink); };
  both.before_copy = copy.before_copy;
  both.before_compute = compute.before_compute;
  const struct { const char* name; const StreamTestHooks* hooks; } cases[] = {
      {"copy stream held back", &copy}, {"compute stream held back", &compute}, {"both", &both}};
  for (const auto& k : cases) {
    SCOPED_TRACE(k.name);
    const Trace got = train(k.hooks);
    ASSERT_EQ(got.params.size(), ref.params.size());
    for (size_t i = 0; i < ref.params.size(); ++i)
      EXPECT_EQ(0, memcmp(got.params[i].data(), ref.params[i].data(), ref.params[i].size() * sizeof(float)))
          << "parameters after step " << 2 * (i + 1) << " differ from the run without spins";
    EXPECT_EQ(got.metrics.loss_sum, ref.metrics.loss_sum);
    EXPECT_EQ(got.metrics.correct, ref.metrics.correct);
    EXPECT_EQ(got.metrics.count, ref.metrics.count);
  }
  cudaFree(sink);
}

}  // namespace
