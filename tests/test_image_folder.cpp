// tests/test_image_folder.cpp — the dataset formats beyond CIFAR-10, on the CPU:
//   * image folders (tests/image_folder_fixture.h, written at run time): classes and files in
//     sorted order, hidden and non-image files ignored, grey / RGBA / BMP / JPEG decoded to the
//     pixels written, resizing, an unreadable file skipped by name (or refused with strict);
//   * the decoded-image cache: reused on the second load (same bytes), invalidated by a touched
//     file, an added file, another stored size, a truncated cache;
//   * CIFAR-100 binary: hand-made records parse with their fine labels and names;
//   * vit_train on an image folder with the CPU reference: trains, writes the dataset into
//     config.json and the class names into the checkpoint, and vit_predict prints them; the
//     second run reads the cache and gives the same metrics; --init needs --new-head for the
//     folders' class count; a --classes that contradicts the folders, a resume on a folder with
//     other classes, an unreadable image under --strict, --store-size / --strict on CIFAR are
//     one-line errors.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/cifar.h"
#include "common/dataset.h"
#include "common/dataset_cache.h"
#include "common/error.h"
#include "common/image_folder.h"
#include "common/predict.h"
#include "common/safetensors.h"
#include "common/weights.h"
#include "host/loader.h"
#include "host/train.h"
#include "tests/image_folder_fixture.h"
#include "tests/toy_cifar.h"
#include "tests/train_runner.h"

using vit_test::TempDir;
namespace folder = vit_test::folder;
namespace fsys = std::filesystem;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// The error message of f(), "" when it did not throw vit::Error.
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const vit::Error& e) {
    return e.what();
  }
  return "";
}

// Loads a split with the cache at its default path and output captured (progress, warnings).
struct Loaded {
  vit::DecodeResult r;
  std::vector<uint8_t> images;
  std::vector<int32_t> labels;
  std::string out, err;
};
Loaded load(const std::string& dir, vit::Split s, int S, bool cache = true, bool strict = false,
            const std::string& cache_path = "", bool tty = false,
            const std::string& fallback_dir = "") {
  vit::ImageFolderSplit fs = vit::scan_image_folder(dir, s);
  Loaded l;
  l.images.assign(fs.files.size() * 3 * S * S, 0);
  l.labels.assign(fs.files.size(), -1);
  vit::DecodeOptions o;
  o.size = S;
  o.cache = cache;
  o.strict = strict;
  o.threads = 3;
  o.cache_path = cache_path;
  o.tty = tty;
  o.fallback_dir = fallback_dir;  // "": tests never write to the user's ~/.cache
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  try {
    l.r = vit::load_image_folder(fs, o, l.images.data(), l.labels.data());
  } catch (...) {
    testing::internal::GetCapturedStdout();
    testing::internal::GetCapturedStderr();
    throw;
  }
  l.out = testing::internal::GetCapturedStdout();
  l.err = testing::internal::GetCapturedStderr();
  l.images.resize((size_t)l.r.kept * 3 * S * S);
  l.labels.resize((size_t)l.r.kept);
  return l;
}

}  // namespace

// ---- scanning and decoding ----------------------------------------------------------------------

TEST(ImageFolder, ScanListsSortedClassesAndImageFiles) {
  TempDir d;
  folder::make_image_folder(d / "ds");
  EXPECT_TRUE(vit::is_image_folder(d / "ds"));
  EXPECT_FALSE(vit::is_image_folder(d.path));
  vit::ImageFolderSplit s = vit::scan_image_folder(d / "ds", vit::Split::Train);
  EXPECT_EQ(s.classes, folder::class_names());
  std::vector<std::string> rel;
  std::vector<int> labels;
  for (const vit::ImageFile& f : s.files) {
    rel.push_back(f.rel);
    labels.push_back(f.label);
    EXPECT_EQ(f.bytes, (int64_t)fsys::file_size(s.root + "/" + f.rel)) << f.rel;
  }
  // Sorted by path within each class (upper case sorts first); notes.txt and .hidden.png are
  // not listed; the nested sub/ folder is.
  EXPECT_EQ(rel, (std::vector<std::string>{"ant/a0.png", "ant/a1.jpg", "ant/a2.png", "bee/b0.png",
                                           "bee/b1.bmp", "bee/broken.png", "bee/sub/b2.png",
                                           "cow/C1.JPEG", "cow/c0.png"}));
  EXPECT_EQ(labels, (std::vector<int>{0, 0, 0, 1, 1, 1, 1, 2, 2}));
  // A dangling symlink with an image name is listed (and later named as unreadable).
  fsys::create_symlink(d / "gone.png", d / "ds/train/cow/link.png");
  vit::ImageFolderSplit with_link = vit::scan_image_folder(d / "ds", vit::Split::Train);
  ASSERT_EQ(with_link.files.size(), 10u);
  EXPECT_EQ(with_link.files.back().rel, "cow/link.png");
  EXPECT_EQ(with_link.files.back().bytes, -1);
  fsys::remove(d / "ds/train/cow/link.png");
  vit::ImageFolderSplit v = vit::scan_image_folder(d / "ds", vit::Split::Test);
  ASSERT_EQ(v.files.size(), 3u);
  EXPECT_EQ(v.files[2].rel, "cow/v2.png");
  EXPECT_EQ(v.files[2].label, 2);
  EXPECT_EQ(v.classes, folder::class_names());  // the classes are always train's

  vit::DatasetInfo info = vit::probe_dataset(d / "ds");
  EXPECT_EQ(info.format, vit::DataFormat::ImageFolder);
  EXPECT_EQ(info.classes, 3);
  EXPECT_EQ(info.class_names, folder::class_names());

  // A val class that train does not have, a train class without images, no val at all.
  mkdir((d / "ds/val/dog").c_str(), 0755);
  EXPECT_NE(error_of([&] { vit::scan_image_folder(d / "ds", vit::Split::Test); }).find("val/dog"),
            std::string::npos);
  fsys::remove(d / "ds/val/dog");
  mkdir((d / "ds/train/emu").c_str(), 0755);
  EXPECT_NE(error_of([&] { vit::scan_image_folder(d / "ds", vit::Split::Train); }).find("train/emu' has no images"),
            std::string::npos);
  fsys::remove(d / "ds/train/emu");
  fsys::remove_all(d / "ds/val");
  EXPECT_NE(error_of([&] { vit::scan_image_folder(d / "ds", vit::Split::Test); }).find("val' not found"),
            std::string::npos);
}

TEST(ImageFolder, DecodesEveryKindToPlanarRgbAtTheStoredSize) {
  TempDir d;
  folder::make_image_folder(d / "ds");
  const int S = 16, P = S * S;
  std::vector<uint8_t> out(3 * P);
  auto expect_exact = [&](const std::string& rel, int k, int id, bool grey) {
    vit::decode_image_to(d / ("ds/train/" + rel), S, out.data());
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < S; ++y)
        for (int x = 0; x < S; ++x)
          ASSERT_EQ(out[c * P + y * S + x], folder::pixel(k, id, x, y, grey ? 0 : c))
              << rel << " c " << c << " y " << y << " x " << x;
  };
  expect_exact("ant/a0.png", 0, 0, false);  // RGB PNG at the stored size: a plain copy
  expect_exact("ant/a2.png", 0, 2, true);   // grey: replicated to the three planes
  expect_exact("bee/b0.png", 1, 0, false);  // RGBA: alpha dropped, colour kept
  expect_exact("bee/b1.bmp", 1, 1, false);
  // JPEG is lossy: each plane's mean stays within a few levels of what was written.
  vit::decode_image_to(d / "ds/train/cow/C1.JPEG", S, out.data());
  for (int c = 0; c < 3; ++c) {
    double got = 0, want = 0;
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x) {
        got += out[c * P + y * S + x];
        want += folder::pixel(2, 1, x, y, c);
      }
    EXPECT_NEAR(got / P, want / P, 3.0) << "plane " << c;
  }
  // Resizing (24x24 -> 16 and 8, 16x16 -> 32): a uniform image stays exactly uniform.
  std::vector<uint8_t> solid(24 * 24 * 3);
  for (size_t i = 0; i < solid.size(); ++i) solid[i] = (uint8_t)(i % 3 == 0 ? 10 : i % 3 == 1 ? 128 : 250);
  stbi_write_png((d / "solid.png").c_str(), 24, 24, 3, solid.data(), 24 * 3);
  for (int s : {16, 8, 32}) {
    std::vector<uint8_t> o(3 * s * s);
    vit::decode_image_to(d / "solid.png", s, o.data());
    for (int c = 0; c < 3; ++c)
      for (int i = 0; i < s * s; ++i)
        ASSERT_EQ(o[c * s * s + i], c == 0 ? 10 : c == 1 ? 128 : 250) << s << " " << c << " " << i;
  }
  // An unreadable file: one line naming it.
  std::string e = error_of([&] { vit::decode_image_to(d / "ds/train/bee/broken.png", S, out.data()); });
  EXPECT_NE(e.find("broken.png: cannot read image"), std::string::npos) << e;
}

TEST(ImageFolder, UnreadableImagesAreNamedAndSkippedOrRefusedWithStrict) {
  TempDir d;
  folder::make_image_folder(d / "ds");
  Loaded l = load(d / "ds", vit::Split::Train, 16, /*cache=*/false);
  EXPECT_EQ(l.r.kept, 8);
  ASSERT_EQ(l.r.skipped.size(), 1u);
  EXPECT_NE(l.r.skipped[0].find("bee/broken.png"), std::string::npos);
  EXPECT_NE(l.err.find("skipped " + d / "ds/train/bee/broken.png"), std::string::npos) << l.err;
  EXPECT_NE(l.err.find("skipped 1 unreadable of 9 train images"), std::string::npos) << l.err;
  // Kept images in file order, the skipped one's slot closed up: labels of a0 a1 a2 b0 b1 b2 C1 c0.
  EXPECT_EQ(l.labels, (std::vector<int32_t>{0, 0, 0, 1, 1, 1, 2, 2}));
  // Image 5 is bee/sub/b2.png (24x24 resized), image 7 cow/c0.png (exact).
  const int P = 256;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < P; ++i)
      ASSERT_EQ(l.images[(7 * 3 + c) * P + i], folder::pixel(2, 0, i % 16, i / 16, c));
  EXPECT_FALSE(fsys::exists(vit::default_cache_path(d / "ds", vit::Split::Train, 16)));  // cache off

  std::string e = error_of([&] { load(d / "ds", vit::Split::Train, 16, false, /*strict=*/true); });
  EXPECT_NE(e.find("broken.png: cannot read image"), std::string::npos) << e;
  EXPECT_NE(e.find("--strict"), std::string::npos) << e;
}

TEST(ImageFolder, ProgressIsRedrawnInPlaceOnATerminal) {
  TempDir d;
  folder::make_image_folder(d / "ds");
  Loaded t = load(d / "ds", vit::Split::Train, 16, false, false, "", /*tty=*/true);
  // One line: every redraw starts with a carriage return, the final summary ends the line.
  EXPECT_EQ(t.out.find("decoding 9 train images from"), 0u) << t.out;
  EXPECT_NE(t.out.find("\rdecoded 9 train images in"), std::string::npos) << t.out;
  EXPECT_EQ(std::count(t.out.begin(), t.out.end(), '\n'), 1) << t.out;
  Loaded p = load(d / "ds", vit::Split::Train, 16, false, false, "", /*tty=*/false);
  EXPECT_EQ(p.out.find('\r'), std::string::npos) << p.out;  // plain lines otherwise
  EXPECT_NE(p.out.find("decoded 9 train images in"), std::string::npos) << p.out;
}

TEST(ImageFolder, CacheIsReusedAndInvalidatedWhenFilesChange) {
  TempDir d;
  folder::make_image_folder(d / "ds");
  const std::string cache = vit::default_cache_path(d / "ds", vit::Split::Train, 16);
  EXPECT_EQ(cache, d / "ds/.vitcache-train-16.bin");
  Loaded a = load(d / "ds", vit::Split::Train, 16);
  EXPECT_FALSE(a.r.from_cache);
  EXPECT_EQ(a.r.cache_path, cache);
  ASSERT_TRUE(fsys::exists(cache));
  // Header + the 8 kept images' pixels, nothing more.
  EXPECT_GT(fsys::file_size(cache), 8u * 3 * 16 * 16);

  Loaded b = load(d / "ds", vit::Split::Train, 16);
  EXPECT_TRUE(b.r.from_cache);
  EXPECT_EQ(b.out.find("decoding"), std::string::npos) << b.out;
  EXPECT_NE(b.out.find("from the cache"), std::string::npos) << b.out;
  EXPECT_EQ(b.images, a.images);
  EXPECT_EQ(b.labels, a.labels);
  EXPECT_EQ(b.r.skipped, a.r.skipped);  // the unreadable file is reported again, not re-read
  EXPECT_NE(b.err.find("broken.png"), std::string::npos);
  // --strict refuses a cached skip too.
  EXPECT_NE(error_of([&] { load(d / "ds", vit::Split::Train, 16, true, true); }).find("broken.png"),
            std::string::npos);

  // A file rewritten with other pixels and another modification time: decoded again, and the
  // new pixels are what the load returns.
  const std::string c0 = d / "ds/train/cow/c0.png";
  folder::write_png(c0, 1, 7, 16, 16, 3);
  const auto t = fsys::last_write_time(c0);
  fsys::last_write_time(c0, t + std::chrono::seconds(5));
  Loaded c = load(d / "ds", vit::Split::Train, 16);
  EXPECT_FALSE(c.r.from_cache);
  EXPECT_EQ(c.images[(7 * 3 + 1) * 256 + 0], folder::pixel(1, 7, 0, 0, 1));
  EXPECT_NE(c.images, a.images);
  EXPECT_TRUE(load(d / "ds", vit::Split::Train, 16).r.from_cache);  // rewritten: valid again

  // Only the modification time changes: still stale.
  fsys::last_write_time(c0, t + std::chrono::seconds(9));
  EXPECT_FALSE(load(d / "ds", vit::Split::Train, 16).r.from_cache);
  // A file added.
  folder::write_png(d / "ds/train/ant/a3.png", 0, 3, 16, 16, 3);
  Loaded e = load(d / "ds", vit::Split::Train, 16);
  EXPECT_FALSE(e.r.from_cache);
  EXPECT_EQ(e.r.kept, 9);
  // Another stored size has a cache of its own.
  Loaded f = load(d / "ds", vit::Split::Train, 8);
  EXPECT_FALSE(f.r.from_cache);
  EXPECT_TRUE(fsys::exists(d / "ds/.vitcache-train-8.bin"));
  EXPECT_TRUE(load(d / "ds", vit::Split::Train, 16).r.from_cache);
  // A truncated cache is not trusted.
  fsys::resize_file(cache, fsys::file_size(cache) - 1);
  Loaded g = load(d / "ds", vit::Split::Train, 16);
  EXPECT_FALSE(g.r.from_cache);
  EXPECT_EQ(g.images, e.images);
  // A cache that cannot be written is a warning; the images are still loaded.
  Loaded h = load(d / "ds", vit::Split::Train, 16, true, false, d / "no/such/dir/cache.bin");
  EXPECT_FALSE(h.r.from_cache);
  EXPECT_EQ(h.r.kept, 9);
  EXPECT_EQ(h.r.cache_path, "");
  EXPECT_NE(h.r.cache_warning.find("cannot write the image cache"), std::string::npos);
  EXPECT_NE(h.err.find("warning: cannot write the image cache"), std::string::npos) << h.err;
  EXPECT_EQ(h.images, e.images);
  // A dataset directory that cannot take the cache (here: a directory where the file would go):
  // the cache goes to the fallback directory, and the next load finds it there.
  fsys::remove(cache);
  fsys::create_directory(cache);
  const std::string fb = vit::fallback_cache_path(d / "ds", vit::Split::Train, 16, d / "fb");
  EXPECT_EQ(fb, vit::fallback_cache_path(d / "ds/", vit::Split::Train, 16, d / "fb"));  // same dir
  EXPECT_NE(fb, vit::fallback_cache_path(d / "ds4", vit::Split::Train, 16, d / "fb"));
  EXPECT_EQ(fsys::path(fb).filename().string().size(), std::string("vitcache-0123456789abcdef-train-16.bin").size());
  Loaded i = load(d / "ds", vit::Split::Train, 16, true, false, "", false, d / "fb");
  EXPECT_FALSE(i.r.from_cache);
  EXPECT_EQ(i.r.cache_path, fb);
  EXPECT_EQ(i.r.cache_warning, "");
  EXPECT_EQ(i.err.find("cannot write"), std::string::npos) << i.err;
  Loaded k = load(d / "ds", vit::Split::Train, 16, true, false, "", false, d / "fb");
  EXPECT_TRUE(k.r.from_cache);
  EXPECT_EQ(k.r.cache_path, fb);
  EXPECT_EQ(k.images, e.images);
  fsys::remove(cache);
  // No temporary file left next to the caches.
  for (const auto& entry : fsys::directory_iterator(d / "ds"))
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
}

TEST(ImageFolder, LoaderHandsOutStoredSizeImagesInEpochOrder) {
  TempDir d;
  folder::make_image_folder(d / "ds");
  const int S = 12;
  Loaded want = load(d / "ds", vit::Split::Train, S, /*cache=*/false);  // the reference pixels
  vit::DataOptions o;
  o.store_size = S;
  o.cache = false;
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  vit::Loader L(d / "ds", vit::Split::Train, 3, 4, /*seed=*/9, /*pinned=*/false, o);
  testing::internal::GetCapturedStdout();
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(L.format(), vit::DataFormat::ImageFolder);
  EXPECT_EQ(L.size(), 8);
  EXPECT_EQ(L.skipped(), 1);
  EXPECT_EQ(L.image_size(), S);
  EXPECT_EQ(L.image_bytes(), (size_t)3 * S * S);
  ASSERT_EQ(0, memcmp(L.images(), want.images.data(), want.images.size()));
  // A shuffled epoch: batch i holds images order[4i ..] of the split, S x S bytes each.
  const std::vector<int64_t> order = vit::epoch_order(8, 9, 2);
  L.start_epoch(2, 4, /*shuffle=*/true);
  int64_t at = 0;
  for (vit::Batch b = L.next(); b.count > 0; b = L.next())
    for (int i = 0; i < b.count; ++i, ++at) {
      ASSERT_EQ(0, memcmp(b.images + (size_t)i * L.image_bytes(),
                          want.images.data() + (size_t)order[at] * L.image_bytes(), L.image_bytes()));
      EXPECT_EQ(b.labels[i], want.labels[order[at]]);
    }
  EXPECT_EQ(at, 8);
  // The model's class count must be the folders'.
  testing::internal::CaptureStdout();
  std::string e = error_of([&] { vit::Loader(d / "ds", vit::Split::Test, 10, 4, 0, false, o); });
  testing::internal::GetCapturedStdout();
  EXPECT_NE(e.find("has 3 class folders but the model has 10 classes"), std::string::npos) << e;
}

// ---- CIFAR-100 ----------------------------------------------------------------------------------

TEST(Cifar100, RecordsParseWithTheirFineLabels) {
  TempDir d;
  // Hand-made records: coarse label, fine label, 3072 pixels encoding (record, byte).
  auto write = [&](const std::string& name, std::vector<std::pair<int, int>> labels) {
    std::ofstream f(d / name, std::ios::binary);
    for (size_t r = 0; r < labels.size(); ++r) {
      f.put((char)labels[r].first);
      f.put((char)labels[r].second);
      for (int i = 0; i < 3072; ++i) f.put((char)(uint8_t)(r * 31 + i));
    }
  };
  write("train.bin", {{3, 99}, {19, 0}, {0, 57}});
  write("test.bin", {{7, 42}});
  {
    std::ofstream names(d / "fine_label_names.txt");
    for (int k = 0; k < 100; ++k) names << "fine" << k << "\n";
  }
  EXPECT_TRUE(vit::is_cifar100(d.path));
  vit::SplitFiles f = vit::probe_split(d.path, vit::Split::Train);
  EXPECT_EQ(f.record_bytes, 3074);
  EXPECT_EQ(f.total, 3);
  vit::SplitData s = vit::load_split(d.path, vit::Split::Train, 100);
  EXPECT_EQ(s.labels, (std::vector<int32_t>{99, 0, 57}));  // the fine labels, not the coarse
  for (int r = 0; r < 3; ++r)
    for (int i : {0, 1, 3071}) ASSERT_EQ(s.images[(size_t)r * 3072 + i], (uint8_t)(r * 31 + i));
  EXPECT_EQ(vit::load_split(d.path, vit::Split::Test, 100).labels, (std::vector<int32_t>{42}));

  vit::DatasetInfo info = vit::probe_dataset(d.path);
  EXPECT_EQ(info.format, vit::DataFormat::Cifar100);
  EXPECT_EQ(info.classes, 100);
  ASSERT_EQ(info.class_names.size(), 100u);
  EXPECT_EQ(info.class_names[57], "fine57");

  // A fine label outside 100 classes, a truncated record.
  write("test.bin", {{1, 100}});
  std::string e = error_of([&] { vit::load_split(d.path, vit::Split::Test, 100); });
  EXPECT_NE(e.find("label 100"), std::string::npos) << e;
  std::ofstream(d / "test.bin", std::ios::binary) << std::string(3073, 'x');  // a CIFAR-10 record
  e = error_of([&] { vit::probe_split(d.path, vit::Split::Test); });
  EXPECT_NE(e.find("3074-byte records"), std::string::npos) << e;
}

// ---- vit_train and vit_predict on an image folder ------------------------------------------------

TEST(TrainImageFolder, TrainsAndTheClassNamesReachVitPredict) {
  TempDir d;
  folder::make_image_folder(d / "ds");
  std::vector<std::string> args = {"--device", "cpu", "--preset", "tiny", "--image-size", "16",
                                   "--data", d / "ds", "--store-size", "20", "--augment", "rrc-flip",
                                   "--epochs", "1", "--batch-size", "4", "--seed", "5",
                                   "--out", d / "run"};
  vit_test::TrainRun r = vit_test::run_train(args);
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("decoding 9 train images"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("image-folder, 3 classes, images stored at 20x20"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("broken.png"), std::string::npos) << r.err;
  auto rows = vit_test::metrics_rows(d / "run/metrics.csv");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_TRUE(std::isfinite(rows[0][1]));

  nlohmann::json j = nlohmann::json::parse(slurp(d / "run/config.json"));
  EXPECT_EQ(j["dataset"]["format"], "image-folder");
  EXPECT_EQ(j["dataset"]["classes"], 3);
  EXPECT_EQ(j["dataset"]["class_names"], nlohmann::json(folder::class_names()));
  EXPECT_EQ(j["dataset"]["image_size"], 20);
  EXPECT_EQ(j["dataset"]["train_images"], 8);
  EXPECT_EQ(j["dataset"]["test_images"], 3);
  EXPECT_EQ(j["dataset"]["skipped_images"], 1);
  EXPECT_EQ(j["model"]["classes"], 3);  // the classifier follows the folders
  EXPECT_EQ(j["train"]["store_size"], 20);

  vit::LoadedWeights w = vit::load_weights(d / "run/last.safetensors", {});
  EXPECT_EQ(w.config.classes, 3);
  ASSERT_TRUE(w.metadata.count("class_names"));
  EXPECT_EQ(nlohmann::json::parse(w.metadata["class_names"]), nlohmann::json(folder::class_names()));

  // vit_predict prints the folder names, not "class N".
  std::ostringstream out, err;
  auto cpu = [](const std::string&, const vit::Config& c, const vit::ModelOptions& o) {
    return vit::make_cpu_model(c, o);
  };
  ASSERT_EQ(vit::predict_main({"--weights", d / "run/last.safetensors", "--top-k", "3",
                               d / "ds/val/ant/v0.png"}, out, err, cpu), 0) << err.str();
  for (const std::string& n : folder::class_names())
    EXPECT_NE(out.str().find("%  " + n + "\n"), std::string::npos) << out.str();

  // The second run reads both splits from the cache; --resume continues with them.
  args.back() = d / "run2";
  vit_test::TrainRun r2 = vit_test::run_train(args);
  ASSERT_EQ(r2.rc, 0) << r2.err;
  EXPECT_EQ(r2.out.find("decoding"), std::string::npos) << r2.out;
  EXPECT_NE(r2.out.find("train: 8 images at 20x20 from the cache"), std::string::npos) << r2.out;
  EXPECT_NE(r2.out.find("val: 3 images at 20x20 from the cache"), std::string::npos) << r2.out;
  // Cached pixels are the decoded ones: the same run gives the same losses and accuracies.
  EXPECT_EQ(vit_test::metrics_rows(d / "run2/metrics.csv"), vit_test::metrics_rows(d / "run/metrics.csv"));
  vit_test::TrainRun r3 = vit_test::run_train({"--device", "cpu", "--data", d / "ds", "--resume",
                                               d / "run/last.safetensors", "--epochs", "2"});
  ASSERT_EQ(r3.rc, 0) << r3.err;
  EXPECT_EQ(vit_test::metrics_rows(d / "run/metrics.csv").size(), 2u);
}

TEST(TrainImageFolder, ClassCountInitNewHeadResumeStrictAndStoreSize) {
  TempDir d;
  folder::make_image_folder(d / "ds");
  vit_test::make_toy_cifar(d / "cifar", 8, 4);
  auto run = [&](std::vector<std::string> more) {
    std::vector<std::string> a = {"--device", "cpu", "--preset", "tiny", "--image-size", "16",
                                  "--epochs", "1", "--batch-size", "4", "--out", d / "run"};
    a.insert(a.end(), more.begin(), more.end());
    return vit_test::run_train(a);
  };
  auto one_error_line = [](const vit_test::TrainRun& r, const std::string& needle) {
    EXPECT_EQ(r.rc, 1);
    const size_t at = r.err.find("vit_train: error: ");
    ASSERT_NE(at, std::string::npos) << r.err;
    const std::string line = r.err.substr(at);
    EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
    EXPECT_NE(line.find(needle), std::string::npos) << line << " (wanted: " << needle << ")";
  };
  one_error_line(run({"--data", d / "ds", "--classes", "5"}),
                 "--classes 5 contradicts the dataset: 3 class folders");
  EXPECT_EQ(run({"--data", d / "ds", "--classes", "3"}).rc, 0);  // agreeing is fine
  one_error_line(run({"--data", d / "ds", "--strict"}), "broken.png: cannot read image");
  one_error_line(run({"--data", d / "cifar", "--store-size", "64"}), "--store-size is for image-folder");
  one_error_line(run({"--data", d / "cifar", "--strict"}), "--strict is for image-folder");

  // --init from a 10-class checkpoint: the folders' 3 classes need --new-head, which then
  // gives a 3-class head (and the folder names in the new checkpoint).
  vit_test::TrainRun c = run({"--data", d / "cifar", "--max-steps", "1", "--out", d / "c10"});
  ASSERT_EQ(c.rc, 0) << c.err;
  one_error_line(run({"--data", d / "ds", "--init", d / "c10/last.safetensors"}),
                 "head has 10 classes but 3 were asked for: pass --new-head");
  vit_test::TrainRun n = run({"--data", d / "ds", "--init", d / "c10/last.safetensors", "--new-head",
                              "--out", d / "ft"});
  ASSERT_EQ(n.rc, 0) << n.err;
  vit::LoadedWeights w = vit::load_weights(d / "ft/last.safetensors", {});
  EXPECT_EQ(w.config.classes, 3);
  EXPECT_EQ(nlohmann::json::parse(w.metadata["class_names"]), nlohmann::json(folder::class_names()));
  // Resuming the 3-class run on a folder with a fourth class says so.
  fsys::copy(d / "ds", d / "ds4", fsys::copy_options::recursive);
  mkdir((d / "ds4/train/dog").c_str(), 0755);
  folder::write_png(d / "ds4/train/dog/d0.png", 0, 4, 16, 16, 3);
  one_error_line(vit_test::run_train({"--device", "cpu", "--data", d / "ds4", "--resume",
                                      d / "ft/last.safetensors", "--epochs", "2"}),
                 "has a 3-class head but '" + d / "ds4" + "' has 4 classes");
}
