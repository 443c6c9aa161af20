// fuzz/fuzz_cifar.cpp — the CIFAR binary reader (common/cifar.cpp): probe_split (whole records,
// non-empty split), read_split (labels against the class count) and read_class_names.
// The reader opens fixed file names in a directory, so the input is written into a private
// temporary directory: byte 0 picks the class count (1..256) and the split, the rest is the
// content of test_batch.bin (test split) or data_batch_1.bin (train split; batches 2..5
// empty) and, with bit 7 of byte 0, of batches.meta.txt as well.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/cifar.h"
#include "common/error.h"

namespace {

void write_file(const std::string& path, const uint8_t* d, size_t n) {
  FILE* f = fopen(path.c_str(), "wb");
  if (!f || (n && fwrite(d, 1, n, f) != n) || fclose(f) != 0) { perror(path.c_str()); abort(); }
}

struct Dir {
  std::string path;
  Dir() {
    const char* t = getenv("TMPDIR");
    std::string tmpl = std::string(t && *t ? t : "/tmp") + "/vit_fuzz_cifar.XXXXXX";
    if (!mkdtemp(&tmpl[0])) { perror("mkdtemp"); abort(); }
    path = tmpl;
  }
  ~Dir() {
    for (const char* n : {"test_batch.bin", "data_batch_1.bin", "data_batch_2.bin",
                          "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin",
                          "batches.meta.txt"})
      unlink((path + "/" + n).c_str());
    rmdir(path.c_str());
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Dir dir;
  if (size == 0) return 0;
  const uint8_t sel = data[0];
  const int classes = (sel & 0x3f) * 4 + 1;  // 1..253
  const bool train = sel & 0x40, meta = sel & 0x80;
  const uint8_t* body = data + 1;
  const size_t n = size - 1;
  const std::string d = dir.path + "/";
  if (train) {
    unlink((d + "test_batch.bin").c_str());
    write_file(d + "data_batch_1.bin", body, n);
    for (int i = 2; i <= 5; ++i) write_file(d + "data_batch_" + std::to_string(i) + ".bin", body, 0);
  } else {
    for (int i = 1; i <= 5; ++i) unlink((d + "data_batch_" + std::to_string(i) + ".bin").c_str());
    write_file(d + "test_batch.bin", body, n);
  }
  if (meta) write_file(d + "batches.meta.txt", body, n);
  else unlink((d + "batches.meta.txt").c_str());
  try {
    vit::SplitData s = vit::load_split(dir.path, train ? vit::Split::Train : vit::Split::Test, classes);
    if ((size_t)s.size() * vit::CIFAR_RECORD_BYTES != n) abort();  // every byte is a record
    for (int32_t l : s.labels)
      if (l < 0 || l >= classes) abort();
  } catch (const vit::Error&) {
  }
  std::vector<std::string> names = vit::read_class_names(dir.path, classes);
  if ((int)names.size() != classes) abort();
  for (const std::string& s : names)
    if (s.empty()) abort();
  return 0;
}
