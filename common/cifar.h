// common/cifar.h — the CIFAR-10 and CIFAR-100 binary distributions: reading and validating a split.
//
// A CIFAR-10 directory holds data_batch_1.bin .. data_batch_5.bin (train), test_batch.bin (test)
// and batches.meta.txt (one class name per line). Each .bin file is a sequence of records of
// 1 label byte + 3072 image bytes (R, G, B planes of 32 x 32, row-major).
// A CIFAR-100 directory (cifar-100-binary) holds train.bin and test.bin, records of 1 coarse
// label byte + 1 fine label byte + 3072 image bytes, and fine_label_names.txt; the fine label
// (100 classes) is the one read. The kind is told by the file names (train.bin: CIFAR-100).
// Any whole number of records per file is accepted, so small datasets in the same format
// (tests, demos) work.
//
// Reading is two passes so the caller chooses where the pixels live (the loader puts the whole
// split in pinned host memory): probe_split() checks that the files exist and have whole
// records and counts them; read_split() fills caller memory and checks every label.
// Every problem is a vit::Error with one line naming the file and what to do.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace vit {

constexpr int CIFAR_IMAGE_SIZE = 32;
constexpr int CIFAR_IMAGE_BYTES = 3 * 32 * 32;           // 3072
constexpr int CIFAR_RECORD_BYTES = 1 + CIFAR_IMAGE_BYTES;  // 3073

enum class Split { Train, Test };

constexpr int CIFAR100_RECORD_BYTES = 2 + CIFAR_IMAGE_BYTES;  // 3074
constexpr int CIFAR100_CLASSES = 100;

// CIFAR-100 when `dir` holds train.bin (not a vit::Error when `dir` is missing: false).
bool is_cifar100(const std::string& dir);

struct SplitFiles {
  int record_bytes = CIFAR_RECORD_BYTES;  // 3073 (CIFAR-10) | 3074 (CIFAR-100)
  int label_byte = 0;                     // offset of the label read: 0 | 1 (the fine label)
  std::vector<std::string> paths;   // in reading order
  std::vector<int64_t> records;     // per file
  int64_t total = 0;                // sum of records
};

// The file names of a split (data_batch_1..5.bin | test_batch.bin; CIFAR-100: train.bin |
// test.bin), without directory.
std::vector<std::string> split_file_names(Split s, bool cifar100 = false);
const char* split_name(Split s);  // "train" | "test"

// Checks `dir` exists, every file of the split exists and is a whole number of records, and the
// split is not empty. Throws vit::Error otherwise.
SplitFiles probe_split(const std::string& dir, Split s);

// Reads the records of `f` into images (total * 3072 bytes, record order) and labels (total).
// A label >= classes throws vit::Error naming the file and record.
void read_split(const SplitFiles& f, int classes, uint8_t* images, int32_t* labels);

// Convenience: probe + read into vectors.
struct SplitData {
  std::vector<uint8_t> images;  // (N, 3, 32, 32)
  std::vector<int32_t> labels;  // (N)
  int64_t size() const { return (int64_t)labels.size(); }
};
SplitData load_split(const std::string& dir, Split s, int classes);

// Class names from dir/batches.meta.txt, or fine_label_names.txt for CIFAR-100 (blank lines
// dropped); empty when the directory has neither.
std::vector<std::string> dataset_class_names(const std::string& dir);
// Class names from dir/batches.meta.txt (blank lines dropped). When the file is missing:
// "class 0" .. "class K-1". More names than `classes` is fine (extra ignored); fewer → the
// missing ones are named "class N".
std::vector<std::string> read_class_names(const std::string& dir, int classes);

// Writes records (labels[i], images[i*3072 ...]) to `path` (for generated datasets and tests).
void write_cifar_file(const std::string& path, const uint8_t* images, const int32_t* labels,
                      int64_t n);

}  // namespace vit
