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
//   activations                             one arena planned from the config and max_batch:
//                                           the uint8 input slots, every activation the backward
//                                           needs, the activation gradients and the scratch.
// cuda_memory_plan() computes those sizes without touching a GPU, so the trainer can log them
// before the allocation (and an out-of-memory error can say what was asked).
#pragma once
#include <cstddef>
#include <string>

#include "common/config.h"
#include "common/model.h"

namespace vit {

struct CudaMemoryPlan {
  int max_batch = 0;
  size_t param_floats = 0;      // ParamLayout::total (floats per flat buffer)
  size_t param_bytes = 0;       // parameters + gradients + Adam m + Adam v (4 buffers)
  size_t activation_bytes = 0;  // the activation arena (inputs, saved activations, their
                                // gradients, kernel scratch), 256-byte aligned pieces
  size_t total_bytes() const { return param_bytes + activation_bytes; }
  // One line for the training log, e.g.
  // "GPU memory: 19.4 MiB parameters+gradients+Adam (1.2M params), 1.05 GiB activations
  //  (batch 64), 1.07 GiB in all (+ cuBLAS workspace)".
  std::string describe() const;
};

// The device memory make_cuda_model(c, o) will allocate. Pure host arithmetic.
// Throws vit::Error when the config is invalid or o.max_batch < 1.
CudaMemoryPlan cuda_memory_plan(const Config& c, const ModelOptions& o);

}  // namespace vit
