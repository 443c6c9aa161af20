// host/step_graph.h — CUDA graphs of whole training steps, cached by shape (docs/cuda_model.md).
//
// CudaModel::train_step issues one step (each micro-batch's input copy, forward and backward, the
// optimizer) into a stream capture once per shape and replays the graph every step after. For
// the replay to be right, nothing a node reads may change between steps except through memory:
// the model keeps the step's Philox counter, learning rate and Adam bias corrections in a device
// struct that the graph's first node copies from pinned staging, and the batch's images and
// labels are copied from pinned staging by nodes too. Each shape has two graphs (parity 0 and 1)
// over two staging sets, so the host fills the next step's staging while the previous step still
// runs; `done` tells when a staging set may be rewritten.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/model.h"
#include "kernels/common.cuh"

namespace vit {

struct StepGraph {
  cudaGraphExec_t exec = nullptr;
  cudaEvent_t done = nullptr;  // recorded after each launch: the staging below may be rewritten
  std::vector<void*> pinned;   // staging (cudaMallocHost) that this graph's copy nodes read
};

class StepGraphCache {
 public:
  StepGraphCache() = default;
  StepGraphCache(const StepGraphCache&) = delete;
  StepGraphCache& operator=(const StepGraphCache&) = delete;
  ~StepGraphCache();

  // The graph of `key` and `parity` (0 or 1). On first use: setup(g) allocates g.pinned (no CUDA
  // call is allowed during a capture that allocates), then issue(g) is captured on `stream` and
  // instantiated. Launching it is the caller's: launch() below.
  StepGraph& get(const std::string& key, int parity, cudaStream_t stream,
                 const std::function<void(StepGraph&)>& setup,
                 const std::function<void(StepGraph&)>& issue);
  // cudaGraphLaunch on `stream`, then records g.done.
  static void launch(StepGraph& g, cudaStream_t stream);
  size_t size() const { return graphs_.size(); }  // graphs instantiated (two per shape)

 private:
  std::map<std::pair<std::string, int>, StepGraph> graphs_;
};

// Launches of one training step (n_micro micro-batches of `micro` images of synthetic data, train
// mode) of a fresh CUDA model of `c`, counted with kernels/common.cuh's counters: eager
// (cuda_graph off) and replayed as a graph (after a first step that captured it). For vit_bench
// --launches and the launch-count test.
struct StepLaunches {
  LaunchCounts eager, graph;
};
StepLaunches count_step_launches(const Config& c, const ModelOptions& base, const OptimConfig& o,
                                 int micro, int n_micro);

}  // namespace vit
