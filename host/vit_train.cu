// host/vit_train.cu — train a ViT on CIFAR-10. (Placeholder: the training program arrives with
// the vit_train issue; for now it prints its usage.)
#include <cstdio>
#include <cstring>

static const char* USAGE =
    "usage: vit_train [--preset basic|vit-b16|tiny] [--help]\n"
    "Train a Vision Transformer on CIFAR-10. (Not implemented yet: this build only prints\n"
    "its usage; training arrives with the vit_train issue.)\n";

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      fputs(USAGE, stdout);
      return 0;
    }
  fputs(USAGE, stderr);
  return 2;
}
