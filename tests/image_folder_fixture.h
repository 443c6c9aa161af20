// tests/image_folder_fixture.h — a small image-folder dataset written at run time (ImageFolder
// convention, common/image_folder.h) with stb_image_write: three classes whose images are a
// class colour with a per-image shade, in the formats and channel counts users' folders hold:
//   train/ant/  a0.png (RGB 16x16)   a1.jpg (RGB 20x12)    a2.png (grey 16x16)
//   train/bee/  b0.png (RGBA 16x16)  b1.bmp (RGB 16x16)    sub/b2.png (RGB 24x24, nested)
//               broken.png (not an image: stb_image cannot read it)
//   train/cow/  c0.png (RGB 16x16)   C1.JPEG (RGB 16x16)   notes.txt, .hidden.png (ignored)
//   val/ant/ v0.png   val/bee/ v1.png   val/cow/ v2.png (RGB 16x16)
// So train lists 9 image files, 8 readable; val 3. pixel(k, id, x, y, c) is what each
// lossless file holds at (x, y), channel c, so tests can compare decoded values exactly.
#pragma once
#include <sys/stat.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

namespace vit_test {
namespace folder {

inline const std::vector<std::string>& class_names() {
  static const std::vector<std::string> n = {"ant", "bee", "cow"};
  return n;
}

// Class k's colour, shaded by the image id and varying along x (so resizes are visible).
inline uint8_t pixel(int k, int id, int x, int y, int c) {
  static const int colour[3][3] = {{200, 40, 40}, {40, 200, 40}, {40, 40, 200}};
  return (uint8_t)(colour[k][c] + 3 * id + 2 * (x % 4) - y % 3);
}

// (h, w, n) interleaved: n = 1 grey (channel 0's values), 3 RGB, 4 RGBA (alpha 128).
inline std::vector<uint8_t> pixels(int k, int id, int w, int h, int n) {
  std::vector<uint8_t> p((size_t)w * h * n);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < n; ++c)
        p[((size_t)y * w + x) * n + c] = c == 3 ? 128 : pixel(k, id, x, y, n == 1 ? 0 : c);
  return p;
}

inline void write_png(const std::string& path, int k, int id, int w, int h, int n) {
  std::vector<uint8_t> p = pixels(k, id, w, h, n);
  stbi_write_png(path.c_str(), w, h, n, p.data(), w * n);
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// Writes the tree above under `dir` (which is created).
inline void make_image_folder(const std::string& dir) {
  for (const char* d : {"", "/train", "/train/ant", "/train/bee", "/train/bee/sub", "/train/cow",
                        "/val", "/val/ant", "/val/bee", "/val/cow"})
    mkdir((dir + d).c_str(), 0755);
  const std::string t = dir + "/train/";
  write_png(t + "ant/a0.png", 0, 0, 16, 16, 3);
  {
    std::vector<uint8_t> p = pixels(0, 1, 20, 12, 3);
    stbi_write_jpg((t + "ant/a1.jpg").c_str(), 20, 12, 3, p.data(), 95);
  }
  write_png(t + "ant/a2.png", 0, 2, 16, 16, 1);
  write_png(t + "bee/b0.png", 1, 0, 16, 16, 4);
  {
    std::vector<uint8_t> p = pixels(1, 1, 16, 16, 3);
    stbi_write_bmp((t + "bee/b1.bmp").c_str(), 16, 16, 3, p.data());
  }
  write_png(t + "bee/sub/b2.png", 1, 2, 24, 24, 3);
  write_text(t + "bee/broken.png", "this is not a PNG file");
  write_png(t + "cow/c0.png", 2, 0, 16, 16, 3);
  {
    std::vector<uint8_t> p = pixels(2, 1, 16, 16, 3);
    stbi_write_jpg((t + "cow/C1.JPEG").c_str(), 16, 16, 3, p.data(), 95);
  }
  write_text(t + "cow/notes.txt", "not an image, not listed");
  write_png(t + "cow/.hidden.png", 2, 9, 16, 16, 3);
  for (int k = 0; k < 3; ++k)
    write_png(dir + "/val/" + class_names()[k] + "/v" + std::to_string(k) + ".png", k, 5, 16, 16, 3);
}

}  // namespace folder
}  // namespace vit_test
