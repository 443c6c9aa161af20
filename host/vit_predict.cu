// host/vit_predict.cu — classify images with a trained ViT. (Placeholder until the weights issue.)
#include <cstdio>
#include <cstring>

static const char* USAGE =
    "usage: vit_predict --weights FILE IMAGE...\n"
    "(Not implemented yet.)\n";

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      fputs(USAGE, stdout);
      return 0;
    }
  fputs(USAGE, stderr);
  return 2;
}
