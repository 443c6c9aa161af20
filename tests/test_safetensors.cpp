// tests/test_safetensors.cpp — common/safetensors: round trips, F16/BF16 decoding against
// hand-computed values, every validation error on hand-crafted bad files, and atomic writes.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/safetensors.h"
#include "tests/test_fs.h"

using vit::SafeTensorsFile;
using vit_test::fs::TempDir;

namespace {

// A safetensors file made of exactly these bytes: length prefix, header text, data.
void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  std::string bytes(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) bytes[i] = (char)(n >> (8 * i));
  bytes += header;
  bytes += data;
  vit_test::fs::write_file(path, bytes);
}

// `f` throws vit::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const vit::Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << "not one line: " << m;
    for (const auto& p : parts) EXPECT_NE(m.find(p), std::string::npos) << "'" << p << "' not in: " << m;
    return;
  }
  ADD_FAILURE() << "no vit::Error thrown";
}

std::string u16s(std::initializer_list<uint16_t> v) {
  std::string s;
  for (uint16_t x : v) { s += (char)(x & 0xff); s += (char)(x >> 8); }
  return s;
}
std::string f32s(std::initializer_list<float> v) {
  std::string s;
  for (float x : v) s.append((const char*)&x, 4);
  return s;
}

}  // namespace

TEST(SafeTensors, WriteReadRoundTrip) {
  TempDir d;
  const std::string p = d.path("a.safetensors");
  std::vector<float> w(2 * 3 * 5), b = {1.5f, -2.25f, 3e-30f}, scalar = {42.0f};
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin((float)i) * 100.0f;
  vit::write_safetensors(p,
                         {{"layer.weight", {2, 3, 5}, w.data()},
                          {"layer.bias", {3}, b.data()},
                          {"empty", {0, 4}, nullptr},
                          {"step", {}, scalar.data()}},
                         {{"format", "vit.cu"}, {"note", "a \"quoted\" value"}});
  SafeTensorsFile f(p);
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.metadata().at("format"), "vit.cu");
  EXPECT_EQ(f.metadata().at("note"), "a \"quoted\" value");
  EXPECT_EQ(f.at("layer.weight").shape, (std::vector<int64_t>{2, 3, 5}));
  EXPECT_EQ(f.at("layer.weight").dtype, vit::StDtype::F32);
  EXPECT_EQ(f.read("layer.weight"), w);  // bit-exact
  EXPECT_EQ(f.read("layer.bias"), b);
  EXPECT_EQ(f.read("empty").size(), 0u);
  EXPECT_EQ(f.at("step").shape.size(), 0u);
  EXPECT_EQ(f.read("step"), scalar);
  EXPECT_EQ(f.find("nope"), nullptr);
  expect_error([&] { f.read("nope"); }, {p, "'nope'"});
  std::vector<float> small(3);
  expect_error([&] { f.read_into("layer.weight", small.data(), 3); }, {p, "'layer.weight'", "30"});

  // The data section starts 8-byte aligned and no temporary file is left behind.
  std::string bytes = vit_test::fs::read_file(p);
  uint64_t n = 0;
  memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 4 * (30 + 3 + 1));
  EXPECT_EQ(vit_test::fs::list_dir(d.dir()), std::vector<std::string>{"a.safetensors"});
}

TEST(SafeTensors, ReadsF16AndBF16) {
  TempDir d;
  const std::string p = d.path("h.safetensors");
  // Offsets listed out of data order on purpose: order in the header does not matter.
  std::string header =
      R"({"bf": {"dtype": "BF16", "shape": [5], "data_offsets": [16, 26]},)"
      R"( "h": {"dtype": "F16", "shape": [2, 4], "data_offsets": [0, 16]},)"
      R"( "f": {"dtype": "F32", "shape": [1], "data_offsets": [26, 30]},)"
      R"( "__metadata__": {"heads": "2"}})";
  header += "    ";  // padding spaces are allowed
  // F16: 1, -2, 65504 (max), 2^-24 (smallest subnormal), 2^-14 (smallest normal), 0.333251953125,
  //      -0 and +inf.
  std::string data = u16s({0x3C00, 0xC000, 0x7BFF, 0x0001, 0x0400, 0x3555, 0x8000, 0x7C00});
  // BF16: 1, -3, 2^-133 (subnormal in float too), 3.140625, -inf
  data += u16s({0x3F80, 0xC040, 0x0001, 0x4049, 0xFF80});
  data += f32s({0.1f});
  write_raw(p, header, data);

  SafeTensorsFile f(p);
  EXPECT_EQ(f.metadata().at("heads"), "2");
  EXPECT_EQ(f.at("h").dtype, vit::StDtype::F16);
  std::vector<float> h = f.read("h");
  ASSERT_EQ(h.size(), 8u);
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -2.0f);
  EXPECT_EQ(h[2], 65504.0f);
  EXPECT_EQ(h[3], std::ldexp(1.0f, -24));
  EXPECT_EQ(h[4], std::ldexp(1.0f, -14));
  EXPECT_EQ(h[5], 0.333251953125f);
  EXPECT_EQ(h[6], 0.0f);
  EXPECT_TRUE(std::signbit(h[6]));
  EXPECT_EQ(h[7], std::numeric_limits<float>::infinity());
  std::vector<float> bf = f.read("bf");
  ASSERT_EQ(bf.size(), 5u);
  EXPECT_EQ(bf[0], 1.0f);
  EXPECT_EQ(bf[1], -3.0f);
  EXPECT_EQ(bf[2], std::ldexp(1.0f, -133));
  EXPECT_EQ(bf[3], 3.140625f);
  EXPECT_EQ(bf[4], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(f.read("f")[0], 0.1f);
  EXPECT_TRUE(std::isnan(vit::f16_to_float(0x7E00)));
  EXPECT_TRUE(std::isnan(vit::bf16_to_float(0x7FC0)));
}

// Every way a file can be wrong: one vit::Error naming the file and, where there is one, the
// tensor.
TEST(SafeTensors, ValidationErrors) {
  TempDir d;
  int k = 0;
  auto check = [&](const std::string& header, const std::string& data,
                   std::vector<std::string> parts) {
    const std::string p = d.path("bad" + std::to_string(k++) + ".safetensors");
    write_raw(p, header, data);
    parts.push_back(p);
    SCOPED_TRACE(header);
    expect_error([&] { SafeTensorsFile f(p); }, parts);
  };
  const std::string four = f32s({1.0f});
  check("not json", four, {"not valid JSON"});
  check("[1, 2]", "", {"not a JSON object"});
  check(R"({"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})", four + four,
        {"'w'", "F64"});
  check(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", four,
        {"'w'", "[2]", "8 bytes"});
  check(R"({"w": {"dtype": "F16", "shape": [3], "data_offsets": [0, 4]}})", four,
        {"'w'", "F16", "6 bytes"});
  check(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", four + four,
        {"'w'", "past the end"});
  check(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", four, {"'w'"});
  check(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
        R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
        four + four + four, {"'b'", "overlaps", "'a'"});
  check(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
        R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
        four + four + four, {"'b'", "hole"});
  check(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", four + four,
        {"'a'", "hole"});
  check(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", four + four,
        {"data section is 8 bytes", "cover 4"});
  check(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
        R"( "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
        four + four, {"'a'", "twice"});
  check(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", four, {"'a'", "shape"});
  check(R"({"a": {"dtype": "F32", "shape": [1]}})", four, {"'a'", "data_offsets"});
  check(R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", four, {"'a'", "dtype"});
  check(R"({"a": [1]})", four, {"'a'"});
  check(R"({"__metadata__": {"heads": 2}})", "", {"__metadata__", "heads"});
  check(R"({"__metadata__": "x"})", "", {"__metadata__"});

  // Shorter than the length prefix; length prefix beyond the file; missing file.
  const std::string tiny = d.path("tiny.safetensors");
  vit_test::fs::write_file(tiny, "abc");
  expect_error([&] { SafeTensorsFile f(tiny); }, {tiny, "3 bytes"});
  const std::string cut = d.path("cut.safetensors");
  std::string bytes(8, '\0');
  bytes[0] = 100;  // header of 100 bytes, only 10 present
  vit_test::fs::write_file(cut, bytes + "{\"a\": {}} ");
  expect_error([&] { SafeTensorsFile f(cut); }, {cut, "header length 100", "10 bytes"});
  expect_error([&] { SafeTensorsFile f(d.path("missing.safetensors")); },
               {d.path("missing.safetensors"), "cannot open"});
  expect_error([&] { SafeTensorsFile f(d.dir()); }, {d.dir()});
}

TEST(SafeTensors, WriteRejectsBadRequestsWithoutTouchingTheFile) {
  TempDir d;
  const std::string p = d.path("w.safetensors");
  float x = 1.0f;
  expect_error([&] { vit::write_safetensors(p, {{"a", {1}, &x}, {"a", {1}, &x}}); }, {p, "'a'", "twice"});
  expect_error([&] { vit::write_safetensors(p, {{"__metadata__", {1}, &x}}); }, {p});
  EXPECT_TRUE(vit_test::fs::list_dir(d.dir()).empty());
}

// A write that fails half way (here: the file-size limit, as a full disk would) throws, removes
// its temporary file and leaves the previous checkpoint byte-for-byte intact.
TEST(SafeTensors, FailedWriteKeepsTheOldFile) {
  TempDir d;
  const std::string p = d.path("ckpt.safetensors");
  std::vector<float> old(16, 1.0f), big(1 << 16, 2.0f);
  vit::write_safetensors(p, {{"w", {16}, old.data()}}, {{"step", "1"}});
  const std::string before = vit_test::fs::read_file(p);

  struct rlimit saved;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);  // get EFBIG instead of being killed
  struct rlimit lim = saved;
  lim.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  bool threw = false;
  try {
    vit::write_safetensors(p, {{"w", {(int64_t)big.size()}, big.data()}}, {{"step", "2"}});
  } catch (const vit::Error& e) {
    threw = true;
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
  setrlimit(RLIMIT_FSIZE, &saved);
  signal(SIGXFSZ, old_handler);
  EXPECT_TRUE(threw);
  EXPECT_EQ(vit_test::fs::read_file(p), before);
  EXPECT_EQ(vit_test::fs::list_dir(d.dir()), std::vector<std::string>{"ckpt.safetensors"});
  SafeTensorsFile f(p);
  EXPECT_EQ(f.metadata().at("step"), "1");

  // rename() failing (the target is a directory) also cleans up after itself.
  const std::string sub = d.path("adir");
  ASSERT_EQ(mkdir(sub.c_str(), 0755), 0);
  expect_error([&] { vit::write_safetensors(sub, {{"w", {16}, old.data()}}); }, {sub});
  EXPECT_EQ(vit_test::fs::list_dir(d.dir()), (std::vector<std::string>{"adir", "ckpt.safetensors"}));
}
