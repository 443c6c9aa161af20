// host/step_graph.cu — see host/step_graph.h.
#include "host/step_graph.h"

#include <memory>

#include "common/philox.h"

namespace vit {

StepGraphCache::~StepGraphCache() {
  // No CUDA_CHECK: a destructor must not exit. The owner synchronised its stream first.
  for (auto& kv : graphs_) {
    StepGraph& g = kv.second;
    if (g.done) cudaEventSynchronize(g.done);
    if (g.exec) cudaGraphExecDestroy(g.exec);
    if (g.done) cudaEventDestroy(g.done);
    for (void* p : g.pinned) cudaFreeHost(p);
  }
}

StepGraph& StepGraphCache::get(const std::string& key, int parity, cudaStream_t stream,
                               const std::function<void(StepGraph&)>& setup,
                               const std::function<void(StepGraph&)>& issue) {
  auto it = graphs_.find({key, parity});
  if (it != graphs_.end()) return it->second;
  StepGraph& g = graphs_[{key, parity}];
  CUDA_CHECK(cudaEventCreateWithFlags(&g.done, cudaEventDisableTiming));
  setup(g);
  // Thread-local mode: an unsafe call (cudaMalloc, a synchronize) from this thread during the
  // capture fails loudly instead of being captured out of order; other threads (the loader) are
  // not affected.
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  issue(g);
  cudaGraph_t graph = nullptr;
  CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  CUDA_CHECK(cudaGraphInstantiate(&g.exec, graph, 0));
  CUDA_CHECK(cudaGraphDestroy(graph));  // the executable graph keeps what it needs
  return g;
}

void StepGraphCache::launch(StepGraph& g, cudaStream_t stream) {
  CUDA_CHECK(cudaGraphLaunch(g.exec, stream));
  CUDA_CHECK(cudaEventRecord(g.done, stream));
}

StepLaunches count_step_launches(const Config& c, const ModelOptions& base, const OptimConfig& o,
                                 int micro, int n_micro) {
  ModelOptions mo = base;
  mo.max_batch = micro;
  const size_t img_bytes = (size_t)c.channels * mo.input.src_size * mo.input.src_size;
  const int B = micro * n_micro;
  uint8_t* images = nullptr;
  int32_t* labels = nullptr;
  CUDA_CHECK(cudaMallocHost((void**)&images, (size_t)B * img_bytes));
  CUDA_CHECK(cudaMallocHost((void**)&labels, (size_t)B * sizeof(int32_t)));
  for (size_t i = 0; i < (size_t)B * img_bytes; ++i) images[i] = philox_u32(1, 2, 3, i) & 255;
  for (int i = 0; i < B; ++i) labels[i] = (int32_t)(philox_u32(1, 2, 4, i) % c.classes);
  std::vector<Model::MicroBatch> mb;
  for (int m = 0; m < n_micro; ++m)
    mb.push_back({images + (size_t)m * micro * img_bytes, labels + m * micro, micro, (uint64_t)m});

  StepLaunches r;
  for (int graph = 0; graph < 2; ++graph) {
    mo.cuda_graph = graph != 0;
    std::unique_ptr<Model> model = make_cuda_model(c, mo);
    // Two first steps capture the shape's two graphs (parities 0 and 1; their launches are not
    // a step's); eager, they are the same as the third.
    for (int t = 1; t <= 2; ++t) model->train_step(mb.data(), n_micro, o, 1e-4f, t, 1.0f / n_micro);
    const LaunchCounts before = launch_counts();
    model->train_step(mb.data(), n_micro, o, 1e-4f, 3, 1.0f / n_micro);
    (graph ? r.graph : r.eager) = launch_counts() - before;
    model->take_metrics();  // drains the stream before the model goes
  }
  cudaFreeHost(images);
  cudaFreeHost(labels);
  return r;
}

}  // namespace vit
