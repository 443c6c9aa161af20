// tests/test_cifar.cpp — the CIFAR-10 binary reader: record layout, and every bad-input case
// (missing directory/file, truncated file, label outside the classes, empty split) is a
// vit::Error whose one line names the problem.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "common/cifar.h"
#include "common/error.h"
#include "tests/toy_cifar.h"

using vit_test::TempDir;

namespace {

// Expects `f` to throw vit::Error whose message contains every string of `needles`.
template <class F>
void expect_error(F f, std::initializer_list<const char*> needles) {
  try {
    f();
    ADD_FAILURE() << "no vit::Error thrown";
  } catch (const vit::Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << "message is not one line: " << m;
    for (const char* n : needles) EXPECT_NE(m.find(n), std::string::npos) << m << "  (wanted: " << n << ")";
  }
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write((const char*)bytes.data(), bytes.size());
}

}  // namespace

TEST(Cifar, ReadsRecordsInFileOrder) {
  TempDir d;
  // Hand-made records: label byte, then pixels whose values encode (file, record, byte).
  std::vector<std::string> names = vit::split_file_names(vit::Split::Train);
  ASSERT_EQ(names.size(), 5u);
  int counts[5] = {2, 0, 1, 3, 1};
  for (int f = 0; f < 5; ++f) {
    std::vector<uint8_t> bytes;
    for (int r = 0; r < counts[f]; ++r) {
      bytes.push_back((uint8_t)((f + r) % 10));
      for (int i = 0; i < 3072; ++i) bytes.push_back((uint8_t)(f * 50 + r * 7 + i));
    }
    write_bytes(d / names[f], bytes);
  }
  vit::SplitData s = vit::load_split(d.path, vit::Split::Train, 10);
  ASSERT_EQ(s.size(), 7);
  int at = 0;
  for (int f = 0; f < 5; ++f)
    for (int r = 0; r < counts[f]; ++r, ++at) {
      EXPECT_EQ(s.labels[at], (f + r) % 10);
      for (int i : {0, 1, 1023, 1024, 3071})
        ASSERT_EQ(s.images[(size_t)at * 3072 + i], (uint8_t)(f * 50 + r * 7 + i)) << at << " " << i;
    }
}

TEST(Cifar, ToyDatasetRoundTrip) {
  TempDir d;
  vit_test::make_toy_cifar(d.path, 23, 7);
  vit::SplitData tr = vit::load_split(d.path, vit::Split::Train, 10);
  vit::SplitData te = vit::load_split(d.path, vit::Split::Test, 10);
  EXPECT_EQ(tr.size(), 23);
  EXPECT_EQ(te.size(), 7);
  std::vector<uint8_t> img(3072);
  vit_test::toy_image(te.labels[3], 900000 + 3, img.data());
  EXPECT_TRUE(std::equal(img.begin(), img.end(), te.images.begin() + 3 * 3072));
  std::vector<std::string> names = vit::read_class_names(d.path, 10);
  EXPECT_EQ(names[0], "toy0");
  EXPECT_EQ(names[9], "toy9");
}

TEST(Cifar, ClassNamesFallBack) {
  TempDir d;
  std::vector<std::string> names = vit::read_class_names(d.path, 3);
  ASSERT_EQ(names.size(), 3u);
  EXPECT_EQ(names[2], "class 2");
  std::ofstream(d / "batches.meta.txt") << "airplane\r\n\nautomobile\n";
  names = vit::read_class_names(d.path, 3);
  EXPECT_EQ(names[0], "airplane");
  EXPECT_EQ(names[1], "automobile");
  EXPECT_EQ(names[2], "class 2");
}

TEST(Cifar, MissingDirectory) {
  TempDir d;
  expect_error([&] { vit::probe_split(d / "nope", vit::Split::Train); }, {"nope", "make data"});
}

TEST(Cifar, MissingFile) {
  TempDir d;
  vit_test::make_toy_cifar(d.path, 10, 5);
  remove((d / "data_batch_3.bin").c_str());
  expect_error([&] { vit::probe_split(d.path, vit::Split::Train); }, {"data_batch_3.bin", "missing"});
  EXPECT_NO_THROW(vit::probe_split(d.path, vit::Split::Test));
}

TEST(Cifar, TruncatedFile) {
  TempDir d;
  vit_test::make_toy_cifar(d.path, 10, 5);
  std::vector<uint8_t> bytes(3073 * 2 + 100, 1);
  write_bytes(d / "test_batch.bin", bytes);
  expect_error([&] { vit::probe_split(d.path, vit::Split::Test); },
               {"test_batch.bin", "6246 bytes", "3073"});
}

TEST(Cifar, LabelOutsideClasses) {
  TempDir d;
  vit_test::make_toy_cifar(d.path, 10, 5);
  std::vector<uint8_t> bytes(3073 * 3, 0);
  bytes[3073 * 2] = 10;  // third record: label 10 with 10 classes
  write_bytes(d / "test_batch.bin", bytes);
  expect_error([&] { vit::load_split(d.path, vit::Split::Test, 10); },
               {"test_batch.bin", "record 2", "label 10", "10 classes"});
  // The same file is fine for a model with more classes.
  EXPECT_EQ(vit::load_split(d.path, vit::Split::Test, 11).size(), 3);
}

TEST(Cifar, EmptySplit) {
  TempDir d;
  vit_test::make_toy_cifar(d.path, 10, 5);
  write_bytes(d / "test_batch.bin", {});
  expect_error([&] { vit::probe_split(d.path, vit::Split::Test); }, {"test", "empty"});
}
