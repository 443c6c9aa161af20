// host/cuda_model.h — the CUDA implementation of vit::Model (common/model.h).
//
// make_cuda_model(config, options) (declared in common/model.h) returns a model that runs the
// whole ViT — input pipeline, forward, backward, gradient clipping and Adam/AdamW — on the GPU
// with the kernels of kernels/*.cuh and cuBLAS, on one compute stream (plus a copy stream for
// the input batches). Under simt (the g++ test build) the same code runs on the CPU.
//
// Device memory (see docs/cuda_model.md):
//   parameters, gradients, Adam m, Adam v   one allocation each, layout().total floats, in
//                                           ParamLayout order (so the optimizer is one launch)
//   BF16 weights (bf16 mode)                layout().total bf16, written with the parameters
//   activations                             one arena planned from the config and max_batch:
//                                           the uint8 input slots, every activation the backward
//                                           needs, the activation gradients and the scratch.
// cuda_memory_plan() computes those sizes without touching a GPU, so the trainer can log them
// before the allocation (and an out-of-memory error can say what was asked).
#pragma once
#include <cstddef>
#include <functional>
#include <string>

#include "common/config.h"
#include "common/model.h"

namespace vit {

struct CudaMemoryPlan {
  int max_batch = 0;
  size_t param_floats = 0;      // ParamLayout::total (floats per flat buffer)
  size_t param_bytes = 0;       // parameters + gradients + Adam m + Adam v (4 buffers), and in
                                // bf16 mode the BF16 weight copy
  bool bf16 = false;            // --precision bf16: GEMM-only activations stored in BF16
  size_t activation_bytes = 0;  // the activation arena (inputs, saved activations, their
                                // gradients, kernel scratch), 256-byte aligned pieces
  bool fp16_input = false;      // the model input is stored in FP16 (uses_fp16_input)
  size_t input_bytes = 0;       // of which the model input (B, 3, R, R) takes this much
  size_t total_bytes() const { return param_bytes + activation_bytes; }
  // One line for the training log, e.g.
  // "GPU memory plan: parameters 327.3 MiB + gradients 327.3 MiB + Adam m,v 654.7 MiB
  //  (85806348 floats each) + activations 3.82 GiB (batch 32, FP16 input 9.2 MiB) =
  //  5.10 GiB (+ cuBLAS workspace)" (vit-b16 at 224, 10 classes).
  std::string describe() const;
};

// The one-line error when the plan does not fit in `free_bytes` of device memory: what was
// asked (split), what is free, and which flags to change.
std::string out_of_memory_message(const CudaMemoryPlan& p, size_t free_bytes);

// Test seam of the stream-race stress test (tests/test_stream_race.cu): when set, forward()
// calls before_copy(copy stream) right before it queues a batch's host -> device copies, and
// before_compute(compute stream) right before it queues the first kernel that reads the copied
// slot, so a test can hold either stream back with a spin kernel and check that the events
// between them (copied_, consumed_) alone keep the results right. The streams are cudaStream_t
// passed as void* (this header has no CUDA types). Process-wide; nullptr (the default) is off.
struct StreamTestHooks {
  std::function<void(void* copy_stream)> before_copy;
  std::function<void(void* compute_stream)> before_compute;
};
void set_stream_test_hooks(const StreamTestHooks* hooks);

// The device memory make_cuda_model(c, o) will allocate. Pure host arithmetic.
// Throws vit::Error when the config is invalid or o.max_batch < 1.
CudaMemoryPlan cuda_memory_plan(const Config& c, const ModelOptions& o);

}  // namespace vit
