// fuzz/make_seeds.cpp — writes the seed corpus of the fuzz targets (`make fuzz` runs it into
// build/fuzz/seeds/<target>/; nothing of it is committed). Small, valid inputs of every kind
// each target reads, made with the project's own writers (so they are what vit.cu itself
// produces) and stb_image_write; the test fixtures (tests/fixtures/*.safetensors, real PyTorch
// exports) are added by the Makefile as they are.
//
//   make_seeds OUT_DIR      OUT_DIR/{safetensors,weights,cifar,image,cli}/...
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/cifar.h"
#include "common/config.h"
#include "common/model.h"
#include "common/params.h"
#include "common/safetensors.h"
#include "common/weights.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

namespace {

void put(const std::string& path, const std::string& bytes) {
  FILE* f = fopen(path.c_str(), "wb");
  if (!f || fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || fclose(f) != 0) {
    perror(path.c_str());
    exit(1);
  }
}

// A safetensors file written byte by byte, for dtypes and layouts our writer does not produce.
std::string raw_safetensors(const std::string& header, const std::string& data) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = (char)((uint64_t)header.size() >> (8 * i));
  return s + header + data;
}

// The smallest model every layout can hold: 8 px, 4 px patches (4 patches), C = 8, 1 block.
// final_ln = the torchvision layout's constants (erf GELU, eps 1e-6, final LN), else tintn's
// (tanh, 1e-5, none): vit_export refuses a model that contradicts its layout.
vit::Config micro(bool final_ln) {
  vit::Config c = vit::preset("tiny");
  c.image_size = 8; c.patch_size = 4; c.hidden = 8; c.layers = 1; c.heads = 2; c.mlp = 16;
  c.classes = 3; c.final_ln = final_ln;
  if (final_ln) {
    c.gelu = vit::Gelu::Erf;
    c.ln_eps = 1e-6f;
  }
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) { fprintf(stderr, "usage: make_seeds OUT_DIR\n"); return 2; }
  const std::string out = argv[1];
  for (const char* t : {"", "/safetensors", "/weights", "/cifar", "/image", "/cli"})
    mkdir((out + t).c_str(), 0755);
  try {
    // Weights in the three layouts (also safetensors seeds).
    for (bool fl : {false, true}) {
      vit::Config c = micro(fl);
      vit::ParamLayout l(c);
      std::vector<float> p(l.total);
      vit::init_params(c, l, 1, p.data());
      const std::string s = fl ? "_fln" : "";
      vit::save_checkpoint(out + "/weights/ours" + s + ".safetensors", c, l, p.data());
      if (!fl) vit::export_weights(out + "/weights/tintn.safetensors", vit::WeightFormat::Tintn, c, p.data());
      else vit::export_weights(out + "/weights/torchvision.safetensors", vit::WeightFormat::Torchvision, c, p.data());
    }
    // Plain safetensors: F32 from our writer; F16, BF16, a scalar and an empty tensor by hand.
    const float v[6] = {1, -2, 0.5f, 3, 0, -0};
    vit::write_safetensors(out + "/safetensors/f32.safetensors",
                           {{"a", {2, 3}, v}, {"s", {}, v}}, {{"k", "v"}});
    put(out + "/safetensors/f16.safetensors",
        raw_safetensors("{\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
                        "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,1],\"data_offsets\":[4,6]},"
                        "\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[6,6]},"
                        "\"__metadata__\":{\"format\":\"pt\"}}",
                        std::string("\x00\x3c\x00\xc0\x80\x3f", 6)));
    put(out + "/safetensors/empty.safetensors", raw_safetensors("{}", ""));

    // CIFAR: byte 0 is the target's selector (classes, split), then records.
    std::vector<uint8_t> img(3 * vit::CIFAR_IMAGE_BYTES);
    for (size_t i = 0; i < img.size(); ++i) img[i] = (uint8_t)(i * 7);
    const int32_t labels[3] = {0, 9, 4};
    const std::string rec_path = out + "/cifar/.records";
    vit::write_cifar_file(rec_path, img.data(), labels, 3);
    std::string recs;
    { FILE* f = fopen(rec_path.c_str(), "rb"); char b[4096]; size_t n;
      while ((n = fread(b, 1, sizeof b, f)) > 0) recs.append(b, n); fclose(f); remove(rec_path.c_str()); }
    put(out + "/cifar/test3", std::string(1, (char)0x02) + recs);        // 9 classes: label 9 fails
    put(out + "/cifar/train3", std::string(1, (char)0x42) + recs);       // train split
    put(out + "/cifar/meta", std::string(1, (char)0x82) + "airplane\nautomobile\r\n\nbird \n");

    // Images: PNG (grey, RGB, RGBA), JPEG, BMP of a small gradient.
    const int W = 9, H = 7;
    std::vector<uint8_t> px(W * H * 4);
    for (int i = 0; i < W * H * 4; ++i) px[i] = (uint8_t)(i * 13);
    const std::string d = out + "/image/";
    if (!stbi_write_png((d + "g.png").c_str(), W, H, 1, px.data(), W) ||
        !stbi_write_png((d + "rgb.png").c_str(), W, H, 3, px.data(), W * 3) ||
        !stbi_write_png((d + "rgba.png").c_str(), W, H, 4, px.data(), W * 4) ||
        !stbi_write_jpg((d + "rgb.jpg").c_str(), W, H, 3, px.data(), 90) ||
        !stbi_write_jpg((d + "g.jpg").c_str(), W, H, 1, px.data(), 50) ||
        !stbi_write_bmp((d + "rgb.bmp").c_str(), W, H, 3, px.data())) {
      fprintf(stderr, "make_seeds: cannot write the image seeds\n");
      return 1;
    }

    // Command lines, one argument per line.
    const char* lines[] = {
        "--preset\ntiny\n--hidden\n96\n--heads=3\n--no-qkv-bias\n--mean\n0.4,0.5,0.6\nfile.png",
        "--preset=vit-b16\n--image-size\n64\n--final-ln=false\n--gelu\nerf\n--\n--steps",
        "--dropout\n0.25\n--ln-eps\n1e-6\n--steps\n-3\n--rate\n2.5e-3\n--mode\nb\n--switch\n--thing",
        "image_size=16\npatch_size=4\nstd=0.2,0.2,0.2\nqkv_bias=false\ngelu=tanh",
        "--classes\n100\n--patch-size\n3\n--help",
    };
    int i = 0;
    for (const char* l : lines) put(out + "/cli/" + std::to_string(i++), l);
  } catch (const std::exception& e) {
    fprintf(stderr, "make_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
