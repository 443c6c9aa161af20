#include "bench/cpu_rows.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "common/cifar.h"
#include "common/model.h"
#include "common/philox.h"
#include "host/loader.h"

namespace vit {

using Clock = std::chrono::steady_clock;
static double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

Config bench_small_model() {
  Config c = preset("basic");
  c.hidden = 64; c.layers = 4; c.heads = 4; c.mlp = 256;
  return c;
}

double bench_loader(int64_t n, int batch, int epochs, bool pinned) {
  // A CIFAR-format split of n random images in a scratch directory.
  char tmpl[] = "/tmp/vit_bench_XXXXXX";
  if (!mkdtemp(tmpl)) return -1;
  std::string dir = tmpl;
  {
    std::vector<uint8_t> img((size_t)n * CIFAR_IMAGE_BYTES);
    std::vector<int32_t> lab(n);
    for (size_t i = 0; i < img.size(); ++i) img[i] = (uint8_t)philox_u32(1, 99, 0, i);
    for (int64_t i = 0; i < n; ++i) lab[i] = (int32_t)(i % 10);
    std::vector<std::string> names = split_file_names(Split::Train);
    int64_t per = n / (int64_t)names.size();
    for (size_t f = 0; f < names.size(); ++f) {
      int64_t a = (int64_t)f * per, b = f + 1 == names.size() ? n : a + per;
      write_cifar_file(dir + "/" + names[f], img.data() + a * CIFAR_IMAGE_BYTES, lab.data() + a,
                       (int)(b - a));
    }
  }
  double best = 0;
  {
    Loader loader(dir, Split::Train, 10, batch, 7, pinned);
    for (int e = 0; e < epochs; ++e) {
      auto t0 = Clock::now();
      loader.start_epoch(e, batch, /*shuffle=*/true);
      int64_t seen = 0;
      uint64_t sink = 0;
      for (Batch b = loader.next(); b.count > 0; b = loader.next()) {
        seen += b.count;
        sink += b.images[0] + (uint64_t)b.labels[b.count - 1];  // touch what was gathered
      }
      double s = seconds_since(t0);
      if (sink == 1) fprintf(stderr, " ");
      best = std::max(best, seen / s);
    }
  }
  std::string cmd = "rm -rf '" + dir + "'";
  (void)!system(cmd.c_str());
  return best;
}

double bench_cpu_train(const Config& c, int batch, int steps) {
  ModelOptions o;
  o.seed = 1;
  o.max_batch = batch;
  std::unique_ptr<Model> m = make_cpu_model(c, o);
  std::vector<float> p(m->layout().total);
  init_params(c, m->layout(), 1, p.data());
  m->set_params(p.data());
  std::vector<uint8_t> img((size_t)batch * 3 * 32 * 32);
  std::vector<int32_t> lab(batch);
  for (size_t i = 0; i < img.size(); ++i) img[i] = (uint8_t)philox_u32(2, 99, 0, i);
  for (int i = 0; i < batch; ++i) lab[i] = i % c.classes;
  OptimConfig opt;
  opt.kind = OptimConfig::AdamW;
  opt.weight_decay = 0.05f;
  std::vector<double> times;
  for (int s = 0; s <= steps; ++s) {
    auto t0 = Clock::now();
    m->zero_grad();
    m->forward(img.data(), lab.data(), batch, true, s);
    m->backward();
    m->optimizer_step(opt, 1e-4f, s + 1, 1.0f);
    (void)m->last_loss();
    if (s > 0) times.push_back(seconds_since(t0));  // step 0 warms up
  }
  return batch / median(times);
}

static std::string python_with_torch() {
  const char* env = getenv("VIT_PYTHON");
  std::vector<std::string> cands;
  if (env && *env) cands.push_back(env);
  cands.push_back("python3");
  cands.push_back("/usr/bin/python3");
  for (const auto& py : cands) {
    std::string cmd = py + " -c 'import torch' >/dev/null 2>&1";
    if (system(cmd.c_str()) == 0) return py;
  }
  return "";
}

double bench_pytorch_train(const Config& c, int batch, int steps, std::string* why) {
  std::string py = python_with_torch();
  if (py.empty()) {
    if (why) *why = "torch not installed (apt install python3-torch, or set VIT_PYTHON)";
    return -1;
  }
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "%s tools/bench_pytorch.py --image-size %d --patch-size %d --hidden %d --layers %d "
           "--heads %d --mlp %d --classes %d --dropout %g --attn-dropout %g --gelu %s "
           "--batch-size %d --steps %d 2>/dev/null",
           py.c_str(), c.image_size, c.patch_size, c.hidden, c.layers, c.heads, c.mlp, c.classes,
           c.dropout, c.attn_dropout, gelu_name(c.gelu), batch, steps);
  FILE* f = popen(cmd, "r");
  if (!f) { if (why) *why = "could not run tools/bench_pytorch.py"; return -1; }
  double ips = -1;
  char line[512];
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "images_per_s %lf", &ips) == 1) break;
  int st = pclose(f);
  if (st != 0 || ips <= 0) {
    if (why) *why = "tools/bench_pytorch.py failed (run it by hand to see why)";
    return -1;
  }
  return ips;
}

std::vector<BenchRow> run_cpu_rows(bool quick, bool with_pytorch, bool pinned) {
  std::vector<BenchRow> rows;
  const int64_t n = quick ? 2000 : 50000;
  BenchRow r;
  r.section = "loader";
  r.name = "shuffle+gather";
  r.shape = std::to_string(n) + " images, batch 64" + (pinned ? ", pinned" : "");
  r.images_per_s = bench_loader(n, 64, quick ? 1 : 3, pinned);
  r.ms = r.images_per_s > 0 ? 64e3 / r.images_per_s : 0;
  r.gbps = r.images_per_s * CIFAR_IMAGE_BYTES / 1e9;
  r.note = r.images_per_s >= 50000 ? "target >= 50,000 images/s: met"
                                    : "target >= 50,000 images/s: NOT met";
  rows.push_back(r);

  struct M { const char* name; Config c; };
  std::vector<M> models = {{"tiny", preset("tiny")}, {"4 layers, hidden 64", bench_small_model()}};
  const int batch = quick ? 8 : 64, steps = quick ? 1 : 5;
  for (const M& m : models) {
    BenchRow t;
    t.section = "cpu-train";
    t.name = m.name;
    t.shape = "batch " + std::to_string(batch);
    t.images_per_s = bench_cpu_train(m.c, batch, steps);
    t.ms = 1e3 * batch / t.images_per_s;
    if (with_pytorch) {
      std::string why;
      double pt = bench_pytorch_train(m.c, batch, steps, &why);
      BenchRow p = t;
      p.section = "pytorch-cpu";
      if (pt > 0) {
        p.images_per_s = pt;
        p.ms = 1e3 * batch / pt;
        t.note = "vit.cu / PyTorch = " + std::to_string(t.images_per_s / pt).substr(0, 4) + "x";
      } else {
        p.images_per_s = 0;
        p.ms = 0;
        p.note = "skipped: " + why;
      }
      rows.push_back(t);
      rows.push_back(p);
    } else {
      rows.push_back(t);
    }
  }
  return rows;
}

}  // namespace vit
