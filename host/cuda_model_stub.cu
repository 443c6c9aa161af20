// host/cuda_model_stub.cu — TEMPORARY weak definitions of the model factories of
// common/model.h, so vit_train and the test binary link before the CUDA model (branch
// cudamodel) and the full CPU reference model (branch cpuref) are merged. The real, strong
// definitions replace these at link time; delete this file once both have landed.
#include "common/error.h"
#include "common/model.h"

namespace vit {

__attribute__((weak)) std::unique_ptr<Model> make_cuda_model(const Config&, const ModelOptions&) {
  throw Error("this build has no CUDA model yet: use --device cpu");
}
__attribute__((weak)) std::unique_ptr<Model> make_cpu_model(const Config&, const ModelOptions&) {
  throw Error("this build has no CPU reference model yet");
}
__attribute__((weak)) void init_params(const Config&, const ParamLayout&, uint64_t, float*) {
  throw Error("this build has no init_params yet");
}

}  // namespace vit
