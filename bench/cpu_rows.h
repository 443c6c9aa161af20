// bench/cpu_rows.h — the parts of vit_bench that run on any machine: host-side loader
// throughput and `--device cpu` training speed (with PyTorch on the same model side by side
// when it is installed).
#pragma once
#include <string>
#include <vector>

#include "common/config.h"

namespace vit {

struct BenchRow {
  std::string section;   // "loader" | "cpu-train" | "pytorch-cpu" | "kernel" | "step" ...
  std::string name;
  std::string shape;
  double ms = 0;           // median time of one unit (batch, step, launch)
  double images_per_s = 0;
  double gbps = 0, tflops = 0, pct_peak = 0;
  std::string note;
};

// Shuffle + gather of a CIFAR-10-sized split (n images) into the loader's staging buffers, one
// prefetch thread, batch `batch`, over `epochs` epochs: images per second. pinned: staging in
// page-locked memory (cudaMallocHost), as vit_train uses it on a GPU.
double bench_loader(int64_t n, int batch, int epochs, bool pinned);

// `--device cpu` training (forward, backward, AdamW) of config c at batch `batch`: images/s,
// median over `steps` steps after one warm-up step.
double bench_cpu_train(const Config& c, int batch, int steps);

// The same model and step in PyTorch on the CPU through tools/bench_pytorch.py; < 0 when
// python3 with torch is not available (`why` says so).
double bench_pytorch_train(const Config& c, int batch, int steps, std::string* why);

// The CPU section of vit_bench. quick=true uses small sizes (for tests); pinned: see bench_loader
// (only where a GPU is present).
std::vector<BenchRow> run_cpu_rows(bool quick, bool with_pytorch, bool pinned = false);

// The two CPU-training models of the issue: the tiny preset, and 4 layers of hidden 64.
Config bench_small_model();

}  // namespace vit
