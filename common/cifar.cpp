#include "common/cifar.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <system_error>

#include "common/error.h"

namespace vit {

namespace fsys = std::filesystem;

bool is_cifar100(const std::string& dir) {
  std::error_code ec;
  return fsys::is_regular_file(fsys::path(dir) / "train.bin", ec);
}

std::vector<std::string> split_file_names(Split s, bool cifar100) {
  if (cifar100) return {s == Split::Test ? "test.bin" : "train.bin"};
  if (s == Split::Test) return {"test_batch.bin"};
  return {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
          "data_batch_5.bin"};
}

const char* split_name(Split s) { return s == Split::Train ? "train" : "test"; }

static std::string join(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

SplitFiles probe_split(const std::string& dir, Split s) {
  std::error_code ec;
  if (!fsys::is_directory(dir, ec))
    throw Error("dataset directory '" + dir +
                "' not found: put the CIFAR-10 binary files there (data_batch_1..5.bin, "
                "test_batch.bin) or fetch them with: make data");
  SplitFiles f;
  const bool c100 = is_cifar100(dir);
  const char* kind = c100 ? "CIFAR-100" : "CIFAR-10";
  if (c100) {
    f.record_bytes = CIFAR100_RECORD_BYTES;
    f.label_byte = 1;  // byte 0 is the coarse (20-class) label
  }
  for (const std::string& name : split_file_names(s, c100)) {
    std::string p = join(dir, name);
    if (!fsys::is_regular_file(p, ec))
      throw Error("dataset file '" + p + "' is missing (" + split_name(s) + " split): re-fetch " +
                  kind + (c100 ? "" : " with: make data"));
    int64_t bytes = (int64_t)fsys::file_size(p, ec);
    if (ec) throw Error("cannot read '" + p + "': " + ec.message());
    if (bytes % f.record_bytes != 0)
      throw Error("dataset file '" + p + "' has " + std::to_string(bytes) +
                  " bytes, not a whole number of " + std::to_string(f.record_bytes) +
                  "-byte records (truncated or not " + kind + " binary): re-fetch it" +
                  (c100 ? "" : " with: make data"));
    f.paths.push_back(p);
    f.records.push_back(bytes / f.record_bytes);
    f.total += bytes / f.record_bytes;
  }
  if (f.total == 0)
    throw Error(std::string("the ") + split_name(s) + " split in '" + dir +
                "' is empty (its files have no records)");
  return f;
}

void read_split(const SplitFiles& f, int classes, uint8_t* images, int32_t* labels) {
  std::vector<uint8_t> rec(f.record_bytes);
  const uint8_t* pixels = rec.data() + f.record_bytes - CIFAR_IMAGE_BYTES;
  int64_t at = 0;
  for (size_t i = 0; i < f.paths.size(); ++i) {
    std::unique_ptr<FILE, int (*)(FILE*)> fp(fopen(f.paths[i].c_str(), "rb"), fclose);
    if (!fp) throw Error("cannot open '" + f.paths[i] + "': " + strerror(errno));
    for (int64_t r = 0; r < f.records[i]; ++r, ++at) {
      if (fread(rec.data(), 1, rec.size(), fp.get()) != rec.size())
        throw Error("dataset file '" + f.paths[i] + "' ended early at record " +
                    std::to_string(r) + " (changed while reading?)");
      const uint8_t label = rec[f.label_byte];
      if (label >= classes)
        throw Error("dataset file '" + f.paths[i] + "' record " + std::to_string(r) +
                    " has label " + std::to_string(label) + ", outside the " +
                    std::to_string(classes) + " classes of the model (--classes)");
      labels[at] = label;
      memcpy(images + at * CIFAR_IMAGE_BYTES, pixels, CIFAR_IMAGE_BYTES);
    }
  }
}

SplitData load_split(const std::string& dir, Split s, int classes) {
  SplitFiles f = probe_split(dir, s);
  SplitData d;
  d.images.resize((size_t)f.total * CIFAR_IMAGE_BYTES);
  d.labels.resize((size_t)f.total);
  read_split(f, classes, d.images.data(), d.labels.data());
  return d;
}

std::vector<std::string> dataset_class_names(const std::string& dir) {
  std::vector<std::string> names;
  std::ifstream in(join(dir, is_cifar100(dir) ? "fine_label_names.txt" : "batches.meta.txt"));
  std::string line;
  while (in && std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

std::vector<std::string> read_class_names(const std::string& dir, int classes) {
  std::vector<std::string> names = dataset_class_names(dir);
  names.resize(classes);
  for (int k = 0; k < classes; ++k)
    if (names[k].empty()) names[k] = "class " + std::to_string(k);
  return names;
}

void write_cifar_file(const std::string& path, const uint8_t* images, const int32_t* labels,
                      int64_t n) {
  std::unique_ptr<FILE, int (*)(FILE*)> fp(fopen(path.c_str(), "wb"), fclose);
  if (!fp) throw Error("cannot write '" + path + "': " + strerror(errno));
  for (int64_t i = 0; i < n; ++i) {
    uint8_t label = (uint8_t)labels[i];
    if (fwrite(&label, 1, 1, fp.get()) != 1 ||
        fwrite(images + i * CIFAR_IMAGE_BYTES, 1, CIFAR_IMAGE_BYTES, fp.get()) !=
            (size_t)CIFAR_IMAGE_BYTES)
      throw Error("cannot write '" + path + "': " + strerror(errno));
  }
}

}  // namespace vit
