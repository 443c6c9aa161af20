// tests/test_hostile.cpp — the hostile-input guarantees of the README ("Hostile input") and
// docs/reliability.md: files and flags made to break the readers, each of which must be one
// vit::Error line (the programs: one "<program>: error:" line and exit status 1), with no
// allocation the file does not justify and nothing written. Also the regression inputs the
// fuzz targets found (tests/fixtures/hostile/, one file per finding).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "common/cifar.h"
#include "common/error.h"
#include "common/image.h"
#include "common/image_check.h"
#include "common/model.h"
#include "common/params.h"
#include "common/predict.h"
#include "common/safetensors.h"
#include "common/weights.h"
#include "tests/test_fs.h"
#include "tests/toy_cifar.h"
#include "tests/train_runner.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

using vit_test::fs::TempDir;

namespace {

// `f` throws a one-line vit::Error containing every one of `parts`.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const vit::Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << "not one line: " << m;
    for (const auto& p : parts) EXPECT_NE(m.find(p), std::string::npos) << "'" << p << "' not in: " << m;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a vit::Error: " << e.what();
    return;
  }
  ADD_FAILURE() << "no vit::Error thrown";
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = (char)(n >> (8 * i));
  return s;
}
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

// ---- safetensors ----------------------------------------------------------------------------------

TEST(Hostile, SafetensorsOffsetsShapesAndHeaders) {
  TempDir d;
  int k = 0;
  auto check = [&](const std::string& bytes, std::vector<std::string> parts) {
    const std::string p = d.path("h" + std::to_string(k++) + ".safetensors");
    vit_test::fs::write_file(p, bytes);
    parts.push_back(p);
    SCOPED_TRACE(bytes.substr(8, 200));
    expect_error([&] { vit::SafeTensorsFile f(p); }, parts);
  };
  const std::string eight(8, '\0');
  auto one = [](const std::string& shape, const std::string& offsets, const char* dtype = "F32") {
    return std::string("{\"w\": {\"dtype\": \"") + dtype + "\", \"shape\": " + shape +
           ", \"data_offsets\": " + offsets + "}}";
  };
  // Overlapping and out-of-range offsets.
  check(safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                          R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", eight),
        {"overlaps"});
  check(safetensors_bytes(one("[2]", "[0, 18446744073709551615]"), eight), {"'w'", "past the end"});
  check(safetensors_bytes(one("[2]", "[18446744073709551608, 18446744073709551615]"), eight),
        {"'w'", "past the end"});
  // dtype / shape byte-count mismatch.
  check(safetensors_bytes(one("[2]", "[0, 8]", "BF16"), eight), {"'w'", "BF16", "needs 4 bytes"});
  // Dimensions whose product wraps: a 2^63 dimension; [2^62] and [2^31, 2^31] of F32 whose byte
  // counts are 2^64 (= 0 in 64-bit arithmetic) against an empty data range; and 2^64 - 1.
  check(safetensors_bytes(one("[9223372036854775808]", "[0, 8]"), eight), {"'w'", "over 2^63 - 1"});
  check(safetensors_bytes(one("[18446744073709551615, 0]", "[0, 0]"), ""), {"'w'", "over 2^63 - 1"});
  check(safetensors_bytes(one("[4611686018427387904]", "[0, 0]"), ""), {"'w'", "more elements"});
  check(safetensors_bytes(one("[2147483648, 2147483648]", "[0, 0]"), ""), {"'w'", "more elements"});
  check(safetensors_bytes(one("[3, 6148914691236517206]", "[0, 8]"), eight), {"'w'", "more elements"});
  // Not JSON; nested too deep (before parsing: 50 MB of '[' is one quick error).
  check(safetensors_bytes("\x01\x02garbage", ""), {"not valid JSON"});
  check(safetensors_bytes("{\"a\": ", ""), {"not valid JSON"});
  check(safetensors_bytes(std::string(50 << 20, '['), ""), {"nests more than 8 levels"});
  check(safetensors_bytes("{\"w\": {\"dtype\": \"F32\", \"shape\": [[[[[[[[[1]]]]]]]]]}}", ""),
        {"nests more than 8 levels"});
  // A header length larger than the file, up to 2^64 - 1: refused before anything is allocated.
  check(le64(1000) + "{}", {"header length 1000", "exceeds the 2 bytes"});
  check(le64(UINT64_MAX) + "{}", {"header length 18446744073709551615"});
  check(le64(9), {"header length 9", "exceeds the 0 bytes"});

  // What is fine stays fine: brackets inside strings do not nest, an empty tensor may have a
  // huge dimension next to a zero, and 2^63 - 1 is a valid dimension of an empty tensor.
  const std::string ok = d.path("ok.safetensors");
  vit_test::fs::write_file(
      ok, safetensors_bytes("{\"__metadata__\": {\"k\": \"[[[[[[[[[[[[\\\"{{{{{{{{{{\"},"
                            " \"e\": {\"dtype\": \"F16\", \"shape\": [9223372036854775807, 0],"
                            " \"data_offsets\": [0, 0]}}",
                            ""));
  vit::SafeTensorsFile f(ok);
  EXPECT_EQ(f.metadata().at("k"), "[[[[[[[[[[[[\"{{{{{{{{{{");
  ASSERT_EQ(f.tensors().size(), 1u);
  EXPECT_EQ(f.tensors()[0].numel(), 0u);
  EXPECT_EQ(f.read("e").size(), 0u);
}

// The weight loader sits on the reader: the same files are one error naming the file there too.
TEST(Hostile, WeightFilesGoThroughTheSameChecks) {
  TempDir d;
  const std::string p = d.path("w.safetensors");
  vit_test::fs::write_file(p, safetensors_bytes("{\"cls_token\": {\"dtype\": \"F32\", \"shape\": "
                                                "[4611686018427387904], \"data_offsets\": [0, 0]}}", ""));
  vit::LoadOptions o;
  o.base = vit::preset("tiny");
  expect_error([&] { vit::load_weights(p, o); }, {p, "cls_token", "more elements"});
}

// ---- CIFAR ----------------------------------------------------------------------------------------

TEST(Hostile, CifarEmptyAndPartialRecords) {
  TempDir d;
  const std::string dir = d.dir();
  const std::string test = d.path("test_batch.bin");
  vit_test::fs::write_file(test, "");
  expect_error([&] { vit::probe_split(dir, vit::Split::Test); }, {"test split", "empty"});
  for (size_t bytes : {(size_t)1, (size_t)3072, (size_t)3074, (size_t)2 * 3073 - 1}) {
    vit_test::fs::write_file(test, std::string(bytes, '\0'));
    expect_error([&] { vit::probe_split(dir, vit::Split::Test); },
                 {test, std::to_string(bytes) + " bytes", "not a whole number of 3073-byte records"});
  }
  vit_test::fs::write_file(test, std::string(2 * 3073, '\0'));
  EXPECT_EQ(vit::probe_split(dir, vit::Split::Test).total, 2);
}

// ---- images ---------------------------------------------------------------------------------------

std::string to_mem_png(int w, int h) {
  std::vector<uint8_t> px((size_t)w * h * 3, 128);
  int n = 0;
  unsigned char* png = stbi_write_png_to_mem(px.data(), w * 3, w, h, 3, &n);
  std::string s((const char*)png, (size_t)n);
  STBIW_FREE(png);
  return s;
}
void append(void* ctx, void* data, int n) { ((std::string*)ctx)->append((const char*)data, (size_t)n); }
std::string to_mem_jpg(int w, int h) {
  std::vector<uint8_t> px((size_t)w * h * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = (uint8_t)(i * 7);
  std::string s;
  stbi_write_jpg_to_func(append, &s, w, h, 3, px.data(), 90);
  return s;
}
// PNG's IHDR width and height are big-endian at bytes 16 and 20 (stb does not check CRCs).
std::string with_png_size(std::string png, uint32_t w, uint32_t h) {
  for (int i = 0; i < 4; ++i) {
    png[16 + i] = (char)(w >> (24 - 8 * i));
    png[20 + i] = (char)(h >> (24 - 8 * i));
  }
  return png;
}

TEST(Hostile, ImageSizeClaims) {
  TempDir d;
  const std::string good = d.path("good.png"), huge = d.path("huge.png"), big = d.path("big.png");
  const std::string png = to_mem_png(9, 7);
  vit_test::fs::write_file(good, png);
  vit::Image img = vit::load_image(good);
  EXPECT_EQ(img.width, 9);
  EXPECT_EQ(img.height, 7);

  // 100000 x 100000 (30 GB of RGB): refused from the header, by check_image and load_image.
  vit_test::fs::write_file(huge, with_png_size(png, 100000, 100000));
  for (auto f : {vit::check_image, +[](const std::string& p) { vit::load_image(p); }})
    expect_error([&] { f(huge); }, {huge, "100000x100000 pixels is over the limit of 67108864"});
  // The same claim in a BMP (int32 width / height at bytes 18 / 22).
  std::vector<uint8_t> px(9 * 7 * 3, 50);
  std::string bmp;
  ASSERT_TRUE(stbi_write_bmp_to_func(append, &bmp, 9, 7, 3, px.data()));
  const std::string bmp_path = d.path("huge.bmp");
  vit_test::fs::write_file(bmp_path, bmp);
  EXPECT_EQ(vit::load_image(bmp_path).width, 9);
  for (int i = 0; i < 4; ++i) bmp[18 + i] = bmp[22 + i] = (char)(100000 >> (8 * i));
  vit_test::fs::write_file(bmp_path, bmp);
  expect_error([&] { vit::check_image(bmp_path); }, {bmp_path, "100000x100000 pixels is over the limit"});
  // Under the limit but far more than the file can hold: 6000 x 6000 from ~70 bytes of IDAT.
  vit_test::fs::write_file(big, with_png_size(png, 6000, 6000));
  expect_error([&] { vit::load_image(big); }, {big, "6000x6000 pixels cannot be in a file of"});
}

TEST(Hostile, JpegHuffmanTablesOverTheirSize) {
  TempDir d;
  const std::string jpg = to_mem_jpg(9, 7);
  const std::string good = d.path("good.jpg"), bad = d.path("bad.jpg");
  vit_test::fs::write_file(good, jpg);
  vit::Image img = vit::load_image(good);
  EXPECT_EQ(img.width, 9);
  EXPECT_EQ(img.height, 7);
  EXPECT_EQ(vit::image_problem((const uint8_t*)jpg.data(), jpg.size()), "");

  // The writer's first DHT segment with its counts raised to 16 x 255 = 4080 codes.
  size_t at = jpg.find("\xFF\xC4");
  ASSERT_NE(at, std::string::npos);
  std::string spoiled = jpg;
  for (int i = 0; i < 16; ++i) spoiled[at + 5 + i] = (char)0xFF;
  vit_test::fs::write_file(bad, spoiled);
  expect_error([&] { vit::check_image(bad); }, {bad, "Huffman table 0", "4080 codes"});

  // A DHT after the first scan (as progressive JPEGs have), behind entropy-coded data with a
  // stuffed 0xFF 0x00 and a restart marker: found by the marker walk.
  std::string prog = "\xFF\xD8";
  prog += std::string("\xFF\xDA\x00\x04\x00\x00", 6);  // SOS (short, but walked by its length)
  prog += std::string("\x12\xFF\x00\x34\xFF\xD0\x56", 7);
  prog += std::string("\xFF\xC4\x00\x13\x00", 5) + std::string(16, '\x11');  // 16 x 17 = 272
  EXPECT_NE(vit::image_problem((const uint8_t*)prog.data(), prog.size()).find("272 codes"),
            std::string::npos);
  // A scan naming a table no DHT defined (stb 2.27 would decode with uninitialised memory).
  std::string undefined = jpg;
  const size_t sos = jpg.find("\xFF\xDA");
  ASSERT_NE(sos, std::string::npos);
  undefined[sos + 6] = (char)0x33;  // first component: DC table 3, AC table 3
  vit_test::fs::write_file(bad, undefined);
  expect_error([&] { vit::load_image(bad); }, {bad, "uses DC Huffman table 3, which no DHT segment"});
  // stb reads FF FF D8 as a start of image too: so does the check.
  std::string fill = "\xFF" + spoiled;
  EXPECT_NE(vit::image_problem((const uint8_t*)fill.data(), fill.size()).find("4080 codes"),
            std::string::npos);
}

// What fuzz/fuzz_image.cpp found in stb_image 2.27 behind our wrapper; before the fixes the first
// five wrote out of bounds, read out of bounds / aborted the program (an assert on a scan that
// names an undefined Huffman table) or allocated 1.2 GB. The last two
// are the benign UB that the sanitizer builds exempt (docs/reliability.md): kept so that any
// such build of this test decodes them.
TEST(Hostile, FuzzFindingsAreErrorsOrImages) {
  struct Finding { const char* file; const char* needle; };  // needle "" = may decode
  const Finding findings[] = {
      {"jpeg_dht_overflow_in_header.jpg", "Huffman table"},
      {"jpeg_dht_overflow_ff_ff_soi.jpg", "Huffman table"},
      {"jpeg_huffman_assert.jpg", "which no DHT segment before it defines"},
      {"jpeg_undefined_huffman_table.jpg", "AC Huffman table 3, which no DHT segment"},
      {"png_chunk_2gb.png", "claims 1212"},
      {"jpeg_scan_out_of_bits.jpg", ""},  // UBSan: shift by 32 (see docs/reliability.md)
      {"jpeg_dc_overflow.jpg", ""},       // UBSan: int overflow of the DC prediction
  };
  for (const Finding& f : findings) {
    SCOPED_TRACE(f.file);
    const std::string p = vit_test::fs::fixture(std::string("hostile/") + f.file);
    if (*f.needle) {
      expect_error([&] { vit::load_image(p); }, {p, f.needle});
      continue;
    }
    try {
      vit::Image img = vit::load_image(p);
      EXPECT_EQ(img.rgb.size(), (size_t)img.width * img.height * 3);
    } catch (const vit::Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
}

// vit_predict checks every image before any work: the huge claim is its one error line.
TEST(Hostile, PredictRefusesAHugeImageClaimInOneLine) {
  TempDir d;
  vit::Config c = vit::preset("tiny");
  c.image_size = 16; c.patch_size = 4; c.hidden = 16; c.heads = 2; c.layers = 1; c.mlp = 32;
  const vit::ParamLayout l(c);
  std::vector<float> p(l.total);
  vit::init_params(c, l, 1, p.data());
  const std::string w = d.path("w.safetensors"), good = d.path("good.png"), huge = d.path("huge.png");
  vit::save_checkpoint(w, c, l, p.data());
  const std::string png = to_mem_png(9, 7);
  vit_test::fs::write_file(good, png);
  vit_test::fs::write_file(huge, with_png_size(png, 100000, 100000));
  std::ostringstream out, err;
  auto cpu = [](const std::string&, const vit::Config& cc, const vit::ModelOptions& o) {
    return vit::make_cpu_model(cc, o);
  };
  const int st = vit::predict_main({"--weights", w, "--device", "cpu", good, huge}, out, err, cpu);
  EXPECT_EQ(st, 1);
  EXPECT_EQ(out.str(), "");  // not even the good image's answer: the arguments are checked first
  const std::string e = err.str();
  EXPECT_EQ(e.rfind("vit_predict: error: ", 0), 0u) << e;
  EXPECT_NE(e.find(huge + ": cannot read image: 100000x100000 pixels is over the limit"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), e.size() - 1) << "not one line: " << e;
}

// ---- command lines --------------------------------------------------------------------------------

TEST(Hostile, TrainFlagValuesAreOneLineAndWriteNothing) {
  vit_test::TempDir d;
  vit_test::make_toy_cifar(d / "data", 10, 5);
  const std::string out = d / "out";
  struct Case { std::vector<std::string> flag; std::string needle; };
  const std::vector<Case> cases = {
      {{"--batch-size", "1e99"}, "--batch-size: '1e99' is not an integer"},
      {{"--batch-size", "99999999999"}, "--batch-size: '99999999999' is out of range"},
      {{"--batch-size", "-8"}, "--batch-size must be positive"},
      {{"--lr", "nan"}, "--lr: 'nan' is not a number"},
      {{"--lr", "inf"}, "--lr: 'inf' is not a number"},
      {{"--lr", "1e39"}, "--lr: '1e39' is out of range"},
      {{"--lr", "0"}, "--lr must be positive"},
      {{"--epochs", "-1"}, "--epochs must be >= 0"},
      {{"--seed", "abc"}, "--seed: 'abc' is not an integer"},
      {{"--seed", "-1"}, "--seed must be >= 0"},
      {{"--seed", "99999999999999999999"}, "--seed: '99999999999999999999' is not an integer"},
      {{"--weight-decay", "nan"}, "--weight-decay: 'nan' is not a number"},
      {{"--max-steps", "-5"}, "--max-steps must be >= 0"},
      {{"--dropout", "nan"}, "--dropout: 'nan' is not a number"},
      {{"--mean", "0.5,nan,0.5"}, "--mean: 'nan' is not a number"},
      {{"--hidden", "1e9"}, "--hidden: '1e9' is not an integer"},
      {{"--image-size", "-32"}, "--image-size must be positive"},
      {{"--epochs", ""}, "--epochs: '' is not an integer"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"--device", "cpu", "--preset", "tiny", "--data", d / "data",
                                     "--out", out};
    args.insert(args.end(), c.flag.begin(), c.flag.end());
    vit_test::TrainRun r = vit_test::run_train(args);
    SCOPED_TRACE(c.flag[0] + " " + c.flag[1]);
    EXPECT_EQ(r.rc, 1);
    EXPECT_EQ(r.err.rfind("vit_train: error: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << r.err;
    struct stat st;
    EXPECT_NE(stat(out.c_str(), &st), 0) << "the output directory was created";
  }
}

// Bad files handed to vit_train are also refused before the output directory exists.
TEST(Hostile, TrainBadFilesWriteNothing) {
  vit_test::TempDir d;
  vit_test::make_toy_cifar(d / "data", 10, 5);
  const std::string out = d / "out";
  const std::string bad = d / "bad.safetensors";
  vit_test::fs::write_file(bad, le64(UINT64_MAX) + "{}");
  vit_test::make_toy_cifar(d / "empty", 10, 5);
  vit_test::fs::write_file(d / "empty/test_batch.bin", "");
  const std::vector<std::vector<std::string>> cases = {
      {"--init", bad},
      {"--resume", bad},
      {"--data", d / "empty"},
  };
  for (const auto& extra : cases) {
    std::vector<std::string> args = {"--device", "cpu", "--preset", "tiny", "--data", d / "data",
                                     "--out", out};
    args.insert(args.end(), extra.begin(), extra.end());
    vit_test::TrainRun r = vit_test::run_train(args);
    SCOPED_TRACE(extra[0]);
    EXPECT_EQ(r.rc, 1);
    EXPECT_EQ(r.err.rfind("vit_train: error: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    struct stat st;
    EXPECT_NE(stat(out.c_str(), &st), 0) << "the output directory was created";
  }
}

}  // namespace
