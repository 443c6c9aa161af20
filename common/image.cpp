#include "common/image.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "common/image_check.h"
#include "cpu/input.h"  // vit::ref::resize_bilinear: the same resize as the training input path

// stb_image is compiled here and only here. PNG, JPEG and BMP only: less decoder code to trust
// with files from anywhere.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC  // private to this file: no clash with another copy in the program
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_FAILURE_USERMSG
// stb's internal consistency asserts fire on corrupt input (fuzz/fuzz_image.cpp found one in
// the JPEG Huffman decoder, on a scan using a table no DHT defined: common/image_check.cpp now
// refuses those first), and an abort() is no way for vit_predict to answer a bad file.
// Without them the decoder goes on to garbage pixels or its own error; the fuzz target checks
// with ASan + UBSan (array bounds included) that no access goes out of bounds on that path.
#define STBI_ASSERT(x) ((void)0)
// Every stb allocation zeroed: stb 2.27 mallocs its JPEG decoder state and decodes a scan with
// whatever Huffman table the scan names, defined by the file or not; from uninitialised memory
// that read values[] out of bounds (fuzz/fuzz_image.cpp). A zeroed table decodes every code as
// symbol 0 through its fast path: garbage pixels or stb's error, never a wild index. (Large
// zeroed allocations cost nothing extra: they are fresh pages.)
#define STBI_MALLOC(sz) calloc(1, (sz))
#define STBI_REALLOC(p, sz) realloc((p), (sz))
#define STBI_FREE(p) free(p)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

namespace vit {

namespace {

// stb reports "can't fopen" for a missing file: say why in the system's words instead.
[[noreturn]] void fail(const std::string& path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot read image: " + strerror(errno));
  fclose(f);
  const char* why = stbi_failure_reason();
  throw Error(path + ": cannot read image: " + (why ? why : "unknown error") +
              " (PNG, JPEG and BMP are supported)");
}

// The whole file in memory (it is decoded from there, so the header checked below is the one
// decoded), checked before any pixel is: a header's size claim against kMaxImagePixels (stb
// allocates the full image before it knows whether the file holds its pixels) and what
// common/image_check.h checks (JPEG Huffman tables, PNG chunk lengths, claims the file's size
// cannot back).
std::vector<uint8_t> read_checked(const std::string& path, int* w, int* h) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot read image: " + strerror(errno));
  std::vector<uint8_t> bytes;
  uint8_t buf[65536];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, f)) > 0) bytes.insert(bytes.end(), buf, buf + got);
  const bool err = ferror(f);
  fclose(f);
  if (err) throw Error(path + ": cannot read image: read error");
  if (bytes.size() > (size_t)INT32_MAX)  // stb takes an int length
    throw Error(path + ": cannot read image: file of " + std::to_string(bytes.size()) + " bytes is too large");
  // Before stb parses anything: even its header reader builds the Huffman tables it meets.
  const std::string why = image_problem(bytes.data(), bytes.size());
  if (!why.empty()) throw Error(path + ": cannot read image: " + why);
  // The size claim: from the header as we read it, then as stb reads it (they agree on every
  // file stb decodes; ours also answers claims stb refuses without saying why).
  auto check_size = [&](uint32_t cw, uint32_t ch) {
    if ((uint64_t)cw * ch > kMaxImagePixels)
      throw Error(path + ": cannot read image: " + std::to_string(cw) + "x" + std::to_string(ch) +
                  " pixels is over the limit of " + std::to_string(kMaxImagePixels) +
                  " (8192x8192); scale it down first");
    const std::string why = image_size_problem(bytes.data(), bytes.size(), cw, ch);
    if (!why.empty()) throw Error(path + ": cannot read image: " + why);
  };
  uint32_t hw, hh;
  if (header_size(bytes.data(), bytes.size(), &hw, &hh)) check_size(hw, hh);
  int n;
  if (!stbi_info_from_memory(bytes.data(), (int)bytes.size(), w, h, &n)) fail(path);
  if (*w <= 0 || *h <= 0) throw Error(path + ": cannot read image: empty image");
  check_size((uint32_t)*w, (uint32_t)*h);
  return bytes;
}

}  // namespace

void check_image(const std::string& path) {
  int w, h;
  read_checked(path, &w, &h);
}

Image load_image(const std::string& path) {
  int w, h, n;
  const std::vector<uint8_t> bytes = read_checked(path, &w, &h);
  unsigned char* px = stbi_load_from_memory(bytes.data(), (int)bytes.size(), &w, &h, &n, 3);  // RGB
  if (!px) fail(path);
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.assign(px, px + (size_t)w * h * 3);
  stbi_image_free(px);
  return img;
}

void image_to_input(const Image& img, const Config& c, float* out) {
  const int S = c.image_size, W = img.width, H = img.height;
  std::vector<float> plane((size_t)W * H);
  for (int ch = 0; ch < 3; ++ch) {
    for (size_t i = 0; i < plane.size(); ++i) plane[i] = img.rgb[3 * i + ch] / 255.0f;
    float* o = out + (size_t)ch * S * S;
    ref::resize_bilinear(plane.data(), H, W, o, S, S);
    for (size_t i = 0; i < (size_t)S * S; ++i) o[i] = (o[i] - c.mean[ch]) / c.std[ch];
  }
}

}  // namespace vit
