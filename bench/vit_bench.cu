// bench/vit_bench.cu — how fast vit.cu is, measured against the hardware and against
// cuBLAS/cuDNN. No timing lives in tests; it lives here.
//
//   ./vit_bench                 everything this machine can run: the GPU section when a GPU is
//                               present, then the CPU rows (loader, --device cpu training, and
//                               PyTorch on the same model when torch is installed), then the cost
//                               model of both presets
//   ./vit_bench --cost [--preset P] [--batch-size N]   the step cost model only
//   ./vit_bench --json FILE     also write every row to FILE
//   ./vit_bench --launches [--preset P] [--batch-size N]   launches of one training step, counted
//                               by running two real steps of the CUDA model (needs a GPU)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/cpu_rows.h"
#include "bench/gpu_rows.h"
#include "common/config.h"
#include "common/cost.h"
#include "common/error.h"
#include "host/step_graph.h"
#include "kernels/common.cuh"

using namespace vit;

static const char* USAGE =
    "usage: vit_bench [--cost | --launches] [--preset basic|vit-b16|tiny] [--batch-size N] [--quick]\n"
    "                 [--no-pytorch] [--json FILE]\n"
    "  --cost        print the step cost model (parameters, FLOPs by layer type, memory,\n"
    "                roofline floor on named GPUs) and exit\n"
    "  --launches    count the launches of one training step (kernels + cuBLAS + memsets and\n"
    "                copies) eagerly and as a CUDA graph: 'launches/step <preset>: N eager, G graph'\n"
    "  --preset P    the model of --cost / --launches (default: both basic and vit-b16)\n"
    "  --batch-size  batch of --cost (default 64 for basic, 32 for vit-b16)\n"
    "  --quick       small sizes (seconds), for smoke tests\n"
    "  --no-pytorch  skip the PyTorch comparison rows\n"
    "  --json FILE   write all rows to FILE as JSON\n";

static void print_rows(const std::vector<BenchRow>& rows) {
  printf("%-12s %-28s %-28s %10s %12s %9s %9s %7s  %s\n", "section", "name", "shape", "ms",
         "images/s", "GB/s", "TFLOP/s", "%peak", "note");
  for (const BenchRow& r : rows)
    printf("%-12s %-28s %-28s %10.3f %12.0f %9.1f %9.2f %7.1f  %s\n", r.section.c_str(),
           r.name.c_str(), r.shape.c_str(), r.ms, r.images_per_s, r.gbps, r.tflops, r.pct_peak,
           r.note.c_str());
}

static int run(int argc, char** argv) {
  bool cost_only = false, quick = false, pytorch = true, launches = false;
  std::string json_path, preset_name;
  int batch = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") { fputs(USAGE, stdout); return 0; }
    else if (a == "--cost") cost_only = true;
    else if (a == "--launches") launches = true;
    else if (a == "--quick") quick = true;
    else if (a == "--no-pytorch") pytorch = false;
    else if (a == "--json") json_path = value();
    else if (a == "--preset") { preset_name = value(); preset(preset_name); }
    else if (a == "--batch-size") {
      std::string v = value();
      batch = atoi(v.c_str());
      if (batch <= 0) throw Error("--batch-size must be a positive integer (got '" + v + "')");
    } else throw Error("unknown flag '" + a + "' (see --help)");
  }

  std::vector<std::string> presets =
      preset_name.empty() ? std::vector<std::string>{"basic", "vit-b16"}
                          : std::vector<std::string>{preset_name};
  if (launches) {
    // One real step of the CUDA model per preset at its batch (the trainer's defaults: no
    // clipping, one micro-batch), counted by kernels/common.cuh's counters.
    for (const std::string& p : presets) {
      int b = batch ? batch : (p == "vit-b16" ? 32 : 64);
      Config c = preset(p);
      ModelOptions mo;
      mo.input.src_size = 32;  // CIFAR-10
      const char* note = "";
#if defined(VIT_SIMT)
      // simt runs the kernels on the CPU: count at a width it runs in seconds. The count depends
      // on the structure (layers, dropout, final LN, qkv bias, a resized input), not on widths
      // or the batch (tests/test_step_graph.cu checks the same reduction).
      const bool resized = c.image_size != mo.input.src_size;
      mo.input.src_size = 16;
      c.image_size = resized ? 32 : 16;
      c.patch_size = resized ? 8 : 4;
      c.hidden = 32;
      c.heads = 2;
      c.mlp = 64;
      b = 2;
      note = "  [simt: counted at hidden 32, batch 2; same structure]";
#endif
      StepLaunches n = count_step_launches(c, mo, OptimConfig(), b, 1);
      printf("launches/step %s: %llu eager, %llu graph  (eager: %llu kernels, %llu library "
             "calls, %llu memsets/copies)%s\n",
             p.c_str(), (unsigned long long)n.eager.total(), (unsigned long long)n.graph.total(),
             (unsigned long long)n.eager.kernels, (unsigned long long)n.eager.library,
             (unsigned long long)n.eager.memops, note);
    }
    return 0;
  }
  std::string cost;
  for (const std::string& p : presets) {
    int b = batch ? batch : (p == "vit-b16" ? 32 : 64);
    cost += cost_report(preset(p), p, b, 50000);
  }
  if (cost_only) { fputs(cost.c_str(), stdout); return 0; }

  std::vector<BenchRow> rows;
  int n_gpu = 0;
  if (cudaGetDeviceCount(&n_gpu) != cudaSuccess) n_gpu = 0;
  cudaGetLastError();
  if (n_gpu == 0) {
    printf("vit_bench: no CUDA GPU found: skipping the GPU section (kernels, cuBLAS/cuDNN "
           "baselines, whole step); CPU rows and the cost model follow\n");
  } else {
    std::vector<BenchRow> g = run_gpu_rows(quick);
    print_rows(g);
    rows.insert(rows.end(), g.begin(), g.end());
  }
  std::vector<BenchRow> c = run_cpu_rows(quick, pytorch, /*pinned=*/n_gpu > 0);
  print_rows(c);
  rows.insert(rows.end(), c.begin(), c.end());
  printf("\n%s", cost.c_str());

  if (!json_path.empty()) {
    nlohmann::json j = nlohmann::json::array();
    for (const BenchRow& r : rows)
      j.push_back({{"section", r.section}, {"name", r.name}, {"shape", r.shape}, {"ms", r.ms},
                   {"images_per_s", r.images_per_s}, {"gbps", r.gbps}, {"tflops", r.tflops},
                   {"pct_peak", r.pct_peak}, {"note", r.note}});
    std::ofstream f(json_path);
    f << j.dump(1) << "\n";
    if (!f) throw Error("cannot write " + json_path);
  }
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    fprintf(stderr, "vit_bench: error: %s\n", e.what());
    return 1;
  }
}
