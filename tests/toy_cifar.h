// tests/toy_cifar.h — a small dataset in the CIFAR-10 binary format that a ViT learns in a few
// epochs on the CPU: class k is a colour (distinct per class) with a horizontal or vertical
// bar pattern, plus per-pixel noise. Written as data_batch_1..5.bin, test_batch.bin and
// batches.meta.txt into a directory, exactly the layout vit_train reads. Deterministic (Philox).
#pragma once
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "common/cifar.h"
#include "common/philox.h"

namespace vit_test {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents at scope exit.
struct TempDir {
  std::string path;
  TempDir() {
    const char* t = getenv("TMPDIR");
    std::string tmpl = std::string(t && *t ? t : "/tmp") + "/vit_test_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back(0);
    if (mkdtemp(buf.data())) path = buf.data();
  }
  ~TempDir() {
    if (!path.empty()) { std::string cmd = "rm -rf '" + path + "'"; (void)!system(cmd.c_str()); }
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

// Fills one 32x32 planar RGB image of class k; `id` selects the noise.
inline void toy_image(int k, uint64_t id, uint8_t* img) {
  static const int colour[10][3] = {{220, 40, 40},  {40, 200, 40},  {40, 40, 220}, {220, 220, 40},
                                    {220, 40, 220}, {40, 220, 220}, {240, 240, 240}, {30, 30, 30},
                                    {230, 130, 30}, {120, 60, 180}};
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x) {
        // Even classes: horizontal bars, odd: vertical bars (darker every other 4 pixels).
        int stripe = ((k % 2 == 0 ? y : x) / 4) % 2;
        int v = colour[k % 10][c] - 50 * stripe;
        uint64_t idx = ((uint64_t)c * 32 + y) * 32 + x;
        v += (int)(vit::philox_uniform(1234, 7, id, idx) * 80.0f) - 40;
        img[idx] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
      }
}

// n_train images spread over the 5 train files (file i gets n_train/5, the last the rest),
// n_test in test_batch.bin; labels cycle 0..classes-1.
inline void make_toy_cifar(const std::string& dir, int n_train, int n_test, int classes = 10) {
  mkdir(dir.c_str(), 0755);
  auto write = [&](const std::string& name, int n, uint64_t id0) {
    std::vector<uint8_t> images((size_t)n * vit::CIFAR_IMAGE_BYTES);
    std::vector<int32_t> labels(n);
    for (int i = 0; i < n; ++i) {
      // A fixed scramble of the labels, so consecutive records differ in class irregularly.
      labels[i] = (int32_t)(vit::philox_u32(99, 7, id0 + i, 0) % classes);
      toy_image(labels[i], id0 + i, images.data() + (size_t)i * vit::CIFAR_IMAGE_BYTES);
    }
    vit::write_cifar_file(dir + "/" + name, images.data(), labels.data(), n);
  };
  int per = n_train / 5;
  for (int f = 0; f < 5; ++f)
    write("data_batch_" + std::to_string(f + 1) + ".bin", f < 4 ? per : n_train - 4 * per,
          (uint64_t)f * 100000);
  write("test_batch.bin", n_test, 900000);
  std::ofstream meta(dir + "/batches.meta.txt");
  for (int k = 0; k < classes; ++k) meta << "toy" << k << "\n";
}

}  // namespace vit_test
