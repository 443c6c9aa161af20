// host/vit_predict.cu — classify images with a trained ViT (or PyTorch weights): main() around
// common/predict's predict_main, plus the choice of device. See `vit_predict --help`.
#include <iostream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/model.h"
#include "common/predict.h"
#include "kernels/common.cuh"

static std::unique_ptr<vit::Model> make_model(const std::string& device, const vit::Config& c,
                                              const vit::ModelOptions& o) {
  if (device == "cpu") return vit::make_cpu_model(c, o);
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0)
    throw vit::Error(std::string("--device cuda: no usable CUDA GPU (") +
                     (e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device") +
                     "): use --device cpu");
  return vit::make_cuda_model(c, o);
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    return vit::predict_main(args, std::cout, std::cerr, make_model);
  } catch (const std::exception& e) {  // not a user error: still one line, still non-zero
    std::cerr << "vit_predict: error: " << e.what() << "\n";
    return 1;
  }
}
