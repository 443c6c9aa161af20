// bench/gpu_rows.h — the GPU section of vit_bench (nvcc build only; needs a GPU to run).
#pragma once
#include <vector>

#include "bench/cpu_rows.h"

namespace vit {
std::vector<BenchRow> run_gpu_rows(bool quick);
}
